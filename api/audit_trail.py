"""The audit trail: every API call (who, what, when, from where, result) kept in Elasticsearch.

Requests only enqueue a record; a background thread writes batches to monthly indices
`<prefix>-audit-YYYY.MM`, so auditing never slows a request down. If Elasticsearch cannot
take the records, they go to the dead-letter file rather than vanishing.
"""

from __future__ import annotations

import ipaddress
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, TransportError
from elasticsearch.helpers import BulkIndexError, bulk
from fastapi import FastAPI, Request, Response

from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, mapping_properties

FLUSH_SECONDS = 1.0
BATCH_SIZE = 500
QUEUE_BOUND = 20_000
AUDIT_FIELDS = {
    "@timestamp": "date",
    "user.name": "keyword",
    "user.roles": "keyword",
    "organization.id": "keyword",
    "source.ip": "ip",
    "source.address": "keyword",
    "http.request.method": "keyword",
    "http.response.status_code": "long",
    "url.path": "keyword",
    "url.query": "keyword",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "event.duration": "long",
    "api_key.id": "keyword",
}


class AuditTrail:
    """A bounded queue of audit records and the thread that stores them."""

    def __init__(self, client: Elasticsearch, prefix: str, dead_letters: DeadLetterFile) -> None:
        self.client = client
        self.names = IndexNames(prefix)
        self.dead_letters = dead_letters
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE_BOUND)
        self._thread = threading.Thread(target=self._run, name="audit-trail", daemon=True)
        self.written = 0

    @property
    def pattern(self) -> str:
        """All audit indices."""
        return self.names.audit_pattern

    def install(self) -> None:
        """The template for the monthly audit indices; starts the writer thread."""
        self.client.indices.put_index_template(
            name=self.names.audit_template,
            index_patterns=[self.pattern],
            priority=200,
            template={
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {"dynamic": False, "properties": mapping_properties(AUDIT_FIELDS)},
            },
        )
        self._thread.start()

    def record(self, entry: dict[str, Any]) -> None:
        """Enqueue one record; when the queue is full it is dead-lettered, never dropped."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dead_letters.write(
                stage="audit", source="api", offset=0, reason="audit queue full", input=entry
            )

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)

    def flush_now(self) -> None:
        """Block until everything queued so far is written (tests, shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        stopping = False
        while not stopping:
            deadline = time.monotonic() + FLUSH_SECONDS
            while len(pending) < BATCH_SIZE:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    self._queue.task_done()
                    break
                pending.append(item)
            if pending:
                self._write(pending)
                for _ in pending:
                    self._queue.task_done()
                pending = []

    def _write(self, entries: list[dict[str, Any]]) -> None:
        actions = [
            {
                "_index": self.names.audit_index_for(entry["@timestamp"]),
                "_source": entry,
            }
            for entry in entries
        ]
        try:
            written, _ = bulk(self.client, actions, raise_on_error=True)
            self.written += written
        except (BulkIndexError, TransportError) as error:
            for entry in entries:
                self.dead_letters.write(
                    stage="audit",
                    source="api",
                    offset=0,
                    reason=f"audit write failed: {error}",
                    input=entry,
                )


def install_audit_middleware(app: FastAPI) -> None:
    """Record every request with its principal, outcome and duration."""

    @app.middleware("http")
    async def audit(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            services = getattr(request.app.state, "services", None)
            trail: AuditTrail | None = getattr(services, "audit", None)
            if trail is not None and _audited(request.url.path):
                trail.record(_entry(request, status, time.perf_counter() - started))


def _audited(path: str) -> bool:
    """API and TAXII calls are audited; the dashboard's static files and health checks are not."""
    return path.startswith(("/api/", "/taxii2/")) and path != "/api/v1/health"


def _route_template(request: Request) -> str:
    """The route's path template (/api/v1/alerts/{alert_id}), or the raw path."""
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)


def _source(host: str) -> dict[str, str]:
    try:
        return {"ip": str(ipaddress.ip_address(host)), "address": host}
    except ValueError:
        return {"address": host}


def _entry(request: Request, status: int, seconds: float) -> dict[str, Any]:
    principal = getattr(request.state, "principal", None)
    entry: dict[str, Any] = {
        "@timestamp": format_timestamp(datetime.now(UTC)),
        "http": {"request": {"method": request.method}, "response": {"status_code": status}},
        "url": {"path": request.url.path[:2000]},
        "event": {
            "action": f"{request.method} {_route_template(request)}"[:500],
            "outcome": "success" if status < 400 else "failure",
            "duration": int(seconds * 1e9),
        },
    }
    if request.url.query:
        entry["url"]["query"] = request.url.query[:2000]
    if request.client:
        entry["source"] = _source(request.client.host)
    if principal is not None:
        entry["user"] = {"name": principal.name, "roles": [str(principal.role)]}
        if principal.department:
            entry["organization"] = {"id": principal.department}
        if principal.via_key:
            entry["api_key"] = {"id": principal.via_key}
    return entry
