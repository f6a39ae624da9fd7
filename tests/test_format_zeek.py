"""Zeek format: sniffing, TSV header state, typing and escapes, JSON log inference."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format
from collectors.formats.zeek import FORMAT, parse, sniff
from collectors.log_format import ParseContext, ParseError
from tests.hostile_records import assert_only_parse_errors, truncations, with_each_value_replaced

HEADER = [
    "#separator \\x09",
    "#set_separator\t,",
    "#empty_field\t(empty)",
    "#unset_field\t-",
    "#path\tconn",
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\tlocal_orig\tlocal_resp\ttunnel_parents",
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\tbool\tbool\tset[string]",
]
CONN_JSON = {
    "ts": 1795831200.25,
    "uid": "CAbc1",
    "id.orig_h": "10.0.0.5",
    "id.orig_p": 50000,
    "id.resp_h": "10.0.0.9",
    "id.resp_p": 443,
    "proto": "tcp",
    "conn_state": "SF",
    "duration": 1.5,
    "local_orig": True,
    "local_resp": True,
}


def context() -> ParseContext:
    return ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


def parse_all(lines: list[str]) -> list[dict | None]:
    shared = context()
    return [parse(line, shared) for line in lines]


@pytest.mark.parametrize(
    "record",
    [
        "#separator \\x09",
        "#fields\tts\tuid",
        json.dumps(CONN_JSON),
        '{"_path":"dns","ts":"2026-11-28T02:00:00.000000Z","query":"example.org"}',
        {"ts": 1795831200.0, "uid": "C1"},
    ],
)
def test_sniff_recognises_zeek(record: str | dict) -> None:
    assert sniff(record)


@pytest.mark.parametrize(
    "record",
    [
        "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
        '{"timestamp":"2026-11-28T10:00:00+0800","event_type":"alert"}',
        '{"ts": 1795831200, "msg": "a generic JSON log with ts but no uid"}',
        "1795831200.0\tC1\t10.0.0.1\t1",  # a data line alone says nothing about its columns
        "# a comment",
        {"ts": 1795831200},
    ],
)
def test_sniff_rejects_others(record: str | dict) -> None:
    assert not sniff(record)


def test_detect_format_picks_zeek_for_tsv_and_json() -> None:
    assert detect_format(HEADER[:5]) is FORMAT
    assert detect_format([json.dumps(CONN_JSON)]) is FORMAT


def test_header_lines_return_none_and_fill_state() -> None:
    shared = context()
    assert [parse(line, shared) for line in HEADER] == [None] * len(HEADER)
    header = shared.state["zeek"]
    assert header.path == "conn"
    assert header.fields[:3] == ["ts", "uid", "id.orig_h"]


def test_tsv_line_is_typed_by_types_header() -> None:
    *_, document = parse_all(
        [*HEADER, "1795831200.500000\tC1\t10.0.0.5\t50000\t10.0.0.9\t443\ttcp\t1.5\tT\tF\ta,b"]
    )
    assert document["@timestamp"] == "2026-11-28T02:00:00.500Z"
    assert document["source"] == {"ip": "10.0.0.5", "port": 50000}
    assert document["event"]["duration"] == 1_500_000_000
    assert document["network"]["direction"] == "outbound"
    assert document["zeek"]["conn"]["tunnel_parents"] == ["a", "b"]
    assert "id" not in document["event"]


def test_declared_separators_and_placeholders_are_honoured() -> None:
    lines = [
        "#separator \\x7c",
        "#set_separator|;",
        "#empty_field|EMPTY",
        "#unset_field|NONE",
        "#path|conn",
        "#fields|ts|uid|history|tunnel_parents",
        "#types|time|string|string|set[string]",
        "1795831200.0|C1|NONE|x;y",
        "1795831200.0|C2|Dd|EMPTY",
    ]
    *_, first, second = parse_all(lines)
    assert first["zeek"]["conn"] == {"tunnel_parents": ["x", "y"]}
    assert second["zeek"]["conn"] == {"history": "Dd"}


def test_escaped_bytes_are_decoded() -> None:
    lines = [
        "#separator \\x09",
        "#path\thttp",
        "#fields\tts\tuid\turi\tuser_agent",
        "#types\ttime\tstring\tstring\tstring",
        "1795831200.0\tC1\t/a\\x09b\\x2cc\t\\x2d",
        "1795831200.0\tC2\t/caf\\xc3\\xa9\tbad \\xff byte",
    ]
    *_, first, second = parse_all(lines)
    assert first["url"]["original"] == "/a\tb,c"
    assert first["user_agent"]["original"] == "-"  # an escaped dash is a real dash
    assert second["url"]["original"] == "/café"
    assert second["user_agent"]["original"] == "bad \\xff byte"


def test_data_line_before_header_is_refused() -> None:
    with pytest.raises(ParseError, match="before its #fields"):
        parse("1795831200.0\tC1\t10.0.0.1", context())


def test_wrong_column_count_is_refused() -> None:
    with pytest.raises(ParseError, match="declares 11"):
        parse_all([*HEADER, "1795831200.0\tC1"])


@pytest.mark.parametrize(
    ("record", "log"),
    [
        ({"query": "example.org", "qtype_name": "A"}, "dns"),
        ({"func": "READ_COILS"}, "modbus"),
        ({"fc_request": "READ"}, "dnp3"),
        ({"method": "GET", "uri": "/"}, "http"),
        ({"established": True}, "ssl"),
        ({"note": "Scan::Port_Scan", "msg": "scan"}, "notice"),
        ({"name": "bad_TCP_checksum", "peer": "worker-1"}, "weird"),
        ({"certificate.serial": "01"}, "x509"),
        ({"something": "new"}, "unknown"),
    ],
)
def test_json_log_is_inferred_from_its_keys(record: dict, log: str) -> None:
    document = parse(json.dumps({"ts": 1795831200.0, "uid": "C1", **record}), context())
    assert document["event"]["dataset"] == f"zeek.{log}"


def test_json_path_wins_and_odd_names_are_neutralised() -> None:
    document = parse({"_path": "conn", "ts": 1795831200.0, "uid": "C1", "query": "x"}, context())
    assert document["event"]["dataset"] == "zeek.conn"
    document = parse({"_path": "../../etc", "ts": 1795831200.0, "uid": "C1"}, context())
    assert document["event"]["dataset"] == "zeek.unknown"


def test_json_iso_timestamp_and_direction_and_session_id() -> None:
    document = parse(json.dumps({**CONN_JSON, "ts": "2026-11-28T02:00:00.123456Z"}), context())
    assert document["@timestamp"] == "2026-11-28T02:00:00.123Z"
    assert document["network"]["direction"] == "internal"
    assert document["zeek"]["session_id"] == "CAbc1"
    assert document["event"]["duration"] == 1_500_000_000


def test_json_value_of_the_wrong_type_stays_in_the_namespace() -> None:
    document = parse(
        json.dumps({**CONN_JSON, "id.orig_h": "not-an-ip", "orig_bytes": "many"}), context()
    )
    assert "ip" not in document.get("source", {})
    assert document["zeek"]["conn"]["id"]["orig_h"] == "not-an-ip"
    assert document["zeek"]["conn"]["orig_bytes"] == "many"


def test_dns_answers_keep_their_ttls() -> None:
    document = parse(
        {
            "ts": 1795831200.0,
            "uid": "C1",
            "query": "example.org",
            "qtype_name": "A",
            "rcode_name": "NOERROR",
            "answers": ["a.example.org", "192.0.2.1"],
            "TTLs": [60.0, 30.0],
        },
        context(),
    )
    assert document["dns"]["answers"] == [
        {"data": "a.example.org", "ttl": 60},
        {"data": "192.0.2.1", "ttl": 30},
    ]
    assert document["dns"]["resolved_ip"] == ["192.0.2.1"]
    assert document["event"]["outcome"] == "success"


def test_hostile_records_only_raise_parse_error() -> None:
    shared = context()
    for line in HEADER:
        parse(line, shared)
    tsv = "1795831200.500000\tC1\t10.0.0.5\t50000\t10.0.0.9\t443\ttcp\t1.5\tT\tF\ta,b"
    assert_only_parse_errors(
        parse, [*truncations(tsv, 3), *with_each_value_replaced(CONN_JSON)], shared
    )
