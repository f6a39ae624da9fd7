"""STIX `identity` objects: the province's platform and each department (the producers).

Ids are derived from the department's `organization.id`, so every export, on every
machine, names a department the same way and peers can send sightings back to it. The
province's identity creates the departments' identities (`created_by_ref`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sharing.stix_ids import REFERENCE_TIMESTAMP, deterministic_id

PROVINCE_KEY = "province"
# Lianfang's sector labels (`labels.sector`) -> STIX 2.1 industry-sector-ov values.
SECTORS = {
    "government": "government",
    "finance": "financial-services",
    "financial": "financial-services",
    "energy": "energy",
    "utilities": "utilities",
    "transport": "transportation",
    "transportation": "transportation",
    "telecoms": "telecommunications",
    "telecommunications": "telecommunications",
    "industrial": "manufacturing",
    "industrial-control": "manufacturing",
    "healthcare": "healthcare",
    "education": "education",
    "defense": "defense",
    "infrastructure": "infrastructure",
}


@dataclass(frozen=True)
class Department:
    """A department (or operator) as the STIX producer of what it detects."""

    id: str
    name: str | None = None
    sector: str | None = None


def province_identity_id(province: str) -> str:
    """The id of the province's platform identity (named by `intel.province_name`)."""
    return deterministic_id("identity", PROVINCE_KEY, province)


def department_identity_id(department_id: str, province: str) -> str:
    """The id of a department's identity (stable across exports and machines).

    `province` tells apart departments with the same `organization.id` on two platforms
    (another province's `finance`); each platform uses its own `province_name`.
    """
    return deterministic_id("identity", "department", province, department_id)


def province_identity(name: str, marking_refs: list[str]) -> dict[str, Any]:
    """The platform's own identity."""
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": province_identity_id(name),
        "created": REFERENCE_TIMESTAMP,
        "modified": REFERENCE_TIMESTAMP,
        "name": name,
        "description": "Provincial joint cyber-defence platform (Lianfang)",
        "identity_class": "organization",
        "sectors": ["government"],
        "object_marking_refs": list(marking_refs),
    }


def department_identity(
    department: Department, province: str, marking_refs: list[str]
) -> dict[str, Any]:
    """A department's identity, created by the province's platform."""
    identity: dict[str, Any] = {
        "type": "identity",
        "spec_version": "2.1",
        "id": department_identity_id(department.id, province),
        "created_by_ref": province_identity_id(province),
        "created": REFERENCE_TIMESTAMP,
        "modified": REFERENCE_TIMESTAMP,
        "name": department.name or department.id,
        "identity_class": "organization",
        "external_references": [
            {"source_name": "lianfang-organization-id", "external_id": department.id}
        ],
        "object_marking_refs": list(marking_refs),
    }
    sector = SECTORS.get((department.sector or "").strip().lower())
    if sector:
        identity["sectors"] = [sector]
    return identity


def department_of_identity(identity: dict[str, Any]) -> str | None:
    """The `organization.id` recorded in one of our department identities, if any."""
    for reference in identity.get("external_references") or ():
        if reference.get("source_name") == "lianfang-organization-id":
            value = reference.get("external_id")
            return value if isinstance(value, str) else None
    return None
