"""Joint incidents (联动处置): the record, its lifecycle, tasks, timeline and SLA clock.

Everything here is pure: functions take an incident document and return the changed one,
so the API can apply them through the scoped store with optimistic concurrency. An
incident lists its lead and participating departments in `organization.id`, which is how
the store-layer scoping lets every involved department see it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lianfang.schema import format_timestamp, parse_timestamp

STATUSES = ("new", "triage", "containment", "eradication", "recovery", "closed")
SEVERITIES = ("low", "medium", "high", "critical")
TIMELINE_CAP = 1000

INCIDENT_FIELDS = {
    "@timestamp": "date",
    "organization.id": "keyword",
    "incident.id": "keyword",
    "incident.title": "text",
    "incident.severity": "keyword",
    "incident.status": "keyword",
    "incident.lead": "keyword",
    "incident.participants": "keyword",
    "incident.alert_ids": "keyword",
    "incident.created_at": "date",
    "incident.created_by": "keyword",
    "incident.updated_at": "date",
    "incident.acknowledged_at": "date",
    "incident.resolved_at": "date",
    "incident.sla.acknowledge_by": "date",
    "incident.sla.resolve_by": "date",
    "incident.time_to_acknowledge_seconds": "long",
    "incident.time_to_resolve_seconds": "long",
    "incident.tasks.department": "keyword",
    "incident.tasks.owner": "keyword",
    "incident.tasks.status": "keyword",
    "incident.tasks.due": "date",
}


class IncidentError(ValueError):
    """A change the incident's rules do not allow; carries the incident id."""

    def __init__(self, incident_id: str, reason: str) -> None:
        super().__init__(f"incident {incident_id}: {reason}")
        self.incident_id = incident_id
        self.reason = reason


@dataclass(frozen=True)
class SlaPolicy:
    """How long each severity may wait for acknowledgement and for resolution."""

    acknowledge: dict[str, timedelta]
    resolve: dict[str, timedelta]

    @classmethod
    def default(cls) -> SlaPolicy:
        """The office's default: critical acknowledged in 15 minutes, resolved in a day, ..."""
        return cls(
            acknowledge={
                "critical": timedelta(minutes=15),
                "high": timedelta(hours=1),
                "medium": timedelta(hours=4),
                "low": timedelta(hours=24),
            },
            resolve={
                "critical": timedelta(hours=24),
                "high": timedelta(hours=72),
                "medium": timedelta(days=7),
                "low": timedelta(days=30),
            },
        )


def _entry(now: datetime, by: str, kind: str, **details: Any) -> dict[str, Any]:
    return {"at": format_timestamp(now), "by": by, "kind": kind, **details}


def _append(incident: dict[str, Any], entry: dict[str, Any]) -> None:
    incident["timeline"] = [*incident.get("timeline", []), entry][-TIMELINE_CAP:]
    incident["updated_at"] = entry["at"]


def new_incident(
    *,
    title: str,
    severity: str,
    lead: str,
    participants: list[str],
    alert_ids: list[str],
    created_by: str,
    now: datetime,
    policy: SlaPolicy,
    description: str = "",
) -> dict[str, Any]:
    """A new incident document, status `new`, with its SLA deadlines."""
    if severity not in SEVERITIES:
        raise IncidentError("(new)", f"severity must be one of {SEVERITIES}")
    departments = list(dict.fromkeys([lead, *participants]))
    incident_id = uuid.uuid4().hex
    incident: dict[str, Any] = {
        "id": incident_id,
        "title": title,
        "description": description,
        "severity": severity,
        "status": "new",
        "lead": lead,
        "participants": departments[1:],
        "alert_ids": list(dict.fromkeys(alert_ids)),
        "tasks": [],
        "created_at": format_timestamp(now),
        "created_by": created_by,
        "sla": {
            "acknowledge_by": format_timestamp(now + policy.acknowledge[severity]),
            "resolve_by": format_timestamp(now + policy.resolve[severity]),
        },
    }
    _append(incident, _entry(now, created_by, "created", alerts=len(incident["alert_ids"])))
    return {
        "@timestamp": format_timestamp(now),
        "organization": {"id": departments},
        "incident": incident,
    }


def change_status(document: dict[str, Any], status: str, by: str, now: datetime) -> dict[str, Any]:
    """Move through the lifecycle; the first move out of `new` acknowledges, `closed` resolves."""
    incident = dict(document["incident"])
    if status not in STATUSES:
        raise IncidentError(incident["id"], f"status must be one of {STATUSES}")
    previous = incident["status"]
    if status == previous:
        return document
    if previous == "closed" and status != "triage":
        raise IncidentError(incident["id"], "a closed incident can only be reopened into triage")
    if status == "closed":
        open_tasks = [t["id"] for t in incident["tasks"] if t["status"] != "done"]
        if open_tasks:
            raise IncidentError(incident["id"], f"{len(open_tasks)} tasks are still open")
    created = parse_timestamp(incident["created_at"])
    incident["status"] = status
    if previous == "new" and not incident.get("acknowledged_at"):
        incident["acknowledged_at"] = format_timestamp(now)
        incident["time_to_acknowledge_seconds"] = int((now - created).total_seconds())
    if status == "closed":
        incident["resolved_at"] = format_timestamp(now)
        incident["time_to_resolve_seconds"] = int((now - created).total_seconds())
    elif previous == "closed":
        incident.pop("resolved_at", None)
        incident.pop("time_to_resolve_seconds", None)
    _append(incident, _entry(now, by, "status", **{"from": previous, "to": status}))
    return {**document, "@timestamp": format_timestamp(now), "incident": incident}


def add_participants(
    document: dict[str, Any], departments: list[str], by: str, now: datetime
) -> dict[str, Any]:
    """Bring more departments into the joint response."""
    incident = dict(document["incident"])
    known = [incident["lead"], *incident["participants"]]
    added = [d for d in dict.fromkeys(departments) if d not in known]
    if not added:
        return document
    incident["participants"] = [*incident["participants"], *added]
    _append(incident, _entry(now, by, "participants", added=added))
    return {**document, "organization": {"id": [*known, *added]}, "incident": incident}


def add_comment(document: dict[str, Any], text: str, by: str, now: datetime) -> dict[str, Any]:
    """A comment on the timeline."""
    incident = dict(document["incident"])
    _append(incident, _entry(now, by, "comment", text=text))
    return {**document, "incident": incident}


def add_task(
    document: dict[str, Any],
    *,
    title: str,
    department: str,
    owner: str | None,
    due: datetime | None,
    by: str,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A task for one participating department; returns (incident, task)."""
    incident = dict(document["incident"])
    if department not in (incident["lead"], *incident["participants"]):
        raise IncidentError(incident["id"], f"{department} does not take part in this incident")
    task = {
        "id": uuid.uuid4().hex[:12],
        "title": title,
        "department": department,
        "owner": owner,
        "due": format_timestamp(due) if due else None,
        "status": "open",
        "created_at": format_timestamp(now),
    }
    incident["tasks"] = [*incident["tasks"], task]
    _append(
        incident,
        _entry(now, by, "task", task=task["id"], title=title, department=department, owner=owner),
    )
    return {**document, "incident": incident}, task


def update_task(
    document: dict[str, Any],
    task_id: str,
    *,
    status: str | None,
    owner: str | None,
    by: str,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mark a task done (or open again) or reassign it; returns (incident, task)."""
    incident = dict(document["incident"])
    tasks = [dict(t) for t in incident["tasks"]]
    task = next((t for t in tasks if t["id"] == task_id), None)
    if task is None:
        raise IncidentError(incident["id"], f"no task {task_id}")
    changes: dict[str, Any] = {}
    if status is not None and status != task["status"]:
        if status not in ("open", "done"):
            raise IncidentError(incident["id"], "task status is open or done")
        changes["status"] = {"from": task["status"], "to": status}
        task["status"] = status
        task["done_at"] = format_timestamp(now) if status == "done" else None
    if owner is not None and owner != task["owner"]:
        changes["owner"] = {"from": task["owner"], "to": owner}
        task["owner"] = owner
    incident["tasks"] = tasks
    if changes:
        _append(incident, _entry(now, by, "task_update", task=task_id, **changes))
    return {**document, "incident": incident}, task


def sla_state(incident: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Overdue flags for acknowledgement, resolution and each open task (read-time, pure)."""
    sla = incident["sla"]
    acknowledge_overdue = not incident.get("acknowledged_at") and now > parse_timestamp(
        sla["acknowledge_by"]
    )
    resolve_overdue = incident["status"] != "closed" and now > parse_timestamp(sla["resolve_by"])
    overdue_tasks = [
        task["id"]
        for task in incident["tasks"]
        if task["status"] != "done" and task.get("due") and now > parse_timestamp(task["due"])
    ]
    return {
        "acknowledge_overdue": acknowledge_overdue,
        "resolve_overdue": resolve_overdue,
        "overdue_tasks": overdue_tasks,
        "overdue": acknowledge_overdue or resolve_overdue or bool(overdue_tasks),
    }


def now_utc() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
