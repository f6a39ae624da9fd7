"""Generic JSON lines: ECS documents pass through; other objects keep their fields.

Dotted keys ("source.ip") are nested, so Winlogbeat/Filebeat-style flat exports and
nested ECS both arrive in one shape. The timestamp is taken from the first of the
usual fields; an object without one is refused, never given an invented time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp, nest_dotted_keys

TIMESTAMP_FIELDS = ("@timestamp", "timestamp", "time", "ts", "date", "eventTime", "EventTime")
MAX_DEPTH = 20


def sniff(record: Record) -> bool:
    """A JSON object (a line starting with `{`)."""
    if isinstance(record, dict):
        return True
    return record.lstrip("\ufeff \t").startswith("{")


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One JSON object to ECS."""
    if isinstance(record, str):
        try:
            value = json.loads(record.lstrip("\ufeff"))
        except (json.JSONDecodeError, RecursionError) as error:
            raise ParseError(f"invalid JSON: {error}", record) from error
    else:
        value = record
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    if _depth(value) > MAX_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels", record)
    document = nest_dotted_keys(value)
    document["@timestamp"] = _timestamp(document, context)
    for alias in TIMESTAMP_FIELDS[1:]:
        if alias in document and not isinstance(document[alias], dict):
            document.setdefault("json", {})[alias] = document.pop(alias)
    event = document.get("event")
    if not isinstance(event, dict):
        if event is not None:
            document.setdefault("json", {})["event"] = event
        event = {}
        document["event"] = event
    event.setdefault("kind", "event")
    event.setdefault("dataset", "json")
    # The pipeline keeps the line it read as event.original; an incoming one is the source's.
    event.pop("original", None)
    return document


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _timestamp(document: dict[str, Any], context: ParseContext) -> str:
    for name in TIMESTAMP_FIELDS:
        raw = document.get(name)
        if raw is None or isinstance(raw, dict):
            continue
        return format_timestamp(_to_datetime(raw, context))
    raise ParseError(f"no timestamp (looked for {', '.join(TIMESTAMP_FIELDS)})", None)


def _to_datetime(raw: Any, context: ParseContext) -> datetime:
    if isinstance(raw, bool):
        raise ParseError(f"timestamp is a boolean: {raw!r}")
    if isinstance(raw, int | float):
        seconds = raw / 1000 if raw > 1e11 else raw  # epoch milliseconds or seconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ParseError(f"epoch timestamp out of range: {raw!r}") from error
    if isinstance(raw, str):
        try:
            moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError as error:
            raise ParseError(f"unreadable timestamp {raw!r}") from error
        return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)
    raise ParseError(f"unreadable timestamp {raw!r}")


FORMAT = LogFormat(
    name="json",
    description="JSON lines: ECS pass-through, dotted keys nested, other objects kept",
    sniff=sniff,
    parse=parse,
    priority=10,
)
