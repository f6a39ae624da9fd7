"""Searching stored events: a typed query, its Elasticsearch body, and cursor paging.

Paging uses `search_after` on (@timestamp, event.id), both always present, so pages are
stable and never skip or repeat an event even when many share one timestamp.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lianfang.schema import ECS_FIELDS, FILTERABLE_FIELDS, format_timestamp
from lianfang.scoped_store import ScopedStore
from lianfang.store import LONG_KEYWORD

# Free text is matched with simple_query_string (no query syntax injection) on these.
TEXT_FIELDS = ("message", "event.original", "process.command_line", "db.statement")
# Longer keyword values are not indexed (ignore_above), so they could never match.
FILTER_VALUE_CAP = LONG_KEYWORD
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")
LONG_RANGE = range(-(2**63), 2**63)


class InvalidQuery(ValueError):
    """A query parameter that cannot be honoured; carries the parameter and the value."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(f"{parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class FieldFilter:
    """`field:value`: the event's field must equal the value."""

    field: str
    value: str

    @classmethod
    def parse(cls, text: str) -> FieldFilter:
        """Read `field:value`; the field must be one of the schema's filterable fields."""
        name, separator, value = text.partition(":")
        if not separator or not name or not value:
            raise InvalidQuery("filter", text, "expected field:value")
        if name not in FILTERABLE_FIELDS:
            raise InvalidQuery("filter", text, f"{name} is not a filterable field")
        # A value the field's type cannot hold is the caller's mistake (422), not a store error.
        problem = _value_problem(ECS_FIELDS[name], value)
        if problem:
            raise InvalidQuery("filter", text, f"{name}: {problem}")
        return cls(name, value)

    def clause(self) -> dict[str, Any]:
        """The term query for this filter."""
        return {"term": {self.field: self.value}}


def _value_problem(kind: str, value: str) -> str | None:
    """Why `value` cannot be compared with a field of this type, or None when it can."""
    if len(value) > FILTER_VALUE_CAP:
        return f"values have at most {FILTER_VALUE_CAP} characters"
    if kind == "ip":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return "expected an IP address or a CIDR block"
    elif kind == "long":
        if not WHOLE_NUMBER.fullmatch(value) or int(value) not in LONG_RANGE:
            return "expected a whole number"
    elif kind == "float":
        try:
            number = float(value)
        except ValueError:
            return "expected a number"
        if not math.isfinite(number):
            return "expected a finite number"
    return None


@dataclass(frozen=True)
class EventQuery:
    """What an analyst asks for: a time range, exact filters, free text, a page."""

    start: datetime | None = None
    end: datetime | None = None
    filters: tuple[FieldFilter, ...] = ()
    text: str | None = None
    size: int = 100
    cursor: str | None = None
    newest_first: bool = True
    extra_clauses: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def encode_cursor(sort_values: list[Any]) -> str:
    """An opaque cursor for the page after the hit with these sort values."""
    return base64.urlsafe_b64encode(json.dumps(sort_values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[str, ...] | None = None) -> list[Any]:
    """The sort values inside a cursor made by `encode_cursor`.

    `kinds` names what each sort value must be (`long`, `keyword` or `timestamp`), so that
    a forged cursor is refused here rather than by Elasticsearch.
    """
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error) as error:
        raise InvalidQuery("cursor", cursor, "not a cursor returned by this API") from error
    if not isinstance(values, list) or len(values) != 2:
        raise InvalidQuery("cursor", cursor, "not a cursor returned by this API")
    if kinds is not None and not all(
        _is_sort_value(value, kind) for value, kind in zip(values, kinds, strict=True)
    ):
        raise InvalidQuery("cursor", cursor, "not a cursor returned by this API")
    return values


def _is_sort_value(value: Any, kind: str) -> bool:
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool) and value in LONG_RANGE
    if not isinstance(value, str) or len(value) > FILTER_VALUE_CAP:
        return False
    if kind == "timestamp":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
    return True


def range_clause(field: str, start: datetime | None, end: datetime | None) -> dict[str, Any] | None:
    """`field` in [start, end) as a range query, or None when neither bound is given."""
    bounds: dict[str, str] = {}
    if start:
        bounds["gte"] = format_timestamp(start)
    if end:
        bounds["lt"] = format_timestamp(end)
    return {"range": {field: bounds}} if bounds else None


def page_cursor(hits: list[dict[str, Any]], size: int) -> str | None:
    """The cursor of the next page, or None when this page was the last."""
    return encode_cursor(hits[-1]["sort"]) if hits and len(hits) == size else None


def build_search_body(query: EventQuery) -> dict[str, Any]:
    """The Elasticsearch search body for a query (pure; tested without a cluster)."""
    if query.start and query.end and query.start > query.end:
        raise InvalidQuery("start", query.start.isoformat(), "start is after end")
    clauses: list[dict[str, Any]] = [f.clause() for f in query.filters]
    clauses.extend(query.extra_clauses)
    if time_range := range_clause("@timestamp", query.start, query.end):
        clauses.append(time_range)
    must: list[dict[str, Any]] = []
    if query.text:
        must.append(
            {
                "simple_query_string": {
                    "query": query.text,
                    "fields": list(TEXT_FIELDS),
                    "default_operator": "and",
                    "lenient": True,
                }
            }
        )
    order = "desc" if query.newest_first else "asc"
    body: dict[str, Any] = {
        "size": query.size,
        "query": {"bool": {"filter": clauses, "must": must}},
        "sort": [
            {"@timestamp": {"order": order, "format": "strict_date_optional_time_nanos"}},
            {"event.id": {"order": order}},
        ],
        "track_total_hits": 10000,
    }
    if query.cursor:
        body["search_after"] = decode_cursor(query.cursor, ("timestamp", "keyword"))
    return body


@dataclass
class EventPage:
    """One page of events with the cursor for the next page (None at the end)."""

    events: list[dict[str, Any]]
    total: int
    total_is_exact: bool
    next_cursor: str | None


def search_events(store: ScopedStore, index: str, query: EventQuery) -> EventPage:
    """Run a query against the events alias, within the caller's departments."""
    body = build_search_body(query)
    response = store.search(index, **body)
    hits = response["hits"]["hits"]
    total = response["hits"]["total"]
    next_cursor = page_cursor(hits, query.size)
    return EventPage(
        events=[hit["_source"] for hit in hits],
        total=total["value"],
        total_is_exact=total["relation"] == "eq",
        next_cursor=next_cursor,
    )
