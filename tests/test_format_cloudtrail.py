"""CloudTrail / ActionTrail: sniffing, the Records wrapper, identities, outcome, namespaces."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format
from collectors.formats.cloudtrail import FORMAT, parse, sniff
from collectors.log_format import ParseContext, ParseError
from tests.hostile_records import assert_only_parse_errors, with_each_value_replaced

RECORD = {
    "eventVersion": "1.08",
    "userIdentity": {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLE:session-7",
        "arn": "arn:aws:sts::111122223333:assumed-role/Admin/session-7",
        "accountId": "111122223333",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "userName": "Admin"},
            "attributes": {"mfaAuthenticated": "true"},
        },
    },
    "eventTime": "2026-11-28T02:00:00Z",
    "eventSource": "s3.amazonaws.com",
    "eventName": "DeleteBucket",
    "awsRegion": "cn-north-1",
    "sourceIPAddress": "198.51.100.1",
    "userAgent": "aws-cli/2",
    "requestParameters": {"bucketName": "evidence"},
    "responseElements": None,
    "eventID": "e-1",
    "readOnly": False,
    "recipientAccountId": "444455556666",
}


def context() -> ParseContext:
    return ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


def test_sniff() -> None:
    assert sniff(json.dumps(RECORD))
    assert sniff(RECORD)
    assert not sniff('{"eventTime": "2026-11-28T02:00:00Z", "message": "generic"}')
    assert not sniff('{"timestamp":"2026-11-28T10:00:00+0800","event_type":"alert"}')
    assert not sniff("eventSource eventTime eventName")


def test_detect_format_prefers_cloudtrail_over_generic_json() -> None:
    assert detect_format([json.dumps(RECORD)]) is FORMAT


def test_mapping() -> None:
    document = parse(json.dumps(RECORD), context())
    assert document["@timestamp"] == "2026-11-28T02:00:00.000Z"
    assert document["event"]["provider"] == "s3.amazonaws.com"
    assert document["event"]["action"] == "DeleteBucket"
    assert document["event"]["type"] == ["deletion"]
    assert document["event"]["outcome"] == "success"
    assert document["user"] == {
        "name": "session-7",
        "id": "AROAEXAMPLE:session-7",
        "roles": ["Admin"],
    }
    # The account the trail belongs to, not the caller's.
    assert document["cloud"] == {
        "provider": "aws",
        "region": "cn-north-1",
        "account": {"id": "444455556666"},
    }
    trail = document["aws"]["cloudtrail"]
    assert trail["request_parameters"] == '{"bucketName":"evidence"}'
    assert trail["user_identity"]["session_context"]["mfa_authenticated"] is True
    assert trail["event_id"] == "e-1"
    assert "id" not in document["event"]


def test_error_means_failure_and_access_denied_is_denied() -> None:
    document = parse(
        {**RECORD, "errorCode": "AccessDenied", "errorMessage": "not authorized"}, context()
    )
    assert document["event"]["outcome"] == "failure"
    assert document["event"]["type"] == ["deletion", "denied"]
    assert document["error"] == {"code": "AccessDenied", "message": "not authorized"}


def test_service_name_source_goes_to_address_and_domain() -> None:
    document = parse({**RECORD, "sourceIPAddress": "ec2.amazonaws.com"}, context())
    assert document["source"] == {"address": "ec2.amazonaws.com", "domain": "ec2.amazonaws.com"}
    document = parse({**RECORD, "sourceIPAddress": "AWS Internal"}, context())
    assert document["source"] == {"address": "AWS Internal"}


def test_actiontrail_record_is_alibaba_cloud() -> None:
    record = {
        "eventTime": "2026-11-28T02:00:00Z",
        "eventSource": "oss.aliyuncs.com",
        "eventName": "GetObject",
        "acsRegion": "cn-shanghai",
        "sourceIpAddress": "192.0.2.7",
        "userIdentity": {"type": "ram-user", "userName": "li", "accountId": "1234"},
    }
    document = parse(record, context())
    assert document["cloud"] == {
        "provider": "alibaba_cloud",
        "region": "cn-shanghai",
        "account": {"id": "1234"},
    }
    assert document["event"]["dataset"] == "alibaba_cloud.actiontrail"
    assert document["source"]["ip"] == "192.0.2.7"
    assert document["event"]["type"] == ["access"]
    assert "alibaba_cloud" in document and "aws" not in document


def test_records_wrapper_is_refused_with_instructions() -> None:
    with pytest.raises(ParseError, match="feed its Records one by one"):
        parse(json.dumps({"Records": [RECORD]}), context())


def test_hostile_records_only_raise_parse_error() -> None:
    assert_only_parse_errors(parse, with_each_value_replaced(RECORD), context())
