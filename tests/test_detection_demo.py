"""The demo day end to end: every attack story in truth.json is detected with its techniques.

The demo day (scale 0.1) is ingested into the test prefix and `lianfang detect run` covers the
day. Each story must have alerts in its department, about one of its entities, near its time,
carrying each of its ATT&CK techniques (or a sub-technique of it). Alerts about nothing in
the stories are counted as false positives and printed per 100,000 events.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from collectors.demo_day import DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from lianfang.cli import main
from lianfang.schema import parse_timestamp
from lianfang.settings import Settings
from lianfang.store import EventStore

DEMO_DAY = date(2026, 11, 26)  # a Thursday: working hours apply
SLACK = timedelta(minutes=30)


def load_demo(settings: Settings, store: EventStore, out: Path) -> dict[str, Any]:
    manifest = generate_demo_day(DemoSpec(seed=settings.demo_seed, day=DEMO_DAY, scale=0.1), out)
    departments = {d["id"]: d for d in manifest["departments"]}
    for item in manifest["files"]:
        info = departments[item["department"]]
        report, _ = ingest_records(
            file_records(out / item["path"]),
            settings=settings,
            store=store,
            format_name=item["format"],
            department=Department(info["id"], info["name"], info["sector"]),
        )
        assert report.dead_lettered == 0
    store.refresh()
    return manifest


def about_story(alert: dict[str, Any], story: dict[str, Any]) -> bool:
    """Same department, one of the story's entities, and close to its time."""
    details = alert["alert"]
    if alert.get("organization", {}).get("id") != story["department"]:
        return False
    values = {details["entity"]["value"], *details["entity"].get("fields", {}).values()}
    if not values & {str(v) for v in story["entities"].values()}:
        return False
    start, end = parse_timestamp(story["start"]), parse_timestamp(story["end"])
    first, last = parse_timestamp(details["first_seen"]), parse_timestamp(details["last_seen"])
    return first <= end + SLACK and last >= start - SLACK


def covers(technique: str, alert: dict[str, Any]) -> bool:
    found = alert.get("threat", {}).get("technique", {}).get("id", [])
    return any(t == technique or t.startswith(technique + ".") for t in found)


@pytest.mark.slow
def test_demo_day_stories_are_all_detected(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    manifest = load_demo(settings, store, tmp_path / "demo")
    environment = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
    }
    day = DEMO_DAY.isoformat()
    after = (DEMO_DAY + timedelta(days=1)).isoformat()
    result = CliRunner().invoke(
        main,
        [
            "detect",
            "run",
            "--source",
            "behavioural",
            "--from",
            f"{day}T00:00:00Z",
            "--to",
            f"{after}T00:00:00Z",
            "--window",
            "24h",
            "--json",
        ],
        env=environment,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout.splitlines()[0])["runs"]
    assert not [run for run in runs if run["error"]]

    response = client.search(index=f"{settings.index_prefix}-alerts", size=1000)
    alerts = [hit["_source"] for hit in response["hits"]["hits"]]
    missing = []
    for story in manifest["stories"]:
        related = [alert for alert in alerts if about_story(alert, story)]
        for technique in story["techniques"]:
            if not any(covers(technique, alert) for alert in related):
                missing.append((story["id"], technique))
    assert not missing, f"stories without a matching alert: {missing}"

    benign = [a for a in alerts if not any(about_story(a, s) for s in manifest["stories"])]
    rate = len(benign) / manifest["events"] * 100_000
    print(
        f"\ndemo day (scale 0.1): {manifest['events']} events, {len(alerts)} alerts, "
        f"{len(manifest['stories'])} stories found, {len(benign)} alerts on benign traffic "
        f"= {rate:.1f} false positives per 100k events "
        f"({', '.join(sorted({a['rule']['id'] for a in benign})) or 'none'})"
    )
