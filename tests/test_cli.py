"""The `lianfang` command as people and scripts use it: --json output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lianfang.settings import Settings

EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def run_cli(
    settings: Settings, *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": settings.masking_key.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "lianfang.cli", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        input=stdin,
        timeout=120,
        check=False,
    )


def test_ingest_reports_counts_and_dead_letters_with_exit_code(
    settings: Settings, client, tmp_path: Path
) -> None:
    log = tmp_path / "auth.log"
    log.write_text(
        "Nov 28 03:14:07 web01 sshd[1]: Failed password for root from 203.0.113.9 port 5 ssh2\n"
        "this line is not syslog\n"
        "Nov 28 03:14:09 web01 sshd[1]: Accepted password for root from 203.0.113.9 port 6 ssh2\n"
    )
    result = run_cli(settings, "ingest", str(log), "--format", "syslog", "--json")
    assert result.returncode == EXIT_PARTIAL, result.stderr
    report = json.loads(result.stdout)["files"][0]
    assert report["read"] == 3
    assert report["indexed"] == 2
    assert report["dead_lettered"] == 1
    dead_letter = Path(report["dead_letter_file"])
    assert "this line is not syslog" in dead_letter.read_text()

    again = run_cli(settings, "ingest", str(log), "--format", "syslog", "--json")
    assert json.loads(again.stdout)["files"][0]["duplicates"] == 2


def test_ingest_from_stdin(settings: Settings, client) -> None:
    line = '{"@timestamp":"2026-11-28T00:00:00Z","message":"from a pipe"}\n'
    result = run_cli(settings, "ingest", "-", "--json", stdin=line)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"][0]["indexed"] == 1


def test_usage_errors_exit_2(settings: Settings, tmp_path: Path) -> None:
    assert run_cli(settings, "ingest", str(tmp_path / "missing.log")).returncode == EXIT_USAGE
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    assert run_cli(settings, "ingest", str(log), "--format", "nonsense").returncode == EXIT_USAGE


def test_unreachable_cluster_exits_3(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": "http://127.0.0.1:1",
        "LIANFANG_HOME_DIR": str(tmp_path),
        "LIANFANG_MASKING_KEY": "test-masking-key-not-a-secret",
    }
    log = tmp_path / "x.log"
    log.write_text('{"@timestamp":"2026-11-28T00:00:00Z"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "lianfang.cli", "ingest", str(log)],
        capture_output=True,
        text=True,
        env={
            **environment,
            "LIANFANG_BULK_MAX_RETRIES": "1",
            "LIANFANG_BULK_BACKOFF_SECONDS": "0.01",
        },
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert "error" in result.stderr


def test_formats_lists_syslog_and_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lianfang.cli", "formats", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {"syslog", "json"} <= set(json.loads(result.stdout))


def test_masking_without_a_key_is_a_usage_error(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text('{"@timestamp":"2026-11-28T00:00:00Z"}\n')
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_HOME_DIR": str(tmp_path),
    }
    environment.pop("LIANFANG_MASKING_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "lianfang.cli", "ingest", str(log)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert "masking" in result.stderr.lower()
