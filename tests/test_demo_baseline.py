"""Baseline days of the demo generator, and anomaly models trained on them finding the stories.

The generator writes story-free days before the demo day (of the demo day's kind: working
day or weekend), reproducibly. Loaded next to a demo day, with one pooled model per feature
set trained on their files (as `make run` does), the anomaly source of `detect run` raises
an alert about the night exfiltration's file server.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from collectors.demo_day import (
    ATTACKER_BRUTE_FORCE,
    ATTACKER_SCANNER,
    EXFILTRATION_SERVER,
    DemoSpec,
    baseline_day_specs,
    generate_baseline_days,
    generate_demo_day,
)
from lianfang.cli import main
from lianfang.schema import parse_timestamp
from lianfang.settings import Settings
from tests.conftest import TEST_MASKING_KEY
from tests.test_demo_day import digest
from tests.test_detection_demo import about_story

THURSDAY = date(2026, 11, 26)
SATURDAY = date(2026, 11, 28)
STORY_MARKS = (ATTACKER_BRUTE_FORCE, ATTACKER_SCANNER, EXFILTRATION_SERVER, "LIMIT 250000")


def event_days(folder: Path) -> set[date]:
    """The UTC days of every JSON event under a folder."""
    days = set()
    for path in folder.rglob("events.ndjson"):
        for line in path.read_text(encoding="utf-8").splitlines():
            days.add(parse_timestamp(json.loads(line)["@timestamp"]).astimezone(UTC).date())
    return days


def test_baseline_days_are_reproducible_and_story_free(tmp_path: Path) -> None:
    spec = DemoSpec(seed=5, day=THURSDAY, scale=0.05)
    first = generate_baseline_days(spec, 2, tmp_path / "a")
    second = generate_baseline_days(spec, 2, tmp_path / "b")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert first == second
    assert first["days"] == ["2026-11-24", "2026-11-25"]  # Tuesday and Wednesday
    assert first["start"] == "2026-11-24T00:00:00+00:00"
    assert first["end"] == "2026-11-26T00:00:00+00:00"
    assert first["stories"] == []
    assert first["events"] == sum(item["lines"] for item in first["files"]) > 0
    for item in first["files"]:
        text = (tmp_path / "a" / item["path"]).read_text(encoding="utf-8")
        assert not [mark for mark in STORY_MARKS if mark in text], item["path"]
    for day in first["days"]:
        assert json.loads((tmp_path / "a" / day / "truth.json").read_text())["stories"] == []
        assert event_days(tmp_path / "a" / day) == {date.fromisoformat(day)}
    assert json.loads((tmp_path / "a" / "baseline.json").read_text()) == first

    # Each day has its own draws: neither the demo day's nor another baseline day's.
    demo = generate_demo_day(spec, tmp_path / "demo")
    demo_lines = (tmp_path / "demo" / "finance" / "events.ndjson").read_text().splitlines()
    tuesday, wednesday = (
        (tmp_path / "a" / day / "finance" / "events.ndjson").read_text().splitlines()
        for day in first["days"]
    )
    assert demo["stories"]
    assert len(tuesday) == len(wednesday) == len(demo_lines) - 24  # the exfiltration flows
    assert tuesday[0][40:] != wednesday[0][40:]
    assert not set(line.split('"source"', 1)[1] for line in tuesday) & set(
        line.split('"source"', 1)[1] for line in demo_lines
    )


def test_a_weekend_demo_day_gets_weekend_baseline_days() -> None:
    days = [s.the_day for s in baseline_day_specs(DemoSpec(day=SATURDAY), 3)]
    assert days == [date(2026, 11, 15), date(2026, 11, 21), date(2026, 11, 22)]
    monday = [s.the_day for s in baseline_day_specs(DemoSpec(day=date(2026, 11, 30)), 1)]
    assert monday == [date(2026, 11, 27)]  # the Friday, not the Sunday before
    specs = baseline_day_specs(DemoSpec(seed=9, day=THURSDAY, scale=2.0), 2)
    assert [(s.seed, s.scale, s.stories) for s in specs] == [(11, 2.0, False), (10, 2.0, False)]
    for wrong in (0, 29):
        with pytest.raises(ValueError):
            baseline_day_specs(DemoSpec(day=THURSDAY), wrong)


def test_a_new_baseline_replaces_the_days_of_the_previous_one(tmp_path: Path) -> None:
    generate_baseline_days(DemoSpec(seed=1, day=THURSDAY, scale=0.02), 2, tmp_path)
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    later = DemoSpec(seed=1, day=THURSDAY + timedelta(days=7), scale=0.02)
    manifest = generate_baseline_days(later, 1, tmp_path)
    assert manifest["days"] == ["2026-12-02"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-12-02", "baseline.json", "notes"]


def test_demo_generate_writes_baseline_days_on_request(tmp_path: Path) -> None:
    arguments = ["demo", "generate", "--out", str(tmp_path), "--date", "2026-11-26"]
    result = CliRunner().invoke(
        main, [*arguments, "--scale", "0.02", "--baseline-days", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["baseline"]["days"] == ["2026-11-25"]
    assert (tmp_path / "baseline" / "2026-11-25" / "finance" / "events.ndjson").is_file()
    result = CliRunner().invoke(main, [*arguments, "--baseline-days", "40"])
    assert result.exit_code == 2
    assert "between 1 and 28" in result.output


def invoke(settings: Settings, arguments: list[str], **extra: str) -> Any:
    environment = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": TEST_MASKING_KEY,
        **extra,
    }
    return CliRunner().invoke(main, arguments, env=environment, catch_exceptions=False)


def anomaly_alerts(client: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    client.indices.refresh(index=f"{settings.index_prefix}-alerts")
    response = client.search(
        index=f"{settings.index_prefix}-alerts", query={"term": {"rule.type": "anomaly"}}, size=500
    )
    return [hit["_source"] for hit in response["hits"]["hits"]]


def test_models_trained_on_baseline_files_find_the_exfiltration(
    settings: Settings, client: Elasticsearch, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    day = THURSDAY.isoformat()
    load = ["demo", "load", "--out", str(out), "--date", day, "--scale", "0.1"]
    loaded = invoke(settings, [*load, "--baseline-days", "1", "--json"])
    assert loaded.exit_code == 0, loaded.output
    summary = json.loads(loaded.stdout[: loaded.stdout.rindex("}") + 1])
    baseline = json.loads((out / "baseline" / "baseline.json").read_text())
    assert summary["baseline"]["days"] == ["2026-11-25"]
    assert summary["baseline"]["read"] == baseline["events"]
    assert summary["baseline"]["dead_lettered"] == 0

    # As `make run` does: one pooled model per feature set, trained on the baseline's files.
    inputs = [
        argument
        for item in baseline["files"]
        for argument in ("--input", str(out / "baseline" / item["path"]))
    ]
    trained = invoke(
        settings,
        ["detect", "train", *inputs, "--threshold-quantile", "0.9999", "--json"],
        LIANFANG_ANOMALY='{"per_department": false}',
    )
    assert trained.exit_code == 0, trained.output
    models = json.loads(trained.stdout)["trained"]
    assert sorted((m["feature_set"], m["department"]) for m in models) == [
        ("authentication_source", "_all"),
        ("database_user", "_all"),
        ("host_activity", "_all"),
        ("network_source", "_all"),
    ]
    assert {(m["training_start"], m["training_end"]) for m in models} == {
        ("2026-11-25T00:00:00+00:00", "2026-11-26T00:00:00+00:00")
    }

    after = (THURSDAY + timedelta(days=1)).isoformat()
    window = ["--from", f"{day}T00:00:00Z", "--to", f"{after}T00:00:00Z", "--window", "24h"]
    scored = invoke(settings, ["detect", "run", "--source", "anomaly", *window, "--json"])
    assert scored.exit_code == 0, scored.output
    alerts = anomaly_alerts(client, settings)
    manifest = json.loads((out / "truth.json").read_text())
    stories = {story["id"]: story for story in manifest["stories"]}
    exfiltration = [a for a in alerts if about_story(a, stories["night-exfiltration"])]
    assert exfiltration, [a["alert"]["entity"]["value"] for a in alerts]
    assert {a["rule"]["id"] for a in exfiltration} == {"anomaly.network_source"}
    assert "T1048" in exfiltration[0]["threat"]["technique"]["id"]
    found = sorted(s for s, story in stories.items() if any(about_story(a, story) for a in alerts))
    benign = [a for a in alerts if not any(about_story(a, s) for s in stories.values())]
    print(
        f"\ndemo day (scale 0.1) against one baseline day: {len(alerts)} anomaly alerts, "
        f"stories found: {', '.join(found)}; {len(benign)} on benign entities"
    )
    assert datetime.fromisoformat(summary["baseline"]["end"]) == datetime(2026, 11, 26, tzinfo=UTC)
