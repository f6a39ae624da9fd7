"""The behavioural rule format: small declarative YAML rules, validated on load.

A rule selects events with a `filter`, groups them by entity fields (`group_by`), looks at
them in time windows (`window`), computes metrics per group, and fires when every
`condition` holds. Three kinds share that frame:

* `threshold`: metrics of the events in each window (counts, distinct values, sums, ...);
* `sequence`: ordered steps from the same entity within the window ("N failures, then a
  success");
* `baseline`: one value per window compared with the same entity's own earlier windows.

Thresholds and lists are `parameters` referenced as `$name`, so departments can override
them without copying the rule (detection/rule_overrides.py). Rules are executed by
detection/rule_executor.py; the pure client-side metrics live in detection/rule_metrics.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detection.alerts import SEVERITIES
from detection.attack_catalogue import AttackCatalogue, AttackCatalogueError

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,80}$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FIELD_NAME = re.compile(r"^@?[A-Za-z_][A-Za-z0-9_.@-]*$")
CONDITION = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>\S+)\s*$"
)
TEMPLATE_KEY = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
BUILTIN_RULES_DIR = Path(__file__).resolve().parent / "rules" / "builtin"
# Values every rule's explanation may use besides its fields, metrics and parameters.
STANDARD_TEMPLATE_KEYS = frozenset(
    {"count", "window", "first_seen", "last_seen", "entity", "organization.id"}
)


class RuleFormatError(ValueError):
    """A rule file is not a valid rule; carries the file and every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self) -> str:
        return f"{self.source}: " + "; ".join(self.problems)


def parse_duration(value: Any) -> timedelta:
    """`10m`, `1h`, `7d`, `30s` (or a number of seconds) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration like 30s, 10m, 1h or 7d")
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 600 s -> `10m`, 86400 s -> `1d`."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


# ----------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Param:
    """A `$name` reference to a rule parameter."""

    name: str


@dataclass(frozen=True)
class FieldTest:
    """One test on one field: `op` is term, terms, range, exists, prefix, wildcard, regexp,
    phrase or any_word."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class AllOf:
    """Every child matches."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one child matches."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class NoneOf:
    """No child matches."""

    children: tuple[FilterNode, ...]


FilterNode = AllOf | AnyOf | NoneOf | FieldTest
FIELD_OPERATORS = ("exists", "prefix", "wildcard", "regexp", "phrase", "any_word", "not")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")


def _value(raw: Any) -> Any:
    if isinstance(raw, str) and raw.startswith("$"):
        return Param(raw[1:])
    if isinstance(raw, list):
        return [_value(item) for item in raw]
    return raw


def parse_filter(raw: Any, where: str = "filter") -> FilterNode:
    """Parse the filter mini-language (see README) into a tree; ValueError names the spot."""
    if isinstance(raw, list):
        if not raw:
            raise ValueError(f"{where}: an empty list matches nothing useful")
        return AllOf(tuple(parse_filter(item, f"{where}[{i}]") for i, item in enumerate(raw)))
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: expected a mapping of field tests or all/any/not, not {raw!r}")
    nodes: list[FilterNode] = []
    for key, value in raw.items():
        if key in ("all", "any", "not"):
            items = value if isinstance(value, list) else [value]
            children = tuple(parse_filter(item, f"{where}.{key}") for item in items)
            nodes.append({"all": AllOf, "any": AnyOf, "not": NoneOf}[key](children))
        elif isinstance(key, str) and FIELD_NAME.match(key):
            nodes.append(_field_test(key, value, f"{where}.{key}"))
        else:
            raise ValueError(f"{where}: {key!r} is neither a field name nor all/any/not")
    return nodes[0] if len(nodes) == 1 else AllOf(tuple(nodes))


def _field_test(field: str, raw: Any, where: str) -> FilterNode:
    if isinstance(raw, dict):
        unknown = set(raw) - set(FIELD_OPERATORS) - set(RANGE_OPERATORS)
        if unknown or not raw:
            raise ValueError(
                f"{where}: unknown operator(s) {sorted(unknown)}; use a value, a list, or one of "
                f"{', '.join(FIELD_OPERATORS + RANGE_OPERATORS)}"
            )
        tests: list[FilterNode] = []
        bounds = {op: _value(raw[op]) for op in RANGE_OPERATORS if op in raw}
        if bounds:
            tests.append(FieldTest(field, "range", bounds))
        for op in FIELD_OPERATORS:
            if op not in raw:
                continue
            if op == "not":
                tests.append(NoneOf((_field_test(field, raw[op], f"{where}.not"),)))
            elif op == "exists":
                exists = FieldTest(field, "exists", True)
                tests.append(exists if raw[op] else NoneOf((exists,)))
            else:
                tests.append(FieldTest(field, op, _value(raw[op])))
        return tests[0] if len(tests) == 1 else AllOf(tuple(tests))
    if isinstance(raw, list):
        if not raw or any(isinstance(item, dict | list) for item in raw):
            raise ValueError(f"{where}: a list must hold plain values")
        return FieldTest(field, "terms", _value(raw))
    if raw is None:
        raise ValueError(f"{where}: null is not a value; use {{exists: false}}")
    return FieldTest(field, "term", _value(raw))


def filter_params(node: FilterNode) -> set[str]:
    """Every parameter a filter references."""
    if isinstance(node, FieldTest):
        return _params_in(node.value)
    return set().union(*(filter_params(child) for child in node.children))


def filter_fields(node: FilterNode) -> set[str]:
    """Every field a filter tests."""
    if isinstance(node, FieldTest):
        return {node.field}
    return set().union(*(filter_fields(child) for child in node.children))


def _params_in(value: Any) -> set[str]:
    if isinstance(value, Param):
        return {value.name}
    if isinstance(value, list):
        return set().union(set(), *(_params_in(item) for item in value))
    if isinstance(value, dict):
        return set().union(set(), *(_params_in(item) for item in value.values()))
    return set()


# ----------------------------------------------------------------------------- metrics

# Metrics Elasticsearch computes per bucket, metrics computed here from a bucket's top terms
# or event times, and metrics derived from other metrics.
AGGREGATED_METRICS = ("distinct", "sum", "min", "max", "avg", "percentile", "count_where")
TERMS_METRICS = ("values", "label_entropy", "max_subdomains")
TIMING_METRICS = ("interval_cv", "interval_mean")
DERIVED_METRICS = ("ratio",)
METRIC_KINDS = AGGREGATED_METRICS + TERMS_METRICS + TIMING_METRICS + DERIVED_METRICS


class Metric(BaseModel):
    """One named metric per group and window; exactly one kind key is set."""

    model_config = ConfigDict(extra="forbid")

    distinct: str | None = None
    sum: str | None = None
    min: str | None = None
    max: str | None = None
    avg: str | None = None
    percentile: str | None = None
    percent: float = 95.0
    count_where: Any = None
    values: str | None = None
    label_entropy: str | None = None
    max_subdomains: str | None = None
    interval_cv: str | None = None
    interval_mean: str | None = None
    ratio: list[str] | None = None
    top: int = Field(default=100, ge=1, le=10000)
    min_length: int = Field(default=0, ge=0)  # label_entropy: ignore shorter subdomain parts

    @model_validator(mode="after")
    def _one_kind(self) -> Metric:
        kinds = [kind for kind in METRIC_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a metric needs exactly one of {', '.join(METRIC_KINDS)}")
        if self.ratio is not None and len(self.ratio) != 2:
            raise ValueError("ratio takes [numerator, denominator]")
        if self.count_where is not None:
            parse_filter(self.count_where, "count_where")
        return self

    @property
    def kind(self) -> str:
        """Which metric this is (distinct, sum, ratio, ...)."""
        return next(kind for kind in METRIC_KINDS if getattr(self, kind) is not None)

    @property
    def field(self) -> str | None:
        """The event field the metric reads, if any."""
        value = getattr(self, self.kind)
        return value if isinstance(value, str) else None

    @property
    def where(self) -> FilterNode | None:
        """The parsed filter of a count_where metric."""
        return parse_filter(self.count_where, "count_where") if self.count_where else None


@dataclass(frozen=True)
class Condition:
    """`metric op value`: the rule fires only when every condition holds."""

    metric: str
    op: str
    value: float | Param

    def holds(self, actual: float | None, parameters: dict[str, Any]) -> bool:
        """Compare a metric value with the threshold (a missing value never holds)."""
        if actual is None:
            return False
        threshold = (
            float(parameters[self.value.name]) if isinstance(self.value, Param) else self.value
        )
        return {
            ">=": actual >= threshold,
            "<=": actual <= threshold,
            ">": actual > threshold,
            "<": actual < threshold,
            "==": actual == threshold,
            "!=": actual != threshold,
        }[self.op]

    def __str__(self) -> str:
        value = f"${self.value.name}" if isinstance(self.value, Param) else f"{self.value:g}"
        return f"{self.metric} {self.op} {value}"


def parse_condition(text: str) -> Condition:
    """`count >= $min_failures` -> Condition."""
    match = CONDITION.match(text)
    if match is None:
        raise ValueError(f"condition {text!r} is not `metric op value` (op: >= <= > < == !=)")
    raw = match["value"]
    if raw.startswith("$"):
        value: float | Param = Param(raw[1:])
    else:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"condition {text!r}: {raw!r} is not a number or $param") from None
    return Condition(match["metric"], match["op"], value)


# ----------------------------------------------------------------------------- rule


class SequenceStep(BaseModel):
    """One step of a sequence: events matching `filter`, at least `min_count` of them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    filter: Any
    min_count: int | str = 1

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: Any) -> Any:
        parse_filter(value, "sequence step filter")
        return value

    @property
    def parsed_filter(self) -> FilterNode:
        """The step's filter as a tree."""
        return parse_filter(self.filter)


class Baseline(BaseModel):
    """A value per window (`count` or a metric name) compared with the entity's history."""

    model_config = ConfigDict(extra="forbid")

    value: str = "count"
    history: timedelta = timedelta(days=7)

    @field_validator("history", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)


class BehaviouralRule(BaseModel):
    """A behavioural rule as written in YAML (see the module docstring and README)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    id: str
    name: str
    description: str = ""
    version: int = 1
    enabled: bool = True
    severity: Literal["low", "medium", "high", "critical"]
    techniques: list[str] = Field(min_length=1)
    kind: Literal["threshold", "sequence", "baseline"] = "threshold"
    window: timedelta
    alert_window: timedelta | None = None
    filter: Any
    group_by: list[str] = Field(min_length=1, max_length=4)
    entity: str | None = None
    metrics: dict[str, Metric] = Field(default_factory=dict)
    conditions: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    sequence: list[SequenceStep] | None = None
    baseline: Baseline | None = None
    outside_working_hours: bool = False
    capture: list[str] = Field(default_factory=list)
    evidence_size: int = Field(default=50, ge=1, le=500)
    explanation: str

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} must be lower-case letters, digits, . _ -")
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _known_severity(cls, value: Any) -> Any:
        if value not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")
        return value

    @field_validator("window", "alert_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @field_validator("group_by", "capture")
    @classmethod
    def _field_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not FIELD_NAME.match(name)]
        if bad:
            raise ValueError(f"not field names: {bad}")
        return value

    @field_validator("filter")
    @classmethod
    def _valid_filter(cls, value: Any) -> Any:
        parse_filter(value)
        return value

    @field_validator("conditions")
    @classmethod
    def _valid_conditions(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_condition(text)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BehaviouralRule:
        problems: list[str] = []
        if self.kind == "sequence" and not self.sequence:
            problems.append("a sequence rule needs `sequence` steps")
        if self.kind != "sequence" and self.sequence:
            problems.append("`sequence` steps need kind: sequence")
        if self.kind == "baseline" and self.baseline is None:
            problems.append("a baseline rule needs a `baseline` section")
        if self.kind != "baseline" and self.baseline is not None:
            problems.append("a `baseline` section needs kind: baseline")
        if self.entity and self.entity not in self.group_by:
            problems.append(f"entity {self.entity!r} must be one of group_by {self.group_by}")
        known_metrics = self.metric_names()
        for name, metric in self.metrics.items():
            if metric.ratio:
                missing = [m for m in metric.ratio if m not in known_metrics]
                if missing:
                    problems.append(f"metric {name}: ratio of unknown metrics {missing}")
        for condition in self.parsed_conditions():
            if condition.metric not in known_metrics:
                problems.append(
                    f"condition `{condition}` uses unknown metric {condition.metric!r} "
                    f"(known: {', '.join(sorted(known_metrics))})"
                )
        if self.baseline and self.baseline.value != "count":
            value_metric = self.metrics.get(self.baseline.value)
            if value_metric is None or value_metric.kind not in ("sum", "max", "distinct"):
                problems.append("baseline.value must be count or a sum/max/distinct metric")
        missing_params = sorted(self.referenced_params() - set(self.parameters))
        if missing_params:
            problems.append(f"undefined parameters: {', '.join('$' + p for p in missing_params)}")
        allowed = known_metrics | set(self.group_by) | set(self.capture) | set(self.parameters)
        allowed |= STANDARD_TEMPLATE_KEYS
        for key, _ in TEMPLATE_KEY.findall(self.explanation):
            if key not in allowed:
                problems.append(f"explanation uses unknown value {{{key}}}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived views

    @property
    def entity_field(self) -> str:
        """The field that names the alert's entity."""
        return self.entity or self.group_by[0]

    @property
    def grouping_window(self) -> timedelta:
        """The AlertStore grouping window: detections of one entity within it are one alert."""
        return self.alert_window or max(self.window, timedelta(hours=1))

    @property
    def parsed_filter(self) -> FilterNode:
        """The rule's filter as a tree."""
        return parse_filter(self.filter)

    def parsed_conditions(self) -> list[Condition]:
        """The conditions as records."""
        return [parse_condition(text) for text in self.conditions]

    def metric_names(self) -> set[str]:
        """Every value a condition or explanation may use."""
        names = {"count", *self.metrics}
        names |= {f"{n}_domain" for n, m in self.metrics.items() if m.kind == "max_subdomains"}
        if self.kind == "sequence" and self.sequence:
            names |= {f"{step.name}_count" for step in self.sequence}
        if self.kind == "baseline":
            names |= {
                "value",
                "baseline_mean",
                "baseline_std",
                "baseline_max",
                "baseline_periods",
                "ratio_to_baseline",
                "zscore",
            }
        return names

    def referenced_params(self) -> set[str]:
        """Every `$name` used by the filter, steps, metrics and conditions."""
        used = filter_params(self.parsed_filter)
        for step in self.sequence or []:
            used |= filter_params(step.parsed_filter)
            if isinstance(step.min_count, str):
                used.add(step.min_count.removeprefix("$"))
        for metric in self.metrics.values():
            if metric.where is not None:
                used |= filter_params(metric.where)
        for condition in self.parsed_conditions():
            if isinstance(condition.value, Param):
                used.add(condition.value.name)
        if self.outside_working_hours:
            used |= {"working_hours", "working_days", "timezone"}
        return used


def rule_from_mapping(data: Any, source: str = "<rule>") -> BehaviouralRule:
    """Validate one rule mapping; RuleFormatError lists every problem."""
    if not isinstance(data, dict):
        raise RuleFormatError(source, ["a rule file holds one mapping"])
    try:
        rule = BehaviouralRule.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}" if location else message)
        raise RuleFormatError(source, problems) from None
    catalogue = AttackCatalogue.load()
    problems = []
    for technique_id in rule.techniques:
        try:
            catalogue.technique(technique_id)
        except AttackCatalogueError as error:
            problems.append(f"techniques: {error}")
    if problems:
        raise RuleFormatError(source, problems)
    return rule


def load_rule_file(path: Path) -> BehaviouralRule:
    """Read and validate one YAML rule file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise RuleFormatError(str(path), [f"cannot read YAML: {error}"]) from error
    return rule_from_mapping(data, str(path))


def load_rules(directories: list[Path]) -> tuple[list[BehaviouralRule], list[RuleFormatError]]:
    """All `*.yaml`/`*.yml` rules of the directories; bad files are returned, not raised.

    A later directory's rule replaces an earlier one with the same id, so a deployment can
    ship its own version of a built-in rule.
    """
    rules: dict[str, BehaviouralRule] = {}
    errors: list[RuleFormatError] = []
    for directory in directories:
        paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        for path in paths:
            try:
                rule = load_rule_file(path)
            except RuleFormatError as error:
                errors.append(error)
                continue
            rules[rule.id] = rule
    return sorted(rules.values(), key=lambda rule: rule.id), errors


def builtin_rules() -> list[BehaviouralRule]:
    """The rules shipped in detection/rules/builtin (they must all be valid)."""
    rules, errors = load_rules([BUILTIN_RULES_DIR])
    if errors:
        raise errors[0]
    return rules
