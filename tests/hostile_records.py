"""Hostile variants of valid records, for checking that parsers only ever raise ParseError."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from collectors.log_format import ParseContext, ParseError

HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "",
    "-",
    "x" * 300,
    [],
    {},
    [1],
    {"a": 1},
)


def with_each_value_replaced(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The record with each (nested) value in turn replaced by each hostile value."""
    for path in _paths(record):
        for hostile in HOSTILE_VALUES:
            variant = copy.deepcopy(record)
            target = variant
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = hostile
            yield variant
    for path in _paths(record):
        variant = copy.deepcopy(record)
        target = variant
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        yield variant


def truncations(line: str, step: int = 7) -> Iterator[str]:
    """Prefixes of a line, as a cut-off write leaves them."""
    for end in range(1, len(line), step):
        yield line[:end]


def assert_only_parse_errors(
    parse: Callable[[Any, ParseContext], Any], records: Iterable[Any], context: ParseContext
) -> None:
    """Every record parses to a JSON-serialisable document (or None) or raises ParseError."""
    for record in records:
        with contextlib.suppress(ParseError):
            json.dumps(parse(record, context))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))
