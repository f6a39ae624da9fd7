"""TAXII 2.1 throughput: our server (persisting to Elasticsearch) versus medallion on this machine.

Both servers run as separate processes on loopback ports: ours with uvicorn and a private
index prefix on the configured cluster (the local node by default), medallion (the OASIS
reference server) with its memory backend. The same load runs against each:

- POST: `--bundles` envelopes of 1,000 indicators each into one collection, by `--clients`
  concurrent clients (a TAXII collection grows: medallion's memory backend compares every
  new object with every stored one, so its rate falls as the collection fills);
- GET: a second collection of `--get-bundles` thousand objects (loaded untimed), paged with
  limit=1000 following `next`, `--passes` times per client. It is kept smaller because
  medallion sorts the whole collection with nested loops on every first page (quadratic):
  at 10,000 objects one request takes over ten minutes on this machine.

Printed: requests/s and objects/s of each phase for each server, and our ratio to medallion
(goal of the sharing issue: at least 3x medallion's objects/s while persisting to
Elasticsearch).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from lianfang.principals import PrincipalStore, Role
from lianfang.settings import load_settings
from lianfang.store import connect, elasticsearch_url
from sharing.tlp import TLP_2_IDS, TlpLevel

TAXII = "application/taxii+json;version=2.1"
BUNDLE = 1000
# Two collections of the default configuration: community (POSTs) and finance (GETs).
POST_COLLECTION = "aa46b726-f70f-46db-ad03-e5ad46538be3"
GET_COLLECTION = "130ad1e7-633b-4e13-b5fe-ccde1e74e591"


@dataclass
class Target:
    """One running server and how to talk to it."""

    name: str
    collections_url: str
    session_setup: dict[str, Any]

    def objects_url(self, collection: str) -> str:
        return f"{self.collections_url}{collection}/objects/"


@dataclass
class Rate:
    """Requests and objects over a measured span."""

    requests: int
    objects: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "objects": self.objects,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests / self.seconds, 2),
            "objects_per_s": round(self.objects / self.seconds, 1),
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, **session: Any) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            if requests.get(url, headers={"Accept": TAXII}, timeout=30, **session).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def bundle(number: int) -> bytes:
    marking = [TLP_2_IDS[TlpLevel.GREEN]]
    objects = [
        {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z",
            "modified": "2024-01-01T00:00:00.000Z",
            "name": f"bundle {number} indicator {index}",
            "pattern": f"[ipv4-addr:value = '198.51.{index % 256}.{number % 256}']",
            "pattern_type": "stix",
            "valid_from": "2024-01-01T00:00:00Z",
            "object_marking_refs": marking,
        }
        for index in range(BUNDLE)
    ]
    return json.dumps({"objects": objects}).encode()


def post_phase(target: Target, collection: str, bodies: list[bytes], clients: int) -> Rate:
    def send(body: bytes) -> int:
        with requests.Session() as session:
            response = session.post(
                target.objects_url(collection),
                data=body,
                headers={"Accept": TAXII, "Content-Type": TAXII},
                timeout=600,
                **target.session_setup,
            )
            response.raise_for_status()
            status = response.json()
            if status.get("success_count") != BUNDLE:
                raise RuntimeError(f"{target.name}: {json.dumps(status)[:300]}")
            return BUNDLE

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        objects = sum(pool.map(send, bodies))
    return Rate(len(bodies), objects, time.perf_counter() - started)


def get_phase(target: Target, clients: int, passes: int, expected: int) -> Rate:
    def read_all(_: int) -> tuple[int, int]:
        requests_made = objects = 0
        with requests.Session() as session:
            for _ in range(passes):
                params: dict[str, Any] = {"limit": BUNDLE}
                seen = 0
                while True:
                    response = session.get(
                        target.objects_url(GET_COLLECTION),
                        params=params,
                        headers={"Accept": TAXII},
                        timeout=600,
                        **target.session_setup,
                    )
                    response.raise_for_status()
                    envelope = response.json()
                    requests_made += 1
                    seen += len(envelope.get("objects", []))
                    if not envelope.get("more"):
                        break
                    params["next"] = envelope["next"]
                if seen != expected:
                    raise RuntimeError(f"{target.name}: paged {seen} objects, expected {expected}")
                objects += seen
        return requests_made, objects

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(read_all, range(clients)))
    return Rate(
        sum(r for r, _ in results), sum(o for _, o in results), time.perf_counter() - started
    )


def start_ours(workdir: Path, es_url: str, prefix: str) -> tuple[subprocess.Popen, Target]:
    settings = load_settings(es_url=es_url, index_prefix=prefix, home_dir=workdir / "home")
    client = connect(settings)
    principals = PrincipalStore(client, prefix)
    principals.install()
    principals.add_user("bench", Role.ADMINISTRATOR, None)
    key = principals.create_key("bench")
    client.close()
    port = free_port()
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": es_url,
        "LIANFANG_INDEX_PREFIX": prefix,
        "LIANFANG_HOME_DIR": str(workdir / "home"),
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "lianfang-server.log").open("wb"),
    )
    session = {"auth": BearerAuth(key)}
    base = f"http://127.0.0.1:{port}/taxii2/"
    try:
        wait_until_up(base, process, **session)
    except RuntimeError:
        process.terminate()
        raise
    return process, Target("lianfang", f"{base}lianfang/collections/", session)


class BearerAuth(requests.auth.AuthBase):
    """Authorization: Bearer <API key>."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.key}"
        return request


def start_medallion(workdir: Path, page_size: int) -> tuple[subprocess.Popen, Target]:
    data = {
        "/discovery": {
            "title": "medallion",
            "default": "http://127.0.0.1/trustgroup1/",
            "api_roots": ["http://127.0.0.1/trustgroup1/"],
        },
        "trustgroup1": {
            "information": {
                "title": "bench",
                "versions": [TAXII],
                "max_content_length": 100 * 1024 * 1024,
            },
            "status": [],
            "collections": [
                {
                    "id": collection,
                    "title": "bench",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
                for collection in (POST_COLLECTION, GET_COLLECTION)
            ],
        },
    }
    data_file = workdir / "medallion-data.json"
    data_file.write_text(json.dumps(data))
    config_file = workdir / "medallion.json"
    config_file.write_text(
        json.dumps(
            {
                "backend": {
                    "module": "medallion.backends.memory_backend",
                    "module_class": "MemoryBackend",
                    "filename": str(data_file),
                    "session_timeout": 600,
                },
                "users": {"bench": "bench-password"},
                "taxii": {"max_page_size": page_size},
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "medallion.scripts.run", "--port", str(port), str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    session = {"auth": ("bench", "bench-password")}
    try:
        wait_until_up(f"http://127.0.0.1:{port}/taxii2/", process, **session)
    except RuntimeError:
        process.terminate()
        raise
    return process, Target(
        "medallion", f"http://127.0.0.1:{port}/trustgroup1/collections/", session
    )


def measure(
    target: Target, bodies: list[bytes], readable: list[bytes], clients: int, passes: int
) -> dict[str, Any]:
    print(f"{target.name}: POST {len(bodies)} bundles", file=sys.stderr, flush=True)
    posted = post_phase(target, POST_COLLECTION, bodies, clients)
    print(f"{target.name}: load {len(readable)} bundles, GET", file=sys.stderr, flush=True)
    post_phase(target, GET_COLLECTION, readable, 1)
    read = get_phase(target, clients, passes, expected=len(readable) * BUNDLE)
    return {"post": posted.as_dict(), "get": read.as_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundles", type=int, default=10, help="POSTed envelopes of 1,000")
    parser.add_argument(
        "--get-bundles", type=int, default=3, help="thousands of objects in the GET collection"
    )
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients")
    parser.add_argument("--passes", type=int, default=2, help="full GET passes per client")
    parser.add_argument(
        "--servers", default="lianfang,medallion", help="which servers to measure, comma-separated"
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    settings = load_settings()
    es_url = elasticsearch_url(settings)
    prefix = f"lfbench-taxii-{uuid.uuid4().hex[:8]}"
    bodies = [bundle(number) for number in range(arguments.bundles)]
    readable = [bundle(number) for number in range(arguments.get_bundles)]
    results: dict[str, Any] = {
        "bundles": arguments.bundles,
        "objects_per_bundle": BUNDLE,
        "clients": arguments.clients,
        "get_collection_objects": arguments.get_bundles * BUNDLE,
        "get_passes": arguments.passes,
    }
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        try:
            servers = arguments.servers.split(",")
            if "lianfang" in servers:
                process, ours = start_ours(workdir, es_url, prefix)
                processes.append(process)
                results["lianfang"] = measure(
                    ours, bodies, readable, arguments.clients, arguments.passes
                )
            if "medallion" in servers:
                process, medallion = start_medallion(workdir, BUNDLE)
                processes.append(process)
                results["medallion"] = measure(
                    medallion, bodies, readable, arguments.clients, arguments.passes
                )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            client = connect(load_settings(es_url=es_url))
            indices = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
            if indices:
                client.indices.delete(index=",".join(indices))
            client.close()
    measured = [name for name in ("lianfang", "medallion") if name in results]
    if len(measured) == 2:
        for phase in ("post", "get"):
            ours_rate = results["lianfang"][phase]["objects_per_s"]
            theirs = results["medallion"][phase]["objects_per_s"]
            results[f"{phase}_ratio"] = round(ours_rate / theirs, 2) if theirs else None
    if arguments.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"TAXII throughput: {arguments.bundles} POSTs of {BUNDLE} objects into one collection; "
        f"GET pages of {BUNDLE} over {arguments.get_bundles * BUNDLE} objects, "
        f"{arguments.passes} passes; {arguments.clients} client(s)"
    )
    print(f"{'server':<10} {'phase':<5} {'requests/s':>11} {'objects/s':>11} {'seconds':>8}")
    for name in measured:
        for phase in ("post", "get"):
            rate = results[name][phase]
            print(
                f"{name:<10} {phase:<5} {rate['requests_per_s']:>11} "
                f"{rate['objects_per_s']:>11} {rate['seconds']:>8}"
            )
    if len(measured) == 2:
        print(
            f"ratio lianfang/medallion objects/s: POST {results['post_ratio']}x, "
            f"GET {results['get_ratio']}x (goal: >= 3x)"
        )


if __name__ == "__main__":
    main()
