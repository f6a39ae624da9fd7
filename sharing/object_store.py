"""STIX objects of the TAXII collections in Elasticsearch (`<prefix>-taxii-objects`).

One document per (collection, object id, version). The object's JSON is kept as an
unindexed string and returned byte for byte; indexed beside it are what the TAXII filters
need: id, type, spec_version, the version key, the date added (microseconds), the TLP level
and marking ids, and two flags, `is_first` and `is_last`, that mark the earliest and the
latest version of each object. With the flags, `match[version]=first|last` is a plain
filter, and every page is one `search_after` query on the index sort (date added,
sequence, key): its cost does not grow with the collection.

The index never refreshes on its own; refreshes happen under the write lock, so readers
never see a half-applied batch. A write refreshes first only when it touches an object
written since the last refresh (its flags must be read back); a read refreshes first when
anything was written since. Batches of new objects therefore cost no refresh at all. This
assumes one server process writes the index.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from elasticsearch import Elasticsearch

from lianfang.store import IndexNames, mapping_properties
from sharing.taxii_paging import PagePosition
from sharing.taxii_timestamps import format_micros

OBJECT_FIELDS = {
    "collection": "keyword",
    "object_id": "keyword",
    "type": "keyword",
    "spec_version": "keyword",
    "version_key": "keyword",
    "date_added_us": "long",
    "seq": "long",
    "key": "keyword",
    "is_first": "boolean",
    "is_last": "boolean",
    "tlp": "keyword",
    "markings": "keyword",
    "published_by": "keyword",
    "publisher_department": "keyword",
    "status_id": "keyword",
}
SORT = [{"date_added_us": "asc"}, {"seq": "asc"}, {"key": "asc"}]
# A bulk answer carries, per item, only what the outcomes need: without this, Elasticsearch
# writes and the client parses some 200 bytes of shard bookkeeping for each object.
BULK_RESPONSE_FIELDS = "errors,items.*.status,items.*.error"
UNMARKED = "none"
MAX_VERSIONS_PER_OBJECT = 10_000
MAX_UNREFRESHED = 200_000


def document_key(collection: str, object_id: str, version_key: str | None) -> str:
    """The deterministic document id of one version of an object in one collection."""
    text = f"{collection}\x00{object_id}\x00{version_key or 'unversioned'}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


# A POST holds a thousand of these (and of StoreOutcome) for its whole length: as tuples of
# strings they cost the cyclic garbage collector nothing once it has seen them, where
# dataclass instances would be promoted to its oldest generation and rescanned there.
class PreparedVersion(NamedTuple):
    """A valid posted object, ready to store; `version_key` is None for unversioned objects."""

    position: int
    object_id: str
    object_type: str
    spec_version: str
    version: str | None
    version_key: str | None
    tlp: str
    markings: tuple[str, ...]
    raw: str
    content_sha256: str


class StoreOutcome(NamedTuple):
    """What happened to one prepared version: stored (or already there) or refused."""

    stored: bool
    version: str
    message: str | None = None


@dataclass(frozen=True)
class StoredBatch:
    """The outcome of each version, and the results of operations sent along (in order)."""

    outcomes: list[StoreOutcome]
    other_items: list[dict[str, Any]] = field(default_factory=list)


def shown_version(item: PreparedVersion, date_added_us: int) -> str:
    """The version a stored object has: its own, or (unversioned) the instant it was added."""
    return item.version or _format_key(_date_key(date_added_us))


@dataclass(frozen=True)
class VersionFilter:
    """`match[version]`: any of first, last and exact version keys, or all versions."""

    all_versions: bool = False
    first: bool = False
    last: bool = True
    keys: tuple[str, ...] = ()

    def clause(self) -> dict[str, Any] | None:
        """The filter clause, or None for all versions."""
        if self.all_versions:
            return None
        should: list[dict[str, Any]] = []
        if self.first:
            should.append({"term": {"is_first": True}})
        if self.last:
            should.append({"term": {"is_last": True}})
        if self.keys:
            should.append({"terms": {"version_key": list(self.keys)}})
        return {"bool": {"should": should, "minimum_should_match": 1}}


ALL_VERSIONS = VersionFilter(all_versions=True, last=False)
LATEST_VERSION = VersionFilter()  # TAXII's default: match[version]=last


@dataclass(frozen=True)
class ObjectQuery:
    """Which versions of which objects of a collection a request asks for."""

    collection: str
    object_ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: VersionFilter = field(default_factory=VersionFilter)
    spec_versions: tuple[str, ...] = ()
    added_after_us: int | None = None
    hide_red: bool = False

    def clauses(self) -> list[dict[str, Any]]:
        """The Elasticsearch filter clauses."""
        clauses: list[dict[str, Any]] = [{"term": {"collection": self.collection}}]
        if self.object_ids:
            clauses.append({"terms": {"object_id": list(self.object_ids)}})
        if self.types:
            clauses.append({"terms": {"type": list(self.types)}})
        if self.spec_versions:
            clauses.append({"terms": {"spec_version": list(self.spec_versions)}})
        if self.added_after_us is not None:
            clauses.append({"range": {"date_added_us": {"gt": self.added_after_us}}})
        version_clause = self.versions.clause()
        if version_clause is not None:
            clauses.append(version_clause)
        if self.hide_red:
            clauses.append({"bool": {"must_not": [{"term": {"tlp": "red"}}]}})
        return clauses


@dataclass(frozen=True)
class StoredVersion:
    """One stored version as a page returns it (`raw` only when objects were asked for)."""

    date_added_us: int
    seq: int
    key: str
    object_id: str
    version: str
    spec_version: str
    tlp: str
    raw: str | None

    @property
    def position(self) -> PagePosition:
        """Where a page ending with this version ends."""
        return PagePosition(self.date_added_us, self.seq, self.key)


METADATA_FIELDS = [
    "date_added_us",
    "seq",
    "key",
    "object_id",
    "version",
    "spec_version",
    "tlp",
]


class TaxiiObjectStore:
    """Versions of STIX objects per collection, with first/last flags and keyset paging."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).taxii_objects
        self._write_lock = threading.Lock()
        # Objects written since the last refresh, per collection (what search cannot see yet).
        self._unrefreshed: set[tuple[str, str]] = set()
        self._dirty = False

    def install(self) -> None:
        """Create the index (sorted on the paging order, refreshed only by writers)."""
        if self.client.indices.exists(index=self.index):
            return
        self.client.indices.create(
            index=self.index,
            settings={
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "refresh_interval": "-1",
                "sort.field": ["date_added_us", "seq", "key"],
                "sort.order": ["asc", "asc", "asc"],
            },
            mappings={"dynamic": False, "properties": mapping_properties(OBJECT_FIELDS)},
        )

    # ---------------------------------------------------------------- writes

    def add_versions(
        self,
        collection: str,
        versions: list[PreparedVersion],
        date_added_us: int,
        status_id: str,
        publisher: str,
        publisher_department: str | None,
        other_operations: bytes = b"",
    ) -> StoredBatch:
        """Store versions (exact duplicates count as stored); one outcome per version.

        `other_operations` (bulk NDJSON for another index) travel in the same request, which
        saves a round trip; their results come back uninterpreted.
        """
        if not versions:
            return StoredBatch([])
        with self._write_lock:
            touched = {(collection, item.object_id) for item in versions}
            if touched & self._unrefreshed or len(self._unrefreshed) > MAX_UNREFRESHED:
                self._refresh()
            fixed_key = _date_key(date_added_us)
            flags = self._flags(collection, versions)
            body: list[bytes] = []
            keys: list[str] = []
            for item in versions:
                version_key = item.version_key or fixed_key
                key = document_key(collection, item.object_id, item.version_key)
                keys.append(key)
                first, last = flags.new_flags(item)
                document = {
                    "collection": collection,
                    "object_id": item.object_id,
                    "type": item.object_type,
                    "spec_version": item.spec_version,
                    "version": item.version or _format_key(version_key),
                    "version_key": version_key,
                    "date_added_us": date_added_us,
                    "seq": item.position,
                    "key": key,
                    "is_first": first,
                    "is_last": last,
                    "tlp": item.tlp,
                    "markings": list(item.markings),
                    "published_by": publisher,
                    "publisher_department": publisher_department,
                    "status_id": status_id,
                    "content_sha256": item.content_sha256,
                    "object": item.raw,
                }
                body.append(orjson.dumps({"create": {"_index": self.index, "_id": key}}))
                body.append(orjson.dumps(document))
            demotions = flags.demotions()
            for key, changes in demotions.items():
                body.append(orjson.dumps({"update": {"_index": self.index, "_id": key}}))
                body.append(orjson.dumps({"doc": changes}))
            self._dirty = True
            self._unrefreshed |= touched
            response = self.client.bulk(
                operations=b"\n".join(body) + b"\n" + other_operations,
                filter_path=BULK_RESPONSE_FIELDS,
            )
            items = response["items"]
            ours = len(versions) + len(demotions)
            outcomes, conflicts, broken = self._outcomes(versions, items, _format_key(fixed_key))
            if conflicts:
                self._resolve_conflicts(versions, keys, conflicts, outcomes)
            if broken or _failed_updates(items[len(versions) : ours]):
                self._repair_flags(collection, broken or {v.object_id for v in versions})
            return StoredBatch(outcomes, items[ours:])

    def _outcomes(
        self, versions: list[PreparedVersion], items: list[dict[str, Any]], added_version: str
    ) -> tuple[list[StoreOutcome], list[int], set[str]]:
        outcomes: list[StoreOutcome] = []
        conflicts: list[int] = []
        broken: set[str] = set()
        for index, (item, result) in enumerate(zip(versions, items, strict=False)):
            created = result["create"]
            status = created.get("status", 500)
            version = item.version or added_version
            if status < 300:
                outcomes.append(StoreOutcome(True, version))
            elif status == 409:
                outcomes.append(StoreOutcome(True, version))
                conflicts.append(index)
            else:
                error = created.get("error", {})
                reason = f"{error.get('type', status)}: {error.get('reason', '')}".strip(": ")
                outcomes.append(StoreOutcome(False, version, f"not stored: {reason}"))
                if item.version_key is not None:
                    broken.add(item.object_id)
        return outcomes, conflicts, broken

    def _resolve_conflicts(
        self,
        versions: list[PreparedVersion],
        keys: list[str],
        conflicts: list[int],
        outcomes: list[StoreOutcome],
    ) -> None:
        """A version already stored: fine if identical, refused if the content differs."""
        response = self.client.mget(
            index=self.index,
            ids=[keys[i] for i in conflicts],
            source_includes=["content_sha256", "version"],
        )
        for index, document in zip(conflicts, response["docs"], strict=True):
            stored = document.get("_source") or {}
            item = versions[index]
            version = stored.get("version") or item.version or ""
            if stored.get("content_sha256") == item.content_sha256:
                outcomes[index] = StoreOutcome(True, version, "already in the collection")
            else:
                outcomes[index] = StoreOutcome(
                    False,
                    version,
                    "a different object with this id and version is already in the collection",
                )

    def _flags(self, collection: str, versions: list[PreparedVersion]) -> _FlagPlan:
        object_ids = sorted({v.object_id for v in versions if v.version_key is not None})
        existing: list[dict[str, Any]] = []
        if object_ids:
            response = self.client.search(
                index=self.index,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"collection": collection}},
                            {"terms": {"object_id": object_ids}},
                            {
                                "bool": {
                                    "should": [
                                        {"term": {"is_first": True}},
                                        {"term": {"is_last": True}},
                                    ],
                                    "minimum_should_match": 1,
                                }
                            },
                        ]
                    }
                },
                size=2 * len(object_ids) + 10,
                source_includes=["object_id", "version_key", "key", "is_first", "is_last"],
                track_total_hits=False,
            )
            existing = [hit["_source"] for hit in response["hits"]["hits"]]
        return _FlagPlan.build(existing, versions)

    def _repair_flags(self, collection: str, object_ids: Iterable[str]) -> None:
        """Recompute first/last from what is stored (after a partly failed write)."""
        ids = sorted(set(object_ids))
        if not ids:
            return
        self._refresh()
        response = self.client.search(
            index=self.index,
            query={
                "bool": {
                    "filter": [
                        {"term": {"collection": collection}},
                        {"terms": {"object_id": ids}},
                    ]
                }
            },
            size=MAX_VERSIONS_PER_OBJECT,
            source_includes=[
                "collection",
                "object_id",
                "version_key",
                "key",
                "is_first",
                "is_last",
            ],
            track_total_hits=False,
        )
        self._apply_flags([hit["_source"] for hit in response["hits"]["hits"]], deleted=())

    def delete(self, query: ObjectQuery) -> int:
        """Delete the matching versions, re-flag the remaining ones; how many were deleted."""
        with self._write_lock:
            if self._dirty:
                self._refresh()
            matched = self._all_hits(query.clauses())
            if not matched:
                return 0
            everything = self._all_hits(
                [
                    {"term": {"collection": query.collection}},
                    {"terms": {"object_id": sorted({hit["object_id"] for hit in matched})}},
                ]
            )
            self._apply_flags(everything, deleted={hit["key"] for hit in matched})
            return len(matched)

    def _apply_flags(self, documents: list[dict[str, Any]], deleted: Iterable[str]) -> None:
        deleted = set(deleted)
        body: list[bytes] = [
            orjson.dumps({"delete": {"_index": self.index, "_id": key}}) for key in sorted(deleted)
        ]
        remaining: dict[str, list[dict[str, Any]]] = {}
        for document in documents:
            if document["key"] not in deleted:
                remaining.setdefault(document["object_id"], []).append(document)
        for group in remaining.values():
            first = min(d["version_key"] for d in group)
            last = max(d["version_key"] for d in group)
            for document in group:
                wanted = {
                    "is_first": document["version_key"] == first,
                    "is_last": document["version_key"] == last,
                }
                if any(document.get(name) != value for name, value in wanted.items()):
                    body.append(
                        orjson.dumps({"update": {"_index": self.index, "_id": document["key"]}})
                    )
                    body.append(orjson.dumps({"doc": wanted}))
        if body:
            self._dirty = True
            self._unrefreshed |= {(d["collection"], d["object_id"]) for d in documents}
            self.client.bulk(operations=b"\n".join(body) + b"\n")

    def _all_hits(self, clauses: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = self.client.search(
            index=self.index,
            query={"bool": {"filter": clauses}},
            size=MAX_VERSIONS_PER_OBJECT,
            source_includes=[
                "collection",
                "object_id",
                "version_key",
                "key",
                "is_first",
                "is_last",
            ],
            track_total_hits=False,
        )
        return [hit["_source"] for hit in response["hits"]["hits"]]

    def _refresh(self) -> None:
        """Make every write searchable (the caller holds the write lock)."""
        self.client.indices.refresh(index=self.index)
        self._dirty = False
        self._unrefreshed.clear()

    def refresh_for_reading(self) -> None:
        """Refresh before a search if anything was written since the last refresh."""
        if self._dirty:
            with self._write_lock:
                if self._dirty:
                    self._refresh()

    # ---------------------------------------------------------------- reads

    def page(
        self,
        query: ObjectQuery,
        limit: int,
        after: PagePosition | None = None,
        with_objects: bool = False,
    ) -> tuple[list[StoredVersion], bool]:
        """One page in date-added order after `after`, and whether more follow."""
        self.refresh_for_reading()
        fields = [*METADATA_FIELDS, "object"] if with_objects else METADATA_FIELDS
        body: dict[str, Any] = {
            "query": {"bool": {"filter": query.clauses()}},
            "sort": SORT,
            "size": limit + 1,
            "track_total_hits": False,
            "_source": fields,
        }
        if after is not None:
            body["search_after"] = after.sort_values
        response = self.client.search(index=self.index, filter_path="hits.hits._source", **body)
        hits = response.get("hits", {}).get("hits", [])
        versions = [
            StoredVersion(
                date_added_us=source["date_added_us"],
                seq=source["seq"],
                key=source["key"],
                object_id=source["object_id"],
                version=source["version"],
                spec_version=source["spec_version"],
                tlp=source.get("tlp", UNMARKED),
                raw=source.get("object"),
            )
            for source in (hit["_source"] for hit in hits[:limit])
        ]
        return versions, len(hits) > limit


@dataclass
class _FlagPlan:
    """First/last version keys per object after a batch, and the old flags to clear."""

    first: dict[str, str]
    last: dict[str, str]
    existing: dict[str, list[dict[str, Any]]]

    @classmethod
    def build(cls, existing: list[dict[str, Any]], versions: list[PreparedVersion]) -> _FlagPlan:
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        by_object: dict[str, list[dict[str, Any]]] = {}
        for document in existing:
            by_object.setdefault(document["object_id"], []).append(document)
            _widen(first, last, document["object_id"], document["version_key"])
        for item in versions:
            if item.version_key is not None:
                _widen(first, last, item.object_id, item.version_key)
        return cls(first, last, by_object)

    def new_flags(self, item: PreparedVersion) -> tuple[bool, bool]:
        """is_first and is_last of a new version (an unversioned object is both)."""
        if item.version_key is None:
            return True, True
        return (
            item.version_key == self.first[item.object_id],
            item.version_key == self.last[item.object_id],
        )

    def demotions(self) -> dict[str, dict[str, bool]]:
        """Partial updates for stored versions that stop being first or last."""
        changes: dict[str, dict[str, bool]] = {}
        for object_id, documents in self.existing.items():
            for document in documents:
                update: dict[str, bool] = {}
                if document.get("is_first") and document["version_key"] != self.first[object_id]:
                    update["is_first"] = False
                if document.get("is_last") and document["version_key"] != self.last[object_id]:
                    update["is_last"] = False
                if update:
                    changes[document["key"]] = update
        return changes


def _widen(first: dict[str, str], last: dict[str, str], object_id: str, key: str) -> None:
    if object_id not in first or key < first[object_id]:
        first[object_id] = key
    if object_id not in last or key > last[object_id]:
        last[object_id] = key


def _failed_updates(updates: list[dict[str, Any]]) -> bool:
    return any(item["update"].get("status", 500) >= 300 for item in updates)


def _date_key(micros: int) -> str:
    """The version key of an unversioned object: the instant it was first added."""
    return format_micros(micros)[:-1] + "000Z"


def _format_key(version_key: str) -> str:
    """A version key shown as a TAXII timestamp (microseconds)."""
    return version_key[:26] + "Z"
