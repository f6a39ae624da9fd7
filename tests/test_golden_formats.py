"""Golden files for every log format: tests/golden/<format>/<case>.input -> <case>.expected.json.

Each input line (or, for `.input.json`, each element of a JSON array of records) is parsed
with a fixed context (received 2026-11-29T04:00:00Z, zone Asia/Shanghai) and the list of
documents must equal the expected file exactly (None where the line carries no event;
{"error": reason} where the parser must refuse it). Regenerate after a deliberate change
with LIANFANG_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import get_format
from collectors.log_format import ParseContext, ParseError

GOLDEN = Path(__file__).parent / "golden"
RECEIVED = datetime(2026, 11, 29, 4, 0, 0, tzinfo=UTC)


def read_input_lines(path: Path) -> list[str]:
    """Lines split on newlines only, as the file input does (str.splitlines would also split on
    control characters such as 0x1D, which auditd's enriched records contain)."""
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def golden_cases() -> list[Path]:
    return sorted(
        path
        for path in GOLDEN.glob("*/*")
        if path.name.endswith(".input") or path.name.endswith(".input.json")
    )


def parse_case(path: Path) -> list[object]:
    log_format = get_format(path.parent.name)
    context = ParseContext(timezone=ZoneInfo("Asia/Shanghai"), received=RECEIVED, source=path.name)
    if path.name.endswith(".input.json"):
        records: list[object] = json.loads(path.read_text(encoding="utf-8"))
    else:
        records = [line for line in read_input_lines(path) if line.strip()]
    results: list[object] = []
    for record in records:
        try:
            results.append(log_format.parse(record, context))  # type: ignore[arg-type]
        except ParseError as error:
            results.append({"error": error.reason})
    return results


def expected_path(path: Path) -> Path:
    stem = path.name.removesuffix(".json").removesuffix(".input")
    return path.with_name(f"{stem}.expected.json")


@pytest.mark.parametrize("case", golden_cases(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_golden(case: Path) -> None:
    actual = json.loads(json.dumps(parse_case(case), default=str))
    expected_file = expected_path(case)
    if os.environ.get("LIANFANG_UPDATE_GOLDEN"):
        expected_file.write_text(
            json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert actual == expected


def test_every_format_has_golden_files() -> None:
    from collectors.formats import available_formats

    covered = {path.parent.name for path in golden_cases()}
    assert set(available_formats()) <= covered, set(available_formats()) - covered
