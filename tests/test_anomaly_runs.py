"""Anomaly runs end to end: train on a baseline, score a day, alerts in the alerts index, the
`detect` commands on files, and the demo days with their ground truth."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from detection.alerts import AlertStore
from detection.anomaly_models import POOLED, ModelRepository
from detection.feature_sets import load_feature_sets
from lianfang.cli import main
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.anomaly_fixtures import (
    BASELINE,
    EXFILTRATING,
    SCORED,
    flows,
    index_events,
    score_scored_day,
    train_on_baseline,
)
from tests.conftest import SHARED_DATASETS


def test_trained_models_raise_explained_alerts_idempotently(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    feature_set = load_feature_sets(timezone=settings.timezone).get("network_source")
    index_events(client, store, flows(BASELINE, 1, False) + flows(SCORED, 2, True))
    repository = ModelRepository(settings.home_dir / "models")
    trained = train_on_baseline(client, store, feature_set, repository)
    assert trained.problems == [] and [m.department for m in trained.trained] == ["finance"]
    assert repository.versions("network_source", "finance") == [1]
    alerts = AlertStore(client, settings.index_prefix)
    report = score_scored_day(client, store, feature_set, repository, alerts)
    assert report.problems == []
    worst = report.scored[0]
    assert worst.entity == EXFILTRATING and worst.window_start == SCORED + timedelta(hours=19)
    # The threshold is the 99.9th percentile of ~600 baseline windows (about their second
    # highest score): a few ordinary windows of a new day pass it, never many.
    assert 1 <= len(report.alerts) <= 1 + 0.02 * len(report.scored)
    assert report.alerts[0].entity_value == EXFILTRATING  # alerts follow the ranking
    alert = next(a for a in report.alerts if a.entity_value == EXFILTRATING)
    assert alert.severity == "high" and alert.count == worst.events
    assert report.upserted is not None and report.upserted.created == len(report.alerts)
    stored = alerts.get(alert.id)
    assert stored is not None
    assert stored["rule"]["type"] == "anomaly" and stored["rule"]["id"] == "anomaly.network_source"
    assert stored["threat"]["technique"]["id"] == ["T1048"]
    assert stored["alert"]["explanation"].startswith("bytes out 2.4 GB in the hour vs a usual")
    assert len(stored["alert"]["evidence"]["event_ids"]) == worst.events  # all of the window's
    again = score_scored_day(client, store, feature_set, repository, alerts)
    assert again.upserted is not None
    assert again.upserted.created == 0 and again.upserted.unchanged == len(report.alerts)


def test_training_from_elasticsearch_honours_pooled_only(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    """With per-department models off, only the pooled model is trained (as from files)."""
    feature_set = load_feature_sets(timezone=settings.timezone).get("network_source")
    index_events(client, store, flows(BASELINE, 1, False))
    repository = ModelRepository(settings.home_dir / "models")
    trained = train_on_baseline(
        client, store, feature_set, repository, SCORED, per_department=False, pooled=True
    )
    assert trained.problems == []
    assert [m.department for m in trained.trained] == [POOLED]
    assert repository.versions("network_source", "finance") == []


# ------------------------------------------------------------------ the commands on files


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LIANFANG_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("LIANFANG_CONFIG", str(tmp_path / "absent.toml"))
    return tmp_path


def write_ndjson(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    return path


def test_score_files_offline_ranks_the_exfiltration_first(cli_home: Path) -> None:
    baseline = write_ndjson(cli_home / "baseline.ndjson", flows(BASELINE, 1, False))
    day = write_ndjson(cli_home / "day.ndjson", flows(SCORED, 2, True))
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "detect",
            "score",
            "--input",
            str(day),
            "--baseline",
            str(baseline),
            "--detector",
            "ecod",
            "--feature-set",
            "network_source",
            "--top",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["mode"] == "ecod fitted on the baseline files"
    top = report["top_entities"][0]
    assert top["entity"] == EXFILTRATING and top["department"] == "finance"
    assert top["explanation"].startswith("bytes out 2.4 GB in the hour")
    # Train from files, then score with the saved models.
    trained = runner.invoke(
        main,
        ["detect", "train", "--input", str(baseline), "--feature-set", "network_source", "--json"],
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.output)["trained"][0]["department"] == "finance"
    with_models = runner.invoke(
        main,
        [
            "detect",
            "score",
            "--input",
            str(day),
            "--models",
            "--feature-set",
            "network_source",
            "--json",
        ],
    )
    assert with_models.exit_code == 0, with_models.output
    assert json.loads(with_models.output)["top_entities"][0]["entity"] == EXFILTRATING
    people = runner.invoke(
        main, ["detect", "score", "--input", str(day), "--detector", "hbos", "--top", "2"]
    )
    assert people.exit_code == 0 and "most anomalous entities" in people.output


def test_commands_refuse_bad_usage(cli_home: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["detect", "score"]).exit_code == 2
    assert runner.invoke(main, ["detect", "score", "--input", "missing.ndjson"]).exit_code == 2
    day = write_ndjson(cli_home / "day.ndjson", flows(SCORED, 2, True))
    unknown = runner.invoke(main, ["detect", "score", "--input", str(day), "--detector", "magic"])
    assert unknown.exit_code == 2 and "no detector 'magic'" in unknown.output
    assert (
        runner.invoke(
            main, ["detect", "score", "--input", str(day), "--feature-set", "nope"]
        ).exit_code
        == 2
    )
    assert runner.invoke(main, ["detect", "eval"]).exit_code == 2
    nothing = runner.invoke(
        main, ["detect", "train", "--input", str(day), "--department", "energy", "--json"]
    )
    assert nothing.exit_code == 1 and json.loads(nothing.output)["trained"] == []
    listed = runner.invoke(main, ["detect", "feature-sets", "--json"])
    assert listed.exit_code == 0 and "network_source" in listed.output


def test_eval_on_a_labelled_table(cli_home: Path) -> None:
    rng = random.Random(3)
    rows = ["bytes,connections,proto,label"]
    for number in range(300):
        attack = number % 10 == 0
        rows.append(
            f"{rng.lognormvariate(14 if attack else 8, 1):.0f},{rng.randint(40, 90) if attack else rng.randint(1, 20)},"
            f"{rng.choice(['tcp', 'udp'])},{'attack' if attack else 'normal'}"
        )
    table = cli_home / "labelled.csv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        [
            "detect",
            "eval",
            "--labelled",
            str(table),
            "--detector",
            "ecod",
            "--detector",
            "hbos",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads(result.output)["runs"]
    assert [run["detector"] for run in runs] == ["ecod", "hbos"]
    assert all(run["roc_auc"] > 0.9 and run["positives"] == 30 for run in runs)


def test_eval_on_nsl_kdd_when_the_dataset_is_present(cli_home: Path) -> None:
    folder = SHARED_DATASETS / "nsl-kdd"
    if not (folder / "KDDTest+.txt").is_file():
        pytest.skip(f"NSL-KDD not found under {folder}")
    result = CliRunner().invoke(
        main,
        [
            "detect",
            "eval",
            "--nsl-kdd",
            str(folder),
            "--detector",
            "hbos",
            "--normal-only",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["runs"][0]
    assert run["positives"] + run["negatives"] == 22544  # every row of KDDTest+
    assert run["roc_auc"] > 0.85


# ------------------------------------------------------------------ the demo days


@pytest.mark.slow
def test_demo_stories_rank_among_the_top_entities(tmp_path: Path) -> None:
    from detection.anomaly_scoring import score_events_offline
    from detection.demo_evaluation import (
        feature_set_quality,
        generate_demo_days,
        latest_weekdays,
        read_demo_events,
        story_ranks,
        without_stories,
    )
    from detection.feature_extraction import column_needs
    from lianfang.settings import load_settings

    settings = load_settings(home_dir=tmp_path / "home")
    feature_sets = list(load_feature_sets(timezone=settings.timezone).sets.values())
    needs = column_needs(feature_sets[0])
    for feature_set in feature_sets[1:]:
        needs = needs | column_needs(feature_set)
    baseline_day, scored_day = latest_weekdays(date.today())
    baseline, scored = generate_demo_days(tmp_path, 20261128, baseline_day, scored_day, scale=0.5)
    assert baseline.manifest["seed"] != scored.manifest["seed"]
    baseline_events = without_stories(
        read_demo_events(baseline, needs, settings), baseline.manifest
    )
    report, tables = score_events_offline(
        read_demo_events(scored, needs, settings), feature_sets, baseline_events=baseline_events
    )
    assert report.problems == []
    ranks = {
        (r.story, r.feature_set): r
        for r in story_ranks(report.scored, feature_sets, scored.manifest)
    }
    exfiltration = ranks[("night-exfiltration", "network_source")]
    export = ranks[("database-export", "database_user")]
    assert exfiltration.rank_in_feature_set is not None and exfiltration.rank_in_feature_set <= 3
    assert export.rank_in_feature_set == 1
    assert exfiltration.rank_overall is not None and exfiltration.rank_overall <= 5
    assert export.rank_overall is not None and export.rank_overall <= 8
    quality = feature_set_quality(
        report.scored,
        feature_sets[[f.name for f in feature_sets].index("network_source")],
        tables["network_source"],
        scored.manifest,
    )
    assert quality.roc_auc > 0.99 and quality.recall == 1.0
