"""Sigma rules as detectors of the detection scheduler (`lianfang detect run --source sigma`).

Every converted rule is its own detector, so the scheduler's table shows it (found, new,
updated, error) and a rule Elasticsearch refuses fails alone. The searches are still
batched: the first detector to run for a window runs all rules of the set in planned
msearch batches (execution.py) and the others take their share of that result.

Rules come from `sigma_rules_dir`; without it the source has no detectors. Rules that are
not converted are listed once per load as a problem with the count per reason
(`lianfang rules list --unsupported` shows each rule).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from detection.alerts import Alert
from detection.detector import DetectionWindow, DetectorContext, DetectorLoad
from detection.sigma.conversion import ConvertedRule, RuleCatalogue, convert_rule_set
from detection.sigma.execution import RunReport, SigmaRunner
from detection.sigma.rule_loading import load_rule_set, rule_files
from lianfang.store import IndexNames

DETECTOR_PREFIX = "sigma:"


class SigmaQueryFailed(RuntimeError):
    """Elasticsearch refused a rule's query; carries the rule and Elasticsearch's reason."""

    def __init__(self, rule_id: str, reason: str) -> None:
        super().__init__(f"rule {rule_id}: {reason}")
        self.rule_id = rule_id
        self.reason = reason


class SigmaBatch:
    """All rules of a set, searched together once per window."""

    def __init__(self, runner: SigmaRunner, rules: list[ConvertedRule]) -> None:
        self.runner = runner
        self.rules = rules
        self._window: DetectionWindow | None = None
        self._alerts: dict[str, list[Alert]] = {}
        self._failures: dict[str, str] = {}

    def outcome(self, rule_id: str, window: DetectionWindow) -> list[Alert]:
        """The rule's alerts in the window; raises SigmaQueryFailed for a refused query."""
        if window != self._window:
            self._run(window)
        if rule_id in self._failures:
            raise SigmaQueryFailed(rule_id, self._failures[rule_id])
        return self._alerts.get(rule_id, [])

    def _run(self, window: DetectionWindow) -> None:
        report = RunReport()
        matches = self.runner.search(self.rules, window.start, window.end, report)
        self._alerts = {}
        for alert in self.runner.alerts(matches):
            self._alerts.setdefault(alert.rule_id, []).append(alert)
        self._failures = {failure.rule_id: failure.reason for failure in report.failures}
        self._window = window


@dataclass
class SigmaRuleDetector:
    """One converted Sigma rule as a scheduler detector."""

    name: str
    rule_id: str
    batch: SigmaBatch

    def run(self, window: DetectionWindow) -> list[Alert]:
        """This rule's alerts for the window."""
        return self.batch.outcome(self.rule_id, window)


def _signature(folder: Path) -> tuple[str, int, float]:
    files = rule_files([folder])
    newest = max((path.stat().st_mtime for path in files), default=0.0)
    return str(folder.resolve()), len(files), newest


@functools.lru_cache(maxsize=4)
def _catalogue(signature: tuple[str, int, float]) -> RuleCatalogue:
    # Converting SigmaHQ takes seconds; a scheduler reloading its sources reuses it until a
    # rule file is added, removed or changed.
    return convert_rule_set(load_rule_set([Path(signature[0])]))


def load_sigma_detectors(context: DetectorContext) -> DetectorLoad:
    """One detector per converted rule of `sigma_rules_dir`; unsupported ones as a problem."""
    folder = context.settings.sigma_rules_dir
    if folder is None:
        return DetectorLoad()
    if not folder.exists():
        return DetectorLoad(problems=[f"sigma_rules_dir {folder} does not exist"])
    catalogue = _catalogue(_signature(folder))
    prefix = context.events_index.removesuffix("-events")
    runner = SigmaRunner(context.client, IndexNames(prefix))
    batch = SigmaBatch(runner, catalogue.converted)
    detectors = [
        SigmaRuleDetector(f"{DETECTOR_PREFIX}{rule.title}", rule.id, batch)
        for rule in catalogue.converted
    ]
    problems = []
    if catalogue.unsupported:
        kinds = ", ".join(
            f"{kind} {count}" for kind, count in catalogue.unsupported_by_kind().items()
        )
        problems.append(
            f"{len(catalogue.unsupported)} Sigma rules not run ({kinds}): "
            "see `lianfang rules list --unsupported`"
        )
    return DetectorLoad(detectors=list(detectors), problems=problems)
