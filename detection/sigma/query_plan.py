"""Which daily indices a rule can match at all, so it is only searched there.

Elasticsearch parses a `query_string` (building every regular expression's automaton) once
per shard it searches. A SigmaHQ rule with dozens of case-insensitive values costs a few
milliseconds per shard to parse even when the shard holds nothing it could match, and the
events alias has one shard per day: a back-filled year of samples is hundreds of shards.
So before searching, each rule's *requirements* are read from its processed condition tree:

- `gate`: exact values that every match must have in `event.code` and `winlog.channel`
  (from the log source conditions the pipelines add and from `EventID` selections that
  are AND-ed into the whole condition);
- `required_fields`: clauses (AND of ORs) of fields that every match must have a positive
  condition on, hence fields that must at least be mapped in the index.

A single composite aggregation lists the (event.code, winlog.channel) pairs of each index
in the window and one mapping request lists each index's fields; a rule is then sent only
to the indices meeting its requirements, or not at all. Only conjunctive requirements are
used, so the result is exactly what searching every index would return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import SigmaExists, SigmaNull, SigmaNumber, SigmaString

from detection.sigma.lucene_backend import KEYWORD_FIELD

GATE_FIELDS = ("event.code", "winlog.channel")
Gate = dict[str, frozenset[str]]
FieldClauses = list[frozenset[str]]


def required_values(condition: Any) -> Gate:
    """Exact values of GATE_FIELDS every event matching the condition must have."""
    if isinstance(condition, ConditionFieldEqualsValueExpression):
        value = condition.value
        if condition.field not in GATE_FIELDS:
            return {}
        if isinstance(value, SigmaNumber) or (
            isinstance(value, SigmaString) and not value.contains_special()
        ):
            return {condition.field: frozenset({str(value).lower()})}
        return {}
    if isinstance(condition, ConditionAND):
        merged: Gate = {}
        for child in condition.args:
            for name, values in required_values(child).items():
                merged[name] = merged[name] & values if name in merged else values
        return merged
    if isinstance(condition, ConditionOR):
        children = [required_values(child) for child in condition.args]
        if not children:
            return {}
        common = set.intersection(*(set(child) for child in children))
        return {name: frozenset().union(*(child[name] for child in children)) for name in common}
    return {}  # NOT, keywords, anything else: no requirement


def required_fields(condition: Any) -> FieldClauses:
    """Clauses of fields (at least one per clause) every match has a positive condition on."""
    if isinstance(condition, ConditionFieldEqualsValueExpression):
        value = condition.value
        if isinstance(value, SigmaNull) or (isinstance(value, SigmaExists) and not value.exists):
            return []
        return [frozenset({condition.field})]
    if isinstance(condition, ConditionValueExpression):
        return [frozenset({KEYWORD_FIELD})]
    if isinstance(condition, ConditionAND):
        return [clause for child in condition.args for clause in required_fields(child)]
    if isinstance(condition, ConditionOR):
        children = [required_fields(child) for child in condition.args]
        if not children or any(not child for child in children):
            return []
        return [frozenset().union(*(min(child, key=len) for child in children))]
    if isinstance(condition, ConditionNOT):
        return []
    return []


def rule_requirements(rule: SigmaRule) -> tuple[Gate, FieldClauses]:
    """Requirements of a processed rule; several conditions are OR-ed."""
    gates: list[Gate] = []
    clauses: list[FieldClauses] = []
    for condition in rule.detection.parsed_condition:
        parsed = condition.parsed
        gates.append(required_values(parsed))
        clauses.append(required_fields(parsed))
    if len(gates) == 1:
        return gates[0], clauses[0]
    combined = ConditionORRequirements(gates, clauses)
    return combined.gate, combined.fields


class ConditionORRequirements:
    """The requirements of several OR-ed conditions: only what all of them require."""

    def __init__(self, gates: list[Gate], clauses: list[FieldClauses]) -> None:
        common = set.intersection(*(set(gate) for gate in gates)) if gates else set()
        self.gate: Gate = {
            name: frozenset().union(*(gate[name] for gate in gates)) for name in common
        }
        if not clauses or any(not clause for clause in clauses):
            self.fields: FieldClauses = []
        else:
            self.fields = [frozenset().union(*(min(c, key=len) for c in clauses))]


def mapped_fields(properties: Mapping[str, Any], prefix: str = "") -> set[str]:
    """Every searchable field path in a mapping's `properties`, multi-fields included."""
    found: set[str] = set()
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            found |= mapped_fields(spec["properties"], f"{path}.")
            continue
        found.add(path)
        for sub in spec.get("fields", {}):
            found.add(f"{path}.{sub}")
    return found


def index_accepts(
    gate: Mapping[str, frozenset[str]],
    field_clauses: Iterable[frozenset[str]],
    pairs: set[tuple[str, str]],
    fields: set[str],
) -> bool:
    """Whether an index with these (code, channel) pairs and fields can hold a match."""
    codes = gate.get("event.code")
    channels = gate.get("winlog.channel")
    if (codes is not None or channels is not None) and not any(
        (codes is None or code in codes) and (channels is None or channel in channels)
        for code, channel in pairs
    ):
        return False
    return all(clause & fields for clause in field_clauses)
