"""IBM QRadar Log Event Extended Format (LEEF) 1.0 and 2.0, bare or behind a syslog header.

`LEEF:1.0|Vendor|Product|Version|EventID|` is followed by tab-separated `key=value`
attributes. LEEF 2.0 adds a delimiter field after the event id: one character (`^`)
or its hex code (`x09`, `0x5E`); an empty field means tab. Some 2.0 senders leave the
field out entirely, which is recognised because the text after the event id is then
an attribute, not a delimiter. Senders that separate attributes with spaces instead of
tabs (against the specification, but common) are split like CEF: a value runs until
the next ` key=`. A piece without `=` between delimiters belongs to the previous value
(a delimiter character inside a value).

Time: `devTime` in the Java `devTimeFormat` pattern when one is given, else as epoch
milliseconds, a CEF date ("Nov 28 2026 10:00:00") or ISO 8601; without `devTime` the
syslog header's time; without either the reception time, tagged `timestamp_from_reception`.

Mapping: the header gives `observer.vendor/product/version` and `event.code`; the
predefined attributes map to ECS (`src`, `dst`, `srcPort`, `dstPort`, `usrName`,
`proto`, `sev` to `event.severity`, `srcBytes`/`dstBytes`, `*Packets`, post-NAT
addresses to `*.nat.*`; `identSrc` is the source address when `src` is missing).
`cat` refines the event id in the vendor's terms, so it is kept as `leef.category`
rather than forced into ECS `event.category`, whose values are a fixed vocabulary.
Keys LEEF senders borrow from CEF (`act`, `msg`, `suser`, `dvchost`, ...) map as in
CEF; everything else stays in `leef.attributes`.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any

from collectors.ecs_values import ip_address
from collectors.formats.cef import (
    categorise,
    parse_device_time,
    put_ecs_field,
    resolve_zone,
    set_converted,
    split_extension,
    unescape_header,
)
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.syslog_envelope import parse_header
from lianfang.schema import format_timestamp

_FIELD = r"[^|\\]*(?:\\.[^|\\]*)*"  # a header field: anything but an unescaped pipe
LEEF_RECORD = re.compile(
    rf"LEEF: ?(?P<version>\d+(?:\.\d+)?)\|(?P<vendor>{_FIELD})\|(?P<product>{_FIELD})\|"
    rf"(?P<device_version>{_FIELD})\|(?P<event_id>{_FIELD})(?:\|(?P<rest>.*))?$",
    re.DOTALL,
)
LEEF_START = re.compile(r"(?<![\w])LEEF: ?\d+(?:\.\d+)?\|")
HEX_DELIMITER = re.compile(r"(?:0?[xX]|\\x)([0-9A-Fa-f]{2,4})")
SPACE_SEPARATED_KEY = re.compile(r" [\w.]+=")
JAVA_TOKEN = re.compile(r"'([^']*)'|([A-Za-z])\2*|(.)", re.DOTALL)

# attribute -> (ECS path, conversion)
ATTRIBUTES: dict[str, tuple[tuple[str, ...], str]] = {
    key: (tuple(path.split(".")), kind)
    for key, path, kind in [
        ("src", "source.ip", "address"),
        ("dst", "destination.ip", "address"),
        ("srcPort", "source.port", "int"),
        ("dstPort", "destination.port", "int"),
        ("srcMAC", "source.mac", "mac"),
        ("dstMAC", "destination.mac", "mac"),
        ("srcPostNAT", "source.nat.ip", "ip"),
        ("dstPostNAT", "destination.nat.ip", "ip"),
        ("srcPostNATPort", "source.nat.port", "int"),
        ("dstPostNATPort", "destination.nat.port", "int"),
        ("usrName", "user.name", "str"),
        ("proto", "network.transport", "transport"),
        ("sev", "event.severity", "int"),
        ("cat", "leef.category", "str"),
        ("srcBytes", "source.bytes", "int"),
        ("dstBytes", "destination.bytes", "int"),
        ("srcPackets", "source.packets", "int"),
        ("dstPackets", "destination.packets", "int"),
        ("totalPackets", "network.packets", "int"),
        ("url", "url.original", "str"),
    ]
}
TIME_KEYS = frozenset({"devTime", "devTimeFormat"})


def sniff(record: Record) -> bool:
    """A line carrying a LEEF header, bare or after a syslog header."""
    if not isinstance(record, str) or record.lstrip()[:1] in ("{", "["):
        return False  # JSON that quotes a LEEF line in a field is JSON
    return LEEF_START.search(record, 0, 2048) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One LEEF record to ECS."""
    if not isinstance(record, str):
        raise ParseError("LEEF expects a text line", record)
    line = record.rstrip("\r\n")
    start = LEEF_START.search(line)
    if start is None:
        raise ParseError("no LEEF header (LEEF:Version|...)", record)
    match = LEEF_RECORD.match(line, start.start())
    if match is None:
        raise ParseError("LEEF header has fewer than 5 '|'-separated fields", record)
    version = match["version"]
    rest = match["rest"] or ""
    delimiter, attribute_text = _delimiter(rest) if version.startswith("2") else ("\t", rest)
    attributes = split_attributes(attribute_text, delimiter)

    document: dict[str, Any] = {"@timestamp": ""}
    event: dict[str, Any] = {"kind": "event", "dataset": "leef"}
    event_id = unescape_header(match["event_id"]).strip()
    if event_id:
        event["code"] = event_id
    document["event"] = event
    observer = {
        key: value
        for key, value in (
            ("vendor", unescape_header(match["vendor"]).strip()),
            ("product", unescape_header(match["product"]).strip()),
            ("version", unescape_header(match["device_version"]).strip()),
        )
        if value
    }
    if observer:
        document["observer"] = observer
    leef: dict[str, Any] = {"version": version}
    if version.startswith("2") and delimiter != "\t":
        leef["delimiter"] = delimiter
    document["leef"] = leef

    unmapped: dict[str, str] = {}
    for key, value in attributes.items():
        if key in TIME_KEYS:
            continue
        mapping = ATTRIBUTES.get(key)
        if mapping is not None:
            mapped = set_converted(document, mapping[0], mapping[1], value, context)
        else:
            mapped = put_ecs_field(document, key, value, context)
        if not mapped:
            unmapped[key.replace(".", "_")] = value
    identity_source = unmapped.get("identSrc", "")
    if ip_address(identity_source) and "ip" not in document.get("source", {}):
        document.setdefault("source", {})["ip"] = unmapped.pop("identSrc")
    if unmapped:
        leef["attributes"] = unmapped
    categorise(document)

    envelope = parse_header(line[: start.start()], context)
    document["@timestamp"] = _timestamp(attributes, envelope, document, context)
    if envelope is not None:
        document["log"] = envelope["log"]
    return document


def split_attributes(text: str, delimiter: str) -> dict[str, str]:
    """The attributes of a LEEF record (keys and values stripped, empty values dropped)."""
    if delimiter not in text and SPACE_SEPARATED_KEY.search(text):
        try:
            return split_extension(text)
        except ValueError as error:
            raise ParseError(f"unreadable LEEF attributes: {error}") from error
    pairs: dict[str, str] = {}
    last_key = None
    for piece in text.split(delimiter):
        key, equals, value = piece.partition("=")
        if not equals:
            if last_key is not None and piece:
                pairs[last_key] = pairs.get(last_key, "") + delimiter + piece
            continue
        key = key.strip()
        if not key:
            continue
        last_key = key
        pairs[key] = value
    return {key: value.strip() for key, value in pairs.items() if value.strip()}


def _delimiter(rest: str) -> tuple[str, str]:
    """The LEEF 2.0 attribute delimiter and the attribute text after it."""
    end = rest.find("|")
    if 0 <= end <= 6:
        field = rest[:end]
        if field == "":
            return "\t", rest[1:]
        if len(field) == 1:
            return field, rest[2:]
        if match := HEX_DELIMITER.fullmatch(field):
            return chr(int(match[1], 16)), rest[end + 1 :]
        if field == "\\t":
            return "\t", rest[end + 1 :]
    return "\t", rest  # the delimiter field was left out


def _timestamp(
    attributes: dict[str, str],
    envelope: dict[str, Any] | None,
    document: dict[str, Any],
    context: ParseContext,
) -> str:
    device_time = attributes.get("devTime")
    if device_time:
        pattern = attributes.get("devTimeFormat")
        if pattern:
            return format_timestamp(parse_java_time(device_time, pattern, context))
        return format_timestamp(parse_device_time(device_time, context))
    if envelope is not None and "@timestamp" in envelope:
        return envelope["@timestamp"]
    document["tags"] = ["timestamp_from_reception"]
    return format_timestamp(context.received)


def parse_java_time(text: str, pattern: str, context: ParseContext) -> datetime:
    """A time written in a Java SimpleDateFormat pattern (as LEEF's devTimeFormat gives it)."""
    strptime_format, zone_at_end = java_to_strptime(pattern)
    value = text.strip()
    zone_name = None
    if zone_at_end:
        value, _, zone_name = value.rpartition(" ")
    try:
        moment = datetime.strptime(value, strptime_format)
    except (ValueError, re.error) as error:  # re.error: a letter repeated, like "yyyy ... y"
        raise ParseError(f"devTime {text!r} does not match devTimeFormat {pattern!r}") from error
    if zone_name:
        return moment.replace(tzinfo=resolve_zone(zone_name, moment, context))
    return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)


@lru_cache(maxsize=64)
def java_to_strptime(pattern: str) -> tuple[str, bool]:
    """The strptime format for a Java date pattern, and whether it ends with a zone name (z).

    strptime cannot read zone names, so a trailing ` z` is cut off here and its text
    resolved separately; a zone name elsewhere in the pattern is refused.
    """
    body = pattern.rstrip()
    zone_at_end = False
    if re.search(r" z+$", body):
        body = re.sub(r" z+$", "", body)
        zone_at_end = True
    parts: list[str] = []
    for token in JAVA_TOKEN.finditer(body):
        quoted, letter, literal = token.groups()
        if quoted is not None:  # 'text' is literal text, '' a single quote
            parts.append(quoted.replace("%", "%%") if quoted else "'")
        elif letter is not None:
            parts.append(_java_letters(token[0], pattern))
        else:
            parts.append("%%" if literal == "%" else literal)
    return "".join(parts), zone_at_end


def _java_letters(run: str, pattern: str) -> str:
    letter, count = run[0], len(run)
    if letter == "y":
        return "%y" if count == 2 else "%Y"
    if letter == "M":
        return "%B" if count >= 4 else "%b" if count == 3 else "%m"
    if letter == "E":
        return "%A" if count >= 4 else "%a"
    simple = {"d": "%d", "H": "%H", "h": "%I", "m": "%M", "s": "%S", "S": "%f", "a": "%p"}
    if letter in simple:
        return simple[letter]
    if letter in "ZX":
        return "%z"
    raise ParseError(f"unsupported letter {letter!r} in devTimeFormat {pattern!r}")


FORMAT = LogFormat(
    name="leef",
    description="IBM QRadar LEEF 1.0/2.0, bare or behind a syslog header, mapped to ECS",
    sniff=sniff,
    parse=parse,
    priority=40,
)
