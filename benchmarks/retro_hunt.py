"""Retro-hunt of N indicators over M stored events: time (sharing issue benchmark).

Loads M synthetic network/DNS/file events (default 1,000,000) straight into a fresh events
index of the configured cluster with the bulk helper, builds N indicators (default 100,000:
60 % IPv4 addresses, 25 % domains, 10 % SHA-256 hashes, 5 % URLs), of which `--hits` appear
in the events, and times `retro_hunt` (terms queries in batches, attribution of every hit
with the ingest-time lookup). Also reported: the cost of planning patterns (stix2-patterns)
and validating indicators (stix2-validator) per indicator, measured on a sample, and the
ingest-time lookup rate with all N indicators loaded. Indices are deleted afterwards.

    .venv/bin/python benchmarks/retro_hunt.py                       # 100k x 1M
    .venv/bin/python benchmarks/retro_hunt.py --events 200000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import helpers

from lianfang.settings import load_settings
from lianfang.store import EventStore, IndexNames, connect, delete_prefix
from sharing.indicator_matching import lookup_for, retro_hunt
from sharing.intel_store import IndicatorRecord
from sharing.stix_ids import deterministic_id
from sharing.stix_patterns import Atomic, PatternPlan, plan_pattern
from sharing.stix_validation import validate_object

SAMPLE = 1000


def public_ip(rng: random.Random) -> str:
    return (
        f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def domain(rng: random.Random, number: int) -> str:
    return f"host{number}-{rng.randint(0, 10**6)}.example{number % 97}.net"


def make_indicators(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """(type, value) pairs in the issue's mix."""
    values: list[tuple[str, str]] = []
    for number in range(count):
        draw = number % 20
        if draw < 12:
            values.append(("ipv4-addr", public_ip(rng)))
        elif draw < 17:
            values.append(("domain-name", domain(rng, number)))
        elif draw < 19:
            values.append(("file", f"{rng.getrandbits(256):064x}"))
        else:
            values.append(("url", f"http://{domain(rng, number)}/p/{number}"))
    return values


def pattern_of(kind: str, value: str) -> str:
    if kind == "file":
        return f"[file:hashes.'SHA-256' = '{value}']"
    return f"[{kind}:value = '{value}']"


def record(kind: str, value: str, number: int) -> IndicatorRecord:
    return IndicatorRecord(
        stix_id=deterministic_id("indicator", "bench", str(number)),
        modified="2026-11-28T00:00:00.000Z",
        pattern=pattern_of(kind, value),
        plan=PatternPlan("atomic", atomics=(Atomic(kind, value),)),
        state="active",
        effective_confidence=60,
        confidence=60,
        producer=None,
        source="feed:bench",
        tlp="green",
        name=value,
        sightings=0,
        last_sighting=None,
        hunted_version=None,
    )


def event(
    rng: random.Random, moment: datetime, hit: tuple[str, str] | None, number: int
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "event": {"id": f"bench-{number}", "category": ["network"], "dataset": "flow"},
        "organization": {"id": ("gov-cloud", "finance", "energy", "transport")[number % 4]},
        "source": {"ip": f"10.{number % 4 + 1}0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"},
        "destination": {"ip": public_ip(rng), "port": 443},
    }
    if number % 3 == 0:
        document["dns"] = {"question": {"name": domain(rng, number + 10**7)}}
    if number % 10 == 0:
        document["file"] = {"hash": {"sha256": f"{rng.getrandbits(256):064x}"}}
    if hit is not None:
        kind, value = hit
        if kind == "ipv4-addr":
            document["destination"]["ip"] = value
        elif kind == "domain-name":
            document["dns"] = {"question": {"name": value}}
        elif kind == "file":
            document["file"] = {"hash": {"sha256": value}}
        else:
            document["url"] = {"full": value}
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--indicators", type=int, default=100_000)
    parser.add_argument("--hits", type=int, default=1000, help="indicators present in the events")
    parser.add_argument("--batch", type=int, default=5000, help="indicators per terms query")
    parser.add_argument("--days", type=int, default=30, help="spread of the events")
    parser.add_argument("--keep", action="store_true", help="keep the indices")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    rng = random.Random(20261128)
    settings = load_settings()
    client = connect(settings)
    prefix = f"bench-retro-{uuid.uuid4().hex[:8]}"
    store = EventStore(client, IndexNames(prefix))
    store.install_templates()
    now = datetime.now(UTC)
    results: dict[str, Any] = {"events": arguments.events, "indicators": arguments.indicators}
    try:
        pairs = make_indicators(arguments.indicators, rng)
        hits = rng.sample(range(arguments.indicators), min(arguments.hits, arguments.indicators))
        positions = rng.sample(range(arguments.events), len(hits))
        hit_at = {position: pairs[h] for position, h in zip(positions, hits, strict=True)}

        started = time.perf_counter()
        span = timedelta(days=arguments.days).total_seconds()

        def actions() -> Any:
            for number in range(arguments.events):
                moment = (
                    now
                    - timedelta(seconds=span * number / max(1, arguments.events))
                    - timedelta(minutes=1)
                )
                document = event(rng, moment, hit_at.get(number), number)
                yield {
                    "_op_type": "create",
                    "_index": store.index_for(moment),
                    "_id": f"bench-{number}",
                    "_source": document,
                }

        loaded = 0
        for ok, _ in helpers.streaming_bulk(
            client.options(request_timeout=300), actions(), chunk_size=5000, raise_on_error=False
        ):
            loaded += ok
        store.refresh()
        results["load_seconds"] = round(time.perf_counter() - started, 1)
        results["events_loaded"] = loaded

        sample = [pattern_of(kind, value) for kind, value in pairs[:SAMPLE]]
        started = time.perf_counter()
        for pattern in sample:
            plan_pattern(pattern)
        results["plan_ms_per_indicator"] = round(
            1000 * (time.perf_counter() - started) / len(sample), 3
        )
        started = time.perf_counter()
        for number, pattern in enumerate(sample):
            validate_object(
                {
                    "type": "indicator", "spec_version": "2.1", "id": deterministic_id("indicator", str(number)),
                    "created": "2026-11-28T00:00:00.000Z", "modified": "2026-11-28T00:00:00.000Z",
                    "pattern": pattern, "pattern_type": "stix", "valid_from": "2026-11-28T00:00:00Z",
                }
            )  # fmt: skip
        results["validate_ms_per_indicator"] = round(
            1000 * (time.perf_counter() - started) / len(sample), 3
        )

        records = [record(kind, value, number) for number, (kind, value) in enumerate(pairs)]
        started = time.perf_counter()
        lookup = lookup_for(records)
        results["lookup_build_seconds"] = round(time.perf_counter() - started, 2)
        probe = [event(rng, now, None, n) for n in range(50_000)]
        started = time.perf_counter()
        for document in probe:
            lookup.match(document)
        results["ingest_lookup_events_per_second"] = round(
            len(probe) / (time.perf_counter() - started)
        )

        started = time.perf_counter()
        report = retro_hunt(
            client,
            store.names.events_alias,
            records,
            start=now - timedelta(days=arguments.days + 1),
            end=now,
            budget_seconds=24 * 3600,
            batch_size=arguments.batch,
        )
        seconds = time.perf_counter() - started
        found = {m.indicator.stix_id for m in report.matches}
        expected = {records[h].stix_id for h in hits}
        results.update(
            {
                "retro_hunt_seconds": round(seconds, 2),
                "queries": report.queries,
                "events_examined": report.events_examined,
                "indicators_matched": len(found),
                "indicators_planted": len(expected),
                "all_planted_found": expected <= found,
                "indicators_per_second": round(len(records) / seconds),
                "unfinished": len(report.unfinished),
                "failed": len(report.failed),
            }
        )
    finally:
        if not arguments.keep:
            delete_prefix(client, prefix)
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:36} {value}")


if __name__ == "__main__":
    main()
