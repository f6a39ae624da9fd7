"""Kubernetes API server audit events (`audit.k8s.io/v1` and `v1beta1`), one per line.

The API server's log backend writes one `{"kind":"Event",...}` object a line; a webhook
batch (`"kind":"EventList"`) must be split into its items first and is refused with a
ParseError that says so.

Mapping: verb -> event.action, the requesting user -> user.name/user.id and its groups
-> user.group.name, an impersonated user -> user.effective.name, the first of
`sourceIPs` -> source.ip, requestURI -> url.*, responseStatus.code ->
http.response.status_code and event.outcome (below 400 is success; a record of the
RequestReceived stage has no status and so no outcome), objectRef -> orchestrator.*
as well as `kubernetes.audit.objectRef`. @timestamp is when the request was received;
the stage's time is event.end. Everything else is kept under `kubernetes.audit.*`
with the API's own (camelCase) names; requestObject and responseObject are compact JSON
strings and the dots of annotation keys become underscores
(`authorization_k8s_io/decision`), so that arbitrary objects cannot explode the index
mapping.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from collectors.ecs_values import ip_address
from collectors.formats.json_lines import decode_json
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

NANOSECONDS = 1_000_000_000
VERB_TYPES = {
    "get": "access",
    "list": "access",
    "watch": "access",
    "create": "creation",
    "update": "change",
    "patch": "change",
    "delete": "deletion",
    "deletecollection": "deletion",
}
# Fields mapped to ECS or rewritten; the rest are copied to kubernetes.audit as they are.
HANDLED_FIELDS = {
    "kind",
    "apiVersion",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "requestObject",
    "responseObject",
    "annotations",
}


def sniff(record: Record) -> bool:
    """A JSON object of kind Event from the audit.k8s.io API group."""
    if isinstance(record, dict):
        return _is_audit_event(record)
    if '"audit.k8s.io/' not in record:
        return False
    try:
        value = decode_json(record)
    except ParseError:
        return False
    return isinstance(value, dict) and _is_audit_event(value)


def _is_audit_event(record: dict[str, Any]) -> bool:
    api_version = record.get("apiVersion")
    return (
        record.get("kind") in ("Event", "EventList")
        and isinstance(api_version, str)
        and api_version.startswith("audit.k8s.io/")
    )


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One Kubernetes audit event to ECS."""
    audit = record if isinstance(record, dict) else _decode(record)
    kind = audit.get("kind")
    if kind == "EventList":
        raise ParseError("Kubernetes audit EventList: feed its items one by one", record)
    if kind != "Event" or not str(audit.get("apiVersion", "")).startswith("audit.k8s.io/"):
        raise ParseError("not a Kubernetes audit Event (kind/apiVersion)", record)
    received = _time(audit, ("requestReceivedTimestamp", "timestamp"), context, record)
    stage_time = _time(audit, ("stageTimestamp",), context, record)
    if received is None:
        received = stage_time
    if received is None:
        raise ParseError("Kubernetes audit event without requestReceivedTimestamp", record)
    verb = audit.get("verb")
    event: dict[str, Any] = {
        "kind": "event",
        "module": "kubernetes",
        "dataset": "kubernetes.audit",
        "category": ["api"],
        "type": [VERB_TYPES.get(verb, "info") if isinstance(verb, str) else "info"],
        "start": format_timestamp(received),
    }
    if isinstance(verb, str) and verb:
        event["action"] = verb
    document: dict[str, Any] = {"@timestamp": format_timestamp(received), "event": event}
    if stage_time is not None:
        event["end"] = format_timestamp(stage_time)
        event["duration"] = round((stage_time - received).total_seconds() * NANOSECONDS)
    audit_fields: dict[str, Any] = {}
    _map_users(audit, document, audit_fields)
    _map_source(audit, document, audit_fields)
    _map_request(audit, document)
    _map_status(audit, document)
    _map_object(audit, document)
    for key, value in audit.items():
        if key not in HANDLED_FIELDS and value is not None:
            audit_fields[key] = value
    for key in ("requestObject", "responseObject"):
        if audit.get(key) is not None:
            audit_fields[key] = _compact_json(audit[key])
    annotations = audit.get("annotations")
    if isinstance(annotations, dict):
        audit_fields["annotations"] = {
            str(key).replace(".", "_"): value
            for key, value in annotations.items()
            if value not in (None, "")
        }
    document["kubernetes"] = {"audit": audit_fields}
    return document


def _decode(record: str) -> dict[str, Any]:
    value = decode_json(record)
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    return value


def _time(
    audit: dict[str, Any], names: tuple[str, ...], context: ParseContext, record: Record
) -> datetime | None:
    for name in names:
        raw = audit.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise ParseError(f"Kubernetes audit {name} is not a string: {raw!r}", record)
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as error:
            raise ParseError(f"unreadable Kubernetes audit {name} {raw!r}", record) from error
        return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)
    return None


def _map_users(
    audit: dict[str, Any], document: dict[str, Any], audit_fields: dict[str, Any]
) -> None:
    user_info = audit.get("user")
    user: dict[str, Any] = {}
    if isinstance(user_info, dict):
        _put(user, "name", _text(user_info.get("username")))
        _put(user, "id", _text(user_info.get("uid")))
        groups = user_info.get("groups")
        if isinstance(groups, list):
            names = [group for group in groups if isinstance(group, str) and group]
            if names:
                user["group"] = {"name": names}
        audit_fields["user"] = _user_fields(user_info)
    impersonated = audit.get("impersonatedUser")
    if isinstance(impersonated, dict):
        name = _text(impersonated.get("username"))
        if name:
            user["effective"] = {"name": name}
        audit_fields["impersonatedUser"] = _user_fields(impersonated)
    if user:
        document["user"] = user


def _user_fields(user_info: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in user_info.items() if key != "extra"}
    # `extra` keys are arbitrary (and dotted): one JSON string instead of a field each.
    if user_info.get("extra"):
        fields["extra"] = _compact_json(user_info["extra"])
    return fields


def _map_source(
    audit: dict[str, Any], document: dict[str, Any], audit_fields: dict[str, Any]
) -> None:
    source_ips = audit.get("sourceIPs")
    if isinstance(source_ips, list) and source_ips:
        audit_fields["sourceIPs"] = source_ips
        first = source_ips[0]
        if isinstance(first, str) and first:
            document["source"] = {"address": first}
            if ip_address(first):
                document["source"]["ip"] = first
    user_agent = audit.get("userAgent")
    if isinstance(user_agent, str) and user_agent:
        document["user_agent"] = {"original": user_agent}


def _map_request(audit: dict[str, Any], document: dict[str, Any]) -> None:
    uri = audit.get("requestURI")
    if not isinstance(uri, str) or not uri:
        return
    url: dict[str, Any] = {"original": uri}
    try:
        split = urlsplit(uri)
    except ValueError:
        split = None
    if split is not None:
        if split.path:
            url["path"] = split.path
        if split.query:
            url["query"] = split.query
    document["url"] = url


def _map_status(audit: dict[str, Any], document: dict[str, Any]) -> None:
    status = audit.get("responseStatus")
    if not isinstance(status, dict):
        return
    code = status.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 999:
        document["http"] = {"response": {"status_code": code}}
        event = document["event"]
        event["outcome"] = "success" if code < 400 else "failure"
        if code in (401, 403):
            event["type"].append("denied")


def _map_object(audit: dict[str, Any], document: dict[str, Any]) -> None:
    object_ref = audit.get("objectRef")
    orchestrator: dict[str, Any] = {"type": "kubernetes"}
    if isinstance(object_ref, dict):
        _put(orchestrator, "namespace", _text(object_ref.get("namespace")))
        resource: dict[str, Any] = {}
        _put(resource, "type", _text(object_ref.get("resource")))
        _put(resource, "name", _text(object_ref.get("name")))
        if resource:
            orchestrator["resource"] = resource
        api_version = _text(object_ref.get("apiVersion"))
        if api_version:
            group = _text(object_ref.get("apiGroup"))
            orchestrator["api_version"] = f"{group}/{api_version}" if group else api_version
    document["orchestrator"] = orchestrator


def _compact_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson refuses integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


FORMAT = LogFormat(
    name="k8s_audit",
    description="Kubernetes API server audit events (audit.k8s.io Event objects, one per line)",
    sniff=sniff,
    parse=parse,
    priority=30,
)
