"""Validation of STIX objects posted to TAXII: a small protocol and a registry found by name.

`minimal` checks what storage and filtering rely on (type, id, spec_version, created and
modified); a stricter validator (e.g. the OASIS stix2-validator) can be registered under
another name and selected in the TAXII configuration (`[server] validator`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sharing.taxii_timestamps import InvalidTimestamp, parse_timestamp

_TYPE = re.compile(r"[a-z0-9][a-z0-9-]{1,248}[a-z0-9]")
# RFC 4122's textual form, the one STIX identifiers use (8-4-4-4-12 hexadecimal digits).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ACCEPTED_SPEC_VERSIONS = ("2.1",)


class InvalidObject(ValueError):
    """A posted object the server will not store; carries the object's id (if any) and why."""

    def __init__(self, object_id: str | None, reason: str) -> None:
        super().__init__(f"{object_id or 'object'}: {reason}")
        self.object_id = object_id
        self.reason = reason


class ObjectValidator(Protocol):
    """Raises InvalidObject for an object that must not be stored."""

    def __call__(self, stix_object: dict[str, Any]) -> None: ...


def validate_minimal(stix_object: dict[str, Any]) -> None:
    """Type, id, spec_version (2.1 only), created/modified format and order."""
    object_type = stix_object.get("type")
    object_id = stix_object.get("id")
    shown_id = object_id if isinstance(object_id, str) else None
    if not isinstance(object_type, str) or not _TYPE.fullmatch(object_type):
        raise InvalidObject(shown_id, "type must be 3-250 lowercase letters, digits or hyphens")
    if not isinstance(object_id, str):
        raise InvalidObject(None, "id is missing")
    prefix, separator, identifier = object_id.partition("--")
    if not separator or prefix != object_type:
        raise InvalidObject(object_id, f"id must be {object_type}--<UUID>")
    if not _UUID.fullmatch(identifier):
        raise InvalidObject(object_id, "id does not end in a UUID")
    spec_version = stix_object.get("spec_version")
    if spec_version is None and "created" in stix_object:
        raise InvalidObject(object_id, "spec_version is missing (STIX 2.0 is not accepted)")
    if spec_version is not None and spec_version not in ACCEPTED_SPEC_VERSIONS:
        raise InvalidObject(object_id, f"spec_version {spec_version!r} is not accepted; use 2.1")
    created = _instant(stix_object, "created")
    modified = _instant(stix_object, "modified")
    if created is not None and modified is None and object_type != "marking-definition":
        raise InvalidObject(object_id, "modified is missing")
    if modified is not None and created is None:
        raise InvalidObject(object_id, "created is missing")
    if created is not None and modified is not None and modified.key < created.key:
        raise InvalidObject(object_id, "modified is earlier than created")


def _instant(stix_object: dict[str, Any], field: str):
    if field not in stix_object:
        return None
    try:
        return parse_timestamp(stix_object[field])
    except InvalidTimestamp as error:
        raise InvalidObject(stix_object.get("id"), f"{field} is not a STIX timestamp") from error


@dataclass(frozen=True)
class UnknownValidator(LookupError):
    """No validator is registered under this name."""

    name: str

    def __str__(self) -> str:
        return f"no STIX validator named {self.name!r}; known: {sorted(VALIDATORS)}"


VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {"minimal": validate_minimal}


def validator_named(name: str) -> ObjectValidator:
    """The registered validator with this name."""
    try:
        return VALIDATORS[name]
    except KeyError as error:
        raise UnknownValidator(name) from error
