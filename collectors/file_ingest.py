"""One-shot ingest of files (and stdin) into Elasticsearch: the `lianfang ingest` command."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

from collectors.enrichment import build_enrichment_stages, dead_letter_file_for
from collectors.formats import get_format
from collectors.inputs.text_lines import read_file_lines, read_lines
from collectors.intel_hook import IndicatorLookup
from collectors.log_format import ParseContext, Record
from collectors.masking import MaskingPolicy
from collectors.normalise import Department, Normaliser
from collectors.parquet_archive import ParquetArchive, read_archive_records
from collectors.pipeline import IngestPipeline, IngestReport
from lianfang.bulk_writer import BulkWriter
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Origin
from lianfang.settings import Settings
from lianfang.store import EventStore

ProgressCallback = Callable[[int], None]
STDIN = Path("-")


def file_records(
    path: Path, progress: ProgressCallback | None = None
) -> Iterator[tuple[Record, Origin]]:
    """The records of a file, a Parquet archive file or folder, or stdin (`-`), with origins."""
    if path == STDIN:
        for line in read_lines(sys.stdin.buffer):
            yield line.text, Origin("stdin", line.offset)
        return
    if path.suffix == ".parquet" or path.is_dir():
        for document, origin in read_archive_records(path):
            if progress is not None:
                progress(0)
            yield document, origin
        return
    source = str(path.resolve())
    last = 0
    for line in read_file_lines(path):
        if progress is not None:
            progress(line.offset - last)
            last = line.offset
        yield line.text, Origin(source, line.offset)
    if progress is not None:
        progress(max(0, path.stat().st_size - last))


def ingest_records(
    records: Iterable[tuple[Record, Origin]],
    *,
    settings: Settings,
    store: EventStore,
    format_name: str | None = None,
    department: Department | None = None,
    archive: ParquetArchive | None = None,
    indicators: IndicatorLookup | None = None,
) -> tuple[IngestReport, DeadLetterFile]:
    """Parse, normalise and bulk-write records; returns the counters and the dead-letter file.

    `indicators` (threat intelligence, see sharing/indicator_matching.py) adds the intel stage.
    """
    department_id = department.id if department else None
    masking = MaskingPolicy.from_settings(settings)
    # Configuration errors (no masking key, a broken asset inventory) surface before any input.
    stages = build_enrichment_stages(
        settings, department_id, masking=masking, indicators=indicators
    )
    dead_letters = dead_letter_file_for(settings, department_id, masking)
    store.install_templates()
    pipeline = IngestPipeline(
        normaliser=Normaliser(keep_original=settings.keep_original, department=department),
        dead_letters=dead_letters,
        log_format=get_format(format_name) if format_name else None,
        context=ParseContext(timezone=ZoneInfo(settings.timezone)),
        stages=stages,
    )
    writer = BulkWriter(
        store.client,
        store,
        dead_letters,
        max_documents=settings.bulk_max_documents,
        max_bytes=settings.bulk_max_bytes,
        max_retries=settings.bulk_max_retries,
        backoff_seconds=settings.bulk_backoff_seconds,
        pipelined=True,
    )
    try:
        return pipeline.run(records, writer, archive), dead_letters
    finally:
        writer.close()
