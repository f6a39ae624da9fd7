"""Peak memory of the collector while it ingests a large generated file (goal: < 300 MiB RSS).

Generates a file of JSON lines (default 1 GiB, about 3.3 million events of ~330 bytes),
runs `lianfang collect files FILE --format json` (or `ingest`, or `collect stdin`) in a
subprocess against the configured cluster (the local node by default) with a fresh index
prefix and home directory, samples the process's resident set size from /proc every half
second, and prints the peak (VmHWM, and ru_maxrss of the finished child), the
throughput, and the RSS at each tenth of the run, so a growth trend is visible. The
indices, templates and files are removed afterwards.

    .venv/bin/python benchmarks/collect_memory.py                  # 1 GiB through collect files
    .venv/bin/python benchmarks/collect_memory.py --size-mib 256 --command ingest
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lianfang import local_node
from lianfang.settings import load_settings
from lianfang.store import connect, delete_prefix

GOAL_MIB = 300
MASKING_KEY = "benchmark-masking-key-not-secret"


def generate(path: Path, size_bytes: int, seed: int = 7) -> int:
    """Write JSON lines until the file holds `size_bytes`; returns the number of lines."""
    chance = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=1)
    users = [f"user{n:04d}" for n in range(500)]
    actions = ["login", "logout", "read", "write", "delete", "query", "export"]
    lines = written = 0
    with path.open("w", encoding="utf-8") as sink:
        while written < size_bytes:
            block = []
            for _ in range(10_000):
                moment = start + timedelta(milliseconds=lines * 20)
                record = {
                    "@timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "message": f"{chance.choice(actions)} of record {chance.randrange(10**9)} "
                    f"by {chance.choice(users)} from 10.20.{chance.randrange(256)}."
                    f"{chance.randrange(256)}",
                    "event": {"action": chance.choice(actions), "outcome": "success"},
                    "source": {"ip": f"10.20.{chance.randrange(256)}.{chance.randrange(256)}"},
                    "user": {"name": chance.choice(users)},
                    "line": lines,
                }
                block.append(json.dumps(record))
                lines += 1
            text = "\n".join(block) + "\n"
            sink.write(text)
            written += len(text)
    return lines


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, or (0, 0) once it is gone."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
    except (OSError, ValueError):
        return 0, 0
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def command_line(command: str, path: Path) -> list[str]:
    base = [sys.executable, "-m", "lianfang.cli"]
    if command == "files":
        return [*base, "collect", "files", str(path), "--format", "json", "--json"]
    if command == "stdin":
        return [*base, "collect", "stdin", "--format", "json", "--json"]
    return [*base, "ingest", str(path), "--format", "json", "--json"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--command", choices=["files", "ingest", "stdin"], default="files")
    parser.add_argument("--keep", action="store_true", help="keep the indices and files")
    arguments = parser.parse_args()

    base = load_settings()
    url = base.es_url or local_node.start(base, log=lambda _: None)[0].url
    work = Path(tempfile.mkdtemp(prefix="lianfang-memory-"))
    prefix = f"bench-memory-{uuid.uuid4().hex[:8]}"
    data = work / "events.log"
    print(f"generating {arguments.size_mib} MiB in {data} ...", file=sys.stderr)
    started = time.perf_counter()
    lines = generate(data, arguments.size_mib * 1024 * 1024)
    size = data.stat().st_size
    print(f"  {lines:,} lines in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    environment = {
        **os.environ,
        "LIANFANG_ES_URL": url,
        "LIANFANG_INDEX_PREFIX": prefix,
        "LIANFANG_HOME_DIR": str(work / "home"),
        "LIANFANG_MASKING_KEY": MASKING_KEY,
    }
    samples: list[tuple[float, int]] = []
    client = connect(load_settings(es_url=url, index_prefix=prefix))
    try:
        started = time.perf_counter()
        stdin = data.open("rb") if arguments.command == "stdin" else subprocess.DEVNULL
        process = subprocess.Popen(
            command_line(arguments.command, data),
            env=environment,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        peak_hwm = 0
        while process.poll() is None:
            rss, hwm = rss_kib(process.pid)
            peak_hwm = max(peak_hwm, hwm)
            if rss:
                samples.append((time.perf_counter() - started, rss))
            time.sleep(0.5)
        output = process.stdout.read() if process.stdout else b""
        seconds = time.perf_counter() - started
        children_peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if arguments.command == "stdin":
            stdin.close()  # type: ignore[union-attr]
        report = json.loads(output) if output.strip() else {}
        totals = report.get("totals") or (report.get("files") or [{}])[0]
        indexed = totals.get("indexed", 0)
        peak_mib = max(peak_hwm, children_peak_kib) / 1024
        trend = []
        for tenth in range(1, 11):
            moment = seconds * tenth / 10
            before = [rss for at, rss in samples if at <= moment]
            trend.append(round(max(before) / 1024) if before else 0)
        result = {
            "command": arguments.command,
            "exit_code": process.returncode,
            "file_mib": round(size / 1024 / 1024),
            "lines": lines,
            "indexed": indexed,
            "seconds": round(seconds, 1),
            "events_per_second": round(indexed / seconds) if seconds else 0,
            "mib_per_second": round(size / 1024 / 1024 / seconds, 1) if seconds else 0,
            "peak_rss_mib": round(peak_mib, 1),
            "rss_mib_by_tenth_of_run": trend,
            "goal_mib": GOAL_MIB,
            "within_goal": peak_mib < GOAL_MIB,
        }
        print(json.dumps(result, indent=2))
    finally:
        if not arguments.keep:
            delete_prefix(client, prefix)
            shutil.rmtree(work, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    main()
