"""Executing behavioural rules as Elasticsearch searches and aggregations.

A rule becomes a bool filter plus a composite aggregation over (department, group-by
fields, time window) with metric sub-aggregations. Buckets are judged here, client-side:
the core distribution has no `bucket_selector` scripts. Windows hop by half their length
(two grids, offset 0 and window/2), so a burst no longer than half a window always falls
into one bucket; detections of the same entity from both grids are merged.

Sequence rules find candidate entities with one `filter` sub-aggregation per step, then read
those entities' step events and check order and timing (rule_metrics.find_sequence).
Baseline rules compare each window's value with the same entity's earlier windows, read with
a second aggregation restricted to the candidates.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from detection.alerts import Alert
from detection.attack_catalogue import AttackCatalogue
from detection.rule_format import (
    AllOf,
    AnyOf,
    BehaviouralRule,
    FieldTest,
    FilterNode,
    Metric,
    NoneOf,
    Param,
    format_duration,
)
from detection.rule_metrics import (
    WorkingHours,
    compare_to_baseline,
    find_sequence,
    interval_stats,
    label_entropy,
    max_subdomains,
    render_explanation,
)
from lianfang.schema import ECS_FIELDS, format_timestamp, get_field

COMPOSITE_PAGE = 2000
MSEARCH_BATCH = 100
SEQUENCE_EVENTS_CAP = 2000
MAX_CANDIDATES = 1000
BASELINE_CANDIDATE_BATCH = 500
PRUNE_TERMS = 50000
UNKNOWN_VALUE = "unknown"
ORGANIZATION = "organization.id"


class RuleExecutionError(RuntimeError):
    """A rule could not be run (bad parameter value, rejected query); names the rule."""

    def __init__(self, rule_id: str, reason: str) -> None:
        super().__init__(rule_id, reason)
        self.rule_id = rule_id
        self.reason = reason

    def __str__(self) -> str:
        return f"rule {self.rule_id}: {self.reason}"


@dataclass(frozen=True)
class RulePlan:
    """A rule ready to run: its effective parameters, severity and departments.

    `organizations` restricts the run to those departments (a department's own override);
    `excluded_organizations` leaves out departments that have their own plan or disabled
    the rule.
    """

    rule: BehaviouralRule
    parameters: dict[str, Any]
    severity: str
    organizations: tuple[str, ...] | None = None
    excluded_organizations: tuple[str, ...] = ()

    @classmethod
    def default(cls, rule: BehaviouralRule) -> RulePlan:
        """The rule as written, for every department."""
        return cls(rule, dict(rule.parameters), rule.severity)

    @property
    def label(self) -> str:
        """The rule id, with the department when the plan is scoped to some."""
        if self.organizations:
            return f"{self.rule.id}@{','.join(self.organizations)}"
        return self.rule.id


@dataclass
class RuleHit:
    """One group of events that satisfied a rule in one window."""

    organization_id: str | None
    group: dict[str, str]
    first_seen: datetime
    last_seen: datetime
    count: int
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence_ids: list[str] = field(default_factory=list)
    captured: dict[str, Any] = field(default_factory=dict)
    organization_name: str | None = None
    sector: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Department and group values: what makes two hits about the same entity."""
        return (self.organization_id, tuple(sorted(self.group.items())))


# ----------------------------------------------------------------------------- queries


def resolve(value: Any, parameters: dict[str, Any]) -> Any:
    """Replace `$param` references by their values (lists are flattened one level)."""
    if isinstance(value, Param):
        if value.name not in parameters:
            raise KeyError(value.name)
        return parameters[value.name]
    if isinstance(value, list):
        resolved: list[Any] = []
        for item in value:
            item = resolve(item, parameters)
            resolved.extend(item if isinstance(item, list) else [item])
        return resolved
    if isinstance(value, dict):
        return {key: resolve(item, parameters) for key, item in value.items()}
    return value


def compile_filter(node: FilterNode, parameters: dict[str, Any]) -> dict[str, Any]:
    """The Elasticsearch query for a filter tree (pure)."""
    if isinstance(node, AllOf):
        return {"bool": {"filter": [compile_filter(c, parameters) for c in node.children]}}
    if isinstance(node, AnyOf):
        return {
            "bool": {
                "should": [compile_filter(c, parameters) for c in node.children],
                "minimum_should_match": 1,
            }
        }
    if isinstance(node, NoneOf):
        return {"bool": {"must_not": [compile_filter(c, parameters) for c in node.children]}}
    return _field_query(node, resolve(node.value, parameters))


def _any(queries: list[dict[str, Any]]) -> dict[str, Any]:
    if len(queries) == 1:
        return queries[0]
    return {"bool": {"should": queries, "minimum_should_match": 1}}


def _field_query(test: FieldTest, value: Any) -> dict[str, Any]:
    name = test.field
    values = value if isinstance(value, list) else [value]
    if test.op in ("term", "terms"):
        if not values:
            return {"match_none": {}}
        return {"terms": {name: values}} if len(values) > 1 else {"term": {name: values[0]}}
    if test.op == "range":
        return {"range": {name: value}}
    if test.op == "exists":
        return {"exists": {"field": name}}
    if test.op == "prefix":
        return _any([{"prefix": {name: {"value": v, "case_insensitive": True}}} for v in values])
    if test.op == "wildcard":
        return _any([{"wildcard": {name: {"value": v, "case_insensitive": True}}} for v in values])
    if test.op == "regexp":
        return _any([{"regexp": {name: {"value": v}}} for v in values])
    if test.op == "phrase":
        return _any([{"match_phrase": {name: v}} for v in values])
    if test.op == "any_word":
        return {"match": {name: {"query": " ".join(str(v) for v in values), "operator": "or"}}}
    raise ValueError(f"unknown filter operator {test.op!r}")


def scope_clauses(plan: RulePlan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Filter and must_not clauses that restrict a plan to its departments."""
    include = [{"terms": {ORGANIZATION: list(plan.organizations)}}] if plan.organizations else []
    exclude = (
        [{"terms": {ORGANIZATION: list(plan.excluded_organizations)}}]
        if plan.excluded_organizations
        else []
    )
    return include, exclude


def time_range(start: datetime, end: datetime) -> dict[str, Any]:
    """[start, end) on @timestamp."""
    return {"range": {"@timestamp": {"gte": format_timestamp(start), "lt": format_timestamp(end)}}}


def working_hours_for(plan: RulePlan) -> WorkingHours:
    """The plan's working hours, from its parameters."""
    params = plan.parameters
    return WorkingHours.parse(params["working_hours"], params["working_days"], params["timezone"])


def base_query(
    plan: RulePlan, start: datetime, end: datetime, rule_filter: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The bool query of a plan over [start, end); None when nothing can match (no off-hours)."""
    include, exclude = scope_clauses(plan)
    clauses = [
        rule_filter or compile_filter(plan.rule.parsed_filter, plan.parameters),
        time_range(start, end),
        *include,
    ]
    if plan.rule.outside_working_hours:
        intervals = working_hours_for(plan).off_hours(start, end)
        if not intervals:
            return None
        clauses.append(_any([time_range(a, b) for a, b in intervals]))
    return {"bool": {"filter": clauses, "must_not": exclude}}


def aggregatable(name: str) -> str:
    """The field to aggregate on: text fields of the schema through their keyword sub-field."""
    return f"{name}.keyword" if ECS_FIELDS.get(name) == "text" else name


def group_sources(rule: BehaviouralRule) -> list[dict[str, Any]]:
    """Composite sources for the department and the group-by fields."""
    fields = [ORGANIZATION, *rule.group_by]
    return [
        {f"g{i}": {"terms": {"field": aggregatable(name), "missing_bucket": True}}}
        for i, name in enumerate(fields)
    ]


def metric_aggregations(metrics: dict[str, Metric], parameters: dict[str, Any]) -> dict[str, Any]:
    """Sub-aggregations for the metrics Elasticsearch computes (and terms for client-side ones)."""
    aggs: dict[str, Any] = {
        "first": {"min": {"field": "@timestamp"}},
        "last": {"max": {"field": "@timestamp"}},
    }
    for name, metric in metrics.items():
        key = f"m_{name}"
        kind = metric.kind
        if kind == "distinct":
            field = aggregatable(metric.field or "")
            aggs[key] = {"cardinality": {"field": field, "precision_threshold": 3000}}
        elif kind in ("sum", "min", "max", "avg"):
            aggs[key] = {kind: {"field": metric.field}}
        elif kind == "percentile":
            aggs[key] = {"percentiles": {"field": metric.field, "percents": [metric.percent]}}
        elif kind == "count_where":
            where = metric.where
            assert where is not None
            aggs[key] = {"filter": compile_filter(where, parameters)}
        elif kind in ("values", "label_entropy", "max_subdomains"):
            aggs[key] = {"terms": {"field": aggregatable(metric.field or ""), "size": metric.top}}
    return aggs


def read_metrics(
    bucket: dict[str, Any], metrics: dict[str, Metric]
) -> dict[str, float | str | None]:
    """Metric values of one aggregation bucket (timing metrics are filled in later)."""
    values: dict[str, float | str | None] = {"count": float(bucket["doc_count"])}
    for name, metric in metrics.items():
        kind, raw = metric.kind, bucket.get(f"m_{name}")
        if kind in ("distinct", "sum", "min", "max", "avg"):
            values[name] = None if raw is None or raw["value"] is None else float(raw["value"])
        elif kind == "percentile":
            found = list((raw or {}).get("values", {}).values())
            values[name] = float(found[0]) if found and found[0] is not None else None
        elif kind == "count_where":
            values[name] = float(raw["doc_count"]) if raw else 0.0
        elif kind in ("values", "label_entropy", "max_subdomains"):
            terms = [str(item["key"]) for item in (raw or {}).get("buckets", [])]
            if kind == "values":
                values[name] = ", ".join(terms[:5])
            elif kind == "label_entropy":
                values[name] = label_entropy(terms, metric.min_length)
            else:
                most, parent = max_subdomains(terms)
                values[name] = float(most)
                values[f"{name}_domain"] = parent
    derive_ratios(values, metrics)
    return values


def derive_ratios(values: dict[str, Any], metrics: dict[str, Metric]) -> None:
    """Fill ratio metrics from the metrics they divide."""
    for name, metric in metrics.items():
        if metric.ratio:
            numerator, denominator = (values.get(part) for part in metric.ratio)
            if isinstance(numerator, float) and isinstance(denominator, float):
                values[name] = numerator / denominator if denominator else math.inf
            else:
                values[name] = None


def conditions_hold(
    plan: RulePlan, values: dict[str, Any], skip: frozenset[str] = frozenset()
) -> bool:
    """Every condition of the plan's rule holds (conditions on `skip` metrics are ignored)."""
    for condition in plan.rule.parsed_conditions():
        if condition.metric in skip:
            continue
        actual = values.get(condition.metric)
        if not isinstance(actual, float | int) or not condition.holds(
            float(actual), plan.parameters
        ):
            return False
    return True


def merge_overlapping(hits: list[RuleHit]) -> list[RuleHit]:
    """Fold hits of the same entity whose time spans overlap (the two hopping grids)."""
    by_key: dict[tuple[Any, ...], list[RuleHit]] = defaultdict(list)
    for hit in hits:
        by_key[hit.key].append(hit)
    merged: list[RuleHit] = []
    for group in by_key.values():
        group.sort(key=lambda hit: hit.first_seen)
        current = group[0]
        for hit in group[1:]:
            if hit.first_seen <= current.last_seen:
                best = hit if hit.count > current.count else current
                current = RuleHit(
                    organization_id=current.organization_id,
                    group=current.group,
                    first_seen=min(current.first_seen, hit.first_seen),
                    last_seen=max(current.last_seen, hit.last_seen),
                    count=best.count,
                    metrics=best.metrics,
                    evidence_ids=list(dict.fromkeys(current.evidence_ids + hit.evidence_ids)),
                    window_start=min(_start(current), _start(hit)),
                    window_end=max(_end(current), _end(hit)),
                )
            else:
                merged.append(current)
                current = hit
        merged.append(current)
    return sorted(merged, key=lambda hit: (hit.first_seen, str(hit.key)))


def _start(hit: RuleHit) -> datetime:
    return hit.window_start or hit.first_seen


def _end(hit: RuleHit) -> datetime:
    return hit.window_end or hit.last_seen


def minimum_count(plan: RulePlan) -> int:
    """The fewest events a group needs for the conditions to hold (1 when they do not say).

    A count, a distinct count or a filtered count of at least N needs at least N events;
    that bound lets Elasticsearch drop small groups itself (terms `min_doc_count`).
    """
    rule = plan.rule
    counted = {"count"}
    counted |= {n for n, m in rule.metrics.items() if m.kind in ("distinct", "count_where")}
    if rule.baseline and rule.baseline.value == "count":
        counted.add("value")
    best = 1
    for condition in rule.parsed_conditions():
        if condition.metric not in counted or condition.op not in (">=", ">"):
            continue
        threshold = resolve(condition.value, plan.parameters)
        need = math.floor(threshold) + 1 if condition.op == ">" else math.ceil(threshold)
        best = max(best, int(need))
    return best


def minimum_sum(plan: RulePlan) -> float | None:
    """For a baseline on a sum: the smallest window value the conditions accept, if any."""
    rule = plan.rule
    if not rule.baseline or rule.baseline.value == "count":
        return None
    if rule.metrics[rule.baseline.value].kind != "sum":
        return None
    bounds = [
        float(resolve(c.value, plan.parameters))
        for c in rule.parsed_conditions()
        if c.metric in ("value", rule.baseline.value) and c.op in (">=", ">")
    ]
    return max(bounds) if bounds else None


def group_clauses(hit: RuleHit, rule: BehaviouralRule) -> list[dict[str, Any]]:
    """Term filters selecting one hit's department and group values."""
    clauses: list[dict[str, Any]] = []
    pairs = [(ORGANIZATION, hit.organization_id), *((f, hit.group.get(f)) for f in rule.group_by)]
    for name, value in pairs:
        if value is None:
            clauses.append({"bool": {"must_not": [{"exists": {"field": name}}]}})
        else:
            clauses.append({"term": {name: value}})
    return clauses


# ----------------------------------------------------------------------------- executor


class RuleExecutor:
    """Runs rule plans against the events alias and turns their hits into alerts."""

    def __init__(
        self, client: Elasticsearch, events_index: str, catalogue: AttackCatalogue | None = None
    ) -> None:
        self.client = client
        self.events_index = events_index
        self.catalogue = catalogue or AttackCatalogue.load()

    def execute(self, plan: RulePlan, start: datetime, end: datetime) -> list[RuleHit]:
        """Every hit of the plan for events in [start, end)."""
        try:
            if plan.rule.kind == "sequence":
                return self._sequence(plan, start, end)
            if plan.rule.kind == "baseline":
                return self._baseline(plan, start, end)
            return self._threshold(plan, start, end)
        except KeyError as error:
            raise RuleExecutionError(plan.rule.id, f"parameter {error} is not set") from None
        except (TypeError, ValueError) as error:
            raise RuleExecutionError(plan.rule.id, str(error)) from error

    def alerts(self, plan: RulePlan, start: datetime, end: datetime) -> list[Alert]:
        """Execute the plan and build one alert per hit."""
        return [self.alert_for(plan, hit) for hit in self.execute(plan, start, end)]

    # -- searching

    def _composite(
        self, query: dict[str, Any], sources: list[dict[str, Any]], aggs: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        for _, bucket in self._composites(query, [sources], aggs):
            yield bucket

    def _composites(
        self, query: dict[str, Any], grids: list[list[dict[str, Any]]], aggs: dict[str, Any]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Buckets of several composite aggregations over one query, paged together.

        The hopping grids of a threshold rule share one request per page instead of one
        request each.
        """
        afters: dict[int, dict[str, Any] | None] = dict.fromkeys(range(len(grids)))
        while afters:
            request: dict[str, Any] = {}
            for number, after in afters.items():
                composite: dict[str, Any] = {"size": COMPOSITE_PAGE, "sources": grids[number]}
                if after is not None:
                    composite["after"] = after
                request[f"grid{number}"] = {"composite": composite, "aggs": aggs}
            response = self.client.search(
                index=self.events_index,
                size=0,
                query=query,
                aggs=request,
                allow_partial_search_results=False,
                ignore_unavailable=True,
            )
            results = response.get("aggregations", {})
            for number in list(afters):
                result = results.get(f"grid{number}", {})
                buckets = result.get("buckets", [])
                for bucket in buckets:
                    yield number, bucket
                after = result.get("after_key")
                if after is None or len(buckets) < COMPOSITE_PAGE:
                    del afters[number]
                else:
                    afters[number] = after

    def _msearch(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        responses: list[dict[str, Any]] = []
        for begin in range(0, len(bodies), MSEARCH_BATCH):
            searches: list[dict[str, Any]] = []
            for body in bodies[begin : begin + MSEARCH_BATCH]:
                searches.append({"index": self.events_index, "ignore_unavailable": True})
                searches.append(body)
            result = self.client.msearch(searches=searches)
            for item in result["responses"]:
                if "error" in item:
                    raise ValueError(f"search failed: {item['error']}")
                responses.append(item)
        return responses

    def _split_key(self, rule: BehaviouralRule, key: dict[str, Any]) -> tuple[Any, dict[str, str]]:
        organization = key.get("g0")
        group = {
            name: str(key[f"g{i}"]) for i, name in enumerate(rule.group_by, start=1)
            if key.get(f"g{i}") is not None
        }  # fmt: skip
        return organization, group

    def _prune(
        self,
        query: dict[str, Any],
        rule: BehaviouralRule,
        minimum: int = 1,
        sum_metric: Metric | None = None,
        floor: float | None = None,
    ) -> dict[str, Any] | None:
        """The query narrowed to group values that can still qualify (None: none can).

        A group with at least `minimum` events (or a sum of at least `floor`) in one window
        has at least as many in the whole range, and so has each of its field values. One
        request with a sibling terms aggregation per group-by field (`min_doc_count`, or a
        sum sub-aggregation) finds those values, so rules grouped by high-cardinality pairs
        do not page through every pair. Events without a group-by field are then left out.
        """
        by_sum = sum_metric is not None and floor is not None
        if minimum < 2 and not by_sum:
            return query
        aggs: dict[str, Any] = {}
        for number, name in enumerate(rule.group_by):
            terms: dict[str, Any] = {
                "field": aggregatable(name),
                "size": PRUNE_TERMS,
                "min_doc_count": max(minimum, 1),
            }
            level: dict[str, Any] = {"terms": terms}
            if by_sum:
                level["aggs"] = {"total": {"sum": {"field": sum_metric.field}}}
            aggs[f"f{number}"] = level
        response = self.client.search(
            index=self.events_index,
            size=0,
            query=query,
            aggs=aggs,
            allow_partial_search_results=False,
            ignore_unavailable=True,
        )
        clauses: list[dict[str, Any]] = [query]
        for number, name in enumerate(rule.group_by):
            buckets = response.get("aggregations", {}).get(f"f{number}", {}).get("buckets", [])
            if len(buckets) >= PRUNE_TERMS:
                continue  # possibly truncated: this field cannot be narrowed safely
            values = [
                bucket.get("key_as_string", bucket["key"])
                for bucket in buckets
                if not by_sum or (bucket["total"]["value"] or 0) >= (floor or 0)
            ]
            if not values:
                return None
            clauses.append({"terms": {aggregatable(name): values}})
        return {"bool": {"filter": clauses}}

    # -- threshold

    def _threshold(self, plan: RulePlan, start: datetime, end: datetime) -> list[RuleHit]:
        rule = plan.rule
        query = base_query(plan, start, end)
        if query is None:
            return []
        window_seconds = int(rule.window.total_seconds())
        timing = {n for n, m in rule.metrics.items() if m.kind in ("interval_cv", "interval_mean")}
        aggs = metric_aggregations(rule.metrics, plan.parameters)
        offsets = [0, window_seconds // 2] if window_seconds >= 2 else [0]
        grids = []
        for offset in offsets:
            histogram: dict[str, Any] = {
                "field": "@timestamp",
                "fixed_interval": f"{window_seconds}s",
            }
            if offset:
                histogram["offset"] = f"+{offset}s"
            grids.append([*group_sources(rule), {"w": {"date_histogram": histogram}}])
        hits: list[RuleHit] = []
        pruned = self._prune(query, rule, minimum_count(plan))
        buckets = () if pruned is None else (b for _, b in self._composites(pruned, grids, aggs))
        for bucket in buckets:
            values = read_metrics(bucket, rule.metrics)
            if not conditions_hold(plan, values, skip=frozenset(timing)):
                continue
            organization, group = self._split_key(rule, bucket["key"])
            window_start = datetime.fromtimestamp(bucket["key"]["w"] / 1000, UTC)
            hits.append(
                RuleHit(
                    organization_id=organization,
                    group=group,
                    first_seen=_epoch(bucket["first"]["value"]),
                    last_seen=_epoch(bucket["last"]["value"]),
                    count=int(bucket["doc_count"]),
                    metrics=values,
                    window_start=max(window_start, start),
                    window_end=min(window_start + rule.window, end),
                )
            )
        if timing:
            hits = self._apply_timing(plan, query, hits, timing)
        hits = merge_overlapping(hits)[:MAX_CANDIDATES]
        self._attach_evidence(plan, query, hits)
        return hits

    def _apply_timing(
        self, plan: RulePlan, query: dict[str, Any], hits: list[RuleHit], timing: set[str]
    ) -> list[RuleHit]:
        rule = plan.rule
        cap = max(
            (m.top for n, m in rule.metrics.items() if n in timing), default=SEQUENCE_EVENTS_CAP
        )
        bodies = [
            {
                "size": min(max(cap, 3), SEQUENCE_EVENTS_CAP),
                "_source": False,
                "docvalue_fields": [{"field": "@timestamp", "format": "epoch_millis"}],
                "sort": [{"@timestamp": "asc"}],
                "query": {
                    "bool": {
                        "filter": [
                            query,
                            *group_clauses(hit, rule),
                            time_range(_start(hit), _end(hit)),
                        ]
                    }
                },
            }
            for hit in hits
        ]
        kept: list[RuleHit] = []
        for hit, response in zip(hits, self._msearch(bodies), strict=True):
            moments = [
                _epoch(float(item["fields"]["@timestamp"][0])) for item in response["hits"]["hits"]
            ]
            stats = interval_stats(moments)
            for name in timing:
                kind = rule.metrics[name].kind
                if stats is None:
                    hit.metrics[name] = None
                elif kind == "interval_cv":
                    hit.metrics[name] = stats.coefficient_of_variation
                else:
                    hit.metrics[name] = stats.mean_seconds
            derive_ratios(hit.metrics, rule.metrics)
            if conditions_hold(plan, hit.metrics):
                kept.append(hit)
        return kept

    def _attach_evidence(
        self,
        plan: RulePlan,
        query: dict[str, Any],
        hits: list[RuleHit],
        sort: list[dict[str, Any]] | None = None,
    ) -> None:
        """Read each hit's evidence ids, department name and captured fields."""
        rule = plan.rule
        if not hits:
            return
        source_fields = ["organization.name", "labels.sector", *rule.capture]
        bodies = [
            {
                "size": rule.evidence_size,
                "_source": source_fields,
                "sort": sort or [{"@timestamp": "asc"}],
                "track_total_hits": False,
                "query": {
                    "bool": {
                        "filter": [
                            query,
                            *group_clauses(hit, rule),
                            time_range(hit.first_seen, hit.last_seen + timedelta(milliseconds=1)),
                        ]
                    }
                },
            }
            for hit in hits
        ]
        for hit, response in zip(hits, self._msearch(bodies), strict=True):
            documents = response["hits"]["hits"]
            hit.evidence_ids = list(dict.fromkeys(hit.evidence_ids + [d["_id"] for d in documents]))
            if documents:
                # Sorted by the baseline value, the first is the largest; else the newest.
                chosen = documents[0] if sort else documents[-1]
                self._read_context(hit, chosen.get("_source", {}), rule.capture)

    @staticmethod
    def _read_context(hit: RuleHit, source: dict[str, Any], capture: list[str]) -> None:
        hit.organization_name = get_field(source, "organization.name")
        hit.sector = get_field(source, "labels.sector")
        for name in capture:
            value = get_field(source, name)
            if value is not None:
                hit.captured[name] = (
                    ", ".join(map(str, value)) if isinstance(value, list) else value
                )

    # -- sequence

    def _sequence(self, plan: RulePlan, start: datetime, end: datetime) -> list[RuleHit]:
        rule = plan.rule
        steps = rule.sequence or []
        step_filters = [compile_filter(step.parsed_filter, plan.parameters) for step in steps]
        min_counts = [int(resolve_count(step.min_count, plan.parameters)) for step in steps]
        rule_filter = {
            "bool": {
                "filter": [compile_filter(rule.parsed_filter, plan.parameters)],
                "should": step_filters,
                "minimum_should_match": 1,
            }
        }
        # A sequence completed inside the range may have begun up to one window earlier.
        query = base_query(plan, start - rule.window, end, rule_filter)
        if query is None:
            return []
        aggs = {f"s{i}": {"filter": flt} for i, flt in enumerate(step_filters)}
        candidates: list[tuple[Any, dict[str, str], int]] = []
        for bucket in self._composite(query, group_sources(rule), aggs):
            counts = [bucket[f"s{i}"]["doc_count"] for i in range(len(steps))]
            if all(c >= max(n, 1) for c, n in zip(counts, min_counts, strict=True)):
                organization, group = self._split_key(rule, bucket["key"])
                candidates.append((organization, group, sum(counts)))
        candidates.sort(key=lambda item: -item[2])
        candidates = candidates[:MAX_CANDIDATES]
        probes = [RuleHit(org, group, start, end, 0) for org, group, _ in candidates]
        source_fields = ["organization.name", "labels.sector", *rule.capture]
        bodies = [
            {
                "size": SEQUENCE_EVENTS_CAP,
                "_source": source_fields,
                "docvalue_fields": [{"field": "@timestamp", "format": "epoch_millis"}],
                "sort": [{"@timestamp": "asc"}],
                "track_total_hits": False,
                "query": {"bool": {"filter": [query, step_filter, *group_clauses(probe, rule)]}},
            }
            for probe in probes
            for step_filter in step_filters
        ]
        responses = self._msearch(bodies)
        hits: list[RuleHit] = []
        for number, probe in enumerate(probes):
            documents = [
                responses[number * len(steps) + step]["hits"]["hits"] for step in range(len(steps))
            ]
            times = [
                [_epoch(float(d["fields"]["@timestamp"][0])) for d in docs] for docs in documents
            ]
            match = find_sequence(times, min_counts, rule.window)
            if match is None or match.last < start:
                continue
            used = [
                [documents[step][i] for i in indices] for step, indices in enumerate(match.steps)
            ]
            metrics: dict[str, Any] = {
                f"{step.name}_count": float(len(events))
                for step, events in zip(steps, used, strict=True)
            }
            metrics["count"] = float(sum(len(events) for events in used))
            if not conditions_hold(plan, metrics):
                continue
            hit = RuleHit(
                organization_id=probe.organization_id,
                group=probe.group,
                first_seen=match.first,
                last_seen=match.last,
                count=int(metrics["count"]),
                metrics=metrics,
                evidence_ids=[d["_id"] for events in used for d in events][-rule.evidence_size :],
            )
            self._read_context(hit, used[-1][-1].get("_source", {}), rule.capture)
            hits.append(hit)
        return hits

    # -- baseline

    def _baseline(self, plan: RulePlan, start: datetime, end: datetime) -> list[RuleHit]:
        rule = plan.rule
        assert rule.baseline is not None
        period = rule.window
        period_seconds = int(period.total_seconds())
        value_name = rule.baseline.value
        value_metrics = {} if value_name == "count" else {value_name: rule.metrics[value_name]}
        aggs = metric_aggregations(value_metrics, plan.parameters)
        histogram = {"p": {"date_histogram": {"field": "@timestamp", "fixed_interval": f"{period_seconds}s"}}}  # fmt: skip
        sources = [*group_sources(rule), histogram]
        # Periods overlapping the range are judged; the one holding `start` is read whole.
        first_period = _floor(start, period_seconds)
        current_query = base_query(plan, first_period, end)
        if current_query is None:
            return []
        value_only = frozenset(rule.metric_names() - {"value", "count", value_name})
        current: dict[tuple[Any, ...], dict[datetime, dict[str, Any]]] = defaultdict(dict)
        floor = minimum_sum(plan)
        pruned = self._prune(
            current_query,
            rule,
            minimum_count(plan),
            value_metrics.get(value_name),
            floor,
        )
        buckets = () if pruned is None else self._composite(pruned, sources, aggs)
        for bucket in buckets:
            values = read_metrics(bucket, value_metrics)
            values["value"] = values["count"] if value_name == "count" else values[value_name]
            # Conditions on the value alone (e.g. value >= $min_value) prune before history.
            if not conditions_hold(plan, values, skip=value_only):
                continue
            organization, group = self._split_key(rule, bucket["key"])
            moment = datetime.fromtimestamp(bucket["key"]["p"] / 1000, UTC)
            values["first"] = _epoch(bucket["first"]["value"])
            values["last"] = _epoch(bucket["last"]["value"])
            current[(organization, tuple(sorted(group.items())))][moment] = values
        hits: list[RuleHit] = []
        keys = list(current)
        for begin in range(0, len(keys), BASELINE_CANDIDATE_BATCH):
            batch = keys[begin : begin + BASELINE_CANDIDATE_BATCH]
            history = self._history(
                plan, batch, first_period - rule.baseline.history, end, sources, aggs
            )
            for key in batch:
                series = history.get(key, {})
                for moment, values in sorted(current[key].items()):
                    comparison = compare_to_baseline(series, moment, period, rule.baseline.history)
                    metrics = {**values, **comparison.metrics()}
                    if not conditions_hold(plan, metrics):
                        continue
                    organization, group_items = key
                    hits.append(
                        RuleHit(
                            organization_id=organization,
                            group=dict(group_items),
                            first_seen=values.pop("first"),
                            last_seen=values.pop("last"),
                            count=int(values["count"]),
                            metrics={
                                k: v for k, v in metrics.items() if k not in ("first", "last")
                            },
                            window_start=moment,
                            window_end=moment + period,
                        )
                    )
        hits.sort(key=lambda hit: (hit.first_seen, str(hit.key)))
        hits = hits[:MAX_CANDIDATES]
        value_field = rule.metrics[value_name].field if value_name != "count" else None
        sort = [{value_field: "desc"}, {"@timestamp": "asc"}] if value_field else None
        self._attach_evidence(plan, current_query, hits, sort)
        return hits

    def _history(
        self,
        plan: RulePlan,
        keys: list[tuple[Any, ...]],
        start: datetime,
        end: datetime,
        sources: list[dict[str, Any]],
        aggs: dict[str, Any],
    ) -> dict[tuple[Any, ...], dict[datetime, float]]:
        """Per candidate entity, its value in every period of [start, end)."""
        rule = plan.rule
        value_name = rule.baseline.value if rule.baseline else "count"
        entity_queries = []
        for organization, group_items in keys:
            probe = RuleHit(organization, dict(group_items), start, end, 0)
            entity_queries.append({"bool": {"filter": group_clauses(probe, rule)}})
        query = base_query(plan, start, end)
        if query is None:
            return {}
        query = {"bool": {"filter": [query, _any(entity_queries)]}}
        series: dict[tuple[Any, ...], dict[datetime, float]] = defaultdict(dict)
        value_metrics = {} if value_name == "count" else {value_name: rule.metrics[value_name]}
        for bucket in self._composite(query, sources, aggs):
            values = read_metrics(bucket, value_metrics)
            value = values["count"] if value_name == "count" else values.get(value_name)
            organization, group = self._split_key(rule, bucket["key"])
            moment = datetime.fromtimestamp(bucket["key"]["p"] / 1000, UTC)
            series[(organization, tuple(sorted(group.items())))][moment] = float(value or 0.0)
        return series

    # -- alerts

    def alert_for(self, plan: RulePlan, hit: RuleHit) -> Alert:
        """The alert for one hit: entity, explanation, techniques, evidence, department."""
        rule = plan.rule
        entity_value = hit.group.get(rule.entity_field, UNKNOWN_VALUE)
        values: dict[str, Any] = {
            **plan.parameters,
            **hit.captured,
            **{k: v for k, v in hit.metrics.items() if v is not None},
            **hit.group,
            "count": hit.count,
            "window": format_duration(rule.window),
            "first_seen": format_timestamp(hit.first_seen),
            "last_seen": format_timestamp(hit.last_seen),
            "entity": entity_value,
            "organization.id": hit.organization_id or "",
        }
        return Alert(
            rule_id=rule.id,
            rule_name=rule.name,
            rule_type="behavioural",
            severity=plan.severity,
            entity_type=rule.entity_field,
            entity_value=entity_value,
            first_seen=hit.first_seen,
            last_seen=hit.last_seen,
            explanation=render_explanation(rule.explanation, values),
            organization_id=hit.organization_id,
            organization_name=hit.organization_name,
            sector=hit.sector,
            count=hit.count,
            evidence_event_ids=hit.evidence_ids,
            evidence_index=self.events_index,
            techniques=self.catalogue.techniques(rule.techniques),
            rule_version=str(rule.version),
            window=rule.grouping_window,
            entity_fields=dict(hit.group),
        )


def resolve_count(value: int | str, parameters: dict[str, Any]) -> int:
    """A step's min_count: a number or `$param`."""
    if isinstance(value, str):
        return int(parameters[value.removeprefix("$")])
    return value


def _epoch(milliseconds: float | None) -> datetime:
    if milliseconds is None:
        raise ValueError("bucket without timestamps")
    return datetime.fromtimestamp(milliseconds / 1000, UTC)


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = int(moment.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)
