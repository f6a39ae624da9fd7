"""auditd: sniffing, value decoding, whose user a record describes, hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import auditd, detect_format
from collectors.log_format import ParseContext, ParseError

CONTEXT = ParseContext(
    timezone=ZoneInfo("Asia/Shanghai"), received=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
)


@pytest.mark.parametrize(
    "line",
    [
        "type=SYSCALL msg=audit(1795831200.123:1): arch=c000003e syscall=59",
        "node=web01 type=USER_LOGIN msg=audit(1795831200.123:1): pid=1",
        "type=EOE msg=audit(1795831200.123:1):",
    ],
)
def test_sniff_accepts_audit_log_lines(line: str) -> None:
    assert auditd.sniff(line)
    assert detect_format([line]).name == "auditd"


@pytest.mark.parametrize(
    "record",
    [
        "Nov 28 10:00:00 web01 sshd[1]: Accepted password for root from 1.2.3.4 port 1 ssh2",
        "type=SYSCALL but no audit stamp",
        "msg=audit(1795831200.123:1): type later",
        {"type": "SYSCALL"},
    ],
)
def test_sniff_rejects_other_records(record: object) -> None:
    assert not auditd.sniff(record)  # type: ignore[arg-type]


def test_syslog_wrapped_records_parse_when_chosen_explicitly() -> None:
    line = (
        "Nov 28 10:00:00 web01 audispd: node=web01 type=USER_END msg=audit(1795831200.0:9): "
        "pid=1 uid=0 auid=1000 ses=2 msg='op=PAM:session_close acct=\"bob\" res=success'"
    )
    document = auditd.parse(line, CONTEXT)
    assert document["event"]["action"] == "user_end"
    assert document["host"] == {"name": "web01"}
    assert document["user"]["name"] == "bob"


@pytest.mark.parametrize(
    ("field", "encoded", "decoded"),
    [
        ("comm", "636174", "cat"),  # comm is decoded when unquoted hex
        ("exe", '"/bin/cat"', "/bin/cat"),  # quoted values are taken as written
        ("proctitle", "6C73002D6C6100", "ls -la"),  # NUL-separated arguments
        ("key", "610162", "a,b"),  # several rule keys
        ("tty", "7074733130", "7074733130"),  # not an encoded field
        ("comm", "ABC", "ABC"),  # odd length: not hex
    ],
)
def test_hex_values(field: str, encoded: str, decoded: str) -> None:
    pairs = auditd._pairs(f"pid=1 {field}={encoded} uid=0", "SYSCALL")
    assert pairs[field] == decoded


def test_unquoted_values_can_span_words() -> None:
    pairs = auditd._pairs('op=adding user id=5 exe="/x" res=success', "ADD_USER")
    assert pairs == {"op": "adding user", "id": "5", "exe": "/x", "res": "success"}


def test_execve_arguments_are_hex_decoded_only_in_execve() -> None:
    assert auditd._pairs("a0=6C73", "EXECVE")["a0"] == "ls"
    assert auditd._pairs("a0=6C73", "SYSCALL")["a0"] == "6C73"


def test_pam_records_describe_the_named_account_not_the_service() -> None:
    line = (
        "type=USER_AUTH msg=audit(1795831200.0:9): pid=1 uid=0 auid=4294967295 "
        'ses=4294967295 msg=\'op=PAM:authentication acct="alice" exe="/usr/sbin/sshd" '
        "hostname=? addr=10.0.0.1 terminal=ssh res=failed'"
    )
    document = auditd.parse(line, CONTEXT)
    assert document["user"] == {"name": "alice"}
    assert document["auditd"]["log"]["uid"] == "0"
    assert document["event"]["outcome"] == "failure"
    assert "ses" not in document["auditd"]["log"]


def test_account_management_targets_the_account() -> None:
    line = (
        "type=ADD_USER msg=audit(1795831200.0:9): pid=1 uid=0 auid=1000 ses=2 "
        'msg=\'op=add-user acct="eve" exe="/usr/sbin/useradd" res=success\''
    )
    document = auditd.parse(line, CONTEXT)
    assert document["user"] == {"id": "0", "audit": {"id": "1000"}, "target": {"name": "eve"}}
    assert document["event"]["type"] == ["user", "creation"]


def test_time_and_serial() -> None:
    document = auditd.parse("type=EOE msg=audit(1795831200.5:42):", CONTEXT)
    assert document["@timestamp"] == "2026-11-28T02:00:00.500Z"
    assert document["auditd"]["log"]["sequence"] == 42


@pytest.mark.parametrize(
    "line",
    [
        "type=SYSCALL msg=audit(99999999999999999999.0:1): x=1",
        "type=SYSCALL msg=audit(1.0:1): comm=" + "A" * 10001,
        "type=SYSCALL msg=audit(1.0:1): msg='" + "a='" * 500,
        "type=SYSCALL msg=audit(1.0:1): \x00=\x00 \x1d\x1d=",
        "type=" + "A" * 5000,
        "type=SYSCALL msg=audit(1.0:99999999999999999999): pid=\u00b2 ppid=99999999999999999999",
        "type=EXECVE msg=audit(1.0:1): argc=\u00b2 a\u0661=x",
    ],
)
def test_hostile_lines_fail_cleanly(line: str) -> None:
    with contextlib.suppress(ParseError):
        auditd.parse(line, CONTEXT)


def test_every_truncation_of_the_golden_lines_fails_cleanly() -> None:
    for path in (Path(__file__).parent / "golden" / "auditd").glob("*.input"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for end in range(len(line)):
                with contextlib.suppress(ParseError):
                    auditd.parse(line[:end], CONTEXT)
