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
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

# ASCII digits only: `\d` would also take other scripts' digits, which int() reads.
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?Z"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_DAY = 86_400_000_000
# Posted objects often share timestamps (created == modified, whole batches made at once):
# parsing each distinct text once per process keeps validation off the POST profile.
_PARSED_CACHE = 4096


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
    return _parse(text)


@lru_cache(maxsize=_PARSED_CACHE)
def _parse(text: str) -> StixInstant:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise InvalidTimestamp(text)
    year, month, day, hour, minute, second, fraction = match.groups()
    hours, minutes, seconds = int(hour), int(minute), int(second)
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError as error:
        raise InvalidTimestamp(text) from error
    if hours > 23 or minutes > 59 or seconds > 59:
        raise InvalidTimestamp(text)
    nanos = (fraction or "")[:9].ljust(9, "0")
    micros = (
        days * _MICROS_PER_DAY
        + ((hours * 60 + minutes) * 60 + seconds) * 1_000_000
        + int(nanos[:6])
    )
    return StixInstant(key=f"{year}-{month}-{day}T{hour}:{minute}:{second}.{nanos}Z", micros=micros)


def format_micros(micros: int) -> str:
    """A TAXII timestamp with microsecond precision, e.g. 2016-11-02T12:34:34.123450Z."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_micros() -> int:
    """The current time in microseconds since the epoch."""
    return (datetime.now(UTC) - _EPOCH) // _MICROSECOND
