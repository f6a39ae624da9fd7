"""AWS CloudTrail and Alibaba Cloud ActionTrail records, one record per line (or dict).

A CloudTrail log file is a single `{"Records": [...]}` object; its records must be fed
one by one (the input layer splits JSON arrays, not this wrapper), so a wrapper is
refused with a ParseError that says so. ActionTrail records have the same shape
(`eventSource`, `eventName`, `sourceIpAddress`, `userIdentity`) and are told apart by
`acsRegion`: they get `cloud.provider` "alibaba_cloud", dataset
"alibaba_cloud.actiontrail" and the namespace `alibaba_cloud.actiontrail.*`, CloudTrail
records "aws", "aws.cloudtrail" and `aws.cloudtrail.*`.

Mapping: eventTime -> @timestamp, eventSource -> event.provider, eventName ->
event.action, the caller's address -> source.ip (source.address and source.domain when
it is a service name such as "ec2.amazonaws.com", source.address alone for
"AWS Internal"), userIdentity -> user.name/user.id (the session name for an assumed
role, whose role goes to user.roles), the region -> cloud.region and the account the
trail belongs to (recipientAccountId, else the caller's account) -> cloud.account.id.
errorCode/errorMessage -> error.code/error.message and event.outcome "failure" (a
console sign-in that reports "Failure" too). requestParameters, responseElements and the
other free-form objects are kept as compact JSON strings, because their keys differ for
every API and would otherwise explode the index mapping. eventID stays in the
namespace: event.id belongs to the pipeline.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from collectors.ecs_values import ip_address
from collectors.formats.json_lines import decode_json
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

SIGN_IN_ACTIONS = {"ConsoleLogin": "start", "ConsoleSignin": "start", "ConsoleSignout": "end"}
IAM_PROVIDERS = {"iam.amazonaws.com", "ram.aliyuncs.com"}
READ_VERBS = ("Describe", "Get", "List", "Head", "Lookup", "Search", "Select", "Scan", "Query")
CREATE_VERBS = ("Create", "Run", "Allocate", "Import", "Register", "Launch", "Issue", "Copy")
DELETE_VERBS = ("Delete", "Terminate", "Remove", "Release", "Deregister", "Deactivate")
DENIAL_CODES = ("AccessDenied", "Unauthorized", "Forbidden", "NoPermission")
# Free-form objects: stored as compact JSON strings under these names.
JSON_STRING_FIELDS = {
    "requestParameters": "request_parameters",
    "responseElements": "response_elements",
    "additionalEventData": "additional_eventdata",
    "serviceEventDetails": "service_event_details",
    "referencedResources": "referenced_resources",
    "edgeDeviceDetails": "edge_device_details",
    "insightDetails": "insight_details",
}
# Fields consumed into ECS (or handled on their own) rather than copied to the namespace.
MAPPED_FIELDS = {
    "eventTime",
    "eventSource",
    "eventName",
    "sourceIPAddress",
    "sourceIpAddress",
    "userAgent",
    "awsRegion",
    "acsRegion",
    "userIdentity",
    "errorCode",
    "errorMessage",
    "recipientAccountId",
    "resources",
    "tlsDetails",
    *JSON_STRING_FIELDS,
}
CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def sniff(record: Record) -> bool:
    """A JSON object with CloudTrail's eventTime, eventSource and eventName."""
    if isinstance(record, dict):
        return _is_trail_record(record)
    if '"eventSource"' not in record or '"eventTime"' not in record:
        return False
    try:
        value = decode_json(record)
    except ParseError:
        return False
    return isinstance(value, dict) and _is_trail_record(value)


def _is_trail_record(record: dict[str, Any]) -> bool:
    return "eventTime" in record and "eventSource" in record and "eventName" in record


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One CloudTrail or ActionTrail record to ECS."""
    trail = record if isinstance(record, dict) else _decode(record)
    if isinstance(trail.get("Records"), list):
        raise ParseError("CloudTrail file wrapper: feed its Records one by one", record)
    for required in ("eventTime", "eventSource", "eventName"):
        if not isinstance(trail.get(required), str) or not trail[required]:
            raise ParseError(f"trail record without {required}", record)
    alibaba = "acsRegion" in trail
    provider, dataset = (
        ("alibaba_cloud", "alibaba_cloud.actiontrail") if alibaba else ("aws", "aws.cloudtrail")
    )
    namespace: dict[str, Any] = {}
    event: dict[str, Any] = {
        "kind": "event",
        "module": provider,
        "dataset": dataset,
        "provider": trail["eventSource"],
        "action": trail["eventName"],
    }
    document: dict[str, Any] = {
        "@timestamp": _timestamp(trail["eventTime"], context, record),
        "event": event,
    }
    cloud: dict[str, Any] = {"provider": provider}
    region = trail.get("acsRegion" if alibaba else "awsRegion")
    if isinstance(region, str) and region:
        cloud["region"] = region
    _map_source(trail.get("sourceIPAddress", trail.get("sourceIpAddress")), document)
    user_agent = trail.get("userAgent")
    if isinstance(user_agent, str) and user_agent:
        document["user_agent"] = {"original": user_agent}
    identity = trail.get("userIdentity")
    caller_account = None
    if isinstance(identity, dict):
        caller_account = _map_identity(identity, document, namespace)
    elif identity is not None:
        raise ParseError(f"userIdentity is not an object: {identity!r}", record)
    recipient = _identifier(trail.get("recipientAccountId"))
    account = recipient or caller_account
    if account:
        cloud["account"] = {"id": account}
    if recipient:
        namespace["recipient_account_id"] = recipient
    document["cloud"] = cloud
    failed = _map_error(trail, document)
    _classify(trail, event, failed, namespace)
    _keep_rest(trail, namespace)
    document[provider] = {dataset.split(".", 1)[1]: namespace}
    return document


def _decode(record: str) -> dict[str, Any]:
    value = decode_json(record)
    if not isinstance(value, dict):
        raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
    return value


def _timestamp(raw: str, context: ParseContext, record: Record) -> str:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as error:
        raise ParseError(f"unreadable eventTime {raw!r}", record) from error
    return format_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=context.timezone))


def _map_source(address: Any, document: dict[str, Any]) -> None:
    if not isinstance(address, str) or not address:
        return
    if ip_address(address):
        document["source"] = {"ip": address, "address": address}
        return
    source: dict[str, Any] = {"address": address}
    # A service principal ("ec2.amazonaws.com") is a domain; "AWS Internal" is not.
    if "." in address and " " not in address:
        source["domain"] = address
    document["source"] = source


def _map_identity(
    identity: dict[str, Any], document: dict[str, Any], namespace: dict[str, Any]
) -> str | None:
    """user.* from userIdentity; returns the caller's account id."""
    user: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    identity_type = identity.get("type")
    arn = identity.get("arn")
    session_issuer: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    context = identity.get("sessionContext")
    if isinstance(context, dict):
        if isinstance(context.get("sessionIssuer"), dict):
            session_issuer = context["sessionIssuer"]
        if isinstance(context.get("attributes"), dict):
            attributes = context["attributes"]
    name = _text(identity.get("userName"))
    if not name and identity_type in ("AssumedRole", "assumed-role") and _text(arn):
        name = arn.rsplit("/", 1)[-1]  # ...:assumed-role/<role>/<session name>
    if not name and identity_type in ("Root", "root-account"):
        name = "root"
    if name:
        user["name"] = name
    _put(user, "id", _identifier(identity.get("principalId")))
    role = _text(session_issuer.get("userName"))
    if role:
        user["roles"] = [role]
    if user:
        document["user"] = user
    for key, value in identity.items():
        if key in ("sessionContext", "userName", "principalId") or value in (None, "", {}):
            continue
        kept[_snake(key)] = _plain(value)
    if session_issuer:
        kept["session_context"] = {
            "session_issuer": {_snake(k): _plain(v) for k, v in session_issuer.items()}
        }
    if attributes:
        session_context = kept.setdefault("session_context", {})
        mfa = attributes.get("mfaAuthenticated")
        if mfa is not None:
            session_context["mfa_authenticated"] = _boolean(mfa)
        if attributes.get("creationDate"):
            session_context["creation_date"] = attributes["creationDate"]
    if kept:
        namespace["user_identity"] = kept
    return _identifier(identity.get("accountId"))


def _map_error(trail: dict[str, Any], document: dict[str, Any]) -> bool:
    """error.* and event.outcome; True when the call failed."""
    code = _identifier(trail.get("errorCode"))
    message = _identifier(trail.get("errorMessage"))
    error: dict[str, Any] = {}
    _put(error, "code", code)
    _put(error, "message", message)
    if error:
        document["error"] = error
    response = trail.get("responseElements")
    sign_in_failed = isinstance(response, dict) and response.get("ConsoleLogin") == "Failure"
    failed = bool(code) or sign_in_failed
    document["event"]["outcome"] = "failure" if failed else "success"
    return failed


def _classify(
    trail: dict[str, Any], event: dict[str, Any], failed: bool, namespace: dict[str, Any]
) -> None:
    action = trail["eventName"]
    read_only = trail.get("readOnly")
    if read_only is not None:
        namespace["read_only"] = _boolean(read_only)
    if action in SIGN_IN_ACTIONS:
        event["category"] = ["authentication"]
        event["type"] = [SIGN_IN_ACTIONS[action]]
        return
    if action.startswith(READ_VERBS) or namespace.get("read_only") is True:
        verb_type = "access"
    elif action.startswith(CREATE_VERBS):
        verb_type = "creation"
    elif action.startswith(DELETE_VERBS):
        verb_type = "deletion"
    else:
        verb_type = "change"
    if trail["eventSource"] in IAM_PROVIDERS:
        event["category"] = ["iam"]
        event["type"] = ["info" if verb_type == "access" else verb_type]
    else:
        event["category"] = ["api"]
        event["type"] = [verb_type]
    code = str(trail.get("errorCode") or "")
    if failed and any(marker in code for marker in DENIAL_CODES):
        event["type"].append("denied")


def _keep_rest(trail: dict[str, Any], namespace: dict[str, Any]) -> None:
    for key, name in JSON_STRING_FIELDS.items():
        value = trail.get(key)
        if value is not None and value != {}:
            namespace[name] = _compact_json(value)
    resources = trail.get("resources")
    if isinstance(resources, list):
        namespace["resources"] = [
            {_snake(k): _plain(v) for k, v in item.items()} if isinstance(item, dict) else item
            for item in resources
        ]
    tls_details = trail.get("tlsDetails")
    if isinstance(tls_details, dict):
        namespace["tls_details"] = {_snake(k): _plain(v) for k, v in tls_details.items()}
    for key, value in trail.items():
        if key in MAPPED_FIELDS or key == "readOnly" or value is None or value == "":
            continue
        namespace[_snake(key)] = _plain(value)


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        target[key] = value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _identifier(value: Any) -> str | None:
    """A string or number as a keyword string; anything else (objects, booleans) is None."""
    if isinstance(value, int | str) and not isinstance(value, bool) and value != "":
        return str(value)
    return None


def _plain(value: Any) -> Any:
    """Scalars as they are; nested objects as JSON strings (their keys are unbounded)."""
    if isinstance(value, dict | list):
        return _compact_json(value)
    return value


def _compact_json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson refuses integers beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


@lru_cache(maxsize=1024)
def _snake(name: str) -> str:
    return CAMEL_HUMP.sub("_", name).lower()


FORMAT = LogFormat(
    name="cloudtrail",
    description="AWS CloudTrail records (and Alibaba Cloud ActionTrail), one JSON record per line",
    sniff=sniff,
    parse=parse,
    priority=30,
)
