"""What this platform shares: published STIX objects waiting to be pushed or exported.

`<prefix>-intel-outbox` holds one document per object version (id, modified) the platform
produced — alerts and incidents turned into STIX, sightings of peers' indicators — with
its TLP level and its audience: `*` for every peer, or the names of the peers it is meant
for (a sighting goes back to the producer of the indicator it sighted). Every document
gets a sequence number (microseconds, increasing within a process, ties broken by the
document key), so a push resumes after the last (sequence, key) a peer acknowledged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, helpers

from lianfang.event_search import range_clause
from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index
from sharing.intel_store import object_document_id, version_key
from sharing.tlp import TlpLevel, tlp_of

OUTBOX_FIELDS = {
    "object_id": "keyword",
    "type": "keyword",
    "modified": "date",
    "tlp": "keyword",
    "audience": "keyword",
    "origin": "keyword",
    "seq": "long",
    "key": "keyword",
    "published_at": "date",
}
EVERYONE = "*"
PAGE = 1000
_sequence_lock = threading.Lock()
_last_sequence = 0


def next_sequence() -> int:
    """A strictly increasing number within this process (microseconds since the epoch)."""
    global _last_sequence
    with _sequence_lock:
        _last_sequence = max(_last_sequence + 1, time.time_ns() // 1000)
        return _last_sequence


@dataclass(frozen=True)
class OutboxEntry:
    """One shared object version with its position and policy facts."""

    seq: int
    key: str
    tlp: TlpLevel | None
    audience: tuple[str, ...]
    object: dict[str, Any]

    @property
    def position(self) -> list[Any]:
        """The bookmark value after this entry."""
        return [self.seq, self.key]


class Outbox:
    """The outbox index."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).intel_outbox

    def install(self) -> None:
        """Create the index if missing."""
        install_index(self.client, self.index, OUTBOX_FIELDS)

    def add(
        self,
        objects: Iterable[dict[str, Any]],
        *,
        audience: Iterable[str] = (EVERYONE,),
        origin: str,
        now: datetime | None = None,
    ) -> int:
        """Queue object versions for sharing; versions already queued are left alone."""
        self.install()
        published_at = format_timestamp(now or datetime.now(UTC))
        readers = sorted(set(audience))
        actions = []
        for stix_object in objects:
            key = object_document_id(stix_object["id"], version_key(stix_object))
            level = tlp_of(stix_object)
            actions.append(
                {
                    "_op_type": "create",
                    "_index": self.index,
                    "_id": key,
                    "_source": {
                        "object_id": stix_object["id"],
                        "type": stix_object["type"],
                        "modified": stix_object.get("modified") or stix_object.get("created"),
                        "tlp": level.value if level else None,
                        "audience": readers,
                        "origin": origin,
                        "seq": next_sequence(),
                        "key": key,
                        "published_at": published_at,
                        "object": json.dumps(stix_object, ensure_ascii=False, sort_keys=True),
                    },
                }
            )
        added = 0
        for ok, item in helpers.streaming_bulk(
            self.client, actions, raise_on_error=False, refresh=True
        ):
            if ok:
                added += 1
            elif item.get("create", {}).get("status") != 409:
                raise RuntimeError(f"outbox write failed: {item}")
        return added

    def entries(
        self,
        *,
        after: list[Any] | None = None,
        reader: str | None = None,
        types: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[OutboxEntry]:
        """Queued entries in order after a position, for one reader (None: all entries)."""
        if not self.client.indices.exists(index=self.index):
            return
        filters: list[dict[str, Any]] = []
        if reader is not None:
            filters.append({"terms": {"audience": [EVERYONE, reader]}})
        if types:
            filters.append({"terms": {"type": list(types)}})
        if published := range_clause("published_at", since, until):
            filters.append(published)
        position = after
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": {"bool": {"filter": filters}},
                "sort": [{"seq": "asc"}, {"key": "asc"}],
            }
            if position is not None:
                body["search_after"] = position
            hits = self.client.search(index=self.index, **body)["hits"]["hits"]
            for hit in hits:
                source = hit["_source"]
                yield OutboxEntry(
                    seq=source["seq"],
                    key=source["key"],
                    tlp=TlpLevel(source["tlp"]) if source.get("tlp") else None,
                    audience=tuple(source.get("audience") or ()),
                    object=json.loads(source["object"]),
                )
            if len(hits) < PAGE:
                return
            position = hits[-1]["sort"]

    def contains(self, object_ids: Iterable[str]) -> set[str]:
        """Which of these object ids this platform has published (any version)."""
        ids = sorted(set(object_ids))
        if not ids or not self.client.indices.exists(index=self.index):
            return set()
        found: set[str] = set()
        for start in range(0, len(ids), PAGE):
            response = self.client.search(
                index=self.index,
                size=0,
                query={"terms": {"object_id": ids[start : start + PAGE]}},
                aggs={"ids": {"terms": {"field": "object_id", "size": PAGE}}},
            )
            found |= {b["key"] for b in response["aggregations"]["ids"]["buckets"]}
        return found

    def refresh(self) -> None:
        """Make queued entries searchable."""
        if self.client.indices.exists(index=self.index):
            self.client.indices.refresh(index=self.index)
