"""ArcSight Common Event Format (CEF), bare or behind a syslog header.

A record is `CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|
Severity|Extension`, where the extension is `key=value` pairs separated by spaces.
Header fields escape `|` and `\\` with a backslash. Extension values escape `=` and `\\`
and write line breaks as `\\n`/`\\r`; they may contain unescaped spaces, so a value runs
until the next ` key=`. Anything in front of "CEF:" is read as a syslog header
(RFC 3164, RFC 5424 or a bare `<PRI>`); a prefix that is not syslog is ignored.

Time: `rt` (receipt time), else `end`, else `start`, each as epoch milliseconds or one
of the CEF date forms ("Nov 28 2026 10:00:00", optionally with ".SSS", a zone, and
without the year). Without them the syslog header's time is used. CEF written to files
often has neither: such events get the reception time and the tag
`timestamp_from_reception`, so they can be told apart from device-dated events.

Mapping: the header gives `observer.vendor/product/version`, `event.code` (signature
id), `rule.name` (name, also `message` unless `msg` is present) and `event.severity`
(0-10, or Low=3, Medium=6, High=8, Very-High=10; the raw value stays in
`cef.severity`). Well-known extension keys (short or full names) map to ECS; custom
fields (cs1-6, cn1-3, cfp1-4, c6a1-4, flex*, deviceCustomDate*) are stored in
`cef.extensions` under their label (`cs1Label`) or, unlabelled, under their own key;
every other key is kept in `cef.extensions` as written. Dots in those names become
underscores, so a label cannot create a nested object. `in`/`out` are the bytes sent
by the source and by the destination (`source.bytes`/`destination.bytes`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from collectors.ecs_values import (
    action_verdict,
    ip_address,
    long_value,
    mac_address,
    transport_fields,
)
from collectors.formats.syslog import FUTURE_TOLERANCE, MONTHS
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.syslog_envelope import parse_header
from lianfang.schema import format_timestamp

_FIELD = r"[^|\\]*(?:\\.[^|\\]*)*"  # a header field: anything but an unescaped pipe
CEF_RECORD = re.compile(
    rf"CEF: ?(?P<version>\d+(?:\.\d+)?)\|(?P<vendor>{_FIELD})\|(?P<product>{_FIELD})\|"
    rf"(?P<device_version>{_FIELD})\|(?P<signature>{_FIELD})\|(?P<name>{_FIELD})\|"
    rf"(?P<severity>{_FIELD})(?:\|(?P<extension>.*))?$",
    re.DOTALL,
)
CEF_START = re.compile(r"(?<![\w])CEF: ?\d+(?:\.\d+)?\|")
# A key follows a space and ends at an unescaped '='; the extension is searched with a
# space put in front, which lets the regex engine skip ahead to spaces.
EXTENSION_KEY = re.compile(r" ([\w.\[\]]+)=")
HEADER_ESCAPE = re.compile(r"\\([|\\])")
EXTENSION_ESCAPE = re.compile(r"\\([=\\nr])")
EXTENSION_UNESCAPED = {"=": "=", "\\": "\\", "n": "\n", "r": "\r"}
CEF_TIME = re.compile(
    r"(?P<month>[A-Za-z]{3}) +(?P<day>\d{1,2})(?: (?P<year>\d{4}))? (?P<hour>\d{1,2}):"
    r"(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?(?: (?P<zone>\S+))?"
)
OFFSET_ZONE = re.compile(r"(?:GMT|UTC)?([+-])(\d{1,2})(?::?(\d{2}))?")
UTC_NAMES = frozenset({"UTC", "GMT", "UT", "Z"})
SEVERITY_WORDS = {"low": 3, "medium": 6, "high": 8, "very-high": 10, "very high": 10}
OUTCOMES = {
    "success": "success",
    "succeeded": "success",
    "successful": "success",
    "failure": "failure",
    "failed": "failure",
    "fail": "failure",
    "unknown": "unknown",
}
HASH_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
HEX = re.compile(r"[0-9A-Fa-f]+")

# key -> (ECS path, how the value is converted). Short and full CEF names are both accepted.
_MAPPING_SPEC: list[tuple[tuple[str, ...], str, str]] = [
    (("src", "sourceAddress"), "source.ip", "address"),
    (("dst", "destinationAddress"), "destination.ip", "address"),
    (("spt", "sourcePort"), "source.port", "int"),
    (("dpt", "destinationPort"), "destination.port", "int"),
    (("smac", "sourceMacAddress"), "source.mac", "mac"),
    (("dmac", "destinationMacAddress"), "destination.mac", "mac"),
    (("shost", "sourceHostName"), "source.domain", "str"),
    (("dhost", "destinationHostName"), "destination.domain", "str"),
    (("suser", "sourceUserName"), "source.user.name", "str"),
    (("duser", "destinationUserName"), "destination.user.name", "str"),
    (("suid", "sourceUserId"), "source.user.id", "str"),
    (("duid", "destinationUserId"), "destination.user.id", "str"),
    (("sntdom", "sourceNtDomain"), "source.user.domain", "str"),
    (("dntdom", "destinationNtDomain"), "destination.user.domain", "str"),
    (("sourceTranslatedAddress",), "source.nat.ip", "ip"),
    (("sourceTranslatedPort",), "source.nat.port", "int"),
    (("destinationTranslatedAddress",), "destination.nat.ip", "ip"),
    (("destinationTranslatedPort",), "destination.nat.port", "int"),
    (("act", "deviceAction"), "event.action", "str"),
    (("app", "applicationProtocol"), "network.protocol", "lower"),
    (("proto", "transportProtocol"), "network.transport", "transport"),
    (("in", "bytesIn"), "source.bytes", "int"),
    (("out", "bytesOut"), "destination.bytes", "int"),
    (("deviceDirection",), "network.direction", "direction"),
    (("request", "requestUrl"), "url.original", "str"),
    (("requestMethod",), "http.request.method", "str"),
    (("requestClientApplication",), "user_agent.original", "str"),
    (("requestContext",), "http.request.referrer", "str"),
    (("fname", "fileName"), "file.name", "str"),
    (("filePath",), "file.path", "str"),
    (("fsize", "fileSize"), "file.size", "int"),
    (("fileHash",), "file.hash", "hash"),
    (("msg", "message"), "message", "str"),
    (("reason",), "event.reason", "str"),
    (("outcome", "eventOutcome"), "event.outcome", "outcome"),
    (("start", "startTime"), "event.start", "time"),
    (("end", "endTime"), "event.end", "time"),
    (("deviceExternalId",), "observer.name", "str"),
    (("dvchost", "deviceHostName"), "observer.hostname", "str"),
    (("dvc", "deviceAddress"), "observer.ip", "ip"),
    (("dvcmac", "deviceMacAddress"), "observer.mac", "mac"),
    (("deviceInboundInterface",), "observer.ingress.interface.name", "str"),
    (("deviceOutboundInterface",), "observer.egress.interface.name", "str"),
    (("dproc", "destinationProcessName"), "process.name", "str"),
    (("dpid", "destinationProcessId"), "process.pid", "int"),
]
EXTENSION_ECS: dict[str, tuple[tuple[str, ...], str]] = {
    key: (tuple(path.split(".")), kind) for keys, path, kind in _MAPPING_SPEC for key in keys
}
RECEIPT_TIME_KEYS = ("rt", "receiptTime")
ENDPOINT_KEYS = frozenset({"ip", "address", "domain", "port", "mac"})

# Custom fields named by a `<key>Label` companion, with the type of their values.
CUSTOM_FIELDS: dict[str, str] = {
    **{f"cs{i}": "str" for i in range(1, 7)},
    **{f"deviceCustomString{i}": "str" for i in range(1, 7)},
    **{f"cn{i}": "int" for i in range(1, 4)},
    **{f"deviceCustomNumber{i}": "int" for i in range(1, 4)},
    **{f"cfp{i}": "float" for i in range(1, 5)},
    **{f"deviceCustomFloatingPoint{i}": "float" for i in range(1, 5)},
    **{f"c6a{i}": "str" for i in range(1, 5)},
    **{f"deviceCustomIPv6Address{i}": "str" for i in range(1, 5)},
    "flexString1": "str",
    "flexString2": "str",
    "flexNumber1": "int",
    "flexNumber2": "int",
    "flexDate1": "str",
    "deviceCustomDate1": "str",
    "deviceCustomDate2": "str",
}
NUMERIC_EXTENSIONS = {"cnt": "int", "baseEventCount": "int"}


def sniff(record: Record) -> bool:
    """A line carrying a CEF header, bare or after a syslog header."""
    if not isinstance(record, str) or record.lstrip()[:1] in ("{", "["):
        return False  # JSON that quotes a CEF line in a field is JSON
    return CEF_START.search(record, 0, 2048) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One CEF record to ECS."""
    if not isinstance(record, str):
        raise ParseError("CEF expects a text line", record)
    line = record.rstrip("\r\n")
    start = CEF_START.search(line)
    if start is None:
        raise ParseError("no CEF header (CEF:Version|...)", record)
    match = CEF_RECORD.match(line, start.start())
    if match is None:
        raise ParseError("CEF header has fewer than 7 '|'-separated fields", record)
    try:
        extensions = split_extension(match["extension"] or "")
    except ValueError as error:
        raise ParseError(str(error), record) from error

    envelope = parse_header(line[: start.start()], context)
    vendor, product, device_version, signature, name, severity_text = (
        unescape_header(field)
        for field in match.group(
            "vendor", "product", "device_version", "signature", "name", "severity"
        )
    )
    severity_text = severity_text.strip()
    event: dict[str, Any] = {"kind": "event", "dataset": "cef"}
    document: dict[str, Any] = {"@timestamp": "", "event": event}
    if signature:
        event["code"] = signature
    severity = _severity(severity_text)
    if severity is not None:
        event["severity"] = severity
    observer = {}
    if vendor:
        observer["vendor"] = vendor
    if product:
        observer["product"] = product
    if device_version:
        observer["version"] = device_version
    if observer:
        document["observer"] = observer
    if name:
        document["rule"] = {"name": name}
        document["message"] = name
    cef: dict[str, Any] = {"version": match["version"]}
    if severity_text:
        cef["severity"] = severity_text
    document["cef"] = cef

    custom = _map_extensions(extensions, document, context)
    if custom:
        cef["extensions"] = custom
    categorise(document)
    document["@timestamp"] = _timestamp(extensions, envelope, document, context)
    if envelope is not None:
        document["log"] = envelope["log"]
    return document


def unescape_header(text: str) -> str:
    """A CEF/LEEF header field with `\\|` and `\\\\` unescaped."""
    return HEADER_ESCAPE.sub(r"\1", text) if "\\" in text else text


def unescape_extension(text: str) -> str:
    """A CEF extension value with `\\=`, `\\\\`, `\\n` and `\\r` unescaped."""
    if "\\" not in text:
        return text
    return EXTENSION_ESCAPE.sub(lambda m: EXTENSION_UNESCAPED[m[1]], text)


def split_extension(text: str) -> dict[str, str]:
    """The `key=value` pairs of a CEF extension (values unescaped, empty ones dropped)."""
    # split() with a capturing group gives [prefix, key, value, key, value, ...].
    parts = EXTENSION_KEY.split(" " + text)
    if len(parts) == 1 and text.strip():
        raise ValueError("CEF extension without any key=value pair")
    if parts[0].strip():
        raise ValueError(f"CEF extension does not start with key=value: {text[:40]!r}")
    pairs: dict[str, str] = {}
    for key, value in zip(parts[1::2], parts[2::2], strict=True):
        value = value.rstrip(" ")
        if value:
            pairs[key] = unescape_extension(value) if "\\" in value else value
    return pairs


def parse_device_time(text: str, context: ParseContext) -> datetime:
    """A CEF/LEEF time: epoch seconds or milliseconds, a CEF date form, or ISO 8601."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        try:
            return datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ParseError(f"epoch time out of range: {text!r}") from error
    if match := CEF_TIME.fullmatch(text):
        return _cef_date(match, context)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ParseError(f"unreadable time {text!r}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)


def resolve_zone(name: str, naive: datetime, context: ParseContext) -> tzinfo:
    """The zone a device wrote after a time: UTC, an offset, an IANA name, or the local zone's abbreviation.

    Abbreviations are ambiguous (CST is China, Cuba and US Central time), so the only one
    trusted is that of the configured zone at that moment; others are refused.
    """
    if name.upper() in UTC_NAMES:
        return UTC
    if match := OFFSET_ZONE.fullmatch(name):
        hours, minutes = int(match[2]), int(match[3] or 0)
        if hours > 14 or minutes > 59:
            raise ParseError(f"impossible UTC offset {name!r}")
        offset = timedelta(hours=hours, minutes=minutes)
        return timezone(-offset if match[1] == "-" else offset)
    if "/" in name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ParseError(f"unknown time zone {name!r}") from error
    if naive.replace(tzinfo=context.timezone).tzname() == name:
        return context.timezone
    raise ParseError(f"ambiguous or unknown time zone {name!r}")


def _cef_date(match: re.Match[str], context: ParseContext) -> datetime:
    month = MONTHS.get(match["month"].title())
    if month is None:
        raise ParseError(f"unknown month {match['month']!r}")
    fraction = match["fraction"] or ""
    microsecond = int(fraction[:6].ljust(6, "0")) if fraction else 0
    received = context.received.astimezone(context.timezone)
    year = int(match["year"]) if match["year"] else received.year
    try:
        naive = datetime(
            year,
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            microsecond,
        )
    except ValueError as error:
        raise ParseError(f"impossible date: {error}") from error
    zone = resolve_zone(match["zone"], naive, context) if match["zone"] else context.timezone
    moment = naive.replace(tzinfo=zone)
    if not match["year"] and moment > received + FUTURE_TOLERANCE:
        # Like RFC 3164: a date without a year is the latest one not in the future.
        try:
            moment = moment.replace(year=year - 1)
        except ValueError as error:  # 29 February
            raise ParseError(f"impossible date: {error}") from error
    return moment


def _severity(text: str) -> int | None:
    if text.isascii() and text.isdigit():
        value = int(text)
        return value if value <= 10 else None
    return SEVERITY_WORDS.get(text.lower())


def _map_extensions(
    extensions: dict[str, str], document: dict[str, Any], context: ParseContext
) -> dict[str, Any]:
    """Put mapped keys into the document; return what goes to `cef.extensions`."""
    custom: dict[str, Any] = {}
    for key, value in extensions.items():
        mapping = EXTENSION_ECS.get(key)
        if mapping is not None:
            path, kind = mapping
            if kind == "str" and (value := value.strip()) and value != "-":  # the common case
                target = document
                for part in path[:-1]:
                    target = target.get(part) or target.setdefault(part, {})
                target[path[-1]] = value
            elif not set_converted(document, path, kind, value, context):
                custom[key] = value
            continue
        if key in RECEIPT_TIME_KEYS:
            continue
        kind = CUSTOM_FIELDS.get(key)
        if kind is not None:
            label = extensions.get(key + "Label", "").strip() or key
            custom[label.replace(".", "_")] = _typed(value, kind)
            continue
        if key.endswith("Label") and key[:-5] in CUSTOM_FIELDS:
            continue  # consumed by its field (or a label without a value)
        custom[key.replace(".", "_")] = _typed(value, NUMERIC_EXTENSIONS.get(key, "str"))
    return custom


def _typed(value: str, kind: str) -> Any:
    if kind == "int":
        number = long_value(value)
        return value if number is None else number
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            pass
    return value


def put_ecs_field(document: dict[str, Any], key: str, value: str, context: ParseContext) -> bool:
    """Set the ECS field of a well-known CEF key; False for other keys or values that do not fit."""
    mapping = EXTENSION_ECS.get(key)
    if mapping is None:
        return False
    return set_converted(document, mapping[0], mapping[1], value, context)


def set_converted(
    document: dict[str, Any], path: tuple[str, ...], kind: str, value: str, context: ParseContext
) -> bool:
    """Set `path` to `value` converted by `kind`; False when the value does not fit.

    Kinds: str, lower, int, ip, address (an IP, else `<parent>.address`), mac,
    transport, direction (0/1), outcome, time, hash (algorithm from the length).
    """
    value = value.strip()
    if not value or value == "-":
        return True
    converted: Any = value
    if kind == "address":
        if ip_address(value) is None:
            path = (*path[:-1], "address")
    elif kind == "ip":
        if ip_address(value) is None:
            return False
    elif kind == "int":
        converted = long_value(value)
        if converted is None:
            return False
    elif kind == "mac":
        converted = mac_address(value)
        if converted is None:
            return False
    elif kind == "lower":
        converted = value.lower()
    elif kind == "transport":
        _target(document, path[:-1]).update(transport_fields(value))
        return True
    elif kind == "direction":
        converted = {"0": "inbound", "1": "outbound"}.get(value)
        if converted is None:
            return False
    elif kind == "outcome":
        converted = OUTCOMES.get(value.lower())
        if converted is None:
            return False
    elif kind == "time":
        try:
            converted = format_timestamp(parse_device_time(value, context))
        except ParseError:
            return False
    elif kind == "hash":
        algorithm = HASH_BY_LENGTH.get(len(value))
        if algorithm is None or not HEX.fullmatch(value):
            return False
        path = (*path, algorithm)
        converted = value.lower()
    _target(document, path[:-1])[path[-1]] = converted
    return True


def _target(document: dict[str, Any], parents: tuple[str, ...]) -> dict[str, Any]:
    target = document
    for part in parents:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        target = child
    return target


def categorise(document: dict[str, Any]) -> None:
    """event.category/type: network when there are endpoints, denied/allowed from the action."""
    event = document["event"]
    verdict = action_verdict(str(event.get("action", "")))
    types = [verdict] if verdict else ["info"]
    if _has_endpoint(document.get("source")) or _has_endpoint(document.get("destination")):
        event["category"] = ["network"]
        if types != ["info"]:
            types = ["connection", *types]
    event["type"] = types


def _has_endpoint(side: dict[str, Any] | None) -> bool:
    """Whether source/destination name a network endpoint (not just a user)."""
    return side is not None and not ENDPOINT_KEYS.isdisjoint(side)


def _timestamp(
    extensions: dict[str, str],
    envelope: dict[str, Any] | None,
    document: dict[str, Any],
    context: ParseContext,
) -> str:
    for key in RECEIPT_TIME_KEYS:
        if key in extensions:
            return format_timestamp(parse_device_time(extensions[key], context))
    # event.end/start are only set when their values were readable times.
    event = document["event"]
    for key in ("end", "start"):
        if key in event:
            return event[key]
    if envelope is not None and "@timestamp" in envelope:
        return envelope["@timestamp"]
    document["tags"] = ["timestamp_from_reception"]
    return format_timestamp(context.received)


FORMAT = LogFormat(
    name="cef",
    description="ArcSight CEF, bare or behind a syslog header, mapped to ECS",
    sniff=sniff,
    parse=parse,
    priority=40,
)
