"""Web server access logs in the Common and Combined Log Formats, as nginx and Apache write them.

`remote ident user [28/Nov/2026:10:00:00 +0800] "GET /p?q=1 HTTP/1.1" 200 1234 "referrer" "agent"`,
optionally preceded by Apache's `vhost:port` (vhost_combined) and followed by more
fields (nginx's `"$http_x_forwarded_for"`, request times, upstream addresses...), which
are kept as a list in `web_access.extra`.

Quirks: Apache escapes `"` and `\\` inside quoted fields as `\\"` and `\\\\` (those are
undone) and other bytes as `\\xhh`, like nginx (those stay as written, so binary requests
remain visible as such). A request of "-" (connection closed before a request arrived)
gives no HTTP fields. A request line that is not `METHOD target [HTTP/x.y]`, such as a
TLS handshake sent to a plain-HTTP port ("\\x16\\x03\\x01..."), is kept as written in
`web_access.request` and tagged `malformed_request`. A size of "-" is Apache's way of
writing 0. Status 400 and above is `event.outcome: failure`.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from collectors.ecs_values import ip_address, long_value
from collectors.formats.syslog import MONTHS
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'
ACCESS_LINE = re.compile(
    r"(?:(?P<vhost>[^\s:]+):(?P<vport>\d+) )?(?P<remote>\S+) (?P<ident>\S+) (?P<user>.+?) "
    rf'\[(?P<time>[^\]]+)\] "(?P<request>{_QUOTED})" (?P<status>\d{{3}}|-) (?P<bytes>\d+|-)'
    rf'(?: "(?P<referrer>{_QUOTED})" "(?P<agent>{_QUOTED})")?(?P<extra>.*)$',
    re.DOTALL,
)
# For servers that wrote an unescaped quote into the request: the request then runs to
# the last `" <status> <bytes>` that fits.
LENIENT_ACCESS_LINE = re.compile(
    r"(?:(?P<vhost>[^\s:]+):(?P<vport>\d+) )?(?P<remote>\S+) (?P<ident>\S+) (?P<user>.+?) "
    r'\[(?P<time>[^\]]+)\] "(?P<request>.*)" (?P<status>\d{3}|-) (?P<bytes>\d+|-)'
    r'(?: "(?P<referrer>.*?)" "(?P<agent>.*)")?(?P<extra>)$',
    re.DOTALL,
)
CLF_TIME = re.compile(
    r"(?P<day>\d{2})/(?P<month>[A-Z][a-z]{2})/(?P<year>\d{4}):(?P<hour>\d{2}):(?P<minute>\d{2}):"
    r"(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))? (?P<sign>[+-])(?P<hours>\d{2})(?P<minutes>\d{2})"
)
REQUEST_LINE = re.compile(
    r"(?P<method>[A-Za-z]+) (?P<target>\S(?:.*?\S)??)(?: (?P<protocol>HTTP/(?P<version>\d+(?:\.\d+)?)))?"
)
EXTRA_FIELD = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')
ESCAPED = re.compile(r"\\([\"\\])")


def sniff(record: Record) -> bool:
    """A Common or Combined Log Format line."""
    return isinstance(record, str) and ACCESS_LINE.match(record) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One access log line to ECS."""
    if not isinstance(record, str):
        raise ParseError("web_access expects a text line", record)
    line = record.rstrip("\r\n")
    match = ACCESS_LINE.match(line) or LENIENT_ACCESS_LINE.match(line)
    if match is None:
        raise ParseError("not a Common/Combined Log Format line", record)
    event: dict[str, Any] = {
        "kind": "event",
        "category": ["web"],
        "type": ["access"],
        "dataset": "web.access",
    }
    document: dict[str, Any] = {"@timestamp": _timestamp(match["time"]), "event": event}

    remote = match["remote"]
    if ip_address(remote):
        document["source"] = {"ip": remote}
    elif remote != "-":
        document["source"] = {"address": remote, "domain": remote}
    user = match["user"]
    if user != "-":
        document["user"] = {"name": _unescape(user)}

    http: dict[str, Any] = {}
    web_access: dict[str, Any] = {}
    request = _unescape(match["request"])
    if request and request != "-":
        if request_line := REQUEST_LINE.fullmatch(request):
            http["request"] = {"method": request_line["method"]}
            if request_line["version"]:
                http["version"] = request_line["version"]
            document["url"] = url_fields(request_line["target"])
        else:
            web_access["request"] = request
            document["tags"] = ["malformed_request"]
    if match["vhost"]:
        url = document.setdefault("url", {})
        url.setdefault("domain", match["vhost"])
        url.setdefault("port", _number(match["vport"]))

    response: dict[str, Any] = {}
    if match["status"] != "-":
        status = int(match["status"])
        response["status_code"] = status
        event["outcome"] = "failure" if status >= 400 else "success"
    response["body"] = {"bytes": 0 if match["bytes"] == "-" else _number(match["bytes"])}
    http["response"] = response
    referrer = match["referrer"]
    if referrer and referrer != "-":
        http.setdefault("request", {})["referrer"] = _unescape(referrer)
    document["http"] = http
    agent = match["agent"]
    if agent and agent != "-":
        document["user_agent"] = {"original": _unescape(agent)}

    if match["ident"] != "-":
        web_access["ident"] = match["ident"]
    extra = match["extra"].strip()
    if extra:
        web_access["extra"] = [
            _unescape(field[1]) if field[1] is not None else field[2]
            for field in EXTRA_FIELD.finditer(extra)
        ]
    if web_access:
        document["web_access"] = web_access
    return document


def _number(text: str) -> int:
    number = long_value(text)
    if number is None:
        raise ParseError(f"number out of range: {text[:40]}")
    return number


def _unescape(text: str) -> str:
    return ESCAPED.sub(r"\1", text) if "\\" in text else text


def url_fields(target: str) -> dict[str, Any]:
    """`url.*` of a request target: url.original and, for origin and absolute forms, its parts."""
    url: dict[str, Any] = {"original": target}
    if target.startswith("/"):
        path, question, query = target.partition("?")
        url["path"] = path
        if question:
            url["query"] = query
    elif target.startswith(("http://", "https://")):
        try:
            parts = urlsplit(target)
            port = parts.port
        except ValueError:
            return url
        url["scheme"] = parts.scheme
        if parts.hostname:
            url["domain"] = parts.hostname
        if port is not None:
            url["port"] = port
        url["path"] = parts.path or "/"
        if "?" in target:
            url["query"] = parts.query
    return url


@lru_cache(maxsize=4096)
def _timestamp(text: str) -> str:
    """The @timestamp of a `[28/Nov/2026:10:00:00 +0800]` time (cached: lines share seconds)."""
    match = CLF_TIME.fullmatch(text)
    month = MONTHS.get(match["month"]) if match else None
    if match is None or month is None:
        raise ParseError(f"unreadable access log time {text!r}")
    offset = timedelta(hours=int(match["hours"]), minutes=int(match["minutes"]))
    fraction = match["fraction"] or ""
    try:
        moment = datetime(
            int(match["year"]),
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=timezone(-offset if match["sign"] == "-" else offset),
        )
    except ValueError as error:
        raise ParseError(f"impossible access log time {text!r}: {error}") from error
    return format_timestamp(moment)


FORMAT = LogFormat(
    name="web_access",
    description="nginx/Apache access logs (Common and Combined Log Format, vhost prefix, extra fields)",
    sniff=sniff,
    parse=parse,
    priority=30,
)
