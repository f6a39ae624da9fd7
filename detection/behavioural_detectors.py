"""Behavioural rules as detectors: built-in and configured YAML rules, with overrides applied."""

from __future__ import annotations

from dataclasses import dataclass

from detection.alerts import Alert
from detection.detector import DetectionWindow, DetectorContext, DetectorLoad
from detection.rule_executor import RuleExecutor, RulePlan
from detection.rule_format import BUILTIN_RULES_DIR, load_rules
from detection.rule_overrides import (
    RuleOverrideError,
    combine,
    plan_rules,
    read_overrides_file,
)


@dataclass
class BehaviouralRuleDetector:
    """One rule plan (a rule, possibly scoped to a department) as a detector."""

    plan: RulePlan
    executor: RuleExecutor

    @property
    def name(self) -> str:
        """The rule id, with `@department` for a department's own plan."""
        return self.plan.label

    def run(self, window: DetectionWindow) -> list[Alert]:
        """The rule's alerts for events in the window."""
        return self.executor.alerts(self.plan, window.start, window.end)


def load_behavioural_detectors(context: DetectorContext) -> DetectorLoad:
    """Built-in rules, then rules from `rules_dirs` (same id replaces), with overrides."""
    config = context.settings.detection_rules
    rules, errors = load_rules([BUILTIN_RULES_DIR, *config.rules_dirs])
    problems = [str(error) for error in errors]
    overrides = config
    if config.overrides_file is not None:
        try:
            overrides = combine(read_overrides_file(config.overrides_file), config)
        except RuleOverrideError as error:
            problems.append(str(error))
    plans, override_problems = plan_rules(rules, overrides)
    problems.extend(str(problem) for problem in override_problems)
    executor = RuleExecutor(context.client, context.events_index)
    return DetectorLoad(
        detectors=[BehaviouralRuleDetector(plan, executor) for plan in plans], problems=problems
    )
