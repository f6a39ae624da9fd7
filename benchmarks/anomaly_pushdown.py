"""Anomaly scoring at scale: features pushed down to Elasticsearch vs pulled and aggregated in Python.

One synthetic day of network flows is indexed into a private prefix on the configured
cluster (the local node by default): `--entities` source addresses x 24 hourly windows,
`--events-per-window` flows each (default 5,000 x 24 = 120,000 entity-windows from
360,000 events). A model (the default detector) is trained once on the day's features;
then each path runs in its own child process, so that its peak memory is its own:

* push-down: `extract_features` (composite aggregation paged with after_key, one
  sub-aggregation per feature, plus the first-seen lookback pass), then scoring;
* pull: every event's needed fields fetched with search_after pages, the event table
  built and the same features computed in Python (`compute_features`), then scoring.

Both give the same feature table (checked). Reported: seconds and peak resident memory
above the child's starting point. Goal (detection issue): the push-down is faster and its
memory is bounded by the result, not by the number of events.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PAGE = 10_000
DAY = datetime(2026, 11, 26, tzinfo=UTC)
FEATURE_SET = "network_source"


def resident_bytes() -> int:
    """Current resident set size of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def peak_resident_bytes() -> int:
    """Highest resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def documents(entities: int, per_window: int) -> Any:
    """The synthetic day: every entity sends `per_window` flows in every hour."""
    import random

    rng = random.Random(11)
    for entity in range(entities):
        department = ("finance", "energy")[entity % 2]
        source = f"10.{entity % 2}.{entity // 250 % 250}.{entity % 250}"
        for hour in range(24):
            for number in range(per_window):
                moment = DAY + timedelta(hours=hour, seconds=rng.uniform(0, 3599))
                yield {
                    "@timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "event": {
                        "id": f"{entity}-{hour}-{number}",
                        "kind": "event",
                        "category": ["network"],
                        "outcome": "failure" if rng.random() < 0.02 else "success",
                    },
                    "organization": {"id": department},
                    "source": {"ip": source, "bytes": int(rng.lognormvariate(8, 1.2))},
                    "destination": {
                        "ip": f"172.16.{rng.randint(0, 3)}.{rng.randint(1, 200)}",
                        "port": rng.choice((443, 443, 80, 22, 53, 3306)),
                        "bytes": int(rng.lognormvariate(9, 1.4)),
                    },
                }


def prepare(prefix: str, entities: int, per_window: int, models: Path) -> dict[str, Any]:
    """Index the day and train the model both paths score with."""
    from elasticsearch.helpers import bulk

    from detection.anomaly_models import ModelRepository, train_model
    from detection.feature_extraction import extract_features
    from detection.feature_sets import load_feature_sets
    from lianfang.settings import load_settings
    from lianfang.store import EventStore, IndexNames, connect

    settings = load_settings(index_prefix=prefix)
    store = EventStore(connect(settings), IndexNames(prefix))
    store.install_templates()
    started = time.perf_counter()
    indexed, errors = bulk(
        store.client,
        ({"_index": store.index_for(DAY), "_source": d} for d in documents(entities, per_window)),
        chunk_size=5000,
        request_timeout=120,
        stats_only=True,
    )
    store.refresh()
    indexing = time.perf_counter() - started
    feature_set = load_feature_sets(timezone=settings.timezone).get(FEATURE_SET)
    table = extract_features(
        store.client, store.names.events_alias, feature_set, DAY, DAY + timedelta(days=1)
    )
    started = time.perf_counter()
    repository = ModelRepository(models)
    for department in ("finance", "energy"):
        model = train_model(table, feature_set, department, DAY, DAY + timedelta(days=1))
        repository.save(model)
    training = time.perf_counter() - started
    return {
        "events": indexed,
        "index_errors": errors,
        "indexing_seconds": round(indexing, 1),
        "entity_windows": table.num_rows,
        "training_seconds": round(training, 1),
    }


def measure(prefix: str, mode: str, models: Path) -> dict[str, Any]:
    """One path, in this (child) process: extraction then scoring, time and peak memory."""
    import numpy as np

    from detection.anomaly_models import ModelRepository, department_rows, score_table
    from detection.event_files import event_table
    from detection.feature_extraction import column_needs, compute_features, extract_features
    from detection.feature_sets import load_feature_sets
    from lianfang.settings import load_settings
    from lianfang.store import connect

    settings = load_settings(index_prefix=prefix)
    client = connect(settings)
    feature_set = load_feature_sets(timezone=settings.timezone).get(FEATURE_SET)
    repository = ModelRepository(models)
    loaded = {d: repository.load(FEATURE_SET, d) for d in ("finance", "energy")}
    index = f"{prefix}-events"
    start, end = DAY, DAY + timedelta(days=1)
    before = resident_bytes()
    began = time.perf_counter()
    if mode == "pushdown":
        table = extract_features(client, index, feature_set, start, end)
        pulled = 0
    else:
        needs = column_needs(feature_set)
        fields = sorted({*needs.keywords, *needs.numbers, "@timestamp", "organization.id"})
        hits: list[dict[str, Any]] = []
        after = None
        lookback = start - feature_set.lookback_delta
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": {
                    "range": {"@timestamp": {"gte": lookback.isoformat(), "lt": end.isoformat()}}
                },
                "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
                "_source": fields,
                "track_total_hits": False,
            }
            if after is not None:
                body["search_after"] = after
            page = client.search(index=index, **body)["hits"]["hits"]
            if not page:
                break
            hits.extend(hit["_source"] for hit in page)
            after = page[-1]["sort"]
        pulled = len(hits)
        table = compute_features(event_table(hits, needs), feature_set, start, end)
        del hits
    extracted = time.perf_counter() - began
    extraction_peak = peak_resident_bytes() - before
    scored = 0
    above = 0
    for department, model in loaded.items():
        windows = score_table(model, feature_set, department_rows(table, department))
        scored += len(windows)
        above += sum(window.above_threshold for window in windows)
    seconds = time.perf_counter() - began
    checksum = float(
        np.nansum([np.nansum(table.column(n).to_numpy()) for n in feature_set.feature_names])
    )
    return {
        "mode": mode,
        "events_pulled": pulled,
        "entity_windows": scored,
        "above_threshold": above,
        "extraction_seconds": round(extracted, 2),
        "scoring_seconds": round(seconds - extracted, 2),
        "total_seconds": round(seconds, 2),
        "extraction_peak_memory_mib": round(extraction_peak / 2**20, 1),
        "peak_memory_mib": round((peak_resident_bytes() - before) / 2**20, 1),
        "feature_checksum": round(checksum, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=5000)
    parser.add_argument("--events-per-window", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", choices=("pushdown", "pull"), help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure(arguments.prefix, arguments.child, arguments.models)))
        return

    import tempfile

    from lianfang.settings import load_settings
    from lianfang.store import connect, delete_prefix

    prefix = f"lfbench-anomaly-{uuid.uuid4().hex[:8]}"
    client = connect(load_settings(index_prefix=prefix))
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder) / "models"
        try:
            setup = prepare(prefix, arguments.entities, arguments.events_per_window, models)
            runs = {}
            for mode in ("pushdown", "pull"):
                output = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--prefix",
                        prefix,
                        "--models",
                        str(models),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[mode] = json.loads(output.strip().splitlines()[-1])
        finally:
            delete_prefix(client, prefix)
    push, pull = runs["pushdown"], runs["pull"]
    report = {
        **setup,
        "pushdown": push,
        "pull": pull,
        "speedup": round(pull["total_seconds"] / push["total_seconds"], 2),
        "memory_ratio": round(
            pull["extraction_peak_memory_mib"] / max(push["extraction_peak_memory_mib"], 0.1), 1
        ),
        "same_features": push["feature_checksum"] == pull["feature_checksum"],
    }
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{setup['events']:,} events, {setup['entity_windows']:,} entity-windows "
            f"(indexed in {setup['indexing_seconds']} s; model trained in {setup['training_seconds']} s)"
        )
        for run in (push, pull):
            print(
                f"  {run['mode']:<9} extraction {run['extraction_seconds']:>7.2f} s + scoring "
                f"{run['scoring_seconds']:>6.2f} s = {run['total_seconds']:>7.2f} s, "
                f"peak memory +{run['extraction_peak_memory_mib']:.0f} MiB after extraction, "
                f"+{run['peak_memory_mib']:.0f} MiB with scoring"
                + (f", {run['events_pulled']:,} events pulled" if run["events_pulled"] else "")
            )
        print(
            f"  push-down is {report['speedup']}x faster and extracts with {report['memory_ratio']}x "
            "less memory; "
            f"same features: {report['same_features']}"
        )
    ok = push["total_seconds"] < pull["total_seconds"] and report["same_features"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
