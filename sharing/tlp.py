"""Traffic Light Protocol markings (TLP 1.0 and 2.0) and the publication policy built on them.

The TLP 1.0 marking definitions are the ones STIX 2.1 predefines (the stix2 library's
constants). TLP 2.0 levels are defined by OASIS as marking-definition objects with a property
extension; stix2 has no constants for them, so they are built here with stix2's
`MarkingDefinition` from their published ids.

The policy is a pure function of the level, the collection and the publisher:

- TLP:RED never leaves its department: only a collection owned by the publisher's own
  department, read by nobody but that department, may receive it.
- TLP:AMBER and TLP:AMBER+STRICT only go to collections whose members are named (not
  community collections), read by nobody but those members; AMBER+STRICT additionally needs
  the publisher's own organisation among the members (it stays with the organisations
  involved).
- TLP:CLEAR and TLP:GREEN may go anywhere, community collections included.

Province analysts and administrators read every collection; `may_receive` keeps RED objects
from them unless they belong to the collection's department.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from stix2.v21 import TLP_AMBER, TLP_GREEN, TLP_RED, TLP_WHITE, MarkingDefinition

TLP_2_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP_2_CREATED = "2022-10-01T00:00:00.000Z"
# Reader entries that see every collection anyway (the provincial platform's own roles).
PLATFORM_READERS = frozenset({"role:administrator", "role:province_analyst"})


class TlpLevel(StrEnum):
    """The TLP 2.0 levels, from least to most restrictive."""

    CLEAR = "clear"
    GREEN = "green"
    AMBER = "amber"
    AMBER_STRICT = "amber+strict"
    RED = "red"

    @property
    def rank(self) -> int:
        """Restrictiveness: a higher rank shares with fewer recipients."""
        return _RANKS[self]

    @property
    def label(self) -> str:
        """The label as written on documents, e.g. TLP:AMBER+STRICT."""
        return f"TLP:{self.value.upper()}"


_RANKS = {level: rank for rank, level in enumerate(TlpLevel)}

# The ids OASIS published for the TLP 2.0 marking definitions.
TLP_2_IDS: dict[TlpLevel, str] = {
    TlpLevel.CLEAR: "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    TlpLevel.GREEN: "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    TlpLevel.AMBER: "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    TlpLevel.AMBER_STRICT: "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    TlpLevel.RED: "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
# TLP 1.0 as predefined by STIX 2.1; WHITE is CLEAR's old name.
TLP_1_IDS: dict[TlpLevel, str] = {
    TlpLevel.CLEAR: TLP_WHITE.id,
    TlpLevel.GREEN: TLP_GREEN.id,
    TlpLevel.AMBER: TLP_AMBER.id,
    TlpLevel.RED: TLP_RED.id,
}
MARKING_LEVELS: dict[str, TlpLevel] = {
    **{marking: level for level, marking in TLP_1_IDS.items()},
    **{marking: level for level, marking in TLP_2_IDS.items()},
}


class UnknownTlpLevel(ValueError):
    """A configured TLP level that does not exist; carries the text."""

    def __init__(self, text: str) -> None:
        super().__init__(
            f"unknown TLP level {text!r}; expected one of {[x.value for x in TlpLevel]}"
        )
        self.text = text


def parse_level(text: str) -> TlpLevel:
    """A level from `amber+strict`, `TLP:AMBER+STRICT` or `white` (TLP 1.0 for clear)."""
    name = text.strip().lower().removeprefix("tlp:")
    if name == "white":
        return TlpLevel.CLEAR
    try:
        return TlpLevel(name)
    except ValueError as error:
        raise UnknownTlpLevel(text) from error


@cache
def marking_definition(level: TlpLevel) -> MarkingDefinition:
    """The TLP 2.0 marking-definition object for a level, as OASIS published it."""
    return MarkingDefinition(
        id=TLP_2_IDS[level],
        created=TLP_2_CREATED,
        name=level.label,
        extensions={
            TLP_2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level.value}
        },
    )


def marking_refs(stix_object: Mapping[str, Any]) -> list[str]:
    """Every marking an object references, object-level and granular."""
    refs = [ref for ref in stix_object.get("object_marking_refs") or () if isinstance(ref, str)]
    for granular in stix_object.get("granular_markings") or ():
        if isinstance(granular, Mapping) and isinstance(granular.get("marking_ref"), str):
            refs.append(granular["marking_ref"])
    return refs


def most_restrictive(levels: Iterable[TlpLevel]) -> TlpLevel | None:
    """The most restrictive of some levels, or None when there are none."""
    return max(levels, key=lambda level: level.rank, default=None)


def tlp_of(stix_object: Mapping[str, Any]) -> TlpLevel | None:
    """The object's effective TLP level (the most restrictive it carries), None if unmarked.

    A granular TLP marking counts for the whole object: sharing decisions are made per
    object, and the conservative reading keeps a RED property from leaking with its object.
    The TLP marking definitions themselves are public (CLEAR).
    """
    if stix_object.get("id") in MARKING_LEVELS:
        return TlpLevel.CLEAR
    return most_restrictive(
        MARKING_LEVELS[ref] for ref in marking_refs(stix_object) if ref in MARKING_LEVELS
    )


@dataclass(frozen=True)
class PublicationTarget:
    """What the policy needs to know about a collection that receives objects."""

    community: bool
    department: str | None
    members: frozenset[str]
    readers: frozenset[str]


@dataclass(frozen=True)
class PolicyDecision:
    """Whether an object may be published into a collection, and why not."""

    allowed: bool
    reason: str = ""


ALLOWED = PolicyDecision(True)


def publication_decision(
    level: TlpLevel, target: PublicationTarget, publisher_department: str | None
) -> PolicyDecision:
    """May an object of this TLP level be published by this department into this collection?"""
    if level in (TlpLevel.CLEAR, TlpLevel.GREEN):
        return ALLOWED
    if level is TlpLevel.RED:
        return _red_decision(target, publisher_department)
    if target.community:
        return PolicyDecision(False, f"{level.label} may not go to a community collection")
    if not target.members:
        return PolicyDecision(False, f"{level.label} needs a collection whose members are named")
    outsiders = target.readers - target.members - PLATFORM_READERS
    if outsiders:
        return PolicyDecision(
            False,
            f"{level.label} may only be read by the named members; "
            f"the collection is also read by {', '.join(sorted(outsiders))}",
        )
    if level is TlpLevel.AMBER_STRICT and not _is_member(target, publisher_department):
        return PolicyDecision(
            False,
            f"{level.label} stays with the organisations involved; the publisher's is not a member",
        )
    return ALLOWED


def _is_member(target: PublicationTarget, department: str | None) -> bool:
    if not department:
        return False
    return f"department:{department}" in target.members or f"partner:{department}" in target.members


def _red_decision(target: PublicationTarget, publisher_department: str | None) -> PolicyDecision:
    label = TlpLevel.RED.label
    if not publisher_department:
        return PolicyDecision(False, f"{label} needs a publisher that belongs to a department")
    if target.community or target.department != publisher_department:
        return PolicyDecision(
            False,
            f"{label} never leaves its department: the collection is not {publisher_department}'s own",
        )
    own = {f"department:{publisher_department}"}
    outsiders = (target.members - own) | (target.readers - own - PLATFORM_READERS)
    if outsiders:
        return PolicyDecision(
            False,
            f"{label} never leaves its department: the collection is shared with "
            f"{', '.join(sorted(outsiders))}",
        )
    return ALLOWED


def may_receive(
    level: TlpLevel | None, collection_department: str | None, reader_department: str | None
) -> bool:
    """May a reader be sent an object of this level from a collection (RED stays home)?"""
    if level is not TlpLevel.RED:
        return True
    return bool(reader_department) and reader_department == collection_department
