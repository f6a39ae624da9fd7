"""Rules over values Elasticsearch did not index: the field's clauses decided in Python.

A string longer than the events template's `ignore_above` is kept in `_source` but not
indexed, so a Lucene clause on it is false even when the value contains what the rule
looks for (a 10,000-character ACL in Security 5136, a long PowerShell script block). Such
documents are listed by Elasticsearch in `_ignored`. For a rule testing such a field, the
runner fetches those documents' values and decides each clause on that field here; every
clause is then replaced in the query by `*:*` (true) or `NOT *:*` (false) and the query,
restricted to those documents by `_id`, is run as usual, so the rest of the rule is still
decided by Elasticsearch. Documents with the same answers share one query.

The clauses are the ones our backend writes (lucene_backend.py): `field:/regex/`,
`field:(v OR ...)` and plain or wildcard terms. Lucene regexes match the whole value, `.`
includes line breaks, and the syntax we emit is also Python's; anything else raises
`UndecidableClause`, and the rule stays reported as unable to see those values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# A Lucene term's escape: a backslash makes the next character literal.
_TERM_SPECIAL = re.compile(r"\\(.)|([*?])|(.)", re.DOTALL)


class UndecidableClause(ValueError):
    """A clause whose value syntax is not one our backend writes."""


@dataclass(frozen=True)
class Clause:
    """One `field:value` clause of a query string: its span and its value's text."""

    start: int
    end: int
    field: str
    value: str


def _regex_end(query: str, start: int) -> int:
    """The index after the closing `/` of a regex literal opened at query[start]."""
    index = start + 1
    while index < len(query):
        char = query[index]
        if char == "\\":
            index += 2
            continue
        if char == "/":
            return index + 1
        index += 1
    raise UndecidableClause(f"unterminated regex at {start}")


def _value_end(query: str, start: int) -> int:
    """The index after the value starting at query[start] (regex, group or term)."""
    if start >= len(query):
        raise UndecidableClause("a field without a value")
    char = query[start]
    if char == "/":
        return _regex_end(query, start)
    if char == "(":
        depth, index = 0, start
        while index < len(query):
            char = query[index]
            if char == "\\":
                index += 2
                continue
            if char == "/":
                index = _regex_end(query, index)
                continue
            if char == '"':
                close = query.find('"', index + 1)
                while close > 0 and query[close - 1] == "\\":
                    close = query.find('"', close + 1)
                if close < 0:
                    raise UndecidableClause("unterminated quote")
                index = close + 1
                continue
            depth += {"(": 1, ")": -1}.get(char, 0)
            index += 1
            if depth == 0:
                return index
        raise UndecidableClause("unbalanced parentheses")
    if char == '"':
        close = start + 1
        while close < len(query) and query[close] != '"':
            close += 2 if query[close] == "\\" else 1
        return close + 1
    index = start
    while index < len(query) and query[index] not in " )":
        index += 2 if query[index] == "\\" else 1
    return index


def field_clauses(query: str, fields: Iterable[str]) -> list[Clause]:
    """Every clause of the query on one of the fields, left to right."""
    names = sorted(set(fields), key=len, reverse=True)
    found: list[Clause] = []
    index = 0
    while index < len(query):
        char = query[index]
        if char == "/":  # skip regex literals: a field name inside one is not a clause
            index = _regex_end(query, index)
            continue
        if char == "\\":
            index += 2
            continue
        at_start = index == 0 or query[index - 1] in " ("
        name = next((n for n in names if at_start and query.startswith(f"{n}:", index)), None)
        if name is None:
            index += 1
            continue
        value_start = index + len(name) + 1
        end = _value_end(query, value_start)
        found.append(Clause(index, end, name, query[value_start:end]))
        index = end
    return found


def _split_or(group: str) -> list[str]:
    """`(a OR b OR /c/)` -> ['a', 'b', '/c/']."""
    inner = group[1:-1].strip()
    values, index = [], 0
    while index < len(inner):
        end = _value_end(inner, index)
        values.append(inner[index:end])
        index = end
        while inner.startswith(" OR ", index) or inner[index : index + 1] == " ":
            index += 4 if inner.startswith(" OR ", index) else 1
    return values


def _term_regex(term: str) -> str:
    """A Lucene term (with `*`/`?` wildcards and backslash escapes) as a Python regex."""
    if term.startswith('"') and term.endswith('"') and len(term) >= 2:
        return re.escape(re.sub(r"\\(.)", r"\1", term[1:-1]))
    parts = []
    for escaped, wildcard, plain in _TERM_SPECIAL.findall(term):
        if escaped:
            parts.append(re.escape(escaped))
        elif wildcard:
            parts.append(".*" if wildcard == "*" else ".")
        else:
            parts.append(re.escape(plain))
    return "".join(parts)


def value_matcher(value: str) -> Callable[[str], bool]:
    """A predicate deciding a clause value (as our backend writes it) on one string."""
    if value.startswith("(") and value.endswith(")"):
        matchers = [value_matcher(part) for part in _split_or(value)]
        return lambda text: any(matcher(text) for matcher in matchers)
    if value.startswith("/") and value.endswith("/") and len(value) >= 2:
        try:
            pattern = re.compile(value[1:-1], re.DOTALL)
        except re.error as error:
            raise UndecidableClause(f"regex {value[:60]!r}: {error}") from None
    else:
        pattern = re.compile(_term_regex(value), re.DOTALL)
    return lambda text: pattern.fullmatch(text) is not None


def source_values(document: Mapping[str, Any], field: str) -> list[str]:
    """The strings at a dotted field path of `_source` (`.keyword` is the field itself)."""
    value: Any = document
    for part in field.removesuffix(".keyword").split("."):
        if not isinstance(value, Mapping):
            return []
        value = value.get(part)
    items = value if isinstance(value, list) else [value]
    return [str(item) for item in items if item is not None]


def decided_queries(
    query: str, fields: Iterable[str], documents: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, list[str]]]:
    """(query with the fields' clauses decided, document ids) per group of equal answers."""
    clauses = field_clauses(query, fields)
    if not clauses:
        return []
    matchers = [value_matcher(clause.value) for clause in clauses]
    groups: dict[tuple[bool, ...], list[str]] = {}
    for doc_id, source in documents.items():
        answers = tuple(
            any(matcher(text) for text in source_values(source, clause.field))
            for clause, matcher in zip(clauses, matchers, strict=True)
        )
        groups.setdefault(answers, []).append(doc_id)
    decided: list[tuple[str, list[str]]] = []
    for answers, ids in groups.items():
        pieces, last = [], 0
        for clause, answer in zip(clauses, answers, strict=True):
            pieces.append(query[last : clause.start])
            pieces.append("(*:*)" if answer else "(NOT *:*)")
            last = clause.end
        pieces.append(query[last:])
        decided.append(("".join(pieces), ids))
    return decided
