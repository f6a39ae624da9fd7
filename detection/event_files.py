"""Events from files as a columnar event table, for computing features without Elasticsearch.

The event table has `@timestamp` (epoch ms), `organization.id`, every keyword field a
feature set reads as a list of strings (so multi-valued fields behave as in
Elasticsearch), and every numeric field as float64 (`<field>#number`). Parquet archives
(collectors/parquet_archive.py) are read from their typed columns without parsing JSON;
CSV files name ECS fields in their header (`@timestamp,source.ip,source.bytes,...`); any
other file goes through the collectors' format detection and normaliser, as at ingest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from detection.feature_extraction import (
    DEPARTMENT_COLUMN,
    TIMESTAMP_COLUMN,
    ColumnNeeds,
    number_column,
)
from lianfang.schema import get_field, parse_timestamp
from lianfang.settings import Settings

ARCHIVE_DOCUMENT_COLUMN = "document"
BATCH_ROWS = 50_000


class EventFileError(ValueError):
    """A file that cannot be read as events; carries the path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class EventReadReport:
    """What reading the files gave: events per file, and records that were refused."""

    events: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    dead_letter_file: str | None = None


def _keyword_list(value: Any) -> list[str] | None:
    if value is None or isinstance(value, dict):
        return None
    items = value if isinstance(value, list) else [value]
    strings = [str(item) for item in items if item is not None and not isinstance(item, dict)]
    return strings or None


def _number(value: Any) -> float | None:
    if isinstance(value, list):
        numbers = [n for n in (_number(item) for item in value) if n is not None]
        return float(sum(numbers)) if numbers else None  # Elasticsearch sums every value too
    if value is None or isinstance(value, bool | dict):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def event_table(documents: Iterable[dict[str, Any]], needs: ColumnNeeds) -> pa.Table:
    """An event table from ECS documents (nested, or flat with dotted keys)."""
    keywords, numbers = sorted(needs.keywords), sorted(needs.numbers)
    timestamps: list[int] = []
    departments: list[str | None] = []
    keyword_columns: dict[str, list[list[str] | None]] = {name: [] for name in keywords}
    number_columns: dict[str, list[float | None]] = {name: [] for name in numbers}
    for document in documents:
        moment = get_field(document, TIMESTAMP_COLUMN)
        if moment is None:
            continue
        try:
            instant = parse_timestamp(str(moment)) if not hasattr(moment, "timestamp") else moment
        except ValueError:
            continue
        timestamps.append(round(instant.timestamp() * 1000))
        department = get_field(document, DEPARTMENT_COLUMN)
        departments.append(None if department is None else str(department))
        for name in keywords:
            keyword_columns[name].append(_keyword_list(get_field(document, name)))
        for name in numbers:
            number_columns[name].append(_number(get_field(document, name)))
    columns: dict[str, pa.Array] = {
        TIMESTAMP_COLUMN: pa.array(timestamps, pa.int64()),
        DEPARTMENT_COLUMN: pa.array(departments, pa.string()),
    }
    for name in keywords:
        columns[name] = pa.array(keyword_columns[name], pa.list_(pa.string()))
    for name in numbers:
        columns[number_column(name)] = pa.array(number_columns[name], pa.float64())
    return pa.table(columns)


def _as_keyword_list(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return pc.cast(array, pa.list_(pa.string()))
    strings = pc.cast(array, pa.string())
    # Wrap each scalar in a one-element list; nulls become null lists.
    offsets = pa.array(np.arange(len(strings) + 1, dtype=np.int32))
    wrapped = pa.ListArray.from_arrays(offsets, strings.fill_null(""))
    return pc.if_else(pc.is_valid(strings), wrapped, pa.nulls(len(strings), wrapped.type))


def _as_milliseconds(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    if pa.types.is_timestamp(array.type):
        return pc.cast(pc.cast(array, pa.timestamp("ms", tz="UTC")), pa.int64())
    if pa.types.is_integer(array.type):
        return pc.cast(array, pa.int64())
    values = [
        None if text is None else round(parse_timestamp(str(text)).timestamp() * 1000)
        for text in array.to_pylist()
    ]
    return pa.array(values, pa.int64())


def columns_event_table(
    table: pa.Table, needs: ColumnNeeds, documents: list[dict[str, Any]] | None = None
) -> pa.Table:
    """An event table from a table whose columns are ECS fields (an archive file, a CSV).

    Fields without a column are read from `documents` (the archive's JSON) when given.
    """
    columns: dict[str, pa.Array] = {
        TIMESTAMP_COLUMN: _as_milliseconds(table.column(TIMESTAMP_COLUMN)),
        DEPARTMENT_COLUMN: (
            pc.cast(table.column(DEPARTMENT_COLUMN).combine_chunks(), pa.string())
            if DEPARTMENT_COLUMN in table.column_names
            else pa.nulls(table.num_rows, pa.string())
        ),
    }
    for name in sorted(needs.keywords):
        if name in table.column_names:
            columns[name] = _as_keyword_list(table.column(name))
        elif documents is not None:
            values = [_keyword_list(get_field(d, name)) for d in documents]
            columns[name] = pa.array(values, pa.list_(pa.string()))
        else:
            columns[name] = pa.nulls(table.num_rows, pa.list_(pa.string()))
    for name in sorted(needs.numbers):
        if name in table.column_names:
            column = table.column(name).combine_chunks()
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                column = pa.array([_number(v) for v in column.to_pylist()], pa.float64())
            columns[number_column(name)] = pc.cast(column, pa.float64())
        elif documents is not None:
            columns[number_column(name)] = pa.array(
                [_number(get_field(d, name)) for d in documents], pa.float64()
            )
        else:
            columns[number_column(name)] = pa.nulls(table.num_rows, pa.float64())
    result = pa.table(columns)
    return result.filter(pc.is_valid(result.column(TIMESTAMP_COLUMN)))


def read_archive(path: Path, needs: ColumnNeeds) -> pa.Table:
    """The event table of a Parquet file or archive folder, from its typed columns."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    tables: list[pa.Table] = []
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (OSError, pa.ArrowInvalid) as error:
            raise EventFileError(file, f"not a Parquet file: {error}") from error
        available = set(parquet.schema_arrow.names)
        if TIMESTAMP_COLUMN not in available:
            raise EventFileError(file, "no @timestamp column")
        wanted = {TIMESTAMP_COLUMN, DEPARTMENT_COLUMN, *needs.keywords, *needs.numbers}
        missing = wanted - available
        read = sorted(wanted & available)
        use_documents = bool(missing) and ARCHIVE_DOCUMENT_COLUMN in available
        if use_documents:
            read.append(ARCHIVE_DOCUMENT_COLUMN)
        for batch in parquet.iter_batches(columns=read, batch_size=BATCH_ROWS):
            chunk = pa.Table.from_batches([batch])
            documents = (
                [orjson.loads(text) for text in chunk.column(ARCHIVE_DOCUMENT_COLUMN).to_pylist()]
                if use_documents
                else None
            )
            tables.append(columns_event_table(chunk, needs, documents))
    return _concat(tables, needs)


def read_csv(path: Path, needs: ColumnNeeds) -> pa.Table:
    """The event table of a CSV file whose header names ECS fields."""
    try:
        table = pa_csv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise EventFileError(path, f"not a readable CSV file: {error}") from error
    if TIMESTAMP_COLUMN not in table.column_names:
        raise EventFileError(path, "the CSV header has no @timestamp column")
    try:
        return columns_event_table(table, needs)
    except ValueError as error:
        raise EventFileError(path, f"unreadable @timestamp: {error}") from error


def read_log_file(
    path: Path,
    needs: ColumnNeeds,
    settings: Settings,
    format_name: str | None = None,
    department: str | None = None,
) -> tuple[pa.Table, int, str | None]:
    """Parse any log file the collectors read (JSON lines, syslog, CEF, ...) into events.

    Returns the table, how many records were refused, and the dead-letter file if any.
    """
    from collectors.file_ingest import file_records
    from collectors.formats import get_format
    from collectors.log_format import ParseContext
    from collectors.normalise import Department, Normaliser
    from collectors.pipeline import IngestPipeline
    from lianfang.dead_letter import DeadLetterFile

    dead_letters = DeadLetterFile(settings.dead_letter_dir)
    pipeline = IngestPipeline(
        normaliser=Normaliser(
            keep_original=False, department=Department(department) if department else None
        ),
        dead_letters=dead_letters,
        log_format=get_format(format_name) if format_name else None,
        context=ParseContext(timezone=ZoneInfo(settings.timezone)),
    )
    documents = (event.document for event in pipeline.events(file_records(path)))
    table = event_table(documents, needs)
    rejected = pipeline.report.parse_failed
    return table, rejected, str(dead_letters.current_path) if rejected else None


def read_event_files(
    paths: list[Path],
    needs: ColumnNeeds,
    settings: Settings,
    *,
    department: str | None = None,
    format_name: str | None = None,
) -> tuple[pa.Table, EventReadReport]:
    """One event table from several files; `department` fills events that name none."""
    tables: list[pa.Table] = []
    report = EventReadReport()
    for path in paths:
        if not path.exists():
            raise EventFileError(path, "no such file or folder")
        if path.is_dir() or path.suffix == ".parquet":
            table = read_archive(path, needs)
        elif path.suffix == ".csv":
            table = read_csv(path, needs)
        else:
            table, rejected, dead_letter_file = read_log_file(
                path, needs, settings, format_name, department
            )
            report.rejected += rejected
            report.dead_letter_file = dead_letter_file or report.dead_letter_file
        if department is not None:
            filled = table.column(DEPARTMENT_COLUMN).fill_null(department)
            table = table.set_column(
                table.column_names.index(DEPARTMENT_COLUMN), DEPARTMENT_COLUMN, filled
            )
        report.events[str(path)] = table.num_rows
        tables.append(table)
    return _concat(tables, needs), report


def _concat(tables: list[pa.Table], needs: ColumnNeeds) -> pa.Table:
    if not tables:
        return event_table([], needs)
    return pa.concat_tables(tables)
