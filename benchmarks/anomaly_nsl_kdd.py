"""Anomaly detectors on NSL-KDD: ROC-AUC per detector, and the default configuration's ratio.

Train on `KDDTrain+_20Percent`, score `KDDTest+` (categoricals one-hot on the training
categories), in two settings: trained on the whole (contaminated, 47% attacks) training
file, and on its normal rows only. Three groups of runs in the same process:

* the reference protocol: each pyod detector with its default parameters, min-max scaling,
  and pyod's own batch scoring (ECOD 0.91 / IForest 0.88 contaminated, 0.935 / 0.94 on
  normal rows are the reference figures);
* the same detectors with Lianfang's scaling (log1p then min-max) and batch-independent
  scoring, to show how much of the gain the scaling alone brings;
* the default configuration (detection/anomaly_detectors.py: DEFAULT_DETECTOR).

Goal (detection issue): the default configuration beats the best single pyod detector
with default parameters measured in the same run, i.e. the printed ratio is > 1.0.
IForest is randomised; `--seeds N` repeats it (and the default, which contains it) with N
seeds and reports the mean and spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from detection.anomaly_detectors import (
    DEFAULT_DETECTOR,
    PYOD_DETECTORS,
    RANDOM_STATE,
    create_detector,
)
from detection.evaluation import measure
from detection.labelled_data import LabelledSplit, load_nsl_kdd

DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nsl-kdd"
ALL_ROWS = 10**9  # no training sample: the reference protocol fits on every row
REFERENCE = {"scaling": "minmax", "batch_independent": False, "max_training_rows": ALL_ROWS}
LIANFANG_SCALING = {
    "scaling": "log-minmax",
    "batch_independent": True,
    "max_training_rows": ALL_ROWS,
}


def run(
    split: LabelledSplit, normal_only: bool, name: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Fit, score the test rows, and measure ranking quality."""
    detector = create_detector(name, **options)
    training = split.normal_train_features if normal_only else split.train_features
    started = time.perf_counter()
    detector.fit(training)
    scores = detector.score(split.test_features)
    seconds = time.perf_counter() - started
    quality = measure(split.test_labels, scores, threshold=float(scores.max()) + 1)
    return {"roc_auc": quality.roc_auc, "pr_auc": quality.pr_auc, "seconds": seconds}


def seeded(
    split: LabelledSplit, normal_only: bool, name: str, options: dict[str, Any], seeds: int
) -> dict[str, Any]:
    """One run per seed (IForest and the default only; the others are deterministic)."""
    if seeds <= 1 or name not in ("iforest", DEFAULT_DETECTOR):
        return run(split, normal_only, name, options)
    key = "random_state"
    runs = [run(split, normal_only, name, {**options, key: RANDOM_STATE + s}) for s in range(seeds)]
    aucs = [r["roc_auc"] for r in runs]
    return {
        "roc_auc": statistics.mean(aucs),
        "roc_auc_sd": statistics.stdev(aucs),
        "roc_auc_min": min(aucs),
        "roc_auc_max": max(aucs),
        "pr_auc": statistics.mean(r["pr_auc"] for r in runs),
        "seconds": statistics.mean(r["seconds"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", type=Path, default=DATASET, help="the NSL-KDD folder")
    parser.add_argument("--seeds", type=int, default=1, help="IForest seeds to average")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    if not (arguments.dataset / "KDDTest+.txt").is_file():
        print(f"NSL-KDD not found under {arguments.dataset}: nothing to measure")
        return
    split = load_nsl_kdd(arguments.dataset)
    report: dict[str, Any] = {
        "train_rows": int(split.train_features.shape[0]),
        "train_anomaly_share": round(float(split.train_labels.mean()), 3),
        "test_rows": int(split.test_features.shape[0]),
        "features": len(split.feature_names),
        "settings": {},
    }
    for normal_only in (False, True):
        setting = "normal rows only" if normal_only else "contaminated"
        reference = {
            name: seeded(split, normal_only, name, REFERENCE, arguments.seeds)
            for name in PYOD_DETECTORS
        }
        scaled = {
            name: seeded(split, normal_only, name, LIANFANG_SCALING, arguments.seeds)
            for name in PYOD_DETECTORS
        }
        default = seeded(split, normal_only, DEFAULT_DETECTOR, {}, arguments.seeds)
        best_name = max(reference, key=lambda name: reference[name]["roc_auc"])
        best_scaled = max(scaled, key=lambda name: scaled[name]["roc_auc"])
        report["settings"][setting] = {
            "pyod_defaults_minmax": reference,
            "lianfang_scaling": scaled,
            "default": {"detector": DEFAULT_DETECTOR, **default},
            "best_single": {"detector": best_name, "roc_auc": reference[best_name]["roc_auc"]},
            "ratio": default["roc_auc"] / reference[best_name]["roc_auc"],
            "best_single_same_scaling": {
                "detector": best_scaled,
                "roc_auc": scaled[best_scaled]["roc_auc"],
            },
            "ratio_same_scaling": default["roc_auc"] / scaled[best_scaled]["roc_auc"],
        }
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        show(report, arguments.seeds)
    ratios = [setting["ratio"] for setting in report["settings"].values()]
    sys.exit(0 if all(ratio > 1.0 for ratio in ratios) else 1)


def show(report: dict[str, Any], seeds: int) -> None:
    """The figures for people."""
    print(
        f"NSL-KDD: train {report['train_rows']:,} rows ({report['train_anomaly_share']:.0%} attacks), "
        f"test {report['test_rows']:,} rows, {report['features']} features"
        + (f"; IForest and the default averaged over {seeds} seeds" if seeds > 1 else "")
    )
    for setting, figures in report["settings"].items():
        print(f"\ntrained on: {setting}")
        print(f"  {'detector':<10} {'pyod defaults, min-max':>24} {'log1p + min-max':>18}")
        for name in PYOD_DETECTORS:
            left, right = figures["pyod_defaults_minmax"][name], figures["lianfang_scaling"][name]
            spread = f" ±{left['roc_auc_sd']:.4f}" if "roc_auc_sd" in left else ""
            print(
                f"  {name:<10} {left['roc_auc']:>16.4f}{spread:<8} {right['roc_auc']:>18.4f}"
                f"   ({left['seconds']:.1f} s / {right['seconds']:.1f} s)"
            )
        default = figures["default"]
        spread = f" ±{default['roc_auc_sd']:.4f}" if "roc_auc_sd" in default else ""
        print(
            f"  default ({default['detector']}): ROC-AUC {default['roc_auc']:.4f}{spread}, "
            f"PR-AUC {default['pr_auc']:.4f} ({default['seconds']:.1f} s)"
        )
        best = figures["best_single"]
        verdict = "beats" if figures["ratio"] > 1.0 else "does NOT beat"
        print(
            f"  the default {verdict} the best single pyod detector with default parameters "
            f"({best['detector']} {best['roc_auc']:.4f}): ratio {figures['ratio']:.4f}"
        )
        same = figures["best_single_same_scaling"]
        print(
            f"  against the best single detector with the same scaling "
            f"({same['detector']} {same['roc_auc']:.4f}): ratio {figures['ratio_same_scaling']:.4f}"
        )


if __name__ == "__main__":
    main()
