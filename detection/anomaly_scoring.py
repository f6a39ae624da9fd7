"""Anomaly runs: train models on a baseline, score a window, rank entities, raise alerts.

The same steps work on features from Elasticsearch (`extract_features`) and from files
(`compute_features`); only the feature table's origin differs. Every (feature set,
department) is trained and scored on its own: one that fails is reported with its reason
and the others continue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
from elasticsearch import Elasticsearch

from detection.alerts import Alert, AlertStore, AttackTechnique, UpsertReport
from detection.anomaly_detectors import DEFAULT_DETECTOR
from detection.anomaly_models import (
    DEFAULT_BASELINE_TRIM,
    POOLED,
    AnomalyModel,
    ModelError,
    ModelMetadata,
    ModelRepository,
    ScoredWindow,
    ThresholdRule,
    department_rows,
    departments_of,
    score_table,
    train_model,
)
from detection.feature_extraction import (
    DEPARTMENT_COLUMN,
    ENTITY_COLUMN,
    UNKNOWN_DEPARTMENT,
    WINDOW_COLUMN,
    FeatureExtractionError,
    extract_features,
)
from detection.feature_sets import FeatureSet, condition_values
from lianfang.schema import format_timestamp

HIGH_SEVERITY_SCORE = 3.0  # normalised score: three times as far from usual as the threshold
EVIDENCE_EVENTS = 50
RULE_PREFIX = "anomaly."


@dataclass
class AnomalyRunReport:
    """What a training or scoring run did, and what it could not do (with reasons)."""

    trained: list[ModelMetadata] = field(default_factory=list)
    scored: list[ScoredWindow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    upserted: UpsertReport | None = None
    problems: list[str] = field(default_factory=list)
    windows: dict[str, int] = field(default_factory=dict)  # feature set -> entity-windows


def train_feature_set(
    table: pa.Table,
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    repository: ModelRepository | None,
    *,
    detector: str = DEFAULT_DETECTOR,
    detector_options: dict[str, Any] | None = None,
    rule: ThresholdRule | None = None,
    per_department: bool = True,
    pooled: bool = False,
    baseline_trim: float = DEFAULT_BASELINE_TRIM,
    report: AnomalyRunReport | None = None,
) -> tuple[dict[str, AnomalyModel], AnomalyRunReport]:
    """Train one model per department (and/or a pooled one) and save them if a repository is given."""
    report = report or AnomalyRunReport()
    report.windows[feature_set.name] = report.windows.get(feature_set.name, 0) + table.num_rows
    departments = (departments_of(table) if per_department else []) + ([POOLED] if pooled else [])
    models: dict[str, AnomalyModel] = {}
    for department in departments:
        try:
            model = train_model(
                table,
                feature_set,
                department,
                start,
                end,
                detector=detector,
                detector_options=detector_options,
                rule=rule,
                baseline_trim=baseline_trim,
            )
        except ModelError as error:
            report.problems.append(str(error))
            continue
        except Exception as error:  # a failing model must not stop the other departments
            report.problems.append(
                f"model {feature_set.name}/{department}: {type(error).__name__}: {error}"
            )
            continue
        if repository is not None:
            repository.save(model)
        models[department] = model
        report.trained.append(model.metadata)
    return models, report


def score_feature_set(
    table: pa.Table,
    feature_set: FeatureSet,
    model_for: Callable[[str], AnomalyModel],
    *,
    explain_top: int = 20,
    report: AnomalyRunReport | None = None,
) -> AnomalyRunReport:
    """Score each department's windows with its model (`model_for(department)`)."""
    report = report or AnomalyRunReport()
    report.windows[feature_set.name] = report.windows.get(feature_set.name, 0) + table.num_rows
    for department in departments_of(table):
        try:
            model = model_for(department)
            report.scored.extend(
                score_table(
                    model, feature_set, department_rows(table, department), explain_top=explain_top
                )
            )
        except ModelError as error:
            report.problems.append(str(error))
        except Exception as error:  # one broken model must not stop the others
            report.problems.append(
                f"scoring {feature_set.name}/{department}: {type(error).__name__}: {error}"
            )
    return report


def ranked(scored: list[ScoredWindow]) -> list[ScoredWindow]:
    """Windows from every model in one order: most anomalous (relative to its threshold) first."""
    return sorted(scored, key=lambda window: (-window.normalised_score, window.entity))


@dataclass(frozen=True)
class RankedEntity:
    """An entity's most anomalous window."""

    feature_set: str
    department: str
    entity_type: str
    entity: str
    normalised_score: float
    windows_above_threshold: int
    worst: ScoredWindow


def rank_entities(scored: list[ScoredWindow]) -> list[RankedEntity]:
    """One row per (feature set, department, entity), ranked by its worst window."""
    grouped: dict[tuple[str, str, str], list[ScoredWindow]] = {}
    for window in scored:
        grouped.setdefault((window.feature_set, window.department, window.entity), []).append(
            window
        )
    entities = []
    for (feature_set, department, entity), windows in grouped.items():
        worst = max(windows, key=lambda window: window.normalised_score)
        entities.append(
            RankedEntity(
                feature_set=feature_set,
                department=department,
                entity_type=worst.entity_type,
                entity=entity,
                normalised_score=worst.normalised_score,
                windows_above_threshold=sum(window.above_threshold for window in windows),
                worst=worst,
            )
        )
    return sorted(entities, key=lambda item: (-item.normalised_score, item.entity))


class TechniqueResolver:
    """ATT&CK techniques by id from detection/attack_catalogue.py, when it is available."""

    def __init__(self) -> None:
        self._catalogue: Any = None
        self._loaded = False
        self.problems: list[str] = []

    def __call__(self, technique_ids: list[str]) -> list[AttackTechnique]:
        """The current techniques for these ids; unknown ones are reported and skipped."""
        if not technique_ids:
            return []
        if not self._loaded:
            self._loaded = True
            try:
                from detection.attack_catalogue import AttackCatalogue

                self._catalogue = AttackCatalogue.load()
            except Exception as error:  # no catalogue: alerts go out without techniques
                self.problems.append(f"ATT&CK catalogue unavailable: {error}")
        if self._catalogue is None:
            return []
        techniques = []
        for technique_id in technique_ids:
            try:
                techniques.append(self._catalogue.technique(technique_id))
            except Exception as error:  # unknown or retired technique ids in a feature set
                self.problems.append(f"technique {technique_id}: {error}")
        return techniques


def alert_for(
    window: ScoredWindow,
    feature_set: FeatureSet,
    techniques: list[AttackTechnique],
    evidence_event_ids: list[str] | None = None,
    evidence_index: str | None = None,
) -> Alert:
    """The anomaly alert of a window above its model's threshold."""
    score = window.normalised_score
    severity = "high" if score >= HIGH_SEVERITY_SCORE else "medium"
    baseline = (
        "pooled baseline of all departments"
        if window.model_department == POOLED
        else f"{window.model_department or window.department} baseline"
    )
    return Alert(
        rule_id=f"{RULE_PREFIX}{feature_set.name}",
        rule_name=feature_set.title,
        rule_type="anomaly",
        severity=severity,
        entity_type=feature_set.entity,
        entity_value=window.entity,
        first_seen=window.first_event,
        last_seen=window.last_event,
        explanation=(
            f"{window.explanation.text} (anomaly score {score:.1f} times the alert threshold "
            f"of the {baseline}, model v{window.model_version})"
        ),
        organization_id=None
        if window.department in (UNKNOWN_DEPARTMENT, POOLED)
        else window.department,
        count=window.events,
        evidence_event_ids=evidence_event_ids or [],
        evidence_index=evidence_index,
        techniques=techniques,
        risk_score=round(100 * score / (score + 1), 1),
        rule_version=f"v{window.model_version}",
        window=feature_set.window_delta,
    )


def alerts_for(
    scored: list[ScoredWindow],
    feature_sets: dict[str, FeatureSet],
    resolve: TechniqueResolver,
    evidence: Callable[[ScoredWindow, FeatureSet], list[str]] | None = None,
    evidence_index: str | None = None,
) -> list[Alert]:
    """Alerts for every window above its threshold, most anomalous first."""
    alerts = []
    for window in ranked(scored):
        if not window.above_threshold:
            continue
        feature_set = feature_sets[window.feature_set]
        ids = evidence(window, feature_set) if evidence else []
        alerts.append(
            alert_for(
                window, feature_set, resolve(window.explanation.techniques), ids, evidence_index
            )
        )
    return alerts


# ------------------------------------------------------------------ Elasticsearch


def evidence_query(window: ScoredWindow, feature_set: FeatureSet) -> dict[str, Any]:
    """The search for the events behind a window, largest driving values first (pure)."""
    clauses: list[dict[str, Any]] = [
        {"term": {feature_set.entity: window.entity}},
        {
            "range": {
                "@timestamp": {
                    "gte": format_timestamp(window.window_start),
                    "lt": format_timestamp(window.window_end),
                }
            }
        },
    ]
    for name, values in condition_values(feature_set.filter):
        clauses.append({"terms": {name: list(values)}})
    if window.department not in (UNKNOWN_DEPARTMENT, POOLED):
        clauses.append({"term": {DEPARTMENT_COLUMN: window.department}})
    sort: list[dict[str, Any]] = []
    for driver in window.explanation.drivers:
        spec = feature_set.feature(driver.feature)
        if spec.kind in ("sum", "max") and spec.field:
            sort.append({spec.field: {"order": "desc", "missing": "_last"}})
            break
    sort.append({"@timestamp": {"order": "asc"}})
    return {
        "size": EVIDENCE_EVENTS,
        "query": {"bool": {"filter": clauses}},
        "sort": sort,
        "_source": False,
        "track_total_hits": False,
    }


def search_evidence(
    client: Elasticsearch, index: str
) -> Callable[[ScoredWindow, FeatureSet], list[str]]:
    """A function giving the ids of a window's events (empty when the search fails)."""

    def evidence(window: ScoredWindow, feature_set: FeatureSet) -> list[str]:
        try:
            response = client.search(
                index=index,
                ignore_unavailable=True,
                allow_no_indices=True,
                **evidence_query(window, feature_set),
            )
        except Exception:  # evidence is a convenience; the alert stands without it
            return []
        return [hit["_id"] for hit in response["hits"]["hits"]]

    return evidence


def train_from_elasticsearch(
    client: Elasticsearch,
    index: str,
    feature_sets: list[FeatureSet],
    start: datetime,
    end: datetime,
    repository: ModelRepository,
    *,
    departments: list[str] | None = None,
    detector: str = DEFAULT_DETECTOR,
    detector_options: dict[str, Any] | None = None,
    rule: ThresholdRule | None = None,
    per_department: bool = True,
    pooled: bool = False,
    baseline_trim: float = DEFAULT_BASELINE_TRIM,
) -> AnomalyRunReport:
    """Extract each feature set's baseline in Elasticsearch and train its models."""
    report = AnomalyRunReport()
    for feature_set in feature_sets:
        try:
            table = extract_features(
                client, index, feature_set, start, end, departments=departments
            )
        except FeatureExtractionError as error:
            report.problems.append(str(error))
            continue
        train_feature_set(
            table,
            feature_set,
            start,
            end,
            repository,
            detector=detector,
            detector_options=detector_options,
            rule=rule,
            per_department=per_department,
            pooled=pooled,
            baseline_trim=baseline_trim,
            report=report,
        )
    return report


def score_elasticsearch_feature_set(
    client: Elasticsearch,
    index: str,
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    model_for: Callable[[str], AnomalyModel],
    *,
    departments: list[str] | None = None,
    excluded_departments: list[str] | None = None,
    explain_top: int = 20,
    report: AnomalyRunReport | None = None,
) -> AnomalyRunReport:
    """Extract one feature set's windows of [start, end) in Elasticsearch and score them."""
    report = report or AnomalyRunReport()
    try:
        table = extract_features(
            client,
            index,
            feature_set,
            start,
            end,
            departments=departments,
            excluded_departments=excluded_departments,
        )
    except FeatureExtractionError as error:
        report.problems.append(str(error))
        return report
    return score_feature_set(table, feature_set, model_for, explain_top=explain_top, report=report)


def elasticsearch_alerts(
    client: Elasticsearch,
    index: str,
    scored: list[ScoredWindow],
    feature_sets: dict[str, FeatureSet],
    resolve: TechniqueResolver,
) -> list[Alert]:
    """Alerts for the scored windows above threshold, with their events in `index` as evidence."""
    return alerts_for(
        scored, feature_sets, resolve, search_evidence(client, index), evidence_index=index
    )


def score_elasticsearch_window(
    client: Elasticsearch,
    index: str,
    feature_sets: list[FeatureSet],
    start: datetime,
    end: datetime,
    repository: ModelRepository,
    alert_store: AlertStore | None,
    *,
    departments: list[str] | None = None,
    explain_top: int = 20,
) -> AnomalyRunReport:
    """Score [start, end) with the saved models; upsert alerts for windows above threshold."""
    report = AnomalyRunReport()
    by_name = {feature_set.name: feature_set for feature_set in feature_sets}
    for feature_set in feature_sets:

        def model_for(department: str, name: str = feature_set.name) -> AnomalyModel:
            return repository.find(name, department)

        score_elasticsearch_feature_set(
            client,
            index,
            feature_set,
            start,
            end,
            model_for,
            departments=departments,
            explain_top=explain_top,
            report=report,
        )
    resolve = TechniqueResolver()
    report.alerts = elasticsearch_alerts(client, index, report.scored, by_name, resolve)
    report.problems.extend(resolve.problems)
    if alert_store is not None and report.alerts:
        alert_store.install()
        report.upserted = alert_store.upsert(report.alerts)
    return report


def window_keys(table: pa.Table) -> list[tuple[str, str, Any]]:
    """(department, entity, window start) of every row, for tests and reports."""
    return list(
        zip(
            table.column(DEPARTMENT_COLUMN).to_pylist(),
            table.column(ENTITY_COLUMN).to_pylist(),
            table.column(WINDOW_COLUMN).to_pylist(),
            strict=True,
        )
    )


# ------------------------------------------------------------------ files


def score_events_offline(
    events: pa.Table,
    feature_sets: list[FeatureSet],
    *,
    baseline_events: pa.Table | None = None,
    detector: str = DEFAULT_DETECTOR,
    detector_options: dict[str, Any] | None = None,
    rule: ThresholdRule | None = None,
    per_department: bool = True,
    baseline_trim: float = DEFAULT_BASELINE_TRIM,
    start: datetime | None = None,
    end: datetime | None = None,
    explain_top: int = 20,
) -> tuple[AnomalyRunReport, dict[str, pa.Table]]:
    """Train on `baseline_events` (or on `events` themselves) and score `events`, no cluster.

    Baseline events also serve as history for `first_seen`. Returns the report and each
    feature set's scored feature table.
    """
    from detection.feature_extraction import compute_features, table_time_range

    report = AnomalyRunReport()
    tables: dict[str, pa.Table] = {}
    history = pa.concat_tables([baseline_events, events]) if baseline_events is not None else events
    for feature_set in feature_sets:
        if events.num_rows == 0:
            report.problems.append(f"{feature_set.name}: no events to score")
            continue
        low, high = table_time_range(events, feature_set)
        low, high = start or low, end or high
        table = compute_features(history, feature_set, low, high)
        if baseline_events is not None and baseline_events.num_rows:
            base_low, base_high = table_time_range(baseline_events, feature_set)
            baseline = compute_features(baseline_events, feature_set, base_low, base_high)
        else:
            base_low, base_high, baseline = low, high, table
        models, _ = train_feature_set(
            baseline,
            feature_set,
            base_low,
            base_high,
            None,
            detector=detector,
            detector_options=detector_options,
            rule=rule,
            per_department=per_department,
            pooled=not per_department,
            baseline_trim=baseline_trim,
            report=report,
        )

        def model_for(
            department: str, found: dict[str, AnomalyModel] = models, name: str = feature_set.name
        ) -> AnomalyModel:
            if department in found:
                return found[department]
            if POOLED in found:
                return found[POOLED]
            raise ModelError(name, department, "no baseline windows for it")

        # train_feature_set counted the baseline windows; count the scored ones instead.
        report.windows[feature_set.name] = 0
        score_feature_set(table, feature_set, model_for, explain_top=explain_top, report=report)
        tables[feature_set.name] = table
    return report, tables
