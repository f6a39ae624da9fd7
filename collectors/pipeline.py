"""The ingest pipeline: records -> format parser -> normaliser -> BulkWriter.

Every record ends in exactly one place: indexed, recognised as a duplicate, skipped as a
header, or written to the dead-letter file with the reason. Nothing is dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from collectors.enrichment import Stage, enrich
from collectors.formats import UnknownFormat, detect_format
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.normalise import Normaliser
from collectors.parquet_archive import ParquetArchive
from lianfang.bulk_writer import BulkWriter
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event, Origin

SNIFF_SAMPLE = 5


@dataclass
class IngestReport:
    """Counters of one ingest run."""

    read: int = 0
    parsed: int = 0
    skipped: int = 0
    parse_failed: int = 0
    indexed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Records read per second."""
        return self.read / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        """Plain counters for --json output."""
        return {
            "read": self.read,
            "parsed": self.parsed,
            "skipped": self.skipped,
            "parse_failed": self.parse_failed,
            "indexed": self.indexed,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
            "formats": self.formats,
        }


EventSink = Callable[[Event], None]


class IngestPipeline:
    """Parses and normalises records and hands the events to a sink (usually a BulkWriter)."""

    def __init__(
        self,
        *,
        normaliser: Normaliser,
        dead_letters: DeadLetterFile,
        log_format: LogFormat | None = None,
        context: ParseContext | None = None,
        stages: Sequence[Stage] = (),
    ) -> None:
        self.normaliser = normaliser
        self.stages = stages
        self.dead_letters = dead_letters
        self.fixed_format = log_format
        # Kept across calls, so a stream fed chunk by chunk is detected once.
        self.detected_format: LogFormat | None = None
        self.context = context or ParseContext()
        self.report = IngestReport()

    def events(self, records: Iterable[tuple[Record, Origin]]) -> Iterable[Event]:
        """Parse and normalise; failures go to the dead-letter file as they happen."""
        log_format = self.fixed_format or self.detected_format
        pending: list[tuple[Record, Origin]] = []
        for record, origin in records:
            self.report.read += 1
            if log_format is None:
                pending.append((record, origin))
                if len(pending) < SNIFF_SAMPLE:
                    continue
                log_format = self._detect(pending)
                if log_format is None:
                    pending = []
                    continue
                for held, held_origin in pending:
                    yield from self._one(log_format, held, held_origin)
                pending = []
                continue
            yield from self._one(log_format, record, origin)
        if pending:
            log_format = self._detect(pending)
            if log_format is not None:
                for held, held_origin in pending:
                    yield from self._one(log_format, held, held_origin)

    def _detect(self, pending: list[tuple[Record, Origin]]) -> LogFormat | None:
        try:
            self.detected_format = detect_format(record for record, _ in pending)
            return self.detected_format
        except UnknownFormat as error:
            for record, origin in pending:
                self._reject(record, origin, str(error))
            return None

    def _one(self, log_format: LogFormat, record: Record, origin: Origin) -> Iterable[Event]:
        try:
            document = log_format.parse(record, self.context)
        except ParseError as error:
            self._reject(record, origin, f"{log_format.name}: {error.reason}")
            return
        except Exception as error:  # a parser bug must cost one record, not the pipeline
            self._reject(record, origin, f"{log_format.name}: {type(error).__name__}: {error}")
            return
        if document is None:
            self.report.skipped += 1
            return
        original = record if isinstance(record, str) else None
        try:
            event = self.normaliser(document, original, origin, datetime.now(UTC))
        except (KeyError, ValueError, TypeError) as error:
            self._reject(record, origin, f"normalise: {error}")
            return
        try:
            event = enrich(event, self.stages)
        except Exception as error:  # an enrichment bug must cost one record, not the pipeline
            self._reject(record, origin, f"enrich: {type(error).__name__}: {error}")
            return
        self.report.parsed += 1
        self.report.formats[log_format.name] = self.report.formats.get(log_format.name, 0) + 1
        yield event

    def _reject(self, record: Record, origin: Origin, reason: str) -> None:
        self.report.parse_failed += 1
        self.dead_letters.write(
            stage="parse", source=origin.source, offset=origin.offset, reason=reason, input=record
        )

    def run(
        self,
        records: Iterable[tuple[Record, Origin]],
        writer: BulkWriter,
        archive: ParquetArchive | None = None,
    ) -> IngestReport:
        """Ingest everything into the writer (and the archive, which the caller closes)."""
        started = time.perf_counter()
        for event in self.events(records):
            writer.add(event)
            if archive is not None:
                archive.add(event)
        writer.flush()
        self.report.indexed = writer.report.indexed
        self.report.duplicates = writer.report.duplicates
        self.report.dead_lettered = writer.report.dead_lettered + self.report.parse_failed
        self.report.seconds = time.perf_counter() - started
        return self.report
