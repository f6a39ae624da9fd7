"""The `anomaly` detector source in the scheduler: trained models score complete feature windows
over sliding windows, late events update the same alert, missing models are reported."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from elasticsearch import Elasticsearch

from detection.alert_exceptions import ExceptionStore
from detection.alerts import AlertStore
from detection.anomaly_detector_source import AnomalyModelDetector
from detection.anomaly_models import ModelRepository, models_root
from detection.detector import DetectionWindow, DetectorContext, DetectorLoad, load_detectors
from detection.feature_extraction import (
    DEPARTMENT_COLUMN,
    UNKNOWN_DEPARTMENT,
    complete_windows,
    extract_features,
)
from detection.feature_sets import FeatureSet, load_feature_sets
from detection.scheduler import DetectionScheduler, DetectionStateStore
from lianfang.cli import main
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.anomaly_fixtures import (
    BASELINE,
    EXFILTRATING,
    SCORED,
    flow,
    flows,
    index_events,
    score_scored_day,
    train_on_baseline,
)

HOUR = timedelta(hours=1)
OVERLAP = timedelta(minutes=10)
EXFILTRATION_HOUR = SCORED + timedelta(hours=19)  # flows every 2 minutes from 19:05 to 19:51


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def network_source(settings: Settings) -> FeatureSet:
    return load_feature_sets(timezone=settings.timezone).get("network_source")


def split_exfiltration(documents: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(everything but the last 12 exfiltration flows, those 12: the late arrivals)."""
    late = [d for d in documents if d["destination"]["ip"] == "185.220.101.9"][12:]
    late_times = {d["@timestamp"] for d in late}
    early = [
        d
        for d in documents
        if not (d["destination"]["ip"] == "185.220.101.9" and d["@timestamp"] in late_times)
    ]
    return early, late


def anomaly_load(settings: Settings, client: Elasticsearch) -> DetectorLoad:
    context = DetectorContext(settings, client, f"{settings.index_prefix}-events")
    return load_detectors(context, ["anomaly"])


def scheduler_for(
    settings: Settings, client: Elasticsearch, clock: FixedClock, load: DetectorLoad
) -> DetectionScheduler:
    prefix = settings.index_prefix
    return DetectionScheduler(
        load.detectors,
        AlertStore(client, prefix),
        ExceptionStore(client, prefix),
        DetectionStateStore(client, prefix),
        clock,
    )


def anomaly_alerts(client: Elasticsearch, settings: Settings, entity: str) -> list[dict[str, Any]]:
    response = client.search(
        index=f"{settings.index_prefix}-alerts",
        query={
            "bool": {
                "filter": [
                    {"term": {"rule.type": "anomaly"}},
                    {"term": {"alert.entity.value": entity}},
                ]
            }
        },
        size=100,
    )
    return [hit["_source"] for hit in response["hits"]["hits"]]


def test_complete_windows_end_within_the_scheduler_window() -> None:
    feature_set = load_feature_sets().get("network_source")
    at = EXFILTRATION_HOUR
    assert complete_windows(feature_set, at - OVERLAP, at + timedelta(minutes=40)) == (
        at - HOUR,
        at,
    )
    assert (
        complete_windows(feature_set, at + timedelta(minutes=5), at + timedelta(minutes=55)) is None
    )
    assert complete_windows(feature_set, at, at + 2 * HOUR) == (at, at + 2 * HOUR)
    assert complete_windows(feature_set, at + timedelta(minutes=50), at + HOUR) == (at, at + HOUR)


def test_no_model_is_a_problem_not_an_error(settings: Settings, client: Elasticsearch) -> None:
    load = anomaly_load(settings, client)
    assert load.detectors == []
    assert len(load.problems) == 1
    problem = load.problems[0]
    assert problem.startswith(f"anomaly: no trained model under {models_root(settings.home_dir)}")
    for name in ("authentication_source", "database_user", "host_activity", "network_source"):
        assert name in problem
    assert "lianfang detect train --from" in problem

    environment = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
    }
    arguments = ["detect", "run", "--source", "anomaly", "--once", "--json"]
    result = CliRunner().invoke(main, arguments, env=environment, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "no trained model" in result.output
    assert json.loads(result.stdout.splitlines()[-1])["runs"] == []


def test_scheduler_scores_complete_hours_and_merges_late_events(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    feature_set = network_source(settings)
    early, late = split_exfiltration(flows(SCORED, 2, True))
    index_events(client, store, flows(BASELINE, 1, False) + early)
    repository = ModelRepository(models_root(settings.home_dir))
    trained = train_on_baseline(client, store, feature_set, repository)
    assert trained.problems == []

    load = anomaly_load(settings, client)
    assert [d.name for d in load.detectors] == ["anomaly.network_source@finance"]
    assert all("network_source" not in problem for problem in load.problems)
    assert any("authentication_source" in problem for problem in load.problems)
    clock = FixedClock(EXFILTRATION_HOUR + timedelta(minutes=40))
    scheduler = scheduler_for(settings, client, clock, load)

    # 19:40: the first pass covers [18:40, 19:40); hour 19 is still open, so it waits.
    [first] = scheduler.run_pending(HOUR, OVERLAP)
    assert first.failed == []
    assert anomaly_alerts(client, settings, EXFILTRATING) == []

    # 20:05: [19:30, 20:05) holds the end of hour 19, now complete and scored.
    clock.moment = EXFILTRATION_HOUR + timedelta(minutes=65)
    [second] = scheduler.run_pending(HOUR, OVERLAP)
    assert (second.start, second.end) == (
        EXFILTRATION_HOUR + timedelta(minutes=30),
        clock.moment,
    )
    assert second.failed == [] and second.runs[0].created >= 1
    [alert] = anomaly_alerts(client, settings, EXFILTRATING)
    assert alert["rule"] == {
        "id": "anomaly.network_source",
        "name": feature_set.title,
        "type": "anomaly",
        "version": "v1",
    }
    assert alert["organization"]["id"] == "finance"
    # Half the exfiltration is already above the threshold, not yet three times it.
    assert alert["alert"]["severity"] == "medium" and alert["alert"]["risk_score"] >= 50
    assert alert["alert"]["entity"] == {"type": "source.ip", "value": EXFILTRATING}
    assert alert["alert"]["window"]["start"].startswith(
        EXFILTRATION_HOUR.strftime("%Y-%m-%dT%H:00")
    )
    assert alert["threat"]["technique"]["id"] == ["T1048"]
    assert alert["alert"]["explanation"].startswith("bytes out 1.2 GB in the hour vs a usual")
    assert "finance baseline, model v1" in alert["alert"]["explanation"]
    early_count = alert["alert"]["count"]
    assert len(alert["alert"]["evidence"]["event_ids"]) == early_count

    # The same window again: nothing new, nothing changed.
    again = scheduler.run_range(EXFILTRATION_HOUR, EXFILTRATION_HOUR + HOUR, HOUR, OVERLAP)
    assert [(r.created, r.updated) for r in again[0].runs] == [(0, 0)]

    # Late events of hour 19 arrive; the next pass's overlap re-scores hour 19 and the
    # alert grows instead of being raised twice.
    index_events(client, store, late)
    clock.moment = EXFILTRATION_HOUR + timedelta(minutes=70)
    [third] = scheduler.run_pending(HOUR, OVERLAP)
    assert third.start == EXFILTRATION_HOUR + timedelta(minutes=55)
    assert third.runs[0].created == 0 and third.runs[0].updated >= 1
    [grown] = anomaly_alerts(client, settings, EXFILTRATING)
    assert grown["alert"]["count"] == early_count + len(late)
    assert grown["alert"]["severity"] == "high"
    assert grown["alert"]["risk_score"] > alert["alert"]["risk_score"]
    assert grown["alert"]["explanation"].startswith("bytes out 2.4 GB in the hour vs a usual")

    # A backfill of the whole day with overlapping windows, twice: still one alert per
    # window, and `detect score` over the day finds exactly the alerts the scheduler raised.
    for _ in range(2):
        scheduler.run_range(SCORED, SCORED + timedelta(days=1), HOUR, OVERLAP)
    assert len(anomaly_alerts(client, settings, EXFILTRATING)) == 1
    alerts = AlertStore(client, settings.index_prefix)
    total = client.count(index=alerts.index, query={"term": {"rule.type": "anomaly"}})["count"]
    scored = score_scored_day(client, store, feature_set, repository, alerts)
    assert scored.upserted is not None
    assert scored.upserted.created == 0 and scored.upserted.unchanged == len(scored.alerts)
    assert len(scored.alerts) == total


def test_pooled_model_scores_departments_without_their_own(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    feature_set = network_source(settings)
    rng = random.Random(3)
    energy = [
        flow(EXFILTRATION_HOUR + timedelta(minutes=2 * n), "10.30.1.5", 100_000_000, rng)
        | {"organization": {"id": "energy"}}
        for n in range(20)
    ]
    index_events(client, store, flows(BASELINE, 1, False) + flows(SCORED, 2, True) + energy)
    repository = ModelRepository(models_root(settings.home_dir))
    train_on_baseline(client, store, feature_set, repository, pooled=True)
    load = anomaly_load(settings, client)
    by_name = {d.name: d for d in load.detectors}
    assert sorted(by_name) == ["anomaly.network_source", "anomaly.network_source@finance"]
    pooled = by_name["anomaly.network_source"]
    assert isinstance(pooled, AnomalyModelDetector)
    assert pooled.excluded_departments == ["finance"]

    window = DetectionWindow(EXFILTRATION_HOUR, EXFILTRATION_HOUR + HOUR)
    pooled_alerts = pooled.run(window)
    assert {(a.organization_id, a.entity_value) for a in pooled_alerts} == {("energy", "10.30.1.5")}
    assert "pooled baseline of all departments, model v1" in pooled_alerts[0].explanation
    finance_alerts = by_name["anomaly.network_source@finance"].run(window)
    assert EXFILTRATING in {a.entity_value for a in finance_alerts}
    assert {a.organization_id for a in finance_alerts} == {"finance"}

    # A model trained again while the scheduler runs is used from the next pass on.
    train_on_baseline(client, store, feature_set, repository)
    finance = by_name["anomaly.network_source@finance"]
    assert isinstance(finance, AnomalyModelDetector)
    rescored = finance.run(window)
    assert finance.model.metadata.version == 2
    assert {a.rule_version for a in rescored} == {"v2"}


def test_department_scopes_include_and_exclude_events_without_a_department(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    feature_set = network_source(settings)
    rng = random.Random(4)
    moment = EXFILTRATION_HOUR + timedelta(minutes=5)
    finance = flow(moment, "10.20.1.1", 10, rng)
    energy = flow(moment, "10.30.1.1", 10, rng) | {"organization": {"id": "energy"}}
    nobody = {k: v for k, v in flow(moment, "10.40.1.1", 10, rng).items() if k != "organization"}
    index_events(client, store, [finance, energy, nobody])

    def departments(**scope: list[str]) -> list[str]:
        table = extract_features(
            client,
            store.names.events_alias,
            feature_set,
            EXFILTRATION_HOUR,
            EXFILTRATION_HOUR + HOUR,
            **scope,
        )
        return table.column(DEPARTMENT_COLUMN).to_pylist()

    assert departments() == [UNKNOWN_DEPARTMENT, "energy", "finance"]
    assert departments(departments=[UNKNOWN_DEPARTMENT]) == [UNKNOWN_DEPARTMENT]
    assert departments(departments=[UNKNOWN_DEPARTMENT, "energy"]) == [UNKNOWN_DEPARTMENT, "energy"]
    assert departments(excluded_departments=["finance"]) == [UNKNOWN_DEPARTMENT, "energy"]
    assert departments(excluded_departments=[UNKNOWN_DEPARTMENT, "finance"]) == ["energy"]


def test_departments_with_recent_events_but_no_model_are_named(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    feature_set = network_source(settings)
    rng = random.Random(5)
    recent = datetime.now(UTC) - HOUR
    energy = [flow(recent, "10.30.1.7", 10, rng) | {"organization": {"id": "energy"}}]
    index_events(client, store, flows(BASELINE, 1, False) + energy)
    repository = ModelRepository(models_root(settings.home_dir))
    train_on_baseline(client, store, feature_set, repository)
    load = anomaly_load(settings, client)
    assert [d.name for d in load.detectors] == ["anomaly.network_source@finance"]
    [unscored] = [p for p in load.problems if p.startswith("anomaly: feature set network_source")]
    assert "no model for energy (events in the last 7d)" in unscored and "--pooled" in unscored
