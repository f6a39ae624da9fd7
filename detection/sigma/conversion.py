"""Every loaded Sigma rule classified: converted (with its Lucene query) or unsupported (with why).

Nothing is skipped silently: a rule that does not become a query is an `UnsupportedRule`
whose `kind` says which limit it hit and whose `reason` carries the message:

| kind | meaning |
|---|---|
| invalid-rule | the YAML is not valid Sigma (pySigma's parse errors) |
| correlation-rule | a correlation (event_count, temporal, ...) needs ES|QL or EQL, absent from core Elasticsearch |
| correlation-only | a base rule of a correlation with `generate: false`: no query of its own |
| unsupported-logsource | no pipeline maps its product onto our ECS fields (see pipelines.py) |
| unsupported-feature | the backend cannot express a construct (field references, a regex lookaround, ...) |
| conversion-error | any other error raised while converting, with its text |
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sigma.conversion.base import Backend
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaFeatureNotSupportedByBackendError
from sigma.rule import SigmaDetection, SigmaDetectionItem, SigmaRule
from sigma.rule.base import SigmaRuleBase

from detection.sigma.lucene_backend import CaseInsensitiveLuceneBackend
from detection.sigma.pipelines import UnsupportedLogsource, build_pipeline, pipeline_name
from detection.sigma.query_plan import rule_requirements
from detection.sigma.rule_loading import RuleSet

LEVEL_SEVERITY = {
    "informational": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}
DEFAULT_SEVERITY = "low"  # a rule without a level is a hunting lead, not an emergency
TECHNIQUE_TAG = re.compile(r"t\d{4}(?:\.\d{3})?", re.IGNORECASE)
# Groups (g0001), software (s0001), mitigations etc. are not tactics or techniques.
OTHER_ATTACK_TAG = re.compile(r"[gsmd]\d{4}", re.IGNORECASE)


@dataclass(frozen=True)
class ConvertedRule:
    """A Sigma rule as a query Elasticsearch runs, with what an alert needs to say about it."""

    id: str
    title: str
    level: str | None
    severity: str
    query: str
    techniques: tuple[str, ...] = ()
    tactics: tuple[str, ...] = ()  # ATT&CK tactic shortnames, e.g. credential-access
    logsource: dict[str, str] = field(default_factory=dict)
    falsepositives: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # the index fields the query reads
    path: str | None = None
    pipeline: str = ""
    description: str | None = None
    status: str | None = None
    # Conjunctive requirements (query_plan.py): exact event.code / winlog.channel values and
    # clauses of fields every match has, used to search only indices that can match.
    gate: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required_fields: tuple[tuple[str, ...], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {"status_in_lianfang": "converted", **asdict(self)}


@dataclass(frozen=True)
class UnsupportedRule:
    """A rule that is not run, and why."""

    id: str
    title: str
    kind: str
    reason: str
    path: str | None = None
    logsource: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {"status_in_lianfang": "unsupported", **asdict(self)}


@dataclass
class RuleCatalogue:
    """The outcome of converting a rule set."""

    converted: list[ConvertedRule] = field(default_factory=list)
    unsupported: list[UnsupportedRule] = field(default_factory=list)

    def unsupported_by_kind(self) -> dict[str, int]:
        """How many rules were not converted, per kind of reason."""
        return dict(Counter(rule.kind for rule in self.unsupported).most_common())

    def find(self, key: str) -> ConvertedRule | UnsupportedRule | None:
        """A rule by id, or by the path it was read from."""
        for rule in [*self.converted, *self.unsupported]:
            if key in (rule.id, rule.path):
                return rule
        return None


def rule_key(rule: SigmaRuleBase) -> str:
    """The rule's id, or its file and title when it has none."""
    if rule.id is not None:
        return str(rule.id)
    location = str(rule.source.path) if rule.source is not None else ""
    return f"{location}#{rule.title}"


def rule_path(rule: SigmaRuleBase) -> str | None:
    """The file the rule was read from."""
    return str(rule.source.path) if rule.source is not None else None


def logsource_of(rule: SigmaRuleBase) -> dict[str, str]:
    """product/category/service of a rule, without the empty ones."""
    logsource = getattr(rule, "logsource", None)
    if logsource is None:
        return {}
    values = {
        "product": logsource.product,
        "category": logsource.category,
        "service": logsource.service,
    }
    return {key: value for key, value in values.items() if value}


def attack_tags(rule: SigmaRuleBase) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(technique ids, tactic shortnames) from the rule's `attack.*` tags."""
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in rule.tags:
        if tag.namespace.lower() != "attack":
            continue
        name = tag.name.strip()
        if TECHNIQUE_TAG.fullmatch(name):
            techniques.append(name.upper())
        elif not OTHER_ATTACK_TAG.fullmatch(name):
            tactics.append(name.lower().replace("_", "-"))
    return tuple(dict.fromkeys(techniques)), tuple(dict.fromkeys(tactics))


def severity_of(rule: SigmaRuleBase) -> tuple[str | None, str]:
    """(Sigma level, alert severity); informational becomes low."""
    level = str(rule.level.name).lower() if rule.level is not None else None
    return level, LEVEL_SEVERITY.get(level or "", DEFAULT_SEVERITY)


def detection_fields(rule: SigmaRule) -> tuple[str, ...]:
    """The (mapped) field names of every detection item of a processed rule."""
    found: list[str] = []

    def walk(item: SigmaDetection | SigmaDetectionItem) -> None:
        if isinstance(item, SigmaDetectionItem):
            if item.field:
                found.append(item.field)
            return
        for child in item.detection_items:
            walk(child)

    for detection in rule.detection.detections.values():
        walk(detection)
    return tuple(dict.fromkeys(found))


class RuleConverter:
    """Converts rules with one backend per pipeline kind, built on first use."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        """The backend for a pipeline kind (windows, linux)."""
        if name not in self._backends:
            self._backends[name] = CaseInsensitiveLuceneBackend(build_pipeline(name))
        return self._backends[name]

    def convert(self, rule: SigmaRuleBase) -> ConvertedRule | UnsupportedRule:
        """One rule, classified; never raises for a bad rule."""
        key, path, logsource = rule_key(rule), rule_path(rule), logsource_of(rule)

        def unsupported(kind: str, reason: str) -> UnsupportedRule:
            return UnsupportedRule(key, rule.title, kind, reason, path, logsource)

        if rule.errors:
            return unsupported("invalid-rule", "; ".join(str(error) for error in rule.errors))
        if isinstance(rule, SigmaCorrelationRule):
            return unsupported(
                "correlation-rule",
                f"{rule.type.name.lower()} correlation: needs ES|QL or EQL, which the core "
                "Elasticsearch distribution does not have",
            )
        if not isinstance(rule, SigmaRule):
            return unsupported("conversion-error", f"not a detection rule: {type(rule).__name__}")
        try:
            name = pipeline_name(rule.logsource)
        except UnsupportedLogsource as error:
            return unsupported("unsupported-logsource", str(error))
        try:
            queries = self.backend(name).convert_rule(rule)
        except SigmaFeatureNotSupportedByBackendError as error:
            return unsupported("unsupported-feature", str(error))
        except SigmaError as error:
            return unsupported("conversion-error", f"{type(error).__name__}: {error}")
        except Exception as error:  # a backend bug must not stop the other rules
            return unsupported("conversion-error", f"{type(error).__name__}: {error}")
        if not queries:
            return unsupported(
                "correlation-only", "used only by a correlation rule (generate: false)"
            )
        query = queries[0] if len(queries) == 1 else " OR ".join(f"({q})" for q in queries)
        level, severity = severity_of(rule)
        techniques, tactics = attack_tags(rule)
        gate, clauses = rule_requirements(rule)
        return ConvertedRule(
            id=key,
            title=rule.title,
            level=level,
            severity=severity,
            query=str(query),
            techniques=techniques,
            tactics=tactics,
            logsource=logsource,
            falsepositives=tuple(str(item) for item in rule.falsepositives or ()),
            fields=detection_fields(rule),
            path=path,
            pipeline=name,
            description=rule.description,
            status=str(rule.status.name).lower() if rule.status is not None else None,
            gate={name: tuple(sorted(values)) for name, values in gate.items()},
            required_fields=tuple(tuple(sorted(clause)) for clause in clauses),
        )


def convert_rules(rules: Iterable[SigmaRuleBase]) -> RuleCatalogue:
    """Classify every rule: converted with its query, or unsupported with its reason."""
    converter = RuleConverter()
    catalogue = RuleCatalogue()
    for rule in rules:
        outcome = converter.convert(rule)
        if isinstance(outcome, ConvertedRule):
            catalogue.converted.append(outcome)
        else:
            catalogue.unsupported.append(outcome)
    return catalogue


def convert_rule_set(rule_set: RuleSet) -> RuleCatalogue:
    """Classify every rule of a loaded set; unreadable files are listed as invalid rules."""
    catalogue = convert_rules(rule_set.collection.rules)
    for failure in rule_set.failures:
        catalogue.unsupported.append(
            UnsupportedRule(failure.path, "", "invalid-rule", failure.reason, failure.path)
        )
    return catalogue
