"""STIX and TAXII timestamps: parsing, exact comparison keys, microsecond TAXII rendering.

STIX timestamps (`modified`, `created`) may carry any sub-second precision, so versions are
compared on a canonical key with nine fraction digits: "2016-01-01T01:01:01.000Z" and
"2016-01-01T01:01:01Z" are the same version. TAXII timestamps (`date_added`, the
X-TAXII-Date-Added headers, `added_after`) have microsecond precision and are kept as integer
microseconds since the epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class InvalidTimestamp(ValueError):
    """Text that is not an RFC 3339 UTC timestamp ending in Z; carries the text."""

    def __init__(self, text: object) -> None:
        super().__init__(f"{text!r} is not a timestamp like 2016-01-01T01:01:01.000Z")
        self.text = text


@dataclass(frozen=True)
class StixInstant:
    """A parsed timestamp: `key` compares exactly (nanoseconds), `micros` orders and formats."""

    key: str
    micros: int


def parse_timestamp(text: object) -> StixInstant:
    """Parse a STIX/TAXII timestamp (UTC, `Z`, any number of fraction digits)."""
    if not isinstance(text, str):
        raise InvalidTimestamp(text)
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise InvalidTimestamp(text)
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as error:
        raise InvalidTimestamp(text) from error
    nanos = (fraction or "")[:9].ljust(9, "0")
    micros = (moment - _EPOCH) // _MICROSECOND + int(nanos[:6])
    return StixInstant(key=f"{year}-{month}-{day}T{hour}:{minute}:{second}.{nanos}Z", micros=micros)


def format_micros(micros: int) -> str:
    """A TAXII timestamp with microsecond precision, e.g. 2016-11-02T12:34:34.123450Z."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_micros() -> int:
    """The current time in microseconds since the epoch."""
    return (datetime.now(UTC) - _EPOCH) // _MICROSECOND
