"""Add Objects: a posted envelope, streamed and checked object by object, stored in batches.

Two phases keep memory bounded whatever the size of the POST:

1. `prepare` streams the spooled request body through an incremental JSON parser; each
   object is validated (the pluggable validator), its TLP level checked against the
   collection (sharing.tlp), and written as one line to a spool file. Every
   `post_batch_size` objects form a status chunk: failures are final at once, the rest are
   pending. Malformed JSON stops the request before anything is stored (400).
2. `store` reads the spool back one chunk at a time, writes each chunk with one bulk request
   and updates that chunk's entries and the status counts.

Nothing outside one chunk is held in memory; the body and the spool live in temporary files
that stay in memory only while small.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import ijson
import orjson

from lianfang.principals import Principal
from sharing.object_store import UNMARKED, PreparedVersion, TaxiiObjectStore
from sharing.object_validation import InvalidObject, ObjectValidator
from sharing.taxii_collections import CollectionConfig
from sharing.taxii_status import (
    FAILURE,
    PENDING,
    SUCCESS,
    StatusCounts,
    StatusEntry,
    StatusHeader,
    TaxiiStatusStore,
    assemble,
)
from sharing.taxii_timestamps import format_micros, parse_timestamp
from sharing.tlp import TlpLevel, marking_refs, publication_decision, tlp_of

log = logging.getLogger(__name__)
SPOOL_MEMORY_BYTES = 4 * 1024 * 1024
PEEK_BYTES = 64


class MalformedEnvelope(ValueError):
    """The body is not JSON (400) or not a TAXII envelope (422); carries the reason."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class IntakeLimits:
    """The server settings the intake follows."""

    batch_size: int
    unmarked_level: TlpLevel


class AddObjectsJob:
    """One Add Objects request, from the spooled body to the complete status.

    The status is written to Elasticsearch when it can be asked for: as soon as `prepare`
    ends if the request has several chunks (they cannot stay in memory) or when `publish`
    is called (the POST answers before the objects are stored), and after every stored
    chunk from then on. A small request that is stored before the POST answers is written
    once, complete.
    """

    def __init__(
        self,
        *,
        status_id: str,
        request_timestamp_us: int,
        collection: CollectionConfig,
        publisher: Principal,
        objects: TaxiiObjectStore,
        statuses: TaxiiStatusStore,
        validator: ObjectValidator,
        limits: IntakeLimits,
    ) -> None:
        self.status_id = status_id
        self.request_timestamp_us = request_timestamp_us
        self.collection = collection
        self.publisher = publisher
        self.objects = objects
        self.statuses = statuses
        self.validator = validator
        self.limits = limits
        self.counts = StatusCounts()
        self.chunks = 0
        # Lives across both phases; `store` or `discard` closes it.
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MEMORY_BYTES
        )
        self._unknown_version = format_micros(request_timestamp_us)
        # The chunk in memory (the last one `prepare` made, then the one being stored).
        self._current: tuple[int, list[StatusEntry]] | None = None
        self._published = False
        self._lock = threading.Lock()

    @property
    def header(self) -> StatusHeader:
        """The status header as it stands."""
        return StatusHeader(
            self.status_id,
            self.publisher.name,
            self.collection.id,
            self.request_timestamp_us,
            StatusCounts(self.counts.success, self.counts.failure, self.counts.pending),
            self.chunks,
        )

    # ---------------------------------------------------------------- phase 1

    def prepare(self, body: IO[bytes]) -> None:
        """Parse, validate and police every object; the status counts them as pending."""
        start = body.read(PEEK_BYTES).lstrip()
        body.seek(0)
        if not start:
            raise MalformedEnvelope("the request body is empty", 400)
        if not start.startswith(b"{"):
            raise MalformedEnvelope("the body is not a TAXII envelope (a JSON object)", 422)
        entries: list[StatusEntry] = []
        position = 0
        try:
            for item in ijson.items(body, "objects.item", use_float=True):
                if len(entries) == self.limits.batch_size:
                    self._close_chunk(entries, keep=False)
                    entries = []
                entries.append(self._admit(position, item))
                position += 1
        except ijson.JSONError as error:
            raise MalformedEnvelope(f"the request body is not valid JSON: {error}", 400) from error
        if position == 0:
            self._check_empty_envelope(body)
        self._close_chunk(entries, keep=True)
        self._spool.flush()
        if self.chunks > 1:
            self.publish()

    def _close_chunk(self, entries: list[StatusEntry], keep: bool) -> None:
        """Count a chunk; keep it in memory (the last) or write it (an earlier one)."""
        self.counts.count(entries)
        if keep:
            self._current = (self.chunks, entries)
        else:
            self.statuses.save(self.header, {self.chunks: entries})
            self._published = True
        self.chunks += 1

    def publish(self) -> None:
        """Make the status readable now (the POST answers before storing ends)."""
        with self._lock:
            current = dict([self._current]) if self._current else {}
            self.statuses.save(self.header, current)
            self._published = True

    def resource(self) -> dict[str, Any] | None:
        """The status resource from memory when it is all there, else None (read it)."""
        with self._lock:
            if self.chunks == 1 and self._current is not None:
                return assemble(
                    self.status_id, self.request_timestamp_us, self.counts, self._current[1]
                )
        return None

    def _check_empty_envelope(self, body: IO[bytes]) -> None:
        body.seek(0)
        for prefix, event, _ in ijson.parse(body):
            if prefix == "objects" and event not in ("start_array", "end_array"):
                raise MalformedEnvelope("objects must be a list of STIX objects", 422)

    def _admit(self, position: int, item: Any) -> StatusEntry:
        """Check one object; spool it if it may be stored. Returns its status entry."""
        if not isinstance(item, dict):
            return [f"objects[{position}]", self._unknown_version, FAILURE, "not a JSON object"]
        object_id = item.get("id") if isinstance(item.get("id"), str) else f"objects[{position}]"
        version = item.get("modified", item.get("created"))
        shown_version = version if isinstance(version, str) else self._unknown_version
        try:
            self.validator(item)
        except InvalidObject as error:
            return [object_id, shown_version, FAILURE, error.reason]
        level = tlp_of(item)
        decision = publication_decision(
            level or self.limits.unmarked_level,
            self.collection.publication_target,
            self.publisher.department,
        )
        if not decision.allowed:
            reason = decision.reason
            if level is None:
                reason += f" (unmarked objects count as {self.limits.unmarked_level.label})"
            return [object_id, shown_version, FAILURE, reason]
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode("utf-8")
        line = [
            position,
            object_id,
            version,
            parse_timestamp(version).key if version is not None else None,
            item["type"],
            item.get("spec_version", "2.1"),
            level.value if level else UNMARKED,
            marking_refs(item),
            raw,
            hashlib.sha256(raw.encode("utf-8")).hexdigest(),
        ]
        self._spool.write(orjson.dumps(line) + b"\n")
        return [object_id, shown_version, PENDING, None]

    # ---------------------------------------------------------------- phase 2

    def store(self) -> None:
        """Store the spooled objects chunk by chunk; the status ends complete, whatever happens."""
        self._spool.seek(0)
        lines = self._spool_lines()
        try:
            for chunk in range(self.chunks):
                self._store_chunk(chunk, lines)
        finally:
            self._spool.close()

    def _spool_lines(self) -> Iterator[PreparedVersion]:
        for line in self._spool:
            position, object_id, version, key, kind, spec, tlp, refs, raw, digest = orjson.loads(
                line
            )
            yield PreparedVersion(
                position=position,
                object_id=object_id,
                object_type=kind,
                spec_version=spec,
                version=version,
                version_key=key,
                tlp=tlp,
                markings=tuple(refs),
                raw=raw,
                content_sha256=digest,
            )

    def _store_chunk(self, chunk: int, lines: Iterator[PreparedVersion]) -> None:
        if self._current is None or self._current[0] != chunk:
            self._current = (chunk, self.statuses.chunk(self.status_id, chunk))
        entries = self._current[1]
        waiting = sum(1 for entry in entries if entry[2] == PENDING)
        batch = [next(lines) for _ in range(waiting)]
        reason = ""
        try:
            outcomes = self.objects.add_versions(
                self.collection.id,
                batch,
                self.request_timestamp_us,
                self.status_id,
                self.publisher.name,
                self.publisher.department,
            )
        except Exception as error:  # storage unreachable: the objects fail, with the reason
            log.exception("TAXII status %s: storing chunk %d failed", self.status_id, chunk)
            outcomes = None
            reason = f"not stored: {type(error).__name__}: {error}"
        base = chunk * self.limits.batch_size
        with self._lock:
            for number, item in enumerate(batch):
                entry = entries[item.position - base]
                self.counts.pending -= 1
                if outcomes is None:
                    entry[2:] = [FAILURE, reason]
                    self.counts.failure += 1
                    continue
                outcome = outcomes[number]
                entry[1] = outcome.version
                entry[2:] = [SUCCESS if outcome.stored else FAILURE, outcome.message]
                if outcome.stored:
                    self.counts.success += 1
                else:
                    self.counts.failure += 1
            if self._published or chunk == self.chunks - 1:
                self.statuses.save(self.header, {chunk: entries})
                self._published = True

    def discard(self) -> None:
        """Drop the spool of a request that will not be stored."""
        self._spool.close()
