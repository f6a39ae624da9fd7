"""The intelligence store and matching against the real node: intake, states, hunts, sightings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from detection.alerts import AlertStore
from lianfang.settings import Settings
from lianfang.store import EventStore
from sharing.indicator_matching import ingest_lookup, retro_hunt
from sharing.intel_hunt import IntelHunter
from sharing.stix_ids import deterministic_id, stix_timestamp
from sharing.stix_outbox import Outbox
from sharing.tlp import TLP_2_IDS, TlpLevel
from tests.intel_fixtures import (
    PRODUCER,
    connection,
    event,
    indicator,
    ingest_events,
    intel_store,
    stored_indicator,
)


def sighting(key: str, indicator_id: str, count: int = 3) -> dict[str, Any]:
    now = stix_timestamp(datetime.now(UTC) - timedelta(hours=1))
    return {
        "type": "sighting",
        "spec_version": "2.1",
        "id": deterministic_id("sighting", "test", key),
        "created": now,
        "modified": now,
        "sighting_of_ref": indicator_id,
        "where_sighted_refs": [PRODUCER],
        "count": count,
        "first_seen": now,
        "last_seen": now,
    }


def test_intake_validates_dedupes_versions_and_quarantines(
    client: Elasticsearch, settings: Settings
) -> None:
    store = intel_store(client, settings)
    first = indicator("a", "[ipv4-addr:value = '203.0.113.50']")
    broken = {**indicator("b", "[ipv4-addr:value = '203.0.113.51'"), "confidence": 500}
    report = store.intake([first, broken, "junk"], source="feed:test")
    assert (report.received, report.stored, report.quarantined) == (3, 1, 2)
    assert any("confidence" in reason for reason in report.quarantine_reasons)
    quarantined = store.quarantine.list()
    assert {q["object_id"] for q in quarantined} == {broken["id"], None}
    assert all(q["reasons"] for q in quarantined)
    stored = store.get(first["id"])
    assert stored is not None and stored.state == "active" and stored.plan.kind == "atomic"
    assert stored.tlp == "green" and stored.source == "feed:test"

    again = store.intake([first], source="feed:test")
    assert (again.stored, again.duplicates, again.indicators_new) == (0, 1, 0)

    newer = {**first, "modified": stix_timestamp(datetime.now(UTC)), "revoked": True}
    older = {**first, "modified": "2026-01-02T00:00:00.000Z", "confidence": 99}
    revised = store.intake([newer, older], source="feed:test")
    assert revised.revoked == 1
    assert store.get(first["id"]).state == "revoked"  # type: ignore[union-attr]
    late = store.intake([{**first, "modified": "2026-01-03T00:00:00.000Z"}], source="feed:test")
    assert late.older_versions == 1 and store.get(first["id"]).state == "revoked"  # type: ignore[union-attr]

    expired = indicator(
        "c", "[domain-name:value = 'old.example']", valid_until="2026-01-02T00:00:00Z"
    )
    store.intake([expired], source="feed:test")
    assert store.get(expired["id"]).state == "expired"  # type: ignore[union-attr]


def test_sightings_raise_confidence_and_silence_lowers_it(
    client: Elasticsearch, settings: Settings
) -> None:
    store = intel_store(client, settings)
    target = indicator("d", "[ipv4-addr:value = '203.0.113.60']", confidence=50)
    store.intake([target], source="taxii:peer")
    assert store.get(target["id"]).effective_confidence == 50  # type: ignore[union-attr]
    store.intake(
        [sighting("s1", target["id"], 4), sighting("s2", target["id"], 6)], source="taxii:peer"
    )
    record = store.get(target["id"])
    assert record is not None and record.sightings == 2 and record.effective_confidence == 60
    # The same sighting again counts once.
    store.intake([sighting("s1", target["id"], 4)], source="taxii:peer")
    assert store.get(target["id"]).sightings == 2  # type: ignore[union-attr]
    counts = store.refresh_states(datetime.now(UTC) + timedelta(days=200))
    assert counts.get("inactive") == 1
    assert store.get(target["id"]).state == "inactive"  # type: ignore[union-attr]
    assert not list(store.indicators(("active",)))


def test_retro_hunt_atomic_query_matcher_and_unsupported(
    client: Elasticsearch, settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    ingest_events(
        settings,
        store,
        tmp_path / "events.ndjson",
        [
            event(30, source={"ip": "10.20.0.5"}, destination={"ip": "203.0.113.70", "port": 443}),
            event(
                29,
                source={"ip": "10.20.0.6"},
                destination={"ip": "203.0.113.71", "port": 4444},
                network={"transport": "tcp"},
            ),
            event(28, dns={"question": {"name": "c2.evil.example"}}, source={"ip": "10.20.0.7"}),
            event(20, source={"ip": "10.20.0.8"}, destination={"ip": "198.51.100.9"}),
            event(19, url={"full": "http://stage2.example/payload"}, source={"ip": "10.20.0.8"}),
            event(10, source={"ip": "10.20.0.9"}, destination={"ip": "192.0.2.1"}),
        ],
    )
    intel = intel_store(client, settings)
    records_in = [
        indicator("ip", "[ipv4-addr:value = '203.0.113.70']"),
        indicator("domain", "[domain-name:value = 'c2.evil.example']"),
        indicator(
            "query",
            "[network-traffic:dst_ref.value = '203.0.113.71' AND network-traffic:dst_port = 4444]",
        ),
        indicator(
            "sequence",
            "[ipv4-addr:value = '198.51.100.9'] FOLLOWEDBY [url:value = 'http://stage2.example/payload'] WITHIN 300 SECONDS",
        ),
        indicator(
            "reverse",
            "[url:value = 'http://stage2.example/payload'] FOLLOWEDBY [ipv4-addr:value = '198.51.100.9'] WITHIN 300 SECONDS",
        ),
        indicator("registry", "[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\Run']"),
        indicator("absent", "[ipv4-addr:value = '203.0.113.99']"),
    ]
    intel.intake(records_in, source="feed:test")
    pending = intel.pending_hunts()
    assert len(pending) == 6  # the unsupported one is not hunted
    now = datetime.now(UTC)
    report = retro_hunt(
        client,
        f"{settings.index_prefix}-events",
        list(intel.indicators(None)),
        start=now - timedelta(days=1),
        end=now + timedelta(seconds=1),
    )
    matched = {m.indicator.name: m for m in report.matches}
    assert set(matched) == {"ip", "domain", "query", "sequence"}
    assert (
        matched["ip"].matched_field == "destination.ip" and matched["ip"].department_id == "finance"
    )
    assert matched["domain"].atomic == "c2.evil.example"
    assert matched["sequence"].count == 2
    assert [reason for _, reason in report.unsupported] == [
        "object path windows-registry-key:key has no ECS field"
    ]
    starved = retro_hunt(
        client,
        f"{settings.index_prefix}-events",
        pending,
        start=now - timedelta(days=1),
        end=now,
        budget_seconds=0.0,
    )
    assert not starved.hunted and len(starved.unfinished) == len(pending)


@pytest.mark.slow
def test_hunt_raises_alerts_and_sightings_for_the_producer(
    client: Elasticsearch, settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    ingest_events(
        settings,
        store,
        tmp_path / "old.ndjson",
        [connection(60, "10.20.0.5", "203.0.113.80"), connection(59, "10.20.0.5", "203.0.113.80")],
    )
    intel = intel_store(client, settings)
    from_peer = stored_indicator(intel, "peer", "[ipv4-addr:value = '203.0.113.80']", "taxii:cert")
    from_feed = stored_indicator(
        intel, "feed", "[domain-name:value = 'live.evil.example']", "feed:list"
    )
    hunter = IntelHunter(settings, client)
    first = hunter.run()
    assert first.retro.as_dict()["matches"] == 1 and first.alerts_created == 1
    assert first.sightings == 1 and first.sightings_queued == 1
    alerts = AlertStore(client, settings.index_prefix)
    alerts.refresh()
    [hit] = client.search(index=alerts.index, query={"term": {"rule.type": "intel"}})["hits"][
        "hits"
    ]
    alert = hit["_source"]
    assert alert["alert"]["entity"] == {
        "type": "destination.ip",
        "value": "203.0.113.80",
        "fields": {"threat.indicator.id": from_peer["id"]},
    }
    assert alert["alert"]["count"] == 2 and alert["organization"]["id"] == "finance"
    assert alert["alert"]["severity"] == "high"
    record = intel.get(from_peer["id"])
    assert record is not None and record.sightings == 1 and record.effective_confidence == 80
    outbox = Outbox(client, settings.index_prefix)
    queued = list(outbox.entries(reader="cert"))
    [shared] = [e.object for e in queued if e.object["type"] == "sighting"]
    assert shared["sighting_of_ref"] == from_peer["id"] and shared["count"] == 2
    assert shared["object_marking_refs"] == [TLP_2_IDS[TlpLevel.GREEN]]
    assert not [e for e in outbox.entries(reader="other-peer") if e.object["type"] == "sighting"]

    # Nothing new: the versions were hunted, nothing was ingested since.
    second = hunter.run()
    assert second.retro.as_dict()["hunted"] == 0 and second.alerts_created == 0

    # Ingest-time matching: new events are enriched, the next pass turns them into alerts.
    lookup = ingest_lookup(settings, client)
    assert lookup is not None and len(lookup) == 2
    ingest_events(
        settings,
        store,
        tmp_path / "new.ndjson",
        [event(5, source={"ip": "10.20.0.9"}, dns={"question": {"name": "www.live.evil.example"}})],
        indicators=lookup,
    )
    enriched = client.search(
        index=f"{settings.index_prefix}-events", query={"exists": {"field": "threat.enrichments"}}
    )["hits"]["hits"]
    [document] = [h["_source"] for h in enriched]
    [entry] = document["threat"]["enrichments"]
    assert (
        entry["matched"]["id"] == from_feed["id"]
        and entry["indicator"]["marking"]["tlp"] == "GREEN"
    )
    third = hunter.run()
    assert third.ingest_matches == 1 and third.alerts_created == 1 and third.sightings_queued == 0
    assert intel.get(from_feed["id"]).sightings == 1  # type: ignore[union-attr]
    assert hunter.run().ingest_matches == 0  # the bookmark moved on
