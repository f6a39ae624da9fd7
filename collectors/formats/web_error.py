"""Web server error logs: nginx, Apache 2.4 and Apache 2.2.

nginx: `2026/11/28 10:00:00 [error] 1234#1234: *5 message, client: 1.2.3.4, server: s,
request: "GET /x HTTP/1.1", host: "h"`. The trailing `, key: value` context (client,
server, request, upstream, host, referrer) is split off the message into fields.

Apache 2.4: `[Fri Nov 28 10:00:00.123456 2026] [core:error] [pid 1234:tid 5678]
(13)Permission denied: [client 1.2.3.4:5555] AH00126: message, referer: URL` — the
module, pid/tid, OS error, client and referer parts are each optional. Apache 2.2:
`[Sun Dec 04 04:47:44 2005] [error] [client 1.2.3.4] message` (no port, no pid).
The `AHnnnnn` message code becomes `error.code`; the OS error stays in the message.

Both write local time without a zone, so times are read in the configured zone.
Levels warn and above are `event.type: error`, the rest `info`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from collectors.ecs_values import ip_address, long_value
from collectors.formats.syslog import MONTHS
from collectors.formats.web_access import REQUEST_LINE, url_fields
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

NGINX_LINE = re.compile(
    r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2}) (?P<hour>\d{2}):(?P<minute>\d{2}):"
    r"(?P<second>\d{2}) \[(?P<level>[a-z]+)\] (?P<pid>\d+)#(?P<tid>\d+): "
    r"(?:\*(?P<connection>\d+) )?(?P<message>.*)$",
    re.DOTALL,
)
NGINX_CONTEXT = re.compile(
    r", (?P<key>client|server|request|subrequest|upstream|host|referrer): "
    r'(?:"(?P<quoted>[^"\\]*(?:\\.[^"\\]*)*)"|(?P<bare>[^,]*))'
)
APACHE_LINE = re.compile(
    r"\[(?:[A-Z][a-z]{2} )?(?P<month>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<hour>\d{2}):"
    r"(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))? (?P<year>\d{4})\] "
    r"\[(?:(?P<module>[^:\]\s]*):)?(?P<level>[a-z]+\d?)\]"
    r"(?: \[pid (?P<pid>\d+)(?::tid (?P<tid>\d+))?\])?"
    r"(?: (?P<source_file>[^\s():]+\(\d+\)):)?"
    r"(?P<os_error> \(-?\d+\)[^:\[]*:)?"
    r"(?: \[(?:client|remote) (?P<client>[^\]]+)\])?"
    r" ?(?P<message>.*)$",
    re.DOTALL,
)
APACHE_CODE = re.compile(r"(AH\d{5}):")
REFERER_SUFFIX = ", referer: "
ERROR_LEVELS = frozenset({"emerg", "alert", "crit", "error", "warn"})


def sniff(record: Record) -> bool:
    """An nginx or Apache error log line."""
    if not isinstance(record, str):
        return False
    return NGINX_LINE.match(record) is not None or APACHE_LINE.match(record) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One error log line to ECS."""
    if not isinstance(record, str):
        raise ParseError("web_error expects a text line", record)
    line = record.rstrip("\r\n")
    if match := NGINX_LINE.match(line):
        return _nginx(match, context)
    if match := APACHE_LINE.match(line):
        return _apache(match, context)
    raise ParseError("not an nginx or Apache error log line", record)


def _base(level: str, dataset: str, moment: datetime) -> dict[str, Any]:
    return {
        "@timestamp": format_timestamp(moment),
        "event": {
            "kind": "event",
            "category": ["web"],
            "type": ["error"] if level in ERROR_LEVELS else ["info"],
            "dataset": dataset,
        },
        "log": {"level": level},
    }


def _local_time(match: re.Match[str], month: int, context: ParseContext) -> datetime:
    fraction = match.groupdict().get("fraction") or ""
    try:
        return datetime(
            int(match["year"]),
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=context.timezone,
        )
    except ValueError as error:
        raise ParseError(f"impossible date in error log line: {error}") from error


def _number(text: str) -> int:
    number = long_value(text)
    if number is None:
        raise ParseError(f"number out of range: {text[:40]}")
    return number


def _nginx(match: re.Match[str], context: ParseContext) -> dict[str, Any]:
    document = _base(
        match["level"], "nginx.error", _local_time(match, int(match["month"]), context)
    )
    document["process"] = {"pid": _number(match["pid"]), "thread": {"id": _number(match["tid"])}}
    message = match["message"]
    nginx: dict[str, Any] = {}
    if match["connection"]:
        nginx["connection_id"] = _number(match["connection"])
    start = message.find(", client: ")
    if start >= 0:
        for pair in NGINX_CONTEXT.finditer(message, start):
            value = pair["quoted"] if pair["quoted"] is not None else pair["bare"]
            _nginx_context(document, nginx, pair["key"], value.replace('\\"', '"'))
        message = message[:start]
    document["message"] = message
    if nginx:
        document["nginx"] = {"error": nginx}
    return document


def _nginx_context(document: dict[str, Any], nginx: dict[str, Any], key: str, value: str) -> None:
    if not value:
        return
    if key == "client":
        document["source"] = {"ip": value} if ip_address(value) else {"address": value}
    elif key == "request":
        request = REQUEST_LINE.fullmatch(value)
        if request is None:  # garbage such as a TLS handshake on a plain-HTTP port
            nginx["request"] = value
            return
        http = document.setdefault("http", {})
        http.setdefault("request", {})["method"] = request["method"]
        if request["version"]:
            http["version"] = request["version"]
        document.setdefault("url", {}).update(url_fields(request["target"]))
    elif key == "host":
        url = document.setdefault("url", {})
        host, _, port = value.rpartition(":")
        if long_value(port) is not None and host and (":" not in host or host.startswith("[")):
            url["domain"] = host.strip("[]")
            url["port"] = long_value(port)
        else:
            url["domain"] = value.strip("[]")
    elif key == "referrer":
        document.setdefault("http", {}).setdefault("request", {})["referrer"] = value
    else:
        nginx[key] = value


def _apache(match: re.Match[str], context: ParseContext) -> dict[str, Any]:
    month = MONTHS.get(match["month"])
    if month is None:
        raise ParseError(f"unknown month {match['month']!r}")
    document = _base(match["level"], "apache.error", _local_time(match, month, context))
    apache: dict[str, Any] = {}
    if match["module"]:
        apache["module"] = match["module"]
    if match["pid"]:
        process: dict[str, Any] = {"pid": _number(match["pid"])}
        if match["tid"]:
            process["thread"] = {"id": _number(match["tid"])}
        document["process"] = process
    if match["source_file"]:
        apache["source_file"] = match["source_file"]
    if match["client"]:
        # 2.4 writes ip:port (always with a port, so it is split at the last colon); 2.2 just ip.
        client = match["client"]
        ip, port = client, None
        if match["module"] is not None or match["pid"]:
            host, _, port_text = client.rpartition(":")
            if host and long_value(port_text) is not None:
                ip, port = host, long_value(port_text)
        source: dict[str, Any] = {"ip": ip} if ip_address(ip) else {"address": ip}
        if port is not None:
            source["port"] = port
        document["source"] = source
    message = match["message"]
    referer_at = message.rfind(REFERER_SUFFIX)
    if referer_at >= 0:
        referrer = message[referer_at + len(REFERER_SUFFIX) :]
        message = message[:referer_at]
        if referrer:
            document["http"] = {"request": {"referrer": referrer}}
    if code := APACHE_CODE.match(message):
        document["error"] = {"code": code[1]}
    if match["os_error"]:
        message = f"{match['os_error'].strip()} {message}"
    document["message"] = message
    if apache:
        document["apache"] = {"error": apache}
    return document


FORMAT = LogFormat(
    name="web_error",
    description="nginx and Apache (2.2 and 2.4) error logs",
    sniff=sniff,
    parse=parse,
    priority=30,
)
