"""Anomaly detectors, models and explanations: the protocol, persistence, wording, metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from detection.anomaly_detectors import (
    DEFAULT_DETECTOR,
    AnomalyDetector,
    DetectorInputError,
    UnknownDetector,
    available_detectors,
    create_detector,
)
from detection.anomaly_models import (
    POOLED,
    ModelError,
    ModelRepository,
    ThresholdRule,
    score_table,
    train_model,
)
from detection.anomaly_scoring import TechniqueResolver, alert_for, rank_entities
from detection.evaluation import EvaluationError, measure
from detection.explain import BaselineProfile, explain_window, format_bytes, percentile_phrase
from detection.feature_extraction import feature_table_schema
from detection.feature_sets import FeatureSet, load_feature_sets
from detection.labelled_data import binary_labels, labelled_split

DAY = datetime(2026, 11, 26, tzinfo=UTC)


def usual_windows(rows: int, seed: int = 1) -> np.ndarray:
    """Correlated, heavy-tailed counts and volumes, like real entity-windows."""
    rng = np.random.default_rng(seed)
    connections = rng.poisson(20, rows) + 1
    return np.column_stack(
        [
            connections,
            connections * rng.lognormal(8, 0.5, rows),
            rng.poisson(5, rows),
            rng.uniform(0, 0.1, rows),
        ]
    )


@pytest.mark.parametrize("name", available_detectors())
def test_every_detector_follows_the_protocol_and_ranks_outliers_first(name: str) -> None:
    detector = create_detector(name)
    training = usual_windows(300)
    detector.fit(training)
    assert isinstance(detector, AnomalyDetector)  # training_scores exist once fitted
    assert detector.training_scores.shape == (300,)
    outliers = np.array([[400, 400 * 3e6, 90, 0.9], [1, 5e9, 0, 0.0]])
    scores = detector.score(np.vstack([usual_windows(50, seed=2), outliers]))
    assert scores.shape == (52,)
    assert set(np.argsort(-scores)[:2].tolist()) == {50, 51}
    contributions = detector.explain(outliers)
    assert contributions.shape == (2, 4)
    assert contributions[1, 1] > contributions[1, 2]  # 5 GB is the odd value, not 0 ports
    assert detector.describe()["name"] == name


@pytest.mark.parametrize("name", ["ecod", "copod"])
def test_tail_detectors_score_each_row_as_pyod_scores_it_alone(name: str) -> None:
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD

    training = usual_windows(200)
    detector = create_detector(name, scaling="minmax")
    detector.fit(training)
    scaled = detector.scaler.transform
    reference = {"ecod": ECOD, "copod": COPOD}[name]().fit(scaled(training))
    assert np.allclose(detector.training_scores, reference.decision_scores_)
    probe = usual_windows(6, seed=4) * np.array([1, 3, 1, 2])
    alone = [reference.decision_function(scaled(row[None]))[0] for row in probe]
    assert np.allclose(detector.score(probe), alone)
    # pyod rescoring a batch lets its rows change each other's scores; here they cannot.
    assert np.allclose(detector.score(probe)[:2], detector.score(probe[:2]))
    assert not np.allclose(reference.decision_function(scaled(probe))[:2], alone[:2])


def test_detector_errors_name_the_detector_and_the_reason() -> None:
    with pytest.raises(UnknownDetector, match="known: ecod"):
        create_detector("autoencoder")
    with pytest.raises(DetectorInputError, match="training rows"):
        create_detector("ecod").fit(usual_windows(5))
    with pytest.raises(DetectorInputError, match="before fit"):
        create_detector("iforest").score(usual_windows(20))
    with pytest.raises(DetectorInputError, match="scaling"):
        create_detector("knn", scaling="zscore")


def test_ensemble_normalises_members_and_is_reproducible() -> None:
    first, second = create_detector(), create_detector()
    assert DEFAULT_DETECTOR == "ensemble"
    training = usual_windows(400)
    first.fit(training)
    second.fit(training)
    probe = usual_windows(30, seed=3)
    assert np.allclose(first.score(probe), second.score(probe))
    # Each member's training scores are rescaled to median 0 and 99th percentile 1.
    members = first.members
    for member, centre, spread in zip(members, first.centres, first.spreads, strict=True):
        rescaled = (member.training_scores - centre) / spread
        assert np.median(rescaled) == pytest.approx(0) and np.quantile(
            rescaled, 0.99
        ) == pytest.approx(1)
    assert [m["name"] for m in first.describe()["members"]] == ["ecod", "copod", "knn"]


def test_constant_and_non_finite_columns_do_not_break_fitting() -> None:
    training = np.column_stack([usual_windows(50)[:, 0], np.zeros(50)])
    training[3, 0] = np.nan
    detector = create_detector()
    detector.fit(training)
    assert np.all(np.isfinite(detector.score(np.array([[np.inf, 1.0], [20, 0.0]]))))


# ------------------------------------------------------------------ models


def network() -> FeatureSet:
    return load_feature_sets(timezone="Asia/Shanghai").get("network_source")


def feature_table(
    feature_set: FeatureSet, values: np.ndarray, department: str, start: datetime
) -> pa.Table:
    rows = values.shape[0]
    windows = [start + timedelta(hours=i % 24) for i in range(rows)]
    columns: dict[str, object] = {
        "organization.id": [department] * rows,
        "entity": [f"10.0.{i // 24}.{i % 24}" for i in range(rows)],
        "window_start": windows,
        "event_count": values[:, 0].astype(int).tolist(),
        "first_event": windows,
        "last_event": [w + timedelta(minutes=59) for w in windows],
    }
    for position, name in enumerate(feature_set.feature_names):
        columns[name] = values[:, position].astype(float)
    return pa.Table.from_pydict(columns, schema=feature_table_schema(feature_set))


def network_windows(rows: int, seed: int = 1) -> np.ndarray:
    """Usual network_source windows: connections, bytes out/in, destinations, ports, ratios."""
    rng = np.random.default_rng(seed)
    connections = rng.poisson(15, rows) + 1
    return np.column_stack(
        [
            connections,
            connections * rng.lognormal(7.5, 0.4, rows),
            connections * rng.lognormal(9, 0.4, rows),
            np.minimum(connections, rng.poisson(8, rows) + 1),
            rng.integers(1, 5, rows),
            rng.uniform(0, 0.05, rows),
            rng.uniform(0, 1, rows).round(),
            (rng.uniform(0, 1, rows) < 0.02).astype(float),
        ]
    )


def test_models_round_trip_with_their_metadata(tmp_path: Path) -> None:
    feature_set = network()
    baseline = feature_table(feature_set, network_windows(480), "finance", DAY)
    model = train_model(
        baseline, feature_set, "finance", DAY, DAY + timedelta(days=1), detector="ecod"
    )
    repository = ModelRepository(tmp_path / "models")
    folder = repository.save(model)
    assert folder.name == "v1" and (folder / "metadata.json").is_file()
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["feature_set"] == "network_source"
    assert metadata["features"] == feature_set.feature_names
    assert metadata["training_start"].startswith("2026-11-26T00:00")
    assert metadata["threshold_rule"] == {"kind": "baseline_quantile", "quantile": 0.999}
    assert metadata["detector"]["name"] == "ecod" and metadata["training_rows"] == 480
    loaded = repository.load("network_source", "finance")
    probe = feature_table(feature_set, network_windows(40, seed=9), "finance", DAY)
    before = [w.score for w in score_table(model, feature_set, probe)]
    after = [w.score for w in score_table(loaded, feature_set, probe)]
    assert before == after
    assert repository.save(model).name == "v2"
    assert repository.versions("network_source", "finance") == [1, 2]
    assert [m.version for m in repository.catalogue()] == [2]
    with pytest.raises(ModelError, match="no trained model"):
        repository.find("network_source", "energy")
    pooled = train_model(
        baseline, feature_set, POOLED, DAY, DAY + timedelta(days=1), detector="hbos"
    )
    repository.save(pooled)
    assert repository.find("network_source", "energy").metadata.department == POOLED


def test_a_model_refuses_a_changed_feature_set_and_bad_rules() -> None:
    feature_set = network()
    baseline = feature_table(feature_set, network_windows(100), "finance", DAY)
    model = train_model(
        baseline, feature_set, "finance", DAY, DAY + timedelta(days=1), detector="hbos"
    )
    changed = feature_set.model_copy(update={"window": "2h"})
    with pytest.raises(ModelError, match="definition changed"):
        score_table(model, changed, baseline)
    with pytest.raises(ModelError, match="training rows"):
        train_model(baseline.slice(0, 4), feature_set, "finance", DAY, DAY, detector="hbos")
    with pytest.raises(ValueError, match="quantile"):
        ThresholdRule(quantile=1.5)


def test_an_exfiltration_window_is_explained_and_mapped_to_t1048() -> None:
    feature_set = network()
    baseline = feature_table(feature_set, network_windows(2400), "finance", DAY)
    model = train_model(baseline, feature_set, "finance", DAY, DAY + timedelta(days=1))
    usual = network_windows(30, seed=5)
    exfiltration = usual[0].copy()
    exfiltration[1] = 480e6  # bytes out in the hour
    probe = feature_table(
        feature_set, np.vstack([usual, exfiltration]), "finance", DAY + timedelta(days=1)
    )
    scored = score_table(model, feature_set, probe)
    worst = scored[0]
    assert worst.features["bytes_out"] == 480e6 and worst.above_threshold
    assert worst.explanation.drivers[0].feature == "bytes_out"
    text = worst.explanation.text
    assert text.startswith("bytes out 480 MB in the hour vs a usual ")
    assert "higher than all 2,400 baseline windows" in text
    assert worst.explanation.techniques == ["T1048"]
    alert = alert_for(worst, feature_set, TechniqueResolver()(worst.explanation.techniques))
    assert alert.rule_type == "anomaly" and alert.rule_id == "anomaly.network_source"
    assert [t.id for t in alert.techniques] == ["T1048"]
    assert alert.entity_type == "source.ip" and alert.organization_id == "finance"
    assert "bytes out 480 MB" in alert.explanation
    assert not any(w.above_threshold for w in scored[-10:])
    assert rank_entities(scored)[0].entity == worst.entity


# ------------------------------------------------------------------ explanations


def test_bytes_and_percentiles_are_worded_for_people() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(2_000_000) == "2 MB"
    assert format_bytes(2_400_000_000) == "2.4 GB"
    profile = BaselineProfile.fit(np.arange(1, 2001, dtype=float).reshape(-1, 1), ["x"])
    assert percentile_phrase(profile, 0, 1999.5, "high") == "above the 99.9th percentile"
    assert percentile_phrase(profile, 0, 1990.5, "high") == "above the 99th percentile"
    assert percentile_phrase(profile, 0, 1950.5, "high") == "above the 95th percentile"
    assert percentile_phrase(profile, 0, 5000, "high") == "higher than all 2,000 baseline windows"
    assert percentile_phrase(profile, 0, 0.5, "low") == "lower than all 2,000 baseline windows"
    small = BaselineProfile.fit(np.arange(1, 51, dtype=float).reshape(-1, 1), ["x"])
    # 50 windows cannot support a 99.9th percentile claim.
    assert percentile_phrase(small, 0, 49.9, "high") == "above the 95th percentile"


def test_explanations_pick_drivers_on_the_suspicious_side_only() -> None:
    feature_set = network()
    values = network_windows(1000)
    profile = BaselineProfile.fit(values, feature_set.feature_names)
    quiet = np.median(values, axis=0)
    quiet[0] = 0  # far fewer connections than usual: not suspicious for a "high" feature
    explanation = explain_window(feature_set, profile, quiet)
    assert explanation.drivers == []
    assert explanation.text.startswith("no single feature is beyond its usual range")
    noisy = np.median(values, axis=0)
    noisy[4] = 900  # distinct destination ports
    noisy[7] = 1.0  # first seen
    explanation = explain_window(feature_set, profile, noisy)
    assert [d.feature for d in explanation.drivers][:1] == ["distinct_ports"]
    assert "distinct destination ports 900 in the hour vs a usual" in explanation.text
    assert "first seen: no earlier event of this source.ip in the 7d before" in explanation.text
    assert explanation.techniques == ["T1046"]


# ------------------------------------------------------------------ measured quality


def test_measure_follows_the_definitions() -> None:
    labels = np.array([False, False, False, True, True])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.3])
    quality = measure(labels, scores, threshold=0.35)
    # Flagged: 0.4, 0.35, 0.8 -> one true positive of three flagged, one of two anomalies.
    assert quality.precision == pytest.approx(1 / 3)
    assert quality.recall == pytest.approx(1 / 2)
    # Pairs (anomaly, normal) ranked right: 0.8 beats all 3; 0.3 beats only 0.1.
    assert quality.roc_auc == pytest.approx(4 / 6)
    assert 0 < quality.pr_auc <= 1
    perfect = measure(labels, labels.astype(float), threshold=0.5)
    assert perfect.roc_auc == perfect.pr_auc == perfect.precision == perfect.recall == 1.0
    with pytest.raises(EvaluationError, match="both classes"):
        measure(np.array([True, True]), np.array([0.1, 0.2]), 0.5)


def test_labelled_tables_are_encoded_on_the_training_categories() -> None:
    train = pa.table(
        {
            "bytes": [1, 2, 3],
            "proto": ["tcp", "udp", "tcp"],
            "label": ["normal", "attack", "NORMAL"],
        }
    )
    test = pa.table({"bytes": [4, 5], "proto": ["icmp", "udp"], "label": ["normal", "neptune"]})
    split = labelled_split(train, test, "label")
    assert split.feature_names == ["bytes", "proto=tcp", "proto=udp"]
    assert split.test_features.tolist() == [[4, 0, 0], [5, 0, 1]]
    assert split.train_labels.tolist() == [False, True, False]
    assert split.normal_train_features.shape == (2, 3)
    assert binary_labels(pa.array([0, 1, 0]), ("normal",)).tolist() == [False, True, False]
