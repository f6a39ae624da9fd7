"""Suricata EVE: sniffing, time offsets, alert and DNS (v1-v3) mapping, hostile records."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format
from collectors.formats.suricata import FORMAT, parse, sniff
from collectors.log_format import ParseContext, ParseError
from tests.hostile_records import assert_only_parse_errors, truncations, with_each_value_replaced

ALERT = {
    "timestamp": "2026-11-28T10:00:00.123456+0800",
    "flow_id": 2**63 + 5,
    "event_type": "alert",
    "src_ip": "10.0.0.5",
    "src_port": 49152,
    "dest_ip": "203.0.113.80",
    "dest_port": 80,
    "proto": "TCP",
    "app_proto": "http",
    "community_id": "1:abc=",
    "alert": {
        "action": "blocked",
        "gid": 1,
        "signature_id": 2024897,
        "rev": 3,
        "signature": "ET EXPLOIT test",
        "category": "Attempted Administrator Privilege Gain",
        "severity": 1,
        "metadata": {"mitre_technique_id": ["T1190"], "mitre_tactic_id": ["TA0001"]},
    },
    "http": {"hostname": "example.org", "url": "/x", "status": 500},
    "flow": {"bytes_toserver": 100, "bytes_toclient": 200, "pkts_toserver": 1, "pkts_toclient": 2},
}


def context() -> ParseContext:
    return ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


def test_sniff() -> None:
    assert sniff(json.dumps(ALERT))
    assert sniff({"timestamp": "x", "event_type": "flow"})
    assert not sniff('{"ts": 1795831200.0, "uid": "C1"}')
    assert not sniff('{"timestamp": "2026-11-28T02:00:00Z", "msg": "generic"}')
    assert not sniff("Nov 28 10:00:00 host suricata[1]: event_type timestamp")
    assert not sniff('{"event_type": "alert", "timestamp": ')


def test_detect_format_prefers_suricata_over_generic_json() -> None:
    assert detect_format([json.dumps(ALERT)]) is FORMAT


def test_alert_mapping() -> None:
    document = parse(json.dumps(ALERT), context())
    assert document["@timestamp"] == "2026-11-28T02:00:00.123Z"
    event = document["event"]
    assert event["kind"] == "alert"
    assert event["dataset"] == "suricata.eve"
    assert event["action"] == "alert"
    assert event["severity"] == 1  # Suricata's scale, 1 is the highest
    assert event["type"] == ["denied"]
    # The HTTP status of the flow is context of the alert, not its outcome.
    assert "outcome" not in event
    assert document["rule"] == {
        "id": "2024897",
        "name": "ET EXPLOIT test",
        "category": "Attempted Administrator Privilege Gain",
        "version": "3",
    }
    assert document["threat"]["technique"]["id"] == ["T1190"]
    assert document["network"]["community_id"] == "1:abc="
    assert document["source"]["bytes"] == 100
    assert document["destination"]["packets"] == 2
    assert document["suricata"]["eve"]["flow_id"] == str(2**63 + 5)


def test_timestamp_without_offset_is_read_in_the_configured_zone() -> None:
    document = parse(
        {"timestamp": "2026-11-28T10:00:00.000000", "event_type": "stats", "stats": {}}, context()
    )
    assert document["@timestamp"] == "2026-11-28T02:00:00.000Z"
    assert document["event"]["kind"] == "metric"


def test_cee_prefix_is_accepted() -> None:
    document = parse("@cee: " + json.dumps(ALERT), context())
    assert document["rule"]["id"] == "2024897"


@pytest.mark.parametrize(
    ("dns", "name", "qtype", "answers"),
    [
        ({"type": "query", "id": 1, "rrname": "a.example", "rrtype": "A"}, "a.example", "A", None),
        (
            {
                "type": "answer",
                "id": 1,
                "rcode": "NOERROR",
                "rrname": "a.example",
                "rrtype": "A",
                "ttl": 5,
                "rdata": "192.0.2.1",
            },
            "a.example",
            None,
            [{"name": "a.example", "type": "A", "ttl": 5, "data": "192.0.2.1"}],
        ),
        (
            {
                "version": 2,
                "type": "answer",
                "rcode": "NOERROR",
                "rrname": "a.example",
                "rrtype": "A",
                "answers": [{"rrname": "a.example", "rrtype": "A", "ttl": 5, "rdata": "192.0.2.1"}],
            },
            "a.example",
            "A",
            [{"name": "a.example", "type": "A", "ttl": 5, "data": "192.0.2.1"}],
        ),
        (
            {
                "version": 3,
                "type": "request",
                "queries": [{"rrname": "b.example", "rrtype": "TXT"}],
            },
            "b.example",
            "TXT",
            None,
        ),
    ],
)
def test_dns_versions(dns: dict, name: str, qtype: str | None, answers: list | None) -> None:
    document = parse(
        {"timestamp": "2026-11-28T10:00:00+0800", "event_type": "dns", "dns": dns}, context()
    )
    assert document["dns"]["question"].get("name") == name
    assert document["dns"]["question"].get("type") == qtype
    assert document["dns"].get("answers") == answers
    if answers:
        assert document["dns"]["resolved_ip"] == ["192.0.2.1"]
        assert document["dns"]["type"] == "answer"


def test_unknown_event_type_is_kept_under_suricata_eve() -> None:
    document = parse(
        {"timestamp": "2026-11-28T10:00:00+0800", "event_type": "quic", "quic": {"sni": "x"}},
        context(),
    )
    assert document["event"]["action"] == "quic"
    assert document["suricata"]["eve"]["quic"] == {"sni": "x"}


@pytest.mark.parametrize(
    "record",
    [
        '{"timestamp":"2026-11-28T10:00:00+0800"}',
        '{"timestamp":"not a time","event_type":"alert"}',
        '{"event_type":"alert"}',
        '{"timestamp":"2026-11-28T10:00:00+0800","event_type":"flow","src_port":70000}',
        "[]",
        "",
    ],
)
def test_unreadable_records_are_refused(record: str) -> None:
    with pytest.raises(ParseError):
        parse(record, context())


def test_hostile_records_only_raise_parse_error() -> None:
    line = json.dumps(ALERT)
    assert_only_parse_errors(
        parse, [*truncations(line, 5), *with_each_value_replaced(ALERT)], context()
    )
