"""TAXII status resources of POST requests, persisted in `<prefix>-taxii-status`.

A status is one header document (counts, owner, collection, state) and one chunk document
per `post_batch_size` objects of the request, holding each object's id, version, state and
message. A request of any size therefore never needs more than one chunk in memory, and
the status resource is assembled from the chunks when it is read. Reads use real-time gets,
so a status is readable the moment it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from elasticsearch import Elasticsearch, NotFoundError

from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index
from sharing.object_store import BULK_RESPONSE_FIELDS
from sharing.taxii_timestamps import format_micros

STATUS_FIELDS = {
    "kind": "keyword",
    "status_id": "keyword",
    "owner": "keyword",
    "collection": "keyword",
    "status": "keyword",
    "request_timestamp_us": "long",
    "updated_at": "date",
    "chunk": "long",
}
SUCCESS, FAILURE, PENDING = "success", "failure", "pending"
# A status entry: (object id, version, state, message or None); a list when read back.
# Tuples of strings cost the cyclic garbage collector nothing once it has seen them.
StatusEntry = Sequence[Any]


@dataclass
class StatusCounts:
    """How many objects of a request succeeded, failed or wait."""

    success: int = 0
    failure: int = 0
    pending: int = 0

    @property
    def total(self) -> int:
        return self.success + self.failure + self.pending

    def count(self, entries: list[StatusEntry]) -> None:
        """Add the states of some entries."""
        for entry in entries:
            if entry[2] == SUCCESS:
                self.success += 1
            elif entry[2] == FAILURE:
                self.failure += 1
            else:
                self.pending += 1


class StatusNotSaved(RuntimeError):
    """Elasticsearch refused to store a status; carries its id."""

    def __init__(self, status_id: str, reason: str) -> None:
        super().__init__(f"status {status_id} not saved: {reason}")
        self.status_id = status_id


@dataclass(frozen=True)
class StatusHeader:
    """The header of a status: whose request, for which collection, with which counts."""

    status_id: str
    owner: str
    collection: str
    request_timestamp_us: int
    counts: StatusCounts
    chunks: int

    @property
    def state(self) -> str:
        """complete once nothing is pending."""
        return "complete" if self.counts.pending == 0 else "pending"


def assemble(
    status_id: str, request_timestamp_us: int, counts: StatusCounts, entries: list[StatusEntry]
) -> dict[str, Any]:
    """The TAXII status resource from its counts and entries."""
    lists: dict[str, list[dict[str, Any]]] = {SUCCESS: [], FAILURE: [], PENDING: []}
    for object_id, version, state, message in entries:
        detail = {"id": object_id, "version": version}
        if message:
            detail["message"] = message
        lists[state].append(detail)
    resource: dict[str, Any] = {
        "id": status_id,
        "status": "complete" if counts.pending == 0 else "pending",
        "request_timestamp": format_micros(request_timestamp_us),
        "total_count": counts.total,
        "success_count": counts.success,
        "failure_count": counts.failure,
        "pending_count": counts.pending,
    }
    # TAXII forbids empty lists: an absent list means none.
    for state, name in ((SUCCESS, "successes"), (FAILURE, "failures"), (PENDING, "pendings")):
        if lists[state]:
            resource[name] = lists[state]
    return resource


class TaxiiStatusStore:
    """Status headers and chunks; only their owner (or an administrator) may read them."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).taxii_status

    def install(self) -> None:
        """Create the index if missing."""
        install_index(self.client, self.index, STATUS_FIELDS)

    def save(self, header: StatusHeader, chunks: dict[int, list[StatusEntry]]) -> None:
        """Write the header and some chunks in one request (complete when nothing is pending)."""
        response = self.client.bulk(
            operations=self.operations(header, chunks), filter_path=BULK_RESPONSE_FIELDS
        )
        if response.get("errors"):
            reasons = {
                str(item["index"].get("error", {}).get("type"))
                for item in response["items"]
                if item["index"].get("status", 500) >= 300
            }
            raise StatusNotSaved(header.status_id, ", ".join(sorted(reasons)))

    def operations(self, header: StatusHeader, chunks: dict[int, list[StatusEntry]]) -> bytes:
        """The bulk operations (NDJSON) that write the header and some chunks."""
        operations: list[dict[str, Any]] = [
            {"index": {"_index": self.index, "_id": header.status_id}},
            {
                "kind": "status",
                "status_id": header.status_id,
                "owner": header.owner,
                "collection": header.collection,
                "status": header.state,
                "request_timestamp_us": header.request_timestamp_us,
                "updated_at": format_timestamp(datetime.now(UTC)),
                "success_count": header.counts.success,
                "failure_count": header.counts.failure,
                "pending_count": header.counts.pending,
                "chunks": header.chunks,
            },
        ]
        for chunk, entries in chunks.items():
            operations.append(
                {"index": {"_index": self.index, "_id": f"{header.status_id}:{chunk}"}}
            )
            operations.append(
                {"kind": "chunk", "status_id": header.status_id, "chunk": chunk, "entries": entries}
            )
        # Serialised here (orjson): a chunk holds a thousand entries.
        return b"\n".join(orjson.dumps(operation) for operation in operations) + b"\n"

    @staticmethod
    def written(items: list[dict[str, Any]]) -> bool:
        """Did the bulk answer to `operations` write every document?"""
        return bool(items) and all(item["index"].get("status", 500) < 300 for item in items)

    def chunk(self, status_id: str, chunk: int) -> list[StatusEntry]:
        """The entries of one chunk (real-time)."""
        return self.client.get(index=self.index, id=f"{status_id}:{chunk}")["_source"]["entries"]

    def resource(self, status_id: str, reader: str, reader_is_admin: bool) -> dict[str, Any] | None:
        """The TAXII status resource, or None if unknown or not the reader's."""
        try:
            header = self.client.get(index=self.index, id=status_id)["_source"]
        except NotFoundError:
            return None
        if header.get("kind") != "status" or (header["owner"] != reader and not reader_is_admin):
            return None
        entries: list[StatusEntry] = []
        if header["chunks"]:
            chunks = self.client.mget(
                index=self.index, ids=[f"{status_id}:{n}" for n in range(header["chunks"])]
            )["docs"]
            for chunk in chunks:
                entries.extend((chunk.get("_source") or {}).get("entries", ()))
        counts = StatusCounts(
            header["success_count"], header["failure_count"], header["pending_count"]
        )
        return assemble(status_id, header["request_timestamp_us"], counts, entries)
