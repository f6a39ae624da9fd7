"""POST /api/v1/ingest: a department sends a batch of records over HTTP.

The body is NDJSON (`application/x-ndjson`), a JSON array or object (`application/json`),
or text lines of any registered format (`text/plain`, with `format=`). Records go through
the collectors' pipeline, masking and BulkWriter synchronously (collectors/batch_ingest.py),
so a 200 answer means every record is stored, was already there, or is dead-lettered
with its reason (listed by line in `errors`, at most 100). Events are matched against
the active intelligence (`threat.enrichments`), which the app reloads from the store every
`intel.ingest_refresh_seconds` while it runs. A department analyst sends
for its own department; the events' `organization` is set to it whatever they claim. An
administrator or province analyst may name the department with `department=`.

Bounds: `api_ingest_max_bytes` per body (413; the general body limit does not apply
here), `api_ingest_max_records` per batch (413), `api_ingest_records_per_minute` per
principal (429 with Retry-After). When Elasticsearch is unavailable the answer is 503
and part of the batch may be stored: send it again with the same `batch_id` to store
the rest without copies.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from api.authentication import require_roles
from api.dependencies import AppServices, services
from api.errors import ErrorBody
from collectors.asset_inventory import AssetInventoryError
from collectors.batch_ingest import BatchBodyError, BatchIngestor, BatchResult, body_records
from collectors.formats import UnknownFormat, available_formats
from collectors.masking import MaskingKeyMissing
from collectors.normalise import Department
from lianfang.bulk_writer import BulkDeliveryError
from lianfang.principals import Principal, Role
from sharing.indicator_matching import live_ingest_lookup

PATH = "/api/v1/ingest"
CONTENT_KINDS = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/json": "json",
    "text/plain": "text",
}
NAME = r"^[A-Za-z0-9._-]{1,128}$"

router = APIRouter(prefix="/api/v1", tags=["ingest"])
senders = require_roles(Role.ADMINISTRATOR, Role.PROVINCE_ANALYST, Role.DEPARTMENT_ANALYST)


class IngestError(BaseModel):
    """One rejected record: its line (array position for a JSON array, from 1) and why."""

    line: int
    reason: str


class IngestResult(BaseModel):
    """What happened to the batch's records."""

    batch_id: str
    department: str | None
    format: str | None
    records: int
    accepted: int  # stored now or already present
    indexed: int
    duplicates: int
    skipped: int  # carried no event (a header line)
    rejected: int  # dead-lettered, listed in errors
    errors: list[IngestError]
    errors_truncated: bool


class RecordRateLimiter:
    """Records per minute per principal: a token bucket refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, who: str, records: int) -> float:
        """0 when the records may go now (and are counted), else seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(who, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * rate)
            if records > tokens:
                self._buckets[who] = (tokens, now)
                return (records - tokens) / rate
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            self._buckets[who] = (tokens - records, now)
            return 0.0


def _ingestor(request: Request, app: AppServices) -> BatchIngestor:
    """The app's ingestor, built at the first batch (in a worker thread: it reads the store)."""
    state = request.app.state
    ingestor = getattr(state, "batch_ingestor", None)
    if ingestor is None:
        try:
            indicators = live_ingest_lookup(app.settings, app.client)
            ingestor = BatchIngestor(app.settings, app.store, indicators)
        except (MaskingKeyMissing, AssetInventoryError) as error:
            raise HTTPException(503, f"ingest is not configured: {error}") from error
        state.batch_ingestor = ingestor
        if getattr(state, "ingest_rate", None) is None:  # two first batches at once keep one
            state.ingest_rate = RecordRateLimiter(app.settings.api_ingest_records_per_minute)
    return ingestor


def _department(
    principal: Principal, department: str | None, name: str | None, sector: str | None
) -> Department | None:
    if principal.role == Role.DEPARTMENT_ANALYST:
        own = principal.department
        if not own:
            raise HTTPException(403, "this principal belongs to no department")
        if department is not None and department != own:
            raise HTTPException(403, f"a department analyst sends only for {own}")
        if name is not None or sector is not None:
            raise HTTPException(403, "only the province names a department or its sector")
        return Department(own)
    if department is None:
        if name is not None or sector is not None:
            raise HTTPException(422, "department_name and sector need department")
        return None
    return Department(department, name, sector)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"the request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the request body is larger than {limit} bytes")
    return bytes(body)


@router.post(
    "/ingest",
    response_model=IngestResult,
    responses={415: {"model": ErrorBody, "description": "not NDJSON, JSON or text/plain"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": "one JSON object per line"}
                },
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"type": "array", "items": {"type": "object"}},
                            {"type": "object"},
                        ]
                    }
                },
                "text/plain": {
                    "schema": {"type": "string", "description": "lines of the format= format"}
                },
            },
        }
    },
)
async def ingest(
    request: Request,
    app: Annotated[AppServices, Depends(services)],
    principal: Annotated[Principal, Depends(senders)],
    format: Annotated[
        str | None,
        Query(description="log format (default: json; detected for text/plain)", pattern=NAME),
    ] = None,
    department: Annotated[
        str | None, Query(description="organization.id (province roles only)", pattern=NAME)
    ] = None,
    department_name: Annotated[str | None, Query(max_length=200)] = None,
    sector: Annotated[str | None, Query(pattern=NAME)] = None,
    batch_id: Annotated[
        str | None, Query(description="the same id makes a resent batch idempotent", pattern=NAME)
    ] = None,
) -> Any:
    """Store a batch of records for a department; per-batch counts and per-line errors."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    kind = CONTENT_KINDS.get(media_type)
    if kind is None:
        raise HTTPException(415, f"send {', '.join(CONTENT_KINDS)}, not {media_type or 'nothing'}")
    owner = _department(principal, department, department_name, sector)
    format_name = format if format is not None else (None if kind == "text" else "json")
    if format_name is not None and format_name not in available_formats():
        raise HTTPException(
            422, f"unknown format {format_name!r}; known: {', '.join(available_formats())}"
        )
    ingestor = await run_in_threadpool(_ingestor, request, app)
    body = await _read_body(request, app.settings.api_ingest_max_bytes)
    try:
        records = list(body_records(body, kind))
    except BatchBodyError as error:
        raise HTTPException(422, str(error)) from error
    limit = app.settings.api_ingest_max_records
    if len(records) > limit:
        raise HTTPException(413, f"{len(records)} records: at most {limit} in one batch")
    wait = request.app.state.ingest_rate.take(principal.name, len(records))
    if wait:
        raise HTTPException(
            429,
            f"more than {app.settings.api_ingest_records_per_minute} records a minute",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    try:
        result = await run_in_threadpool(
            ingestor.ingest,
            records,
            format_name=format_name,
            department=owner,
            batch_id=batch_id,
        )
    except UnknownFormat as error:
        raise HTTPException(422, str(error)) from error
    except BulkDeliveryError as error:
        raise HTTPException(503, f"Elasticsearch did not take the batch: {error}") from error
    return _answer(result)


def _answer(result: BatchResult) -> IngestResult:
    return IngestResult(
        batch_id=result.batch_id,
        department=result.department,
        format=result.format,
        records=result.records,
        accepted=result.accepted,
        indexed=result.indexed,
        duplicates=result.duplicates,
        skipped=result.skipped,
        rejected=result.rejected,
        errors=[IngestError(line=item.line, reason=item.reason) for item in result.errors],
        errors_truncated=result.rejected > len(result.errors),
    )
