"""`lianfang collect stdin|syslog|run` as an operator runs them: processes, signals, exit codes."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from lianfang.cli import main
from lianfang.schema import Origin, document_id
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.test_collector_runtime import (
    MOMENT,
    assert_each_line_once,
    cli_environment,
    collect_command,
    numbered_lines,
    wait_for,
)

EXIT_USAGE = 2


def test_stdin_is_collected_once_even_when_piped_twice(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    text = numbered_lines(0, 500)
    for attempt in range(2):
        finished = subprocess.run(
            collect_command("stdin", "--format", "json", "--json"),
            input=text,
            env=cli_environment(settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert finished.returncode == 0, finished.stderr[-2000:]
        report = json.loads(finished.stdout)
        (stdin,) = report["inputs"]
        assert (stdin["source"], stdin["state"], stdin["read"]) == ("stdin", "finished", 500)
        assert (stdin["indexed"], stdin["duplicates"]) == ((500, 0) if attempt == 0 else (0, 500))
        assert report["state"] == "finished" and report["spool"]["pending_events"] == 0
    assert_each_line_once(client, store, 500)
    first_line = text.splitlines()[0]
    hit = client.search(index=store.names.events_alias, query={"term": {"line": 0}})["hits"]
    assert hit["hits"][0]["_id"] == document_id(Origin("stdin", 0), first_line)  # as `ingest -`


def read_listening_lines(process: subprocess.Popen[str], count: int) -> dict[str, int]:
    """The `<name>: listening on <host>:<port>` lines a collector prints at start."""
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    while len(ports) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the collector did not say where it listens"
        ready, _, _ = select.select([process.stderr], [], [], remaining)
        if not ready:
            continue
        line = process.stderr.readline()
        assert line, f"the collector ended: {process.wait()}"
        if ": listening on " in line:
            name, _, where = line.strip().partition(": listening on ")
            ports[name] = int(where.rsplit(":", 1)[1])
    return ports


def test_run_with_a_configuration_collects_files_and_syslog_until_sigterm(
    settings: Settings, client: Elasticsearch, store: EventStore, tmp_path: Path
) -> None:
    log = tmp_path / "finance" / "app.log"
    log.parent.mkdir()
    log.write_text(numbered_lines(0, 300))
    config = tmp_path / "collector.toml"
    config.write_text(
        f"""
[collector.departments.finance]
name = "省财政厅"
sector = "finance"

[[collector.files]]
name = "finance-app"
paths = ["{tmp_path}/finance/*.log"]
format = "json"
department = "finance"
follow = false

[[collector.syslog]]
name = "udp-in"
transport = "udp"
port = 0
format = "json"

[collector.peers]
"127.0.0.0/8" = "finance"
"""
    )
    process = subprocess.Popen(
        collect_command("run", "--config", str(config), "--json"),
        env=cli_environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = read_listening_lines(process, 1)["udp-in"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for number in range(300, 400):
                record = {"@timestamp": MOMENT, "message": f"line {number}", "line": number}
                sender.sendto(json.dumps(record).encode(), ("127.0.0.1", port))
                time.sleep(0.002)

        def everything_indexed() -> bool:
            try:
                status = json.loads(settings.collector_status_file.read_text())
            except (OSError, ValueError):
                return False
            return status["totals"]["indexed"] == 400

        wait_for(everything_indexed, 60, "the file and the datagrams to be indexed")
        shown = subprocess.run(
            collect_command("status", "--json"),
            env=cli_environment(settings),
            capture_output=True,
            text=True,
            check=False,
        )
        assert shown.returncode == 0
        status = json.loads(shown.stdout)
        assert status["running"] is True
        inputs = {item["source"]: item for item in status["inputs"]}
        assert inputs["udp-in"]["details"]["departments"] == {"finance": 100}
        assert inputs[str(log.resolve())]["details"] == {
            "input": "finance-app",
            "department": "finance",
        }
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr[-2000:]
    report = json.loads(stdout)
    assert report["state"] == "stopped" and report["totals"]["indexed"] == 400
    assert_each_line_once(client, store, 400)
    organizations = client.search(
        index=store.names.events_alias,
        size=0,
        aggs={"by": {"terms": {"field": "organization.id"}}},
    )["aggregations"]["by"]["buckets"]
    assert organizations == [{"key": "finance", "doc_count": 400}]


@pytest.fixture
def runner_environment(tmp_path: Path) -> dict[str, str]:
    return {
        "LIANFANG_ES_URL": "http://127.0.0.1:1",
        "LIANFANG_HOME_DIR": str(tmp_path / "home"),
        "LIANFANG_MASKING_KEY": "collect-commands-test-key-01",
    }


def test_configuration_and_usage_errors_exit_2(
    runner_environment: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()

    def run(*arguments: str) -> tuple[int, str]:
        result = runner.invoke(main, ["collect", *arguments], env=runner_environment)
        return result.exit_code, result.output

    assert run("syslog", "--tls-cert", str(tmp_path / "cert.pem"))[0] == EXIT_USAGE
    assert run("syslog", "--peer", "10.0.0.0/8")[0] == EXIT_USAGE  # no =DEPARTMENT
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, output = run("syslog", "--tcp", "--port", str(taken.getsockname()[1]))
        assert code == EXIT_USAGE and "cannot listen" in output
    assert run("run", "--config", str(tmp_path / "missing.toml"))[0] == EXIT_USAGE
    broken = tmp_path / "broken.toml"
    broken.write_text('[[collector.files]]\npaths = ["/x"]\ndepartment = "nobody"\n')
    code, output = run("run", "--config", str(broken), "--check")
    assert code == EXIT_USAGE
    assert "'nobody' is not in [collector.departments]" in " ".join(output.split())

    good = tmp_path / "good.toml"
    good.write_text(
        '[collector.departments.energy]\n[[collector.syslog]]\nport = 0\ndepartment = "energy"\n'
        '[[collector.files]]\npaths = ["/var/log/*.log"]\nformat = "syslog"\n'
    )
    result = runner.invoke(
        main, ["collect", "run", "--config", str(good), "--check", "--json"], env=runner_environment
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [(row["kind"], row["department"]) for row in summary["inputs"]] == [
        ("files (follow)", None),
        ("syslog udp", "energy"),
    ]
