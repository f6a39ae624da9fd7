"""Joint incidents: pure lifecycle rules, and the API against the real node with webhooks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from detection.alerts import Alert, AlertStore
from lianfang import incidents as lifecycle
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings

NOW = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)


def incident(severity: str = "high") -> dict:
    return lifecycle.new_incident(
        title="Brute force then exfiltration",
        severity=severity,
        lead="gov-cloud",
        participants=["finance", "gov-cloud"],
        alert_ids=["a1", "a1", "a2"],
        created_by="li",
        now=NOW,
        policy=lifecycle.SlaPolicy.default(),
    )


def test_new_incident_lists_every_department_once_and_sets_deadlines() -> None:
    document = incident()
    assert document["organization"]["id"] == ["gov-cloud", "finance"]
    assert document["incident"]["alert_ids"] == ["a1", "a2"]
    assert document["incident"]["sla"]["acknowledge_by"] == "2026-11-28T05:00:00.000Z"
    assert document["incident"]["sla"]["resolve_by"] == "2026-12-01T04:00:00.000Z"


def test_lifecycle_measures_acknowledge_and_resolve_times() -> None:
    document = lifecycle.change_status(incident(), "triage", "li", NOW + timedelta(minutes=20))
    assert document["incident"]["time_to_acknowledge_seconds"] == 1200
    document, task = lifecycle.add_task(
        document,
        title="block IP",
        department="finance",
        owner="wang",
        due=NOW + timedelta(hours=2),
        by="li",
        now=NOW,
    )
    with pytest.raises(lifecycle.IncidentError, match="tasks are still open"):
        lifecycle.change_status(document, "closed", "li", NOW + timedelta(hours=5))
    document, _ = lifecycle.update_task(
        document, task["id"], status="done", owner=None, by="wang", now=NOW
    )
    closed = lifecycle.change_status(document, "closed", "li", NOW + timedelta(hours=5))
    assert closed["incident"]["time_to_resolve_seconds"] == 5 * 3600
    with pytest.raises(lifecycle.IncidentError, match="reopened into triage"):
        lifecycle.change_status(closed, "containment", "li", NOW)
    reopened = lifecycle.change_status(closed, "triage", "li", NOW + timedelta(hours=6))
    assert "resolved_at" not in reopened["incident"]
    kinds = [entry["kind"] for entry in reopened["incident"]["timeline"]]
    assert kinds == ["created", "status", "task", "task_update", "status", "status"]


def test_tasks_only_for_participants_and_sla_overdue_flags() -> None:
    with pytest.raises(lifecycle.IncidentError, match="does not take part"):
        lifecycle.add_task(
            incident(), title="x", department="energy", owner=None, due=None, by="li", now=NOW
        )
    document, task = lifecycle.add_task(
        incident("critical"),
        title="x",
        department="finance",
        owner=None,
        due=NOW + timedelta(minutes=5),
        by="li",
        now=NOW,
    )
    assert lifecycle.sla_state(document["incident"], NOW) == {
        "acknowledge_overdue": False,
        "resolve_overdue": False,
        "overdue_tasks": [],
        "overdue": False,
    }
    late = lifecycle.sla_state(document["incident"], NOW + timedelta(minutes=30))
    assert late["acknowledge_overdue"] and late["overdue_tasks"] == [task["id"]]


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def api(settings: Settings, client, webhook: str) -> Iterator[tuple[TestClient, dict]]:
    settings = settings.model_copy(update={"webhook_urls": [webhook]})
    alerts = AlertStore(client, settings.index_prefix)
    alerts.install()
    seen = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    made = [
        Alert(
            "r1",
            "SSH brute force",
            "behavioural",
            "high",
            "source.ip",
            "203.0.113.77",
            seen,
            seen,
            "x",
            "gov-cloud",
        ),
        Alert(
            "r2",
            "Exfiltration",
            "behavioural",
            "critical",
            "source.ip",
            "10.20.1.14",
            seen,
            seen,
            "y",
            "finance",
        ),
        Alert(
            "r3",
            "Scan",
            "behavioural",
            "medium",
            "source.ip",
            "198.51.100.23",
            seen,
            seen,
            "z",
            "energy",
        ),
    ]
    alerts.upsert(made)
    alerts.refresh()
    principals = PrincipalStore(client, settings.index_prefix)
    principals.install()
    principals.add_user("province", Role.PROVINCE_ANALYST, None)
    principals.add_user("gov", Role.DEPARTMENT_ANALYST, "gov-cloud")
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance")
    principals.add_user("energy", Role.DEPARTMENT_ANALYST, "energy")
    headers = {
        name: {"Authorization": f"Bearer {principals.create_key(name)}"}
        for name in ("province", "gov", "fin", "energy")
    }
    with TestClient(create_app(settings)) as test_client:
        yield test_client, {"headers": headers, "alerts": [a.id for a in made]}


def test_joint_incident_through_the_api(api: tuple[TestClient, dict]) -> None:
    client, seeded = api
    headers, alert_ids = seeded["headers"], seeded["alerts"]
    # A department cannot build an incident from another department's alert.
    refused = client.post(
        "/api/v1/incidents",
        headers=headers["gov"],
        json={"title": "x", "alert_ids": [alert_ids[1]]},
    )
    assert refused.status_code == 404
    assert refused.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": f"no alert {alert_ids[1]}",
    }
    created = client.post(
        "/api/v1/incidents",
        headers=headers["province"],
        json={
            "title": "Bastion compromise and exfiltration",
            "alert_ids": alert_ids[:2],
            "lead": "gov-cloud",
        },
    )
    assert created.status_code == 201, created.text
    incident = created.json()
    assert incident["severity"] == "critical"  # the worst of its alerts
    assert incident["participants"] == ["finance"]
    url = f"/api/v1/incidents/{incident['id']}"
    # Lead and participant see it; an uninvolved department does not.
    assert client.get(url, headers=headers["gov"]).status_code == 200
    assert client.get(url, headers=headers["fin"]).status_code == 200
    hidden = client.get(url, headers=headers["energy"])
    assert hidden.status_code == 404
    assert hidden.json()["error"]["message"] == f"no incident {incident['id']}"
    listed = client.get("/api/v1/incidents", headers=headers["energy"]).json()
    assert listed["total"] == 0
    assert (
        client.patch(url, headers=headers["energy"], json={"status": "triage"}).status_code == 404
    )

    task = client.post(
        f"{url}/tasks",
        headers=headers["gov"],
        json={
            "title": "Block 185.220.101.9 at the border",
            "department": "finance",
            "owner": "fin",
            "due": "2026-11-28T06:00:00Z",
        },
    )
    assert task.status_code == 201, task.text
    task_id = task.json()["task"]["id"]
    assert (
        client.patch(url, headers=headers["gov"], json={"status": "triage"}).json()["status"]
        == "triage"
    )
    assert (
        client.patch(url, headers=headers["gov"], json={"status": "closed"}).status_code == 409
    )  # open task
    client.post(f"{url}/comments", headers=headers["fin"], json={"text": "blocked at 06:10"})
    done = client.patch(f"{url}/tasks/{task_id}", headers=headers["fin"], json={"status": "done"})
    assert done.json()["task"]["status"] == "done"
    closed = client.patch(url, headers=headers["gov"], json={"status": "closed"}).json()
    assert closed["status"] == "closed"
    assert [entry["kind"] for entry in closed["timeline"]] == [
        "created",
        "task",
        "status",
        "comment",
        "task_update",
        "status",
    ]

    metrics = client.get("/api/v1/incidents/metrics", headers=headers["province"]).json()["metrics"]
    assert metrics[0]["department"] == "gov-cloud" and metrics[0]["severity"] == "critical"
    assert metrics[0]["time_to_resolve"]["mean"] is not None

    # The task assignment reached the webhook (escalation is tested on a second incident).
    second = client.post(
        "/api/v1/incidents",
        headers=headers["gov"],
        json={"title": "Brute force", "alert_ids": [alert_ids[0]], "severity": "medium"},
    ).json()
    client.patch(
        f"/api/v1/incidents/{second['id']}", headers=headers["gov"], json={"severity": "critical"}
    )
    client.app.state.services.webhooks.wait()
    kinds = sorted(message["kind"] for message in Receiver.received)
    assert kinds == ["assignment", "escalation"]
    escalation = next(m for m in Receiver.received if m["kind"] == "escalation")
    assert escalation["severity"] == {"from": "medium", "to": "critical"}
