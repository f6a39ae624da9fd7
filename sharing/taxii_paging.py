"""The opaque `next` value of TAXII paging: where the previous page ended, for which query.

Results are sorted by (date added, sequence within the POST, document key); the key is
unique, so the order is total and a page that ends inside a run of objects sharing one
date added continues exactly after its last object. The token also carries a fingerprint
of the filters: reusing it with other filters is refused instead of silently skipping.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

import orjson

TOKEN_VERSION = 1


class InvalidNext(ValueError):
    """A `next` value this server did not issue for these filters; carries the value."""

    def __init__(self, token: str, reason: str) -> None:
        super().__init__(f"next={token[:80]!r}: {reason}")
        self.token = token
        self.reason = reason


@dataclass(frozen=True)
class PagePosition:
    """The sort values of the last item of a page."""

    date_added_us: int
    seq: int
    key: str

    @property
    def sort_values(self) -> list[int | str]:
        """The `search_after` values."""
        return [self.date_added_us, self.seq, self.key]


def fingerprint(*parts: object) -> str:
    """A short stable digest of the query a token belongs to."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode_next(position: PagePosition, query_fingerprint: str) -> str:
    """The opaque `next` string for the page after `position`."""
    raw = orjson.dumps(
        [TOKEN_VERSION, position.date_added_us, position.seq, position.key, query_fingerprint]
    )
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_next(token: str, query_fingerprint: str) -> PagePosition:
    """The position a `next` string stands for; InvalidNext if forged, stale or foreign."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, date_added_us, seq, key, owner = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as error:
        raise InvalidNext(token, "not a value this server issued") from error
    if version != TOKEN_VERSION or not (
        isinstance(date_added_us, int) and isinstance(seq, int) and isinstance(key, str)
    ):
        raise InvalidNext(token, "not a value this server issued")
    if owner != query_fingerprint:
        raise InvalidNext(token, "issued for other filters; repeat the original filters")
    return PagePosition(date_added_us, seq, key)
