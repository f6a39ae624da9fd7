"""Measured quality: precision, recall, ROC-AUC and PR-AUC of scores against labels.

Ranking quality (ROC-AUC, PR-AUC as average precision) needs only scores; precision and
recall are at a threshold, here the detector's threshold rule applied to its training
scores (what would have raised alerts), so they describe the deployed behaviour.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from detection.anomaly_detectors import create_detector
from detection.labelled_data import LabelledSplit


class EvaluationError(ValueError):
    """Labels and scores that cannot be measured (one class only, lengths differ)."""


@dataclass(frozen=True)
class DetectionQuality:
    """How well scores separate anomalies from normal rows."""

    roc_auc: float
    pr_auc: float
    precision: float
    recall: float
    threshold: float
    positives: int
    negatives: int
    flagged: int

    def as_dict(self) -> dict[str, Any]:
        """Rounded figures for reports."""
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in asdict(self).items()
        }


def measure(labels: np.ndarray, scores: np.ndarray, threshold: float) -> DetectionQuality:
    """ROC-AUC, PR-AUC, and precision/recall of `score >= threshold` (labels: True = anomaly)."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=float)
    if truth.shape != values.shape:
        raise EvaluationError(f"{truth.shape[0]} labels but {values.shape[0]} scores")
    positives = int(truth.sum())
    negatives = int((~truth).sum())
    if positives == 0 or negatives == 0:
        raise EvaluationError(
            f"need both classes: {positives} anomalies and {negatives} normal rows"
        )
    flagged = values >= threshold
    true_positives = int((flagged & truth).sum())
    return DetectionQuality(
        roc_auc=float(roc_auc_score(truth, values)),
        pr_auc=float(average_precision_score(truth, values)),
        precision=true_positives / int(flagged.sum()) if flagged.any() else 0.0,
        recall=true_positives / positives,
        threshold=float(threshold),
        positives=positives,
        negatives=negatives,
        flagged=int(flagged.sum()),
    )


@dataclass(frozen=True)
class DetectorRun:
    """One detector configuration measured on one split."""

    detector: str
    options: dict[str, Any]
    training: str  # "contaminated" (all training rows) or "normal" (normal rows only)
    quality: DetectionQuality
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """Plain values for --json."""
        return {
            "detector": self.detector,
            "options": self.options,
            "training": self.training,
            **self.quality.as_dict(),
            "seconds": round(self.seconds, 2),
        }


def evaluate_detector(
    split: LabelledSplit,
    detector: str,
    options: dict[str, Any] | None = None,
    *,
    normal_only: bool = False,
    threshold_quantile: float = 0.995,
) -> DetectorRun:
    """Fit on the training rows (or their normal rows), score the test rows, measure."""
    options = dict(options or {})
    model = create_detector(detector, **options)
    started = time.perf_counter()
    training = split.normal_train_features if normal_only else split.train_features
    model.fit(training)
    scores = model.score(split.test_features)
    seconds = time.perf_counter() - started
    threshold = float(np.quantile(model.training_scores, threshold_quantile))
    return DetectorRun(
        detector=detector,
        options=options,
        training="normal" if normal_only else "contaminated",
        quality=measure(split.test_labels, scores, threshold),
        seconds=seconds,
    )
