"""The disclosure audit: which objects went to which principal, when, under which marking.

Every TAXII response that hands out STIX objects writes one record to `<prefix>-disclosures`
before it is sent (a disclosure that cannot be recorded is not made). Administrators list the
records through `GET /api/v1/disclosures`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from elasticsearch import Elasticsearch, NotFoundError

from lianfang.event_search import range_clause
from lianfang.principals import Principal
from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index

DISCLOSURE_FIELDS = {
    "@timestamp": "date",
    "record_id": "keyword",
    "principal": "keyword",
    "role": "keyword",
    "department": "keyword",
    "api_key": "keyword",
    "collection": "keyword",
    "collection_alias": "keyword",
    "endpoint": "keyword",
    "object_ids": "keyword",
    "tlp": "keyword",
    "object_count": "long",
}


class InvalidCursor(ValueError):
    """A disclosures cursor this server did not issue; carries it."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor {cursor[:80]!r} is not one this server issued")
        self.cursor = cursor


@dataclass(frozen=True)
class DisclosedObject:
    """One object version handed to a principal, with its TLP level ("none" if unmarked)."""

    object_id: str
    version: str
    tlp: str


@dataclass(frozen=True)
class DisclosureQuery:
    """Filters of the administrators' listing."""

    principal: str | None = None
    collection: str | None = None
    object_id: str | None = None
    tlp: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    size: int = 100
    cursor: str | None = None


class DisclosureAudit:
    """Writes and lists disclosure records."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).disclosures

    def install(self) -> None:
        """Create the index if missing."""
        install_index(self.client, self.index, DISCLOSURE_FIELDS)

    def record(
        self,
        principal: Principal,
        collection: str,
        collection_alias: str | None,
        endpoint: str,
        objects: list[DisclosedObject],
    ) -> str:
        """Store one disclosure (raises if it cannot be stored); returns its record id."""
        record_id = str(uuid.uuid4())
        document = {
            "@timestamp": format_timestamp(datetime.now(UTC)),
            "record_id": record_id,
            "principal": principal.name,
            "role": str(principal.role),
            "department": principal.department,
            "api_key": principal.via_key,
            "collection": collection,
            "collection_alias": collection_alias,
            "endpoint": endpoint,
            "object_ids": sorted({item.object_id for item in objects}),
            "tlp": sorted({item.tlp for item in objects}),
            "object_count": len(objects),
            "objects": [
                {"id": item.object_id, "version": item.version, "tlp": item.tlp} for item in objects
            ],
        }
        self.client.index(index=self.index, id=record_id, document=document)
        return record_id

    def list(self, query: DisclosureQuery) -> tuple[list[dict[str, Any]], str | None]:
        """Records newest first, and the cursor of the next page (None at the end)."""
        filters: list[dict[str, Any]] = []
        for field, value in (
            ("principal", query.principal),
            ("collection", query.collection),
            ("object_ids", query.object_id),
            ("tlp", query.tlp),
        ):
            if value:
                filters.append({"term": {field: value}})
        if time_range := range_clause("@timestamp", query.start, query.end):
            filters.append(time_range)
        body: dict[str, Any] = {
            "query": {"bool": {"filter": filters}},
            "sort": [{"@timestamp": "desc"}, {"record_id": "desc"}],
            "size": query.size + 1,
            "track_total_hits": False,
        }
        if query.cursor:
            body["search_after"] = _decode_cursor(query.cursor)
        try:
            response = self.client.search(index=self.index, **body)
        except NotFoundError:
            return [], None
        hits = response["hits"]["hits"]
        records = [hit["_source"] for hit in hits[: query.size]]
        following = None
        if len(hits) > query.size:
            following = _encode_cursor(hits[query.size - 1]["sort"])
        return records, following


def _encode_cursor(sort_values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(sort_values)).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as error:
        raise InvalidCursor(cursor) from error
    if not (isinstance(values, list) and len(values) == 2):
        raise InvalidCursor(cursor)
    return values
