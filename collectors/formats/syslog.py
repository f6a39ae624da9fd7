"""Syslog lines: RFC 5424, RFC 3164 (with or without <PRI>), as written by rsyslog to files.

RFC 3164 timestamps have neither year nor zone: they are read in the configured zone
and given the year that puts them closest before the time the line was received, so
"Dec 31 23:59:59" received on 1 January belongs to the previous year.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from collectors.ecs_values import long_value
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.program_messages import parse_program_message
from lianfang.schema import format_timestamp

FACILITIES = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
]
SEVERITIES = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
]
MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
# A line up to this far ahead of its reception still counts as this year (clock skew).
FUTURE_TOLERANCE = timedelta(days=2)

RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>\d{1,2}) (?P<timestamp>\S+) (?P<host>\S+) (?P<app>\S+) "
    r"(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$",
    re.DOTALL,
)
RFC3164 = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<month>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) "
    r"(?P<time>\d{2}:\d{2}:\d{2})(?:\.\d+)? (?P<host>\S+) (?P<rest>.*)$",
    re.DOTALL,
)
# An ISO timestamp instead of the BSD one (rsyslog's RSYSLOG_FileFormat).
ISO_FILE_FORMAT = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<timestamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?"
    r"(?:Z|[+-]\d{2}:\d{2})) (?P<host>\S+) (?P<rest>.*)$",
    re.DOTALL,
)
TAG = re.compile(r"(?P<app>[^\s\[:]+)(?:\[(?P<pid>[^\]]*)\])?: ?(?P<msg>.*)$", re.DOTALL)
SD_ELEMENT = re.compile(r"\[(?P<id>[^\s\]]+)(?P<params>(?:[^\]\\]|\\.)*)\]")
SD_PARAM = re.compile(r'(?P<name>[^\s=]+)="(?P<value>(?:[^"\\]|\\.)*)"')


def sniff(record: Record) -> bool:
    """A line that starts like any of the syslog forms."""
    if not isinstance(record, str):
        return False
    line = record.lstrip("\ufeff")
    return bool(RFC5424.match(line) or RFC3164.match(line) or ISO_FILE_FORMAT.match(line))


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One syslog line to ECS (`log.syslog.*`, `host.name`, `process.*`, `message`)."""
    if not isinstance(record, str):
        raise ParseError("syslog expects a text line", record)
    line = record.lstrip("\ufeff").rstrip("\r\n")
    if match := RFC5424.match(line):
        document = _parse_5424(match)
    elif match := RFC3164.match(line):
        document = _parse_3164(match, context)
    elif match := ISO_FILE_FORMAT.match(line):
        document = _parse_iso_file_format(match)
    else:
        raise ParseError("not a syslog line (RFC 5424 or RFC 3164)", record)
    syslog = document["log"]["syslog"]
    appname = syslog.get("appname")
    message = document.get("message", "")
    specific = parse_program_message(appname, message) if appname else None
    if specific:
        _merge(document, specific)
    else:
        document.setdefault("event", {}).update({"kind": "event", "dataset": "syslog"})
    return document


def _priority_fields(pri: str | None) -> dict[str, Any]:
    if pri is None:
        return {}
    value = int(pri)
    if value > 191:
        raise ParseError(f"syslog priority {value} is out of range (0-191)")
    facility, severity = divmod(value, 8)
    return {
        "priority": value,
        "facility": {"code": facility, "name": FACILITIES[facility]},
        "severity": {"code": severity, "name": SEVERITIES[severity]},
    }


def _parse_5424(match: re.Match[str]) -> dict[str, Any]:
    timestamp = match["timestamp"]
    if timestamp == "-":
        raise ParseError("RFC 5424 line without a timestamp")
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError as error:
        raise ParseError(f"bad RFC 5424 timestamp {timestamp!r}") from error
    if moment.tzinfo is None:
        raise ParseError(f"RFC 5424 timestamp without an offset: {timestamp!r}")
    syslog: dict[str, Any] = {"version": match["version"], **_priority_fields(match["pri"])}
    for key, group in (
        ("hostname", "host"),
        ("appname", "app"),
        ("procid", "procid"),
        ("msgid", "msgid"),
    ):
        if match[group] != "-":
            syslog[key] = match[group]
    if match["sd"] != "-":
        syslog["structured_data"] = _structured_data(match["sd"])
    document: dict[str, Any] = {"@timestamp": format_timestamp(moment), "log": {"syslog": syslog}}
    message = (match["msg"] or "").removeprefix("\ufeff")
    if message:
        document["message"] = message
    _set_host_and_process(
        document, syslog.get("hostname"), syslog.get("appname"), syslog.get("procid")
    )
    return document


def _structured_data(text: str) -> dict[str, dict[str, str]]:
    elements: dict[str, dict[str, str]] = {}
    for element in SD_ELEMENT.finditer(text):
        params = {
            p["name"]: re.sub(r"\\([\"\\\]])", r"\1", p["value"])
            for p in SD_PARAM.finditer(element["params"])
        }
        elements[element["id"]] = params
    return elements


def _parse_3164(match: re.Match[str], context: ParseContext) -> dict[str, Any]:
    month = MONTHS.get(match["month"])
    if month is None:
        raise ParseError(f"unknown month {match['month']!r}")
    hour, minute, second = (int(part) for part in match["time"].split(":"))
    received = context.received.astimezone(context.timezone)
    try:
        moment = datetime(
            received.year, month, int(match["day"]), hour, minute, second, tzinfo=context.timezone
        )
    except ValueError as error:
        raise ParseError(f"impossible date in syslog line: {error}") from error
    if moment > received + FUTURE_TOLERANCE:
        moment = moment.replace(year=received.year - 1)
    document: dict[str, Any] = {"@timestamp": format_timestamp(moment)}
    _fill_header_rest(document, match["pri"], match["host"], match["rest"])
    return document


def _parse_iso_file_format(match: re.Match[str]) -> dict[str, Any]:
    moment = datetime.fromisoformat(match["timestamp"].replace("Z", "+00:00"))
    document: dict[str, Any] = {"@timestamp": format_timestamp(moment)}
    _fill_header_rest(document, match["pri"], match["host"], match["rest"])
    return document


def _fill_header_rest(document: dict[str, Any], pri: str | None, host: str, rest: str) -> None:
    syslog: dict[str, Any] = {**_priority_fields(pri), "hostname": host}
    tag = TAG.match(rest)
    if tag:
        syslog["appname"] = tag["app"]
        if tag["pid"]:
            syslog["procid"] = tag["pid"]
        message = tag["msg"]
    else:
        message = rest
    document["log"] = {"syslog": syslog}
    document["message"] = message
    _set_host_and_process(document, host, syslog.get("appname"), syslog.get("procid"))


def _set_host_and_process(
    document: dict[str, Any], host: str | None, app: str | None, procid: str | None
) -> None:
    if host:
        document["host"] = {"name": host, "hostname": host}
    if app:
        process: dict[str, Any] = {"name": app}
        pid = long_value(procid) if procid else None
        if pid is not None:
            process["pid"] = pid
        document["process"] = process


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


FORMAT = LogFormat(
    name="syslog",
    description="RFC 5424 and RFC 3164 syslog lines (also rsyslog file formats), with sshd/sudo/su/useradd messages",
    sniff=sniff,
    parse=parse,
    priority=20,
)
