"""End-to-end ingest rate into Elasticsearch: the pipeline versus the client's bulk helper alone.

Both runs write the same demo-day documents into fresh indices (same template) on the
configured cluster (the local node by default). The baseline gets the documents already
parsed and serialised and sends them with `elasticsearch.helpers.bulk`; the pipeline reads
the files, parses, normalises and writes through BulkWriter. Goal (collectors issue): the
pipeline reaches >= 0.8 of the baseline, i.e. Elasticsearch, not Python, is the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

from elasticsearch import helpers

from collectors.demo_day import DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.formats import get_format
from collectors.normalise import Department, Normaliser
from collectors.pipeline import IngestPipeline
from lianfang.dead_letter import DeadLetterFile
from lianfang.settings import load_settings
from lianfang.store import EventStore, IndexNames, connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="demo day volume (1.0 ~ 83k events)"
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lianfang-bench-"))
    manifest = generate_demo_day(
        DemoSpec(seed=11, day=date(2026, 11, 28), scale=arguments.scale), work
    )
    base = load_settings()
    client = connect(base)
    run_id = uuid.uuid4().hex[:8]
    departments = {d["id"]: d for d in manifest["departments"]}

    def owner(item: dict) -> Department:
        info = departments[item["department"]]
        return Department(info["id"], info["name"], info["sector"])

    # Baseline input: the same documents, parsed and serialised before the clock starts.
    baseline_store = EventStore(client, IndexNames(f"bench-baseline-{run_id}"))
    baseline_store.install_templates()
    actions: list[dict] = []
    for item in manifest["files"]:
        pipeline = IngestPipeline(
            normaliser=Normaliser(department=owner(item)),
            dead_letters=DeadLetterFile(work / "dead-letter"),
            log_format=get_format(item["format"]),
        )
        for event in pipeline.events(file_records(work / item["path"])):
            actions.append(
                {
                    "_op_type": "create",
                    "_index": baseline_store.index_for(event.timestamp),
                    "_id": event.id,
                    "_source": json.dumps(
                        event.document, ensure_ascii=False, separators=(",", ":")
                    ),
                }
            )
    started = time.perf_counter()
    indexed, _ = helpers.bulk(
        client, actions, chunk_size=base.bulk_max_documents, max_chunk_bytes=base.bulk_max_bytes
    )
    baseline_seconds = time.perf_counter() - started
    del actions

    pipeline_settings = load_settings(
        index_prefix=f"bench-pipeline-{run_id}", home_dir=work / "home"
    )
    pipeline_store = EventStore(client, IndexNames(pipeline_settings.index_prefix))
    started = time.perf_counter()
    pipeline_indexed = 0
    for item in manifest["files"]:
        report, _ = ingest_records(
            file_records(work / item["path"]),
            settings=pipeline_settings,
            store=pipeline_store,
            format_name=item["format"],
            department=owner(item),
        )
        pipeline_indexed += report.indexed
    pipeline_seconds = time.perf_counter() - started

    for prefix in (baseline_store.names.prefix, pipeline_store.names.prefix):
        # Deleting by wildcard is refused by default (action.destructive_requires_name).
        client.indices.delete(index=",".join(client.indices.get(index=f"{prefix}-events-*")))
        client.indices.delete_index_template(name=f"{prefix}-events")

    baseline_rate = indexed / baseline_seconds
    pipeline_rate = pipeline_indexed / pipeline_seconds
    result = {
        "events": manifest["events"],
        "baseline_events_per_second": round(baseline_rate),
        "pipeline_events_per_second": round(pipeline_rate),
        "ratio": round(pipeline_rate / baseline_rate, 3),
        "goal_ratio": 0.8,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<30}{value}")


if __name__ == "__main__":
    main()
