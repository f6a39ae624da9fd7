"""Every built-in behavioural rule against the real node: a positive and a negative fixture each.

All fixtures are written once into one private prefix. Each rule's positive events belong to
department `<rule>-pos` and its negative events to `<rule>-neg`, so a rule's alerts can be
attributed to its own fixtures even when another rule's events would also match it.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from detection.alerts import Alert
from detection.rule_executor import RuleExecutor, RulePlan
from detection.rule_format import BehaviouralRule, builtin_rules
from lianfang.schema import format_timestamp
from lianfang.settings import load_settings
from lianfang.store import EventStore, IndexNames, connect, delete_prefix

# Tuesday 2026-11-24, 10:00 in Shanghai: inside working hours.
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
RANGE_START = T0 - timedelta(hours=6)
RANGE_END = T0 + timedelta(hours=18)
# Baseline rules judge the day from T0 - 6h, against the days before it.
HISTORY_START = RANGE_START - timedelta(days=1)
TEST_PARAMETERS = {"file-access-above-baseline": {"min_files": 50}}

Doc = dict[str, Any]


def event(moment: datetime, org: str, **fields: Any) -> Doc:
    """An ECS document with dotted keys nested."""
    document: Doc = {"@timestamp": format_timestamp(moment), "organization": {"id": org}}
    for dotted, value in fields.items():
        target = document
        *parents, leaf = dotted.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return document


def auth(
    moment: datetime, org: str, outcome: str, ip: str, user: str, action: str = "ssh_login"
) -> Doc:
    return event(
        moment,
        org,
        event__category=["authentication"],
        event__action=action,
        event__outcome=outcome,
        source__ip=ip,
        user__name=user,
        host__name="bastion",
    )


def flow(moment: datetime, org: str, src: str, dst: str, port: int, **extra: Any) -> Doc:
    fields = {
        "event__category": ["network"],
        "event__action": "flow",
        "event__outcome": "success",
        "source__ip": src,
        "destination__ip": dst,
        "destination__port": port,
        "network__transport": "tcp",
        "network__direction": "outbound",
        "source__bytes": 500,
    }
    fields.update(extra)
    return event(moment, org, **fields)


def dns(moment: datetime, org: str, src: str, name: str) -> Doc:
    return event(
        moment,
        org,
        event__category=["network"],
        event__action="dns_query",
        source__ip=src,
        destination__ip="114.114.114.114",
        destination__port=53,
        network__protocol="dns",
        dns__question__name=name,
    )


def spread(start: datetime, count: int, step: timedelta) -> list[datetime]:
    return [start + step * i for i in range(count)]


def ssh_brute_force(org: str, positive: bool) -> list[Doc]:
    step = timedelta(seconds=10) if positive else timedelta(minutes=20)
    users = ["root", "admin", "oracle"]
    return [
        auth(m, org, "failure", "203.0.113.5", users[i % 3])
        for i, m in enumerate(spread(T0, 30, step))
    ]


def windows_brute_force(org: str, positive: bool) -> list[Doc]:
    count = 25 if positive else 10
    return [
        auth(m, org, "failure", "198.51.100.7", "Administrator", action="logon-failed")
        for m in spread(T0, count, timedelta(seconds=5))
    ]


def web_brute_force(org: str, positive: bool) -> list[Doc]:
    path, method = ("/user/login", "POST") if positive else ("/index.html", "GET")
    return [
        event(
            m,
            org,
            event__category=["web"],
            source__ip="192.0.2.44",
            url__path=path,
            http__request__method=method,
            http__response__status_code=200,
        )
        for m in spread(T0, 40, timedelta(seconds=5))
    ]


def password_spraying(org: str, positive: bool) -> list[Doc]:
    # Negative: brute force against three accounts, not spraying.
    users = [f"user{i:02d}" for i in range(15)] if positive else ["root", "admin", "oracle"] * 20
    return [
        auth(T0 + timedelta(seconds=20 * i), org, "failure", "203.0.113.9", user)
        for i, user in enumerate(users)
    ]


def success_after_failures(org: str, positive: bool) -> list[Doc]:
    failures = [
        auth(m, org, "failure", "203.0.113.10", "admin")
        for m in spread(T0 + timedelta(minutes=1), 12, timedelta(seconds=5))
    ]
    success_time = T0 + timedelta(minutes=3) if positive else T0
    return [*failures, auth(success_time, org, "success", "203.0.113.10", "admin")]


def vertical_scan(org: str, positive: bool) -> list[Doc]:
    ports = range(1, 101) if positive else [22, 80, 443, 3306, 8080] * 20
    return [
        flow(
            T0 + timedelta(milliseconds=500 * i),
            org,
            "198.51.100.23",
            "10.30.1.11",
            port,
            event__outcome="failure",
            network__direction="inbound",
        )
        for i, port in enumerate(ports)
    ]


def horizontal_scan(org: str, positive: bool) -> list[Doc]:
    port = 445 if positive else 443
    return [
        flow(T0 + timedelta(seconds=2 * i), org, "10.40.1.50", f"10.40.2.{i + 1}", port)
        for i in range(60)
    ]


def dns_tunnelling(org: str, positive: bool) -> list[Doc]:
    rng = random.Random(7)
    if positive:
        names = [
            "".join(rng.choices(string.ascii_lowercase + string.digits, k=52)) + ".t.c2-example.net"
            for _ in range(30)
        ]
    else:
        names = [f"edge-cache-{i}.static-content-delivery.example-cdn.com" for i in (1, 2, 3)] * 10
    return [
        dns(T0 + timedelta(seconds=10 * i), org, "10.20.3.4", name) for i, name in enumerate(names)
    ]


def dns_volume(org: str, positive: bool) -> list[Doc]:
    if positive:
        names = [f"x{i:04x}.dga-c2-example.net" for i in range(200)]
    else:
        names = [f"www.site{i % 10}.example.com" for i in range(200)]
    return [
        dns(T0 + timedelta(seconds=3 * i), org, "10.20.3.5", name) for i, name in enumerate(names)
    ]


def beaconing(org: str, positive: bool) -> list[Doc]:
    rng = random.Random(11)
    moments, moment = [], T0
    for _ in range(20):
        gap = 60 + rng.uniform(-1, 1) if positive else rng.expovariate(1 / 60)
        moment += timedelta(seconds=gap)
        moments.append(moment)
    return [flow(m, org, "10.20.5.6", "45.33.2.1", 8443) for m in moments]


def windows_log_cleared(org: str, positive: bool) -> list[Doc]:
    action = "audit-log-cleared" if positive else "logged-in"
    return [
        event(
            T0,
            org,
            event__code="1102" if positive else "4624",
            event__action=action,
            event__category=["iam"],
            host__name="dc01",
            user__name="Administrator",
        )
    ]


def linux_log_cleared(org: str, positive: bool) -> list[Doc]:
    commands = (
        ["/usr/sbin/auditctl -D", "truncate -s 0 /var/log/secure"]
        if positive
        else ["/usr/sbin/auditctl -l", "cat /var/log/messages"]
    )
    return [
        event(
            T0 + timedelta(minutes=i),
            org,
            event__category=["process"],
            event__action="sudo",
            host__name="web01",
            user__name="ops",
            process__command_line=command,
        )
        for i, command in enumerate(commands)
    ]


def windows_new_admin(org: str, positive: bool) -> list[Doc]:
    sid = "S-1-5-21-1-2-3-1107"
    group = ("Administrators", "S-1-5-32-544") if positive else ("Users", "S-1-5-32-545")
    return [
        event(
            T0,
            org,
            event__category=["iam"],
            event__action="added-user-account",
            user__name="ops",
            user__target__id=sid,
            user__target__name="helpdesk2",
            host__name="dc01",
        ),
        event(
            T0 + timedelta(minutes=2),
            org,
            event__category=["iam"],
            event__action="added-member-to-group",
            user__name="ops",
            user__target__id=sid,
            group__name=group[0],
            group__id=group[1],
            host__name="dc01",
        ),
    ]


def linux_new_admin(org: str, positive: bool) -> list[Doc]:
    group = "sudo" if positive else "developers"
    return [
        event(
            T0,
            org,
            event__category=["iam"],
            event__action="user-created",
            user__target__name="backup2",
            host__name="web01",
        ),
        event(
            T0 + timedelta(minutes=1),
            org,
            event__category=["iam"],
            event__action="user-added-to-group",
            user__target__name="backup2",
            group__name=group,
            host__name="web01",
        ),
    ]


def admin_off_hours(org: str, positive: bool) -> list[Doc]:
    # 23:00 in Shanghai on a Tuesday, or 11:00.
    moment = T0 + timedelta(hours=13) if positive else T0 + timedelta(hours=1)
    return [auth(moment, org, "success", "10.10.1.20", "root")]


def hourly(start: datetime, hours: int) -> list[datetime]:
    return [start + timedelta(hours=h, minutes=7) for h in range(hours)]


def outbound_baseline(org: str, positive: bool) -> list[Doc]:
    usual = 1_000_000 if positive else 400_000_000
    history = [
        flow(m, org, "10.20.1.14", "185.220.101.9", 443, source__bytes=usual)
        for m in hourly(HISTORY_START, 30)
    ]
    burst = [
        flow(
            T0 + timedelta(minutes=5 + i),
            org,
            "10.20.1.14",
            "185.220.101.9",
            443,
            source__bytes=100_000_000,
        )
        for i in range(5)
    ]
    return history + burst


def db_query(moment: datetime, org: str, user: str, rows: int, statement: str) -> Doc:
    return event(
        moment,
        org,
        event__category=["database"],
        event__action="select",
        user__name=user,
        db__user=user,
        db__name="citizen",
        db__rows=rows,
        db__statement=statement,
    )


def database_baseline(org: str, positive: bool) -> list[Doc]:
    usual = 100 if positive else 300_000
    statement = "SELECT * FROM vehicles WHERE plate = :plate"
    history = [db_query(m, org, "zhang.wei", usual, statement) for m in hourly(HISTORY_START, 30)]
    burst = [
        db_query(T0 + timedelta(minutes=i), org, "zhang.wei", 100_000, statement) for i in range(3)
    ]
    return history + burst


def file_baseline(org: str, positive: bool) -> list[Doc]:
    per_hour = 2 if positive else 40
    documents = [
        event(
            m + timedelta(seconds=i),
            org,
            event__category=["file"],
            event__type=["access"],
            user__name="liu.yang",
            file__path=f"/share/{i}.xlsx",
            host__name="fin-file-01",
        )
        for m in hourly(HISTORY_START, 30)
        for i in range(per_hour)
    ]
    documents += [
        event(
            T0 + timedelta(seconds=i),
            org,
            event__category=["file"],
            event__type=["access"],
            user__name="liu.yang",
            file__path=f"/share/x{i}.xlsx",
            host__name="fin-file-01",
        )
        for i in range(60)
    ]
    return documents


def personal_data(org: str, positive: bool) -> list[Doc]:
    statement = (
        "SELECT name, id_number, phone FROM citizen_records LIMIT 5000"
        if positive
        else "SELECT id, total FROM orders LIMIT 50000"
    )
    rows = 5000 if positive else 50000
    return [
        db_query(T0 + timedelta(minutes=i), org, "report_svc", rows, statement) for i in range(3)
    ]


FIXTURES = {
    "ssh-brute-force": ssh_brute_force,
    "windows-logon-brute-force": windows_brute_force,
    "web-login-brute-force": web_brute_force,
    "password-spraying": password_spraying,
    "success-after-failures": success_after_failures,
    "port-scan-vertical": vertical_scan,
    "port-scan-horizontal": horizontal_scan,
    "dns-tunnelling": dns_tunnelling,
    "dns-volume-per-domain": dns_volume,
    "beaconing": beaconing,
    "audit-log-cleared-windows": windows_log_cleared,
    "audit-log-cleared-linux": linux_log_cleared,
    "new-privileged-account-windows": windows_new_admin,
    "new-privileged-account-linux": linux_new_admin,
    "admin-logon-off-hours": admin_off_hours,
    "outbound-bytes-above-baseline": outbound_baseline,
    "database-rows-above-baseline": database_baseline,
    "file-access-above-baseline": file_baseline,
    "personal-data-bulk-access": personal_data,
}


def write_events(client: Elasticsearch, store: EventStore, documents: list[Doc]) -> None:
    """Bulk-index documents into their daily indices, with fresh ids."""
    store.install_templates()
    operations: list[dict[str, Any]] = []
    for document in documents:
        moment = datetime.fromisoformat(document["@timestamp"].replace("Z", "+00:00"))
        event_id = uuid.uuid4().hex
        document.setdefault("event", {})["id"] = event_id
        operations.append({"create": {"_index": store.index_for(moment), "_id": event_id}})
        operations.append(document)
    for begin in range(0, len(operations), 4000):
        response = client.bulk(operations=operations[begin : begin + 4000])
        assert not response["errors"], response["items"][:3]
    store.refresh()


@pytest.fixture(scope="module")
def loaded(cluster_url: str) -> Iterator[tuple[Elasticsearch, str]]:
    """Every rule's fixtures in one private prefix (deleted afterwards)."""
    prefix = f"lftest-rules-{uuid.uuid4().hex[:8]}"
    client = connect(load_settings(es_url=cluster_url, index_prefix=prefix))
    store = EventStore(client, IndexNames(prefix))
    documents = [
        document
        for rule_id, build in FIXTURES.items()
        for positive in (True, False)
        for document in build(f"{rule_id}-{'pos' if positive else 'neg'}", positive)
    ]
    write_events(client, store, documents)
    try:
        yield client, prefix
    finally:
        delete_prefix(client, prefix)
        client.close()


RULES = {rule.id: rule for rule in builtin_rules()}


def run_rule(loaded: tuple[Elasticsearch, str], rule: BehaviouralRule) -> list[Alert]:
    client, prefix = loaded
    plan = RulePlan.default(rule)
    plan = RulePlan(rule, {**plan.parameters, **TEST_PARAMETERS.get(rule.id, {})}, plan.severity)
    return RuleExecutor(client, f"{prefix}-events").alerts(plan, RANGE_START, RANGE_END)


def test_every_builtin_rule_has_fixtures() -> None:
    assert set(FIXTURES) == set(RULES)


@pytest.mark.parametrize("rule_id", sorted(FIXTURES))
def test_rule_fires_on_positive_fixture_only(
    loaded: tuple[Elasticsearch, str], rule_id: str
) -> None:
    rule = RULES[rule_id]
    alerts = run_rule(loaded, rule)
    own = [alert for alert in alerts if alert.organization_id == f"{rule_id}-pos"]
    wrong = [alert for alert in alerts if alert.organization_id == f"{rule_id}-neg"]
    assert own, f"{rule_id} did not fire on its positive fixture"
    assert not wrong, f"{rule_id} fired on its negative fixture: {wrong[0].explanation}"
    alert = own[0]
    assert [t.id for t in alert.techniques] == rule.techniques
    assert all(t.name and t.tactics for t in alert.techniques)
    assert alert.evidence_event_ids and alert.count >= 1
    assert "?" not in alert.explanation and "{" not in alert.explanation, alert.explanation
    assert alert.entity_type == rule.entity_field and alert.entity_value != "unknown"
