"""Deterministic STIX identifiers and timestamps, so re-exporting the same record is idempotent.

STIX 2.1 asks for UUIDv4 in the ids of domain and relationship objects (the OASIS validator
warns about any other version), while re-exporting an alert must give the same ids again.
So the 16 bytes come from an unkeyed SHA-256 of the object's natural key, with the
version and variant bits set as in a UUIDv4: stable, well-formed, and collision-free in
practice. Cyber-observable ids (UUIDv5 over their contributing properties) are left to the
stix2 library, which implements the specification's algorithm.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

# A fixed creation time for reference objects whose content never depends on data
# (identities, ATT&CK references): every export gives them the same version.
REFERENCE_TIMESTAMP = "2026-01-01T00:00:00.000Z"


def deterministic_id(object_type: str, *key: str) -> str:
    """`<type>--<uuid>` derived from the type and the natural key (UUIDv4-shaped)."""
    digest = hashlib.sha256("\x1f".join(["lianfang", object_type, *key]).encode("utf-8")).digest()
    return f"{object_type}--{uuid.UUID(bytes=digest[:16], version=4)}"


def stix_timestamp(moment: datetime | str) -> str:
    """A STIX timestamp in UTC with millisecond precision (`2026-11-28T03:00:00.000Z`)."""
    if isinstance(moment, str):
        moment = parse_stix_timestamp(moment)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_stix_timestamp(text: str) -> datetime:
    """An aware datetime from an RFC 3339 / STIX timestamp (`Z` or an offset)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    # Python before 3.11 could not read more than 6 fractional digits; STIX allows any.
    head, dot, rest = value.partition(".")
    if dot:
        digits = ""
        index = 0
        while index < len(rest) and rest[index].isdigit():
            digits += rest[index]
            index += 1
        value = f"{head}.{(digits + '000000')[:6]}{rest[index:]}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
