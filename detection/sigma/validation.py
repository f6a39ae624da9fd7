"""Sigma rule validation: pySigma's validators, plus an offline check of ATT&CK tags.

pySigma's `attacktag` and `d3_fendtag` validators download MITRE data from the internet on
first use, which this platform cannot do; they are replaced by `attack_tag_issues`, which
checks `attack.tNNNN` and tactic tags against the packaged ATT&CK catalogue
(detection/attack_catalogue.py): unknown ids, and revoked or deprecated techniques.
Group (`attack.g0001`) and software (`attack.s0001`) tags are not checked (no offline data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sigma.plugins import InstalledSigmaPlugins
from sigma.rule.base import SigmaRuleBase
from sigma.validation import SigmaValidator

from detection.attack_catalogue import AttackCatalogue, AttackCatalogueError, UnknownTechniqueError
from detection.sigma.conversion import attack_tags, rule_key, rule_path

ONLINE_VALIDATORS = frozenset({"attacktag", "d3_fendtag"})


@dataclass(frozen=True)
class RuleIssue:
    """One validation finding about one rule."""

    rule_id: str
    title: str
    path: str | None
    validator: str
    severity: str  # pySigma's: low, medium, high
    message: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return asdict(self)


def offline_validator() -> SigmaValidator:
    """Every installed pySigma validator except those that need the internet."""
    plugins = InstalledSigmaPlugins.autodiscover()
    classes = [cls for name, cls in plugins.validators.items() if name not in ONLINE_VALIDATORS]
    return SigmaValidator(classes)


def attack_tag_issues(rule: SigmaRuleBase, catalogue: AttackCatalogue) -> list[RuleIssue]:
    """ATT&CK technique and tactic tags that the catalogue does not know or has retired."""
    issues: list[RuleIssue] = []
    techniques, tactics = attack_tags(rule)

    def issue(message: str) -> RuleIssue:
        return RuleIssue(
            rule_key(rule), rule.title, rule_path(rule), "attack_catalogue", "medium", message
        )

    for technique_id in techniques:
        try:
            entry = catalogue.entry(technique_id)
        except UnknownTechniqueError:
            issues.append(
                issue(f"ATT&CK technique {technique_id} is not in ATT&CK {catalogue.version}")
            )
            continue
        if entry.revoked or entry.deprecated:
            state = "revoked" if entry.revoked else "deprecated"
            issues.append(issue(f"ATT&CK technique {technique_id} is {state}"))
    for tactic in tactics:
        if catalogue.tactic(tactic) is None:
            issues.append(issue(f"ATT&CK tactic {tactic!r} is not in ATT&CK {catalogue.version}"))
    return issues


def validate_rules(rules: Iterable[SigmaRuleBase]) -> list[RuleIssue]:
    """Every issue of every rule, with the rule it is about."""
    rules = list(rules)
    issues: list[RuleIssue] = []
    for found in offline_validator().validate_rules(rules):
        name = type(found).__name__.removesuffix("Issue")
        text = str(found).split(": ", 1)[-1] if ": " in str(found) else found.description
        for rule in found.rules:
            issues.append(
                RuleIssue(
                    rule_key(rule),
                    rule.title,
                    rule_path(rule),
                    name,
                    str(found.severity.name).lower(),
                    f"{found.description}{'' if text == found.description else ' (' + text + ')'}",
                )
            )
    try:
        catalogue = AttackCatalogue.load()
    except AttackCatalogueError as error:
        issues.append(RuleIssue("", "", None, "attack_catalogue", "low", f"not checked: {error}"))
        return issues
    for rule in rules:
        issues.extend(attack_tag_issues(rule, catalogue))
    return issues
