"""Firewall logs: netfilter (iptables/nftables/ufw) kernel lines and key=value firewall logs.

Netfilter: `kernel: [12345.678] IPTABLES-DROP: IN=eth0 OUT= MAC=... SRC=1.2.3.4
DST=5.6.7.8 LEN=60 ... PROTO=TCP SPT=1234 DPT=22 ... SYN`, with or without a syslog
header (read by the syslog format). The log prefix ("IPTABLES-DROP", "[UFW BLOCK]")
is the rule name; a drop/block/reject/deny word in it makes the event `denied`, an
accept/allow word `allowed`, with that word as `event.action`. Fields after PROTO
belong to the transport header (ICMP has its own ID), and the copy of the offending
packet that ICMP errors carry in brackets is skipped.

Key=value (FortiGate `date=2026-11-28 time=10:00:00 devname="FG100" srcip=... action="deny"`,
and Huawei/Hillstone/Sangfor-like lines): keys are matched case-insensitively and
without `-`/`_`, so `srcip`, `src`, `source-ip` and `SrcIp` are all the source address.
Values may be quoted (and then contain spaces) or bare; a bare value runs until the
next `key=`, so `time=2026/11/28 10:00:00, rule-name=x` works with comma-separated
senders too. Time: `eventtime` (epoch s/ms/us/ns), else `date` + `time` (+ `tz`), else
a `time`/`timestamp` holding a full date, else the syslog header, else the reception
time (tagged `timestamp_from_reception`). Unmapped keys stay in `firewall.kv`.

Both kinds: `event.category: ["network"]`, `event.type: ["connection", "denied"|"allowed"]`
and, as ECS prescribes for a firewall that did what its rule said, `event.outcome:
success` (the verdict lives in event.type and event.action, not in the outcome).

This format sniffs before syslog, so a syslog file with firewall lines is read by it:
the syslog lines in it that carry no firewall record are returned as syslog parses them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from collectors.ecs_values import (
    action_verdict,
    ip_address,
    long_value,
    mac_address,
    transport_fields,
)
from collectors.formats import syslog
from collectors.formats.cef import resolve_zone
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.syslog_envelope import parse_header
from lianfang.schema import format_timestamp

PRI_PREFIX = re.compile(r"<\d{1,3}>")
NETFILTER_START = re.compile(r"(?:^|\s)IN=(?P<in>\S*) OUT=(?P<out>\S*)(?= )")
KERNEL_PREFIX = re.compile(r"^\s*(?:kernel:\s*)?(?:\[\s*\d+\.\d+\]\s*)?")
PREFIX_WORDS = re.compile(r"[A-Za-z]+")
# Decimal netfilter fields (TOS, PREC, RES, MARK are hex and stay strings).
NETFILTER_INT_FIELDS = frozenset(
    {
        "LEN", "TTL", "ID", "TC", "HOPLIMIT", "FLOWLBL", "WINDOW", "URGP", "TYPE", "CODE",
        "SEQ", "MTU", "SPI", "UID", "GID",
    }
)  # fmt: skip

# A key starts a word (after whitespace, a comma, a semicolon, a colon or `>`); its value
# is quoted or a bare run up to whitespace or a comma. A bare value that is followed by
# words before the next key (`time=2026/11/28 10:00:00, x=1`) takes those words too.
KV_PAIR = re.compile(
    r"(?<![^\s,;:>])([A-Za-z_][\w.\-]*)=(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([^\s,;\"']*))"
)
# The address keys that make a line a key=value firewall line (sniffing is case-blind).
_SOURCE_KEYS = "|".join(
    (
        "src", "srcip", "src_ip", "src-ip", "sip", "sourceip", "source_ip", "source-ip",
        "srcaddr", "src_addr", "source-address", "sourceaddress",
    )
)  # fmt: skip
_DESTINATION_KEYS = "|".join(
    (
        "dst", "dstip", "dst_ip", "dst-ip", "dip", "destip", "dest_ip", "destinationip",
        "destination_ip", "destination-ip", "dstaddr", "dst_addr", "destination-address",
        "destinationaddress",
    )
)  # fmt: skip
# FortiGate lines open with the date and time pairs, also in event logs without addresses.
FORTIGATE_START = re.compile(r"(?:<\d{1,3}>)?date=\d{4}-\d{2}-\d{2} time=\d")
SOURCE_KEY = re.compile(rf"(?i)(?:^|[\s,;:>\"])(?:{_SOURCE_KEYS})=")
DESTINATION_KEY = re.compile(rf"(?i)(?:^|[\s,;:>\"])(?:{_DESTINATION_KEYS})=")

# normalised key (lower case, no '-'/'_') -> (ECS path, conversion)
_KV_SPEC: list[tuple[str, str, str]] = [
    ("src srcip sip sourceip srcaddr sourceaddress srcaddress", "source.ip", "address"),
    (
        "dst dstip dip destip destinationip dstaddr destinationaddress dstaddress",
        "destination.ip",
        "address",
    ),
    ("srcport sport spt sourceport", "source.port", "int"),
    ("dstport dport dpt destport destinationport", "destination.port", "int"),
    ("proto protocol ipprotocol", "network.transport", "transport"),
    ("srcmac sourcemac", "source.mac", "mac"),
    ("dstmac destinationmac", "destination.mac", "mac"),
    (
        "srcintf inif inintf ininterface srcinterface ingressinterface",
        "observer.ingress.interface.name",
        "str",
    ),
    (
        "dstintf outif outintf outinterface dstinterface egressinterface",
        "observer.egress.interface.name",
        "str",
    ),
    ("srczone sourcezone fromzone", "observer.ingress.zone", "str"),
    ("dstzone destinationzone tozone", "observer.egress.zone", "str"),
    ("action act policyaction", "event.action", "lower"),
    ("policyid ruleid", "rule.id", "str"),
    ("policyname rulename rule policy", "rule.name", "str"),
    ("poluuid ruleuuid policyuuid", "rule.uuid", "str"),
    ("sentbyte sentbytes bytessent sendbytes bytesout srcbytes", "source.bytes", "int"),
    (
        "rcvdbyte rcvdbytes bytesreceived recvbytes receivedbytes bytesin dstbytes",
        "destination.bytes",
        "int",
    ),
    ("sentpkt sentpkts pktssent sendpkts srcpkts srcpackets", "source.packets", "int"),
    ("rcvdpkt rcvdpkts pktsreceived recvpkts dstpkts dstpackets", "destination.packets", "int"),
    ("transip snatip natsrcip", "source.nat.ip", "ip"),
    ("transport snatport natsrcport", "source.nat.port", "int"),
    ("tranip dnatip natdstip", "destination.nat.ip", "ip"),
    ("tranport dnatport natdstport", "destination.nat.port", "int"),
    ("app application appname", "network.application", "lower"),
    ("devname devicename", "observer.name", "str"),
    ("devid deviceid serialnumber", "observer.serial_number", "str"),
    ("user username srcuser usrname", "user.name", "str"),
    ("srccountry sourcecountry", "source.geo.country_name", "country"),
    ("dstcountry destinationcountry", "destination.geo.country_name", "country"),
    ("duration", "event.duration", "seconds"),
    ("msg message", "message", "str"),
    ("level severity", "log.level", "lower"),
    ("logid", "event.code", "str"),
]
KV_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    alias: (tuple(path.split(".")), kind)
    for aliases, path, kind in _KV_SPEC
    for alias in aliases.split()
}
TIME_KEYS = frozenset({"date", "time", "tz", "eventtime", "timestamp", "logtime", "starttime"})
PLACEHOLDERS = frozenset({"", "-", "N/A", "n/a", "none"})
KV_DATE = re.compile(r"\d{4}[-/]\d{1,2}[-/]\d{1,2}")
MIN_KV_PAIRS = 3
# event.duration is in nanoseconds and must still fit a long.
MAX_DURATION_SECONDS = 9_000_000_000
# FortiGate's actions for a permitted session that ended, normally or not.
SESSION_END_ACTIONS = frozenset({"close", "timeout", "server-rst", "client-rst"})


def sniff(record: Record) -> bool:
    """A netfilter line (IN= OUT= ... SRC= DST=), a FortiGate line, or key=value with both addresses."""
    if not isinstance(record, str):
        return False
    if "SRC=" in record and "DST=" in record and NETFILTER_START.search(record):
        return True
    if FORTIGATE_START.match(record):
        return True
    return SOURCE_KEY.search(record) is not None and DESTINATION_KEY.search(record) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One firewall line to ECS (or, for a syslog line without firewall content, as syslog does)."""
    if not isinstance(record, str):
        raise ParseError("firewall expects a text line", record)
    line = record.rstrip("\r\n").lstrip("\ufeff")
    # `envelope` is what a syslog header tells (time, log.syslog, host); `syslog_document`
    # is the whole line as the syslog format reads it, for lines that are not firewall logs.
    envelope = syslog_document = None
    body = line
    if syslog.sniff(line):
        try:
            envelope = syslog_document = syslog.parse(line, context)
            body = syslog_document.get("message", "")
        except (ParseError, ValueError):  # ValueError: syslog's int() of odd digits ("[²2]")
            pass
    elif pri := PRI_PREFIX.match(line):  # FortiGate sends `<189>date=...` without a header
        envelope = parse_header(pri[0], context)

    if "SRC=" in body and (start := NETFILTER_START.search(body)):
        return _netfilter(body, start, envelope, context)
    has_addresses = SOURCE_KEY.search(line) is not None or DESTINATION_KEY.search(line) is not None
    pairs = _kv_pairs(line)
    if has_addresses or (syslog_document is None and len(pairs) >= MIN_KV_PAIRS):
        return _key_values(pairs, envelope, context)
    if syslog_document is not None:
        return syslog_document
    raise ParseError("neither a netfilter log line nor key=value firewall log", record)


def _netfilter(
    body: str, start: re.Match[str], envelope: dict[str, Any] | None, context: ParseContext
) -> dict[str, Any]:
    prefix = KERNEL_PREFIX.sub("", body[: start.start()]).strip()
    if prefix.startswith("[") and prefix.endswith("]"):
        prefix = prefix[1:-1]
    rule_name = prefix.rstrip(":").strip()

    text = body[start.start() :].strip()
    nested = text.find(" [")
    if nested >= 0:  # ICMP errors quote the original packet in brackets
        text = text[:nested]
    ip_fields: dict[str, str] = {}
    transport: dict[str, str] = {}
    ip_flags: list[str] = []
    transport_flags: list[str] = []
    after_proto = False
    for token in text.split():
        key, equals, value = token.partition("=")
        if not equals:
            (transport_flags if after_proto else ip_flags).append(token)
        elif after_proto and key not in ("MARK", "UID", "GID"):
            transport[key] = value
        else:
            ip_fields[key] = value
            if key == "PROTO":
                after_proto = True

    document, event = _base("firewall.netfilter", envelope, context)
    observer: dict[str, Any] = {"type": "firewall", "product": "netfilter"}
    if envelope is not None and "host" in envelope:
        observer["hostname"] = envelope["host"]["name"]
    if start["in"]:
        observer["ingress"] = {"interface": {"name": start["in"]}}
    if start["out"]:
        observer["egress"] = {"interface": {"name": start["out"]}}
    document["observer"] = observer
    network: dict[str, Any] = {"type": "ipv6" if ":" in ip_fields.get("SRC", "") else "ipv4"}
    if start["in"] and not start["out"]:
        network["direction"] = "ingress"
    elif start["out"] and not start["in"]:
        network["direction"] = "egress"
    if proto := ip_fields.pop("PROTO", ""):
        network.update(transport_fields(proto))
    document["network"] = network
    for side, address_key, port_key in (("source", "SRC", "SPT"), ("destination", "DST", "DPT")):
        # Values that are not an address or port stay in firewall.netfilter as written.
        endpoint: dict[str, Any] = {}
        if ip_address(ip_fields.get(address_key, "")):
            endpoint["ip"] = ip_fields.pop(address_key)
        port = long_value(transport.get(port_key, ""))
        if port is not None:
            endpoint["port"] = port
            del transport[port_key]
        if endpoint:
            document[side] = endpoint
    mac = ip_fields.pop("MAC", "")
    ip_fields.pop("IN", None)
    ip_fields.pop("OUT", None)
    netfilter: dict[str, Any] = _netfilter_values(ip_fields)
    if mac:
        _split_mac(document, netfilter, mac)
    if ip_flags:
        netfilter["ip_flags"] = ip_flags
    if transport or transport_flags:
        transport_values = _netfilter_values(transport)
        if transport_flags:
            transport_values["flags"] = transport_flags
        netfilter[network.get("transport", "transport").replace("-", "_")] = transport_values
    if netfilter:
        document["firewall"] = {"netfilter": netfilter}

    verdict = None
    if rule_name:
        document["rule"] = {"name": rule_name}
        for word in PREFIX_WORDS.findall(rule_name):
            verdict = action_verdict(word)
            if verdict:
                event["action"] = word.lower()
                break
    _verdict_types(document, event, verdict)
    return document


def _netfilter_values(fields: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in fields.items():
        if value == "":
            continue
        number = long_value(value) if key in NETFILTER_INT_FIELDS else None
        values[key.lower()] = value if number is None else number
    return values


def _split_mac(document: dict[str, Any], netfilter: dict[str, Any], mac: str) -> None:
    """MAC= is destination MAC, source MAC and EtherType, as colon-separated bytes."""
    octets = mac.split(":")
    if len(octets) >= 12:
        destination = mac_address(":".join(octets[:6]))
        source = mac_address(":".join(octets[6:12]))
        if destination:
            document.setdefault("destination", {})["mac"] = destination
        if source:
            document.setdefault("source", {})["mac"] = source
        if len(octets) == 14:
            netfilter["ether_type"] = "".join(octets[12:]).lower()
            return
    netfilter["mac"] = mac


def _kv_pairs(line: str) -> dict[str, str]:
    """The key=value pairs of a line; the first occurrence of a key wins."""
    pairs: dict[str, str] = {}
    bare_key = None  # the key of the previous pair, if its value was bare
    previous_end = 0
    for match in KV_PAIR.finditer(line):
        key, double, single, bare = match.groups()
        if bare_key is not None:
            gap = line[previous_end : match.start()].rstrip(" \t,;")
            if gap.strip(" \t,;"):
                pairs[bare_key] += gap
        previous_end = match.end()
        if key in pairs:
            bare_key = None
            continue
        if double is not None:
            pairs[key] = double.replace('\\"', '"') if "\\" in double else double
            bare_key = None
        elif single is not None:
            pairs[key] = single
            bare_key = None
        else:
            pairs[key] = bare
            bare_key = key
    if bare_key is not None:
        gap = line[previous_end:].rstrip(" \t,;")
        if gap.strip(" \t,;"):
            pairs[bare_key] += gap
    return pairs


def _key_values(
    pairs: dict[str, str], envelope: dict[str, Any] | None, context: ParseContext
) -> dict[str, Any]:
    keys = [(key, _normalise(key)) for key in pairs]
    times = {normalised: pairs[key].strip() for key, normalised in keys if normalised in TIME_KEYS}
    document, event = _base("firewall.kv", envelope, context, times)
    document["observer"] = {"type": "firewall"}
    unmapped: dict[str, str] = {}
    for key, normalised in keys:
        if normalised in TIME_KEYS:
            continue
        value = pairs[key].strip()
        mapping = KV_FIELDS.get(normalised)
        if mapping is not None and _put(document, mapping[0], mapping[1], value):
            continue
        if value not in PLACEHOLDERS:
            unmapped[key.replace(".", "_")] = pairs[key]
    if unmapped:
        document["firewall"] = {"kv": unmapped}
    action = str(event.get("action", ""))
    if action in SESSION_END_ACTIONS:
        _verdict_types(document, event, "allowed")
        event["type"].append("end")
    else:
        _verdict_types(document, event, action_verdict(action))
    return document


@lru_cache(maxsize=4096)
def _normalise(key: str) -> str:
    """The alias-table form of a key: SrcIp, src_ip and src-ip are all srcip."""
    return key.lower().replace("-", "").replace("_", "")


def _put(document: dict[str, Any], path: tuple[str, ...], kind: str, value: str) -> bool:
    """Set one mapped key; True also for placeholders (dropped), False when it cannot be set."""
    if value in PLACEHOLDERS:
        return True
    leaf = path[-1]
    converted: Any = value
    if kind == "str":
        pass
    elif kind == "address":
        if ip_address(value) is None:
            leaf = "address"
    elif kind in ("int", "seconds"):
        number = long_value(value)
        if number is None or (kind == "seconds" and number > MAX_DURATION_SECONDS):
            return False
        converted = number * 1_000_000_000 if kind == "seconds" else number
    elif kind == "ip":
        if ip_address(value) is None:
            return False
    elif kind == "mac":
        converted = mac_address(value)
        if converted is None:
            return False
    elif kind == "lower":
        converted = value.lower()
    elif kind == "country" and value.lower() == "reserved":
        return True  # FortiGate's word for private addresses
    parent = _target(document, path[:-1])
    if kind == "transport":
        parent.update(transport_fields(value))
        return True
    if leaf in parent:
        return False  # an earlier alias (rule=12 before policy="x") already set it
    parent[leaf] = converted
    return True


def _target(document: dict[str, Any], parents: tuple[str, ...]) -> dict[str, Any]:
    target = document
    for part in parents:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        target = child
    return target


def _base(
    dataset: str,
    envelope: dict[str, Any] | None,
    context: ParseContext,
    times: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document and its event, dated from the key=value times, the header or reception."""
    document: dict[str, Any] = {"@timestamp": ""}
    event: dict[str, Any] = {"kind": "event", "category": ["network"], "dataset": dataset}
    document["event"] = event
    moment = _kv_time(times, context) if times else None
    if moment is not None:
        document["@timestamp"] = format_timestamp(moment)
    elif envelope is not None and "@timestamp" in envelope:
        document["@timestamp"] = envelope["@timestamp"]
    else:
        document["@timestamp"] = format_timestamp(context.received)
        document["tags"] = ["timestamp_from_reception"]
    if envelope is not None:
        document["log"] = envelope["log"]
        if dataset == "firewall.netfilter" and "host" in envelope:
            document["host"] = envelope["host"]
    return document, event


def _verdict_types(document: dict[str, Any], event: dict[str, Any], verdict: str | None) -> None:
    event["type"] = ["connection", verdict] if verdict else ["connection"]
    if verdict:
        event["outcome"] = "success"
    if "source" not in document and "destination" not in document:
        del event["category"]  # not a connection: e.g. a FortiGate system event
        event["type"] = ["info"]


def _kv_time(lowered: dict[str, str], context: ParseContext) -> datetime | None:
    """The time given by normalised time keys (eventtime, date+time+tz, time, timestamp)."""
    epoch = lowered.get("eventtime", "")
    if epoch.isascii() and epoch.isdigit():
        digits = len(epoch)
        scale = 1 if digits <= 10 else 1e3 if digits <= 13 else 1e6 if digits <= 16 else 1e9
        try:
            return datetime.fromtimestamp(int(epoch) / scale, UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise ParseError(f"eventtime out of range: {epoch!r}") from error
    date, time = lowered.get("date"), lowered.get("time")
    if date and time and KV_DATE.fullmatch(date):
        return _local(f"{date} {time}", lowered.get("tz"), context)
    for key in ("time", "timestamp", "logtime", "starttime"):
        value = lowered.get(key)
        if value and KV_DATE.match(value):
            return _local(value, None, context)
    return None


def _local(text: str, zone: str | None, context: ParseContext) -> datetime:
    """A `YYYY-MM-DD HH:MM:SS` (or ISO 8601) time, in `zone` or the configured zone."""
    try:
        moment = datetime.fromisoformat(text.replace("/", "-").replace("Z", "+00:00"))
    except ValueError as error:
        raise ParseError(f"unreadable firewall log time {text!r}") from error
    if moment.tzinfo is not None:
        return moment
    if zone:
        return moment.replace(tzinfo=resolve_zone(zone.replace('"', ""), moment, context))
    return moment.replace(tzinfo=context.timezone)


FORMAT = LogFormat(
    name="firewall",
    description="Firewall logs: netfilter/iptables/ufw kernel lines and key=value firewall logs (FortiGate-style)",
    sniff=sniff,
    parse=parse,
    priority=30,
)
