"""The collector runtime against real Elasticsearch: crashes, outages, rotation, exactly once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import ApiError, Elasticsearch, TransportError

from collectors.runtime import CollectorRuntime
from lianfang import local_node
from lianfang.schema import format_timestamp
from lianfang.settings import Settings, load_settings
from lianfang.store import EventStore
from tests.test_local_node import private_node_settings

EXIT_UNAVAILABLE = 3
MASKING_KEY = "collector-test-masking-key-0001"
# One fixed time, so that every event of a test lands in one daily index.
MOMENT = format_timestamp(
    (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
)


def numbered_lines(first: int, count: int) -> str:
    return "".join(
        json.dumps({"@timestamp": MOMENT, "message": f"line {n}", "line": n}) + "\n"
        for n in range(first, first + count)
    )


def assert_each_line_once(client: Elasticsearch, store: EventStore, lines: int) -> None:
    """count == lines, no value twice, all in [0, lines): so every line exactly once."""
    client.cluster.health(index=store.names.events_pattern, wait_for_status="yellow", timeout="30s")
    store.refresh()
    response = client.search(
        index=store.names.events_alias,
        size=0,
        track_total_hits=True,
        aggs={
            "line": {"stats": {"field": "line"}},
            "twice": {"terms": {"field": "line", "min_doc_count": 2, "size": 5}},
        },
    )
    stats = response["aggregations"]["line"]
    assert response["hits"]["total"]["value"] == lines
    assert response["aggregations"]["twice"]["buckets"] == []
    assert (stats["count"], stats["min"], stats["max"]) == (lines, 0, lines - 1)


def indexed_count(client: Elasticsearch, store: EventStore) -> int:
    """Documents in the index now; -1 while it cannot answer (a node still recovering)."""
    try:
        store.refresh()
        if not client.indices.exists_alias(name=store.names.events_alias):
            return 0
        return client.count(index=store.names.events_alias)["count"]
    except (ApiError, TransportError):
        return -1


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def cli_environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": settings.masking_key.get_secret_value() or MASKING_KEY,
    }


def collect_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "lianfang.cli", "collect", *arguments]


def no_dead_letters(settings: Settings) -> bool:
    return not list(settings.dead_letter_dir.glob("*.jsonl"))


@pytest.mark.slow
def test_killed_collector_resumes_and_indexes_every_line_exactly_once(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    lines = 50_000
    log = tmp_path / "big.log"
    log.write_text(numbered_lines(0, lines))
    chance = random.Random(20261128)
    # Kill at random moments, but while it works: once a random share of the lines is in.
    targets = sorted(chance.uniform(0.1, 0.8) * lines for _ in range(3))
    partial_counts = []
    for target in targets:
        process = subprocess.Popen(
            collect_command("files", str(log), "--format", "json", "--json"),
            env=cli_environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda goal=target: indexed_count(client, store) >= goal, 60, f"{target:.0f} lines"
        )
        time.sleep(chance.uniform(0, 0.3))
        assert process.poll() is None, "the collector finished before it could be killed"
        process.kill()
        process.wait()
        partial_counts.append(indexed_count(client, store))
    finished = subprocess.run(
        collect_command("files", str(log), "--format", "json", "--json"),
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert all(0 < count < lines for count in partial_counts), partial_counts
    assert_each_line_once(client, store, lines)
    assert no_dead_letters(settings)
    report = json.loads(finished.stdout)
    assert report["state"] == "finished"
    assert report["spool"]["pending_events"] == 0
    status = subprocess.run(
        collect_command("status", "--json"),
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0
    assert json.loads(status.stdout)["running"] is False
    assert json.loads(status.stdout)["state"] == "finished"


def test_sigterm_keeps_undelivered_events_in_the_spool_for_the_next_run(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    log = tmp_path / "small.log"
    mobile = "13812345678"  # personal data: masked before it is spooled
    with_personal_data = json.dumps({"@timestamp": MOMENT, "message": f"call {mobile}", "line": 0})
    log.write_text(with_personal_data + "\n" + numbered_lines(1, 2999))
    unreachable = {**cli_environment(settings), "LIANFANG_ES_URL": "http://127.0.0.1:1"}
    process = subprocess.Popen(
        collect_command("files", str(log), "--format", "json", "--json"),
        env=unreachable,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status_file = settings.collector_status_file

    def all_spooled() -> bool:
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            return False
        return status["spool"]["pending_events"] == 3000 and status["elasticsearch"] == (
            "unavailable"
        )

    wait_for(all_spooled, 30, "the events to wait in the spool")
    shown = subprocess.run(
        collect_command("status"), env=unreachable, capture_output=True, text=True, check=False
    )
    assert shown.returncode == EXIT_UNAVAILABLE
    assert "3,000 events" in shown.stdout
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == EXIT_UNAVAILABLE, stderr[-2000:]
    assert json.loads(stdout)["spool"]["pending_events"] == 3000
    spooled = b"".join(path.read_bytes() for path in settings.spool_dir.glob("segment-*"))
    assert b"line 2999" in spooled
    assert mobile.encode() not in spooled

    # The next run delivers the spooled batches; the file itself has nothing new to read.
    delivered = subprocess.run(
        collect_command("files", str(log), "--format", "json", "--json"),
        env=cli_environment(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert delivered.returncode == 0, delivered.stderr[-2000:]
    assert_each_line_once(client, store, 3000)
    stored = client.search(index=store.names.events_alias, query={"term": {"line": 0}})
    assert mobile not in json.dumps(stored["hits"]["hits"][0]["_source"], ensure_ascii=False)


def test_follow_through_append_rotation_and_truncation_indexes_each_line_once(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text(numbered_lines(0, 1000))
    runtime = CollectorRuntime(
        settings,
        store,
        [str(log)],
        follow=True,
        format_name="json",
        poll_seconds=0.05,
        scan_seconds=0.1,
        close_detached_after=1.0,
        status_seconds=0.2,
    )
    result = []
    worker = threading.Thread(target=lambda: result.append(runtime.run()))
    worker.start()
    try:
        wait_for(lambda: indexed_count(client, store) == 1000, 30, "the first lines")
        with log.open("a") as sink:
            sink.write(numbered_lines(1000, 1000))
        wait_for(lambda: indexed_count(client, store) == 2000, 30, "appended lines")

        with log.open("a") as old:  # rotation: rename, then the program still writes a bit
            log.rename(tmp_path / "app.log.1")
            log.write_text(numbered_lines(2500, 1000))
            old.write(numbered_lines(2000, 500))
        wait_for(lambda: indexed_count(client, store) == 3500, 30, "both rotated generations")

        status = json.loads(settings.collector_status_file.read_text())
        assert status["state"] == "running"
        assert status["inputs"]

        with log.open("r+") as truncated:  # copytruncate: the file is emptied and rewritten
            truncated.truncate(0)
            truncated.write(numbered_lines(3500, 500))
        wait_for(lambda: indexed_count(client, store) == 4000, 30, "lines after truncation")
    finally:
        runtime.stop()
        worker.join(timeout=30)
    snapshot = result[0]
    assert snapshot.state == "stopped"
    assert_each_line_once(client, store, 4000)
    assert no_dead_letters(settings)
    sources = {counters.source for counters in snapshot.inputs}
    path = str(log.resolve())
    assert {path, f"{path}#1", f"{path}#2"} <= sources
    assert snapshot.totals["indexed"] == 4000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_elasticsearch_outage_fills_the_spool_which_drains_when_it_returns(
    cluster_url: str, tmp_path: Path
) -> None:
    node_settings = private_node_settings(tmp_path, es_port=free_port())
    state, _ = local_node.start(node_settings, log=lambda _: None)
    try:
        settings = load_settings(
            es_url=state.url,
            index_prefix=f"lftest-{uuid.uuid4().hex[:10]}",
            home_dir=tmp_path / "collector",
            bulk_max_retries=1,
            bulk_backoff_seconds=0.1,
            es_request_timeout=5,
            masking_key=MASKING_KEY,
        )
        store = EventStore.from_settings(settings)
        log = tmp_path / "in.log"
        log.write_text(numbered_lines(0, 2000))
        runtime = CollectorRuntime(
            settings,
            store,
            [str(log)],
            follow=True,
            format_name="json",
            poll_seconds=0.05,
            scan_seconds=0.1,
            status_seconds=0.2,
            max_backoff_seconds=1.0,
        )
        worker = threading.Thread(target=runtime.run)
        worker.start()
        try:
            wait_for(lambda: indexed_count(store.client, store) == 2000, 60, "the first lines")
            local_node.stop(node_settings)
            with log.open("a") as sink:
                sink.write(numbered_lines(2000, 10000))

            def waiting_in_spool() -> bool:
                snapshot = runtime.snapshot()
                return (
                    snapshot.elasticsearch == "unavailable"
                    and snapshot.totals["spooled"] == 12000
                    and snapshot.spool["pending_events"] >= 8000
                )

            wait_for(waiting_in_spool, 60, "events to accumulate in the spool")

            def status_file_shows_it() -> bool:
                status = json.loads(settings.collector_status_file.read_text())
                return status["spool"]["pending_events"] >= 8000 and bool(status["last_error"])

            wait_for(status_file_shows_it, 5, "the status file to show the backlog")

            local_node.start(node_settings, log=lambda _: None)  # same home: same data, port
            wait_for(lambda: runtime.snapshot().spool["pending_events"] == 0, 60, "the drain")
            assert runtime.snapshot().elasticsearch == "ok"
        finally:
            runtime.stop()
            worker.join(timeout=30)
        assert_each_line_once(store.client, store, 12000)
        assert no_dead_letters(settings)
    finally:
        local_node.stop(node_settings)
        remove_node_files(node_settings)


def remove_node_files(node_settings: Settings) -> None:
    """A node run by root lives outside tmp_path (in /var/tmp): remove it, 150 MB each."""
    node_home = local_node.node_layout(node_settings).node_dir.parent
    if local_node.ROOT_FALLBACK_BASE in node_home.parents:
        shutil.rmtree(node_home, ignore_errors=True)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": "http://127.0.0.1:1",
        "LIANFANG_HOME_DIR": str(tmp_path / "home"),
        "LIANFANG_MASKING_KEY": MASKING_KEY,
    }

    def run(*arguments: str) -> int:
        return subprocess.run(
            collect_command(*arguments), env=environment, capture_output=True, timeout=60
        ).returncode

    assert run("files", str(tmp_path / "nothing-*.log")) == 2
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    assert run("files", str(log), "--format", "nonsense") == 2
    assert run("status") == 2  # no collector ever ran with this home directory


def test_a_full_spool_holds_the_reader_back_while_elasticsearch_is_away(tmp_path: Path) -> None:
    settings = load_settings(
        es_url="http://127.0.0.1:1",
        index_prefix="lftest-unreachable",
        home_dir=tmp_path / "home",
        masking_key=MASKING_KEY,
        spool_max_bytes=1_000_000,
        bulk_max_documents=500,
    )
    log = tmp_path / "big.log"
    log.write_text(numbered_lines(0, 20_000))  # about 9 MB of spooled events: 9 times the quota
    runtime = CollectorRuntime(
        settings, EventStore.from_settings(settings), [str(log)], format_name="json"
    )
    worker = threading.Thread(target=runtime.run)
    worker.start()
    try:

        def held_back() -> bool:
            snapshot = runtime.snapshot()
            return snapshot.spool["full_waits"] >= 1 and snapshot.elasticsearch == "unavailable"

        wait_for(held_back, 30, "the reader to wait for room in the spool")
        time.sleep(0.5)
        snapshot = runtime.snapshot()
        assert snapshot.spool["used_bytes"] <= settings.spool_max_bytes
        assert snapshot.spool["fill_ratio"] >= 0.8
        assert snapshot.spool["high_water_warnings"] == 1
        assert snapshot.totals["spooled"] < 20_000  # the rest waits in the file, not in memory
        assert snapshot.inputs[0].lag_bytes > 0
    finally:
        started = time.monotonic()
        runtime.stop()
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5  # a blocked reader and a backing-off sender stop at once
