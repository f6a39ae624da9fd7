"""CEF: sniffing, the extension splitter, device times and hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import cef, detect_format
from collectors.log_format import ParseContext, ParseError

CONTEXT = ParseContext(
    timezone=ZoneInfo("Asia/Shanghai"), received=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
)


@pytest.mark.parametrize(
    "line",
    [
        "CEF:0|V|P|1|100|name|5|src=10.0.0.1",
        "<134>Nov 28 10:00:00 fw1 CEF:0|V|P|1|100|name|5|",
        "<134>1 2026-11-28T10:00:00Z host app - - - CEF:1|V|P|1|100|name|5|src=1.2.3.4",
        "Nov 28 10:00:00 relay app[1]: CEF: 0|V|P|1|100|name|5|",
    ],
)
def test_sniff_accepts_cef_bare_and_behind_syslog(line: str) -> None:
    assert cef.sniff(line)


@pytest.mark.parametrize(
    "record",
    [
        "Nov 28 10:00:00 host sshd[1]: Accepted password for root",
        "LEEF:1.0|V|P|1|ID|src=1.2.3.4",
        "XCEF:0|V|P|1|100|name|5|",
        "the word CEF: appears here without a header",
        '{"message": "CEF:0|V|P|1|100|name|5|src=10.0.0.1"}',
        {"CEF": "0"},
    ],
)
def test_sniff_rejects_other_records(record: object) -> None:
    assert not cef.sniff(record)  # type: ignore[arg-type]


def test_detection_prefers_cef_over_syslog() -> None:
    lines = ["<134>Nov 28 10:00:00 fw1 CEF:0|V|P|1|100|name|5|src=10.0.0.1"]
    assert detect_format(lines).name == "cef"


def test_extension_values_run_until_the_next_key() -> None:
    pairs = cef.split_extension(r"msg=a b  c filePath=/x y/z cs1=\= \\ \n end=1")
    assert pairs == {"msg": "a b  c", "filePath": "/x y/z", "cs1": "= \\ \n", "end": "1"}


def test_escaped_equals_does_not_start_a_key() -> None:
    assert cef.split_extension(r"msg=x y\=z") == {"msg": "x y=z"}


def test_header_pipes_and_backslashes_are_unescaped() -> None:
    document = cef.parse(r"CEF:0|A\|B|C\\D|1|2|N|3|", CONTEXT)
    assert document["observer"]["vendor"] == "A|B"
    assert document["observer"]["product"] == "C\\D"


def test_custom_fields_use_their_labels_and_types() -> None:
    document = cef.parse(
        "CEF:0|V|P|1|2|N|3|cs1Label=Policy cs1=Allow all cn2=7 cn2Label=hits cfp1=1.5 cs3=x",
        CONTEXT,
    )
    assert document["cef"]["extensions"] == {
        "Policy": "Allow all",
        "hits": 7,
        "cfp1": 1.5,
        "cs3": "x",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795831200123", "2026-11-28T02:00:00.123Z"),
        ("1795831200", "2026-11-28T02:00:00.000Z"),
        ("Nov 28 2026 10:00:00", "2026-11-28T02:00:00.000Z"),
        ("Nov 28 2026 10:00:00.5 UTC", "2026-11-28T10:00:00.500Z"),
        ("Nov 28 2026 10:00:00 GMT+01:00", "2026-11-28T09:00:00.000Z"),
        ("Nov 28 2026 10:00:00 Europe/Berlin", "2026-11-28T09:00:00.000Z"),
        ("Nov 28 2026 10:00:00 CST", "2026-11-28T02:00:00.000Z"),  # the configured zone's name
        ("Dec 31 23:00:00", "2025-12-31T15:00:00.000Z"),  # no year: the latest past one
        ("2026-11-28T10:00:00+08:00", "2026-11-28T02:00:00.000Z"),
    ],
)
def test_device_times(text: str, expected: str) -> None:
    from lianfang.schema import format_timestamp

    assert format_timestamp(cef.parse_device_time(text, CONTEXT)) == expected


@pytest.mark.parametrize(
    "text", ["Nov 28 2026 10:00:00 EST", "Feb 30 2026 10:00:00", "soon", "9" * 30]
)
def test_unreadable_device_times_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError):
        cef.parse_device_time(text, CONTEXT)


def test_time_falls_back_to_end_start_syslog_then_reception() -> None:
    end = cef.parse("CEF:0|V|P|1|2|N|3|start=1795831100000 end=1795831200000", CONTEXT)
    assert end["@timestamp"] == "2026-11-28T02:00:00.000Z"
    header = cef.parse("<134>Nov 28 10:00:05 fw CEF:0|V|P|1|2|N|3|", CONTEXT)
    assert header["@timestamp"] == "2026-11-28T02:00:05.000Z"
    bare = cef.parse("CEF:0|V|P|1|2|N|3|", CONTEXT)
    assert bare["@timestamp"] == "2026-11-29T04:00:00.000Z"
    assert bare["tags"] == ["timestamp_from_reception"]


def test_values_that_do_not_fit_ecs_stay_in_extensions() -> None:
    document = cef.parse(
        "CEF:0|V|P|1|2|N|3|spt=http dpt=\u00b2 in=99999999999999999999 dvc=not-an-ip "
        "src=host.example",
        CONTEXT,
    )
    assert document["cef"]["extensions"] == {
        "spt": "http",
        "dpt": "\u00b2",
        "in": "99999999999999999999",
        "dvc": "not-an-ip",
    }
    assert document["source"] == {"address": "host.example"}


@pytest.mark.parametrize(
    "line",
    [
        "CEF:0|",
        "CEF:0|V|P|1|2|N|3|" + "x" * 10000,
        "CEF:0|V|P|1|2|N|3|rt=" + "1" * 400,
        "\x00CEF:0|\x00|\x00|\x00|\x00|\x00|\x00|\x00=\x00",
        "CEF:0|V|P|1|2|N|3|=novalue",
        "CEF:0|V|P|1|2|N|\u00b2|rt=1\u00b2 proto=\u00b2",
    ],
)
def test_hostile_lines_fail_cleanly(line: str) -> None:
    with contextlib.suppress(ParseError):
        cef.parse(line, CONTEXT)


def test_every_truncation_of_the_golden_lines_fails_cleanly() -> None:
    for path in (Path(__file__).parent / "golden" / "cef").glob("*.input"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for end in range(len(line)):
                with contextlib.suppress(ParseError):
                    cef.parse(line[:end], CONTEXT)


def test_non_text_records_are_refused() -> None:
    with pytest.raises(ParseError):
        cef.parse({"message": "CEF:0|V|P|1|2|N|3|"}, CONTEXT)
