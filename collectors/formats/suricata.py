"""Suricata EVE JSON (`eve.json`): one JSON object per line, typed by `event_type`.

`timestamp` carries an offset without a colon (`2026-11-28T10:00:00.123456+0800`);
very old versions wrote none, and such a time is read in the configured zone. Lines may
carry the `@cee: ` prefix that EVE's `prefix` option adds for syslog transports.

Mapping: the 5-tuple, app-layer protocol and community_id go to `source.*`,
`destination.*`, `network.*`; the sensor name (`host`) and interface to `observer.*`;
the `flow` counters to `source/destination.bytes|packets` (toserver is the
client side), the flow start/end to `event.start/end/duration`. Per event type:

- alert: `event.kind` "alert", `rule.id` = signature_id, `rule.name` = signature,
  `rule.category`, `rule.version` = rev. `event.severity` keeps Suricata's raw severity,
  where 1 is the HIGHEST and 3 (or 4) the lowest, the inverse of most scales, so compare
  with that in mind. The action (allowed/blocked) becomes event.type allowed/denied;
  MITRE ATT&CK tags in `alert.metadata` fill `threat.*`.
- dns: EVE v1 (one answer a record: `rrname`/`rdata` at the top), v2 (`answers` list or
  `grouped`) and v3 (`queries`/`answers` lists, `request`/`response`) all map to ECS
  `dns.*`.
- http, tls, fileinfo: `http.*`/`url.*`/`user_agent.*`, `tls.*`, `file.*`.
  An alert or fileinfo record carries its flow's http/dns/tls record too; that is
  mapped as well, but its HTTP status or DNS rcode does not become the event's outcome.
- anything else (anomaly, ssh, smb, stats, ...) is kept as Suricata wrote it.

Whatever has no ECS home stays under `suricata.eve.*`, in the shape EVE gave it (the
`flow_id` as a string, as it may exceed a signed 64-bit integer's range).
`event.action` is the event_type; `event.dataset` is "suricata.eve".
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from collectors.ecs_values import ip_address, transport_fields
from collectors.formats.json_lines import decode_json
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

CEE_PREFIX = "@cee:"
NANOSECONDS = 1_000_000_000
# event_type -> (event.category, event.type); alerts are classified by their action.
CLASSIFICATION: dict[str, tuple[list[str], list[str]]] = {
    "flow": (["network"], ["connection", "end"]),
    "netflow": (["network"], ["connection", "end"]),
    "dns": (["network"], ["protocol"]),
    "http": (["network", "web"], ["protocol", "access"]),
    "fileinfo": (["file"], ["info"]),
    "anomaly": (["network"], ["info"]),
    "drop": (["network"], ["denied"]),
    "stats": (["host"], ["info"]),
}
DEFAULT_CLASSIFICATION = (["network"], ["protocol"])
KINDS = {"alert": "alert", "stats": "metric"}
# EVE's DNS flag booleans that ECS lists in dns.header_flags.
DNS_HEADER_FLAGS = ("aa", "tc", "rd", "ra", "ad", "cd")
DNS_QUERY_TYPES = {"query": "query", "request": "query", "answer": "answer", "response": "answer"}
# alert.metadata keys (Emerging Threats / Suricata rule convention) -> ECS threat.* fields.
MITRE_METADATA = {
    "mitre_tactic_id": ("tactic", "id"),
    "mitre_tactic_name": ("tactic", "name"),
    "mitre_technique_id": ("technique", "id"),
    "mitre_technique_name": ("technique", "name"),
}
# "TLS 1.2", "SSLv3", "TLSv1", "TLS 1.3 draft-28" -> protocol and version number.
TLS_VERSION = re.compile(r"(?P<protocol>SSL|TLS|DTLS) ?v?(?P<number>\d+(?:\.\d+)?)")
CERTIFICATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z?")
DNS_ANSWER_FIELDS = {"rrname": "name", "rrtype": "type", "ttl": "ttl", "rdata": "data"}
# app_proto values that name no protocol.
NO_PROTOCOL = {"failed", "unknown", ""}


def sniff(record: Record) -> bool:
    """A JSON object with EVE's `event_type` and `timestamp` keys."""
    if isinstance(record, dict):
        return "event_type" in record and "timestamp" in record
    if '"event_type"' not in record or '"timestamp"' not in record:
        return False
    try:
        value = _decode(record)
    except ParseError:
        return False
    return "event_type" in value and "timestamp" in value


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One EVE record to ECS."""
    eve = dict(record) if isinstance(record, dict) else _decode(record)
    event_type = eve.pop("event_type", None)
    if not isinstance(event_type, str) or not event_type:
        raise ParseError("EVE record without an event_type", record)
    category, event_kind_type = CLASSIFICATION.get(event_type, DEFAULT_CLASSIFICATION)
    event: dict[str, Any] = {
        "kind": KINDS.get(event_type, "event"),
        "module": "suricata",
        "dataset": "suricata.eve",
        "category": list(category),
        "type": list(event_kind_type),
        "action": event_type,
    }
    document: dict[str, Any] = {
        "@timestamp": _timestamp(eve.pop("timestamp", None), context, record),
        "event": event,
        "observer": {"vendor": "OISF", "product": "Suricata", "type": "ids"},
    }
    _map_common(eve, document, record)
    if isinstance(eve.get("flow"), dict):
        eve["flow"] = _map_flow(dict(eve["flow"]), document, context, record)
    mapper = EVENT_MAPPERS.get(event_type)
    if mapper is not None and isinstance(eve.get(event_type), dict):
        eve[event_type] = mapper(dict(eve[event_type]), document)
    # Alerts and file events carry the app-layer record of their flow too; its HTTP
    # status or DNS rcode is context there, not the outcome of the event itself.
    outcome = event.get("outcome")
    for app_layer in ("http", "dns", "tls"):
        if app_layer != event_type and isinstance(eve.get(app_layer), dict):
            eve[app_layer] = EVENT_MAPPERS[app_layer](dict(eve[app_layer]), document)
    if outcome is None:
        event.pop("outcome", None)
    if "flow_id" in eve:
        eve["flow_id"] = str(eve["flow_id"])
    leftovers = {key: value for key, value in eve.items() if value not in (None, {}, [], "")}
    if leftovers:
        document["suricata"] = {"eve": leftovers}
    return document


def _decode(record: str) -> dict[str, Any]:
    line = record.lstrip("\ufeff \t")
    if line.startswith(CEE_PREFIX):
        line = line[len(CEE_PREFIX) :]
    value = decode_json(line)
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    return value


def _to_datetime(raw: Any, context: ParseContext, record: Record) -> datetime:
    if not isinstance(raw, str):
        raise ParseError(f"EVE timestamp is not a string: {raw!r}", record)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as error:
        raise ParseError(f"unreadable EVE timestamp {raw!r}", record) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)


def _timestamp(raw: Any, context: ParseContext, record: Record) -> str:
    return format_timestamp(_to_datetime(raw, context, record))


def _map_common(eve: dict[str, Any], document: dict[str, Any], record: Record) -> None:
    source: dict[str, Any] = {}
    destination: dict[str, Any] = {}
    network: dict[str, Any] = {}
    _put(source, "ip", _take_ip(eve, "src_ip"))
    _put(source, "port", _take_port(eve, "src_port", record))
    _put(destination, "ip", _take_ip(eve, "dest_ip"))
    _put(destination, "port", _take_port(eve, "dest_port", record))
    proto = _take_text(eve, "proto")
    if proto:
        network.update(transport_fields(proto))
    app_proto = eve.get("app_proto")
    if isinstance(app_proto, str) and app_proto not in NO_PROTOCOL:
        network["protocol"] = app_proto.lower()
        del eve["app_proto"]
    _put(network, "community_id", _take_text(eve, "community_id"))
    observer = document["observer"]
    _put(observer, "name", _take_text(eve, "host"))
    interface = _take_text(eve, "in_iface")
    if interface:
        observer["ingress"] = {"interface": {"name": interface}}
    if source:
        document["source"] = source
    if destination:
        document["destination"] = destination
    if network:
        document["network"] = network


def _map_flow(
    flow: dict[str, Any], document: dict[str, Any], context: ParseContext, record: Record
) -> dict[str, Any]:
    source = document.setdefault("source", {})
    destination = document.setdefault("destination", {})
    _put(source, "bytes", _take_count(flow, "bytes_toserver"))
    _put(source, "packets", _take_count(flow, "pkts_toserver"))
    _put(destination, "bytes", _take_count(flow, "bytes_toclient"))
    _put(destination, "packets", _take_count(flow, "pkts_toclient"))
    network = document.setdefault("network", {})
    if "bytes" in source and "bytes" in destination:
        network["bytes"] = source["bytes"] + destination["bytes"]
    if "packets" in source and "packets" in destination:
        network["packets"] = source["packets"] + destination["packets"]
    for part in ("source", "destination", "network"):
        if not document[part]:
            del document[part]
    event = document["event"]
    start = end = None
    if isinstance(flow.get("start"), str):
        start = _to_datetime(flow.pop("start"), context, record)
        event["start"] = format_timestamp(start)
    if isinstance(flow.get("end"), str):
        end = _to_datetime(flow.pop("end"), context, record)
        event["end"] = format_timestamp(end)
    if start is not None and end is not None:
        event["duration"] = round((end - start).total_seconds() * NANOSECONDS)
    return flow


def _map_alert(alert: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    signature_id = alert.get("signature_id")
    if isinstance(signature_id, int | str) and not isinstance(signature_id, bool):
        rule["id"] = str(signature_id)
        del alert["signature_id"]
    _put(rule, "name", _take_text(alert, "signature"))
    _put(rule, "category", _take_text(alert, "category"))
    revision = alert.get("rev")
    if isinstance(revision, int | str) and not isinstance(revision, bool):
        rule["version"] = str(revision)
        del alert["rev"]
    if rule:
        document["rule"] = rule
    if "name" in rule:
        document["message"] = rule["name"]
    event = document["event"]
    _put(event, "severity", _take_count(alert, "severity"))
    action = alert.get("action")
    if action == "allowed":
        event["type"] = ["allowed"]
    elif action == "blocked":
        event["type"] = ["denied"]
    else:
        event["type"] = ["info"]
    event["category"] = ["network", "intrusion_detection"]
    metadata = alert.get("metadata")
    if isinstance(metadata, dict):
        threat = _threat(metadata)
        if threat:
            document["threat"] = threat
    return alert


def _threat(metadata: dict[str, Any]) -> dict[str, Any]:
    threat: dict[str, Any] = {}
    for key, (part, leaf) in MITRE_METADATA.items():
        values = metadata.get(key)
        if isinstance(values, str):
            values = [values]
        if isinstance(values, list):
            names = [value for value in values if isinstance(value, str) and value]
            if names:
                threat.setdefault(part, {})[leaf] = names
    if threat:
        threat["framework"] = "MITRE ATT&CK"
    return threat


def _map_dns(dns_record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    dns: dict[str, Any] = {}
    kind = dns_record.get("type")
    if isinstance(kind, str) and kind in DNS_QUERY_TYPES:
        dns["type"] = DNS_QUERY_TYPES[kind]
        del dns_record["type"]
    _put(dns, "id", _take_identifier(dns_record, "id"))
    question: dict[str, Any] = {}
    # v3 and alert records list the questions; v1/v2 put the one name at the top.
    queries = dns_record.get("queries", dns_record.get("query"))
    first_query = queries[0] if isinstance(queries, list) and queries else None
    if isinstance(first_query, dict):
        _put(question, "name", _text(first_query.get("rrname")))
        _put(question, "type", _text(first_query.get("rrtype")))
        if "id" not in dns:
            _put(dns, "id", _identifier(first_query.get("id")))
        dns.setdefault("type", "query")
    answers: list[dict[str, Any]] = []
    # v1 writes every answer as a record of its own. The first answer's name is the
    # queried name (a CNAME chain starts there); its type need not be the query type.
    if "rdata" in dns_record:
        single = {
            key: dns_record.pop(key)
            for key in ("rrname", "rrtype", "ttl", "rdata")
            if key in dns_record
        }
        answers.append(_dns_answer(single))
        if "name" not in question:
            _put(question, "name", answers[0].get("name"))
    else:
        if "name" not in question:
            _put(question, "name", _take_text(dns_record, "rrname"))
        if "type" not in question:
            _put(question, "type", _take_text(dns_record, "rrtype"))
    listed = dns_record.get("answers")
    if isinstance(listed, list) and all(isinstance(answer, dict) for answer in listed):
        answers.extend(_dns_answer(answer) for answer in listed)
        del dns_record["answers"]
    if answers:
        dns["answers"] = answers
    resolved = [
        answer["data"]
        for answer in answers
        if answer.get("type") in ("A", "AAAA") and _ip(answer.get("data"))
    ]
    grouped = dns_record.get("grouped")
    if isinstance(grouped, dict):
        for rrtype in ("A", "AAAA"):
            values = grouped.get(rrtype)
            if isinstance(values, list):
                resolved.extend(value for value in values if _ip(value))
    if resolved:
        dns["resolved_ip"] = list(dict.fromkeys(resolved))
    if question:
        dns["question"] = question
    rcode = _take_text(dns_record, "rcode")
    if rcode:
        dns["response_code"] = rcode
        document["event"]["outcome"] = "success" if rcode == "NOERROR" else "failure"
        dns["type"] = "answer"
    flags = [flag.upper() for flag in DNS_HEADER_FLAGS if dns_record.get(flag) is True]
    if flags:
        dns["header_flags"] = flags
    for flag in DNS_HEADER_FLAGS:
        if isinstance(dns_record.get(flag), bool):
            del dns_record[flag]
    if dns:
        document["dns"] = dns
    return dns_record


def _dns_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """An EVE answer in ECS terms; an odd-typed part keeps its EVE name."""
    mapped: dict[str, Any] = {}
    for key, value in answer.items():
        ecs_name = DNS_ANSWER_FIELDS.get(key)
        if ecs_name == "ttl" and _count(value) is not None:
            mapped["ttl"] = value
        elif ecs_name and ecs_name != "ttl" and _text(value):
            mapped[ecs_name] = value
        else:
            # SOA, SSHFP, SRV answers carry a structured record instead of rdata.
            mapped[key] = value
    return mapped


def _map_http(http_record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    http: dict[str, Any] = {}
    request: dict[str, Any] = {}
    response: dict[str, Any] = {}
    _put(request, "method", _take_text(http_record, "http_method"))
    _put(request, "referrer", _take_text(http_record, "http_refer"))
    _put(response, "mime_type", _take_text(http_record, "http_content_type"))
    status = http_record.get("status")
    status_code = _count(status) or (
        int(status) if isinstance(status, str) and status.isdigit() else None
    )
    if status_code is not None and status_code < 1000:
        response["status_code"] = status_code
        document["event"]["outcome"] = "success" if status_code < 400 else "failure"
        del http_record["status"]
    length = _take_count(http_record, "length")
    if length is not None:
        response["body"] = {"bytes": length}
    protocol = http_record.get("protocol")
    if isinstance(protocol, str) and protocol.upper().startswith("HTTP/"):
        http["version"] = protocol[5:]
        del http_record["protocol"]
    if request:
        http.setdefault("request", {}).update(request)
    if response:
        http.setdefault("response", {}).update(response)
    if http:
        document.setdefault("http", {}).update(http)
    user_agent = _take_text(http_record, "http_user_agent")
    if user_agent:
        document["user_agent"] = {"original": user_agent}
    url = _url(
        _take_text(http_record, "hostname"), _count(http_record.get("http_port")), http_record
    )
    if url:
        document.setdefault("url", {}).update(url)
    return http_record


def _url(hostname: str | None, port: int | None, http_record: dict[str, Any]) -> dict[str, Any]:
    url: dict[str, Any] = {}
    _put(url, "domain", hostname)
    target = _take_text(http_record, "url")
    if not target:
        return url
    url["original"] = target
    if target.startswith("/"):
        path, question_mark, query = target.partition("?")
        url["path"] = path
        if question_mark and query:
            url["query"] = query
        if hostname:
            authority = f"{hostname}:{port}" if port is not None else hostname
            url["full"] = f"http://{authority}{target}"
    elif "://" in target:
        try:
            split = urlsplit(target)
        except ValueError:
            return url
        url["full"] = target
        if split.hostname:
            url.setdefault("domain", split.hostname)
        _put(url, "path", split.path or None)
        _put(url, "query", split.query or None)
    return url


def _map_tls(tls_record: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    tls: dict[str, Any] = {}
    client: dict[str, Any] = {}
    server: dict[str, Any] = {}
    version = tls_record.get("version")
    match = TLS_VERSION.match(version) if isinstance(version, str) else None
    if match:
        tls["version_protocol"] = match["protocol"].lower()
        number = match["number"]
        tls["version"] = number if "." in number else f"{number}.0"
        if match.end() == len(version):  # keep "TLS 1.3 draft-28" whole, as written
            del tls_record["version"]
    _put(client, "server_name", _take_text(tls_record, "sni"))
    _put(server, "subject", _take_text(tls_record, "subject"))
    _put(server, "issuer", _take_text(tls_record, "issuerdn"))
    fingerprint = _take_text(tls_record, "fingerprint")
    if fingerprint:
        server["hash"] = {"sha1": fingerprint.replace(":", "").upper()}
    for eve_name, ecs_name in (("notbefore", "not_before"), ("notafter", "not_after")):
        value = tls_record.get(eve_name)
        if isinstance(value, str) and CERTIFICATE_TIME.fullmatch(value):
            # Certificate validity is written in UTC without a zone.
            server[ecs_name] = value if value.endswith("Z") else f"{value}Z"
            del tls_record[eve_name]
    for eve_name, target, ecs_name in (("ja3", client, "ja3"), ("ja3s", server, "ja3s")):
        fingerprints = tls_record.get(eve_name)
        if isinstance(fingerprints, dict):
            _put(target, ecs_name, _text(fingerprints.get("hash")))
    if client:
        tls["client"] = client
    if server:
        tls["server"] = server
    if tls:
        document["tls"] = tls
    return tls_record


def _map_fileinfo(fileinfo: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    file: dict[str, Any] = {}
    filename = _take_text(fileinfo, "filename")
    if filename:
        file["path"] = filename
        name = filename.rstrip("/").rsplit("/", 1)[-1]
        if name:
            file["name"] = name
    _put(file, "size", _take_count(fileinfo, "size"))
    hashes: dict[str, Any] = {}
    for name in ("md5", "sha1", "sha256"):
        _put(hashes, name, _take_text(fileinfo, name))
    if hashes:
        file["hash"] = hashes
    if file:
        document["file"] = file
    return fileinfo


EVENT_MAPPERS = {
    "alert": _map_alert,
    "dns": _map_dns,
    "http": _map_http,
    "tls": _map_tls,
    "fileinfo": _map_fileinfo,
}

# EVE can be hand-written or damaged: a value of the wrong type stays under suricata.eve.


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    return None


def _identifier(value: Any) -> str | None:
    if isinstance(value, int | str) and not isinstance(value, bool) and value != "":
        return str(value)
    return None


def _ip(value: Any) -> str | None:
    return ip_address(value) if isinstance(value, str) else None


def _take_text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if not isinstance(value, str):
        return None
    del record[name]  # an empty string is a placeholder: drop it too
    return value or None


def _take_count(record: dict[str, Any], name: str) -> int | None:
    value = _count(record.get(name))
    if value is not None:
        del record[name]
    return value


def _take_identifier(record: dict[str, Any], name: str) -> str | None:
    value = _identifier(record.get(name))
    if value is not None:
        del record[name]
    return value


def _take_ip(record: dict[str, Any], name: str) -> str | None:
    value = _ip(record.get(name))
    if value is not None:
        del record[name]
    return value


def _take_port(eve: dict[str, Any], name: str, record: Record) -> int | None:
    if name not in eve:
        return None
    value = eve.pop(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ParseError(f"EVE {name} is not a port number: {value!r}", record)
    return value


FORMAT = LogFormat(
    name="suricata",
    description="Suricata EVE JSON: alerts, flows, dns (v1-v3), http, tls, fileinfo and other event types",
    sniff=sniff,
    parse=parse,
    priority=30,
)
