"""The alerts API against the real node: filters, counts, triage, bulk, evidence, scoping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from detection.alerts import Alert, AlertStore, AttackTechnique
from lianfang.bulk_writer import BulkWriter
from lianfang.dead_letter import DeadLetterFile
from lianfang.principals import PrincipalStore, Role
from lianfang.schema import Event, Origin
from lianfang.settings import Settings
from lianfang.store import EventStore

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
SCAN = AttackTechnique("T1046", "Network Service Discovery", (("TA0007", "Discovery"),))


def alert_for(department: str, entity: str, severity: str, evidence: list[str]) -> Alert:
    return Alert(
        rule_id=f"rule-{severity}",
        rule_name=f"Rule {severity}",
        rule_type="behavioural",
        severity=severity,
        entity_type="source.ip",
        entity_value=entity,
        first_seen=T0,
        last_seen=T0 + timedelta(minutes=3),
        explanation="test",
        organization_id=department,
        count=len(evidence),
        evidence_event_ids=evidence,
        techniques=[SCAN],
    )


@pytest.fixture
def seeded(store: EventStore, settings: Settings) -> dict:
    store.install_templates()
    events = [
        Event(
            document={
                "@timestamp": "2026-11-28T02:01:00.000Z",
                "organization": {"id": "finance"},
                "source": {"ip": "198.51.100.1"},
                "message": f"evidence {n}",
            },
            origin=Origin("seed", n),
        )
        for n in range(3)
    ]
    BulkWriter(store.client, store, DeadLetterFile(settings.dead_letter_dir)).add_all(events)
    store.refresh()
    alerts = AlertStore(store.client, settings.index_prefix)
    alerts.install()
    finance = alert_for("finance", "198.51.100.1", "high", [e.id for e in events])
    energy = alert_for("energy", "198.51.100.2", "critical", ["x"])
    low = alert_for("finance", "198.51.100.3", "low", [])
    alerts.upsert([finance, energy, low])
    alerts.refresh()
    principals = PrincipalStore(store.client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance")
    return {
        "finance": finance.id,
        "energy": energy.id,
        "low": low.id,
        "admin": principals.create_key("admin"),
        "fin": principals.create_key("fin"),
    }


@pytest.fixture
def api(settings: Settings, seeded: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_list_filters_and_counts(api: TestClient, seeded: dict) -> None:
    body = api.get("/api/v1/alerts", headers=auth(seeded["admin"])).json()
    assert body["total"] == 3
    assert body["counts"]["severity"] == {"high": 1, "critical": 1, "low": 1}
    assert body["counts"]["tactic"] == {"Discovery": 3}
    high = api.get(
        "/api/v1/alerts", headers=auth(seeded["admin"]), params={"severity": ["high", "critical"]}
    )
    assert high.json()["total"] == 2
    bad = api.get("/api/v1/alerts", headers=auth(seeded["admin"]), params={"severity": "extreme"})
    assert bad.status_code == 422


def test_department_analyst_cannot_see_or_touch_other_departments(
    api: TestClient, seeded: dict
) -> None:
    finance = auth(seeded["fin"])
    body = api.get("/api/v1/alerts", headers=finance).json()
    assert body["total"] == 2
    assert set(body["counts"]["department"]) == {"finance"}
    hidden = api.get(f"/api/v1/alerts/{seeded['energy']}", headers=finance)
    assert hidden.status_code == 404
    assert hidden.json() == {
        "error": {"status": 404, "code": "not_found", "message": f"no alert {seeded['energy']}"}
    }
    change = api.patch(
        f"/api/v1/alerts/{seeded['energy']}", headers=finance, json={"status": "acknowledged"}
    )
    assert change.status_code == 404
    assert change.json() == hidden.json()
    bulk = api.post(
        "/api/v1/alerts/bulk",
        headers=finance,
        json={"ids": [seeded["energy"]], "status": "acknowledged"},
    ).json()
    assert bulk == {"updated": 0, "results": {seeded["energy"]: "not_found"}}
    untouched = api.get(f"/api/v1/alerts/{seeded['energy']}", headers=auth(seeded["admin"])).json()
    assert untouched["alert"]["status"] == "open"


def test_triage_lifecycle_with_history(api: TestClient, seeded: dict) -> None:
    finance = auth(seeded["fin"])
    url = f"/api/v1/alerts/{seeded['finance']}"
    acknowledged = api.patch(
        url, headers=finance, json={"status": "acknowledged", "assignee": "fin"}
    ).json()
    assert acknowledged["alert"]["status"] == "acknowledged"
    assert acknowledged["alert"]["acknowledged_at"]
    refused = api.patch(url, headers=finance, json={"status": "closed"})
    assert refused.status_code == 422  # closing needs a resolution
    closed = api.patch(
        url,
        headers=finance,
        json={"status": "closed", "resolution": "true_positive", "comment": "blocked"},
    ).json()
    assert closed["alert"]["resolution"] == "true_positive"
    history = closed["alert"]["history"]
    assert [h["by"] for h in history] == ["fin", "fin"]
    assert history[-1]["comment"] == "blocked"
    assert closed["organization"]["id"] == "finance"


def test_bulk_acknowledge_and_evidence(api: TestClient, seeded: dict) -> None:
    admin = auth(seeded["admin"])
    result = api.post(
        "/api/v1/alerts/bulk",
        headers=admin,
        json={"ids": [seeded["finance"], seeded["low"], "missing"], "status": "acknowledged"},
    ).json()
    assert result["updated"] == 2
    assert result["results"]["missing"] == "not_found"
    evidence = api.get(f"/api/v1/alerts/{seeded['finance']}/evidence", headers=admin).json()
    assert sorted(e["message"] for e in evidence["events"]) == [
        "evidence 0",
        "evidence 1",
        "evidence 2",
    ]


def test_every_call_is_audited_and_only_administrators_read_it(
    api: TestClient, seeded: dict
) -> None:
    finance = auth(seeded["fin"])
    api.patch(
        f"/api/v1/alerts/{seeded['finance']}", headers=finance, json={"status": "acknowledged"}
    )
    api.get(f"/api/v1/alerts/{seeded['energy']}", headers=finance)  # 404: another department's
    api.get("/api/v1/alerts", headers={"Authorization": "Bearer lf_bad_key"})  # 401
    assert api.get("/api/v1/audit", headers=finance).status_code == 403
    api.app.state.services.audit.flush_now()
    api.app.state.services.client.indices.refresh(index=api.app.state.services.audit.pattern)
    records = api.get("/api/v1/audit", headers=auth(seeded["admin"]), params={"size": 1000}).json()[
        "records"
    ]
    by_action = {(r["event"]["action"], r["http"]["response"]["status_code"]) for r in records}
    assert ("PATCH /api/v1/alerts/{alert_id}", 200) in by_action
    assert ("GET /api/v1/alerts/{alert_id}", 404) in by_action
    assert ("GET /api/v1/alerts", 401) in by_action
    patch = next(r for r in records if r["event"]["action"].startswith("PATCH"))
    assert patch["user"]["name"] == "fin"
    assert patch["organization"]["id"] == "finance"
    assert patch["source"]["address"] == "testclient"
    failures = api.get(
        "/api/v1/audit", headers=auth(seeded["admin"]), params={"outcome": "failure", "user": "fin"}
    ).json()["records"]
    assert {r["http"]["response"]["status_code"] for r in failures} == {403, 404}
