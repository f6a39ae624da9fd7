"""Collection health outside Elasticsearch: dead letters on disk and the collector's status file.

Data that never reached the index must still be visible on the situation overview. Dead
letters are counted per day and stage from the daily files `dead-letter-YYYY-MM-DD.jsonl`;
counting is incremental (each file is read once, then only what was appended since) and
bounded per call, so a large dead-letter file never makes the overview slow. The collector's
`collector-status.json` tells what waits in its spool and how far behind its inputs are.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lianfang.schema import parse_timestamp

DEAD_LETTER_NAME = re.compile(r"dead-letter-(\d{4}-\d{2}-\d{2})\.jsonl")
# DeadLetterFile writes `{"time": "...", "stage": "...", ...}`: the stage is near the start.
STAGE_PATTERN = re.compile(rb'"stage":\s*"((?:[^"\\]|\\.){0,64})"')
STAGE_SEARCH_BYTES = 160
READ_CHUNK_BYTES = 1024 * 1024
# The most bytes one call reads; the rest is read by the next calls (`complete` is False).
READ_BUDGET_BYTES = 64 * 1024 * 1024
MAX_DAYS = 400


class DeadLetterDay(BaseModel):
    """Dead letters written on one UTC day."""

    day: str
    total: int
    by_stage: dict[str, int]


class DeadLetterSummary(BaseModel):
    """Dead letters of the days of a time range; `complete` is False while still counting."""

    total: int
    by_stage: dict[str, int]
    days: list[DeadLetterDay]
    complete: bool


class CollectorSummary(BaseModel):
    """What the collector's status file says: spooled events, lag, errors."""

    state: str | None
    running: bool
    updated_at: str | None
    seconds_since_update: float | None
    elasticsearch: str | None
    last_error: str | None
    spooled_events: int
    spool_used_bytes: int
    spool_fill_ratio: float
    spool_full_refusals: int
    failed_deliveries: int
    read: int
    indexed: int
    failed: int
    lag_bytes: int


@dataclass
class _FileTally:
    """How far one dead-letter file has been counted."""

    identity: tuple[int, int]  # (device, inode): a replaced file is counted again
    offset: int = 0
    stages: Counter[str] = field(default_factory=Counter)


def stage_of(line: bytes) -> str:
    """The stage of one dead-letter line ("unknown" when it cannot be read)."""
    match = STAGE_PATTERN.search(line, 0, STAGE_SEARCH_BYTES)
    if match is None:
        return "unknown"
    return match.group(1).decode("utf-8", "replace") or "unknown"


def days_between(start: datetime, end: datetime) -> list[date]:
    """The UTC days that [start, end) touches, at most MAX_DAYS (the latest ones)."""
    first = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    count = (last - first).days + 1
    if count <= 0:
        return []
    first = max(first, last - timedelta(days=MAX_DAYS - 1))
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class DeadLetterCounter:
    """Counts dead letters per day and stage, remembering how far each file was read."""

    def __init__(self, directory: Path, budget_bytes: int = READ_BUDGET_BYTES) -> None:
        self.directory = directory
        self.budget_bytes = budget_bytes
        self._tallies: dict[Path, _FileTally] = {}
        self._lock = threading.Lock()

    def summary(self, start: datetime, end: datetime) -> DeadLetterSummary:
        """Dead letters written on the days of [start, end) (whole UTC days)."""
        budget = self.budget_bytes
        complete = True
        days: list[DeadLetterDay] = []
        with self._lock:
            for day in days_between(start, end):
                path = self.directory / f"dead-letter-{day.isoformat()}.jsonl"
                tally, budget, done = self._count(path, budget)
                complete = complete and done
                if tally is not None and tally.stages:
                    stages = dict(sorted(tally.stages.items()))
                    days.append(
                        DeadLetterDay(
                            day=day.isoformat(), total=sum(stages.values()), by_stage=stages
                        )
                    )
        by_stage: Counter[str] = Counter()
        for item in days:
            by_stage.update(item.by_stage)
        return DeadLetterSummary(
            total=sum(by_stage.values()),
            by_stage=dict(sorted(by_stage.items())),
            days=days,
            complete=complete,
        )

    def _count(self, path: Path, budget: int) -> tuple[_FileTally | None, int, bool]:
        """Read what was appended to one file since last time, within the byte budget."""
        try:
            status = path.stat()
        except OSError:
            self._tallies.pop(path, None)
            return None, budget, True
        identity = (status.st_dev, status.st_ino)
        tally = self._tallies.get(path)
        if tally is None or tally.identity != identity or status.st_size < tally.offset:
            tally = _FileTally(identity)
            self._tallies[path] = tally
        if status.st_size == tally.offset:
            return tally, budget, True
        pending = b""
        try:
            with path.open("rb") as source:
                source.seek(tally.offset)
                while budget > 0:
                    chunk = source.read(min(READ_CHUNK_BYTES, budget))
                    if not chunk:
                        break
                    budget -= len(chunk)
                    data = pending + chunk
                    last_newline = data.rfind(b"\n")
                    if last_newline < 0:
                        pending = data
                        continue
                    for line in data[:last_newline].split(b"\n"):
                        if line.strip():
                            tally.stages[stage_of(line)] += 1
                    # Only whole lines count as read: a line still being written is counted later.
                    tally.offset += last_newline + 1
                    pending = data[last_newline + 1 :]
        except OSError:
            return tally, budget, False
        return tally, budget, tally.offset + len(pending) >= status.st_size


def summarise_collector(status: dict[str, Any] | None, now: datetime) -> CollectorSummary | None:
    """The fields of a collector status (as `collectors.runtime.read_status` returns it)."""
    if not status:
        return None
    spool = status.get("spool") if isinstance(status.get("spool"), dict) else {}
    totals = status.get("totals") if isinstance(status.get("totals"), dict) else {}
    updated_at = status.get("updated_at") if isinstance(status.get("updated_at"), str) else None
    seconds_since_update = None
    if updated_at:
        try:
            seconds_since_update = round((now - parse_timestamp(updated_at)).total_seconds(), 3)
        except ValueError:
            updated_at = None
    return CollectorSummary(
        state=_text(status.get("state")),
        running=bool(status.get("running")),
        updated_at=updated_at,
        seconds_since_update=seconds_since_update,
        elasticsearch=_text(status.get("elasticsearch")),
        last_error=_text(status.get("last_error")),
        spooled_events=_number(spool.get("pending_events")),
        spool_used_bytes=_number(spool.get("used_bytes")),
        spool_fill_ratio=float(_number(spool.get("fill_ratio"), float)),
        spool_full_refusals=_number(spool.get("full_refusals")),
        failed_deliveries=_number(status.get("failed_deliveries")),
        read=_number(totals.get("read")),
        indexed=_number(totals.get("indexed")),
        failed=_number(totals.get("failed")),
        lag_bytes=_number(totals.get("lag_bytes")),
    )


def _text(value: Any) -> str | None:
    return value[:2000] if isinstance(value, str) else None


def _number(value: Any, kind: type = int) -> Any:
    """A counter from the file, 0 when absent or not a number (the file only informs)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return kind(0)
    return kind(value)
