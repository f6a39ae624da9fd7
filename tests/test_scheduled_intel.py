"""The `intel` detector in `detect run` passes, and `intel import` hunting at once (real node)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch
from taxii2client.v21 import Collection

from detection.alert_exceptions import ExceptionStore, parse_field_values
from detection.scheduled_detection import build_scheduled_detection
from lianfang.cli import main
from lianfang.settings import Settings
from lianfang.store import EventStore
from sharing.intel_hunt import MATCH_RULE_ID
from sharing.stix_outbox import Outbox
from tests.conftest import TEST_MASKING_KEY
from tests.intel_fixtures import (
    connection,
    indicator,
    ingest_events,
    intel_store,
    stored_indicator,
)
from tests.test_taxii_sync import PASSWORD, PASSWORD_ENV, SHARED, USER, medallion

__all__ = ["medallion"]  # the TAXII server fixture, shared with tests/test_taxii_sync.py


def cli(settings: Settings, *arguments: str, **extra: str) -> tuple[int, str]:
    environment = {
        **extra,
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": TEST_MASKING_KEY,
    }
    result = CliRunner().invoke(main, list(arguments), env=environment, catch_exceptions=False)
    return result.exit_code, result.stdout


def intel_alerts(client: Elasticsearch, settings: Settings) -> list[dict[str, Any]]:
    index = f"{settings.index_prefix}-alerts"
    client.indices.refresh(index=index)
    hits = client.search(index=index, query={"term": {"rule.id": MATCH_RULE_ID}})["hits"]["hits"]
    return [hit["_source"] for hit in hits]


def queued_sightings(client: Elasticsearch, settings: Settings, peer: str) -> list[dict[str, Any]]:
    outbox = Outbox(client, settings.index_prefix)
    return [e.object for e in outbox.entries(reader=peer) if e.object["type"] == "sighting"]


def test_detect_run_hunts_new_indicators_raises_alerts_and_sightings_once(
    client: Elasticsearch, settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    ingest_events(
        settings,
        store,
        tmp_path / "events.ndjson",
        [
            connection(60, "10.20.0.5", "203.0.113.80"),
            connection(59, "10.20.0.5", "203.0.113.80"),
            connection(58, "10.20.0.6", "198.51.100.7"),
        ],
    )
    intel = intel_store(client, settings)
    from_peer = stored_indicator(intel, "peer", "[ipv4-addr:value = '203.0.113.80']", "taxii:cert")
    from_feed = stored_indicator(
        intel, "scanner", "[ipv4-addr:value = '198.51.100.7']", "feed:list"
    )
    # The scheduler applies exceptions to intel alerts too: a suppressed match gets no sighting.
    ExceptionStore(client, settings.index_prefix).add(
        parse_field_values([f"rule.id={MATCH_RULE_ID}", "alert.entity.value=198.51.100.7"]),
        reason="our own scanner",
        created_by="analyst.li",
    )

    code, out = cli(settings, "detect", "run", "--once", "--source", "intel", "--json")
    assert code == 0, out
    [line] = out.splitlines()
    [run] = json.loads(line)["runs"]
    assert run["detector"] == "intel" and run["error"] is None
    assert (run["found"], run["created"], run["suppressed"]) == (2, 1, 1)
    assert run["details"]["retro_hunted"] == 2 and run["details"]["retro_matches"] == 2
    assert run["details"]["sightings"] == 1 and run["details"]["sightings_queued"] == 1

    [alert] = intel_alerts(client, settings)
    assert alert["alert"]["entity"]["value"] == "203.0.113.80"
    assert alert["alert"]["count"] == 2 and alert["organization"]["id"] == "finance"
    [shared] = queued_sightings(client, settings, "cert")
    assert shared["sighting_of_ref"] == from_peer["id"] and shared["count"] == 2
    assert intel.get(from_peer["id"]).sightings == 1  # type: ignore[union-attr]
    assert intel.get(from_feed["id"]).sightings == 0  # type: ignore[union-attr]
    assert not intel.pending_hunts()  # both versions were hunted and the progress saved

    # A backfill pass of three windows: the intel pass runs once, with the last window, and
    # finds nothing new; nothing is duplicated.
    now = datetime.now(UTC)
    scheduled = build_scheduled_detection(settings, client, ["intel", "behavioural"])
    assert not scheduled.problems
    reports = scheduled.scheduler.run_range(
        now - timedelta(hours=3), now, timedelta(hours=1), timedelta(0)
    )
    assert len(reports) == 3
    assert ["intel" in {r.detector for r in report.runs} for report in reports] == [
        False,
        False,
        True,
    ]
    [intel_run] = [r for r in reports[-1].runs if r.detector == "intel"]
    assert intel_run.error is None and intel_run.created == 0 and intel_run.found == 0
    assert intel_run.details["retro_hunted"] == 0
    assert len(intel_alerts(client, settings)) == 1
    assert len(queued_sightings(client, settings, "cert")) == 1
    assert intel.get(from_peer["id"]).sightings == 1  # type: ignore[union-attr]


def bundle(*objects: dict[str, Any]) -> str:
    return json.dumps({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects})


def test_intel_import_hunts_the_new_indicators_at_once(
    client: Elasticsearch, settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    ingest_events(
        settings, store, tmp_path / "events.ndjson", [connection(30, "10.20.0.5", "203.0.113.81")]
    )
    first = indicator("c2", "[ipv4-addr:value = '203.0.113.81']", confidence=75)
    feed = tmp_path / "c2.json"
    feed.write_text(bundle(first))
    code, out = cli(settings, "intel", "import", str(feed), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["indicators_new"] == 1
    hunt = result["hunt"]
    assert hunt["retro_hunt"]["hunted"] == 1 and hunt["retro_hunt"]["matches"] == 1
    assert hunt["alerts_created"] == 1 and hunt["sightings"] == 1
    [alert] = intel_alerts(client, settings)
    assert alert["alert"]["entity"]["value"] == "203.0.113.81"

    code, out = cli(settings, "intel", "import", str(feed), "--json")
    assert code == 0 and json.loads(out)["hunt"] is None  # nothing new, nothing hunted

    # A revised version with --no-hunt waits for the next scheduler pass.
    revised = indicator(
        "c2",
        "[ipv4-addr:value = '203.0.113.81']",
        confidence=80,
        modified=datetime.now(UTC) - timedelta(minutes=5),
    )
    feed.write_text(bundle(revised))
    code, out = cli(settings, "intel", "import", str(feed), "--no-hunt", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["indicators_updated"] == 1 and result["hunt"] is None
    intel = intel_store(client, settings)
    assert [r.stix_id for r in intel.pending_hunts()] == [first["id"]]

    code, out = cli(settings, "detect", "run", "--once", "--source", "intel", "--json")
    assert code == 0, out
    [run] = json.loads(out.splitlines()[-1])["runs"]
    assert run["details"]["retro_hunted"] == 1 and run["created"] == 0
    assert not intel.pending_hunts()
    assert len(intel_alerts(client, settings)) == 1


@pytest.mark.slow
def test_intel_pull_hunts_what_it_took_in(
    client: Elasticsearch,
    settings: Settings,
    store: EventStore,
    medallion: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    ingest_events(
        settings, store, tmp_path / "events.ndjson", [connection(30, "10.20.0.5", "203.0.113.82")]
    )
    shared = indicator("hub", "[ipv4-addr:value = '203.0.113.82']", confidence=75)
    Collection(f"{medallion}collections/{SHARED}/", user=USER, password=PASSWORD).add_objects(
        bundle(shared)
    )
    config = tmp_path / "lianfang.toml"
    config.write_text(
        f"""[intel]
sync_backoff_seconds = 0.01
[[intel.peers]]
name = "hub"
api_root = "{medallion}"
username = "{USER}"
password_env = "{PASSWORD_ENV}"
collections = [{{ id = "{SHARED}", direction = "pull" }}]
"""
    )
    code, out = cli(settings, "intel", "pull", "--json", LIANFANG_CONFIG=str(config))
    assert code == 0, out
    result = json.loads(out)
    assert result["collections"][0]["intake"]["indicators_new"] == 1
    hunt = result["hunt"]
    assert hunt["retro_hunt"]["matches"] == 1 and hunt["alerts_created"] == 1
    assert hunt["sightings"] == 1 and hunt["sightings_queued"] == 1  # back to the hub
    [shared_back] = queued_sightings(client, settings, "hub")
    assert shared_back["sighting_of_ref"] == shared["id"]

    code, out = cli(settings, "intel", "pull", "--json", LIANFANG_CONFIG=str(config))
    assert code == 0 and json.loads(out)["hunt"] is None  # nothing new came in
