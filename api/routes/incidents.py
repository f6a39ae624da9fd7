"""Joint incidents: create from alerts, lifecycle, tasks per department, timeline, SLA, metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from api.authentication import analyst
from api.dependencies import AppServices, services
from api.parameters import Moment
from detection.alerts import SEVERITIES as ALERT_SEVERITIES
from lianfang import incidents as lifecycle
from lianfang.event_search import decode_cursor, page_cursor, range_clause
from lianfang.principals import Principal
from lianfang.schema import format_timestamp
from lianfang.scoped_store import ScopedStore

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])

Status = Literal["new", "triage", "containment", "eradication", "recovery", "closed"]
Severity = Literal["low", "medium", "high", "critical"]
Identifier = Annotated[str, Field(min_length=1, max_length=100)]


class IncidentCreate(BaseModel):
    """A joint incident made from alerts the caller can see."""

    title: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=10_000)
    alert_ids: list[Identifier] = Field(min_length=1, max_length=500)
    lead: Identifier | None = None
    participants: list[Identifier] = Field(default_factory=list, max_length=50)
    severity: Severity | None = None


class IncidentChange(BaseModel):
    """Lifecycle move, escalation, or more departments."""

    status: Status | None = None
    severity: Severity | None = None
    add_participants: list[Identifier] = Field(default_factory=list, max_length=50)


class Comment(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class TaskCreate(BaseModel):
    title: str = Field(min_length=1, max_length=500)
    department: Identifier
    owner: str | None = Field(default=None, max_length=200)
    due: Moment | None = None


class TaskChange(BaseModel):
    status: Literal["open", "done"] | None = None
    owner: str | None = Field(default=None, max_length=200)


def _scoped(app: AppServices, principal: Principal) -> ScopedStore:
    return ScopedStore(app.client, principal.organization_scope)


def _view(document: dict[str, Any]) -> dict[str, Any]:
    """The incident as the API shows it: the record plus its SLA state now."""
    incident = document["incident"]
    return {**incident, "sla_state": lifecycle.sla_state(incident, lifecycle.now_utc())}


def _change(
    app: AppServices, principal: Principal, incident_id: str, transform: Any
) -> dict[str, Any]:
    """Apply a lifecycle transformation: 409 when not allowed (OutOfScope answers 404)."""
    try:
        return _scoped(app, principal).update(app.names.incidents, incident_id, transform)
    except lifecycle.IncidentError as error:
        raise HTTPException(status_code=409, detail=error.reason) from error


def _notify_assignment(
    app: AppServices, document: dict[str, Any], task: dict[str, Any], by: str
) -> None:
    app.webhooks.notify("assignment", {"incident": _summary(document), "task": task, "by": by})


@router.post("", status_code=201)
def create_incident(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    request: IncidentCreate,
) -> dict[str, Any]:
    """Open a joint incident from alerts; lead defaults to the caller's department."""
    scoped = _scoped(app, principal)
    alerts = [
        scoped.get(app.names.alerts, alert_id) for alert_id in dict.fromkeys(request.alert_ids)
    ]
    alert_departments = [
        a.get("organization", {}).get("id") for a in alerts if a.get("organization")
    ]
    lead = (
        request.lead
        or principal.department
        or (alert_departments[0] if alert_departments else None)
    )
    if lead is None:
        raise HTTPException(status_code=422, detail="name a lead department")
    if not principal.sees_all_departments and lead != principal.department:
        raise HTTPException(
            status_code=403, detail="a department analyst can only lead for its own department"
        )
    severity = request.severity or max(
        (a["alert"]["severity"] for a in alerts), key=ALERT_SEVERITIES.index
    )
    document = lifecycle.new_incident(
        title=request.title,
        description=request.description,
        severity=severity,
        lead=lead,
        participants=[*request.participants, *(d for d in alert_departments if d)],
        alert_ids=[a["alert"]["id"] for a in alerts],
        created_by=principal.name,
        now=lifecycle.now_utc(),
        policy=lifecycle.SlaPolicy.default(),
    )
    ScopedStore(app.client, None).create(app.names.incidents, document["incident"]["id"], document)
    return _view(document)


@router.get("")
def list_incidents(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    status: Annotated[list[Status] | None, Query()] = None,
    department: Annotated[str | None, Query(max_length=100)] = None,
    open_only: Annotated[bool, Query(description="hide closed incidents")] = False,
    overdue: Annotated[bool, Query(description="only incidents past an SLA deadline")] = False,
    size: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, Any]:
    """Incidents the caller's departments lead or take part in, most recently changed first."""
    size = min(size, app.settings.api_page_cap)
    clauses: list[dict[str, Any]] = []
    if status:
        clauses.append({"terms": {"incident.status": list(status)}})
    if department:
        clauses.append({"term": {"organization.id": department}})
    must_not = [{"term": {"incident.status": "closed"}}] if open_only or overdue else []
    if overdue:
        now = format_timestamp(lifecycle.now_utc())
        clauses.append(
            {
                "bool": {
                    "should": [
                        {
                            "bool": {
                                "filter": [{"range": {"incident.sla.acknowledge_by": {"lt": now}}}],
                                "must_not": [{"exists": {"field": "incident.acknowledged_at"}}],
                            }
                        },
                        {"range": {"incident.sla.resolve_by": {"lt": now}}},
                        {"range": {"incident.tasks.due": {"lt": now}}},
                    ]
                }
            }
        )
    body: dict[str, Any] = {
        "size": size,
        "sort": [{"@timestamp": "desc"}, {"incident.id": "desc"}],
        "track_total_hits": True,
    }
    if cursor:
        body["search_after"] = decode_cursor(cursor, ("long", "keyword"))
    response = _scoped(app, principal).search(
        app.names.incidents, query={"bool": {"filter": clauses, "must_not": must_not}}, **body
    )
    hits = response["hits"]["hits"]
    views = [_view(hit["_source"]) for hit in hits]
    if overdue:  # the index query is a superset (task status and due are not nested): be exact
        views = [view for view in views if view["sla_state"]["overdue"]]
    return {
        "incidents": views,
        "total": response["hits"]["total"]["value"],
        "next_cursor": page_cursor(hits, size),
    }


@router.get("/metrics")
def incident_metrics(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    start: Annotated[Moment | None, Query(description="created at or after")] = None,
    end: Annotated[Moment | None, Query(description="created before")] = None,
) -> dict[str, Any]:
    """Time to acknowledge and to resolve per lead department and severity (seconds)."""
    clauses: list[dict[str, Any]] = []
    if time_range := range_clause("incident.created_at", start, end):
        clauses.append(time_range)
    durations = {
        name: {"percentiles": {"field": f"incident.{name}_seconds", "percents": [50, 90]}}
        for name in ("time_to_acknowledge", "time_to_resolve")
    }
    averages = {
        f"{name}_mean": {"avg": {"field": f"incident.{name}_seconds"}}
        for name in ("time_to_acknowledge", "time_to_resolve")
    }
    response = _scoped(app, principal).search(
        app.names.incidents,
        query={"bool": {"filter": clauses}},
        size=0,
        aggs={
            "lead": {
                "terms": {"field": "incident.lead", "size": 100},
                "aggs": {
                    "severity": {
                        "terms": {"field": "incident.severity", "size": 4},
                        "aggs": {**durations, **averages},
                    }
                },
            }
        },
    )
    rows = []
    for lead in response.get("aggregations", {}).get("lead", {}).get("buckets", []):
        for severity in lead["severity"]["buckets"]:
            row: dict[str, Any] = {
                "department": lead["key"],
                "severity": severity["key"],
                "incidents": severity["doc_count"],
            }
            for name in ("time_to_acknowledge", "time_to_resolve"):
                values = severity[name]["values"]
                row[name] = {
                    "mean": severity[f"{name}_mean"]["value"],
                    "p50": values.get("50.0"),
                    "p90": values.get("90.0"),
                }
            rows.append(row)
    return {"metrics": rows}


@router.get("/{incident_id}")
def get_incident(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    incident_id: Annotated[str, Path(max_length=64)],
) -> dict[str, Any]:
    """One incident with its timeline, tasks and SLA state."""
    return _view(_scoped(app, principal).get(app.names.incidents, incident_id))


@router.patch("/{incident_id}")
def update_incident(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    incident_id: Annotated[str, Path(max_length=64)],
    change: IncidentChange,
) -> dict[str, Any]:
    """Move the lifecycle, escalate the severity, or bring in more departments."""
    now = lifecycle.now_utc()
    escalated: dict[str, Any] = {}

    def transform(document: dict[str, Any]) -> dict[str, Any]:
        if change.status:
            document = lifecycle.change_status(document, change.status, principal.name, now)
        if change.add_participants:
            document = lifecycle.add_participants(
                document, change.add_participants, principal.name, now
            )
        if change.severity and change.severity != document["incident"]["severity"]:
            incident = dict(document["incident"])
            before = incident["severity"]
            incident["severity"] = change.severity
            incident["timeline"] = [
                *incident["timeline"],
                {
                    "at": format_timestamp(now),
                    "by": principal.name,
                    "kind": "severity",
                    "from": before,
                    "to": change.severity,
                },
            ]
            if ALERT_SEVERITIES.index(change.severity) > ALERT_SEVERITIES.index(before):
                escalated.update({"from": before, "to": change.severity})
            document = {**document, "incident": incident}
        return document

    document = _change(app, principal, incident_id, transform)
    if escalated:
        app.webhooks.notify(
            "escalation",
            {"incident": _summary(document), "severity": escalated, "by": principal.name},
        )
    return _view(document)


@router.post("/{incident_id}/comments", status_code=201)
def comment_incident(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    incident_id: Annotated[str, Path(max_length=64)],
    comment: Comment,
) -> dict[str, Any]:
    """Add a comment to the timeline."""
    now = lifecycle.now_utc()
    document = _change(
        app,
        principal,
        incident_id,
        lambda d: lifecycle.add_comment(d, comment.text, principal.name, now),
    )
    return _view(document)


@router.post("/{incident_id}/tasks", status_code=201)
def create_task(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    incident_id: Annotated[str, Path(max_length=64)],
    request: TaskCreate,
) -> dict[str, Any]:
    """A task for one participating department, with an owner and a due date."""
    now = lifecycle.now_utc()
    created: dict[str, Any] = {}

    def transform(document: dict[str, Any]) -> dict[str, Any]:
        document, task = lifecycle.add_task(
            document,
            title=request.title,
            department=request.department,
            owner=request.owner,
            due=request.due,
            by=principal.name,
            now=now,
        )
        created.update(task)
        return document

    document = _change(app, principal, incident_id, transform)
    if created.get("owner"):
        _notify_assignment(app, document, created, principal.name)
    return {"incident": _view(document), "task": created}


@router.patch("/{incident_id}/tasks/{task_id}")
def change_task(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    incident_id: Annotated[str, Path(max_length=64)],
    task_id: Annotated[str, Path(max_length=64)],
    request: TaskChange,
) -> dict[str, Any]:
    """Complete, reopen or reassign a task."""
    now = lifecycle.now_utc()
    changed: dict[str, Any] = {}

    def transform(document: dict[str, Any]) -> dict[str, Any]:
        before = next((t for t in document["incident"]["tasks"] if t["id"] == task_id), {})
        document, task = lifecycle.update_task(
            document,
            task_id,
            status=request.status,
            owner=request.owner,
            by=principal.name,
            now=now,
        )
        changed.update(task, reassigned=task.get("owner") != before.get("owner"))
        return document

    document = _change(app, principal, incident_id, transform)
    if changed.pop("reassigned", False) and changed.get("owner"):
        _notify_assignment(app, document, changed, principal.name)
    return {"incident": _view(document), "task": changed}


def _summary(document: dict[str, Any]) -> dict[str, Any]:
    incident = document["incident"]
    return {
        key: incident[key] for key in ("id", "title", "severity", "status", "lead", "participants")
    }
