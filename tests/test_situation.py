"""The situation overview: pure planning and shaping, the threat-level formula, dead-letter
counting, and GET /api/v1/situation against the real node with department scoping."""

from __future__ import annotations

import itertools
import json
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from detection.alerts import Alert, AlertStore, AttackTechnique
from lianfang import incidents as lifecycle
from lianfang.bulk_writer import BulkWriter
from lianfang.collection_health import (
    DeadLetterCounter,
    days_between,
    stage_of,
    summarise_collector,
)
from lianfang.dead_letter import DeadLetterFile
from lianfang.principals import PrincipalStore, Role
from lianfang.schema import Event, Origin, format_timestamp
from lianfang.settings import Settings, load_settings
from lianfang.situation import (
    INTERVALS,
    MAX_BUCKETS,
    SEARCH_NAMES,
    InvalidRange,
    SituationRequest,
    bucket_starts,
    choose_interval,
    plan_searches,
    shape_situation,
)
from lianfang.store import EventStore, IndexNames, connect, delete_prefix, install_index
from lianfang.threat_level import threat_level
from tests.conftest import TEST_MASKING_KEY

DAY = datetime(2026, 11, 28, tzinfo=UTC)
NOW = DAY + timedelta(days=1, hours=3)
DISCOVERY = AttackTechnique("T1046", "Network Service Discovery", (("TA0007", "Discovery"),))
GUESSING = AttackTechnique("T1110.001", "Password Guessing", (("TA0006", "Credential Access"),))


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "span",
    [
        timedelta(seconds=30),
        timedelta(hours=1),
        timedelta(hours=24),
        timedelta(days=7),
        timedelta(days=30),
        timedelta(days=400),
    ],
)
def test_interval_is_the_smallest_that_keeps_the_bucket_cap(span: timedelta) -> None:
    name, seconds = choose_interval(DAY, DAY + span)
    assert math.ceil(span.total_seconds() / seconds) <= MAX_BUCKETS
    smaller = [s for _, s in INTERVALS if s < seconds]
    assert all(math.ceil(span.total_seconds() / s) > MAX_BUCKETS for s in smaller)
    assert dict(INTERVALS)[name] == seconds


def test_default_range_is_the_last_day_up_to_the_next_minute() -> None:
    now = datetime(2026, 11, 29, 8, 30, 17, 500, tzinfo=UTC)
    request = SituationRequest.resolve(None, None, now)
    assert request.end == datetime(2026, 11, 29, 8, 31, tzinfo=UTC)
    assert request.end - request.start == timedelta(hours=24)
    assert request.interval == "15m"
    # Two calls within the same minute send identical searches (request cache).
    later = SituationRequest.resolve(None, None, now + timedelta(seconds=30))
    assert plan_searches(request, IndexNames("p"))[0] == plan_searches(later, IndexNames("p"))[0]


@pytest.mark.parametrize(
    ("start", "end", "parameter"),
    [
        (DAY, DAY, "start"),
        (DAY + timedelta(hours=1), DAY, "start"),
        (DAY - timedelta(days=401), DAY, "start"),
        (datetime(1960, 1, 1, tzinfo=UTC), DAY, "start"),
        (None, datetime(1, 2, 1, tzinfo=UTC), "end"),
        (None, datetime(9999, 12, 31, tzinfo=UTC), "end"),
    ],
)
def test_unusable_ranges_are_refused_with_the_parameter(start, end, parameter: str) -> None:
    with pytest.raises(InvalidRange) as refused:
        SituationRequest.resolve(start, end, NOW)
    assert refused.value.parameter == parameter


def test_buckets_cover_the_range_aligned_in_the_time_zone() -> None:
    day = SituationRequest.resolve(DAY, DAY + timedelta(days=1), NOW, timezone="Asia/Shanghai")
    starts = bucket_starts(day)
    assert len(starts) == 96 and starts[0] == int(DAY.timestamp() * 1000)
    assert all(b - a == 900_000 for a, b in itertools.pairwise(starts))
    # Day buckets start at local midnight (16:00 UTC), the first one before the range.
    month = SituationRequest.resolve(DAY, DAY + timedelta(days=30), NOW, timezone="Asia/Shanghai")
    assert month.interval == "6h"
    days = SituationRequest.resolve(DAY, DAY + timedelta(days=90), NOW, timezone="Asia/Shanghai")
    day_starts = bucket_starts(days)
    assert days.interval == "1d" and len(day_starts) == 91
    assert datetime.fromtimestamp(day_starts[0] / 1000, UTC) == DAY - timedelta(hours=8)
    # Elasticsearch's buckets land in the matching slot; the rest stay empty.
    histogram = {
        "buckets": [
            {
                "key": starts[3],
                "doc_count": 5,
                "by_sector": {"buckets": [{"key": "energy", "doc_count": 5}]},
            }
        ]
    }
    shaped = shape_situation(
        day, [{"aggregations": {"over_time": histogram}}, *[{}] * 8], scope=None
    )
    assert [b.count for b in shaped.events.over_time[:5]] == [0, 0, 0, 5, 0]
    assert shaped.events.over_time[3].by_sector == {"energy": 5}
    assert (
        bucket_starts(
            SituationRequest.resolve(DAY, DAY + timedelta(hours=1), NOW, timezone="No/Such_Zone")
        )[0]
        == starts[0]
    )


def test_every_search_is_scoped_on_its_own_department_field() -> None:
    request = SituationRequest.resolve(DAY, DAY + timedelta(days=1), NOW, departments=["finance"])
    searches = plan_searches(request, IndexNames("p"))
    assert len(searches) == len(SEARCH_NAMES)
    by_name = dict(zip(SEARCH_NAMES, searches, strict=True))
    assert by_name["shared"].scope_field == "publisher_department"
    assert by_name["received"].scope_field == "department"
    assert {by_name[n].scope_field for n in ("events", "alerts", "incidents", "indicators")} == {
        "organization.id"
    }
    assert by_name["events"].index == "p-events" and by_name["alerts"].index == "p-alerts"
    # The department filter reaches every index, each under its own field name.
    assert "'organization.id': ['finance']" in str(by_name["events"].body)
    assert "'publisher_department': ['finance']" in str(by_name["shared"].body)
    assert "'department': ['finance']" in str(by_name["received"].body)


def test_threat_level_formula() -> None:
    quiet = threat_level({}, events=5_000, critical_asset_hits=0)
    assert (quiet.level, quiet.name_en, quiet.name_zh, quiet.score) == (1, "Low", "低", 0.0)
    # Weighted alerts: low 1, medium 3, high 9, critical 27; no damping up to 100k events.
    mixed = threat_level({"low": 2, "medium": 1, "high": 1}, events=50_000, critical_asset_hits=0)
    assert mixed.weighted_open_alerts == 2 + 3 + 9
    assert mixed.score == 14.0 and mixed.level == 3
    # Volume damping: 4M events divide by sqrt(40).
    damped = threat_level({"high": 4}, events=4_000_000, critical_asset_hits=0)
    assert damped.score == pytest.approx(36 / math.sqrt(40), abs=1e-3)
    assert damped.level == 2  # 5.69 is level 2 by score, and an open high alert keeps it at >= 2
    # An open critical alert holds the sector at least at level 3 however large it is.
    floor = threat_level({"critical": 1}, events=100_000_000, critical_asset_hits=0)
    assert floor.score < 3 and floor.level == 3
    # Hits on critical assets: 2 * log2(1 + hits).
    hits = threat_level({}, events=10, critical_asset_hits=7)
    assert hits.score == 6.0 and hits.level == 2
    severe = threat_level({"critical": 4}, events=10, critical_asset_hits=0)
    assert severe.score == 108.0 and (severe.level, severe.name_en, severe.name_zh) == (
        5,
        "Severe",
        "严重",
    )
    more = [threat_level({"medium": n}, 10, 0).score for n in range(10)]
    assert more == sorted(more)


class FakeCatalogue:
    version = "test"

    def __init__(self, techniques: list[AttackTechnique]) -> None:
        self._techniques = {t.id: t for t in techniques}

    def find(self, technique_id: str) -> AttackTechnique | None:
        return self._techniques.get(technique_id)

    def tactics(self) -> list:
        return [
            type("T", (), {"id": i, "name": n})()
            for i, n in (("TA0006", "Credential Access"), ("TA0007", "Discovery"))
        ]


def test_shaping_tolerates_missing_indices_and_reports_failed_sections() -> None:
    request = SituationRequest.resolve(DAY, DAY + timedelta(hours=1), NOW)
    empty = [{"hits": {"total": {"value": 0}, "hits": []}} for _ in SEARCH_NAMES]
    empty[SEARCH_NAMES.index("indicators")] = {
        "error": {"type": "x", "reason": "no such field"},
        "status": 400,
    }
    situation = shape_situation(request, empty, scope=None)
    assert situation.events.total == 0
    assert len(situation.events.over_time) == 60  # empty buckets are there too
    assert {bucket.count for bucket in situation.events.over_time} == {0}
    assert situation.intelligence.indicators == 0
    assert [(e.section, e.reason) for e in situation.errors] == [("indicators", "no such field")]
    assert situation.threat_levels == [] and situation.collection.dead_letters is None


def test_shaping_builds_the_heat_map_and_merges_sources() -> None:
    request = SituationRequest.resolve(DAY, DAY + timedelta(hours=1), NOW, top=2)
    responses: list[dict] = [{} for _ in SEARCH_NAMES]
    responses[SEARCH_NAMES.index("alerts")] = {
        "hits": {"total": {"value": 3}},
        "aggregations": {
            "techniques": {
                "buckets": [{"key": "T1046", "doc_count": 2}, {"key": "T9999", "doc_count": 1}]
            },
            "tactics": {
                "buckets": [{"key": "TA0007", "doc_count": 2}, {"key": "TA0006", "doc_count": 1}]
            },
            "sources": {
                "values": {
                    "buckets": [
                        {
                            "key": "198.51.100.1",
                            "doc_count": 1,
                            "worst": {"value": 4.0},
                            "departments": {"buckets": [{"key": "energy", "doc_count": 1}]},
                        }
                    ]
                }
            },
        },
    }
    responses[SEARCH_NAMES.index("hostile")] = {
        "aggregations": {
            "sources": {
                "buckets": [
                    {
                        "key": "203.0.113.5",
                        "doc_count": 50,
                        "departments": {"buckets": [{"key": "finance", "doc_count": 50}]},
                    },
                    {
                        "key": "198.51.100.1",
                        "doc_count": 3,
                        "departments": {"buckets": [{"key": "finance", "doc_count": 3}]},
                    },
                ]
            }
        }
    }
    situation = shape_situation(
        request, responses, scope=None, catalogue=FakeCatalogue([DISCOVERY])
    )
    assert [t.id for t in situation.attack.tactics] == ["TA0006", "TA0007"]  # kill-chain order
    assert [(c.tactic_name, c.technique_id, c.alerts) for c in situation.attack.heatmap] == [
        ("Discovery", "T1046", 2)
    ]
    unknown = next(t for t in situation.attack.techniques if t.id == "T9999")
    assert unknown.name == "T9999" and unknown.tactics == []
    first, second = situation.top_attacking_sources
    assert (first.source, first.alerts, first.worst_severity, first.hostile_events) == (
        "198.51.100.1",
        1,
        "critical",
        3,
    )
    assert first.departments == ["energy", "finance"]
    assert (second.source, second.alerts, second.hostile_events) == ("203.0.113.5", 0, 50)


# ---------------------------------------------------------------------------- dead letters


def dead_letter_line(stage: str, n: int = 0) -> str:
    record = {
        "time": "2026-11-28T01:00:00.000Z",
        "stage": stage,
        "source": "x.log",
        "offset": n,
        "reason": "bad",
        "input": 'q"s',
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def test_dead_letters_are_counted_per_day_and_stage_incrementally(tmp_path: Path) -> None:
    counter = DeadLetterCounter(tmp_path)
    day_file = tmp_path / "dead-letter-2026-11-28.jsonl"
    day_file.write_text(dead_letter_line("parse") * 3 + dead_letter_line("index"), encoding="utf-8")
    (tmp_path / "dead-letter-2026-11-20.jsonl").write_text(
        dead_letter_line("parse"), encoding="utf-8"
    )
    summary = counter.summary(DAY, DAY + timedelta(days=1))
    assert (summary.total, summary.by_stage, summary.complete) == (
        4,
        {"index": 1, "parse": 3},
        True,
    )
    assert [d.day for d in summary.days] == ["2026-11-28"]
    # Appended lines are counted once; a line still being written waits for its newline.
    with day_file.open("a", encoding="utf-8") as sink:
        sink.write(dead_letter_line("audit") + dead_letter_line("webhook")[:20])
    assert counter.summary(DAY, DAY + timedelta(days=1)).by_stage == {
        "audit": 1,
        "index": 1,
        "parse": 3,
    }
    with day_file.open("a", encoding="utf-8") as sink:
        sink.write(dead_letter_line("webhook")[20:])
    assert counter.summary(DAY, DAY + timedelta(days=1)).total == 6
    # A replaced file (another inode) is counted from the start.
    replacement = tmp_path / "replacement"
    replacement.write_text(dead_letter_line("parse"), encoding="utf-8")
    os.replace(replacement, day_file)
    assert counter.summary(DAY, DAY + timedelta(days=1)).by_stage == {"parse": 1}


def test_dead_letter_counting_is_bounded_per_call(tmp_path: Path) -> None:
    line = dead_letter_line("parse")
    (tmp_path / "dead-letter-2026-11-28.jsonl").write_text(line * 100, encoding="utf-8")
    counter = DeadLetterCounter(tmp_path, budget_bytes=len(line) * 30)
    totals = []
    for _ in range(5):
        summary = counter.summary(DAY, DAY + timedelta(days=1))
        totals.append((summary.total, summary.complete))
    assert totals[0][1] is False and totals[0][0] < 100
    assert totals[-1] == (100, True)
    assert [t for t, _ in totals] == sorted(t for t, _ in totals)


def test_stage_reading_and_day_ranges() -> None:
    assert stage_of(dead_letter_line("index").encode()) == "index"
    assert stage_of(b"not json at all") == "unknown"
    assert stage_of(b'{"time": "x", "stage": ""}') == "unknown"
    assert days_between(DAY, DAY + timedelta(days=1)) == [DAY.date()]
    assert len(days_between(DAY, DAY + timedelta(days=1, seconds=1))) == 2
    assert len(days_between(DAY - timedelta(days=1000), DAY)) == 400


def test_collector_status_summary_tolerates_odd_files() -> None:
    assert summarise_collector(None, NOW) is None
    odd = summarise_collector(
        {"state": 3, "spool": "x", "totals": {"read": "many", "failed": 2}}, NOW
    )
    assert odd is not None and (odd.state, odd.read, odd.failed, odd.spooled_events) == (
        None,
        0,
        2,
        0,
    )
    status = {
        "state": "running",
        "running": True,
        "updated_at": format_timestamp(NOW - timedelta(seconds=5)),
        "spool": {"pending_events": 12, "used_bytes": 4096, "fill_ratio": 0.25},
        "totals": {"read": 100, "indexed": 80, "failed": 3, "lag_bytes": 900},
    }
    summary = summarise_collector(status, NOW)
    assert summary is not None
    assert (summary.spooled_events, summary.lag_bytes, summary.seconds_since_update) == (
        12,
        900,
        5.0,
    )


# ---------------------------------------------------------------------------- the endpoint


def event(n: int, department: str, sector: str, **fields: object) -> Event:
    moment = DAY + timedelta(hours=2, minutes=n % 50)
    document = {
        "@timestamp": format_timestamp(moment),
        "organization": {"id": department},
        "labels": {"sector": sector},
        "event": {"dataset": "flow", "ingested": format_timestamp(moment + timedelta(seconds=30))},
        "message": f"event {n}",
        **fields,
    }
    return Event(document=document, origin=Origin(f"seed-{department}", n))


def denied_to(ip: str, criticality: str, source: str) -> dict:
    return {
        "event": {
            "dataset": "flow",
            "type": ["connection", "denied"],
            "ingested": format_timestamp(DAY + timedelta(hours=3)),
        },
        "source": {"ip": source},
        "destination": {"ip": ip, "asset": {"criticality": criticality, "name": f"asset-{ip}"}},
    }


@pytest.fixture(scope="module")
def settings_once(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One private prefix for this module's endpoint tests (seeding once keeps them fast)."""
    settings = load_settings(
        es_url=cluster_url,
        index_prefix=f"lftest-{uuid.uuid4().hex[:10]}",
        home_dir=tmp_path_factory.mktemp("situation") / "home",
        masking_key=TEST_MASKING_KEY,
    )
    es = connect(settings)
    try:
        yield settings
    finally:
        delete_prefix(es, settings.index_prefix)
        es.close()


@pytest.fixture(scope="module")
def seeded(settings_once: Settings) -> dict:
    settings = settings_once
    store = EventStore(connect(settings), IndexNames(settings.index_prefix))
    store.install_templates()
    events = [event(n, "finance", "finance") for n in range(20)]
    events += [
        event(100 + n, "finance", "finance", **denied_to("10.20.1.13", "critical", "203.0.113.9"))
        for n in range(3)
    ]
    # An internal administrator's failed log-in on a critical host: hostile, but no critical-asset hit.
    events.append(
        event(
            200,
            "finance",
            "finance",
            event={
                "dataset": "system.auth",
                "category": ["authentication"],
                "outcome": "failure",
                "ingested": format_timestamp(DAY + timedelta(hours=3)),
            },
            host={"name": "fin-db-01", "asset": {"criticality": "critical"}},
            source={"ip": "10.20.5.5", "organization": {"id": "finance"}},
        )
    )
    events += [event(300 + n, "energy", "energy") for n in range(10)]
    events += [
        event(400 + n, "energy", "energy", **denied_to("10.30.1.11", "critical", "198.51.100.23"))
        for n in range(5)
    ]
    BulkWriter(store.client, store, DeadLetterFile(settings.dead_letter_dir)).add_all(events)
    store.refresh()

    alerts = AlertStore(store.client, settings.index_prefix)
    alerts.install()
    seen = DAY + timedelta(hours=2)
    made = [
        Alert(
            "scan",
            "Port scan",
            "behavioural",
            "critical",
            "source.ip",
            "198.51.100.23",
            seen,
            seen,
            "x",
            "energy",
            sector="energy",
            techniques=[DISCOVERY],
        ),
        Alert(
            "brute",
            "Brute force",
            "behavioural",
            "high",
            "source.ip",
            "203.0.113.9",
            seen,
            seen,
            "y",
            "finance",
            sector="finance",
            techniques=[GUESSING],
        ),
        Alert(
            "noise",
            "Noise",
            "behavioural",
            "low",
            "user.name",
            "li",
            seen,
            seen,
            "z",
            "finance",
            sector="finance",
        ),
    ]
    alerts.upsert(made)
    closed = store.client.get(index=alerts.index, id=made[2].id)["_source"]
    closed["alert"]["status"] = "closed"
    store.client.index(index=alerts.index, id=made[2].id, document=closed)
    alerts.refresh()

    incidents_index = f"{settings.index_prefix}-incidents"
    install_index(store.client, incidents_index, lifecycle.INCIDENT_FIELDS)
    # The API judges SLA deadlines against the real clock.
    real_now = datetime.now(UTC)
    created = real_now - timedelta(days=4)
    late = lifecycle.new_incident(
        title="Brute force on finance",
        severity="high",
        lead="finance",
        participants=[],
        alert_ids=[made[1].id],
        created_by="li",
        now=created,
        policy=lifecycle.SlaPolicy.default(),
    )
    late, task = lifecycle.add_task(
        late,
        title="block",
        department="finance",
        owner="wang",
        due=real_now - timedelta(hours=1),
        by="li",
        now=created,
    )
    late, done = lifecycle.add_task(
        late,
        title="done already",
        department="finance",
        owner=None,
        due=real_now - timedelta(hours=1),
        by="li",
        now=created,
    )
    late, _ = lifecycle.update_task(
        late, done["id"], status="done", owner=None, by="li", now=created
    )
    calm = lifecycle.new_incident(
        title="Scan of SCADA",
        severity="medium",
        lead="energy",
        participants=[],
        alert_ids=[made[0].id],
        created_by="zhao",
        now=real_now - timedelta(minutes=10),
        policy=lifecycle.SlaPolicy.default(),
    )
    for document in (late, calm):
        store.client.index(index=incidents_index, id=document["incident"]["id"], document=document)
    store.client.indices.refresh(index=incidents_index)

    # The sharing indices, shaped as the sharing side writes them (fields only).
    prefix = settings.index_prefix
    store.client.indices.create(
        index=f"{prefix}-disclosures",
        mappings={
            "properties": {
                "@timestamp": {"type": "date"},
                "department": {"type": "keyword"},
                "tlp": {"type": "keyword"},
                "object_count": {"type": "long"},
            }
        },
    )
    for department, count, tlp in (
        ("finance", 5, "green"),
        ("energy", 2, "amber"),
        ("finance", 1, "clear"),
    ):
        store.client.index(
            index=f"{prefix}-disclosures",
            document={
                "@timestamp": format_timestamp(DAY + timedelta(hours=5)),
                "department": department,
                "tlp": tlp,
                "object_count": count,
            },
        )
    store.client.indices.create(
        index=f"{prefix}-taxii-objects",
        mappings={
            "properties": {
                "date_added_us": {"type": "long"},
                "publisher_department": {"type": "keyword"},
                "type": {"type": "keyword"},
            }
        },
    )
    added = int((DAY + timedelta(hours=6)).timestamp() * 1_000_000)
    for department, kind in (
        ("finance", "indicator"),
        ("finance", "indicator"),
        ("energy", "malware"),
    ):
        store.client.index(
            index=f"{prefix}-taxii-objects",
            document={"date_added_us": added, "publisher_department": department, "type": kind},
        )
    store.client.indices.refresh(index=f"{prefix}-disclosures,{prefix}-taxii-objects")

    settings.dead_letter_dir.mkdir(parents=True, exist_ok=True)
    (settings.dead_letter_dir / "dead-letter-2026-11-28.jsonl").write_text(
        dead_letter_line("parse") * 2 + dead_letter_line("index"), encoding="utf-8"
    )
    settings.collector_status_file.write_text(
        json.dumps(
            {
                "state": "finished",
                "pid": 0,
                "updated_at": format_timestamp(NOW),
                "spool": {"pending_events": 7},
                "totals": {"lag_bytes": 10},
            }
        ),
        encoding="utf-8",
    )

    principals = PrincipalStore(store.client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance")
    return {
        "admin": {"Authorization": f"Bearer {principals.create_key('admin')}"},
        "fin": {"Authorization": f"Bearer {principals.create_key('fin')}"},
        "task": task["id"],
    }


@pytest.fixture(scope="module")
def api(settings_once: Settings, seeded: dict) -> Iterator[TestClient]:
    with TestClient(create_app(settings_once)) as client:
        yield client


RANGE = {"start": "2026-11-28T00:00:00Z", "end": "2026-11-29T00:00:00Z"}


def test_the_province_overview(api: TestClient, seeded: dict) -> None:
    response = api.get("/api/v1/situation", params=RANGE, headers=seeded["admin"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["errors"] == []
    assert body["range"]["interval"] == "15m" and len(body["events"]["over_time"]) >= 96
    events = body["events"]
    assert events["total"] == 39
    assert events["by_sector"] == {"finance": 24, "energy": 15}
    assert sum(bucket["count"] for bucket in events["over_time"]) == 39

    alerts = body["alerts"]
    assert (alerts["total"], alerts["open"]) == (3, 2)
    assert alerts["open_by_severity"] == {"critical": 1, "high": 1}
    assert sum(bucket["count"] for bucket in alerts["new_over_time"]) == 3
    cells = {(c["tactic_name"], c["technique_id"]) for c in body["attack"]["heatmap"]}
    assert cells == {("Discovery", "T1046"), ("Credential Access", "T1110.001")}
    assert body["attack"]["catalogue_version"]  # names come from MITRE's data

    target = body["top_attacked_assets"][0]
    assert (
        target["asset"],
        target["kind"],
        target["criticality"],
        target["department"],
        target["hostile_events"],
    ) == (
        "10.30.1.11",
        "ip",
        "critical",
        "energy",
        5,
    )
    assert {"fin-db-01", "10.20.1.13"} <= {a["asset"] for a in body["top_attacked_assets"]}
    source = body["top_attacking_sources"][0]
    assert (
        source["source"],
        source["alerts"],
        source["worst_severity"],
        source["hostile_events"],
    ) == ("198.51.100.23", 1, "critical", 5)

    incidents = body["incidents"]
    assert (incidents["open"], incidents["overdue_tasks"]) == (2, 1)
    assert (incidents["acknowledge_overdue"], incidents["resolve_overdue"]) == (1, 1)
    assert [t["task_id"] for t in incidents["overdue_task_list"]] == [seeded["task"]]

    assert body["intelligence"]["received"] == 8
    assert body["intelligence"]["received_by_tlp"] == {"green": 5, "amber": 2, "clear": 1}
    assert body["intelligence"]["shared_by_type"] == {"indicator": 2, "malware": 1}
    assert body["intelligence"]["indicators"] == 0  # no <prefix>-intel index: zeros, no error

    collection = body["collection"]
    sources = {(s["dataset"], s["department"]): s for s in collection["sources"]}
    assert sources[("flow", "energy")]["events"] == 15
    assert sources[("flow", "energy")]["latest_ingested"] == "2026-11-28T03:00:00.000Z"
    # Silent: nothing for 15 minutes and ten usual gaps; a source sending once a day is not.
    assert sources[("flow", "energy")]["silent"] and sources[("flow", "finance")]["silent"]
    assert not sources[("system.auth", "finance")]["silent"]
    assert collection["dead_letters"]["by_stage"] == {"index": 1, "parse": 2}
    assert collection["collector"]["spooled_events"] == 7

    levels = {level["sector"]: level for level in body["threat_levels"]}
    assert (levels["energy"]["critical_asset_hits"], levels["finance"]["critical_asset_hits"]) == (
        5,
        3,
    )
    for sector, level in levels.items():
        expected = threat_level(level["open_alerts"], level["events"], level["critical_asset_hits"])
        assert (level["level"], level["score"]) == (expected.level, expected.score), sector
    assert levels["energy"]["open_alerts"]["critical"] == 1 and levels["energy"]["level"] >= 3
    assert body["threat_levels"][0]["sector"] == "energy"


def test_a_department_analyst_sees_only_its_department(api: TestClient, seeded: dict) -> None:
    body = api.get("/api/v1/situation", params=RANGE, headers=seeded["fin"]).json()
    assert body["scope"]["departments"] == ["finance"]
    assert body["events"]["total"] == 24 and set(body["events"]["by_department"]) == {"finance"}
    assert body["alerts"]["total"] == 2
    assert {c["technique_id"] for c in body["attack"]["heatmap"]} == {"T1110.001"}
    assert "10.30.1.11" not in {a["asset"] for a in body["top_attacked_assets"]}
    assert "198.51.100.23" not in {s["source"] for s in body["top_attacking_sources"]}
    assert body["incidents"]["open"] == 1
    assert body["intelligence"]["received"] == 6 and body["intelligence"]["shared"] == 2
    assert {s["department"] for s in body["collection"]["sources"]} == {"finance"}
    # Dead letters and the collector name no department: province-wide roles only.
    assert body["collection"]["dead_letters"] is None and body["collection"]["collector"] is None
    assert [level["sector"] for level in body["threat_levels"]] == ["finance"]
    # Asking for another department gives nothing rather than its data.
    other = api.get(
        "/api/v1/situation", params={**RANGE, "department": "energy"}, headers=seeded["fin"]
    ).json()
    assert other["events"]["total"] == 0 and other["alerts"]["total"] == 0


def test_filters_and_refusals(api: TestClient, seeded: dict) -> None:
    energy = api.get(
        "/api/v1/situation", params={**RANGE, "sector": "energy", "top": 1}, headers=seeded["admin"]
    ).json()
    assert energy["events"]["total"] == 15 and len(energy["top_attacked_assets"]) == 1
    backwards = api.get(
        "/api/v1/situation",
        params={"start": RANGE["end"], "end": RANGE["start"]},
        headers=seeded["admin"],
    )
    assert backwards.status_code == 422 and backwards.json()["error"]["code"] == "invalid_query"
    too_long = api.get(
        "/api/v1/situation",
        params={"start": "2020-01-01T00:00:00Z", "end": RANGE["end"]},
        headers=seeded["admin"],
    )
    assert too_long.status_code == 422
    assert (
        api.get(
            "/api/v1/situation", params={**RANGE, "top": 51}, headers=seeded["admin"]
        ).status_code
        == 422
    )
    assert api.get("/api/v1/situation", params=RANGE).status_code == 401
