"""LEEF: sniffing, delimiters, devTimeFormat patterns and hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format, leef
from collectors.log_format import ParseContext, ParseError

CONTEXT = ParseContext(
    timezone=ZoneInfo("Asia/Shanghai"), received=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
)


@pytest.mark.parametrize(
    "line",
    [
        "LEEF:1.0|V|P|1|ID|src=1.2.3.4",
        "LEEF:2.0|V|P|1|ID|^|src=1.2.3.4",
        "Jan 18 11:07:53 host LEEF:1.0|V|P|1|ID|",
    ],
)
def test_sniff_accepts_leef(line: str) -> None:
    assert leef.sniff(line)
    assert detect_format([line]).name == "leef"


@pytest.mark.parametrize(
    "record",
    [
        "CEF:0|V|P|1|2|N|3|",
        "Nov 28 10:00:00 host app: LEEF is a format",
        '{"message": "LEEF:1.0|V|P|1|ID|src=1.2.3.4"}',
        {"a": 1},
    ],
)
def test_sniff_rejects_other_records(record: object) -> None:
    assert not leef.sniff(record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header_rest", "separator"),
    [("^|a=1^b=2", "^"), ("x5E|a=1^b=2", "^"), ("0x09|a=1\tb=2", "\t"), ("|a=1\tb=2", "\t")],
)
def test_leef2_delimiters(header_rest: str, separator: str) -> None:
    document = leef.parse(f"LEEF:2.0|V|P|1|ID|{header_rest}", CONTEXT)
    assert document["leef"]["attributes"] == {"a": "1", "b": "2"}


def test_leef2_without_delimiter_field_uses_tab() -> None:
    document = leef.parse("LEEF:2.0|V|P|1|ID|a=1\tb=x|y", CONTEXT)
    assert document["leef"]["attributes"] == {"a": "1", "b": "x|y"}


def test_space_separated_attributes_are_split_like_cef() -> None:
    document = leef.parse("LEEF:1.0|V|P|1|ID|src=1.2.3.4 name=First Last sev=3", CONTEXT)
    assert document["source"] == {"ip": "1.2.3.4"}
    assert document["leef"]["attributes"] == {"name": "First Last"}
    assert document["event"]["severity"] == 3


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("MMM dd yyyy HH:mm:ss", ("%b %d %Y %H:%M:%S", False)),
        ("yyyy-MM-dd'T'HH:mm:ss.SSSZ", ("%Y-%m-%dT%H:%M:%S.%f%z", False)),
        ("MMM dd yyyy HH:mm:ss z", ("%b %d %Y %H:%M:%S", True)),
        ("dd/MM/yy hh:mm a", ("%d/%m/%y %I:%M %p", False)),
        ("yyyy'%'MM", ("%Y%%%m", False)),
        ("EEE, d MMMM yyyy", ("%a, %d %B %Y", False)),
    ],
)
def test_java_patterns(pattern: str, expected: tuple[str, bool]) -> None:
    assert leef.java_to_strptime(pattern) == expected


def test_devtime_with_zone_name() -> None:
    document = leef.parse(
        "LEEF:1.0|V|P|1|ID|devTime=Nov 28 2026 10:00:00 UTC\tdevTimeFormat=MMM dd yyyy HH:mm:ss z",
        CONTEXT,
    )
    assert document["@timestamp"] == "2026-11-28T10:00:00.000Z"


def test_identsrc_is_the_source_only_without_src() -> None:
    alone = leef.parse("LEEF:1.0|V|P|1|ID|identSrc=10.0.0.9", CONTEXT)
    assert alone["source"] == {"ip": "10.0.0.9"}
    both = leef.parse("LEEF:1.0|V|P|1|ID|src=10.0.0.1\tidentSrc=10.0.0.9", CONTEXT)
    assert both["source"] == {"ip": "10.0.0.1"}
    assert both["leef"]["attributes"] == {"identSrc": "10.0.0.9"}


@pytest.mark.parametrize(
    "line",
    [
        "LEEF:",
        "LEEF:2.0|V|P|1|ID|xZZ|a=1",
        "LEEF:1.0|V|P|1|ID|devTime=1\tdevTimeFormat=''''''",
        "LEEF:1.0|V|P|1|ID|devTime=x\tdevTimeFormat=GGGG",
        "LEEF:9.9|\x00|\x00|\x00|\x00|\x00=\x00",
        "LEEF:1.0|V|P|1|ID|" + "=" * 5000,
    ],
)
def test_hostile_lines_fail_cleanly(line: str) -> None:
    with contextlib.suppress(ParseError):
        leef.parse(line, CONTEXT)


def test_every_truncation_of_the_golden_lines_fails_cleanly() -> None:
    for path in (Path(__file__).parent / "golden" / "leef").glob("*.input"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for end in range(len(line)):
                with contextlib.suppress(ParseError):
                    leef.parse(line[:end], CONTEXT)
