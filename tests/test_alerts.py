"""Alerts: deterministic grouping, idempotent re-runs, merging, against the real node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from elasticsearch import Elasticsearch

from detection.alerts import Alert, AlertStore, AttackTechnique, merge_alert
from lianfang.settings import Settings

T0 = datetime(2026, 11, 28, 18, 10, tzinfo=UTC)
BRUTE_FORCE = AttackTechnique("T1110.001", "Password Guessing", (("TA0006", "Credential Access"),))


def brute_force(first: datetime, ids: list[str], **overrides: object) -> Alert:
    fields: dict = {
        "rule_id": "ssh-brute-force",
        "rule_name": "SSH brute force",
        "rule_type": "behavioural",
        "severity": "high",
        "entity_type": "source.ip",
        "entity_value": "203.0.113.77",
        "first_seen": first,
        "last_seen": first + timedelta(minutes=5),
        "explanation": f"{len(ids)} failed SSH logins",
        "organization_id": "gov-cloud",
        "count": len(ids),
        "evidence_event_ids": ids,
        "techniques": [BRUTE_FORCE],
    }
    fields.update(overrides)
    return Alert(**fields)


def test_same_rule_entity_and_window_share_an_id() -> None:
    a = brute_force(T0, ["e1"])
    assert a.id == brute_force(T0 + timedelta(minutes=30), ["e2"]).id
    assert a.id != brute_force(T0 + timedelta(hours=1), ["e2"]).id
    assert a.id != brute_force(T0, ["e1"], entity_value="198.51.100.1").id
    assert a.id != brute_force(T0, ["e1"], organization_id="finance").id


def test_merge_is_idempotent_and_keeps_triage_state() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    first = brute_force(T0, ["e1", "e2"]).document(now)
    first["alert"]["status"] = "acknowledged"
    first["alert"]["assignee"] = "analyst.li"
    again = merge_alert(first, brute_force(T0, ["e1", "e2"]).document(now))
    assert again == first
    grown = merge_alert(first, brute_force(T0 + timedelta(minutes=20), ["e2", "e3"]).document(now))
    assert grown["alert"]["count"] == 3
    assert grown["alert"]["evidence"]["event_ids"] == ["e1", "e2", "e3"]
    assert grown["alert"]["status"] == "acknowledged"
    assert grown["alert"]["last_seen"] == "2026-11-28T18:35:00.000Z"


def test_store_groups_and_rerun_creates_no_duplicates(
    client: Elasticsearch, settings: Settings
) -> None:
    store = AlertStore(client, settings.index_prefix)
    store.install()
    store.install()  # idempotent
    first = store.upsert([brute_force(T0, ["e1", "e2"])])
    rerun = store.upsert([brute_force(T0, ["e1", "e2"])])
    more = store.upsert([brute_force(T0 + timedelta(minutes=10), ["e3"])])
    assert (first.created, rerun.unchanged, more.updated) == (1, 1, 1)
    store.refresh()
    hits = client.search(index=store.index)["hits"]["hits"]
    assert len(hits) == 1
    alert = hits[0]["_source"]
    assert alert["alert"]["count"] == 3
    assert alert["threat"]["technique"]["id"] == ["T1110.001"]
    assert alert["threat"]["tactic"]["name"] == ["Credential Access"]
    assert alert["organization"]["id"] == "gov-cloud"
    mapping = client.indices.get_mapping(index=store.index)[store.index]["mappings"]["properties"]
    assert mapping["alert"]["properties"]["first_seen"]["type"] == "date"
