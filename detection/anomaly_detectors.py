"""Anomaly detectors behind one protocol (fit, score, explain), found in a registry by name.

`ecod`, `iforest`, `copod`, `hbos`, `lof` and `knn` wrap the pyod detectors with their
default parameters; `ensemble` averages several of them after rescaling each one's scores
by its own training scores (median 0, 99th percentile 1), so that no detector's scale
dominates.

The default configuration (`DEFAULT_DETECTOR`) was chosen by measurement, on NSL-KDD
(benchmarks/anomaly_nsl_kdd.py) and on the demo days against their ground truth (`detect
eval --demo`): the rescaled mean of ECOD, COPOD and KNN on log-scaled features. ECOD and
COPOD judge each feature's tails, and are robust to a contaminated baseline; KNN sees how
far beyond the baseline a window lies (rank-based detectors cannot tell 1.5 million rows
from 2,000 once both exceed every baseline value). IForest added nothing on either
measurement and made the result depend on a random seed. Counts and byte volumes are
heavy-tailed; `log-minmax` scaling (sign(x)·log1p|x|, then min-max on the training range)
keeps one huge value from flattening every other window onto zero for KNN. ECOD and
COPOD only use ranks, so the scaling does not change them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from detection.explain import BaselineProfile

Scaling = Literal["none", "minmax", "log-minmax"]
SCALINGS: tuple[str, ...] = ("none", "minmax", "log-minmax")
DEFAULT_DETECTOR = "ensemble"
DEFAULT_SCALING: Scaling = "log-minmax"
DEFAULT_ENSEMBLE_MEMBERS: tuple[str, ...] = ("ecod", "copod", "knn")
# Each member's scores are rescaled by its own baseline: median -> 0, this quantile -> 1.
# Unlike the mean and standard deviation, this ignores how heavy the member's extreme
# tail is (KNN distances in a contaminated baseline), so no member dominates the mean.
ENSEMBLE_SCALE_QUANTILE = 0.99
MIN_TRAINING_ROWS = 10
RANDOM_STATE = 0  # IForest is randomised; a fixed seed makes training reproducible
# Larger baselines are sampled (seeded) for fitting: KNN's cost per scored window grows
# with its reference set (60,000 windows against 50,000: 6 s; against 20,000: about 2 s),
# and 20,000 windows describe a department's usual behaviour well enough. The baseline
# profile behind explanations always uses every row.
MAX_TRAINING_ROWS = 20_000


class UnknownDetector(KeyError):
    """No detector has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"no anomaly detector {self.name!r} (known: {', '.join(self.known)})"


class DetectorInputError(ValueError):
    """Features a detector cannot use: wrong shape, too few rows, or not fitted yet."""

    def __init__(self, detector: str, reason: str) -> None:
        super().__init__(f"{detector}: {reason}")
        self.detector = detector
        self.reason = reason


class NotFittedError(DetectorInputError, AttributeError):
    """Training scores asked of a detector that was never fitted (an AttributeError, so
    `hasattr` and protocol checks see the attribute as absent rather than failing)."""


@runtime_checkable
class AnomalyDetector(Protocol):
    """Learns what usual windows look like; scores new ones (higher is more anomalous)."""

    name: str

    def fit(self, features: np.ndarray) -> None:
        """Learn from baseline windows (rows x features)."""
        ...

    def score(self, features: np.ndarray) -> np.ndarray:
        """One anomaly score per row; higher is more anomalous."""
        ...

    def explain(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions (rows x features): how far each value is in its tail."""
        ...

    @property
    def training_scores(self) -> np.ndarray:
        """The scores of the baseline windows (the reference for thresholds)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for model metadata."""
        ...


@dataclass
class FeatureScaling:
    """Per-column scaling learnt on the training rows."""

    kind: Scaling = DEFAULT_SCALING
    low: np.ndarray | None = None
    span: np.ndarray | None = None

    @staticmethod
    def _shape(values: np.ndarray, kind: str) -> np.ndarray:
        if kind == "log-minmax":
            return np.sign(values) * np.log1p(np.abs(values))
        return values

    def fit(self, features: np.ndarray) -> FeatureScaling:
        """Learn the training range of each (log-shaped) column."""
        if self.kind == "none":
            return self
        shaped = self._shape(features, self.kind)
        self.low = shaped.min(axis=0)
        span = shaped.max(axis=0) - self.low
        self.span = np.where(span > 0, span, 1.0)  # a constant column stays constant
        return self

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale rows with the learnt ranges (values beyond them fall outside [0, 1])."""
        if self.kind == "none":
            return features
        if self.low is None or self.span is None:
            raise DetectorInputError("scaling", "transform before fit")
        return (self._shape(features, self.kind) - self.low) / self.span


def _matrix(features: np.ndarray, detector: str) -> np.ndarray:
    data = np.asarray(features, dtype=float)
    if data.ndim != 2:
        raise DetectorInputError(detector, f"expected rows x features, got shape {data.shape}")
    return np.nan_to_num(data, nan=0.0, posinf=np.finfo(float).max / 1e6, neginf=0.0)


def training_sample(features: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` rows, drawn without replacement by a fixed seed (all rows if fewer)."""
    if features.shape[0] <= limit:
        return features
    picks = np.random.default_rng(RANDOM_STATE).choice(features.shape[0], limit, replace=False)
    return features[np.sort(picks)]


def _pyod_model(name: str, params: dict[str, Any], rows: int) -> Any:
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.lof import LOF

    options = dict(params)
    if name in ("knn", "lof"):
        # Neighbour methods need fewer neighbours than rows; small baselines get fewer.
        default = 5 if name == "knn" else 20
        options["n_neighbors"] = max(1, min(int(options.get("n_neighbors", default)), rows - 1))
    if name == "iforest":
        options.setdefault("random_state", RANDOM_STATE)
    classes: dict[str, Callable[..., Any]] = {
        "ecod": ECOD,
        "iforest": IForest,
        "copod": COPOD,
        "hbos": HBOS,
        "lof": LOF,
        "knn": KNN,
    }
    return classes[name](**options)


@dataclass
class EmpiricalTails:
    """ECOD and COPOD (pyod's formulas) with new rows scored against the training rows alone.

    pyod's `decision_function` for these two appends the scored batch to the training data
    and recomputes every distribution, so a window's score depends on what else is scored
    with it, and a larger batch shifts every score. Here each row is placed in the training
    distributions as if it were scored alone: exactly pyod's result for a batch of one row.
    The skewness that picks each feature's tail comes from the unscaled training values
    (a log scaling would flip it for counts, and these scores only depend on ranks).
    """

    kind: str  # "ecod" or "copod"
    sorted_columns: np.ndarray  # features x training rows, each row ascending
    skew_signs: np.ndarray

    @classmethod
    def fit(cls, kind: str, scaled: np.ndarray, unscaled: np.ndarray) -> EmpiricalTails:
        """Keep the sorted training columns and the sign of each column's skewness."""
        from scipy.stats import skew

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            signs = np.sign(np.nan_to_num(skew(unscaled, axis=0)))
        return cls(kind, np.sort(scaled, axis=0).T.copy(), signs)

    def score(self, features: np.ndarray, training: bool = False) -> np.ndarray:
        """Sum over features of the tail surprise; `training` rows are already counted."""
        rows = self.sorted_columns.shape[1]
        extra = 0 if training else 1  # a new row joins the distribution it is placed in
        left = np.empty_like(features, dtype=float)
        right = np.empty_like(features, dtype=float)
        for column, reference in enumerate(self.sorted_columns):
            values = features[:, column]
            left[:, column] = np.searchsorted(reference, values, side="right") + extra
            right[:, column] = rows - np.searchsorted(reference, values, side="left") + extra
        upper_left = -np.log(left / (rows + extra))
        upper_right = -np.log(right / (rows + extra))
        skewed = upper_left * -np.sign(self.skew_signs - 1) + upper_right * np.sign(
            self.skew_signs + 1
        )
        if self.kind == "ecod":
            combined = np.maximum(skewed, np.maximum(upper_left, upper_right))
        else:
            combined = np.maximum(skewed, (upper_left + upper_right) / 2)
        return combined.sum(axis=1)


def _training_matrix(features: np.ndarray, name: str) -> np.ndarray:
    """The training rows as a matrix, refused when there are too few to learn from."""
    data = _matrix(features, name)
    if data.shape[0] < MIN_TRAINING_ROWS:
        raise DetectorInputError(
            name, f"{data.shape[0]} training rows; at least {MIN_TRAINING_ROWS} needed"
        )
    return data


def _baseline_profile(data: np.ndarray) -> BaselineProfile:
    """The per-feature baseline that explanations compare against (unscaled values)."""
    return BaselineProfile.fit(data, [f"x{i}" for i in range(data.shape[1])])


def _explain(baseline: BaselineProfile | None, features: np.ndarray, name: str) -> np.ndarray:
    """Two-sided tail surprise of each feature against the training baseline."""
    if baseline is None:
        raise DetectorInputError(name, "explain before fit")
    data = _matrix(features, name)
    return baseline.surprise(data, ["both"] * data.shape[1])


def _fitted_scores(scores: np.ndarray | None, name: str) -> np.ndarray:
    """The training rows' scores, or NotFittedError before fit."""
    if scores is None:
        raise NotFittedError(name, "not fitted")
    return scores


@dataclass
class PyodDetector:
    """One pyod detector with its default parameters (unless given) and a feature scaling."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    scaling: Scaling = DEFAULT_SCALING
    max_training_rows: int = MAX_TRAINING_ROWS
    keep_baseline: bool = True  # ensemble members leave the profile to the ensemble
    # ECOD/COPOD: score rows against the training data alone (see EmpiricalTails); False
    # keeps pyod's batch rescoring, as the reference benchmark figures were measured.
    batch_independent: bool = True
    tails: EmpiricalTails | None = None
    model: Any = None
    scaler: FeatureScaling | None = None
    baseline: BaselineProfile | None = None
    _training_scores: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> None:
        """Fit the scaling, the pyod model and the baseline profile on the training rows."""
        data = _training_matrix(features, self.name)
        self.scaler = FeatureScaling(self.scaling).fit(data)
        sample = training_sample(data, self.max_training_rows)
        scaled = self.scaler.transform(sample)
        if self.batch_independent and self.name in ("ecod", "copod"):
            self.tails = EmpiricalTails.fit(self.name, scaled, sample)
            self._training_scores = self.tails.score(scaled, training=True)
        else:
            self.model = _pyod_model(self.name, self.params, sample.shape[0])
            with warnings.catch_warnings():
                # Constant columns make scipy's skewness warn; pyod copes with them.
                warnings.simplefilter("ignore", RuntimeWarning)
                self.model.fit(scaled)
            self._training_scores = np.asarray(self.model.decision_scores_, dtype=float)
        if self.keep_baseline:
            self.baseline = _baseline_profile(data)

    def score(self, features: np.ndarray) -> np.ndarray:
        """The pyod decision function on scaled rows."""
        if (self.model is None and self.tails is None) or self.scaler is None:
            raise DetectorInputError(self.name, "score before fit")
        data = _matrix(features, self.name)
        if data.shape[0] == 0:
            return np.zeros(0)
        if self.tails is not None:
            return self.tails.score(self.scaler.transform(data))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(self.model.decision_function(self.scaler.transform(data)), float)

    def explain(self, features: np.ndarray) -> np.ndarray:
        """Two-sided baseline tail surprise per feature."""
        return _explain(self.baseline, features, self.name)

    @property
    def training_scores(self) -> np.ndarray:
        """Scores of the training rows."""
        return _fitted_scores(self._training_scores, self.name)

    def describe(self) -> dict[str, Any]:
        """Name, parameters and scaling."""
        return {
            "name": self.name,
            "params": dict(self.params),
            "scaling": self.scaling,
            "batch_independent": self.batch_independent,
        }


@dataclass
class EnsembleDetector:
    """The mean of member scores, each rescaled by its own training scores (median 0, q99 1)."""

    members: list[PyodDetector]
    scaling: Scaling = DEFAULT_SCALING
    name: str = "ensemble"
    max_training_rows: int = MAX_TRAINING_ROWS
    baseline: BaselineProfile | None = None
    centres: np.ndarray | None = None
    spreads: np.ndarray | None = None
    _training_scores: np.ndarray | None = None

    def fit(self, features: np.ndarray) -> None:
        """Fit every member on the shared scaling and learn each one's score scale."""
        data = _training_matrix(features, self.name)
        # One sample for every member, so their training scores describe the same rows;
        # each member scales it the same way (ECOD and COPOD also read the unscaled skew).
        sample = training_sample(data, self.max_training_rows)
        for member in self.members:
            member.fit(sample)
        raw = np.column_stack([member.training_scores for member in self.members])
        self.centres = np.median(raw, axis=0)
        spreads = np.quantile(raw, ENSEMBLE_SCALE_QUANTILE, axis=0) - self.centres
        self.spreads = np.where(spreads > 0, spreads, 1.0)
        self._training_scores = ((raw - self.centres) / self.spreads).mean(axis=1)
        self.baseline = _baseline_profile(data)

    def score(self, features: np.ndarray) -> np.ndarray:
        """The mean of the members' normalised scores."""
        if self.centres is None or self.spreads is None:
            raise DetectorInputError(self.name, "score before fit")
        data = _matrix(features, self.name)
        if data.shape[0] == 0:
            return np.zeros(0)
        raw = np.column_stack([member.score(data) for member in self.members])
        return ((raw - self.centres) / self.spreads).mean(axis=1)

    def explain(self, features: np.ndarray) -> np.ndarray:
        """Two-sided baseline tail surprise per feature (on the unscaled values)."""
        return _explain(self.baseline, features, self.name)

    @property
    def training_scores(self) -> np.ndarray:
        """Normalised ensemble scores of the training rows."""
        return _fitted_scores(self._training_scores, self.name)

    def describe(self) -> dict[str, Any]:
        """Members, their parameters, and the shared scaling."""
        return {
            "name": self.name,
            "scaling": self.scaling,
            "members": [member.describe() for member in self.members],
            "combination": (
                "mean of member scores rescaled by their training scores: "
                f"median 0, {ENSEMBLE_SCALE_QUANTILE:g} quantile 1"
            ),
        }


PYOD_DETECTORS: tuple[str, ...] = ("ecod", "iforest", "copod", "hbos", "lof", "knn")


def _single(name: str) -> Callable[..., AnomalyDetector]:
    def build(
        scaling: Scaling = DEFAULT_SCALING,
        max_training_rows: int = MAX_TRAINING_ROWS,
        batch_independent: bool = True,
        **params: Any,
    ) -> AnomalyDetector:
        return PyodDetector(
            name,
            params=params,
            scaling=scaling,
            max_training_rows=max_training_rows,
            batch_independent=batch_independent,
        )

    return build


def _ensemble(
    members: tuple[str, ...] | list[str] = DEFAULT_ENSEMBLE_MEMBERS,
    scaling: Scaling = DEFAULT_SCALING,
    max_training_rows: int = MAX_TRAINING_ROWS,
    random_state: int = RANDOM_STATE,
) -> AnomalyDetector:
    unknown = [name for name in members if name not in PYOD_DETECTORS]
    if unknown or not members:
        raise UnknownDetector(",".join(unknown) or "(no members)", list(PYOD_DETECTORS))
    return EnsembleDetector(
        [
            PyodDetector(
                name,
                params={"random_state": random_state} if name == "iforest" else {},
                scaling=scaling,
                keep_baseline=False,
            )
            for name in members
        ],
        scaling,
        max_training_rows=max_training_rows,
    )


DETECTORS: dict[str, Callable[..., AnomalyDetector]] = {
    **{name: _single(name) for name in PYOD_DETECTORS},
    "ensemble": _ensemble,
}


def available_detectors() -> list[str]:
    """Detector names, in registry order."""
    return list(DETECTORS)


def create_detector(name: str = DEFAULT_DETECTOR, **options: Any) -> AnomalyDetector:
    """A fresh, unfitted detector by name; options are its parameters (and `scaling`)."""
    if name not in DETECTORS:
        raise UnknownDetector(name, available_detectors())
    scaling = options.get("scaling", DEFAULT_SCALING)
    if scaling not in SCALINGS:
        raise DetectorInputError(name, f"scaling {scaling!r}: expected one of {SCALINGS}")
    return DETECTORS[name](**options)
