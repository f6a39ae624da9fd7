"""Inbound STIX objects that failed validation, kept with the reasons (`<prefix>-intel-quarantine`).

Nothing received is dropped silently: an object the OASIS validator rejects (or that is
no JSON object at all) is written here with where it came from, when, and every error,
and never reaches the intelligence store. Analysts list the quarantine with
`lianfang intel quarantine`; a fixed object can simply be imported again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, helpers

from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index

QUARANTINE_FIELDS = {
    "received_at": "date",
    "source": "keyword",
    "object_id": "keyword",
    "object_type": "keyword",
    "reasons": "text",
}


@dataclass(frozen=True)
class QuarantinedObject:
    """One refused object and why."""

    source: str
    object_id: str | None
    object_type: str | None
    reasons: tuple[str, ...]
    content: Any


class Quarantine:
    """The quarantine index."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).intel_quarantine

    def install(self) -> None:
        """Create the index if missing."""
        install_index(self.client, self.index, QUARANTINE_FIELDS)

    def add(self, items: list[QuarantinedObject], now: datetime | None = None) -> int:
        """Record refused objects (the same object refused again for the same reasons is kept once)."""
        if not items:
            return 0
        self.install()
        moment = format_timestamp(now or datetime.now(UTC))
        actions = []
        for item in items:
            content = json.dumps(item.content, sort_keys=True, ensure_ascii=False, default=str)
            key = hashlib.sha256(
                "\x00".join([item.source, content, *item.reasons]).encode("utf-8")
            ).hexdigest()[:40]
            actions.append(
                {
                    "_op_type": "index",
                    "_index": self.index,
                    "_id": key,
                    "_source": {
                        "received_at": moment,
                        "source": item.source,
                        "object_id": item.object_id,
                        "object_type": item.object_type,
                        "reasons": list(item.reasons),
                        "content": content[:100_000],
                    },
                }
            )
        helpers.bulk(self.client, actions, refresh=True)
        return len(actions)

    def list(self, size: int = 100) -> list[dict[str, Any]]:
        """The most recent quarantined objects."""
        if not self.client.indices.exists(index=self.index):
            return []
        response = self.client.search(
            index=self.index, size=size, sort=[{"received_at": "desc"}], query={"match_all": {}}
        )
        return [hit["_source"] for hit in response["hits"]["hits"]]

    def count(self) -> int:
        """How many objects are quarantined."""
        if not self.client.indices.exists(index=self.index):
            return 0
        return int(self.client.count(index=self.index)["count"])
