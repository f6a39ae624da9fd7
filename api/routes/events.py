"""GET /api/v1/events: search stored events by time, exact fields and free text, with paging."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from api.authentication import analyst
from api.dependencies import AppServices, services
from api.parameters import Moment
from lianfang.event_search import EventQuery, FieldFilter, search_events
from lianfang.principals import Principal
from lianfang.scoped_store import ScopedStore

router = APIRouter(prefix="/api/v1", tags=["events"])


class EventsPage(BaseModel):
    """A page of events, newest first, and the cursor that fetches the next page."""

    events: list[dict[str, Any]]
    total: int
    total_is_exact: bool
    next_cursor: str | None


@router.get("/events", response_model=EventsPage)
def list_events(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    start: Annotated[
        Moment | None, Query(description="inclusive lower bound, ISO-8601 with zone")
    ] = None,
    end: Annotated[
        Moment | None, Query(description="exclusive upper bound, ISO-8601 with zone")
    ] = None,
    filter: Annotated[
        list[str] | None,
        Query(description="field:value, repeatable; all must match", max_length=20),
    ] = None,
    q: Annotated[str | None, Query(description="free text in the message", max_length=500)] = None,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    order: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
) -> EventsPage:
    """Events in [start, end) matching every filter and the text, one page at a time.

    A department analyst sees only its own department's events.
    """
    query = EventQuery(
        start=start.astimezone(UTC) if start else None,
        end=end.astimezone(UTC) if end else None,
        filters=tuple(FieldFilter.parse(item) for item in filter or ()),
        text=q or None,
        size=min(size, app.settings.api_page_cap),
        cursor=cursor,
        newest_first=order == "newest",
    )
    scoped = ScopedStore(app.client, principal.organization_scope)
    page = search_events(scoped, app.names.events_alias, query)
    return EventsPage(
        events=page.events,
        total=page.total,
        total_is_exact=page.total_is_exact,
        next_cursor=page.next_cursor,
    )
