"""Active indicators against events: set lookups at ingest, and retro-hunts over the past days.

At ingest, `lookup_from_store` loads the active indicators with `atomic` plans into an
`IntelLookup` (the collectors' `IndicatorSet` for addresses, CIDRs, domains, URLs and
hashes, plus e-mail addresses), which the intel enrichment stage asks for every event.
A one-shot run (`lianfang ingest`) takes `ingest_lookup`; long-running inputs (the
collector, the syslog server, the HTTP ingest API) take `live_ingest_lookup`, which
reloads the set in the background every `intel.ingest_refresh_seconds`.

A retro-hunt (`retro_hunt`) looks for indicators in events already stored:

* atomic indicators in batches, one Elasticsearch `terms` query per batch over every field
  the values may be in; each hit is attributed to its indicators with the same lookup
  used at ingest, so both agree on what a match is;
* `query` plans run their compiled query;
* `matcher` plans pre-select candidate events with their query (at most
  `max_candidates`, newest first), turn them into `observed-data` per department and
  let `stix2-matcher` decide;
* `unsupported` plans are listed in the report with their reason.

The whole hunt runs within a time budget; indicators it did not reach are reported as
unfinished and hunted on the next run.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError
from stix2matcher.matcher import match as stix_match

from collectors.intel_hook import (
    DOMAIN_FIELDS,
    HASH_FIELDS,
    IP_FIELDS,
    URL_FIELDS,
    Indicator,
    IndicatorMatch,
    IndicatorSet,
)
from collectors.intel_refresh import RefreshingLookup
from lianfang.schema import format_timestamp, parse_timestamp
from lianfang.settings import Settings
from sharing.indicator_confidence import ConfidenceRule
from sharing.intel_store import IndicatorRecord, IntelStore
from sharing.stix_ids import deterministic_id, parse_stix_timestamp, stix_timestamp
from sharing.stix_patterns import EMAIL_FIELDS

EVIDENCE_CAP = 500
HIT_PAGE = 5000
RESULT_FIELDS = [
    "@timestamp",
    "event.id",
    "organization.id",
    "organization.name",
    "labels.sector",
]
TLP_LABELS = {
    "clear": "CLEAR",
    "green": "GREEN",
    "amber": "AMBER",
    "amber+strict": "AMBER+STRICT",
    "red": "RED",
}


def ecs_confidence(value: int | None) -> str:
    """STIX 0–100 confidence as ECS `threat.indicator.confidence` (None/Low/Medium/High)."""
    if value is None:
        return "Not Specified"
    if value == 0:
        return "None"
    if value < 30:
        return "Low"
    if value < 70:
        return "Medium"
    return "High"


class IntelLookup:
    """The ingest-time lookup: `IndicatorSet` plus e-mail addresses (an `IndicatorLookup`)."""

    def __init__(self, indicators: Iterable[Indicator] = ()) -> None:
        self._set = IndicatorSet()
        self._emails: dict[str, list[Indicator]] = {}
        self.refused: list[str] = []
        for indicator in indicators:
            self.add(indicator)

    def __len__(self) -> int:
        return len(self._set) + sum(len(v) for v in self._emails.values())

    def add(self, indicator: Indicator) -> None:
        """Add one indicator; a value that does not fit its type is recorded in `refused`."""
        if indicator.type == "email-addr":
            self._emails.setdefault(indicator.value.strip().lower(), []).append(indicator)
            return
        try:
            self._set.add(indicator)
        except ValueError as error:
            self.refused.append(str(error))

    def match(self, document: Mapping[str, Any]) -> list[IndicatorMatch]:
        """Every indicator match in the document."""
        matches = self._set.match(document)
        if self._emails:
            for field_name in EMAIL_FIELDS:
                for value in _field_values(document, field_name):
                    for indicator in self._emails.get(value.lower(), ()):
                        matches.append(IndicatorMatch(indicator, field_name, value))
        return matches


def _field_values(document: Mapping[str, Any], dotted: str) -> list[str]:
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            value = None
            break
        value = value.get(part)
    if value is None:
        value = document.get(dotted)
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v]
    return []


def hook_indicators(record: IndicatorRecord) -> list[Indicator]:
    """The collectors' `Indicator` records for one stored atomic indicator."""
    tlp = TLP_LABELS.get(record.tlp or "")
    return [
        Indicator(
            id=record.stix_id,
            type=atomic.type,
            value=atomic.value,
            provider=record.source,
            name=record.name,
            tlp=tlp,
            confidence=ecs_confidence(record.effective_confidence),
        )
        for atomic in record.plan.atomics
    ]


def lookup_for(records: Iterable[IndicatorRecord]) -> IntelLookup:
    """A lookup over the atomic plans of these indicators."""
    lookup = IntelLookup()
    for record in records:
        if record.plan.kind == "atomic":
            for indicator in hook_indicators(record):
                lookup.add(indicator)
    return lookup


def lookup_from_store(store: IntelStore, now: datetime | None = None) -> IntelLookup:
    """The active atomic indicators of the store, for the ingest-time intel stage.

    The stored state is re-derived by `intel hunt` and at intake; between those, an
    indicator can pass its `valid_until` or fall under a raised threshold, so both are
    checked again here.
    """
    moment = now or datetime.now(UTC)
    return lookup_for(
        record
        for record in store.indicators(("active",), ("atomic",))
        if record.effective_confidence >= store.rule.threshold
        and not _expired(record.valid_until, moment)
    )


def _expired(valid_until: str | None, now: datetime) -> bool:
    if not valid_until:
        return False
    try:
        return parse_stix_timestamp(valid_until) <= now
    except ValueError:
        return False  # the stored state was derived from it already


# ---------------------------------------------------------------------- retro-hunt


@dataclass
class HuntMatch:
    """Events of one department that matched one indicator."""

    indicator: IndicatorRecord
    department_id: str | None
    department_name: str | None = None
    sector: str | None = None
    matched_field: str = "pattern"
    atomic: str = ""
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_ids: list[str] = field(default_factory=list)

    def add_event(self, event_id: str | None, moment: datetime) -> None:
        """Count one matching event."""
        self.count += 1
        if event_id and len(self.event_ids) < EVIDENCE_CAP and event_id not in self.event_ids:
            self.event_ids.append(event_id)
        self.first_seen = moment if self.first_seen is None else min(self.first_seen, moment)
        self.last_seen = moment if self.last_seen is None else max(self.last_seen, moment)


@dataclass
class HuntReport:
    """What a retro-hunt looked at, found, and could not do."""

    hunted: list[IndicatorRecord] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    unsupported: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    matches: list[HuntMatch] = field(default_factory=list)
    queries: int = 0
    events_examined: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Counters for --json output."""
        return {
            "hunted": len(self.hunted),
            "unfinished": len(self.unfinished),
            "unsupported": [{"id": i, "reason": r} for i, r in self.unsupported],
            "failed": [{"id": i, "reason": r} for i, r in self.failed],
            "matches": len(self.matches),
            "matched_events": sum(m.count for m in self.matches),
            "queries": self.queries,
            "events_examined": self.events_examined,
            "seconds": round(self.seconds, 3),
        }


class MatchCollector:
    """Match accumulation keyed by (indicator, department)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str | None], HuntMatch] = {}

    def add(
        self,
        record: IndicatorRecord,
        document: Mapping[str, Any],
        field_name: str = "pattern",
        atomic: str = "",
    ) -> None:
        organization = document.get("organization") or {}
        department = organization.get("id") if isinstance(organization, dict) else None
        key = (record.stix_id, department)
        found = self.by_key.get(key)
        if found is None:
            found = HuntMatch(
                record,
                department,
                organization.get("name") if isinstance(organization, dict) else None,
                (document.get("labels") or {}).get("sector"),
                field_name,
                atomic,
            )
            self.by_key[key] = found
        event_id = (document.get("event") or {}).get("id")
        found.add_event(event_id, parse_timestamp(document["@timestamp"]))


def retro_hunt(
    client: Elasticsearch,
    events_index: str,
    records: Iterable[IndicatorRecord],
    *,
    start: datetime,
    end: datetime,
    budget_seconds: float = 120.0,
    batch_size: int = 5000,
    max_candidates: int = 5000,
) -> HuntReport:
    """Look for the indicators in the events of [start, end), within the time budget."""
    began = time.monotonic()
    deadline = began + budget_seconds
    report = HuntReport()
    matches = MatchCollector()
    window = {
        "range": {"@timestamp": {"gte": format_timestamp(start), "lt": format_timestamp(end)}}
    }
    pending = list(records)
    atomic = [r for r in pending if r.plan.kind == "atomic"]
    others = [r for r in pending if r.plan.kind in ("query", "matcher")]
    report.unsupported = [
        (r.stix_id, r.plan.reason) for r in pending if r.plan.kind == "unsupported"
    ]
    done: list[IndicatorRecord] = []
    for offset in range(0, len(atomic), batch_size):
        batch = atomic[offset : offset + batch_size]
        if time.monotonic() >= deadline:
            report.unfinished += [r.stix_id for r in atomic[offset:]]
            break
        try:
            _hunt_atomic_batch(client, events_index, batch, window, matches, report)
        except Exception as error:  # one failing batch is reported; the hunt goes on
            report.failed += [(r.stix_id, f"{type(error).__name__}: {error}") for r in batch]
            continue
        done += batch
    for position, record in enumerate(others):
        if time.monotonic() >= deadline:
            report.unfinished += [r.stix_id for r in others[position:]]
            break
        try:
            if record.plan.kind == "query":
                _hunt_query(client, events_index, record, window, matches, report)
            else:
                _hunt_matcher(client, events_index, record, window, matches, report, max_candidates)
        except Exception as error:
            report.failed.append((record.stix_id, f"{type(error).__name__}: {error}"))
            continue
        done.append(record)
    report.hunted = done
    report.matches = list(matches.by_key.values())
    report.seconds = time.monotonic() - began
    return report


def _atomic_clauses(records: list[IndicatorRecord]) -> list[dict[str, Any]]:
    values: dict[str, set[str]] = {
        "ip": set(),
        "domain": set(),
        "url": set(),
        "email": set(),
        "hash": set(),
    }
    for record in records:
        for atomic in record.plan.atomics:
            if atomic.type in ("ipv4-addr", "ipv6-addr"):
                values["ip"].add(atomic.value)
            elif atomic.type == "domain-name":
                values["domain"].add(atomic.value)
            elif atomic.type == "url":
                values["url"].add(atomic.value)
            elif atomic.type == "email-addr":
                values["email"].add(atomic.value)
            elif atomic.type == "file":
                values["hash"].add(atomic.value)
    groups = {
        "ip": IP_FIELDS,
        "domain": DOMAIN_FIELDS,
        "url": URL_FIELDS,
        "email": EMAIL_FIELDS,
        "hash": HASH_FIELDS,
    }
    clauses = []
    for kind, found in values.items():
        if not found:
            continue
        terms = sorted(found)
        if kind == "ip":
            terms = [t for t in terms if _is_ip_or_network(t)]
        for field_name in groups[kind]:
            clauses.append({"terms": {field_name: terms}})
    return clauses


def _is_ip_or_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _source_fields(extra: Iterable[str]) -> list[str]:
    return [*RESULT_FIELDS, *extra]


def _hits(
    client: Elasticsearch,
    index: str,
    query: dict[str, Any],
    source: list[str],
    report: HuntReport,
    limit: int | None = None,
    newest_first: bool = False,
) -> Iterable[dict[str, Any]]:
    """Matching event documents, paged with search_after on (@timestamp, event.id)."""
    order = "desc" if newest_first else "asc"
    after: list[Any] | None = None
    seen = 0
    while True:
        size = HIT_PAGE if limit is None else min(HIT_PAGE, limit - seen)
        if size <= 0:
            return
        body: dict[str, Any] = {
            "size": size,
            "query": query,
            "sort": [{"@timestamp": order}, {"event.id": order}],
            "_source": source,
        }
        if after is not None:
            body["search_after"] = after
        response = client.search(
            index=index, ignore_unavailable=True, allow_no_indices=True, **body
        )
        report.queries += 1
        hits = response["hits"]["hits"]
        for hit in hits:
            report.events_examined += 1
            yield hit["_source"]
        seen += len(hits)
        if len(hits) < size:
            return
        after = hits[-1]["sort"]


ATOMIC_SOURCE = [*IP_FIELDS, *DOMAIN_FIELDS, *URL_FIELDS, *EMAIL_FIELDS, *HASH_FIELDS]


def _hunt_atomic_batch(
    client: Elasticsearch,
    index: str,
    batch: list[IndicatorRecord],
    window: dict[str, Any],
    matches: MatchCollector,
    report: HuntReport,
) -> None:
    clauses = _atomic_clauses(batch)
    if not clauses:
        return
    lookup = lookup_for(batch)
    by_id = {record.stix_id: record for record in batch}
    query = {"bool": {"filter": [window], "should": clauses, "minimum_should_match": 1}}
    for document in _hits(client, index, query, _source_fields(ATOMIC_SOURCE), report):
        for found in lookup.match(document):
            record = by_id.get(found.indicator.id)
            if record is not None:
                matches.add(record, document, found.field, found.atomic)


def _hunt_query(
    client: Elasticsearch,
    index: str,
    record: IndicatorRecord,
    window: dict[str, Any],
    matches: MatchCollector,
    report: HuntReport,
) -> None:
    assert record.plan.query is not None
    query = {"bool": {"filter": [window, record.plan.query]}}
    for document in _hits(client, index, query, RESULT_FIELDS, report):
        matches.add(record, document)


def _hunt_matcher(
    client: Elasticsearch,
    index: str,
    record: IndicatorRecord,
    window: dict[str, Any],
    matches: MatchCollector,
    report: HuntReport,
    max_candidates: int,
) -> None:
    assert record.plan.query is not None
    query = {"bool": {"filter": [window, record.plan.query]}}
    by_department: dict[str | None, list[dict[str, Any]]] = {}
    for document in _hits(client, index, query, True, report, max_candidates, newest_first=True):
        organization = document.get("organization") or {}
        by_department.setdefault(organization.get("id"), []).append(document)
    for documents in by_department.values():
        pairs = [(observed_data_for_event(d), d) for d in documents]
        pairs = [(o, d) for o, d in pairs if o["objects"][0]["object_refs"]]
        if not pairs:
            continue
        observed = [o for o, _ in pairs]
        documents = [d for _, d in pairs]
        events = {o["objects"][0]["id"]: d for o, d in zip(observed, documents, strict=True)}
        bundle = {
            "type": "bundle",
            "id": deterministic_id("bundle", record.stix_id),
            "objects": [obj for o in observed for obj in o["objects"]],
        }
        found = stix_match(record.pattern, [bundle], stix_version="2.1")
        for item in found:
            observed_id = item["objects"][0]["id"] if item.get("type") == "bundle" else item["id"]
            if observed_id in events:
                matches.add(record, events[observed_id])


def observed_data_for_event(document: Mapping[str, Any]) -> dict[str, Any]:
    """One ECS event as a STIX 2.1 observed-data with its observables (for the matcher)."""
    event_id = str((document.get("event") or {}).get("id") or id(document))
    moment = stix_timestamp(parse_timestamp(document["@timestamp"]))
    objects: list[dict[str, Any]] = []

    def add(sco: dict[str, Any]) -> str:
        sco["id"] = deterministic_id(sco["type"], event_id, str(len(objects)))
        sco["spec_version"] = "2.1"
        objects.append(sco)
        return sco["id"]

    def ip_object(value: str) -> dict[str, Any] | None:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return None
        return {"type": "ipv4-addr" if address.version == 4 else "ipv6-addr", "value": value}

    refs: dict[str, str] = {}
    for side in ("source", "destination"):
        for value in _field_values(document, f"{side}.ip"):
            sco = ip_object(value)
            if sco is not None:
                refs[side] = add(sco)
    for field_name in IP_FIELDS:
        if field_name in ("source.ip", "destination.ip"):
            continue
        for value in _field_values(document, field_name):
            sco = ip_object(value)
            if sco is not None:
                add(sco)
    traffic: dict[str, Any] = {"type": "network-traffic"}
    if "source" in refs:
        traffic["src_ref"] = refs["source"]
    if "destination" in refs:
        traffic["dst_ref"] = refs["destination"]
    for stix_name, ecs_name in (
        ("src_port", "source.port"),
        ("dst_port", "destination.port"),
        ("src_byte_count", "source.bytes"),
        ("dst_byte_count", "destination.bytes"),
    ):
        value = _get(document, ecs_name)
        if isinstance(value, int):
            traffic[stix_name] = value
    protocols = [
        p.lower()
        for name in ("network.transport", "network.protocol")
        for p in _field_values(document, name)
    ]
    if protocols:
        traffic["protocols"] = list(dict.fromkeys(protocols))
    if len(traffic) > 1:
        add(traffic)
    for field_name in DOMAIN_FIELDS:
        for value in _field_values(document, field_name):
            add({"type": "domain-name", "value": value.lower().rstrip(".")})
    for field_name in URL_FIELDS:
        for value in _field_values(document, field_name):
            add({"type": "url", "value": value})
    for field_name in EMAIL_FIELDS:
        for value in _field_values(document, field_name):
            add({"type": "email-addr", "value": value.lower()})
    file_object: dict[str, Any] = {"type": "file"}
    hashes = {
        name: value.lower()
        for name, kind in (
            ("MD5", "md5"),
            ("SHA-1", "sha1"),
            ("SHA-256", "sha256"),
            ("SHA-512", "sha512"),
        )
        for value in _field_values(document, f"file.hash.{kind}")
    }
    if hashes:
        file_object["hashes"] = hashes
    for stix_name, ecs_name in (("name", "file.name"), ("size", "file.size")):
        value = _get(document, ecs_name)
        if value is not None:
            file_object[stix_name] = value
    if len(file_object) > 1:
        add(file_object)
    process: dict[str, Any] = {"type": "process"}
    for stix_name, ecs_name in (
        ("pid", "process.pid"),
        ("command_line", "process.command_line"),
    ):
        value = _get(document, ecs_name)
        if value is not None:
            process[stix_name] = value
    if len(process) > 1:
        add(process)
    user = _get(document, "user.name")
    if isinstance(user, str):
        add({"type": "user-account", "user_id": user, "account_login": user})
    observed = {
        "type": "observed-data",
        "spec_version": "2.1",
        "id": deterministic_id("observed-data", event_id),
        "created": moment,
        "modified": moment,
        "first_observed": moment,
        "last_observed": moment,
        "number_observed": 1,
        "object_refs": [o["id"] for o in objects],
    }
    return {"type": "bundle", "objects": [observed, *objects]}


def _get(document: Mapping[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _intel_store(settings: Settings, client: Elasticsearch) -> IntelStore:
    return IntelStore(client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel))


def ingest_lookup(settings: Settings, client: Elasticsearch) -> IntelLookup | None:
    """The lookup for an ingest run: None when matching at ingest is off or nothing is active."""
    if not settings.intel.match_at_ingest:
        return None
    store = _intel_store(settings, client)
    try:
        lookup = lookup_from_store(store)
    except (TransportError, ApiError):
        return None  # no intelligence reachable: ingest goes on without the intel stage
    return lookup if len(lookup) else None


def live_ingest_lookup(settings: Settings, client: Elasticsearch) -> RefreshingLookup | None:
    """The lookup of a long-running input: reloaded every `intel.ingest_refresh_seconds`.

    None only when matching at ingest is off. The first load happens now; when the store
    is unreachable the lookup starts empty and fills at a later reload, so indicators that
    become active after the start are matched too.
    """
    if not settings.intel.match_at_ingest:
        return None
    # One attempt per request: a reload that hangs would only delay the next one, but
    # the first load runs before ingestion starts.
    store = _intel_store(settings, client.options(max_retries=0))
    lookup = RefreshingLookup(
        lambda: lookup_from_store(store), settings.intel.ingest_refresh_seconds
    )
    lookup.load_now()
    return lookup
