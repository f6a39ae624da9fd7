"""Alerts and joint incidents as STIX 2.1: golden bundles, OASIS validation, masking, TLP, ids."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collectors.masking import Masker, TextMasker
from detection.alerts import Alert
from detection.attack_catalogue import AttackCatalogue
from lianfang import incidents as lifecycle
from lianfang.settings import ALL_MASKING_DETECTORS
from sharing.attack_mitigations import MitigationCatalogue
from sharing.stix_from_alerts import (
    StixProducer,
    is_shareable_address,
    make_bundle,
    observable_from_field,
    stix_pattern,
)
from sharing.stix_identities import Department, department_identity_id
from sharing.stix_validation import validate_object, validate_objects
from sharing.tlp import TLP_2_IDS, TlpLevel

GOLDEN = Path(__file__).parent / "golden_stix"
UPDATE = os.environ.get("LIANFANG_UPDATE_GOLDEN") == "1"
KEY = b"golden-stix-masking-key-not-secret"
PROVINCE = "测试省网络安全联防平台"
MOBILE = "13812345678"
ID_NUMBER = "11010519491231002X"


def producer(**overrides: Any) -> StixProducer:
    options: dict[str, Any] = {
        "province_name": PROVINCE,
        "masker": Masker(TextMasker(KEY, ALL_MASKING_DETECTORS)),
        "catalogue": AttackCatalogue.load(),
        "mitigations": MitigationCatalogue.load(),
        "default_tlp": TlpLevel.AMBER,
        "department_tlp": {"energy": TlpLevel.RED},
        "validity_days": {"ipv4-addr": 30, "domain-name": 90, "url": 30, "file": 365},
    }
    options.update(overrides)
    return StixProducer(**options)


def alert_document(**overrides: Any) -> dict[str, Any]:
    catalogue = AttackCatalogue.load()
    fields: dict[str, Any] = {
        "rule_id": "ssh-brute-force",
        "rule_name": "SSH brute force",
        "rule_type": "behavioural",
        "severity": "high",
        "entity_type": "source.ip",
        "entity_value": "203.0.113.77",
        "first_seen": datetime(2026, 11, 28, 2, 0, tzinfo=UTC),
        "last_seen": datetime(2026, 11, 28, 2, 9, 30, tzinfo=UTC),
        "explanation": (
            f"412 failed SSH logins for admin from 203.0.113.77; contact {MOBILE}, id {ID_NUMBER}"
        ),
        "organization_id": "gov-cloud",
        "organization_name": "省政务云平台",
        "sector": "government",
        "count": 412,
        "techniques": catalogue.techniques(["T1110.001"]),
        "entity_fields": {
            "source.ip": "203.0.113.77",
            "destination.ip": "10.10.1.5",
            "user.name": "admin",
        },
    }
    fields.update(overrides)
    return Alert(**fields).document(datetime(2026, 11, 28, 2, 10, tzinfo=UTC))


def incident_document(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    created = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    document = lifecycle.new_incident(
        title=f"Bastion brute force, reported by {MOBILE}",
        severity="high",
        lead="gov-cloud",
        participants=["energy"],
        alert_ids=[a["alert"]["id"] for a in alerts],
        created_by="analyst.li",
        now=created,
        policy=lifecycle.SlaPolicy.default(),
        description="Joint response to the bastion brute force and the SCADA scan.",
    )
    document["incident"]["id"] = "incident-0001"
    document, _ = lifecycle.add_task(
        document,
        title="Block 203.0.113.77 at the perimeter",
        department="gov-cloud",
        owner="ops.li",
        due=created + timedelta(hours=4),
        by="analyst.li",
        now=created + timedelta(minutes=5),
    )
    document["incident"]["tasks"][0]["id"] = "task-0001"
    document, _ = lifecycle.update_task(
        document,
        "task-0001",
        status="done",
        owner=None,
        by="ops.li",
        now=created + timedelta(hours=1),
    )
    return lifecycle.change_status(
        document, "containment", "analyst.li", created + timedelta(hours=1)
    )


def scan_alert() -> dict[str, Any]:
    return alert_document(
        rule_id="port-scan-vertical",
        rule_name="Vertical port scan",
        severity="critical",
        entity_value="198.51.100.23",
        explanation="612 ports of scada-hmi-01 probed from 198.51.100.23",
        organization_id="energy",
        organization_name="省电力公司",
        sector="energy",
        count=612,
        techniques=AttackCatalogue.load().techniques(["T1046"]),
        entity_fields={"source.ip": "198.51.100.23", "destination.ip": "10.30.1.11"},
    )


def check_golden(name: str, bundle: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(bundle, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI"):
            pytest.fail(f"golden file {path} is missing")
        path.write_text(text)
    assert json.loads(path.read_text()) == json.loads(text), f"{name} differs from {path}"


def assert_valid(objects: list[dict[str, Any]]) -> None:
    report = validate_objects(objects)
    assert report.results, "nothing was validated"
    assert report.valid, [(r.object_id, r.errors) for r in report.invalid]


def test_alert_golden_bundle_validates_and_is_stable() -> None:
    export = producer().alert_objects(alert_document())
    bundle = make_bundle(export.objects.values())
    assert_valid(bundle["objects"])
    check_golden("alert_ssh_brute_force", bundle)
    again = make_bundle(producer().alert_objects(alert_document()).objects.values())
    assert again == bundle  # re-export is idempotent: same ids, same timestamps


def test_alert_objects_carry_indicator_sighting_and_attack_pattern() -> None:
    export = producer().alert_objects(alert_document())
    [indicator] = export.of_type("indicator")
    assert indicator["pattern"] == "[ipv4-addr:value = '203.0.113.77']"
    assert indicator["valid_from"].startswith("2026-11-28T02:00:00")
    assert indicator["valid_until"].startswith("2026-12-28T02:09:30")
    assert indicator["confidence"] == 70
    assert {"kill_chain_name": "mitre-attack", "phase_name": "credential-access"} in indicator[
        "kill_chain_phases"
    ]
    [sighting] = export.of_type("sighting")
    department = department_identity_id("gov-cloud", PROVINCE)
    assert sighting["sighting_of_ref"] == indicator["id"]
    assert sighting["where_sighted_refs"] == [department]
    assert sighting["count"] == 412
    [attack_pattern] = export.of_type("attack-pattern")
    assert attack_pattern["external_references"][0]["external_id"] == "T1110.001"
    kinds = {
        (r["relationship_type"], r["source_ref"].split("--")[0])
        for r in export.of_type("relationship")
    }
    assert ("indicates", "indicator") in kinds and ("mitigates", "course-of-action") in kinds
    [observed] = export.of_type("observed-data")
    assert [export.objects[ref]["value"] for ref in observed["object_refs"]] == ["203.0.113.77"]


def test_personal_data_and_internal_addresses_never_leave() -> None:
    export = producer().alert_objects(alert_document())
    text = json.dumps(list(export.objects.values()), ensure_ascii=False)
    assert MOBILE not in text and ID_NUMBER not in text
    assert "[MOBILE:138*:" in text and "[ID:" in text
    assert "admin" not in json.dumps([o.get("description") for o in export.objects.values()])
    assert "10.10.1.5" not in text  # the department's own host
    assert any("10.10.1.5" in reason for reason in export.withheld)


def test_tlp_markings_follow_department_and_request() -> None:
    amber = producer().alert_objects(alert_document())
    assert TLP_2_IDS[TlpLevel.AMBER] in amber.of_type("indicator")[0]["object_marking_refs"]
    red = producer().alert_objects(scan_alert())
    assert red.tlp is TlpLevel.RED
    for stix_object in red.of_type("indicator") + red.of_type("sighting"):
        assert stix_object["object_marking_refs"] == [TLP_2_IDS[TlpLevel.RED]]
    green = producer().alert_objects(alert_document(), TlpLevel.GREEN)
    assert green.of_type("indicator")[0]["object_marking_refs"] == [TLP_2_IDS[TlpLevel.GREEN]]
    definitions = {o["id"] for o in green.of_type("marking-definition")}
    assert TLP_2_IDS[TlpLevel.GREEN] in definitions and TLP_2_IDS[TlpLevel.CLEAR] in definitions
    for stix_object in green.objects.values():
        if stix_object["type"] != "marking-definition":
            assert stix_object.get("object_marking_refs"), stix_object["id"]


def test_alert_without_observable_is_a_sighting_of_the_technique() -> None:
    document = alert_document(
        rule_id="personal-data-bulk-access",
        rule_name="Personal data bulk access",
        entity_type="user.name",
        entity_value="zhang.wei",
        explanation="zhang.wei read 1,500,000 rows of citizen_records",
        techniques=AttackCatalogue.load().techniques(["T1213"]),
        entity_fields={"user.name": "zhang.wei"},
        organization_id="transport",
    )
    export = producer().alert_objects(document)
    assert not export.of_type("indicator")
    [sighting] = export.of_type("sighting")
    assert sighting["sighting_of_ref"].startswith("attack-pattern--")
    assert "zhang.wei" not in json.dumps(list(export.objects.values()), ensure_ascii=False)
    assert_valid(list(export.objects.values()))


def test_alert_with_nothing_shareable_produces_no_sighting() -> None:
    document = alert_document(
        entity_value="10.20.0.5", techniques=[], entity_fields={"source.ip": "10.20.0.5"}
    )
    export = producer().alert_objects(document)
    assert not export.of_type("sighting") and not export.of_type("indicator")
    assert any("no shareable observable" in reason for reason in export.withheld)


def test_incident_golden_bundle_is_a_report_with_everything() -> None:
    alerts = [alert_document(), scan_alert()]
    document = incident_document(alerts)
    departments = {
        "gov-cloud": Department("gov-cloud", "省政务云平台", "government"),
        "energy": Department("energy", "省电力公司", "energy"),
    }
    export = producer().incident_objects(document, alerts, departments=departments)
    bundle = make_bundle(export.objects.values())
    assert_valid(bundle["objects"])
    check_golden("incident_joint_response", bundle)
    assert export.tlp is TlpLevel.RED  # energy's alert is RED: the incident is too
    [incident] = export.of_type("incident")
    assert MOBILE not in incident["name"]
    assert incident["object_marking_refs"] == [TLP_2_IDS[TlpLevel.RED]]
    [report] = export.of_type("report")
    refs = set(report["object_refs"])
    assert incident["id"] in refs
    assert {o["id"] for o in export.of_type("indicator")} <= refs
    tasks = [
        o for o in export.of_type("course-of-action") if "Joint-incident task" in o["description"]
    ]
    assert len(tasks) == 1 and tasks[0]["name"] == "Block 203.0.113.77 at the perimeter"


def test_golden_bundles_on_disk_validate() -> None:
    files = sorted(GOLDEN.glob("*.json"))
    assert len(files) >= 2
    for path in files:
        bundle = json.loads(path.read_text())
        assert bundle["type"] == "bundle"
        assert_valid(bundle["objects"])


def test_validator_rejects_broken_objects() -> None:
    good = producer().alert_objects(alert_document()).of_type("indicator")[0]
    assert validate_object(good).valid
    broken = {**good, "pattern": "[ipv4-addr:value = '1.2.3.4'"}
    assert not validate_object(broken).valid
    assert any("pattern" in error.lower() for error in validate_object(broken).errors)
    assert not validate_object({**good, "confidence": 300}).valid
    assert not validate_object("not an object").valid
    assert not validate_object({"id": "x"}).valid


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("source.ip", "203.0.113.77", "[ipv4-addr:value = '203.0.113.77']"),
        ("destination.ip", "2001:db8::1", "[ipv6-addr:value = '2001:db8::1']"),
        ("dns.question.name", "Evil.Example.", "[domain-name:value = 'evil.example']"),
        ("url.full", "http://evil.example/a'b", "[url:value = 'http://evil.example/a\\'b']"),
        ("email.from.address", "Phish@Evil.example", "[email-addr:value = 'phish@evil.example']"),
        ("file.hash.sha256", "A" * 64, f"[file:hashes.'SHA-256' = '{'a' * 64}']"),
    ],
)
def test_observables_become_patterns(field: str, value: str, expected: str) -> None:
    observable = observable_from_field(field, value)
    assert observable is not None
    assert stix_pattern(observable) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("source.ip", "not-an-ip"),
        ("host.name", "gc-web-01"),
        ("url.full", "relative/path"),
        ("file.hash.md5", "xyz"),
    ],
)
def test_non_observables_are_ignored(field: str, value: str) -> None:
    assert observable_from_field(field, value) is None


def test_shareable_addresses() -> None:
    assert is_shareable_address("203.0.113.77")
    assert is_shareable_address("185.220.101.9")
    for internal in ("10.1.2.3", "192.168.1.1", "172.20.0.1", "127.0.0.1", "fe80::1", "fd00::1"):
        assert not is_shareable_address(internal)
    import ipaddress

    assert not is_shareable_address("203.0.113.77", [ipaddress.ip_network("203.0.113.0/24")])


def test_email_indicators_only_for_senders() -> None:
    base = producer()
    sender = observable_from_field("email.from.address", "attacker@evil.example")
    person = observable_from_field("user.email", "zhang.wei@example.cn")
    assert sender is not None and person is not None
    assert base.shareable(sender) is None
    assert base.shareable(person) is not None
    url = observable_from_field("url.full", f"http://evil.example/?phone={MOBILE}")
    assert url is not None and "personal data" in (base.shareable(url) or "")
