"""The format plugin protocol: how a log format is recognised and parsed into ECS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

Record = str | dict[str, Any]
"""One input record: a text line, or an already decoded object (EVTX, JSON arrays, Parquet)."""


class ParseError(ValueError):
    """A record that the format cannot turn into an event; carries the record and why."""

    def __init__(self, reason: str, record: Record | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record


@dataclass
class ParseContext:
    """What a parser may need beyond the line: time zone, reception time, per-stream state."""

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = ""
    # Stateful formats (Zeek TSV headers, ...) keep what they learnt from earlier lines here.
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogFormat:
    """A format plugin: `sniff` recognises a sample record, `parse` maps one record to ECS.

    `parse` returns a nested ECS document (without event.original, which the pipeline
    adds), or None for a record that carries no event (a header or comment line), and
    raises ParseError for a record it cannot read.
    """

    name: str
    description: str
    sniff: Callable[[Record], bool]
    parse: Callable[[Record, ParseContext], dict[str, Any] | None]
    # Auto-detection tries higher priorities first, so specific formats beat generic ones.
    priority: int = 50
