"""SigmaHQ rules on the EVTX attack samples: files with an alert per ATT&CK tactic, and the time.

Reference (the detection issue): Zircolite with SigmaHQ `rules/windows` +
`rules-emerging-threats` (converted by sigma-cli) finds at least one detection in 203 of
the 277 files (1,195 detections, 336 distinct rules) in 5.1 s wall for the whole set.
Zircolite's "detections" are matched events: a reproduction of its input (pySigma's sqlite
backend with the sysmon and windows-logsources pipelines, Zircolite's field flattening,
SQLite LIKE) gives the same 203 files and 336 rules, 640 (rule, file) pairs and 1,193
matched events, so both of our counts are printed next to its.

Steps, each timed:
1. compile: load and convert the rules (like sigma-cli's conversion for Zircolite, not in
   the total; `lianfang rules` does it once per rule set);
2. ingest: every .evtx file through `read_evtx` and the `windows` format into a fresh
   index prefix with the platform's ingest (`ingest_records`: normalise, bulk write);
3. rules: every converted rule over the whole time range (`SigmaRunner.run`: planned
   msearch batches, alerts upserted into `<prefix>-alerts`).

Index layout (`--layout`): the platform writes one index per event day. These samples span
about 210 different days from 2019-2021, so `daily` creates ~210 one-shard indices: index
creation dominates the ingest, and each rule is parsed once per shard it searches (see
detection/sigma/query_plan.py), which makes the rules phase take tens of minutes on this
machine: Elasticsearch builds a rule's query (its regular expressions' automata) once per
shard, about 6 ms for a typical rule, while each daily index here holds only ~40 events
(200 sampled rules: 10,983 (rule, index) searches, 183 s). `single` (the default) routes
every event into one index of the same template and alias, as a deployment with coarser
indices would, and is the figure to compare with Zircolite's single in-memory database.

Matched events are attributed to their file through the event id, which the platform
derives from (file, EVTX record id) for decoded records (`lianfang.schema.document_id`).
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

from collectors.file_ingest import ingest_records
from collectors.inputs.evtx_file import read_evtx
from detection.alerts import AlertStore
from detection.sigma.conversion import convert_rule_set
from detection.sigma.execution import RunReport, SigmaRunner
from detection.sigma.rule_loading import load_rule_set
from lianfang.schema import Origin, document_id
from lianfang.settings import load_settings
from lianfang.store import EventStore, IndexNames, connect, delete_prefix, events_template_body

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SAMPLES = DATASETS / "evtx-attack-samples"
SIGMA = DATASETS / "sigma"
RULE_FOLDERS = ("rules/windows", "rules-emerging-threats")
# Zircolite's published figures; its "detections" are matched events (see above).
ZIRCOLITE = {"files": 203, "events": 1195, "pairs": 640, "rules": 336, "seconds": 5.1}
SINGLE_DAY = date(2000, 1, 1)


class SingleIndexStore(EventStore):
    """The events store with every event in one index (same template, same alias)."""

    def index_for(self, moment: datetime) -> str:
        """One index whatever the event's day."""
        return self.names.events_index_for(SINGLE_DAY)


def install_longer_strings_template(client: Any, names: IndexNames, limit: int) -> None:
    """The platform's events template with a higher ignore_above on every string."""

    def raise_limits(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "keyword" and "ignore_above" in node:
                node["ignore_above"] = limit
            for value in node.values():
                raise_limits(value)
        elif isinstance(node, list):
            for value in node:
                raise_limits(value)

    body = events_template_body(names)
    raise_limits(body["template"]["mappings"])
    client.indices.put_index_template(name=names.events_template, **body)


def tactic_of(path: Path) -> str:
    """The tactic folder of a sample file, or (root) for files at the top."""
    relative = path.relative_to(SAMPLES)
    return relative.parts[0] if len(relative.parts) > 1 else "(root)"


def main() -> None:
    """Ingest, run, print the figures, delete the indices."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("single", "daily"), default="single")
    parser.add_argument("--keep", action="store_true", help="keep the indices afterwards")
    parser.add_argument("--missed", action="store_true", help="list the files without an alert")
    parser.add_argument(
        "--ignore-above",
        type=int,
        help="experiment: index strings up to this length (the template's limit is 8191)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        help="run only this many rules, drawn with a fixed seed (daily layout)",
    )
    options = parser.parse_args()
    files = sorted(SAMPLES.rglob("*.evtx"))
    if not files or not SIGMA.is_dir():
        raise SystemExit(f"missing data: {SAMPLES} or {SIGMA}")
    prefix = f"sigmabench-{uuid.uuid4().hex[:8]}"
    # EVTX samples carry no personal data to mask; masking needs a key otherwise.
    settings = load_settings(index_prefix=prefix, masking={"enabled": False})
    client = connect(settings)
    names = IndexNames(prefix)
    store = (
        SingleIndexStore(client, names) if options.layout == "single" else EventStore(client, names)
    )
    if options.ignore_above:
        install_longer_strings_template(client, names, options.ignore_above)
    try:
        began = time.perf_counter()
        rule_set = load_rule_set([SIGMA / folder for folder in RULE_FOLDERS])
        catalogue = convert_rule_set(rule_set)
        if options.sample:
            catalogue.converted = random.Random(1).sample(catalogue.converted, options.sample)
        compile_seconds = time.perf_counter() - began

        file_of: dict[str, Path] = {}

        def records():
            for path in files:
                for record, origin in read_evtx(path):
                    file_of[document_id(Origin(origin.source, origin.offset))] = path
                    yield record, origin

        began = time.perf_counter()
        ingest, _ = ingest_records(records(), settings=settings, store=store, format_name="windows")
        store.refresh()
        ingest_seconds = time.perf_counter() - began

        runner = SigmaRunner(client, names)
        report = RunReport()
        began = time.perf_counter()
        matches = runner.search(catalogue.converted, report=report)
        search_seconds = time.perf_counter() - began
        began = time.perf_counter()
        alert_store = AlertStore(client, prefix)
        alert_store.install()
        alerts = runner.alerts(matches)
        upserted = alert_store.upsert(alerts)
        alert_seconds = time.perf_counter() - began
    finally:
        if not options.keep:
            delete_prefix(client, prefix)

    detections: set[tuple[str, Path]] = set()
    for found in matches:
        for event in found.events:
            path = file_of.get(event.get("event", {}).get("id", ""))
            if path is not None:
                detections.add((found.rule.id, path))
    files_hit = {path for _, path in detections}
    per_tactic_total = Counter(tactic_of(path) for path in files)
    per_tactic_hit = Counter(tactic_of(path) for path in files_hit)
    rules_per_file: dict[Path, set[str]] = defaultdict(set)
    for rule_id, path in detections:
        rules_per_file[path].add(rule_id)

    if options.missed:
        for path in sorted(set(files) - files_hit):
            print(f"no alert: {path.relative_to(SAMPLES)}")
    total_seconds = ingest_seconds + search_seconds + alert_seconds
    print(
        f"layout: {options.layout} ({len(store.events_indices()) if options.keep else 'deleted'})"
    )
    print(f"rules: {len(catalogue.converted) + len(catalogue.unsupported)} loaded, "
          f"{len(catalogue.converted)} converted, {len(catalogue.unsupported)} unsupported "
          f"{catalogue.unsupported_by_kind()}; {len(report.failures)} failed in Elasticsearch")  # fmt: skip
    for reason, count in Counter(f.reason[:160] for f in report.failures).most_common(5):
        print(f"  failed x{count}: {reason}")
    print(f"events: {ingest.read} read, {ingest.indexed} indexed, {ingest.duplicates} duplicates, "
          f"{ingest.dead_lettered} dead-lettered")  # fmt: skip
    print("files with >= 1 alert per tactic folder:")
    for tactic in sorted(per_tactic_total):
        print(f"  {tactic:<24} {per_tactic_hit[tactic]:>3} / {per_tactic_total[tactic]}")
    print(
        f"files with >= 1 alert: {len(files_hit)} / {len(files)} (Zircolite: {ZIRCOLITE['files']})"
    )
    print(f"detections (rule, file): {len(detections)} (Zircolite, reproduced: {ZIRCOLITE['pairs']}); "
          f"matched events: {report.events_matched} (Zircolite's detections: {ZIRCOLITE['events']}); "
          f"distinct rules: {len({rule for rule, _ in detections})} (Zircolite: {ZIRCOLITE['rules']})")  # fmt: skip
    for rule_id, fields in report.unindexed.items():
        print(
            f"  partial: {rule_id} could not see unindexed (too long) values of {', '.join(fields)}"
        )
    print(f"alerts: {len(alerts)} ({vars(upserted)}); rules searched: {report.rules_run - report.rules_skipped}"
          f", skipped by the index plan: {report.rules_skipped}, (rule, index) searches: {report.shard_searches}")  # fmt: skip
    print(f"time: compile {compile_seconds:.1f} s (not in total), ingest {ingest_seconds:.1f} s, "
          f"rules {search_seconds:.1f} s, alerts {alert_seconds:.1f} s, "
          f"total {total_seconds:.1f} s = {total_seconds / ZIRCOLITE['seconds']:.1f} x Zircolite's 5.1 s")  # fmt: skip


if __name__ == "__main__":
    main()
