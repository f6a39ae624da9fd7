"""One batch of records stored synchronously: what `POST /api/v1/ingest` does with a body.

The body is split into records (NDJSON lines, the elements of a JSON array, or text lines
for any registered format), which go through the same pipeline as collected files
(parse, normalise, assets, intelligence, masking) and a BulkWriter, on behalf of one
department: the events' `organization` and `labels.sector` are set to it, whatever the
records claim. When `ingest` returns, every record is stored, already present, skipped
(a header line) or dead-lettered with its reason; the result lists the rejected ones by
line. If Elasticsearch stays unavailable, `BulkDeliveryError` is raised and part of the
batch may be stored: sending the batch again with the same `batch_id` stores the rest
and turns what is there into duplicates, because event ids derive from the batch id, the
line number and the line.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from collectors.inputs.pipelines import PipelineFactory
from collectors.intel_hook import IndicatorLookup
from collectors.log_format import Record
from collectors.normalise import Department
from lianfang.bulk_writer import BulkWriter
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event, Origin
from lianfang.settings import Settings
from lianfang.store import EventStore

MAX_LISTED_ERRORS = 100
BODY_KINDS = ("ndjson", "json", "text")


class BatchBodyError(ValueError):
    """A body that cannot be split into records at all (a JSON body that is not JSON)."""


@dataclass(frozen=True)
class Rejection:
    """A record of the batch that was not stored, by its line (or array position, from 1)."""

    line: int
    reason: str


@dataclass
class BatchResult:
    """What happened to every record of one batch."""

    batch_id: str
    department: str | None
    format: str | None
    records: int = 0
    indexed: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    errors: list[Rejection] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        """Records now in the index: stored by this batch or already present."""
        return self.indexed + self.duplicates


def body_records(body: bytes, kind: str) -> Iterator[tuple[int, Record | None, str | None]]:
    """(line, record, None) for each record of a body, or (line, None, reason) for a bad one.

    `ndjson` and `text` give one record per non-blank line (NDJSON lines must be UTF-8;
    text is decoded leniently, as files are); `json` takes an array (each element one
    record, re-serialised so that it is kept as `event.original`) or a single object.
    """
    if kind == "json":
        yield from _json_records(body)
        return
    if kind not in BODY_KINDS:
        raise ValueError(f"unknown body kind {kind!r}")
    for number, raw in enumerate(body.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if not raw.strip():
            continue
        if kind == "text":
            yield number, raw.decode("utf-8", errors="replace"), None
            continue
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as error:
            yield number, None, f"not UTF-8 at byte {error.start}"


def _json_records(body: bytes) -> Iterator[tuple[int, Record | None, str | None]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BatchBodyError(f"the body is not JSON: {error}") from error
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise BatchBodyError(
            f"expected a JSON array of objects (or one object), not {type(value).__name__}"
        )
    for number, element in enumerate(value, start=1):
        if not isinstance(element, dict):
            yield number, None, f"expected a JSON object, got {type(element).__name__}"
            continue
        yield number, orjson.dumps(element).decode("utf-8"), None


class DepartmentStamp:
    """Enrichment stage: the event belongs to the sending department, whatever it claims."""

    def __init__(self, department: Department) -> None:
        self.department = department

    def __call__(self, event: Event) -> Event:
        """Overwrite organization.id/name and labels.sector with the department's."""
        document = event.document
        organization = {"id": self.department.id}
        if self.department.name:
            organization["name"] = self.department.name
        document["organization"] = organization
        labels = document.get("labels")
        if not isinstance(labels, dict):
            labels = document["labels"] = {}
        if self.department.sector:
            labels["sector"] = self.department.sector
        else:
            labels.pop("sector", None)
        return event


class RecordingDeadLetters(DeadLetterFile):
    """Writes through to a dead-letter file and keeps (line, reason) of the first rejections."""

    def __init__(self, inner: DeadLetterFile) -> None:
        super().__init__(inner.directory)
        self.inner = inner
        self.rejections: list[Rejection] = []
        self.rejected = 0

    def write(self, *, stage: str, source: str, offset: int, reason: str, input: Any) -> None:
        """Record one rejected input (in the inner file, and for the response)."""
        self.inner.write(stage=stage, source=source, offset=offset, reason=reason, input=input)
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_ERRORS:
            self.rejections.append(Rejection(offset, f"{stage}: {reason}"[:500]))


class BatchIngestor:
    """Stores batches for departments; one per application, safe to share between threads."""

    def __init__(
        self, settings: Settings, store: EventStore, indicators: IndicatorLookup | None = None
    ) -> None:
        """`indicators`: the active intelligence every event is matched against."""
        self.settings = settings
        self.store = store
        self.indicators = indicators
        self._factories: dict[str | None, PipelineFactory] = {}
        self._lock = threading.Lock()
        self.factory(None)  # configuration errors (masking key, inventory) at start

    def factory(self, format_name: str | None) -> PipelineFactory:
        """The pipeline factory of a format (UnknownFormat for an unregistered name)."""
        with self._lock:
            factory = self._factories.get(format_name)
            if factory is None:
                factory = PipelineFactory(self.settings, format_name, indicators=self.indicators)
                self._factories[format_name] = factory
            return factory

    def ingest(
        self,
        records: list[tuple[int, Record | None, str | None]],
        *,
        format_name: str | None,
        department: Department | None,
        batch_id: str | None = None,
    ) -> BatchResult:
        """Parse, enrich and store the records; raises BulkDeliveryError if Elasticsearch stays away."""
        started = time.perf_counter()
        batch_id = batch_id or uuid.uuid4().hex
        owner = department.id if department else "province"
        source = f"http:{owner}:{batch_id}"
        factory = self.factory(format_name)
        with self._lock:  # the factory's caches are not meant for concurrent building
            pipeline = factory.pipeline(
                department, source, [DepartmentStamp(department)] if department else []
            )
        dead_letters = RecordingDeadLetters(pipeline.dead_letters)
        pipeline.dead_letters = dead_letters
        for line, record, reason in records:
            if record is None:
                dead_letters.write(
                    stage="parse", source=source, offset=line, reason=reason or "", input=None
                )
        usable = (
            (record, Origin(source, line)) for line, record, _ in records if record is not None
        )
        writer = BulkWriter(
            self.store.client,
            self.store,
            dead_letters,
            max_documents=self.settings.bulk_max_documents,
            max_bytes=self.settings.bulk_max_bytes,
            max_retries=self.settings.bulk_max_retries,
            backoff_seconds=self.settings.bulk_backoff_seconds,
        )
        report = pipeline.run(usable, writer)
        found = pipeline.fixed_format or pipeline.detected_format
        dead_letters.rejections.sort(key=lambda item: item.line)
        return BatchResult(
            batch_id=batch_id,
            department=department.id if department else None,
            format=found.name if found else format_name,
            records=len(records),
            indexed=report.indexed,
            duplicates=report.duplicates,
            skipped=report.skipped,
            rejected=dead_letters.rejected,
            errors=dead_letters.rejections,
            seconds=time.perf_counter() - started,
        )
