"""Anomaly models: a detector trained on a baseline, with its metadata, saved and reloaded.

One model per (feature set, department) by default, since departments differ in what is
usual; `POOLED` names a model trained on every department together, the fallback for a
department without its own. Models live under `<home_dir>/models/<feature set>/<department>/
v<version>/` as `detector.joblib` plus `metadata.json` (feature set and its fingerprint,
features, training window, detector and parameters, threshold rule and threshold, version,
library versions). The newest version is used unless one is named.

`detector.joblib` is a pickle: load models only from a models folder you control.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detection.anomaly_detectors import (
    DEFAULT_DETECTOR,
    AnomalyDetector,
    DetectorInputError,
    create_detector,
)
from detection.explain import BaselineProfile, Explanation, explain_window
from detection.feature_extraction import (
    COUNT_COLUMN,
    DEPARTMENT_COLUMN,
    ENTITY_COLUMN,
    FIRST_EVENT_COLUMN,
    LAST_EVENT_COLUMN,
    WINDOW_COLUMN,
    as_baseline,
    feature_matrix,
)
from detection.feature_sets import FeatureSet

POOLED = "_all"
MODEL_FILE = "detector.joblib"
METADATA_FILE = "metadata.json"
VERSION_FOLDER = re.compile(r"^v(\d+)$")
DEFAULT_THRESHOLD_QUANTILE = 0.999
DEFAULT_BASELINE_TRIM = 0.0


class ModelError(RuntimeError):
    """A model that cannot be trained, found or used; carries which one and why."""

    def __init__(self, feature_set: str, department: str, reason: str) -> None:
        super().__init__(f"model {feature_set}/{department}: {reason}")
        self.feature_set = feature_set
        self.department = department
        self.reason = reason


@dataclass(frozen=True)
class ThresholdRule:
    """When a score raises an alert: above this quantile of the baseline's own scores."""

    kind: str = "baseline_quantile"
    quantile: float = DEFAULT_THRESHOLD_QUANTILE

    def __post_init__(self) -> None:
        if self.kind != "baseline_quantile":
            raise ValueError(f"unknown threshold rule {self.kind!r}")
        if not 0.5 <= self.quantile < 1:
            raise ValueError(f"threshold quantile must be in [0.5, 1), not {self.quantile}")

    def threshold(self, training_scores: np.ndarray) -> float:
        """The score at the rule's quantile of the training scores."""
        return float(np.quantile(training_scores, self.quantile))


@dataclass
class ModelMetadata:
    """Everything needed to know what a model is and to use it correctly."""

    feature_set: str
    feature_set_fingerprint: str
    features: list[str]
    entity: str
    window: str
    department: str
    detector: dict[str, Any]
    training_start: str
    training_end: str
    training_rows: int
    trimmed_rows: int
    training_entities: int
    threshold_rule: dict[str, Any]
    threshold: float
    score_median: float
    trained_at: str
    version: int = 0
    libraries: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready metadata."""
        return asdict(self)


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in ("lianfang", "pyod", "scikit-learn", "numpy"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


@dataclass
class AnomalyModel:
    """A fitted detector with the metadata that says what it was trained on."""

    metadata: ModelMetadata
    detector: AnomalyDetector

    @property
    def baseline(self) -> BaselineProfile:
        """The per-feature baseline distribution (for explanations)."""
        profile = getattr(self.detector, "baseline", None)
        if profile is None:
            raise ModelError(self.metadata.feature_set, self.metadata.department, "no baseline")
        return profile

    def normalised(self, scores: np.ndarray) -> np.ndarray:
        """Scores rescaled so the baseline median is 0 and the alert threshold is 1."""
        span = self.metadata.threshold - self.metadata.score_median
        return (np.asarray(scores, float) - self.metadata.score_median) / (
            span if span > 0 else 1.0
        )

    def check_compatible(self, feature_set: FeatureSet) -> None:
        """Refuse a feature set whose definition differs from the one trained on."""
        if feature_set.fingerprint() != self.metadata.feature_set_fingerprint:
            raise ModelError(
                self.metadata.feature_set,
                self.metadata.department,
                "the feature-set definition changed since training; train again",
            )


def train_model(
    table: pa.Table,
    feature_set: FeatureSet,
    department: str,
    training_start: datetime,
    training_end: datetime,
    *,
    detector: str = DEFAULT_DETECTOR,
    detector_options: dict[str, Any] | None = None,
    rule: ThresholdRule | None = None,
    baseline_trim: float = DEFAULT_BASELINE_TRIM,
) -> AnomalyModel:
    """Fit a detector on a department's baseline windows (all departments for POOLED).

    With `baseline_trim` > 0 the detector is fitted twice: the first fit finds the most
    anomalous share of the baseline (incidents that happened during it), the second fit
    leaves them out, so an attack in the baseline does not teach the model it is usual.
    """
    if not 0 <= baseline_trim < 0.5:
        raise ModelError(
            feature_set.name, department, f"baseline_trim {baseline_trim} not in [0, 0.5)"
        )
    rule = rule or ThresholdRule()
    rows = as_baseline(
        table if department == POOLED else department_rows(table, department), feature_set
    )
    features = feature_matrix(rows, feature_set)
    model = create_detector(detector, **(detector_options or {}))
    try:
        model.fit(features)
        trimmed = 0
        if baseline_trim > 0:
            scores = model.training_scores
            keep = scores <= np.quantile(scores, 1 - baseline_trim)
            trimmed = int((~keep).sum())
            if trimmed:
                model = create_detector(detector, **(detector_options or {}))
                model.fit(features[keep])
    except DetectorInputError as error:
        raise ModelError(feature_set.name, department, error.reason) from error
    scores = model.training_scores
    metadata = ModelMetadata(
        feature_set=feature_set.name,
        feature_set_fingerprint=feature_set.fingerprint(),
        features=feature_set.feature_names,
        entity=feature_set.entity,
        window=feature_set.window,
        department=department,
        detector=model.describe(),
        training_start=training_start.astimezone(UTC).isoformat(),
        training_end=training_end.astimezone(UTC).isoformat(),
        training_rows=int(features.shape[0]) - trimmed,
        trimmed_rows=trimmed,
        training_entities=len(set(rows.column(ENTITY_COLUMN).to_pylist())),
        threshold_rule=asdict(rule),
        threshold=rule.threshold(scores),
        score_median=float(np.median(scores)),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        libraries=_library_versions(),
    )
    return AnomalyModel(metadata, model)


def department_rows(table: pa.Table, department: str) -> pa.Table:
    """The rows of one department."""
    return table.filter(pc.equal(table.column(DEPARTMENT_COLUMN), department))


def departments_of(table: pa.Table) -> list[str]:
    """The departments present in a feature table, sorted."""
    return sorted(set(table.column(DEPARTMENT_COLUMN).to_pylist()))


class ModelRepository:
    """Models on disk: `<root>/<feature set>/<department>/v<N>/`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, feature_set: str, department: str) -> Path:
        """Where the versions of one model live."""
        return self.root / _safe(feature_set) / _safe(department)

    def versions(self, feature_set: str, department: str) -> list[int]:
        """The saved versions, oldest first."""
        folder = self.folder(feature_set, department)
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            match = VERSION_FOLDER.match(child.name)
            if match and (child / METADATA_FILE).is_file() and (child / MODEL_FILE).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, model: AnomalyModel) -> Path:
        """Write the model as the next version; returns its folder."""
        meta = model.metadata
        folder = self.folder(meta.feature_set, meta.department)
        versions = self.versions(meta.feature_set, meta.department)
        meta.version = (versions[-1] + 1) if versions else 1
        target = folder / f"v{meta.version}"
        staging = folder / f".v{meta.version}.partial"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        joblib.dump(model.detector, staging / MODEL_FILE)
        (staging / METADATA_FILE).write_text(
            json.dumps(meta.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        staging.rename(target)  # a reader never sees half a model
        return target

    def load(self, feature_set: str, department: str, version: int | None = None) -> AnomalyModel:
        """A saved model (the newest unless `version` is given)."""
        versions = self.versions(feature_set, department)
        if not versions:
            raise ModelError(feature_set, department, f"no trained model under {self.root}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ModelError(feature_set, department, f"no version {chosen} (have {versions})")
        folder = self.folder(feature_set, department) / f"v{chosen}"
        try:
            data = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
            metadata = ModelMetadata(**data)
            detector = joblib.load(folder / MODEL_FILE)
        except (OSError, ValueError, TypeError, EOFError) as error:
            raise ModelError(
                feature_set, department, f"unreadable model in {folder}: {error}"
            ) from error
        return AnomalyModel(metadata, detector)

    def find(self, feature_set: str, department: str) -> AnomalyModel:
        """The department's own model, else the pooled one."""
        if self.versions(feature_set, department):
            return self.load(feature_set, department)
        if self.versions(feature_set, POOLED):
            return self.load(feature_set, POOLED)
        raise ModelError(feature_set, department, f"no trained model under {self.root}")

    def catalogue(self) -> list[ModelMetadata]:
        """The newest metadata of every saved model."""
        found = []
        if not self.root.is_dir():
            return found
        for set_folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for department_folder in sorted(p for p in set_folder.iterdir() if p.is_dir()):
                versions = self.versions(set_folder.name, department_folder.name)
                if versions:
                    text = (department_folder / f"v{versions[-1]}" / METADATA_FILE).read_text(
                        encoding="utf-8"
                    )
                    found.append(ModelMetadata(**json.loads(text)))
        return found


def models_root(home_dir: Path) -> Path:
    """Where models live for a deployment."""
    return home_dir / "models"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


@dataclass
class ScoredWindow:
    """One entity-window with its score, how it compares to the threshold, and why."""

    feature_set: str
    department: str
    entity_type: str
    entity: str
    window_start: datetime
    window_end: datetime
    first_event: datetime
    last_event: datetime
    events: int
    score: float
    normalised_score: float  # 0: the baseline median; 1: the alert threshold
    above_threshold: bool
    features: dict[str, float]
    explanation: Explanation
    model_version: int
    model_department: str = ""  # the model's department, POOLED when one model scored all

    def as_dict(self) -> dict[str, Any]:
        """Plain values for --json."""
        return {
            "feature_set": self.feature_set,
            "department": self.department,
            "entity_type": self.entity_type,
            "entity": self.entity,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "events": self.events,
            "score": round(self.score, 4),
            "normalised_score": round(self.normalised_score, 3),
            "above_threshold": self.above_threshold,
            "features": {name: round(value, 4) for name, value in self.features.items()},
            "explanation": self.explanation.text,
            "techniques": self.explanation.techniques,
            "model_version": self.model_version,
        }


def score_table(
    model: AnomalyModel, feature_set: FeatureSet, table: pa.Table, explain_top: int | None = None
) -> list[ScoredWindow]:
    """Score every row; explain all rows above the threshold (and the `explain_top` highest)."""
    model.check_compatible(feature_set)
    if table.num_rows == 0:
        return []
    features = feature_matrix(table, feature_set)
    scores = model.detector.score(features)
    normalised = model.normalised(scores)
    order = np.argsort(-normalised, kind="stable")
    explained = set(np.flatnonzero(normalised >= 1.0).tolist())
    if explain_top:
        explained.update(order[:explain_top].tolist())
    window = feature_set.window_delta
    columns = {
        name: table.column(name).to_pylist()
        for name in (
            DEPARTMENT_COLUMN,
            ENTITY_COLUMN,
            WINDOW_COLUMN,
            COUNT_COLUMN,
            FIRST_EVENT_COLUMN,
            LAST_EVENT_COLUMN,
        )
    }
    results = []
    for row in order.tolist():
        start = columns[WINDOW_COLUMN][row]
        explanation = (
            explain_window(feature_set, model.baseline, features[row])
            if row in explained
            else Explanation()
        )
        results.append(
            ScoredWindow(
                feature_set=feature_set.name,
                department=columns[DEPARTMENT_COLUMN][row],
                entity_type=feature_set.entity,
                entity=columns[ENTITY_COLUMN][row],
                window_start=start,
                window_end=start + window,
                first_event=columns[FIRST_EVENT_COLUMN][row],
                last_event=columns[LAST_EVENT_COLUMN][row],
                events=int(columns[COUNT_COLUMN][row]),
                score=float(scores[row]),
                normalised_score=float(normalised[row]),
                above_threshold=bool(normalised[row] >= 1.0),
                features=dict(zip(feature_set.feature_names, features[row].tolist(), strict=True)),
                explanation=explanation,
                model_version=model.metadata.version,
                model_department=model.metadata.department,
            )
        )
    return results
