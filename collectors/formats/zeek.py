"""Zeek logs in both of Zeek's encodings: the default TSV files and JSON lines.

TSV files start with header lines (`#separator \\x09`, `#set_separator`, `#empty_field`,
`#unset_field`, `#path`, `#fields`, `#types`, also `#open`/`#close`). A header line
carries no event: parsing it returns None and stores what it declares in
`context.state["zeek"]`, which later data lines of the same stream need. Data lines are
split by the declared separator and typed by `#types`; unset (`-`) and empty
(`(empty)`) values are dropped. Zeek escapes bytes it cannot print (and separators
inside values) as `\\xHH`; those are decoded back to bytes and read as UTF-8 (invalid
UTF-8 stays visible as `\\xHH`). Inside a set or vector, an unset element becomes null
so that parallel vectors (DNS `answers` and `TTLs`) stay aligned. Concatenated logs
work: every `#fields`/`#types` pair resets the columns.

JSON lines (`LogAscii::use_json=T`) carry the same fields with dotted names
(`id.orig_h`); `ts` is epoch seconds or ISO 8601 (`JSON::TS_ISO8601`). The log name
comes from `_path` when the writer adds it (Corelight, Security Onion, post-processors)
and is otherwise inferred from the log's distinctive fields (`query`+`qtype_name` is
dns, `func` is modbus, ...); a record whose log cannot be told apart is kept as
`zeek.unknown`. A JSON value of an unexpected type stays under `zeek.<log>` instead of
reaching a typed ECS field.

Mapping: the connection 4-tuple, transport and byte/packet counts (orig = source,
resp = destination) go to ECS `source.*`, `destination.*` and `network.*`,
local_orig/local_resp to network.direction, `duration` to event.duration in
nanoseconds. The common logs (conn, dns, http, ssl, files, notice, modbus, dnp3, weird,
ssh) map their protocol fields to `dns.*`, `http.*`/`url.*`, `tls.*`, `file.*`,
`rule.name` + `message` (notices are alerts); Zeek's "ssl" service is called "tls" in
network.protocol as ECS and Suricata do. Every field without an ECS home is kept under
`zeek.<log>.*`. `uid` becomes `zeek.session_id`; `event.id` is left to the pipeline.
`event.action` is the log name unless the log names its own action (modbus function,
DNP3 function code, weird name).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from collectors.ecs_values import ip_address, mac_address, transport_fields
from collectors.formats.json_lines import decode_json
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

STATE_KEY = "zeek"
NANOSECONDS = 1_000_000_000
# Longer than any real connection; keeps event.duration inside a signed 64-bit long.
MAX_DURATION_SECONDS = 9e9
LOG_NAME = re.compile(r"[a-z0-9_]{1,64}")
ESCAPED_BYTE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
CONTAINER_TYPE = re.compile(r"(?:set|vector|table)\[(?P<element>[^\]]+)\]$")
TRUTH = {"T": True, "F": False}
DNS_FLAGS = ("AA", "TC", "RD", "RA")
# Zeek's ssl.log version names -> ECS tls.version_protocol and tls.version.
TLS_VERSIONS = {
    "SSLv2": ("ssl", "2.0"),
    "SSLv3": ("ssl", "3.0"),
    "TLSv10": ("tls", "1.0"),
    "TLSv11": ("tls", "1.1"),
    "TLSv12": ("tls", "1.2"),
    "TLSv13": ("tls", "1.3"),
    "DTLSv10": ("dtls", "1.0"),
    "DTLSv12": ("dtls", "1.2"),
    "DTLSv13": ("dtls", "1.3"),
}
# (local_orig, local_resp) -> ECS network.direction, as seen from the monitored network.
DIRECTIONS = {
    (True, True): "internal",
    (True, False): "outbound",
    (False, True): "inbound",
    (False, False): "external",
}
# log -> (event.kind, event.category, event.type); logs not listed are network info.
CLASSIFICATION: dict[str, tuple[str, list[str], list[str]]] = {
    "conn": ("event", ["network"], ["connection"]),
    "dns": ("event", ["network"], ["protocol"]),
    "http": ("event", ["network", "web"], ["protocol", "access"]),
    "ssl": ("event", ["network"], ["protocol"]),
    "ssh": ("event", ["network"], ["protocol"]),
    "files": ("event", ["file"], ["info"]),
    "notice": ("alert", ["intrusion_detection"], ["info"]),
    "intel": ("alert", ["threat"], ["indicator"]),
    "modbus": ("event", ["network"], ["protocol"]),
    "dnp3": ("event", ["network"], ["protocol"]),
}
DEFAULT_CLASSIFICATION = ("event", ["network"], ["info"])
# Industrial and other protocols whose log name is also the application protocol.
PROTOCOL_LOGS = {"modbus", "dnp3", "dns", "http", "ssh", "ftp", "smtp", "rdp", "sip", "snmp"}
# JSON records without `_path`: the first rule whose test matches names the log.
LOG_INFERENCE: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...] = (
    ("conn", lambda r: "conn_state" in r),
    ("dns", lambda r: "qtype_name" in r or "rcode_name" in r or ("query" in r and "trans_id" in r)),
    ("http", lambda r: "request_body_len" in r or ("method" in r and "uri" in r)),
    ("ssl", lambda r: "established" in r or "cipher" in r or "ssl_history" in r),
    ("files", lambda r: "fuid" in r and ("seen_bytes" in r or "analyzers" in r)),
    ("notice", lambda r: "note" in r),
    ("modbus", lambda r: "func" in r),
    ("dnp3", lambda r: "fc_request" in r or "fc_reply" in r or "iin" in r),
    ("weird", lambda r: "name" in r and "peer" in r),
    ("x509", lambda r: "certificate.serial" in r or "certificate.subject" in r),
    ("ssh", lambda r: "auth_success" in r or "auth_attempts" in r or "hassh" in r),
    ("smtp", lambda r: "mailfrom" in r or "helo" in r),
    ("ftp", lambda r: "command" in r and "reply_code" in r),
    ("dhcp", lambda r: "msg_types" in r or "assigned_addr" in r),
    ("kerberos", lambda r: "request_type" in r and "service" in r),
    ("rdp", lambda r: "security_protocol" in r or "cookie" in r),
    ("quic", lambda r: "client_initial_dcid" in r),
    ("intel", lambda r: "seen.indicator" in r),
    ("software", lambda r: "software_type" in r),
    ("dce_rpc", lambda r: "endpoint" in r and "operation" in r),
    ("ntp", lambda r: "stratum" in r),
    ("tunnel", lambda r: "tunnel_type" in r),
)

Converter = Callable[[str], Any]


@dataclass
class TsvHeader:
    """What the header lines of one TSV stream have declared so far."""

    separator: str = "\t"
    set_separator: str = ","
    empty_field: str = "(empty)"
    unset_field: str = "-"
    path: str | None = None
    fields: list[str] | None = None
    types: list[str] | None = None
    # (field name, converter) per column, built on the first data line after a change.
    columns: list[tuple[str, Converter | None]] | None = field(default=None, repr=False)


def sniff(record: Record) -> bool:
    """A TSV header line, or a JSON object with Zeek's `ts` and `uid`/`_path`/`id.orig_h`."""
    if isinstance(record, dict):
        return _looks_like_zeek_json(record)
    line = record.lstrip("\ufeff")
    if line.startswith(("#separator ", "#fields", "#path")):
        return True
    if not line.lstrip().startswith("{") or '"ts"' not in line:
        return False
    try:
        value = decode_json(line)
    except ParseError:
        return False
    return isinstance(value, dict) and _looks_like_zeek_json(value)


def _looks_like_zeek_json(record: dict[str, Any]) -> bool:
    return "ts" in record and ("uid" in record or "_path" in record or "id.orig_h" in record)


def parse(record: Record, context: ParseContext) -> dict[str, Any] | None:
    """One Zeek TSV line (None for a header line) or JSON record to ECS."""
    if isinstance(record, dict):
        return _parse_json_record(record, record)
    line = record.lstrip("\ufeff").rstrip("\r\n")
    if line.startswith("#"):
        _read_header(line, context)
        return None
    if line.lstrip().startswith(("{", "[")):
        value = decode_json(line)
        if not isinstance(value, dict):
            raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
        return _parse_json_record(value, record)
    return _parse_tsv_line(line, record, context)


# --- TSV ---------------------------------------------------------------------------


def _header(context: ParseContext) -> TsvHeader:
    header = context.state.get(STATE_KEY)
    if not isinstance(header, TsvHeader):
        header = TsvHeader()
        context.state[STATE_KEY] = header
    return header


def _read_header(line: str, context: ParseContext) -> None:
    header = _header(context)
    if line.startswith("#separator"):
        # The separator line is the only one whose value follows a space.
        value = _unescape(line[len("#separator") :].strip())
        if not value:
            raise ParseError("Zeek #separator header without a separator", line)
        header.separator = value
        header.columns = None
        return
    name, _, value = line[1:].partition(header.separator)
    if name == "set_separator":
        header.set_separator = _unescape(value)
    elif name == "empty_field":
        header.empty_field = _unescape(value)
    elif name == "unset_field":
        header.unset_field = _unescape(value)
    elif name == "path":
        header.path = _unescape(value)
    elif name == "fields":
        header.fields = value.split(header.separator)
    elif name == "types":
        header.types = value.split(header.separator)
    else:
        return  # #open, #close and comments change nothing
    header.columns = None


def _parse_tsv_line(line: str, record: str, context: ParseContext) -> dict[str, Any]:
    header = _header(context)
    columns = header.columns
    if columns is None:
        columns = _compile_columns(header, record)
    values = line.split(header.separator)
    if len(values) != len(columns):
        raise ParseError(
            f"Zeek TSV line has {len(values)} fields, #fields declares {len(columns)}", record
        )
    placeholders = (header.unset_field, header.empty_field)
    fields: dict[str, Any] = {}
    try:
        for (name, convert), raw in zip(columns, values, strict=True):
            if raw in placeholders:
                continue
            if convert is None:  # a string column: the common case, kept inline
                fields[name] = _unescape(raw) if "\\x" in raw else raw
            else:
                fields[name] = convert(raw)
    except ValueError as error:
        raise ParseError(f"Zeek field {name} has a bad value {raw!r}", record) from error
    log = header.path or _infer_log(fields)
    return _to_ecs(log, fields, record)


def _compile_columns(header: TsvHeader, record: str) -> list[tuple[str, Converter | None]]:
    if header.fields is None or header.types is None:
        raise ParseError("Zeek TSV data line before its #fields and #types headers", record)
    if len(header.fields) != len(header.types):
        raise ParseError(
            f"Zeek #fields names {len(header.fields)} columns but #types {len(header.types)}",
            record,
        )
    header.columns = [
        (name, _converter(kind, header))
        for name, kind in zip(header.fields, header.types, strict=True)
    ]
    return header.columns


def _converter(kind: str, header: TsvHeader) -> Converter | None:
    """How to read a column of this type; None for a (possibly escaped) string."""
    container = CONTAINER_TYPE.match(kind)
    if container is None:
        return _scalar_converter(kind)
    convert_element = _scalar_converter(container["element"]) or _unescape
    set_separator, unset = header.set_separator, header.unset_field

    def convert_container(raw: str) -> list[Any]:
        return [
            None if element == unset else convert_element(element)
            for element in raw.split(set_separator)
        ]

    return convert_container


def _scalar_converter(kind: str) -> Converter | None:
    if kind in ("time", "interval", "double"):
        return _finite_float
    if kind in ("count", "int", "port"):
        return int
    if kind == "bool":
        return _boolean
    return None  # string, addr, subnet, enum, pattern and anything newer


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):  # "nan" and "inf" parse, but JSON cannot carry them
        raise ValueError(f"not a finite number: {raw!r}")
    return value


def _boolean(raw: str) -> bool:
    value = TRUTH.get(raw)
    if value is None:
        raise ValueError(f"not T or F: {raw!r}")
    return value


def _unescape(text: str) -> str:
    """Zeek's `\\xHH` escapes decoded back to the bytes they stand for, read as UTF-8."""
    if "\\x" not in text:
        return text
    raw = ESCAPED_BYTE.sub(lambda m: bytes((int(m[1], 16),)), text.encode("utf-8"))
    return raw.decode("utf-8", errors="backslashreplace")


# --- JSON --------------------------------------------------------------------------


def _parse_json_record(value: dict[str, Any], record: Record) -> dict[str, Any]:
    if "ts" not in value:
        raise ParseError("Zeek JSON record without ts", record)
    fields = _flatten(value)
    log = fields.pop("_path", None)
    if not isinstance(log, str) or not log:
        log = _infer_log(fields)
    # Nulls, empty sets and "-" are how writers and post-processors say "unset".
    fields = {k: v for k, v in fields.items() if v is not None and v not in ([], "", "-")}
    return _to_ecs(log, fields, record)


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # Zeek writes record fields as dotted names; post-processors sometimes nest them.
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def _infer_log(fields: dict[str, Any]) -> str:
    for log, test in LOG_INFERENCE:
        if test(fields):
            return log
    return "unknown"


# --- mapping -----------------------------------------------------------------------


def _to_ecs(log: str, fields: dict[str, Any], record: Record) -> dict[str, Any]:
    log = _log_name(log)
    kind, category, event_type = CLASSIFICATION.get(log, DEFAULT_CLASSIFICATION)
    event: dict[str, Any] = {
        "kind": kind,
        "module": "zeek",
        "dataset": f"zeek.{log}",
        "category": list(category),
        "type": list(event_type),
        "action": log,
    }
    document: dict[str, Any] = {
        "@timestamp": _timestamp(fields.pop("ts", None), record),
        "event": event,
    }
    zeek: dict[str, Any] = {}
    session_id = _take_text(fields, "uid")
    if session_id:
        zeek["session_id"] = session_id
    _map_common(fields, document, record)
    mapper = LOG_MAPPERS.get(log)
    if mapper is not None:
        mapper(fields, document)
    if log in PROTOCOL_LOGS:
        document.setdefault("network", {}).setdefault("protocol", log)
    if fields:
        zeek[log] = _nest(fields)
    if zeek:
        document["zeek"] = zeek
    return document


@lru_cache(maxsize=256)
def _log_name(log: str) -> str:
    # The name becomes part of event.dataset and a field name: keep it a plain word.
    name = log.strip().lower().replace("-", "_").replace(".", "_")
    return name if LOG_NAME.fullmatch(name) else "unknown"


def _timestamp(raw: Any, record: Record) -> str:
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return format_timestamp(datetime.fromtimestamp(raw, UTC))
        if isinstance(raw, str):
            moment = datetime.fromisoformat(raw)
            return format_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    except (ValueError, OverflowError, OSError) as error:
        raise ParseError(f"Zeek ts out of range or unreadable: {raw!r}", record) from error
    raise ParseError(f"Zeek ts is not a time: {raw!r}", record)


def _map_common(fields: dict[str, Any], document: dict[str, Any], record: Record) -> None:
    """The connection tuple and other fields that mean the same in every log."""
    source: dict[str, Any] = {}
    destination: dict[str, Any] = {}
    _take_address(fields, "id.orig_h", source)
    _take_port(fields, "id.orig_p", source, record)
    _take_address(fields, "id.resp_h", destination)
    _take_port(fields, "id.resp_p", destination, record)
    network: dict[str, Any] = {}
    proto = _take_text(fields, "proto")
    if proto:
        network.update(transport_fields(proto))
    _put(network, "community_id", _take_text(fields, "community_id"))
    duration = fields.get("duration")
    if (
        isinstance(duration, int | float)
        and not isinstance(duration, bool)
        and abs(duration) < MAX_DURATION_SECONDS
    ):
        document["event"]["duration"] = round(duration * NANOSECONDS)
        del fields["duration"]
    observer_name = _take_text(fields, "_system_name")
    if observer_name:
        document["observer"] = {"name": observer_name, "hostname": observer_name}
    fields.pop("_write_ts", None)
    if source:
        document["source"] = source
    if destination:
        document["destination"] = destination
    if network:
        document["network"] = network


def _map_conn(fields: dict[str, Any], document: dict[str, Any]) -> None:
    source = document.setdefault("source", {})
    destination = document.setdefault("destination", {})
    network = document.setdefault("network", {})
    service = fields.get("service")
    services = service.split(",") if isinstance(service, str) else service
    if isinstance(services, list) and services and all(isinstance(s, str) for s in services):
        # Zeek's analyzer is called "ssl"; ECS (and Suricata) call the protocol "tls".
        services = ["tls" if name == "ssl" else name for name in services]
        network["protocol"] = services[0] if len(services) == 1 else services
        del fields["service"]
    _put(source, "bytes", _take_count(fields, "orig_bytes"))
    _put(destination, "bytes", _take_count(fields, "resp_bytes"))
    _put(source, "packets", _take_count(fields, "orig_pkts"))
    _put(destination, "packets", _take_count(fields, "resp_pkts"))
    if "bytes" in source and "bytes" in destination:
        network["bytes"] = source["bytes"] + destination["bytes"]
    if "packets" in source and "packets" in destination:
        network["packets"] = source["packets"] + destination["packets"]
    local_orig, local_resp = fields.get("local_orig"), fields.get("local_resp")
    if isinstance(local_orig, bool) and isinstance(local_resp, bool):
        network["direction"] = DIRECTIONS[(local_orig, local_resp)]
    _put(source, "mac", _take_mac(fields, "orig_l2_addr"))
    _put(destination, "mac", _take_mac(fields, "resp_l2_addr"))
    for part in ("source", "destination", "network"):
        if not document[part]:
            del document[part]


def _map_dns(fields: dict[str, Any], document: dict[str, Any]) -> None:
    dns: dict[str, Any] = {}
    question: dict[str, Any] = {}
    _put(question, "name", _take_text(fields, "query"))
    _put(question, "type", _take_text(fields, "qtype_name"))
    _put(question, "class", _take_text(fields, "qclass_name"))
    if question:
        dns["question"] = question
    transaction = _take_count(fields, "trans_id")
    if transaction is not None:
        dns["id"] = str(transaction)
    rcode = _take_text(fields, "rcode_name")
    if rcode:
        dns["response_code"] = rcode
        document["event"]["outcome"] = "success" if rcode == "NOERROR" else "failure"
    answers = fields.get("answers")
    ttls = fields.get("TTLs")
    if isinstance(answers, list) and all(isinstance(a, str | None) for a in answers):
        ttl_list = ttls if isinstance(ttls, list) else []
        dns["answers"] = [
            _dns_answer(data, ttl_list[index] if index < len(ttl_list) else None)
            for index, data in enumerate(answers)
            if data is not None
        ]
        resolved = [data for data in answers if isinstance(data, str) and ip_address(data)]
        if resolved:
            dns["resolved_ip"] = resolved
        del fields["answers"]
        if isinstance(ttls, list):
            del fields["TTLs"]
    flags = [name for name in DNS_FLAGS if fields.get(name) is True]
    for name in DNS_FLAGS:
        if isinstance(fields.get(name), bool):
            del fields[name]
    if flags:
        dns["header_flags"] = flags
    dns["type"] = "answer" if (rcode or dns.get("answers")) else "query"
    document["dns"] = dns


def _dns_answer(data: str, ttl: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {"data": data}
    if isinstance(ttl, int | float) and not isinstance(ttl, bool) and abs(ttl) < 2**31:
        answer["ttl"] = int(ttl)
    return answer


def _map_http(fields: dict[str, Any], document: dict[str, Any]) -> None:
    http: dict[str, Any] = {}
    request: dict[str, Any] = {}
    response: dict[str, Any] = {}
    _put(request, "method", _take_text(fields, "method"))
    _put(request, "referrer", _take_text(fields, "referrer"))
    request_body = _take_count(fields, "request_body_len")
    if request_body is not None:
        request["body"] = {"bytes": request_body}
    status = _take_count(fields, "status_code")
    if status is not None:
        response["status_code"] = status
        document["event"]["outcome"] = "success" if status < 400 else "failure"
    response_body = _take_count(fields, "response_body_len")
    if response_body is not None:
        response["body"] = {"bytes": response_body}
    _put(http, "version", _take_text(fields, "version"))
    if request:
        http["request"] = request
    if response:
        http["response"] = response
    if http:
        document["http"] = http
    url: dict[str, Any] = {}
    host = _take_text(fields, "host")
    if host:
        url["domain"] = host
    uri = _take_text(fields, "uri")
    if uri:
        url.update(_url_parts(uri, host))
    _put(url, "username", _take_text(fields, "username"))
    _put(url, "password", _take_text(fields, "password"))
    if url:
        document["url"] = url
    user_agent = _take_text(fields, "user_agent")
    if user_agent:
        document["user_agent"] = {"original": user_agent}


def _url_parts(uri: str, host: str | None) -> dict[str, Any]:
    """url.* from a request target: origin form (`/p?q`), absolute form, or CONNECT's authority."""
    parts: dict[str, Any] = {"original": uri}
    if uri.startswith("/"):
        path, question_mark, query = uri.partition("?")
        parts["path"] = path
        if question_mark and query:
            parts["query"] = query
        if host:
            parts["full"] = f"http://{host}{uri}"
    elif "://" in uri:  # a request to a proxy carries the whole URL
        try:
            split = urlsplit(uri)
            port = split.port
        except ValueError:
            return parts
        parts["full"] = uri
        _put(parts, "scheme", split.scheme or None)
        _put(parts, "domain", split.hostname or None)
        _put(parts, "port", port)
        _put(parts, "path", split.path or None)
        _put(parts, "query", split.query or None)
    return parts


def _map_ssl(fields: dict[str, Any], document: dict[str, Any]) -> None:
    tls: dict[str, Any] = {}
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    version = fields.get("version")
    if isinstance(version, str) and version in TLS_VERSIONS:
        tls["version_protocol"], tls["version"] = TLS_VERSIONS[version]
        del fields["version"]
    established = _take_bool(fields, "established")
    if established is not None:
        tls["established"] = established
        document["event"]["outcome"] = "success" if established else "failure"
    _put(tls, "cipher", _take_text(fields, "cipher"))
    _put(tls, "curve", _take_text(fields, "curve"))
    _put(tls, "resumed", _take_bool(fields, "resumed"))
    _put(tls, "next_protocol", _take_text(fields, "next_protocol"))
    _put(client, "server_name", _take_text(fields, "server_name"))
    _put(client, "ja3", _take_text(fields, "ja3"))
    _put(client, "subject", _take_text(fields, "client_subject"))
    _put(client, "issuer", _take_text(fields, "client_issuer"))
    _put(server, "ja3s", _take_text(fields, "ja3s"))
    _put(server, "subject", _take_text(fields, "subject"))
    _put(server, "issuer", _take_text(fields, "issuer"))
    if client:
        tls["client"] = client
    if server:
        tls["server"] = server
    if tls:
        document["tls"] = tls
    document.setdefault("network", {})["protocol"] = "tls"


def _map_files(fields: dict[str, Any], document: dict[str, Any]) -> None:
    file: dict[str, Any] = {}
    _put(file, "name", _take_text(fields, "filename"))
    _put(file, "mime_type", _take_text(fields, "mime_type"))
    _put(file, "size", _take_count(fields, "total_bytes"))
    hashes: dict[str, Any] = {}
    for name in ("md5", "sha1", "sha256"):
        _put(hashes, name, _take_text(fields, name))
    if hashes:
        file["hash"] = hashes
    if file:
        document["file"] = file


def _map_notice(fields: dict[str, Any], document: dict[str, Any]) -> None:
    note = _take_text(fields, "note")
    if note:
        document["rule"] = {"name": note}
    _put(document, "message", _take_text(fields, "msg"))
    # Notices not tied to a connection name their endpoints in src/dst/p.
    if "ip" not in document.get("source", {}):
        source: dict[str, Any] = {}
        _take_address(fields, "src", source)
        if source:
            document.setdefault("source", {}).update(source)
    if "ip" not in document.get("destination", {}):
        destination: dict[str, Any] = {}
        _take_address(fields, "dst", destination)
        if destination:
            document.setdefault("destination", {}).update(destination)
    if "port" not in document.get("destination", {}):
        port = _take_count(fields, "p")
        if port is not None:
            document.setdefault("destination", {})["port"] = port


def _map_modbus(fields: dict[str, Any], document: dict[str, Any]) -> None:
    event = document["event"]
    _put(event, "action", _take_text(fields, "func"))
    event["outcome"] = "failure" if fields.get("exception") else "success"


def _map_dnp3(fields: dict[str, Any], document: dict[str, Any]) -> None:
    for name in ("fc_request", "fc_reply"):
        function = fields.get(name)
        if isinstance(function, str) and function:
            document["event"]["action"] = function
            return


def _map_weird(fields: dict[str, Any], document: dict[str, Any]) -> None:
    _put(document["event"], "action", _take_text(fields, "name"))


def _map_ssh(fields: dict[str, Any], document: dict[str, Any]) -> None:
    success = fields.get("auth_success")
    if isinstance(success, bool):
        document["event"]["outcome"] = "success" if success else "failure"
        document["event"]["category"].append("authentication")


LOG_MAPPERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "conn": _map_conn,
    "dns": _map_dns,
    "http": _map_http,
    "ssl": _map_ssl,
    "files": _map_files,
    "notice": _map_notice,
    "modbus": _map_modbus,
    "dnp3": _map_dnp3,
    "weird": _map_weird,
    "ssh": _map_ssh,
}

# JSON records can hold anything; a value of the wrong type stays under zeek.<log>.


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _take_text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, str) and value:
        del fields[name]
        return value
    return None


def _take_count(fields: dict[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        del fields[name]
        return value
    return None


def _take_bool(fields: dict[str, Any], name: str) -> bool | None:
    value = fields.get(name)
    if isinstance(value, bool):
        del fields[name]
        return value
    return None


def _take_address(fields: dict[str, Any], name: str, target: dict[str, Any]) -> None:
    """`ip` for an IP address; anything else Zeek calls an address stays in zeek.<log>."""
    value = fields.get(name)
    if isinstance(value, str) and ip_address(value):
        target["ip"] = value
        del fields[name]


def _take_port(fields: dict[str, Any], name: str, target: dict[str, Any], record: Record) -> None:
    if name not in fields:
        return
    value = fields.pop(name)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ParseError(f"Zeek {name} is not a port number: {value!r}", record)
    target["port"] = value


def _take_mac(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    mac = mac_address(value) if isinstance(value, str) else None
    if mac:
        del fields[name]
    return mac


def _nest(fields: dict[str, Any]) -> dict[str, Any]:
    """Dotted Zeek names (`certificate.version`) as nested objects, never losing a value."""
    nested: dict[str, Any] = {}
    for name, value in fields.items():
        if "." not in name and not isinstance(nested.get(name), dict):
            nested[name] = value
            continue
        *parents, leaf = name.split(".")
        target = nested
        for part in parents:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):  # a plain field already has this name
                target, leaf = nested, name.replace(".", "_")
                break
            target = child
        if isinstance(target.get(leaf), dict):  # a record field already has this name
            leaf = f"{leaf}_value"
        target[leaf] = value
    return nested


FORMAT = LogFormat(
    name="zeek",
    description="Zeek logs: TSV with #fields/#types headers, or JSON lines (conn, dns, http, ssl, files, notice, modbus, dnp3, ...)",
    sniff=sniff,
    parse=parse,
    priority=30,
)
