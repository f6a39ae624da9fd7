"""EVTX read + parse rate on one core: every shared sample file through read_evtx and `windows`.

All .evtx files under the shared evtx-attack-samples folder are read (the evtx package
decoding on one thread) and parsed to ECS, repeating passes until at least --records
records are done. Prints records/s by wall clock and by this process's CPU time (the
fairer figure on a busy machine). Goal (collectors issue): >= 20,000 records/s.

Usage: .venv/bin/python benchmarks/evtx_parse.py [--records N] [--folder PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from collectors.formats.windows import FORMAT
from collectors.inputs.evtx_file import read_evtx
from collectors.log_format import ParseContext, ParseError

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "evtx-attack-samples"


def one_pass(files: list[Path], context: ParseContext) -> tuple[int, int]:
    """Read and parse every file once; returns (records, refused records)."""
    records = refused = 0
    for path in files:
        for record, _origin in read_evtx(path):
            records += 1
            try:
                FORMAT.parse(record, context)
            except ParseError:
                refused += 1
    return records, refused


def main() -> None:
    """Run passes until the record target is reached and print the rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="minimum records to process")
    parser.add_argument("--folder", type=Path, default=SAMPLES, help="folder of .evtx files")
    options = parser.parse_args()
    files = sorted(options.folder.rglob("*.evtx"))
    if not files:
        raise SystemExit(f"no .evtx files under {options.folder}")
    context = ParseContext()
    one_pass(files, context)  # warm the page cache and imports before timing
    total = refused = passes = 0
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    while total < options.records:
        records, failed = one_pass(files, context)
        total += records
        refused += failed
        passes += 1
    wall = time.perf_counter() - wall_started
    cpu = time.process_time() - cpu_started
    print(f"{len(files)} files, {total // passes} records per pass, {passes} passes")
    print(f"{total} records in {wall:.2f}s wall ({total / wall:,.0f} records/s), "
          f"{cpu:.2f}s CPU ({total / cpu:,.0f} records/s per core)")  # fmt: skip
    print(f"refused (ParseError): {refused}")


if __name__ == "__main__":
    main()
