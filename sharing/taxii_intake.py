"""Add Objects: a posted envelope, streamed and checked object by object, stored in batches.

Two phases keep memory bounded whatever the size of the POST:

1. `prepare` streams the spooled request body through an incremental JSON parser; each
   object is validated (the pluggable validator) and its TLP level checked against the
   collection (sharing.tlp). Every `post_batch_size` objects form a status chunk: failures
   are final at once, the rest are pending. A chunk that is followed by another is written
   to a spool file, one line per object; the last chunk stays in memory. Malformed JSON
   stops the request before anything is stored (400).
2. `store` writes each chunk with one bulk request (reading the spooled ones back) and
   updates that chunk's entries and the status counts.

Nothing outside one chunk is held in memory; the body and the spool live in temporary files
that stay in memory only while small. A POST of one chunk (up to `post_batch_size`
objects, the common case) never touches the spool.
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
from sharing.object_store import (
    UNMARKED,
    PreparedVersion,
    StoredBatch,
    StoreOutcome,
    TaxiiObjectStore,
    shown_version,
)
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
from sharing.tlp import PolicyDecision, TlpLevel, marking_refs, publication_decision, tlp_of

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
    once, complete, in the bulk request that stores its objects (as if every object is stored
    as new; written again before the answer if one is not).
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
        # The objects of the last chunk, ready to store (earlier chunks are spooled).
        self._held: list[PreparedVersion] = []
        # The TLP policy depends only on the level here: decide each level once per request.
        self._target = collection.publication_target
        self._decisions: dict[TlpLevel, PolicyDecision] = {}
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
        prepared: list[PreparedVersion] = []
        position = 0
        try:
            for item in ijson.items(body, "objects.item", use_float=True):
                if len(entries) == self.limits.batch_size:
                    self._close_chunk(entries, prepared, keep=False)
                    entries, prepared = [], []
                entries.append(self._admit(position, item, prepared))
                position += 1
        except ijson.JSONError as error:
            raise MalformedEnvelope(f"the request body is not valid JSON: {error}", 400) from error
        if position == 0:
            self._check_empty_envelope(body)
        self._close_chunk(entries, prepared, keep=True)
        if self.chunks > 1:
            self._spool.flush()
            self.publish()

    def _close_chunk(
        self, entries: list[StatusEntry], prepared: list[PreparedVersion], keep: bool
    ) -> None:
        """Count a chunk; keep it in memory (the last) or spool it (an earlier one)."""
        self.counts.count(entries)
        if keep:
            self._current = (self.chunks, entries)
            self._held = prepared
        else:
            self._spool.writelines(_spool_line(version) for version in prepared)
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

    def _admit(self, position: int, item: Any, prepared: list[PreparedVersion]) -> StatusEntry:
        """Check one object; add it to `prepared` if it may be stored. Returns its status entry."""
        if not isinstance(item, dict):
            return (f"objects[{position}]", self._unknown_version, FAILURE, "not a JSON object")
        object_id = item.get("id") if isinstance(item.get("id"), str) else f"objects[{position}]"
        version = item.get("modified", item.get("created"))
        shown_version = version if isinstance(version, str) else self._unknown_version
        try:
            self.validator(item)
        except InvalidObject as error:
            return (object_id, shown_version, FAILURE, error.reason)
        level = tlp_of(item)
        decision = self._decision(level or self.limits.unmarked_level)
        if not decision.allowed:
            reason = decision.reason
            if level is None:
                reason += f" (unmarked objects count as {self.limits.unmarked_level.label})"
            return (object_id, shown_version, FAILURE, reason)
        raw = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
        prepared.append(
            PreparedVersion(
                position=position,
                object_id=object_id,
                object_type=item["type"],
                spec_version=item.get("spec_version", "2.1"),
                version=version,
                version_key=parse_timestamp(version).key if version is not None else None,
                tlp=level.value if level else UNMARKED,
                markings=tuple(marking_refs(item)),
                raw=raw.decode("utf-8"),
                content_sha256=hashlib.sha256(raw).hexdigest(),
            )
        )
        return (object_id, shown_version, PENDING, None)

    def _decision(self, level: TlpLevel) -> PolicyDecision:
        decision = self._decisions.get(level)
        if decision is None:
            decision = publication_decision(level, self._target, self.publisher.department)
            self._decisions[level] = decision
        return decision

    # ---------------------------------------------------------------- phase 2

    def store(self) -> None:
        """Store the objects chunk by chunk; the status ends complete, whatever happens."""
        self._spool.seek(0)
        lines = _spooled_versions(self._spool)
        try:
            for chunk in range(self.chunks):
                self._store_chunk(chunk, lines)
        finally:
            self._spool.close()
            self._held = []

    def _store_chunk(self, chunk: int, lines: Iterator[PreparedVersion]) -> None:
        last = chunk == self.chunks - 1
        if self._current is None or self._current[0] != chunk:
            self._current = (chunk, self.statuses.chunk(self.status_id, chunk))
        entries = self._current[1]
        if last:
            batch = self._held
        else:
            waiting = sum(1 for entry in entries if entry[2] == PENDING)
            batch = [next(lines) for _ in range(waiting)]
        base = chunk * self.limits.batch_size
        # Nobody knows the id of a status that was never published before the POST answers:
        # it can travel with the objects, written as if every object is stored, and is
        # rewritten (before the answer) only if one is not.
        assumed = None
        if last and batch and not self._published:
            assumed = self._entries_if_stored(chunk, entries, batch, base)
        reason = ""
        try:
            stored = self.objects.add_versions(
                self.collection.id,
                batch,
                self.request_timestamp_us,
                self.status_id,
                self.publisher.name,
                self.publisher.department,
                other_operations=assumed[1] if assumed else b"",
            )
            outcomes: list[StoreOutcome] | None = stored.outcomes
        except Exception as error:  # storage unreachable: the objects fail, with the reason
            log.exception("TAXII status %s: storing chunk %d failed", self.status_id, chunk)
            stored, outcomes = StoredBatch([]), None
            reason = f"not stored: {type(error).__name__}: {error}"
        with self._lock:
            for number, item in enumerate(batch):
                index = item.position - base
                object_id, version = entries[index][:2]
                self.counts.pending -= 1
                if outcomes is None:
                    entries[index] = (object_id, version, FAILURE, reason)
                    self.counts.failure += 1
                    continue
                outcome = outcomes[number]
                state = SUCCESS if outcome.stored else FAILURE
                entries[index] = (object_id, outcome.version, state, outcome.message)
                if outcome.stored:
                    self.counts.success += 1
                else:
                    self.counts.failure += 1
            if self._published or last:
                already = (
                    assumed is not None
                    and not self._published
                    and entries == assumed[0]
                    and self.statuses.written(stored.other_items)
                )
                if not already:
                    self.statuses.save(self.header, {chunk: entries})
                self._published = True

    def _entries_if_stored(
        self, chunk: int, entries: list[StatusEntry], batch: list[PreparedVersion], base: int
    ) -> tuple[list[StatusEntry], bytes]:
        """The chunk's entries, and the operations writing the complete status, as they will
        be if every waiting object is stored."""
        assumed = list(entries)
        for item in batch:
            version = shown_version(item, self.request_timestamp_us)
            assumed[item.position - base] = (item.object_id, version, SUCCESS, None)
        counts = StatusCounts(
            self.counts.success + len(batch), self.counts.failure, self.counts.pending - len(batch)
        )
        header = StatusHeader(
            self.status_id,
            self.publisher.name,
            self.collection.id,
            self.request_timestamp_us,
            counts,
            self.chunks,
        )
        return assumed, self.statuses.operations(header, {chunk: assumed})

    def discard(self) -> None:
        """Drop the spool of a request that will not be stored."""
        self._spool.close()
        self._held = []


def _spool_line(version: PreparedVersion) -> bytes:
    return (
        orjson.dumps(
            [
                version.position,
                version.object_id,
                version.version,
                version.version_key,
                version.object_type,
                version.spec_version,
                version.tlp,
                version.markings,
                version.raw,
                version.content_sha256,
            ]
        )
        + b"\n"
    )


def _spooled_versions(spool: IO[bytes]) -> Iterator[PreparedVersion]:
    for line in spool:
        position, object_id, version, key, kind, spec, tlp, refs, raw, digest = orjson.loads(line)
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
