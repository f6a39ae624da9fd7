"""Events per second through the syslog server into Elasticsearch, over TCP and over UDP.

Runs `lianfang collect syslog --port 0 --format syslog` as a subprocess (UDP and TCP on
loopback, a fresh index prefix and home directory, the configured cluster or the local
node), then, from this process:

- TCP: sends N RFC 5424 messages over one connection as fast as the server reads them
  (back-pressure, nothing lost) and measures until all are spooled and all are indexed;
- UDP: sends N datagrams (as fast as possible, or `--udp-rate` per second) and reports
  how many arrived, how many were dropped (and where: batches full, spool full, kernel
  buffer) and the indexing rate of those that arrived.

Figures come from the collector's status file, as `lianfang collect status` shows them.
The indices, templates and files are removed afterwards.

    .venv/bin/python benchmarks/syslog_rate.py --messages 100000 [--udp-rate 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lianfang import local_node
from lianfang.settings import load_settings
from lianfang.store import connect, delete_prefix

MASKING_KEY = "benchmark-masking-key-not-secret"


def messages(kind: str, count: int) -> list[bytes]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return [
        f"<86>1 {now} web-{n % 50:02d} sshd {1000 + n % 500} - - Failed password for "
        f"user{n % 300} from 10.20.{n % 256}.{n // 256 % 256} port {20000 + n % 40000} ssh2 "
        f"[{kind} {n}]".encode()
        for n in range(count)
    ]


def status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def listener(state: dict[str, Any], transport: str) -> dict[str, Any]:
    for item in state.get("inputs", []):
        if item.get("details", {}).get("transport") == transport:
            return item
    return {}


def wait_until(check: Any, timeout: float) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"no result after {timeout} s")
        time.sleep(0.05)
    return time.perf_counter()


def ports_from(process: subprocess.Popen[bytes], log: Path) -> dict[str, int]:
    """The ports the collector says it listens on (in its log, a file: never a full pipe)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the collector ended (exit {process.returncode})")
        ports = {}
        for line in log.read_text(errors="replace").splitlines():
            if ": listening on " in line:
                name, _, where = line.strip().partition(": listening on ")
                ports[name.rsplit("-", 2)[1]] = int(where.rsplit(":", 1)[1])
        if len(ports) == 2:
            return ports
        time.sleep(0.1)
    raise TimeoutError("the collector did not say where it listens")


def tcp_run(port: int, count: int, status_file: Path) -> dict[str, Any]:
    data = messages("tcp", count)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        for start in range(0, count, 1000):
            connection.sendall(b"\n".join(data[start : start + 1000]) + b"\n")
    sent = time.perf_counter()
    spooled = wait_until(
        lambda: listener(status(status_file), "tcp").get("spooled", 0) >= count, 3600
    )
    indexed = wait_until(
        lambda: listener(status(status_file), "tcp").get("indexed", 0) >= count, 3600
    )
    return {
        "messages": count,
        "send_seconds": round(sent - started, 2),
        "spooled_per_second": round(count / (spooled - started)),
        "indexed_per_second": round(count / (indexed - started)),
        "dropped": listener(status(status_file), "tcp").get("dropped", 0),
    }


def udp_run(port: int, count: int, rate: float, status_file: Path) -> dict[str, Any]:
    data = messages("udp", count)
    started = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for number, datagram in enumerate(data):
            sender.sendto(datagram, ("127.0.0.1", port))
            if rate and number % 100 == 99:
                ahead = started + (number + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
    sent = time.perf_counter()

    def settled() -> bool:
        details = listener(status(status_file), "udp").get("details", {})
        seen = details.get("received", 0) + (details.get("kernel_drops") or 0)
        return seen >= count or time.perf_counter() - sent > 10

    wait_until(settled, 60)
    state = listener(status(status_file), "udp")
    arrived = state.get("spooled", 0)
    indexed = wait_until(
        lambda: listener(status(status_file), "udp").get("indexed", 0) >= arrived, 3600
    )
    state = listener(status(status_file), "udp")
    details = state.get("details", {})
    return {
        "messages": count,
        "send_rate_per_second": round(count / (sent - started)),
        "received": details.get("received", 0),
        "dropped_batches_full": details.get("dropped_queue_full", 0),
        "dropped_spool_full": details.get("dropped_spool_full", 0),
        "kernel_drops": details.get("kernel_drops"),
        "indexed": state.get("indexed", 0),
        "indexed_per_second": round(state.get("indexed", 0) / (indexed - started)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--udp-rate", type=float, default=0, help="datagrams/s (0: flat out)")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    base = load_settings()
    url = base.es_url or local_node.start(base, log=lambda _: None)[0].url
    work = Path(tempfile.mkdtemp(prefix="lianfang-syslog-"))
    prefix = f"bench-syslog-{uuid.uuid4().hex[:8]}"
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": url,
        "LIANFANG_INDEX_PREFIX": prefix,
        "LIANFANG_HOME_DIR": str(work / "home"),
        "LIANFANG_MASKING_KEY": MASKING_KEY,
    }
    status_file = work / "home" / "collector-status.json"
    command = [
        *(sys.executable, "-m", "lianfang.cli", "collect", "syslog", "--port", "0"),
        *("--format", "syslog", "--peer", "127.0.0.0/8=bench", "--json"),
    ]
    log = work / "collector.log"
    with log.open("wb") as log_sink:
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=log_sink
        )
    client = connect(load_settings(es_url=url, index_prefix=prefix))
    try:
        ports = ports_from(process, log)
        result = {
            "tcp": tcp_run(ports["tcp"], arguments.messages, status_file),
            "udp": udp_run(ports["udp"], arguments.messages, arguments.udp_rate, status_file),
        }
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        if arguments.json:
            print(json.dumps(result, indent=2))
        else:
            tcp, udp = result["tcp"], result["udp"]
            print(
                f"TCP: {tcp['messages']:,} messages, {tcp['spooled_per_second']:,}/s spooled, "
                f"{tcp['indexed_per_second']:,}/s indexed end to end, {tcp['dropped']} dropped"
            )
            print(
                f"UDP: {udp['messages']:,} sent at {udp['send_rate_per_second']:,}/s, "
                f"{udp['received']:,} received, dropped: {udp['dropped_batches_full']:,} (batches "
                f"full) + {udp['dropped_spool_full']:,} (spool full) + {udp['kernel_drops']} "
                f"(kernel); {udp['indexed']:,} indexed at {udp['indexed_per_second']:,}/s"
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        delete_prefix(client, prefix)
        client.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
