"""GET /api/v1/audit: the audit trail, for administrators."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.authentication import require_roles
from api.dependencies import AppServices, services
from api.parameters import Moment
from lianfang.event_search import decode_cursor, page_cursor, range_clause
from lianfang.principals import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["audit"])
administrator = require_roles(Role.ADMINISTRATOR)


@router.get("/audit")
def list_audit(
    app: Annotated[AppServices, Depends(services)],
    _: Annotated[Principal, Depends(administrator)],
    user: Annotated[str | None, Query(max_length=200)] = None,
    outcome: Annotated[str | None, Query(pattern="^(success|failure)$")] = None,
    action: Annotated[
        str | None, Query(max_length=500, description="e.g. PATCH /api/v1/alerts/{alert_id}")
    ] = None,
    start: Annotated[Moment | None, Query()] = None,
    end: Annotated[Moment | None, Query()] = None,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, Any]:
    """Audit records, newest first: who called what, from where, with which result."""
    size = min(size, app.settings.api_page_cap)
    clauses: list[dict[str, Any]] = []
    for field, value in (("user.name", user), ("event.outcome", outcome), ("event.action", action)):
        if value:
            clauses.append({"term": {field: value}})
    if time_range := range_clause("@timestamp", start, end):
        clauses.append(time_range)
    body: dict[str, Any] = {
        "size": size,
        "query": {"bool": {"filter": clauses}},
        # _doc breaks ties within one millisecond well enough for one index; the cursor
        # carries both values.
        "sort": [{"@timestamp": "desc"}, {"event.duration": "desc"}],
    }
    if cursor:
        body["search_after"] = decode_cursor(cursor, ("long", "long"))
    response = app.client.search(
        index=app.audit.pattern, ignore_unavailable=True, allow_no_indices=True, **body
    )
    hits = response["hits"]["hits"]
    return {
        "records": [hit["_source"] for hit in hits],
        "next_cursor": page_cursor(hits, size),
    }
