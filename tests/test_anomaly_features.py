"""Anomaly feature sets and feature tables: definitions, the offline computation, and the same
table from Elasticsearch's composite aggregation on the same events (against the real node)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from elasticsearch import Elasticsearch

from detection.event_files import event_table, read_archive, read_csv, read_event_files
from detection.feature_extraction import (
    COUNT_COLUMN,
    ENTITY_COLUMN,
    WINDOW_COLUMN,
    column_needs,
    composite_request,
    compute_features,
    extract_features,
    feature_table_schema,
    rows_from_buckets,
)
from detection.feature_sets import (
    FeatureSet,
    FeatureSetError,
    load_feature_sets,
    parse_duration,
    parse_feature_set,
)
from lianfang.schema import Event, Origin, format_timestamp
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.anomaly_fixtures import index_events

# Friday 2026-11-27, 00:00 UTC = 08:00 in Shanghai; the next day is a Saturday.
START = datetime(2026, 11, 27, tzinfo=UTC)
END = START + timedelta(hours=30)

FLOWS = """
name: flows
title: Unusual flows
entity: source.ip
window: 1h
lookback: 1d
filter:
  event.category: network
features:
  - {name: connections, kind: count, label: connections}
  - {name: bytes_out, kind: sum, field: source.bytes, label: bytes out, unit: bytes}
  - {name: biggest, kind: max, field: source.bytes, label: biggest flow, unit: bytes}
  - {name: destinations, kind: distinct, field: destination.ip, label: destinations}
  - {name: ports, kind: distinct, field: destination.port, label: ports}
  - {name: failures, kind: ratio, where: {event.outcome: failure}, label: failures, unit: ratio}
  - {name: web, kind: ratio, where: {destination.port: [80, 443]}, label: web, unit: ratio}
  - {name: night, kind: off_hours_ratio, label: off hours, unit: ratio}
  - {name: new, kind: first_seen, label: first seen, unit: flag}
working_hours: {timezone: Asia/Shanghai, start_hour: 8, end_hour: 18}
"""


def flows_set() -> FeatureSet:
    return parse_feature_set(FLOWS, "test")


def flow(
    moment: datetime,
    source: str | list[str] | None,
    *,
    department: str | None = "finance",
    sent: int | None = 100,
    destination: str = "10.0.0.1",
    port: int | str | None = 443,
    outcome: str = "success",
    category: str = "network",
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@timestamp": format_timestamp(moment),
        "event": {"kind": "event", "category": [category], "outcome": outcome},
        "destination": {"ip": destination},
    }
    if source is not None:
        document["source"] = {"ip": source}
        if sent is not None:
            document["source"]["bytes"] = sent
    if port is not None:
        document["destination"]["port"] = port
    if department is not None:
        document["organization"] = {"id": department}
    return document


def by_key(table: pa.Table) -> dict[tuple[str, str, datetime], dict[str, Any]]:
    return {
        (row["organization.id"], row[ENTITY_COLUMN], row[WINDOW_COLUMN]): row
        for row in table.to_pylist()
    }


# ------------------------------------------------------------------ definitions


def test_builtin_feature_sets_load_and_name_techniques_only_where_implied() -> None:
    loaded = load_feature_sets(timezone="Asia/Shanghai")
    assert loaded.problems == []
    assert {"network_source", "authentication_source", "database_user", "host_activity"} <= set(
        loaded.sets
    )
    network = loaded.get("network_source")
    assert network.entity == "source.ip"
    assert network.feature("bytes_out").technique == "T1048"
    assert network.feature("connections").technique is None
    assert network.working_hours.timezone == "Asia/Shanghai"  # resolved from the setting


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("kind: sum\n    label: x", "needs a field"),
        ("kind: count\n    field: source.bytes\n    label: x", "takes no field"),
        ("kind: ratio\n    label: x", "needs `where`"),
        ("kind: sum\n    field: message\n    label: x", "cannot be aggregated"),
        ("kind: median\n    label: x", "kind"),
    ],
)
def test_invalid_feature_definitions_are_refused_with_the_reason(change: str, reason: str) -> None:
    text = f"name: bad\ntitle: t\nentity: source.ip\nfeatures:\n  - name: f\n    {change}\n"
    with pytest.raises(FeatureSetError) as caught:
        parse_feature_set(text, "bad.yaml")
    assert caught.value.source == "bad.yaml"
    assert reason in caught.value.reason


def test_a_broken_file_is_reported_and_the_others_still_load(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed", encoding="utf-8")
    (tmp_path / "flows.yaml").write_text(FLOWS, encoding="utf-8")
    loaded = load_feature_sets(tmp_path, timezone="UTC")
    assert "flows" in loaded.sets and "network_source" in loaded.sets
    assert len(loaded.problems) == 1 and "broken.yaml" in loaded.problems[0]


def test_durations_and_fingerprints() -> None:
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("1d") == timedelta(days=1)
    for text in ("0h", "1w", "h", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(text)
    assert flows_set().fingerprint() == flows_set().fingerprint()
    changed = parse_feature_set(FLOWS.replace("window: 1h", "window: 2h"), "test")
    assert changed.fingerprint() != flows_set().fingerprint()


def test_off_hours_intervals_follow_local_working_days() -> None:
    hours = flows_set().working_hours
    # Friday 08:00 local to Monday 08:00 local: work until Friday 18:00, then off.
    begin = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    end = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    intervals = hours.off_hours_intervals(begin, end)
    friday_evening = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # 18:00 local
    assert intervals == [(int(friday_evening.timestamp() * 1000), int(end.timestamp() * 1000))]
    # Monday: off before 08:00 and from 18:00 local.
    monday = hours.off_hours_intervals(end, end + timedelta(days=1))
    assert [(b - a) // 3_600_000 for a, b in monday] == [14]  # 18:00 to 08:00 next day


# ------------------------------------------------------------------ offline computation


def test_offline_features_follow_the_definitions() -> None:
    feature_set = flows_set()
    at = START + timedelta(hours=2, minutes=5)  # 10:05 local, Friday
    night = START + timedelta(hours=20)  # 04:00 local, Saturday
    documents = [
        flow(START - timedelta(hours=3), "10.1.1.1"),  # lookback only: 10.1.1.1 is not new
        flow(at, "10.1.1.1", sent=100, destination="10.0.0.1", port=443),
        flow(at + timedelta(minutes=1), "10.1.1.1", sent=300, destination="10.0.0.2", port=22),
        flow(
            at + timedelta(minutes=2),
            "10.1.1.1",
            sent=None,
            destination="10.0.0.2",
            port="443",
            outcome="failure",
        ),
        flow(at + timedelta(minutes=3), "10.1.1.1", category="authentication"),  # filtered out
        flow(night, "10.2.2.2", sent=5_000_000, port=80),
        flow(night + timedelta(minutes=1), ["10.2.2.2", "10.3.3.3"], sent=10, port=None),
        flow(night + timedelta(hours=1), "10.2.2.2", department=None),
        flow(at, None),  # no entity
    ]
    table = compute_features(
        event_table(documents, column_needs(feature_set)), feature_set, START, END
    )
    assert table.schema == feature_table_schema(feature_set)
    rows = by_key(table)
    busy = rows[("finance", "10.1.1.1", START + timedelta(hours=2))]
    assert busy[COUNT_COLUMN] == 3 and busy["connections"] == 3
    assert busy["bytes_out"] == 400 and busy["biggest"] == 300
    assert busy["destinations"] == 2 and busy["ports"] == 2  # "443" and 443 are one port
    assert busy["failures"] == pytest.approx(1 / 3)
    assert busy["web"] == pytest.approx(2 / 3)
    assert busy["night"] == 0.0 and busy["new"] == 0.0
    late = rows[("finance", "10.2.2.2", night)]
    assert late["connections"] == 2 and late["bytes_out"] == 5_000_010
    assert late["night"] == 1.0 and late["new"] == 1.0 and late["ports"] == 1
    shared = rows[("finance", "10.3.3.3", night)]  # a multi-valued entity counts for each value
    assert shared["connections"] == 1 and shared["biggest"] == 10
    orphan = rows[("_unknown", "10.2.2.2", night + timedelta(hours=1))]
    assert orphan["new"] == 1.0  # first seen in its own department
    assert len(rows) == 4


def test_no_events_give_an_empty_table_with_the_schema() -> None:
    feature_set = flows_set()
    empty = compute_features(event_table([], column_needs(feature_set)), feature_set, START, END)
    assert empty.num_rows == 0 and empty.schema == feature_table_schema(feature_set)


def test_composite_request_pushes_every_feature_down() -> None:
    feature_set = flows_set()
    body = composite_request(
        feature_set, START, END, after={"entity": "x"}, departments=["finance"]
    )
    composite = body["aggs"]["windows"]["composite"]
    assert [next(iter(source)) for source in composite["sources"]] == [
        "department",
        "entity",
        "window",
    ]
    assert composite["sources"][2]["window"]["date_histogram"]["fixed_interval"] == "3600s"
    assert composite["after"] == {"entity": "x"}
    aggregations = body["aggs"]["windows"]["aggs"]
    assert aggregations["f_bytes_out"] == {"sum": {"field": "source.bytes"}}
    assert aggregations["f_destinations"]["cardinality"]["field"] == "destination.ip"
    assert aggregations["f_web"]["filter"]["bool"]["filter"] == [
        {"terms": {"destination.port": ["80", "443"]}}
    ]
    assert "should" in aggregations["f_night"]["filter"]["bool"]
    assert {"terms": {"organization.id": ["finance"]}} in body["query"]["bool"]["filter"]


def test_rows_from_buckets_turn_aggregations_into_features() -> None:
    feature_set = flows_set()
    window = int(START.timestamp() * 1000)
    bucket = {
        "key": {"department": None, "entity": "10.1.1.1", "window": window},
        "doc_count": 4,
        "first_event": {"value": window + 10},
        "last_event": {"value": window + 20},
        "f_bytes_out": {"value": 800.0},
        "f_biggest": {"value": None},
        "f_destinations": {"value": 2},
        "f_ports": {"value": 1},
        "f_failures": {"doc_count": 1},
        "f_web": {"doc_count": 4},
        "f_night": {"doc_count": 0},
    }
    columns = rows_from_buckets(feature_set, [bucket], {("_unknown", "10.1.1.1"): window + 10})
    assert columns["organization.id"] == ["_unknown"]
    assert columns["bytes_out"] == [800.0] and columns["biggest"] == [0.0]
    assert columns["failures"] == [0.25] and columns["web"] == [1.0]
    assert columns["new"] == [1.0]


def test_files_give_the_same_event_table(tmp_path: Path, settings_offline: Settings) -> None:
    feature_set = flows_set()
    needs = column_needs(feature_set)
    documents = [flow(START + timedelta(minutes=i), f"10.0.0.{i % 3}", sent=i) for i in range(12)]
    csv = tmp_path / "flows.csv"
    lines = [
        "@timestamp,organization.id,event.category,source.ip,source.bytes,destination.ip,destination.port,event.outcome"
    ]
    lines += [
        f"{d['@timestamp']},finance,network,{d['source']['ip']},{d['source']['bytes']},10.0.0.1,443,success"
        for d in documents
    ]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ndjson = tmp_path / "flows.ndjson"
    import json

    ndjson.write_text("".join(json.dumps(d) + "\n" for d in documents), encoding="utf-8")
    from collectors.parquet_archive import ParquetArchive

    archive = ParquetArchive(tmp_path / "archive")
    for number, document in enumerate(documents):
        archive.add(Event(document=dict(document), origin=Origin("test", number)))
    archive.close()
    expected = compute_features(event_table(documents, needs), feature_set, START, END)
    for table in (
        read_csv(csv, needs),
        read_archive(tmp_path / "archive", needs),
        read_event_files([ndjson], needs, settings_offline, format_name="json")[0],
    ):
        assert compute_features(table, feature_set, START, END).equals(expected)
    with pytest.raises(ValueError, match="no such file"):
        read_event_files([tmp_path / "missing.csv"], needs, settings_offline)


@pytest.fixture
def settings_offline(tmp_path: Path) -> Settings:
    from lianfang.settings import load_settings

    return load_settings(home_dir=tmp_path / "home")


# ------------------------------------------------------------------ against Elasticsearch


def synthetic_events(count: int, seed: int) -> list[dict[str, Any]]:
    """Flows with gaps, repeats, failures, multi-valued sources and missing fields."""
    rng = random.Random(seed)
    documents = []
    for _ in range(count):
        moment = START - timedelta(hours=6) + timedelta(seconds=rng.uniform(0, 36 * 3600))
        source: str | list[str] = f"10.9.{rng.randint(0, 3)}.{rng.randint(1, 12)}"
        if rng.random() < 0.03:
            source = [source, "10.9.9.9"]
        documents.append(
            flow(
                moment,
                source,
                department=rng.choice(["finance", "energy", None]),
                sent=rng.choice([None, rng.randint(0, 10**7)]),
                destination=f"172.16.0.{rng.randint(1, 40)}",
                port=rng.choice([22, 80, 443, 3306, None]),
                outcome=rng.choice(["success", "success", "failure"]),
                category=rng.choice(["network", "network", "network", "authentication"]),
            )
        )
    return documents


def test_elasticsearch_and_offline_features_are_equal(
    store: EventStore, client: Elasticsearch
) -> None:
    feature_set = flows_set()
    documents = synthetic_events(1500, seed=7)
    index_events(client, store, documents)
    offline = compute_features(
        event_table(documents, column_needs(feature_set)), feature_set, START, END
    )
    pushed = extract_features(
        client, store.names.events_alias, feature_set, START, END, page_size=37
    )
    assert pushed.num_rows == offline.num_rows > 100
    for name in pushed.column_names:
        left = pushed.column(name).to_pylist()
        right = offline.column(name).to_pylist()
        if pa.types.is_floating(pushed.schema.field(name).type):
            assert np.allclose(left, right), name
        else:
            assert left == right, name
    only_finance = extract_features(
        client, store.names.events_alias, feature_set, START, END, departments=["finance"]
    )
    assert set(only_finance.column("organization.id").to_pylist()) == {"finance"}
