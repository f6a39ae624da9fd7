"""GET /api/v1/collectors: the counters of the collector of this home directory.

The collector (`lianfang collect files|syslog|stdin|run`) rewrites
`<home>/collector-status.json` every second; this route reads it, as `lianfang collect
status` does: state, whether it still runs, Elasticsearch reachability, spool fill, and
per input (file, syslog listener, stdin) the records read, parsed, failed, spooled,
indexed, duplicates, dropped, the lag and the last error, with listener details
(connections, refused connections, unknown peers, drops). Administrators and province
analysts see every input; a department analyst sees the inputs collecting for its own
department and the shared figures (state, spool), not the other departments' inputs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.authentication import analyst
from api.dependencies import AppServices, services
from collectors.runtime import read_status
from lianfang.principals import Principal

router = APIRouter(prefix="/api/v1", tags=["collectors"])
TOTALS = ("read", "parsed", "failed", "spooled", "indexed", "duplicates", "dropped", "lag_bytes")


class CollectorStatus(BaseModel):
    """The collector's last status (`present` false: no collector has run with this home)."""

    present: bool
    running: bool
    state: str | None = None
    pid: int | None = None
    started_at: str | None = None
    updated_at: str | None = None
    elasticsearch: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    failed_deliveries: int = 0
    spool: dict[str, Any] = {}
    totals: dict[str, int] = {}
    inputs: list[dict[str, Any]] = []


def input_department(item: dict[str, Any]) -> str | None:
    """The department an input collects for, when it has exactly one."""
    details = item.get("details") or {}
    department = details.get("department")
    if isinstance(department, str):
        return department
    by_department = details.get("departments")
    if isinstance(by_department, dict) and len(by_department) == 1:
        (only,) = by_department
        return only if only != "-" else None
    return None


@router.get("/collectors", response_model=CollectorStatus)
def collectors(
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(analyst)],
) -> CollectorStatus:
    """Per-input counters of the running (or last) collector."""
    status = read_status(app.settings.collector_status_file)
    if status is None:
        return CollectorStatus(present=False, running=False)
    inputs = list(status.get("inputs") or [])
    scope = principal.organization_scope
    if scope is not None:
        inputs = [item for item in inputs if input_department(item) in scope]
    totals = {name: sum(int(item.get(name) or 0) for item in inputs) for name in TOTALS}
    return CollectorStatus(
        present=True,
        running=bool(status.get("running")),
        state=status.get("state"),
        pid=status.get("pid"),
        started_at=status.get("started_at"),
        updated_at=status.get("updated_at"),
        elasticsearch=status.get("elasticsearch"),
        last_error=status.get("last_error") if scope is None else None,
        last_error_at=status.get("last_error_at") if scope is None else None,
        failed_deliveries=int(status.get("failed_deliveries") or 0),
        spool=status.get("spool") or {},
        totals=totals,
        inputs=inputs,
    )
