"""`BulkWriter`: batched, retried, idempotent writes of events into Elasticsearch.

Documents are sent with the `create` operation and a deterministic id, so a batch that is
sent again after a timeout or a crash never creates a duplicate (Elasticsearch answers 409
for the copy, counted as `duplicates`). Items Elasticsearch is too busy for (429, 5xx) are
retried with exponential backoff; items the mapping rejects go to the dead-letter file
while the rest of the batch is indexed.

With `pipelined=True` one batch is sent by a background thread while the caller prepares
the next, so parsing and indexing overlap; a delivery failure is raised on the caller's
next `add` or `flush`, carrying every event that was not stored.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from elasticsearch import ApiError, Elasticsearch, TransportError

from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event
from lianfang.store import EventStore

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def serialise_document(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; orjson for speed, the standard library for what orjson refuses."""
    try:
        return orjson.dumps(document, default=str)
    except (orjson.JSONEncodeError, TypeError):
        # Integers beyond 64 bits, non-string keys, lone surrogates: slower but complete.
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode("utf-8", "replace")


class BulkDeliveryError(RuntimeError):
    """Elasticsearch stayed unavailable through every retry; `pending` were not stored."""

    def __init__(self, message: str, pending: list[Event]) -> None:
        super().__init__(message)
        self.pending = pending


@dataclass
class BulkReport:
    """What happened to the events handed to the writer so far."""

    indexed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    bytes_sent: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def acknowledged(self) -> int:
        """Events that are now safe: stored, already stored, or kept as a dead letter."""
        return self.indexed + self.duplicates + self.dead_lettered


@dataclass
class _Pending:
    event: Event
    action: bytes
    source: bytes

    @property
    def size(self) -> int:
        return len(self.action) + len(self.source) + 2


class BulkWriter:
    """Collects events into batches bounded by count and bytes and writes them durably."""

    def __init__(
        self,
        client: Elasticsearch,
        store: EventStore,
        dead_letters: DeadLetterFile,
        *,
        max_documents: int = 2000,
        max_bytes: int = 8 * 1024 * 1024,
        max_retries: int = 6,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        pipelined: bool = False,
    ) -> None:
        self.client = client
        self.store = store
        self.dead_letters = dead_letters
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.report = BulkReport()
        self._batch: list[_Pending] = []
        self._batch_bytes = 0
        # Pipelined mode overlaps parsing (caller's thread) with one bulk request in flight.
        self.pipelined = pipelined
        self._queue: queue.Queue[list[_Pending] | None] = queue.Queue(maxsize=1)
        self._sender: threading.Thread | None = None
        self._failure: BulkDeliveryError | None = None

    def add(self, event: Event) -> None:
        """Queue one event; sends a batch when the count or byte bound is reached."""
        try:
            index = self.store.index_for(event.timestamp)
            source = serialise_document(event.document)
        except (KeyError, ValueError, TypeError) as error:
            self._dead_letter(event, f"unserialisable event: {error}")
            return
        action = json.dumps({"create": {"_index": index, "_id": event.id}}).encode()
        pending = _Pending(event, action, source)
        if self._batch and self._batch_bytes + pending.size > self.max_bytes:
            self._dispatch()
        self._batch.append(pending)
        self._batch_bytes += pending.size
        if len(self._batch) >= self.max_documents:
            self._dispatch()

    def add_all(self, events: Iterable[Event]) -> BulkReport:
        """Queue many events and flush at the end."""
        for event in events:
            self.add(event)
        return self.flush()

    def flush(self) -> BulkReport:
        """Send what is queued; returns only once every item is stored or dead-lettered."""
        self._dispatch()
        if self._sender is not None:
            self._queue.join()
        self._raise_sender_failure()
        return self.report

    def _dispatch(self) -> None:
        """Hand the current batch to the sender thread (pipelined) or send it now."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._raise_sender_failure()
        if not batch:
            return
        if not self.pipelined:
            self._deliver(batch)
            return
        if self._sender is None:
            self._sender = threading.Thread(
                target=self._sender_loop, name="bulk-sender", daemon=True
            )
            self._sender.start()
        # A bounded queue: the producer waits while one batch is in flight and one is waiting.
        self._queue.put(batch)

    def _sender_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:  # close() asks the thread to end
                self._queue.task_done()
                return
            try:
                if self._failure is not None:
                    # After a failure nothing more is sent; the events travel with the error.
                    self._failure.pending.extend(p.event for p in batch)
                else:
                    self._deliver(batch)
            except BulkDeliveryError as error:
                self._failure = error
            except Exception as error:  # keep the events whatever went wrong
                self._failure = BulkDeliveryError(
                    f"bulk sender failed: {error}", [p.event for p in batch]
                )
            finally:
                self._queue.task_done()

    def _raise_sender_failure(self) -> None:
        if self._failure is not None:
            if self._sender is not None:
                self._queue.join()
            failure, self._failure = self._failure, None
            failure.pending.extend(p.event for p in self._batch)
            self._batch, self._batch_bytes = [], 0
            raise failure

    def _deliver(self, batch: list[_Pending]) -> None:
        """Send one batch with retries; every item ends stored, duplicate or dead-lettered."""
        attempt = 0
        while batch:
            try:
                batch = self._send(batch)
            except (TransportError, ApiError) as error:
                status = getattr(error, "status_code", None) or getattr(error, "status", None)
                if isinstance(error, ApiError) and status not in RETRYABLE_STATUS:
                    raise BulkDeliveryError(
                        f"bulk request refused: {error}", [p.event for p in batch]
                    ) from error
                if attempt >= self.max_retries:
                    raise BulkDeliveryError(
                        f"Elasticsearch unavailable after {attempt} retries: {error}",
                        [p.event for p in batch],
                    ) from error
            if batch:
                if attempt >= self.max_retries:
                    raise BulkDeliveryError(
                        f"{len(batch)} items still refused after {attempt} retries",
                        [p.event for p in batch],
                    )
                self.report.retries += 1
                self.sleep(self.backoff_seconds * (2**attempt))
                attempt += 1

    def _send(self, batch: list[_Pending]) -> list[_Pending]:
        """Send one bulk request; returns the items to retry."""
        body = b"".join(p.action + b"\n" + p.source + b"\n" for p in batch)
        self.report.batches += 1
        self.report.bytes_sent += len(body)
        response = self.client.bulk(operations=body, refresh=False)
        if not response.get("errors"):
            self.report.indexed += len(batch)
            return []
        retry: list[_Pending] = []
        for pending, item in zip(batch, response["items"], strict=True):
            result = item["create"]
            status = result.get("status", 500)
            if status < 300:
                self.report.indexed += 1
            elif status == 409:
                self.report.duplicates += 1
            elif status in RETRYABLE_STATUS:
                retry.append(pending)
            else:
                error = result.get("error", {})
                reason = f"{error.get('type', status)}: {error.get('reason', '')}".strip()
                self._dead_letter(pending.event, reason)
        return retry

    def _dead_letter(self, event: Event, reason: str) -> None:
        self.dead_letters.write(
            stage="index",
            source=event.origin.source,
            offset=event.origin.offset,
            reason=reason,
            input=event.document,
        )
        self.report.dead_lettered += 1
        kind = reason.split(":", 1)[0]
        self.report.reasons[kind] = self.report.reasons.get(kind, 0) + 1

    def close(self) -> BulkReport:
        """Flush what remains and end the sender thread."""
        try:
            return self.flush()
        finally:
            if self._sender is not None:
                self._queue.put(None)
                self._sender.join()
                self._sender = None

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.close()
