"""web_access and web_error: sniffing, request splitting, real Apache lines, hostile input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format, web_access, web_error
from collectors.log_format import ParseContext, ParseError

CONTEXT = ParseContext(
    timezone=ZoneInfo("Asia/Shanghai"), received=datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
)
GOLDEN = Path(__file__).parent / "golden"
LOGHUB_APACHE = (
    Path(__file__).resolve().parents[1].parent / "shared/datasets/loghub/Apache/Apache_2k.log"
)
ACCESS_LINE = '10.0.0.1 - - [28/Nov/2026:10:00:00 +0800] "GET / HTTP/1.1" 200 5 "-" "curl/8"'
NGINX_ERROR = "2026/11/28 10:00:00 [error] 1#1: *1 oops, client: 10.0.0.1, server: s"
APACHE_ERROR = "[Fri Nov 28 10:00:00.1 2026] [core:error] [pid 1] AH00126: Invalid URI"


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (ACCESS_LINE, "web_access"),
        ('h:80 10.0.0.1 - - [28/Nov/2026:10:00:00 +0800] "GET / HTTP/1.1" 200 5', "web_access"),
        (NGINX_ERROR, "web_error"),
        (APACHE_ERROR, "web_error"),
        ("[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok", "web_error"),
    ],
)
def test_detection(line: str, name: str) -> None:
    assert detect_format([line]).name == name


@pytest.mark.parametrize(
    "record",
    [
        "Nov 28 10:00:00 web01 nginx[1]: something",
        '{"remote_addr": "10.0.0.1"}',
        {"remote": "10.0.0.1"},
        "10.0.0.1 - - [28/Nov/2026:10:00:00 +0800] GET / 200 5",
    ],
)
def test_sniffs_reject_other_records(record: object) -> None:
    assert not web_access.sniff(record)  # type: ignore[arg-type]
    assert not web_error.sniff(record)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a/b?c=d&e", {"original": "/a/b?c=d&e", "path": "/a/b", "query": "c=d&e"}),
        ("/a?", {"original": "/a?", "path": "/a", "query": ""}),
        (
            "https://h.example:8443/p?q",
            {
                "original": "https://h.example:8443/p?q",
                "scheme": "https",
                "domain": "h.example",
                "port": 8443,
                "path": "/p",
                "query": "q",
            },
        ),
        ("http://h:99999/", {"original": "http://h:99999/"}),
        ("*", {"original": "*"}),
    ],
)
def test_url_fields(target: str, expected: dict[str, object]) -> None:
    assert web_access.url_fields(target) == expected


def test_status_decides_the_outcome() -> None:
    ok = web_access.parse(ACCESS_LINE, CONTEXT)
    assert ok["event"]["outcome"] == "success"
    failed = web_access.parse(ACCESS_LINE.replace(" 200 ", " 503 "), CONTEXT)
    assert failed["event"]["outcome"] == "failure"


def test_tls_handshake_as_request_is_kept_but_not_split() -> None:
    line = r'1.2.3.4 - - [28/Nov/2026:10:00:00 +0000] "\x16\x03\x01\x00" 400 150 "-" "-"'
    document = web_access.parse(line, CONTEXT)
    assert "url" not in document
    assert document["web_access"]["request"] == r"\x16\x03\x01\x00"
    assert document["tags"] == ["malformed_request"]


def test_apache_24_client_port_and_22_client_without_port() -> None:
    new = web_error.parse(
        "[Fri Nov 28 10:00:00 2026] [core:error] [pid 1] [client 2001:db8::5:4444] x", CONTEXT
    )
    assert new["source"] == {"ip": "2001:db8::5", "port": 4444}
    old = web_error.parse("[Sun Dec 04 05:15:09 2005] [error] [client 2001:db8::5] x", CONTEXT)
    assert old["source"] == {"ip": "2001:db8::5"}


def test_error_log_times_are_local() -> None:
    document = web_error.parse(NGINX_ERROR, CONTEXT)
    assert document["@timestamp"] == "2026-11-28T02:00:00.000Z"


@pytest.mark.skipif(not LOGHUB_APACHE.exists(), reason="loghub dataset not available")
def test_every_loghub_apache_line_parses() -> None:
    lines = LOGHUB_APACHE.read_text(encoding="utf-8").splitlines()
    documents = [web_error.parse(line, CONTEXT) for line in lines]
    assert len(documents) == 2000
    assert {d["log"]["level"] for d in documents} == {"notice", "error"}
    assert sum("source" in d for d in documents) == 32


@pytest.mark.parametrize(
    "line",
    [
        '1.2.3.4 - - [28/Nov/2026:10:00:00 +9999] "GET / HTTP/1.1" 200 5',
        '1.2.3.4 - - [99/Nov/9999:99:99:99 +0000] "GET / HTTP/1.1" 200 5',
        "1.2.3.4 - - [" + "x" * 5000 + '] "GET / HTTP/1.1" 200 5',
        '1.2.3.4 - - [28/Nov/2026:10:00:00 +0000] "' + "\\" * 3001 + '" 200 5',
        "[Fri Nov 28 10:00:00 2026] [core:error] [client " + ":" * 500 + "] x",
        "2026/11/28 10:00:00 [error] 1#1: x, client: " + ", client: " * 300,
        '1.2.3.4 - - [28/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 ' + "9" * 30,
        "2026/11/28 10:00:00 [error] " + "9" * 30 + "#1: x, host: h:" + "9" * 30,
        "[Fri Nov 28 10:00:00 2026] [core:error] [pid \u0661] [client 1.2.3.4:\u00b2] x",
    ],
)
def test_hostile_lines_fail_cleanly(line: str) -> None:
    for log_format in (web_access, web_error):
        with contextlib.suppress(ParseError):
            log_format.parse(line, CONTEXT)


@pytest.mark.parametrize("name", ["web_access", "web_error"])
def test_every_truncation_of_the_golden_lines_fails_cleanly(name: str) -> None:
    log_format = web_access if name == "web_access" else web_error
    for path in (GOLDEN / name).glob("*.input"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for end in range(len(line)):
                with contextlib.suppress(ParseError):
                    log_format.parse(line[:end], CONTEXT)
