"""Time for all enabled behavioural rules over about 1M events on the configured cluster.

Generates the demo day at a larger scale (12 ~ 1M events) into a fresh index prefix,
ingests it, then runs every enabled built-in rule over the whole day as one window, as
`lianfang detect run` would, and prints the time per rule, the total, and the alerts
(story or benign, with false positives per 100k events). The prefix and the generated
files are deleted afterwards unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from collectors.demo_day import DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from detection.rule_executor import RuleExecutor, RulePlan
from detection.rule_format import builtin_rules
from lianfang.schema import parse_timestamp
from lianfang.settings import load_settings
from lianfang.store import EventStore, IndexNames, connect, delete_prefix

DAY = date(2026, 11, 26)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=12.0, help="demo scale (12 ~ 1M events)")
    parser.add_argument("--keep", action="store_true", help="keep the index prefix")
    parser.add_argument(
        "--prefix", help="reuse a prefix loaded by an earlier --keep run (same --scale)"
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lianfang-rules-bench-"))
    prefix = arguments.prefix or f"bench-rules-{uuid.uuid4().hex[:8]}"
    # Ingest masks personal data, which needs a key; any fixed one will do here.
    settings = load_settings(
        index_prefix=prefix, home_dir=work / "home", masking_key="benchmark-key-not-a-secret"
    )
    client = connect(settings)
    store = EventStore(client, IndexNames(prefix))
    try:
        began = time.perf_counter()
        manifest = generate_demo_day(DemoSpec(seed=11, day=DAY, scale=arguments.scale), work)
        departments = {d["id"]: d for d in manifest["departments"]}
        for item in [] if arguments.prefix else manifest["files"]:
            info = departments[item["department"]]
            ingest_records(
                file_records(work / item["path"]),
                settings=settings,
                store=store,
                format_name=item["format"],
                department=Department(info["id"], info["name"], info["sector"]),
            )
        store.refresh()
        client.indices.forcemerge(index=f"{prefix}-events-*", max_num_segments=1)
        loaded = client.count(index=f"{prefix}-events")["count"]
        load_seconds = time.perf_counter() - began

        executor = RuleExecutor(client, f"{prefix}-events")
        start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        rows = []
        alerts = []
        total = time.perf_counter()
        for rule in builtin_rules():
            if not rule.enabled:
                continue
            clock = time.perf_counter()
            found = executor.alerts(RulePlan.default(rule), start, end)
            rows.append(
                {"rule": rule.id, "alerts": len(found), "seconds": time.perf_counter() - clock}
            )
            alerts.extend(found)
        rules_seconds = time.perf_counter() - total
    finally:
        if not arguments.keep:
            delete_prefix(client, prefix)
        shutil.rmtree(work, ignore_errors=True)

    def about_story(alert) -> bool:
        for story in manifest["stories"]:
            entities = {str(v) for v in story["entities"].values()}
            values = {alert.entity_value, *alert.entity_fields.values()}
            near = alert.first_seen <= parse_timestamp(story["end"]) + timedelta(minutes=30)
            near = near and alert.last_seen >= parse_timestamp(story["start"]) - timedelta(hours=1)
            if alert.organization_id == story["department"] and values & entities and near:
                return True
        return False

    benign = [alert for alert in alerts if not about_story(alert)]
    report = {
        "events": loaded,
        "load_seconds": round(load_seconds, 1),
        "rules": len(rows),
        "rules_seconds": round(rules_seconds, 2),
        "events_per_second": round(loaded / rules_seconds) if rules_seconds else None,
        "alerts": len(alerts),
        "benign_alerts": len(benign),
        "false_positives_per_100k_events": round(len(benign) / loaded * 100_000, 2),
        "benign_by_rule": sorted({a.rule_id for a in benign}),
        "per_rule": [{**row, "seconds": round(row["seconds"], 3)} for row in rows],
    }
    if arguments.json:
        print(json.dumps(report, indent=2))
        return
    kept = "kept" if arguments.keep else "deleted"
    verb = "reused" if arguments.prefix else f"generated and loaded in {load_seconds:.0f} s"
    print(f"{loaded:,} events {verb} (prefix {prefix}, {kept})")
    for row in sorted(rows, key=lambda r: -r["seconds"]):
        print(f"  {row['rule']:34} {row['seconds']:7.2f} s  {row['alerts']:4} alerts")
    print(
        f"all {len(rows)} rules: {rules_seconds:.1f} s over one day "
        f"({report['events_per_second']:,} events/s); {len(alerts)} alerts, "
        f"{len(benign)} on benign traffic = {report['false_positives_per_100k_events']} "
        f"per 100k events"
    )


if __name__ == "__main__":
    main()
