"""Kubernetes audit events: sniffing, verbs, outcome, objectRef, bounded mapping."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format
from collectors.formats.k8s_audit import FORMAT, parse, sniff
from collectors.log_format import ParseContext, ParseError
from tests.hostile_records import assert_only_parse_errors, with_each_value_replaced

EVENT = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "RequestResponse",
    "auditID": "a-1",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/prod/secrets/db-password",
    "verb": "get",
    "user": {"username": "dev", "groups": ["devs", "system:authenticated"]},
    "sourceIPs": ["10.1.2.3"],
    "userAgent": "kubectl/v1.29.2",
    "objectRef": {
        "resource": "secrets",
        "namespace": "prod",
        "name": "db-password",
        "apiVersion": "v1",
    },
    "responseStatus": {"metadata": {}, "code": 403},
    "responseObject": {"data": {"password": "c2VjcmV0"}},
    "requestReceivedTimestamp": "2026-11-28T02:00:00.000000Z",
    "stageTimestamp": "2026-11-28T02:00:00.002000Z",
    "annotations": {"authorization.k8s.io/decision": "forbid"},
}


def context() -> ParseContext:
    return ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


def test_sniff() -> None:
    assert sniff(json.dumps(EVENT))
    assert sniff(EVENT)
    assert not sniff('{"kind":"Event","apiVersion":"v1","reason":"Scheduled"}')
    assert not sniff('{"kind":"Pod","apiVersion":"v1"}')
    assert not sniff("audit.k8s.io/v1 but not JSON")


def test_detect_format_prefers_k8s_audit_over_generic_json() -> None:
    assert detect_format([json.dumps(EVENT)]) is FORMAT


def test_mapping() -> None:
    document = parse(json.dumps(EVENT), context())
    assert document["@timestamp"] == "2026-11-28T02:00:00.000Z"
    event = document["event"]
    assert (event["action"], event["outcome"], event["dataset"]) == (
        "get",
        "failure",
        "kubernetes.audit",
    )
    assert event["type"] == ["access", "denied"]
    assert event["duration"] == 2_000_000
    assert document["user"]["name"] == "dev"
    assert document["user"]["group"]["name"] == ["devs", "system:authenticated"]
    assert document["source"]["ip"] == "10.1.2.3"
    assert document["orchestrator"]["resource"] == {"type": "secrets", "name": "db-password"}
    audit = document["kubernetes"]["audit"]
    assert audit["objectRef"]["namespace"] == "prod"
    # Arbitrary objects are one string, annotation keys lose their dots.
    assert audit["responseObject"] == '{"data":{"password":"c2VjcmV0"}}'
    assert audit["annotations"] == {"authorization_k8s_io/decision": "forbid"}


def test_request_received_stage_has_no_outcome() -> None:
    record = {**EVENT, "stage": "RequestReceived"}
    del record["responseStatus"]
    document = parse(record, context())
    assert "outcome" not in document["event"]


def test_event_list_is_refused_with_instructions() -> None:
    with pytest.raises(ParseError, match="feed its items one by one"):
        parse({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [EVENT]}, context())


def test_hostile_records_only_raise_parse_error() -> None:
    assert_only_parse_errors(parse, with_each_value_replaced(EVENT), context())
