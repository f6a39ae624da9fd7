"""The `anomaly` detector source: each persisted anomaly model scored per complete feature window.

One detector per saved model (feature set x department; the entity type is the feature
set's). A pass over the scheduler window [start, end) scores the feature windows that end
in (start, end]: a window still open at `end` waits for a pass that covers its end, and
the scheduler's overlap re-scores the last complete windows, so late events still count.
Re-scoring is harmless: the alert of an (entity, department, feature window) always has the
same id (detection/alerts.py) and is merged, not duplicated.

Scoring, explanations, severity, risk score, ATT&CK techniques and evidence are those of
`lianfang detect score` (detection/anomaly_scoring.py), so the scheduler and the command
raise the same alert for the same window. A pooled model (`--pooled`) scores the
departments that have no model of their own. A model retrained while the scheduler runs
is picked up at the next pass; models for new feature sets or departments at the next start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from elasticsearch import Elasticsearch

from detection.alerts import Alert
from detection.anomaly_models import (
    POOLED,
    AnomalyModel,
    ModelError,
    ModelMetadata,
    ModelRepository,
    models_root,
)
from detection.anomaly_scoring import (
    RULE_PREFIX,
    TechniqueResolver,
    elasticsearch_alerts,
    score_elasticsearch_feature_set,
)
from detection.detector import DetectionWindow, DetectorContext, DetectorLoad
from detection.feature_extraction import (
    FeatureExtractionError,
    complete_windows,
    departments_with_events,
)
from detection.feature_sets import FeatureSet, load_feature_sets

TRAIN_HINT = (
    "train on a baseline of ordinary activity (a week, say) with "
    "`lianfang detect train --from <baseline start> --to <baseline end>`"
)


class AnomalyScoringError(RuntimeError):
    """A model could not score a window (extraction refused, model unusable)."""


@dataclass
class AnomalyModelDetector:
    """One saved model as a detector: scores its department's complete feature windows."""

    feature_set: FeatureSet
    model: AnomalyModel
    repository: ModelRepository
    client: Elasticsearch
    events_index: str
    resolve: TechniqueResolver
    # For the pooled model: the departments scored by their own models instead.
    excluded_departments: list[str] = field(default_factory=list)

    @property
    def department(self) -> str:
        """The model's department (POOLED for the model over all departments)."""
        return self.model.metadata.department

    @property
    def name(self) -> str:
        """`anomaly.<feature set>`, with `@department` for a department's own model."""
        base = f"{RULE_PREFIX}{self.feature_set.name}"
        return base if self.department == POOLED else f"{base}@{self.department}"

    def run(self, window: DetectionWindow) -> list[Alert]:
        """Alerts for the model's feature windows that end within (window.start, window.end]."""
        span = complete_windows(self.feature_set, window.start, window.end)
        if span is None:
            return []
        model = self._newest_model()
        report = score_elasticsearch_feature_set(
            self.client,
            self.events_index,
            self.feature_set,
            span[0],
            span[1],
            lambda _department: model,
            departments=None if self.department == POOLED else [self.department],
            excluded_departments=self.excluded_departments or None,
            explain_top=0,  # only the windows above the threshold need their reasons
        )
        if report.problems:
            raise AnomalyScoringError("; ".join(report.problems))
        alerts = elasticsearch_alerts(
            self.client,
            self.events_index,
            report.scored,
            {self.feature_set.name: self.feature_set},
            self.resolve,
        )
        # Unresolvable techniques were reported at load; a long-running pass must not
        # collect the same problem again for every alert.
        self.resolve.problems.clear()
        return alerts

    def _newest_model(self) -> AnomalyModel:
        """The loaded model, replaced by a newer saved version when one appeared."""
        versions = self.repository.versions(self.feature_set.name, self.department)
        if versions and versions[-1] > self.model.metadata.version:
            newer = self.repository.load(self.feature_set.name, self.department)
            newer.check_compatible(self.feature_set)
            self.model = newer
        return self.model


def load_detectors(context: DetectorContext) -> DetectorLoad:
    """A detector per saved model; missing or unusable models are problems, not errors."""
    settings = context.settings
    sets = load_feature_sets(settings.anomaly.feature_sets_dir, settings.timezone)
    problems = [f"feature set {problem}" for problem in sets.problems]
    repository = ModelRepository(models_root(settings.home_dir))
    try:
        catalogue = repository.catalogue()
    except (OSError, ValueError, TypeError) as error:
        return DetectorLoad(
            problems=[*problems, f"cannot read the models under {repository.root}: {error}"]
        )
    resolve = TechniqueResolver()
    usable: dict[str, list[AnomalyModel]] = {}
    for metadata in catalogue:
        feature_set = sets.sets.get(metadata.feature_set)
        if feature_set is None:
            problems.append(
                f"model {metadata.feature_set}/{metadata.department}: no feature set of that "
                "name is defined any more; not scored"
            )
            continue
        model = _usable_model(repository, metadata, feature_set, problems)
        if model is not None:
            usable.setdefault(feature_set.name, []).append(model)
    missing = sorted(set(sets.sets) - {metadata.feature_set for metadata in catalogue})
    if missing:
        problems.append(
            f"no trained model under {repository.root} for {', '.join(missing)}, "
            f"so {'these feature sets are' if len(missing) > 1 else 'it is'} not scored: "
            f"{TRAIN_HINT}"
        )
    detectors = []
    for name, models in sorted(usable.items()):
        feature_set = sets.sets[name]
        _check_techniques(feature_set, resolve, problems)
        own = sorted(m.metadata.department for m in models if m.metadata.department != POOLED)
        if len(own) == len(models):  # no pooled model to fall back on
            _report_unmodelled_departments(context, feature_set, own, problems)
        for model in models:
            detectors.append(
                AnomalyModelDetector(
                    feature_set,
                    model,
                    repository,
                    context.client,
                    context.events_index,
                    resolve,
                    excluded_departments=own if model.metadata.department == POOLED else [],
                )
            )
    return DetectorLoad(detectors=detectors, problems=problems)


def _usable_model(
    repository: ModelRepository,
    metadata: ModelMetadata,
    feature_set: FeatureSet,
    problems: list[str],
) -> AnomalyModel | None:
    """The newest version of a model if it loads and fits the current feature set."""
    try:
        model = repository.load(metadata.feature_set, metadata.department)
        model.check_compatible(feature_set)
    except ModelError as error:
        problems.append(f"{error}; not scored")
        return None
    return model


def _report_unmodelled_departments(
    context: DetectorContext, feature_set: FeatureSet, modelled: list[str], problems: list[str]
) -> None:
    """Name the departments with recent events (within the lookback) that no model scores."""
    end = datetime.now(UTC)
    try:
        present = departments_with_events(
            context.client,
            context.events_index,
            feature_set,
            end - feature_set.lookback_delta,
            end,
        )
    except FeatureExtractionError as error:
        problems.append(f"cannot list the departments to score: {error}")
        return
    unmodelled = [department for department in present if department not in modelled]
    if unmodelled:
        problems.append(
            f"feature set {feature_set.name}: no model for {', '.join(unmodelled)} (events in "
            f"the last {feature_set.lookback}), so their windows are not scored: train with "
            "`lianfang detect train` (their own models) or `--pooled` (one for every department)"
        )


def _check_techniques(
    feature_set: FeatureSet, resolve: TechniqueResolver, problems: list[str]
) -> None:
    """Report once, at load, declared techniques the ATT&CK catalogue does not resolve."""
    declared = sorted({f.technique for f in feature_set.features if f.technique})
    before = len(resolve.problems)
    resolve(declared)
    problems.extend(
        f"feature set {feature_set.name}: {problem} (alerts go out without it)"
        for problem in resolve.problems[before:]
    )
