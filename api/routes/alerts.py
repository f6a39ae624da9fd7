"""Alerts for triage: list with filters and counts, one alert, its evidence, status changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field, model_validator

from api.authentication import analyst
from api.dependencies import AppServices, services
from api.parameters import Moment
from lianfang.event_search import decode_cursor, page_cursor, range_clause
from lianfang.principals import Principal
from lianfang.schema import format_timestamp
from lianfang.scoped_store import OutOfScope, ScopedStore

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

Status = Literal["open", "acknowledged", "closed"]
Severity = Literal["low", "medium", "high", "critical"]
Resolution = Literal["true_positive", "false_positive"]
AGGREGATIONS = {
    "status": "alert.status",
    "severity": "alert.severity",
    "rule": "rule.name",
    "rule_type": "rule.type",
    "department": "organization.id",
    "tactic": "threat.tactic.name",
    "technique": "threat.technique.id",
}
MAX_BULK = 500
AlertId = Annotated[str, Field(min_length=1, max_length=64)]
HISTORY_CAP = 200


class AlertsPage(BaseModel):
    """A page of alerts, newest activity first, with counts over all matching alerts."""

    alerts: list[dict[str, Any]]
    total: int
    next_cursor: str | None
    counts: dict[str, dict[str, int]]


class AlertChange(BaseModel):
    """A triage action: new status (closing needs a resolution), assignee, comment."""

    status: Status | None = None
    resolution: Resolution | None = None
    assignee: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=4000)

    @model_validator(mode="after")
    def closing_needs_resolution(self) -> AlertChange:
        if self.status == "closed" and self.resolution is None:
            raise ValueError("closing an alert needs a resolution: true_positive or false_positive")
        if self.resolution is not None and self.status not in (None, "closed"):
            raise ValueError("a resolution is only given when closing")
        if self.status is None and self.assignee is None and self.comment is None:
            raise ValueError("nothing to change")
        return self


class BulkAlertChange(AlertChange):
    """The same triage action applied to many alerts."""

    ids: list[AlertId] = Field(min_length=1, max_length=MAX_BULK)


def _scoped(app: AppServices, principal: Principal) -> ScopedStore:
    return ScopedStore(app.client, principal.organization_scope)


@router.get("", response_model=AlertsPage)
def list_alerts(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    status: Annotated[list[Status] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    rule_id: Annotated[str | None, Query(max_length=200)] = None,
    rule_type: Annotated[str | None, Query(max_length=50)] = None,
    department: Annotated[str | None, Query(max_length=100)] = None,
    technique: Annotated[str | None, Query(max_length=20)] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[
        str | None, Query(max_length=500, description="entity value, e.g. an IP")
    ] = None,
    start: Annotated[Moment | None, Query(description="last seen at or after")] = None,
    end: Annotated[Moment | None, Query(description="last seen before")] = None,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> AlertsPage:
    """Alerts matching every filter, with counts by status, severity, rule, tactic, ..."""
    size = min(size, app.settings.api_page_cap)
    clauses: list[dict[str, Any]] = []
    for field, values in (("alert.status", status), ("alert.severity", severity)):
        if values:
            clauses.append({"terms": {field: list(values)}})
    for field, value in (
        ("rule.id", rule_id),
        ("rule.type", rule_type),
        ("organization.id", department),
        ("threat.technique.id", technique),
        ("alert.assignee", assignee),
        ("alert.entity.value", entity),
    ):
        if value:
            clauses.append({"term": {field: value}})
    if time_range := range_clause("alert.last_seen", start, end):
        clauses.append(time_range)
    body: dict[str, Any] = {
        "size": size,
        "sort": [{"alert.last_seen": "desc"}, {"alert.id": "desc"}],
        "aggs": {
            name: {"terms": {"field": field, "size": 50}} for name, field in AGGREGATIONS.items()
        },
        "track_total_hits": True,
    }
    if cursor:
        body["search_after"] = decode_cursor(cursor, ("long", "keyword"))
    response = _scoped(app, principal).search(
        app.names.alerts, query={"bool": {"filter": clauses}}, **body
    )
    hits = response["hits"]["hits"]
    counts = {
        name: {bucket["key"]: bucket["doc_count"] for bucket in aggregation["buckets"]}
        for name, aggregation in response.get("aggregations", {}).items()
    }
    return AlertsPage(
        alerts=[hit["_source"] for hit in hits],
        total=response["hits"]["total"]["value"],
        next_cursor=page_cursor(hits, size),
        counts=counts,
    )


@router.get("/{alert_id}")
def get_alert(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    alert_id: Annotated[str, Path(max_length=64)],
) -> dict[str, Any]:
    """One alert (404 when absent or another department's)."""
    return _scoped(app, principal).get(app.names.alerts, alert_id)


@router.get("/{alert_id}/evidence")
def alert_evidence(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    alert_id: Annotated[str, Path(max_length=64)],
    size: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """The events an alert was raised on (those the caller may see)."""
    scoped = _scoped(app, principal)
    alert = scoped.get(app.names.alerts, alert_id)
    ids = alert["alert"]["evidence"]["event_ids"][: min(size, app.settings.api_page_cap)]
    index = alert["alert"]["evidence"].get("index") or app.names.events_alias
    response = scoped.search(
        index, query={"terms": {"event.id": ids}}, size=len(ids) or 1, sort=[{"@timestamp": "asc"}]
    )
    return {"alert_id": alert_id, "events": [hit["_source"] for hit in response["hits"]["hits"]]}


def _apply(change: AlertChange, principal: Principal) -> Any:
    """The document transformation for one triage action (recorded in the alert's history)."""

    def transform(document: dict[str, Any]) -> dict[str, Any]:
        alert = dict(document["alert"])
        now = format_timestamp(datetime.now(UTC))
        entry: dict[str, Any] = {"at": now, "by": principal.name}
        if change.status is not None:
            entry["status"] = {"from": alert.get("status"), "to": change.status}
            alert["status"] = change.status
            if change.status == "closed":
                alert["resolution"] = change.resolution
                alert["closed_at"] = now
            else:
                alert.pop("resolution", None)
            if change.status == "acknowledged" and not alert.get("acknowledged_at"):
                alert["acknowledged_at"] = now
        if change.assignee is not None:
            entry["assignee"] = {"from": alert.get("assignee"), "to": change.assignee}
            alert["assignee"] = change.assignee or None
        if change.comment:
            entry["comment"] = change.comment
        alert["history"] = [*alert.get("history", []), entry][-HISTORY_CAP:]
        alert["updated_at"] = now
        document["alert"] = alert
        return document

    return transform


@router.patch("/{alert_id}")
def update_alert(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    alert_id: Annotated[str, Path(max_length=64)],
    change: AlertChange,
) -> dict[str, Any]:
    """Change status, resolution or assignee, or add a comment; recorded in the history."""
    return _scoped(app, principal).update(app.names.alerts, alert_id, _apply(change, principal))


@router.post("/bulk")
def bulk_update_alerts(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    change: BulkAlertChange,
) -> dict[str, Any]:
    """Apply one triage action to many alerts; reports per alert."""
    scoped = _scoped(app, principal)
    results: dict[str, str] = {}
    transform = _apply(change, principal)
    for alert_id in dict.fromkeys(change.ids):
        try:
            scoped.update(app.names.alerts, alert_id, transform)
            results[alert_id] = "updated"
        except OutOfScope:
            results[alert_id] = "not_found"
    updated = sum(1 for outcome in results.values() if outcome == "updated")
    return {"updated": updated, "results": results}
