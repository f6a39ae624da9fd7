"""Parse + normalise rate per log format on one core.

For every format, the valid records of its golden inputs (tests/golden/<format>/) are
repeated until at least --lines records, then parsed and normalised in this process.
Prints events/s per format; goals (collectors issue): >= 50,000/s for syslog, JSON and CEF.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from collectors.formats import available_formats
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.normalise import Department, Normaliser
from lianfang.schema import Origin

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def read_input_lines(path: Path) -> list[str]:
    """Lines split on newlines only, as the file input does."""
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def valid_records(log_format: LogFormat) -> list[Record]:
    """The golden records this format accepts (events, and header lines stateful formats need)."""
    records: list[Record] = []
    for path in sorted((GOLDEN / log_format.name).glob("*.input*")):
        if path.name.endswith(".input.json"):
            candidates = json.loads(path.read_text(encoding="utf-8"))
        else:
            candidates = [line for line in read_input_lines(path) if line.strip()]
        context = ParseContext(timezone=ZoneInfo("Asia/Shanghai"))
        for record in candidates:
            try:
                log_format.parse(record, context)
                records.append(record)
            except ParseError:
                continue
    return records


def measure(log_format: LogFormat, records: list[Record], minimum: int) -> tuple[int, float]:
    """Parse and normalise at least `minimum` records; returns (count, seconds)."""
    normaliser = Normaliser(department=Department("bench", "Benchmark", "government"))
    repeats = -(-minimum // len(records))
    workload = records * repeats
    context = ParseContext(timezone=ZoneInfo("Asia/Shanghai"))
    received = datetime.now(UTC)
    started = time.perf_counter()
    for offset, record in enumerate(workload):
        # Stateful formats (headers) see a fresh state only once, as a real file would.
        document = log_format.parse(record, context)
        if document is not None:
            normaliser(
                document,
                record if isinstance(record, str) else None,
                Origin("bench", offset),
                received,
            )
    return len(workload), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--format", action="append", help="only these formats")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    results = {}
    for name, log_format in available_formats().items():
        if arguments.format and name not in arguments.format:
            continue
        records = valid_records(log_format)
        if not records:
            continue
        count, seconds = measure(log_format, records, arguments.lines)
        results[name] = {
            "records": count,
            "seconds": round(seconds, 3),
            "per_second": round(count / seconds),
        }
    if arguments.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'format':<16}{'records':>10}{'seconds':>10}{'events/s':>12}")
    for name, row in results.items():
        print(f"{name:<16}{row['records']:>10}{row['seconds']:>10.2f}{row['per_second']:>12,}")


if __name__ == "__main__":
    main()
