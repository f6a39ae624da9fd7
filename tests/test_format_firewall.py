"""firewall: sniffing against syslog and other formats, netfilter fields, key=value aliases and times."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format, firewall
from collectors.log_format import ParseContext, ParseError

CONTEXT = ParseContext(
    timezone=ZoneInfo("Asia/Shanghai"), received=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
)
NETFILTER = (
    "Nov 28 10:00:00 gw kernel: [1.5] IPTABLES-DROP: IN=eth0 OUT= SRC=203.0.113.9 "
    "DST=198.51.100.1 LEN=60 TTL=52 ID=1 DF PROTO=TCP SPT=5151 DPT=22 WINDOW=1 SYN URGP=0"
)
SSHD = "Nov 28 10:00:01 gw sshd[22]: Accepted publickey for deploy from 198.51.100.20 port 4 ssh2"


@pytest.mark.parametrize(
    "line",
    [
        NETFILTER,
        "[ 12.5] [UFW BLOCK] IN=eth0 OUT= MAC= SRC=1.2.3.4 DST=5.6.7.8 LEN=40 PROTO=TCP",
        'date=2026-11-28 time=10:00:00 srcip=10.0.0.1 dstip=10.0.0.2 action="deny"',
        "<190>2026-11-28 10:00:00 USG %%01POLICY/6/X(l):vsys=public, source-ip=1.1.1.1, destination-ip=2.2.2.2",
        "Nov 28 10:00:05 fw traffic: src=10.3.3.3 dst=10.4.4.4 sport=1 dport=2",
        "SrcIp=10.0.0.1 DstIp=10.0.0.2",
        '<189>date=2026-11-28 time=10:00:03 devname="FG" type="event" subtype="system"',
    ],
)
def test_sniff_accepts_firewall_lines(line: str) -> None:
    assert firewall.sniff(line)
    assert detect_format([line]).name == "firewall"


@pytest.mark.parametrize(
    "record",
    [
        SSHD,
        "Nov 28 10:00:02 gw sudo: alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/id",
        '10.0.0.1 - - [28/Nov/2026:10:00:00 +0800] "GET /?src=1&dst=2 HTTP/1.1" 200 5',
        "IN=eth0 OUT= but no addresses",
        {"srcip": "10.0.0.1", "dstip": "10.0.0.2"},
    ],
)
def test_sniff_rejects_other_lines(record: object) -> None:
    assert not firewall.sniff(record)  # type: ignore[arg-type]


def test_more_specific_formats_still_win() -> None:
    assert detect_format(["CEF:0|V|P|1|2|N|3|src=10.0.0.1 dst=10.0.0.2"]).name == "cef"
    assert detect_format(["LEEF:1.0|V|P|1|2|src=10.0.0.1\tdst=10.0.0.2"]).name == "leef"


def test_a_kern_log_with_firewall_lines_is_read_whole() -> None:
    lines = [SSHD, NETFILTER, "Nov 28 10:00:03 gw kernel: [2.0] e1000e: eth0 NIC Link is Up"]
    assert detect_format(lines).name == "firewall"
    datasets = [firewall.parse(line, CONTEXT)["event"]["dataset"] for line in lines]
    assert datasets == ["system.auth", "firewall.netfilter", "syslog"]


def test_netfilter_fields() -> None:
    document = firewall.parse(NETFILTER, CONTEXT)
    assert document["source"] == {"ip": "203.0.113.9", "port": 5151}
    assert document["destination"] == {"ip": "198.51.100.1", "port": 22}
    assert document["network"]["transport"] == "tcp"
    assert document["event"]["type"] == ["connection", "denied"]
    assert document["event"]["action"] == "drop"
    assert document["rule"] == {"name": "IPTABLES-DROP"}
    netfilter = document["firewall"]["netfilter"]
    assert netfilter["ip_flags"] == ["DF"]
    assert netfilter["tcp"] == {"window": 1, "flags": ["SYN"], "urgp": 0}


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("6", {"transport": "tcp", "iana_number": "6"}),
        ("17", {"transport": "udp", "iana_number": "17"}),
        ("1", {"transport": "icmp", "iana_number": "1"}),
        ("TCP", {"transport": "tcp", "iana_number": "6"}),
        ("ICMPv6", {"transport": "ipv6-icmp", "iana_number": "58"}),
        ("253", {"iana_number": "253"}),
    ],
)
def test_protocols(protocol: str, expected: dict[str, str]) -> None:
    document = firewall.parse(f"srcip=10.0.0.1 dstip=10.0.0.2 proto={protocol}", CONTEXT)
    assert document["network"] == expected


@pytest.mark.parametrize(
    ("time_fields", "expected"),
    [
        ("eventtime=1795831200", "2026-11-28T02:00:00.000Z"),
        ("eventtime=1795831200123", "2026-11-28T02:00:00.123Z"),
        ("eventtime=1795831200123456", "2026-11-28T02:00:00.123Z"),
        ("eventtime=1795831200123456789", "2026-11-28T02:00:00.123Z"),
        ("date=2026-11-28 time=10:00:00", "2026-11-28T02:00:00.000Z"),
        ('date=2026-11-28 time=10:00:00 tz="-0500"', "2026-11-28T15:00:00.000Z"),
        ('time="2026/11/28 10:00:00"', "2026-11-28T02:00:00.000Z"),
        ("timestamp=2026-11-28T10:00:00Z", "2026-11-28T10:00:00.000Z"),
        ("", "2026-11-29T04:00:00.000Z"),
    ],
)
def test_key_value_times(time_fields: str, expected: str) -> None:
    document = firewall.parse(f"srcip=10.0.0.1 dstip=10.0.0.2 {time_fields}", CONTEXT)
    assert document["@timestamp"] == expected


def test_quoted_and_comma_separated_values() -> None:
    pairs = firewall._kv_pairs("a=\"x y, z=1\" b=two words, c=3; d='q' e=")
    assert pairs == {"a": "x y, z=1", "b": "two words", "c": "3", "d": "q", "e": ""}


def test_first_alias_wins_and_the_other_is_kept() -> None:
    document = firewall.parse("srcip=10.0.0.1 src=10.9.9.9 dstip=10.0.0.2", CONTEXT)
    assert document["source"] == {"ip": "10.0.0.1"}
    assert document["firewall"]["kv"] == {"src": "10.9.9.9"}


@pytest.mark.parametrize(
    "line",
    [
        "srcip=1 dstip=2 " + "," * 20000,
        "srcip=1 dstip=2 " + 'k="\\" ' * 5000,
        "IN= OUT= SRC=" + "1" * 5000 + " DST=2 MAC=" + ":" * 5000,
        "srcip=1 dstip=2 date=9999-99-99 time=99:99:99",
        "srcip=1 dstip=2 date=2026-11-28 time=10:00:00 tz=+99:00",
        "\x00srcip=\x00 dstip=\x00",
        "srcip=1.1.1.1 dstip=2.2.2.2 srcport=\u00b2 sentbyte=99999999999999999999 duration=9"
        + "9" * 17,
        "IN= OUT= SRC=1.1.1.1 DST=2.2.2.2 LEN=\u00b2 PROTO=TCP SPT=\u00b3 DPT=99999999999999999999",
    ],
)
def test_hostile_lines_fail_cleanly(line: str) -> None:
    with contextlib.suppress(ParseError):
        firewall.parse(line, CONTEXT)


def test_every_truncation_of_the_golden_lines_fails_cleanly() -> None:
    for path in (Path(__file__).parent / "golden" / "firewall").glob("*.input"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for end in range(len(line)):
                with contextlib.suppress(ParseError):
                    firewall.parse(line[:end], CONTEXT)
