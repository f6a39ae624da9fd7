"""Generic JSON lines: ECS documents pass through; other objects keep their fields.

Dotted keys ("source.ip") are nested, so Winlogbeat/Filebeat-style flat exports and
nested ECS both arrive in one shape. The timestamp is taken from the first of the
usual fields; an object without one is refused, never given an invented time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp, nest_dotted_keys

TIMESTAMP_FIELDS = ("@timestamp", "timestamp", "time", "ts", "date", "eventTime", "EventTime")
MAX_DEPTH = 20
# A quoted key with a dot in it, other than @timestamp; a false positive only costs a nesting pass.
DOTTED_KEY = re.compile(r'"(?!@timestamp")[^"\\]*\.[^"\\]*"\s*:')


def sniff(record: Record) -> bool:
    """A JSON object (a line starting with `{`)."""
    if isinstance(record, dict):
        return True
    return record.lstrip("\ufeff \t").startswith("{")


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One JSON object to ECS."""
    value = decode_json(record) if isinstance(record, str) else record
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    if isinstance(record, str) and record.count("{") + record.count("[") <= MAX_DEPTH:
        # Cheap checks on the text cover nearly every line; the walk is for the rest.
        depth, dotted = 0, DOTTED_KEY.search(record) is not None
    else:
        depth, dotted = _shape(value)
    if depth > MAX_DEPTH:
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels", record)
    document = nest_dotted_keys(value) if dotted else value
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
    return document


def decode_json(text: str) -> Any:
    """Decode a JSON text fast (orjson), with the standard library's message on failure."""
    text = text.lstrip("\ufeff")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:  # the standard library also reads integers beyond 64 bits, and words errors well
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ParseError(f"invalid JSON: {error}", text) from error


def _shape(value: Any, level: int = 1) -> tuple[int, bool]:
    """Nesting depth (stopping past MAX_DEPTH) and whether any key is dotted, in one walk."""
    deepest, dotted = level, False
    if level > MAX_DEPTH:
        return level, dotted
    children: Any
    if isinstance(value, dict):
        dotted = any("." in key for key in value if key != "@timestamp")
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level - 1, False
    for child in children:
        if isinstance(child, dict | list):
            child_depth, child_dotted = _shape(child, level + 1)
            deepest = max(deepest, child_depth)
            dotted = dotted or child_dotted
    return deepest, dotted


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
