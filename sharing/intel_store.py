"""The intelligence store: every STIX object received, and the indicators with their state.

Three indices under the deployment's prefix:

* `<prefix>-intel-objects` — every valid object version received or published, one
  document per (id, modified): the dedupe key, so a re-sent object changes nothing;
* `<prefix>-intel` — one document per indicator id, its latest version: the pattern and
  its evaluation plan (`sharing/stix_patterns.py`), producer, source (`local`,
  `taxii:<peer>`, `feed:<name>`), TLP, validity, the producer's confidence, the sightings
  (distinct count, total count, first and last seen), the effective confidence and the
  state (`sharing/indicator_confidence.py`), and which version was last retro-hunted;
* `<prefix>-intel-sightings` — the latest version of every sighting, whoever made it.

Objects the OASIS validator rejects go to the quarantine (`sharing/intel_quarantine.py`)
with the reasons and are stored nowhere else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, helpers

from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index
from sharing.indicator_confidence import ConfidenceRule, effective_confidence, indicator_state
from sharing.intel_quarantine import Quarantine, QuarantinedObject
from sharing.stix_ids import parse_stix_timestamp
from sharing.stix_patterns import Atomic, PatternPlan, plan_pattern
from sharing.stix_validation import validate_object
from sharing.tlp import tlp_of

INDICATOR_FIELDS = {
    "stix_id": "keyword",
    "modified": "date",
    "created": "date",
    "name": "keyword",
    "pattern": "keyword",
    "pattern_type": "keyword",
    "valid_from": "date",
    "valid_until": "date",
    "revoked": "boolean",
    "confidence": "long",
    "effective_confidence": "long",
    "state": "keyword",
    "producer": "keyword",
    "source": "keyword",
    "collection": "keyword",
    "tlp": "keyword",
    "plan.kind": "keyword",
    "plan.reason": "text",
    "plan.atomics.type": "keyword",
    "plan.atomics.value": "keyword",
    "sightings.count": "long",
    "sightings.total": "long",
    "sightings.first": "date",
    "sightings.last": "date",
    "last_activity": "date",
    "hunt.version": "keyword",
    "hunt.at": "date",
    "received_at": "date",
    "updated_at": "date",
}
OBJECT_FIELDS = {
    "object_id": "keyword",
    "type": "keyword",
    "modified": "date",
    "source": "keyword",
    "collection": "keyword",
    "tlp": "keyword",
    "received_at": "date",
}
SIGHTING_FIELDS = {
    "stix_id": "keyword",
    "modified": "date",
    "sighting_of_ref": "keyword",
    "where_sighted_refs": "keyword",
    "created_by_ref": "keyword",
    "count": "long",
    "first_seen": "date",
    "seen_at": "date",
    "source": "keyword",
    "received_at": "date",
}
PAGE = 2000


@dataclass(frozen=True)
class IndicatorRecord:
    """A stored indicator as matching and reporting need it."""

    stix_id: str
    modified: str
    pattern: str
    plan: PatternPlan
    state: str
    effective_confidence: int
    confidence: int | None
    producer: str | None
    source: str
    tlp: str | None
    name: str | None
    sightings: int
    last_sighting: str | None
    hunted_version: str | None
    valid_until: str | None = None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> IndicatorRecord:
        """From the stored document."""
        plan = document.get("plan") or {}
        return cls(
            stix_id=document["stix_id"],
            modified=document["modified"],
            pattern=document.get("pattern") or "",
            plan=PatternPlan(
                plan.get("kind", "unsupported"),
                atomics=tuple(Atomic(a["type"], a["value"]) for a in plan.get("atomics") or ()),
                query=plan.get("query"),
                reason=plan.get("reason", ""),
            ),
            state=document.get("state", "inactive"),
            effective_confidence=int(document.get("effective_confidence") or 0),
            confidence=document.get("confidence"),
            producer=document.get("producer"),
            source=document.get("source", "local"),
            tlp=document.get("tlp"),
            name=document.get("name"),
            sightings=int((document.get("sightings") or {}).get("count") or 0),
            last_sighting=(document.get("sightings") or {}).get("last"),
            hunted_version=(document.get("hunt") or {}).get("version"),
            valid_until=document.get("valid_until"),
        )


@dataclass
class IntakeReport:
    """What one batch of received objects did to the store."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    indicators_new: int = 0
    indicators_updated: int = 0
    revoked: int = 0
    sightings: int = 0
    older_versions: int = 0
    quarantine_reasons: list[str] = field(default_factory=list)
    indicator_ids: list[str] = field(default_factory=list)  # new or revised

    def as_dict(self) -> dict[str, Any]:
        """Counters for --json output."""
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "indicators_new": self.indicators_new,
            "indicators_updated": self.indicators_updated,
            "revoked": self.revoked,
            "sightings": self.sightings,
            "older_versions": self.older_versions,
            "quarantine_reasons": self.quarantine_reasons[:20],
        }

    def add(self, other: IntakeReport) -> None:
        """Accumulate another batch's counters."""
        for name in (
            "received",
            "stored",
            "duplicates",
            "quarantined",
            "indicators_new",
            "indicators_updated",
            "revoked",
            "sightings",
            "older_versions",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.quarantine_reasons += other.quarantine_reasons
        self.indicator_ids += other.indicator_ids


def version_key(stix_object: dict[str, Any]) -> str:
    """The version of an object: `modified`, else `created`, else unversioned."""
    return str(stix_object.get("modified") or stix_object.get("created") or "unversioned")


def object_document_id(object_id: str, version: str) -> str:
    """The dedupe key of one object version."""
    return hashlib.sha256(f"{object_id}\x00{version}".encode()).hexdigest()[:40]


def _later(a: str, b: str) -> bool:
    """Is version a strictly later than b (timestamps compared as instants)?"""
    try:
        return parse_stix_timestamp(a) > parse_stix_timestamp(b)
    except ValueError:
        return a > b


class IntelStore:
    """Received intelligence in Elasticsearch, with indicator state."""

    def __init__(self, client: Elasticsearch, prefix: str, rule: ConfidenceRule) -> None:
        self.client = client
        self.rule = rule
        names = IndexNames(prefix)
        self.indicators_index = names.intel
        self.objects_index = names.intel_objects
        self.sightings_index = names.intel_sightings
        self.quarantine = Quarantine(client, prefix)

    def install(self) -> None:
        """Create the indices if missing."""
        install_index(self.client, self.indicators_index, INDICATOR_FIELDS)
        install_index(self.client, self.objects_index, OBJECT_FIELDS)
        install_index(self.client, self.sightings_index, SIGHTING_FIELDS)
        self.quarantine.install()

    # ------------------------------------------------------------------ intake

    def intake(
        self,
        objects: Iterable[Any],
        source: str,
        collection: str | None = None,
        now: datetime | None = None,
    ) -> IntakeReport:
        """Validate, dedupe by (id, modified) and store a batch of received objects."""
        now = now or datetime.now(UTC)
        received_at = format_timestamp(now)
        self.install()
        report = IntakeReport()
        refused: list[QuarantinedObject] = []
        valid: list[dict[str, Any]] = []
        items = list(objects)
        known = self._known_versions(items)
        for stix_object in items:
            report.received += 1
            if _version_document_id(stix_object) in known:
                report.duplicates += 1  # stored (and validated) before: nothing to do
                continue
            verdict = validate_object(stix_object)
            if not verdict.valid:
                refused.append(
                    QuarantinedObject(
                        source, verdict.object_id, verdict.object_type, verdict.errors, stix_object
                    )
                )
                report.quarantine_reasons.append(
                    f"{verdict.object_id or '(no id)'}: {'; '.join(verdict.errors)}"
                )
                continue
            valid.append(stix_object)
        report.quarantined = self.quarantine.add(refused, now)
        fresh = self._store_versions(valid, source, collection, received_at, report)
        indicators = [o for o in fresh if o["type"] == "indicator"]
        sightings = [o for o in fresh if o["type"] == "sighting"]
        if indicators:
            self._upsert_indicators(indicators, source, collection, received_at, now, report)
        if sightings:
            self._store_sightings(sightings, source, received_at, report)
            self.update_sighting_stats({s["sighting_of_ref"] for s in sightings}, now)
        return report

    def _known_versions(self, items: list[Any]) -> set[str]:
        """The dedupe keys of these objects that are already stored."""
        keys = sorted({key for key in map(_version_document_id, items) if key is not None})
        known: set[str] = set()
        for start in range(0, len(keys), PAGE):
            response = self.client.mget(
                index=self.objects_index, ids=keys[start : start + PAGE], source=False
            )
            known |= {doc["_id"] for doc in response["docs"] if doc.get("found")}
        return known

    def _store_versions(
        self,
        objects: list[dict[str, Any]],
        source: str,
        collection: str | None,
        received_at: str,
        report: IntakeReport,
    ) -> list[dict[str, Any]]:
        """Write each version once; returns the versions that were new."""
        if not objects:
            return []
        unique: dict[str, dict[str, Any]] = {}
        for stix_object in objects:
            key = object_document_id(stix_object["id"], version_key(stix_object))
            if key in unique:
                report.duplicates += 1
            unique[key] = stix_object
        actions = [
            {
                "_op_type": "create",
                "_index": self.objects_index,
                "_id": key,
                "_source": {
                    "object_id": o["id"],
                    "type": o["type"],
                    "modified": o.get("modified") or o.get("created"),
                    "source": source,
                    "collection": collection,
                    "tlp": _tlp_name(o),
                    "received_at": received_at,
                    "object": json.dumps(o, ensure_ascii=False, sort_keys=True),
                },
            }
            for key, o in unique.items()
        ]
        fresh: list[dict[str, Any]] = []
        keys = list(unique)
        for (ok, item), key in zip(
            helpers.streaming_bulk(
                self.client, actions, raise_on_error=False, chunk_size=1000, refresh=True
            ),
            keys,
            strict=True,
        ):
            result = item.get("create", {})
            if ok:
                fresh.append(unique[key])
                report.stored += 1
            elif result.get("status") == 409:
                report.duplicates += 1
            else:
                raise RuntimeError(f"storing {unique[key]['id']} failed: {result.get('error')}")
        return fresh

    def _upsert_indicators(
        self,
        indicators: list[dict[str, Any]],
        source: str,
        collection: str | None,
        received_at: str,
        now: datetime,
        report: IntakeReport,
    ) -> None:
        latest: dict[str, dict[str, Any]] = {}
        for indicator in indicators:
            current = latest.get(indicator["id"])
            if current is None or _later(version_key(indicator), version_key(current)):
                latest[indicator["id"]] = indicator
        ids = list(latest)
        existing: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), PAGE):
            response = self.client.mget(index=self.indicators_index, ids=ids[start : start + PAGE])
            for doc in response["docs"]:
                if doc.get("found"):
                    existing[doc["_id"]] = doc["_source"]
        actions = []
        for object_id, indicator in latest.items():
            stored = existing.get(object_id)
            if stored is not None and not _later(version_key(indicator), stored["modified"]):
                report.older_versions += 1
                continue
            document = self._indicator_document(indicator, source, collection, received_at)
            if stored is not None:
                document["sightings"] = stored.get("sightings") or document["sightings"]
                document["hunt"] = stored.get("hunt") or {}
                document["received_at"] = stored.get("received_at", received_at)
                report.indicators_updated += 1
            else:
                report.indicators_new += 1
            if document["revoked"] and not (stored or {}).get("revoked"):
                report.revoked += 1
            _derive_state(document, now, self.rule)
            report.indicator_ids.append(object_id)
            actions.append(
                {
                    "_op_type": "index",
                    "_index": self.indicators_index,
                    "_id": object_id,
                    "_source": document,
                }
            )
        if actions:
            helpers.bulk(self.client, actions, chunk_size=1000, refresh=True)

    @staticmethod
    def _indicator_document(
        indicator: dict[str, Any], source: str, collection: str | None, received_at: str
    ) -> dict[str, Any]:
        plan = plan_pattern(indicator.get("pattern", ""), indicator.get("pattern_type", "stix"))
        modified = version_key(indicator)
        return {
            "stix_id": indicator["id"],
            "modified": modified,
            "created": indicator.get("created"),
            "name": indicator.get("name"),
            "pattern": indicator.get("pattern"),
            "pattern_type": indicator.get("pattern_type"),
            "valid_from": indicator.get("valid_from"),
            "valid_until": indicator.get("valid_until"),
            "revoked": bool(indicator.get("revoked")),
            "confidence": indicator.get("confidence"),
            "producer": indicator.get("created_by_ref"),
            "source": source,
            "collection": collection,
            "tlp": _tlp_name(indicator),
            "plan": {
                "kind": plan.kind,
                "reason": plan.reason,
                "atomics": [{"type": a.type, "value": a.value} for a in plan.atomics],
                "query": plan.query,
            },
            "sightings": {"count": 0, "total": 0},
            "last_activity": modified,
            "hunt": {},
            "received_at": received_at,
            "updated_at": received_at,
            "object": json.dumps(indicator, ensure_ascii=False, sort_keys=True),
        }

    def _store_sightings(
        self, sightings: list[dict[str, Any]], source: str, received_at: str, report: IntakeReport
    ) -> None:
        actions = []
        for sighting in sightings:
            actions.append(
                {
                    "_op_type": "index",
                    "_index": self.sightings_index,
                    "_id": sighting["id"],
                    "_source": {
                        "stix_id": sighting["id"],
                        "modified": version_key(sighting),
                        "sighting_of_ref": sighting["sighting_of_ref"],
                        "where_sighted_refs": sighting.get("where_sighted_refs") or [],
                        "created_by_ref": sighting.get("created_by_ref"),
                        "count": int(sighting.get("count") or 1),
                        "first_seen": sighting.get("first_seen"),
                        "seen_at": sighting.get("last_seen") or version_key(sighting),
                        "source": source,
                        "received_at": received_at,
                        "object": json.dumps(sighting, ensure_ascii=False, sort_keys=True),
                    },
                }
            )
            report.sightings += 1
        # An older version arriving after a newer one must not replace it: keep the latest.
        ids = [a["_id"] for a in actions]
        current = {
            doc["_id"]: doc["_source"]["modified"]
            for doc in self.client.mget(index=self.sightings_index, ids=ids)["docs"]
            if doc.get("found")
        }
        actions = [
            a
            for a in actions
            if a["_id"] not in current or not _later(current[a["_id"]], a["_source"]["modified"])
        ]
        if actions:
            helpers.bulk(self.client, actions, refresh=True)

    def update_sighting_stats(self, indicator_ids: Iterable[str], now: datetime) -> int:
        """Recount the sightings of these indicators and re-derive their state."""
        ids = sorted(set(indicator_ids))
        updated = 0
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            response = self.client.search(
                index=self.sightings_index,
                size=0,
                query={"terms": {"sighting_of_ref": chunk}},
                aggs={
                    "indicators": {
                        "terms": {"field": "sighting_of_ref", "size": len(chunk)},
                        "aggs": {
                            "total": {"sum": {"field": "count"}},
                            "first": {"min": {"field": "first_seen"}},
                            "last": {"max": {"field": "seen_at"}},
                        },
                    }
                },
            )
            stats = {
                bucket["key"]: bucket
                for bucket in response["aggregations"]["indicators"]["buckets"]
            }
            found = self.client.mget(index=self.indicators_index, ids=chunk)["docs"]
            actions = []
            for doc in found:
                if not doc.get("found") or doc["_id"] not in stats:
                    continue
                bucket = stats[doc["_id"]]
                document = doc["_source"]
                document["sightings"] = {
                    "count": bucket["doc_count"],
                    "total": int(bucket["total"]["value"] or 0),
                    "first": bucket["first"].get("value_as_string"),
                    "last": bucket["last"].get("value_as_string"),
                }
                activity = [document["modified"], document["sightings"]["last"]]
                document["last_activity"] = max(
                    (a for a in activity if a), key=parse_stix_timestamp
                )
                document["updated_at"] = format_timestamp(now)
                _derive_state(document, now, self.rule)
                actions.append(
                    {
                        "_op_type": "index",
                        "_index": self.indicators_index,
                        "_id": doc["_id"],
                        "_source": document,
                        "if_seq_no": doc["_seq_no"],
                        "if_primary_term": doc["_primary_term"],
                    }
                )
            if actions:
                helpers.bulk(self.client, actions, refresh=True)
                updated += len(actions)
        return updated

    # ------------------------------------------------------------------ state

    def refresh_states(self, now: datetime | None = None) -> dict[str, int]:
        """Re-derive every indicator's effective confidence and state (decay, expiry)."""
        now = now or datetime.now(UTC)
        counts: dict[str, int] = {}
        actions = []
        for document in self._scan({"match_all": {}}):
            before = (document.get("state"), document.get("effective_confidence"))
            _derive_state(document, now, self.rule)
            counts[document["state"]] = counts.get(document["state"], 0) + 1
            if (document["state"], document["effective_confidence"]) != before:
                actions.append(
                    {
                        "_op_type": "update",
                        "_index": self.indicators_index,
                        "_id": document["stix_id"],
                        "doc": {
                            "state": document["state"],
                            "effective_confidence": document["effective_confidence"],
                        },
                    }
                )
        if actions:
            helpers.bulk(self.client, actions, chunk_size=2000, refresh=True)
        return counts

    def _scan(self, query: dict[str, Any], source: Any = True) -> Iterator[dict[str, Any]]:
        """Indicator documents matching a query, in id order, page by page."""
        if not self.client.indices.exists(index=self.indicators_index):
            return
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": PAGE,
                "query": query,
                "sort": [{"stix_id": "asc"}],
                "_source": source,
            }
            if after is not None:
                body["search_after"] = after
            hits = self.client.search(index=self.indicators_index, **body)["hits"]["hits"]
            for hit in hits:
                yield hit["_source"]
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]

    def indicators(
        self, states: Iterable[str] | None = ("active",), kinds: Iterable[str] | None = None
    ) -> Iterator[IndicatorRecord]:
        """Stored indicators in these states (None: all) and plan kinds (None: all)."""
        filters: list[dict[str, Any]] = []
        if states is not None:
            filters.append({"terms": {"state": list(states)}})
        if kinds is not None:
            filters.append({"terms": {"plan.kind": list(kinds)}})
        query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        for document in self._scan(query, {"excludes": ["object"]}):
            yield IndicatorRecord.from_document(document)

    def get(self, stix_id: str) -> IndicatorRecord | None:
        """One indicator by STIX id."""
        if not self.client.indices.exists(index=self.indicators_index):
            return None
        found = self.client.mget(index=self.indicators_index, ids=[stix_id])["docs"][0]
        return IndicatorRecord.from_document(found["_source"]) if found.get("found") else None

    def stix_object(self, stix_id: str) -> dict[str, Any] | None:
        """The latest stored STIX version of an indicator."""
        if not self.client.indices.exists(index=self.indicators_index):
            return None
        found = self.client.mget(index=self.indicators_index, ids=[stix_id])["docs"][0]
        return json.loads(found["_source"]["object"]) if found.get("found") else None

    def pending_hunts(self) -> list[IndicatorRecord]:
        """Active indicators whose current version was never retro-hunted."""
        return [
            record
            for record in self.indicators(("active",), ("atomic", "query", "matcher"))
            if record.hunted_version != record.modified
        ]

    def mark_hunted(self, records: Iterable[IndicatorRecord], now: datetime) -> None:
        """Remember that these versions were retro-hunted."""
        actions = [
            {
                "_op_type": "update",
                "_index": self.indicators_index,
                "_id": record.stix_id,
                "doc": {"hunt": {"version": record.modified, "at": format_timestamp(now)}},
            }
            for record in records
        ]
        if actions:
            helpers.bulk(self.client, actions, chunk_size=2000, refresh=True)

    def summary(self) -> dict[str, Any]:
        """Indicator counts by state, plan kind and source; sightings; quarantine."""
        if not self.client.indices.exists(index=self.indicators_index):
            return {"indicators": 0, "by_state": {}, "by_plan": {}, "by_source": {}}
        response = self.client.search(
            index=self.indicators_index,
            size=0,
            aggs={
                "state": {"terms": {"field": "state", "size": 20}},
                "plan": {"terms": {"field": "plan.kind", "size": 20}},
                "source": {"terms": {"field": "source", "size": 100}},
            },
            track_total_hits=True,
        )
        aggregations = response["aggregations"]
        return {
            "indicators": response["hits"]["total"]["value"],
            "by_state": {b["key"]: b["doc_count"] for b in aggregations["state"]["buckets"]},
            "by_plan": {b["key"]: b["doc_count"] for b in aggregations["plan"]["buckets"]},
            "by_source": {b["key"]: b["doc_count"] for b in aggregations["source"]["buckets"]},
            "sightings": int(self.client.count(index=self.sightings_index)["count"])
            if self.client.indices.exists(index=self.sightings_index)
            else 0,
            "quarantined": self.quarantine.count(),
        }

    def unsupported(self, size: int = 100) -> list[dict[str, Any]]:
        """Indicators whose pattern cannot be evaluated, with the reason (reported, kept)."""
        if not self.client.indices.exists(index=self.indicators_index):
            return []
        response = self.client.search(
            index=self.indicators_index,
            size=size,
            query={"term": {"plan.kind": "unsupported"}},
            source=["stix_id", "pattern", "plan.reason", "source", "state"],
        )
        return [hit["_source"] for hit in response["hits"]["hits"]]

    def refresh(self) -> None:
        """Make everything written searchable."""
        for index in (self.indicators_index, self.objects_index, self.sightings_index):
            if self.client.indices.exists(index=index):
                self.client.indices.refresh(index=index)


def _version_document_id(stix_object: Any) -> str | None:
    if not isinstance(stix_object, dict) or not isinstance(stix_object.get("id"), str):
        return None
    return object_document_id(stix_object["id"], version_key(stix_object))


def _tlp_name(stix_object: dict[str, Any]) -> str | None:
    level = tlp_of(stix_object)
    return level.value if level is not None else None


def _derive_state(document: dict[str, Any], now: datetime, rule: ConfidenceRule) -> None:
    """Set `effective_confidence` and `state` from the document's facts (in place)."""

    def instant(name: str) -> datetime | None:
        value = document.get(name)
        try:
            return parse_stix_timestamp(value) if value else None
        except ValueError:
            return None

    last_activity = instant("last_activity") or instant("modified") or now
    confidence = effective_confidence(
        document.get("confidence"),
        int((document.get("sightings") or {}).get("count") or 0),
        last_activity,
        now,
        rule,
    )
    document["effective_confidence"] = confidence
    document["state"] = indicator_state(
        revoked=bool(document.get("revoked")),
        valid_from=instant("valid_from"),
        valid_until=instant("valid_until"),
        confidence=confidence,
        now=now,
        rule=rule,
    )
