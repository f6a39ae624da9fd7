"""Per-department rule overrides: which rules run where, with which parameters and severity.

Overrides come from the `[detection_rules]` settings table and, optionally, a YAML file
of the same shape (the settings win on conflicts):

    rules:                      # for every department
      ssh-brute-force: {parameters: {min_failures: 30}}
    departments:                # keyed by organization.id
      energy:
        admin-logon-off-hours: {parameters: {working_hours: "07:00-22:00"}}
        web-login-brute-force: {enabled: false}

A rule runs once for all departments without an override of it, and once more for each
department that overrides it (restricted to that department's events), so a department's
thresholds, sensitive-table lists or working hours apply to its own data only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from detection.alerts import SEVERITIES
from detection.rule_executor import RulePlan
from detection.rule_format import BehaviouralRule
from lianfang.settings import DetectionRuleSettings, RuleOverride


class RuleOverrideError(ValueError):
    """An override names an unknown rule or parameter, or has the wrong type; carries where."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(where, reason)
        self.where = where
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_overrides_file(path: Path) -> DetectionRuleSettings:
    """The `rules:` and `departments:` sections of an overrides YAML file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RuleOverrideError(str(path), f"cannot read: {error}") from error
    if not isinstance(data, dict) or set(data) - {"rules", "departments"}:
        raise RuleOverrideError(str(path), "expected a mapping with `rules` and/or `departments`")
    try:
        return DetectionRuleSettings(
            rules=data.get("rules") or {}, departments=data.get("departments") or {}
        )
    except ValidationError as error:
        raise RuleOverrideError(str(path), str(error)) from error


def combine(
    file_settings: DetectionRuleSettings, settings: DetectionRuleSettings
) -> DetectionRuleSettings:
    """Overrides from the file, with the settings table's taking precedence per rule."""
    departments = {org: dict(rules) for org, rules in file_settings.departments.items()}
    for org, rules in settings.departments.items():
        departments.setdefault(org, {}).update(
            {
                rule_id: _stack(departments.get(org, {}).get(rule_id), o)
                for rule_id, o in rules.items()
            }
        )
    rules = dict(file_settings.rules)
    rules.update({rule_id: _stack(rules.get(rule_id), o) for rule_id, o in settings.rules.items()})
    return settings.model_copy(update={"rules": rules, "departments": departments})


def _stack(base: RuleOverride | None, top: RuleOverride) -> RuleOverride:
    if base is None:
        return top
    return RuleOverride(
        enabled=top.enabled if top.enabled is not None else base.enabled,
        severity=top.severity or base.severity,
        parameters={**base.parameters, **top.parameters},
    )


def apply_override(
    rule: BehaviouralRule,
    base: tuple[bool, str, dict[str, Any]],
    override: RuleOverride,
    where: str,
) -> tuple[bool, str, dict[str, Any]]:
    """(enabled, severity, parameters) after one override; checks names and types."""
    enabled, severity, parameters = base
    if override.severity is not None and override.severity not in SEVERITIES:
        raise RuleOverrideError(where, f"severity must be one of {SEVERITIES}")
    merged = dict(parameters)
    for name, value in override.parameters.items():
        if name not in rule.parameters:
            known = ", ".join(sorted(rule.parameters)) or "none"
            raise RuleOverrideError(
                where, f"rule {rule.id} has no parameter {name!r} (has {known})"
            )
        expected = rule.parameters[name]
        if not _same_shape(expected, value):
            raise RuleOverrideError(
                where,
                f"parameter {name!r} must be {type(expected).__name__} like {expected!r}, not {value!r}",
            )
        merged[name] = value
    return (
        override.enabled if override.enabled is not None else enabled,
        override.severity or severity,
        merged,
    )


def _same_shape(expected: Any, value: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool)
    if isinstance(expected, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(expected))


def plan_rules(
    rules: Iterable[BehaviouralRule], overrides: DetectionRuleSettings
) -> tuple[list[RulePlan], list[RuleOverrideError]]:
    """The plans to run, and the overrides that could not be applied (those are skipped)."""
    rules = list(rules)
    known = {rule.id for rule in rules}
    problems: list[RuleOverrideError] = []
    for rule_id in overrides.rules:
        if rule_id not in known:
            problems.append(RuleOverrideError(f"rules.{rule_id}", "no such rule"))
    for org, rule_overrides in overrides.departments.items():
        for rule_id in rule_overrides:
            if rule_id not in known:
                problems.append(RuleOverrideError(f"departments.{org}.{rule_id}", "no such rule"))
    plans: list[RulePlan] = []
    for rule in rules:
        state = (rule.enabled, rule.severity, dict(rule.parameters))
        global_override = overrides.rules.get(rule.id)
        if global_override is not None:
            try:
                state = apply_override(rule, state, global_override, f"rules.{rule.id}")
            except RuleOverrideError as error:
                problems.append(error)
        scoped: list[str] = []
        for org, rule_overrides in sorted(overrides.departments.items()):
            override = rule_overrides.get(rule.id)
            if override is None:
                continue
            scoped.append(org)
            try:
                enabled, severity, parameters = apply_override(
                    rule, state, override, f"departments.{org}.{rule.id}"
                )
            except RuleOverrideError as error:
                problems.append(error)
                continue  # the department is left out rather than run with a broken override
            if enabled:
                plans.append(RulePlan(rule, parameters, severity, organizations=(org,)))
        enabled, severity, parameters = state
        if enabled:
            plans.append(RulePlan(rule, parameters, severity, excluded_organizations=tuple(scoped)))
    return plans, problems
