"""GET /api/v1/situation: the situation overview (态势总览) for a time range, scoped by the caller."""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.authentication import analyst
from api.dependencies import AppServices, services
from api.parameters import Moment
from collectors.runtime import read_status
from lianfang.collection_health import DeadLetterCounter, summarise_collector
from lianfang.event_search import InvalidQuery
from lianfang.principals import Principal
from lianfang.scoped_store import ScopedStore
from lianfang.situation import (
    AttackLookup,
    InvalidRange,
    SituationRequest,
    plan_searches,
    shape_situation,
)
from lianfang.situation_record import Situation

router = APIRouter(prefix="/api/v1", tags=["situation"])
log = logging.getLogger(__name__)
Name = Annotated[str, Query(min_length=1, max_length=100)]


@functools.cache
def _attack_catalogue() -> AttackLookup | None:
    """MITRE ATT&CK names for the heat map; without the data, ids stand for names."""
    from detection.attack_catalogue import AttackCatalogue, AttackCatalogueError

    try:
        return AttackCatalogue.load()
    except AttackCatalogueError as error:
        log.warning("situation overview without ATT&CK names: %s", error)
        return None


def _dead_letter_counter(app: AppServices) -> DeadLetterCounter:
    """The app's counter, so each dead-letter file is read once and then incrementally."""
    if app.dead_letter_counter is None:
        app.dead_letter_counter = DeadLetterCounter(app.settings.dead_letter_dir)
    return app.dead_letter_counter


@router.get("/situation", response_model=Situation)
def situation(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
    start: Annotated[
        Moment | None,
        Query(description="inclusive, ISO-8601 with zone; default: 24 hours before end"),
    ] = None,
    end: Annotated[
        Moment | None,
        Query(description="exclusive, ISO-8601 with zone; default: the next whole minute"),
    ] = None,
    department: Annotated[
        list[Name] | None, Query(max_length=20, description="only these departments")
    ] = None,
    sector: Annotated[
        list[Name] | None, Query(max_length=20, description="only these sectors")
    ] = None,
    top: Annotated[int, Query(ge=1, le=50, description="length of the top-N lists")] = 10,
) -> Situation:
    """Volumes, severities, ATT&CK heat map, top targets and sources, incidents, intelligence,
    collection health and a threat level per sector, from one multi-search.

    Department analysts see only their department; dead letters and the collector's status
    (which name no department) are shown to province-wide roles only.
    """
    now = datetime.now(UTC)
    try:
        request = SituationRequest.resolve(
            start,
            end,
            now,
            departments=department or (),
            sectors=sector or (),
            top=top,
            timezone=app.settings.timezone,
        )
    except InvalidRange as error:
        raise InvalidQuery(error.parameter, error.value, error.reason) from error
    scoped = ScopedStore(app.client, principal.organization_scope)
    responses = scoped.msearch(plan_searches(request, app.names))
    dead_letters = collector = None
    if principal.sees_all_departments:
        dead_letters = _dead_letter_counter(app).summary(request.start, request.end)
        collector = summarise_collector(read_status(app.settings.collector_status_file), now)
    return shape_situation(
        request,
        responses,
        scope=principal.organization_scope,
        catalogue=_attack_catalogue(),
        dead_letters=dead_letters,
        collector=collector,
    )
