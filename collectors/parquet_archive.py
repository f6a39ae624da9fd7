"""The Parquet archive: normalised events in hourly zstd files, partitioned by date and department.

Layout: `<root>/date=YYYY-MM-DD/organization=<id>/hour=HH-<writer id>.parquet`. Every file
has the full event as JSON (`document`, the source of truth when events are read back)
plus typed columns for the schema's scalar fields (`source.ip`, `db.rows`, ...), so offline
detection can read columns without parsing JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from lianfang.schema import ECS_FIELDS, Event, Origin, get_field, parse_timestamp

ROWS_PER_FLUSH = 50_000
UNKNOWN_ORGANIZATION = "_unknown"
# Fields that ECS defines as arrays get list columns.
LIST_FIELDS = frozenset({"event.category", "event.type", "tags", "user.roles"})
ARROW_TYPES = {
    "keyword": pa.string(),
    "caseless_keyword": pa.string(),
    "ip": pa.string(),
    "text": pa.string(),
    "long": pa.int64(),
    "float": pa.float64(),
    "date": pa.timestamp("ms", tz="UTC"),
}


def _column_type(name: str, kind: str) -> pa.DataType:
    if name in LIST_FIELDS:
        return pa.list_(pa.string())
    return ARROW_TYPES[kind]


ARCHIVE_COLUMNS: dict[str, pa.DataType] = {
    name: _column_type(name, kind)
    for name, kind in ECS_FIELDS.items()
    if kind in ARROW_TYPES and name != "event.original"
}
ARCHIVE_SCHEMA = pa.schema(
    [pa.field("event_id", pa.string()), pa.field("document", pa.string())]
    + [pa.field(name, kind) for name, kind in ARCHIVE_COLUMNS.items()]
)


def _cell(document: dict[str, Any], name: str, kind: pa.DataType) -> Any:
    value = get_field(document, name)
    if value is None or isinstance(value, dict):
        return None
    if pa.types.is_list(kind):
        return [str(item) for item in value] if isinstance(value, list) else [str(value)]
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None or isinstance(value, dict | list):
            return None
    try:
        if pa.types.is_int64(kind):
            return int(value)
        if pa.types.is_float64(kind):
            return float(value)
        if pa.types.is_timestamp(kind):
            return parse_timestamp(str(value))
    except (TypeError, ValueError, OverflowError):
        return None  # the JSON document keeps the value as it was
    return str(value)


def events_to_table(events: list[Event]) -> pa.Table:
    """An Arrow table of events in the archive schema."""
    columns: dict[str, list[Any]] = {
        "event_id": [event.id for event in events],
        "document": [orjson.dumps(event.document, default=str).decode() for event in events],
    }
    for name, kind in ARCHIVE_COLUMNS.items():
        columns[name] = [_cell(event.document, name, kind) for event in events]
    return pa.Table.from_pydict(columns, schema=ARCHIVE_SCHEMA)


class ParquetArchive:
    """A sink that buffers events per (day, department, hour) and writes zstd Parquet files."""

    def __init__(self, root: Path, rows_per_flush: int = ROWS_PER_FLUSH) -> None:
        self.root = root
        self.rows_per_flush = rows_per_flush
        self.writer_id = uuid.uuid4().hex[:8]
        self.files_written: list[Path] = []
        self._buffers: dict[tuple[str, str, int], list[Event]] = {}
        self._parts: dict[tuple[str, str, int], int] = {}

    def add(self, event: Event) -> None:
        """Buffer one event; a partition is written when it reaches the row bound."""
        moment = event.timestamp.astimezone(UTC)
        organization = get_field(event.document, "organization.id") or UNKNOWN_ORGANIZATION
        key = (moment.date().isoformat(), _safe(str(organization)), moment.hour)
        buffer = self._buffers.setdefault(key, [])
        buffer.append(event)
        if len(buffer) >= self.rows_per_flush:
            self._write(key)

    def close(self) -> list[Path]:
        """Write every buffered partition; returns all files this sink wrote."""
        for key in list(self._buffers):
            self._write(key)
        return self.files_written

    def _write(self, key: tuple[str, str, int]) -> None:
        events = self._buffers.pop(key, [])
        if not events:
            return
        day, organization, hour = key
        part = self._parts.get(key, 0)
        self._parts[key] = part + 1
        folder = self.root / f"date={day}" / f"organization={organization}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"hour={hour:02d}-{self.writer_id}-{part}.parquet"
        staging = path.with_suffix(".parquet.partial")
        pq.write_table(events_to_table(events), staging, compression="zstd")
        staging.rename(path)  # readers never see a half-written file
        self.files_written.append(path)


def _safe(name: str) -> str:
    """A department id usable as a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or UNKNOWN_ORGANIZATION


def read_archive_records(path: Path) -> Iterator[tuple[dict[str, Any], Origin]]:
    """The stored documents of one Parquet file (or every file under a folder), with origins."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        parquet = pq.ParquetFile(file)
        row = 0
        for batch in parquet.iter_batches(columns=["document"], batch_size=10_000):
            for text in batch.column(0).to_pylist():
                yield orjson.loads(text), Origin(str(file.resolve()), row)
                row += 1
