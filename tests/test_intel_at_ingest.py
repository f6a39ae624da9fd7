"""Active indicators matched at ingest on every path, and reloaded while the inputs run.

The collector runtime (its own files and a file group), the syslog server and the HTTP
ingest API each enrich events holding an active indicator's address or domain with
`threat.enrichments`, against the real node; a long-running input picks up an indicator
added after it started, and drops a revoked one, after `intel.ingest_refresh_seconds`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.collector_config import SyslogListenerConfig
from collectors.inputs.file_group import FileGroupInput
from collectors.inputs.syslog_server import SyslogServer
from collectors.intel_hook import Indicator, IndicatorSet
from collectors.intel_refresh import RefreshingLookup
from collectors.normalise import Department
from collectors.runtime import CollectorRuntime, CollectorSnapshot
from lianfang.principals import PrincipalStore, Role
from lianfang.schema import format_timestamp
from lianfang.settings import Settings
from lianfang.store import EventStore, connect
from sharing.indicator_matching import live_ingest_lookup
from sharing.stix_ids import stix_timestamp
from tests.intel_fixtures import indicator, intel_store
from tests.test_collector_runtime import cli_environment, collect_command

MOMENT = format_timestamp(
    (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
)
BAD_IP = "203.0.113.77"
BAD_DOMAIN = "c2.evil.example"
LATE_IP = "198.51.100.23"
CLEAN_IP = "203.0.113.78"
FINANCE = Department("finance", "省财政厅", "finance")

IP_INDICATOR = indicator("ingest-ip", f"[ipv4-addr:value = '{BAD_IP}']", confidence=70)
DOMAIN_INDICATOR = indicator("ingest-domain", f"[domain-name:value = '{BAD_DOMAIN}']")
LATE_INDICATOR = indicator("ingest-late", f"[ipv4-addr:value = '{LATE_IP}']", confidence=70)
WEAK_INDICATOR = indicator("ingest-weak", f"[ipv4-addr:value = '{CLEAN_IP}']", confidence=10)
EXPIRED_INDICATOR = indicator(
    "ingest-expired",
    "[domain-name:value = 'gone.example']",
    valid_until="2026-01-02T00:00:00Z",
)


def quick(settings: Settings, seconds: float) -> Settings:
    """The settings with a short indicator refresh interval."""
    intel = settings.intel.model_copy(update={"ingest_refresh_seconds": seconds})
    return settings.model_copy(update={"intel": intel})


def put_indicators(client: Elasticsearch, settings: Settings, *objects: dict[str, Any]) -> None:
    report = intel_store(client, settings).intake(list(objects), source="feed:test")
    assert report.quarantined == 0, report.quarantine_reasons


def revoke(client: Elasticsearch, settings: Settings, original: dict[str, Any]) -> None:
    newer = {**original, "modified": stix_timestamp(datetime.now(UTC)), "revoked": True}
    assert intel_store(client, settings).intake([newer], source="feed:test").revoked == 1


def ecs_line(line: int, **fields: Any) -> str:
    return json.dumps({"@timestamp": MOMENT, "message": f"line {line}", "line": line, **fields})


def sample_lines(first: int = 0) -> list[str]:
    """An address match, a subdomain match, a below-threshold address, an expired domain, none."""
    return [
        ecs_line(first, source={"ip": "10.1.2.3"}, destination={"ip": BAD_IP}),
        ecs_line(first + 1, dns={"question": {"name": f"www.{BAD_DOMAIN}"}}),
        ecs_line(first + 2, destination={"ip": CLEAN_IP}),
        ecs_line(first + 3, dns={"question": {"name": "x.gone.example"}}),
        ecs_line(first + 4, source={"ip": "10.1.2.4"}),
    ]


def matched_ids(document: dict[str, Any]) -> set[str]:
    return {entry["matched"]["id"] for entry in document.get("threat", {}).get("enrichments", [])}


def documents(client: Elasticsearch, store: EventStore) -> list[dict[str, Any]]:
    store.refresh()
    hits = client.search(
        index=store.names.events_alias, size=1000, sort=["@timestamp"], ignore_unavailable=True
    )
    return [hit["_source"] for hit in hits["hits"]["hits"]]


def assert_sample_enrichment(found: list[dict[str, Any]]) -> None:
    """The address and domain lines carry their indicator; the other three nothing."""
    by_offset: dict[int, set[str]] = {}
    for document in found:
        by_offset[int(document["line"]) % 5] = matched_ids(document)
    assert by_offset == {
        0: {IP_INDICATOR["id"]},
        1: {DOMAIN_INDICATOR["id"]},
        2: set(),  # confidence 10: below the threshold (30)
        3: set(),  # valid_until passed
        4: set(),
    }
    [entry] = next(d for d in found if int(d["line"]) % 5 == 0)["threat"]["enrichments"]
    assert entry["matched"]["field"] == "destination.ip"
    assert entry["matched"]["type"] == "indicator_match_rule"
    assert entry["indicator"]["type"] == "ipv4-addr" and entry["indicator"]["confidence"] == "High"
    assert entry["indicator"]["marking"]["tlp"] == "GREEN"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def all_indicators(client: Elasticsearch, settings: Settings) -> None:
    put_indicators(
        client, settings, IP_INDICATOR, DOMAIN_INDICATOR, WEAK_INDICATOR, EXPIRED_INDICATOR
    )


# ------------------------------------------------------------------ (a) collector files


def test_the_collector_runtime_and_a_file_group_match_at_ingest(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    all_indicators(client, settings)
    lookup = live_ingest_lookup(settings, client)
    assert lookup is not None and lookup.status().indicators == 2
    (tmp_path / "own").mkdir()
    (tmp_path / "group").mkdir()
    (tmp_path / "own" / "app.log").write_text("\n".join(sample_lines(0)) + "\n")
    (tmp_path / "group" / "app.log").write_text("\n".join(sample_lines(10)) + "\n")
    group = FileGroupInput(
        settings,
        "finance-files",
        [str(tmp_path / "group" / "*.log")],
        follow=False,
        format_name="json",
        department=FINANCE,
        indicators=lookup,
    )
    final = CollectorRuntime(
        settings,
        store,
        [str(tmp_path / "own" / "*.log")],
        format_name="json",
        department=FINANCE,
        push_inputs=[group],
        indicators=lookup,
        status_seconds=0.2,
    ).run()
    assert final.state == "finished" and final.totals["indexed"] == 10
    found = documents(client, store)
    assert_sample_enrichment([d for d in found if d["line"] < 10])  # the runtime's own files
    assert_sample_enrichment([d for d in found if d["line"] >= 10])  # the file group
    assert final.intelligence is not None
    assert (final.intelligence["indicators"], final.intelligence["failures"]) == (2, 0)
    status = json.loads(settings.collector_status_file.read_text())
    assert status["intelligence"]["loads"] >= 1


@pytest.mark.slow
def test_collect_stdin_and_collect_files_match_at_ingest(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    all_indicators(client, settings)
    piped = subprocess.run(
        collect_command("stdin", "--format", "json", "--department", "finance", "--json"),
        input="\n".join(sample_lines(0)) + "\n",
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert json.loads(piped.stdout)["intelligence"]["indicators"] == 2
    log = tmp_path / "app.log"
    log.write_text("\n".join(sample_lines(10)) + "\n")
    collected = subprocess.run(
        collect_command("files", str(log), "--format", "json", "--json"),
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert collected.returncode == 0, collected.stderr[-2000:]
    found = documents(client, store)
    assert_sample_enrichment([d for d in found if d["line"] < 10])
    assert_sample_enrichment([d for d in found if d["line"] >= 10])


# ------------------------------------------------------------------ (b), (d) syslog


class SyslogCollector:
    """A runtime with one TCP syslog listener, run in a thread."""

    def __init__(self, settings: Settings, lookup: RefreshingLookup | None) -> None:
        listener = SyslogListenerConfig(name="tcp", transport="tcp", port=0, format="syslog")
        self.server = SyslogServer(
            settings, [listener], peers={"127.0.0.1/32": FINANCE}, indicators=lookup
        )
        self.server.bind()
        self.runtime = CollectorRuntime(
            settings,
            EventStore.from_settings(settings),
            [],
            push_inputs=[self.server],
            indicators=lookup,
            status_seconds=0.2,
        )
        self.result: list[CollectorSnapshot] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.runtime.run()))
        self.thread.start()

    def send(self, *messages: str) -> None:
        with socket.create_connection(self.server.addresses["tcp"]) as connection:
            connection.sendall("".join(m + "\n" for m in messages).encode())

    def stop(self) -> CollectorSnapshot:
        self.runtime.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.result[0]


def failed_login(number: int, address: str) -> str:
    """An sshd line the syslog format turns into an event with `source.ip`."""
    return (
        f"<38>1 {MOMENT} bastion sshd {4000 + number} - - "
        f"Failed password for root from {address} port {50000 + number} ssh2"
    )


def by_pid(found: list[dict[str, Any]]) -> dict[int, set[str]]:
    return {int(d["process"]["pid"]) - 4000: matched_ids(d) for d in found}


def test_the_syslog_server_matches_at_ingest(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    all_indicators(client, settings)
    collector = SyslogCollector(settings, live_ingest_lookup(settings, client))
    try:
        collector.send(
            failed_login(0, BAD_IP), failed_login(1, CLEAN_IP), failed_login(2, "10.9.9.9")
        )
        wait_for(lambda: len(documents(client, store)) == 3, 30, "three syslog events")
    finally:
        final = collector.stop()
    found = documents(client, store)
    assert all(d["source"]["ip"] for d in found)
    assert by_pid(found) == {0: {IP_INDICATOR["id"]}, 1: set(), 2: set()}
    [entry] = next(d for d in found if d["process"]["pid"] == 4000)["threat"]["enrichments"]
    assert entry["matched"]["field"] == "source.ip"
    assert final.totals["indexed"] == 3


def test_a_running_input_picks_up_new_indicators_and_drops_revoked_ones(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    fast = quick(settings, 0.5)
    lookup = live_ingest_lookup(fast, client)  # no intelligence index yet: an empty set
    assert lookup is not None and lookup.status().indicators == 0
    collector = SyslogCollector(fast, lookup)
    sent = 0

    def send_and_wait(address: str) -> set[str]:
        """Send one event and return what it matched once stored."""
        nonlocal sent
        number = sent
        sent += 1
        collector.send(failed_login(number, address))
        wait_for(lambda: number in by_pid(documents(client, store)), 30, f"event {number}")
        return by_pid(documents(client, store))[number]

    def reloaded_after(loads: int) -> None:
        """Wait out the interval; a matched event starts the reload, which is awaited."""
        time.sleep(fast.intel.ingest_refresh_seconds)
        send_and_wait("10.9.9.9")
        wait_for(lambda: lookup.status().loads > loads, 30, "a reload")

    try:
        assert send_and_wait(LATE_IP) == set()
        put_indicators(client, settings, LATE_INDICATOR)
        reloaded_after(lookup.status().loads)
        assert lookup.status().indicators == 1
        assert send_and_wait(LATE_IP) == {LATE_INDICATOR["id"]}

        revoke(client, settings, LATE_INDICATOR)
        reloaded_after(lookup.status().loads)
        assert lookup.status().indicators == 0
        assert send_and_wait(LATE_IP) == set()
    finally:
        final = collector.stop()
    assert final.intelligence is not None and final.intelligence["failures"] == 0
    assert final.totals["indexed"] == sent


# ------------------------------------------------------------------ (c), (d) HTTP ingest


@pytest.fixture
def analyst_key(store: EventStore, settings: Settings) -> str:
    principals = PrincipalStore(store.client, settings.index_prefix)
    principals.install()
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance")
    return principals.create_key("fin")


def test_the_http_ingest_api_matches_and_follows_revocations(
    settings: Settings, client: Elasticsearch, store: EventStore, analyst_key: str
) -> None:
    all_indicators(client, settings)
    fast = quick(settings, 0.5)
    headers = {"Authorization": f"Bearer {analyst_key}", "Content-Type": "application/x-ndjson"}
    with TestClient(create_app(fast)) as api:
        response = api.post("/api/v1/ingest", content="\n".join(sample_lines(0)), headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["indexed"] == 5
        assert_sample_enrichment(documents(client, store))

        lookup = api.app.state.batch_ingestor.indicators  # type: ignore[attr-defined]
        loads = lookup.status().loads
        revoke(client, settings, IP_INDICATOR)
        time.sleep(fast.intel.ingest_refresh_seconds)
        trigger = api.post("/api/v1/ingest", content=ecs_line(99), headers=headers)
        assert trigger.status_code == 200
        wait_for(lambda: lookup.status().loads > loads, 30, "a reload")
        after = api.post("/api/v1/ingest", content="\n".join(sample_lines(100)), headers=headers)
        assert after.status_code == 200
    late = [d for d in documents(client, store) if d["line"] >= 100]
    assert {int(d["line"]) - 100: matched_ids(d) for d in late} == {
        0: set(),  # revoked
        1: {DOMAIN_INDICATOR["id"]},
        2: set(),
        3: set(),
        4: set(),
    }


# ------------------------------------------------------------------ unavailability


def test_an_unreachable_store_starts_empty_and_never_stops_matching(
    settings: Settings, client: Elasticsearch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    away = settings.model_copy(update={"es_url": f"http://127.0.0.1:{closed_port}"})
    lookup = live_ingest_lookup(away, connect(away))
    assert lookup is not None
    status = lookup.status()
    assert (status.indicators, status.loads, status.failures) == (0, 0, 1)
    assert status.last_error and "Connection" in status.last_error
    assert lookup.match({"destination": {"ip": BAD_IP}}) == []


# ------------------------------------------------------------------ RefreshingLookup alone


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def address_set(*addresses: str) -> IndicatorSet:
    return IndicatorSet(Indicator(f"indicator--{a}", "ipv4-addr", a) for a in addresses)


def test_a_failed_reload_keeps_the_previous_set_and_is_counted() -> None:
    clock = FakeClock()
    answers: list[Any] = [address_set(BAD_IP), ConnectionError("node away"), address_set(LATE_IP)]

    def load() -> IndicatorSet:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    lookup = RefreshingLookup(load, 60, clock=clock)
    assert lookup.load_now()
    event = {"source": {"ip": BAD_IP}}
    assert len(lookup.match(event)) == 1
    clock.now += 61
    lookup.match(event)  # stale: starts the reload, which fails
    wait_for(lambda: lookup.status().failures == 1, 10, "the failed reload")
    assert len(lookup.match(event)) == 1  # the previous set is kept
    assert lookup.status().last_error == "ConnectionError: node away"
    clock.now += 30
    lookup.match(event)  # within the interval since the failed attempt: no reload
    time.sleep(0.1)
    assert answers and lookup.status().loads == 1
    clock.now += 31
    lookup.match(event)
    wait_for(lambda: lookup.status().loads == 2, 10, "the second reload")
    assert lookup.match(event) == [] and len(lookup.match({"source": {"ip": LATE_IP}})) == 1


def test_matching_does_not_wait_for_a_slow_reload() -> None:
    clock = FakeClock()
    release = threading.Event()
    calls: list[int] = []

    def load() -> IndicatorSet:
        calls.append(1)
        if len(calls) > 1:
            release.wait(10)
            return address_set(LATE_IP)
        return address_set(BAD_IP)

    lookup = RefreshingLookup(load, 5, clock=clock)
    lookup.load_now()
    clock.now += 6
    started = time.monotonic()
    for _ in range(1000):  # one reload starts; the others see it in progress
        assert len(lookup.match({"source": {"ip": BAD_IP}})) == 1
    assert time.monotonic() - started < 1.0
    assert len(calls) == 2
    release.set()
    wait_for(lambda: lookup.status().loads == 2, 10, "the slow reload")
    assert len(lookup.match({"source": {"ip": LATE_IP}})) == 1
