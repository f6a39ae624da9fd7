"""GET /api/v1/health: is Elasticsearch there, which version, how many documents where."""

from __future__ import annotations

from typing import Annotated, Any

from elasticsearch import ApiError, TransportError
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.dependencies import AppServices, services

router = APIRouter(prefix="/api/v1", tags=["health"])


class Health(BaseModel):
    """The platform's view of its store."""

    status: str
    elasticsearch: dict[str, Any]
    indices: dict[str, int]


@router.get("/health", response_model=Health, responses={503: {"description": "store unreachable"}})
def health(app: Annotated[AppServices, Depends(services)]) -> Any:
    """Elasticsearch status, version and document counts per index."""
    try:
        cluster_name, version = app.store.server_version()
        cluster = app.client.cluster.health()
        counts = app.store.counts_by_index()
    except (TransportError, ApiError) as error:
        body = {
            "status": "unavailable",
            "elasticsearch": {"error": str(error)},
            "indices": {},
        }
        return JSONResponse(status_code=503, content=body)
    status = "ok" if cluster["status"] in ("green", "yellow") else "degraded"
    return Health(
        status=status,
        elasticsearch={
            "cluster_name": cluster_name,
            "version": version,
            "status": cluster["status"],
            "nodes": cluster["number_of_nodes"],
        },
        indices=counts,
    )
