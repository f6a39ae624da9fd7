"""GET /api/v1/disclosures: which TAXII objects went to which principal, for administrators."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.authentication import require_roles
from api.dependencies import AppServices, services
from api.parameters import Moment
from lianfang.event_search import InvalidQuery
from lianfang.principals import Principal, Role
from sharing.disclosure_audit import DisclosureAudit, DisclosureQuery, InvalidCursor

router = APIRouter(prefix="/api/v1", tags=["disclosures"])
administrator = require_roles(Role.ADMINISTRATOR)


@router.get("/disclosures")
def list_disclosures(
    app: Annotated[AppServices, Depends(services)],
    _: Annotated[Principal, Depends(administrator)],
    principal: Annotated[str | None, Query(max_length=200, description="who received")] = None,
    collection: Annotated[str | None, Query(max_length=100, description="collection id")] = None,
    object_id: Annotated[str | None, Query(max_length=300, description="a STIX id")] = None,
    tlp: Annotated[
        str | None, Query(pattern="^(clear|green|amber|amber\\+strict|red|none)$")
    ] = None,
    start: Annotated[Moment | None, Query(description="inclusive, ISO-8601")] = None,
    end: Annotated[Moment | None, Query(description="exclusive, ISO-8601")] = None,
    size: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, Any]:
    """Disclosure records, newest first: principal, collection, objects with their TLP, time."""
    query = DisclosureQuery(
        principal=principal,
        collection=collection,
        object_id=object_id,
        tlp=tlp,
        start=start.astimezone(UTC) if start else None,
        end=end.astimezone(UTC) if end else None,
        size=min(size, app.settings.api_page_cap),
        cursor=cursor,
    )
    try:
        records, following = DisclosureAudit(app.client, app.settings.index_prefix).list(query)
    except InvalidCursor as error:
        raise InvalidQuery("cursor", cursor, str(error)) from error
    return {"disclosures": records, "next_cursor": following}
