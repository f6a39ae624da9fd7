"""The OASIS stix2-validator, object by object: which objects are valid, and why not.

Everything the platform emits goes through `validate_objects` and must come back with no
errors; everything it receives goes through it too, and invalid objects are quarantined
with the validator's reasons instead of being stored. Warnings (e.g. "name and
description SHOULD be present") are kept for reporting but never block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stix2validator import ValidationOptions, validate_instance
from stix2validator.errors import ValidationError

SPEC_VERSION = "2.1"
# The validator logs every finding itself; results are returned instead.
logging.getLogger("stix2validator").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class ObjectValidation:
    """The validator's verdict on one object."""

    object_id: str | None
    object_type: str | None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors


@dataclass
class ValidationReport:
    """Per-object results of one batch."""

    results: list[ObjectValidation] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """Every object is valid."""
        return all(result.valid for result in self.results)

    @property
    def invalid(self) -> list[ObjectValidation]:
        """The objects with errors."""
        return [result for result in self.results if not result.valid]


def _options() -> ValidationOptions:
    return ValidationOptions(version=SPEC_VERSION)


def validate_object(stix_object: Any) -> ObjectValidation:
    """Validate one object (a dict); anything that is no JSON object is invalid."""
    if not isinstance(stix_object, dict):
        return ObjectValidation(None, None, (f"not a JSON object: {type(stix_object).__name__}",))
    object_id = stix_object.get("id") if isinstance(stix_object.get("id"), str) else None
    object_type = stix_object.get("type") if isinstance(stix_object.get("type"), str) else None
    if object_type is None:
        return ObjectValidation(object_id, None, ("'type' is missing or not a string",))
    try:
        result = validate_instance(stix_object, _options())
    except ValidationError as error:  # the validator's own refusal (e.g. no id at all)
        return ObjectValidation(object_id, object_type, (str(error),))
    except Exception as error:  # a malformed object must not stop the batch
        return ObjectValidation(object_id, object_type, (f"{type(error).__name__}: {error}",))
    return ObjectValidation(
        object_id,
        object_type,
        tuple(_clean(str(error), object_id) for error in result.errors),
        tuple(_clean(str(warning), object_id) for warning in result.warnings),
    )


def validate_objects(objects: Iterable[Any]) -> ValidationReport:
    """Validate each object on its own; one bad object never hides the others' results."""
    return ValidationReport([validate_object(stix_object) for stix_object in objects])


def _clean(message: str, object_id: str | None) -> str:
    """The validator prefixes each message with the object id; the result already has it."""
    if object_id and message.startswith(f"{object_id}: "):
        return message[len(object_id) + 2 :]
    return message
