"""STIX patterns -> how to evaluate them against ECS events: sets, Elasticsearch, or the matcher.

Patterns are parsed with `stix2-patterns` (through the stix2 library's pattern visitor,
which builds a typed expression tree) and planned once, when an indicator is stored:

* `atomic` — one or more plain equalities (also `IN` lists and `ISSUBSET` CIDRs) on an
  address, domain, URL, e-mail address or file hash, ORed: looked up in constant time at
  ingest (`IndicatorSet`) and by Elasticsearch `terms` queries in retro-hunts;
* `query` — anything else that one event can satisfy (AND/OR of comparisons, `!=`, ranges,
  `LIKE`, simple `MATCHES`, `ISSUBSET`, ORed observations): compiled to one Elasticsearch
  bool query over the ECS fields the object paths map to;
* `matcher` — observations that need several events or time (`AND` of observations,
  `FOLLOWEDBY`, `REPEATS`, `WITHIN`, `START/STOP`) or operators Elasticsearch cannot express
  (`ISSUPERSET`, complex regular expressions): candidate events are pre-selected with a
  compiled query, turned into `observed-data` and evaluated with `stix2-matcher`;
* `unsupported` — object paths with no ECS field (registry keys, certificates, ...), other
  pattern languages, unparsable patterns: kept, marked, and reported with the reason.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stix2 import patterns as ast
from stix2.pattern_visitor import create_pattern_object

from collectors.intel_hook import DOMAIN_FIELDS, IP_FIELDS, URL_FIELDS

PLAN_KINDS = ("atomic", "query", "matcher", "unsupported")
EMAIL_FIELDS = (
    "email.from.address",
    "email.sender.address",
    "email.reply_to.address",
    "email.to.address",
    "user.email",
    "source.user.email",
    "destination.user.email",
)
HASH_FIELD_NAMES = {"md5": "md5", "sha-1": "sha1", "sha1": "sha1", "sha-256": "sha256",
                    "sha256": "sha256", "sha-512": "sha512", "sha512": "sha512"}  # fmt: skip
HASH_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
ATOMIC_HASHES = ("md5", "sha1", "sha256")  # what the ingest-time IndicatorSet holds


def _hash_fields(kind: str) -> tuple[str, ...]:
    fields = tuple(f"{owner}.hash.{kind}" for owner in ("file", "process", "dll"))
    return (*fields, "related.hash") if kind in ATOMIC_HASHES else fields


# STIX object path (list indexes written `[*]`) -> the ECS fields that hold it.
OBJECT_PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "ipv4-addr:value": IP_FIELDS,
    "ipv6-addr:value": IP_FIELDS,
    "domain-name:value": DOMAIN_FIELDS,
    "url:value": URL_FIELDS,
    "email-addr:value": EMAIL_FIELDS,
    "file:name": ("file.name",),
    "file:size": ("file.size",),
    "file:parent_directory_ref.path": ("file.directory",),
    "directory:path": ("file.directory",),
    "network-traffic:src_ref.value": ("source.ip",),
    "network-traffic:dst_ref.value": ("destination.ip",),
    "network-traffic:src_port": ("source.port",),
    "network-traffic:dst_port": ("destination.port",),
    "network-traffic:protocols[*]": ("network.transport", "network.protocol"),
    "network-traffic:src_byte_count": ("source.bytes",),
    "network-traffic:dst_byte_count": ("destination.bytes",),
    "network-traffic:src_packets": ("source.packets",),
    "network-traffic:dst_packets": ("destination.packets",),
    "process:name": ("process.name",),
    "process:pid": ("process.pid",),
    "process:command_line": ("process.command_line",),
    "process:image_ref.name": ("process.name",),
    "process:binary_ref.name": ("process.name",),
    "process:parent_ref.name": ("process.parent.name",),
    "user-account:user_id": ("user.id", "user.name"),
    "user-account:account_login": ("user.name",),
    "software:name": ("observer.product",),
    **{f"file:hashes.{name}": _hash_fields(kind) for name, kind in HASH_FIELD_NAMES.items()},
}
IP_TYPED_FIELDS = frozenset(
    {*IP_FIELDS, "source.ip", "destination.ip"}
)  # Elasticsearch `ip` fields: values must be addresses or CIDRs
LOWERCASE_PATHS = frozenset(
    {"domain-name:value", "email-addr:value", "network-traffic:protocols[*]"}
    | {f"file:hashes.{name}" for name in HASH_FIELD_NAMES}
)
# Regular expressions Lucene's regexp query reads the same way as PCRE.
_SIMPLE_REGEX = re.compile(
    r"^[\^]?(?:[A-Za-z0-9 _\-/:@,;=%&~#]|\\[.?+*|{}()\[\]^$\\/-]|\.|[*+?]|\{\d+(?:,\d*)?\}|\[[A-Za-z0-9_\-.]+\]|\(|\)|\|)*[$]?$"
)


@dataclass(frozen=True)
class Atomic:
    """One exact value an `atomic` pattern looks for."""

    type: str  # ipv4-addr, ipv6-addr, domain-name, url, email-addr, file
    value: str


@dataclass(frozen=True)
class PatternPlan:
    """How a pattern is evaluated; `query` is the event query (or the matcher's pre-selection)."""

    kind: str
    atomics: tuple[Atomic, ...] = ()
    query: dict[str, Any] | None = None
    reason: str = ""
    object_paths: tuple[str, ...] = field(default=())


class UnsupportedPattern(ValueError):
    """Part of a pattern has no evaluation here; carries the pattern and the reason."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{reason}: {pattern}")
        self.pattern = pattern
        self.reason = reason


class _NeedsMatcher(Exception):
    """A comparison Elasticsearch cannot express; the matcher can."""


def plan_pattern(pattern: str, pattern_type: str = "stix") -> PatternPlan:
    """The evaluation plan of a pattern (never raises: problems become `unsupported`)."""
    if pattern_type != "stix":
        return PatternPlan("unsupported", reason=f"pattern_type {pattern_type!r} is not evaluated")
    try:
        tree = create_pattern_object(pattern, version="2.1")
    except Exception as error:  # the parser raises many types; all mean "not a pattern here"
        return PatternPlan("unsupported", reason=f"cannot parse: {error}")
    paths = tuple(sorted(_object_paths(tree)))
    atomics = _atomics(tree)
    if atomics:
        return PatternPlan("atomic", atomics=tuple(dict.fromkeys(atomics)), object_paths=paths)
    observations = _or_observations(tree)
    try:
        if observations is not None:
            try:
                queries = [_compile_boolean(o.operand, pattern) for o in observations]
                return PatternPlan("query", query=_any_of(queries), object_paths=paths)
            except _NeedsMatcher:
                pass
        prefilters = [_prefilter(o, pattern) for o in _leaf_observations(tree)]
        return PatternPlan(
            "matcher",
            query=_any_of(prefilters),
            reason="evaluated with stix2-matcher over pre-selected events",
            object_paths=paths,
        )
    except UnsupportedPattern as error:
        return PatternPlan("unsupported", reason=error.reason, object_paths=paths)


# ---------------------------------------------------------------------- tree helpers


def _unwrap(node: Any) -> Any:
    while isinstance(node, ast.ParentheticalExpression):
        node = node.expression
    return node


def _or_observations(tree: Any) -> list[ast.ObservationExpression] | None:
    """The observations of a pattern that is only ORed plain observations, else None."""
    node = _unwrap(tree)
    if isinstance(node, ast.ObservationExpression):
        return [node]
    if isinstance(node, ast.OrObservationExpression):
        found: list[ast.ObservationExpression] = []
        for operand in node.operands:
            part = _or_observations(operand)
            if part is None:
                return None
            found += part
        return found
    return None


def _leaf_observations(tree: Any) -> list[ast.ObservationExpression]:
    node = _unwrap(tree)
    if isinstance(node, ast.ObservationExpression):
        return [node]
    if isinstance(node, ast.QualifiedObservationExpression):
        return _leaf_observations(node.observation_expression)
    if isinstance(node, ast._CompoundObservationExpression):
        return [leaf for operand in node.operands for leaf in _leaf_observations(operand)]
    return []


def _comparisons(node: Any) -> Iterable[ast._ComparisonExpression]:
    node = _unwrap(node)
    if isinstance(node, ast._ComparisonExpression):
        yield node
    elif isinstance(node, ast._BooleanExpression):
        for operand in node.operands:
            yield from _comparisons(operand)
    elif isinstance(node, ast.ObservationExpression):
        yield from _comparisons(node.operand)
    elif isinstance(node, ast.QualifiedObservationExpression):
        yield from _comparisons(node.observation_expression)
    elif isinstance(node, ast._CompoundObservationExpression):
        for operand in node.operands:
            yield from _comparisons(operand)


def _object_paths(tree: Any) -> set[str]:
    return {object_path(c.lhs) for c in _comparisons(tree)}


def object_path(path: ast.ObjectPath) -> str:
    """`file:hashes.'SHA-256'` -> `file:hashes.SHA-256`; list indexes become `[*]`."""
    parts = []
    for component in path.property_path:
        name = str(component.property_name).strip("'")
        if isinstance(component, ast.ListObjectPathComponent):
            name += "[*]"
        parts.append(name)
    return f"{path.object_type_name}:{'.'.join(parts)}"


def _path_key(path: str) -> str:
    """Hash names compared case-insensitively (`file:hashes.sha-256`)."""
    head, _, tail = path.partition(":hashes.")
    return f"{head}:hashes.{tail.lower()}" if tail else path


def ecs_fields(path: str) -> tuple[str, ...] | None:
    """The ECS fields an object path maps to, or None."""
    return OBJECT_PATH_FIELDS.get(_path_key(path))


# ---------------------------------------------------------------------- atomic plans


def _atomics(tree: Any) -> list[Atomic] | None:
    """The exact values of an ORed-equalities pattern, or None when it is something else."""
    observations = _or_observations(tree)
    if observations is None:
        return None
    found: list[Atomic] = []
    for observation in observations:
        for comparison in _or_comparisons(observation.operand):
            if comparison is None or comparison.negated:
                return None
            path = _path_key(object_path(comparison.lhs))
            operator = comparison.operator
            values = _constant_values(comparison.rhs)
            if operator == "ISSUBSET" and path in ("ipv4-addr:value", "ipv6-addr:value"):
                pass
            elif operator not in ("=", "IN"):
                return None
            for value in values:
                atomic = _atomic(path, value)
                if atomic is None:
                    return None
                found.append(atomic)
    return found


def _or_comparisons(node: Any) -> list[ast._ComparisonExpression | None]:
    node = _unwrap(node)
    if isinstance(node, ast._ComparisonExpression):
        return [node]
    if isinstance(node, ast.OrBooleanExpression):
        return [c for operand in node.operands for c in _or_comparisons(operand)]
    return [None]


def _constant_values(constant: Any) -> list[Any]:
    if isinstance(constant, ast.ListConstant):
        return [item.value for item in constant.value]
    return [constant.value]


def _atomic(path: str, value: Any) -> Atomic | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if path in ("ipv4-addr:value", "ipv6-addr:value"):
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return None
        kind = "ipv4-addr" if network.version == 4 else "ipv6-addr"
        if "/" in text and network.prefixlen != network.max_prefixlen:
            return Atomic(kind, str(network))
        return Atomic(kind, str(network.network_address))
    if path == "domain-name:value":
        name = text.lower().rstrip(".")
        if not name or " " in name or "/" in name:
            return None
        return Atomic("domain-name", name)
    if path == "url:value":
        return Atomic("url", text) if "://" in text else None
    if path == "email-addr:value":
        return Atomic("email-addr", text.lower()) if "@" in text else None
    if path.startswith("file:hashes."):
        kind = HASH_FIELD_NAMES.get(path.removeprefix("file:hashes."))
        digest = text.lower()
        if kind not in ATOMIC_HASHES or len(digest) != HASH_LENGTHS[kind]:
            return None
        if not all(c in "0123456789abcdef" for c in digest):
            return None
        return Atomic("file", digest)
    return None


# ---------------------------------------------------------------------- Elasticsearch


def _any_of(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(queries) == 1:
        return queries[0]
    return {"bool": {"should": queries, "minimum_should_match": 1}}


def _compile_boolean(node: Any, pattern: str) -> dict[str, Any]:
    node = _unwrap(node)
    if isinstance(node, ast.AndBooleanExpression):
        return {"bool": {"filter": [_compile_boolean(o, pattern) for o in node.operands]}}
    if isinstance(node, ast.OrBooleanExpression):
        return _any_of([_compile_boolean(o, pattern) for o in node.operands])
    if isinstance(node, ast._ComparisonExpression):
        return _compile_comparison(node, pattern)
    raise UnsupportedPattern(pattern, f"unexpected expression {type(node).__name__}")


def _fields_of(comparison: ast._ComparisonExpression, pattern: str) -> tuple[str, tuple[str, ...]]:
    path = _path_key(object_path(comparison.lhs))
    fields = OBJECT_PATH_FIELDS.get(path)
    if fields is None:
        raise UnsupportedPattern(pattern, f"object path {path} has no ECS field")
    return path, fields


def _exists(fields: tuple[str, ...]) -> dict[str, Any]:
    return _any_of([{"exists": {"field": f}} for f in fields])


def _normalised(path: str, value: Any) -> Any:
    if isinstance(value, str) and path in LOWERCASE_PATHS:
        return value.lower()
    return value


def _usable_on(field_name: str, value: Any) -> bool:
    """Whether a value can be sent to this field without Elasticsearch refusing the query."""
    if field_name not in IP_TYPED_FIELDS:
        return True
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return False
    return True


def _compile_comparison(comparison: ast._ComparisonExpression, pattern: str) -> dict[str, Any]:
    path, fields = _fields_of(comparison, pattern)
    operator = comparison.operator
    values = [_normalised(path, v) for v in _constant_values(comparison.rhs)]
    if operator in ("=", "!="):
        query = _any_of(
            [{"term": {f: values[0]}} for f in fields if _usable_on(f, values[0])]
            or [{"match_none": {}}]
        )
        if operator == "!=":
            return {"bool": {"filter": [_exists(fields)], "must_not": [query]}}
        return _negate(query, fields) if comparison.negated else query
    if operator == "IN":
        queries = []
        for f in fields:
            usable = [v for v in values if _usable_on(f, v)]
            if usable:
                queries.append({"terms": {f: usable}})
        query = _any_of(queries or [{"match_none": {}}])
    elif operator in ("<", "<=", ">", ">="):
        bound = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[operator]
        if any(f in IP_TYPED_FIELDS for f in fields):
            raise _NeedsMatcher(f"{operator} on an address")
        query = _any_of([{"range": {f: {bound: values[0]}}} for f in fields])
    elif operator == "LIKE":
        if any(f in IP_TYPED_FIELDS for f in fields) or not isinstance(values[0], str):
            raise _NeedsMatcher("LIKE on an address")
        query = _any_of(
            [{"wildcard": {f: {"value": _like_to_wildcard(values[0])}}} for f in fields]
        )
    elif operator == "MATCHES":
        regexp = _regex_to_lucene(values[0]) if isinstance(values[0], str) else None
        if regexp is None or any(f in IP_TYPED_FIELDS for f in fields):
            raise _NeedsMatcher("regular expression Lucene cannot read the same way")
        query = _any_of([{"regexp": {f: {"value": regexp}}} for f in fields])
    elif operator == "ISSUBSET":
        ip_fields = [f for f in fields if f in IP_TYPED_FIELDS]
        if not ip_fields or not _usable_on(ip_fields[0], values[0]):
            raise _NeedsMatcher("ISSUBSET on something other than an address")
        query = _any_of([{"term": {f: values[0]}} for f in ip_fields])
    else:  # ISSUPERSET and anything newer
        raise _NeedsMatcher(f"operator {operator}")
    return _negate(query, fields) if comparison.negated else query


def _negate(query: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """STIX `NOT`: the property is there and the comparison fails."""
    return {"bool": {"filter": [_exists(fields)], "must_not": [query]}}


def _prefilter(observation: ast.ObservationExpression, pattern: str) -> dict[str, Any]:
    """A query every event that can take part in the observation satisfies."""
    try:
        return _compile_boolean(observation.operand, pattern)
    except _NeedsMatcher:
        fields: list[str] = []
        for comparison in _comparisons(observation.operand):
            fields += _fields_of(comparison, pattern)[1]
        return _exists(tuple(dict.fromkeys(fields)))


def _like_to_wildcard(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    return escaped.replace("%", "*").replace("_", "?")


def _regex_to_lucene(regex: str) -> str | None:
    """A PCRE search as a Lucene (whole-value) regexp, or None when the dialects differ."""
    if "(?" in regex or not _SIMPLE_REGEX.match(regex) or regex.count("(") != regex.count(")"):
        return None  # flags, lookarounds and non-capturing groups have no Lucene form
    body = regex
    anchored_start = body.startswith("^")
    anchored_end = body.endswith("$") and not body.endswith("\\$")
    body = body[1:] if anchored_start else body
    body = body[:-1] if anchored_end else body
    # Lucene reserves these where PCRE takes them literally.
    body = re.sub(r'(?<!\\)([@&~#"<>])', r"\\\1", body)
    return f"{'' if anchored_start else '.*'}{body}{'' if anchored_end else '.*'}"
