"""API latency and throughput with about 1M events and 10k alerts on the configured cluster.

Generates the demo day at a large scale (12 ~ 1M events) into a fresh index prefix and
ingests it (BulkWriter, with the example asset inventory so assets have criticalities),
stores 10k alerts through AlertStore, then serves the API with uvicorn on a loopback port
in its own process and measures, as an administrator:

- p50/p95 latency of sequential requests to `/api/v1/situation` (the whole day; once with
  the same range every time, which Elasticsearch's request cache may answer, and once with a
  different range each time, which it cannot), `/api/v1/alerts` and `/api/v1/events`;
- requests/s, latency and errors under 32 concurrent clients (httpx), per endpoint.

Goals (analyst-platform issue): p95 under 300 ms for the overview; no errors under load.
The prefix and the generated files are deleted afterwards unless --keep is given; --prefix
reuses a prefix kept by an earlier run. Every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from elasticsearch import Elasticsearch

from collectors.demo_day import DEPARTMENTS, DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from detection.alerts import SEVERITIES, Alert, AlertStore
from detection.attack_catalogue import AttackCatalogue
from lianfang.principals import PrincipalStore, Role
from lianfang.schema import format_timestamp
from lianfang.scoped_store import ScopedStore
from lianfang.settings import load_settings
from lianfang.situation import SEARCH_NAMES, SituationRequest, plan_searches
from lianfang.store import EventStore, IndexNames, connect, delete_prefix, elasticsearch_url

DAY = date(2026, 11, 27)
MASKING_KEY = "benchmark-key-not-a-secret"
ASSETS = Path(__file__).resolve().parents[1] / "config" / "assets.example.yaml"
TECHNIQUES = ("T1110.001", "T1046", "T1048", "T1041", "T1213", "T1078", "T1071.004", "T1070.001")
GOAL_P95_MS = 300.0


def load_events(settings: Any, store: EventStore, work: Path, scale: float) -> int:
    """Generate and ingest the demo day under each department; returns the events indexed."""
    manifest = generate_demo_day(DemoSpec(seed=11, day=DAY, scale=scale), work / "demo")
    departments = {d["id"]: d for d in manifest["departments"]}
    indexed = 0
    for item in manifest["files"]:
        info = departments[item["department"]]
        report, _ = ingest_records(
            file_records(work / "demo" / item["path"]),
            settings=settings,
            store=store,
            format_name=item["format"],
            department=Department(info["id"], info["name"], info["sector"]),
        )
        indexed += report.indexed
    shutil.rmtree(work / "demo", ignore_errors=True)
    store.refresh()
    return indexed


def make_alerts(count: int, seed: int = 5) -> list[Alert]:
    """Alerts spread over the day, departments, severities and ATT&CK techniques."""
    catalogue = AttackCatalogue.load()
    techniques = [catalogue.technique(t) for t in TECHNIQUES]
    rng = random.Random(seed)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    alerts = []
    for n in range(count):
        department = rng.choice(DEPARTMENTS)
        first = start + timedelta(seconds=rng.randrange(86_000))
        alerts.append(
            Alert(
                rule_id=f"bench-{n % 40}",
                rule_name=f"Benchmark rule {n % 40}",
                rule_type="behavioural",
                severity=rng.choices(SEVERITIES, weights=(50, 30, 15, 5))[0],
                entity_type="source.ip",
                entity_value=f"203.0.{rng.randrange(256)}.{rng.randrange(256)}",
                first_seen=first,
                last_seen=first + timedelta(seconds=rng.randrange(600)),
                explanation=f"benchmark alert {n}",
                organization_id=department.id,
                organization_name=department.name,
                sector=department.sector,
                count=rng.randrange(1, 50),
                evidence_event_ids=[uuid.uuid4().hex for _ in range(3)],
                techniques=[rng.choice(techniques)],
                window=timedelta(minutes=10),
            )
        )
    return alerts


def store_alerts(client: Elasticsearch, prefix: str, alerts: list[Alert]) -> None:
    """Upsert through AlertStore in a few threads (it writes one alert at a time)."""
    store = AlertStore(client, prefix)
    store.install()
    chunks = [alerts[n : n + 500] for n in range(0, len(alerts), 500)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(store.upsert, chunks))
    store.refresh()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    cluster: str, prefix: str, home: Path, port: int, workers: int
) -> subprocess.Popen:
    """uvicorn with the app factory in its own process, configured through the environment."""
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": cluster,
        "LIANFANG_INDEX_PREFIX": prefix,
        "LIANFANG_HOME_DIR": str(home),
        "LIANFANG_MASKING_KEY": MASKING_KEY,
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    command += ["--log-level", "warning", "--no-access-log"]
    return subprocess.Popen(command, env=environment, cwd=Path(__file__).resolve().parents[1])


def wait_until_serving(base: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("uvicorn did not answer in time")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies: list[float]) -> dict[str, float]:
    milliseconds = [value * 1000 for value in latencies]
    return {
        "requests": len(milliseconds),
        "p50_ms": round(percentile(milliseconds, 0.50), 1),
        "p95_ms": round(percentile(milliseconds, 0.95), 1),
        "mean_ms": round(statistics.fmean(milliseconds), 1) if milliseconds else float("nan"),
    }


def day_range(rng: random.Random | None) -> dict[str, str]:
    """The demo day; shifted by up to an hour when a distinct (uncached) request is wanted."""
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    if rng is not None:
        start += timedelta(milliseconds=rng.randrange(1, 3_600_000))
    return {"start": format_timestamp(start), "end": format_timestamp(start + timedelta(days=1))}


def endpoints() -> dict[str, Any]:
    """Name -> function(rng) giving (path, params) of one request."""
    return {
        "situation (same range)": lambda rng: ("/api/v1/situation", day_range(None)),
        "situation (new range each time)": lambda rng: ("/api/v1/situation", day_range(rng)),
        "alerts": lambda rng: (
            "/api/v1/alerts",
            {"size": 50, "severity": rng.choice(SEVERITIES)}
            if rng.random() < 0.5
            else {"size": 50},
        ),
        "events": lambda rng: ("/api/v1/events", {**day_range(rng), "size": 100}),
    }


def sequential(
    base: str, headers: dict[str, str], make: Any, count: int, deadline: float, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        for _ in range(3):  # warm up
            path, params = make(rng)
            client.get(path, params=params)
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            path, params = make(rng)
            began = time.perf_counter()
            response = client.get(path, params=params)
            latencies.append(time.perf_counter() - began)
            errors += response.status_code != 200
    return {**summary(latencies), "errors": errors}


async def under_load(
    base: str, headers: dict[str, str], make: Any, clients: int, seconds: float, seed: int
) -> dict[str, Any]:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, limits=limits
    ) as client:
        stop = time.monotonic() + seconds

        async def worker(number: int) -> None:
            rng = random.Random(seed + number)
            while time.monotonic() < stop:
                path, params = make(rng)
                began = time.perf_counter()
                try:
                    response = await client.get(path, params=params)
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                latencies.append(time.perf_counter() - began)
                if status != "200":
                    failures[status] = failures.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(clients)))
        elapsed = time.perf_counter() - began
    return {
        **summary(latencies),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "errors": failures,
    }


def server_side(client: Elasticsearch, prefix: str, seed: int, count: int = 10) -> dict[str, float]:
    """Median Elasticsearch `took` (ms) of each search of an uncached overview msearch."""
    rng = random.Random(seed)
    took: dict[str, list[int]] = {name: [] for name in SEARCH_NAMES}
    for _ in range(count):
        bounds = day_range(rng)
        request = SituationRequest.resolve(
            datetime.fromisoformat(bounds["start"].replace("Z", "+00:00")),
            datetime.fromisoformat(bounds["end"].replace("Z", "+00:00")),
            datetime.now(UTC),
            timezone=load_settings().timezone,
        )
        answers = ScopedStore(client, None).msearch(plan_searches(request, IndexNames(prefix)))
        for name, answer in zip(SEARCH_NAMES, answers, strict=True):
            took[name].append(int(answer.get("took", 0)))
    return {name: statistics.median(values) for name, values in took.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=12.0, help="demo scale (12 ~ 1M events)")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=60, help="sequential requests per endpoint")
    parser.add_argument("--seconds", type=float, default=20.0, help="load phase per endpoint")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the index prefix")
    parser.add_argument("--prefix", help="reuse a prefix kept by an earlier --keep run")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    began = time.monotonic()
    deadline = began + arguments.budget
    work = Path(tempfile.mkdtemp(prefix="lianfang-api-bench-"))
    prefix = arguments.prefix or f"bench-api-{uuid.uuid4().hex[:8]}"
    # The cluster of the default settings (the local node unless LIANFANG_ES_URL is set).
    cluster = elasticsearch_url(load_settings())
    settings = load_settings(
        es_url=cluster,
        index_prefix=prefix,
        home_dir=work / "home",
        masking_key=MASKING_KEY,
        asset_inventory_path=ASSETS,
    )
    client = connect(settings)
    store = EventStore(client, IndexNames(prefix))
    server: subprocess.Popen | None = None
    result: dict[str, Any] = {"prefix": prefix}
    try:
        if not arguments.prefix:
            started = time.monotonic()
            result["events_indexed"] = load_events(settings, store, work, arguments.scale)
            result["load_seconds"] = round(time.monotonic() - started, 1)
            started = time.monotonic()
            store_alerts(client, prefix, make_alerts(arguments.alerts))
            result["alert_seconds"] = round(time.monotonic() - started, 1)
        result["events"] = client.count(index=store.names.events_alias)["count"]
        result["alerts"] = client.count(index=AlertStore(client, prefix).index)["count"]
        principals = PrincipalStore(client, prefix)
        principals.install()
        user = f"bench-{uuid.uuid4().hex[:6]}"
        principals.add_user(user, Role.ADMINISTRATOR, None)
        headers = {"Authorization": f"Bearer {principals.create_key(user)}"}

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(cluster, prefix, work / "home", port, arguments.workers)
        wait_until_serving(base, server)

        # Ranges differ between runs: a kept prefix must not answer from an earlier run's cache.
        seed = time.time_ns()
        result["elasticsearch_took_ms"] = server_side(client, prefix, seed)
        result["sequential"] = {}
        result["concurrent"] = {}
        for name, make in endpoints().items():
            result["sequential"][name] = sequential(
                base, headers, make, arguments.requests, deadline, seed + 1
            )
        for name, make in endpoints().items():
            seconds = min(arguments.seconds, max(0.0, deadline - time.monotonic()))
            if seconds <= 0:
                break
            result["concurrent"][name] = asyncio.run(
                under_load(base, headers, make, arguments.clients, seconds, seed + 1000)
            )
        overview = result["sequential"]["situation (new range each time)"]
        result["goal_p95_ms"] = GOAL_P95_MS
        result["overview_p95_met"] = overview["p95_ms"] <= GOAL_P95_MS
        result["errors_under_load"] = sum(
            sum(phase["errors"].values()) for phase in result["concurrent"].values()
        )
        result["seconds"] = round(time.monotonic() - began, 1)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if not arguments.keep:
            delete_prefix(client, prefix)
        shutil.rmtree(work, ignore_errors=True)
        client.close()
    if arguments.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"prefix {prefix}: {result['events']} events, {result['alerts']} alerts")
    for key in ("load_seconds", "alert_seconds", "seconds"):
        if key in result:
            print(f"{key:<24}{result[key]}")
    print(f"\n{'sequential':<34}{'n':>6}{'p50 ms':>10}{'p95 ms':>10}{'errors':>8}")
    for name, row in result["sequential"].items():
        print(
            f"{name:<34}{row['requests']:>6}{row['p50_ms']:>10}{row['p95_ms']:>10}{row['errors']:>8}"
        )
    took = ", ".join(f"{k} {v:.0f}" for k, v in result["elasticsearch_took_ms"].items())
    print(f"\nElasticsearch took per overview search (ms, median of 10): {took}")
    print(
        f"\n{arguments.clients} concurrent clients{'':<14}{'req/s':>8}{'p50 ms':>10}{'p95 ms':>10}  errors"
    )
    for name, row in result["concurrent"].items():
        print(
            f"{name:<34}{row['requests_per_second']:>8}{row['p50_ms']:>10}{row['p95_ms']:>10}  {row['errors'] or 0}"
        )
    print(f"\noverview p95 <= {GOAL_P95_MS:.0f} ms: {result['overview_p95_met']}")
    print(f"errors under load: {result['errors_under_load']}")


if __name__ == "__main__":
    main()
