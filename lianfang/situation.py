"""The situation overview (态势总览): what the province's security looks like over a time range.

Everything is computed by Elasticsearch aggregations, sent as one multi-search through the
caller's `ScopedStore`, so each part is restricted to the caller's departments. This
module is pure: `plan_searches` builds the searches and `shape_situation` turns the answers
into the `Situation` record (lianfang/situation_record.py), with a threat level per sector
(lianfang/threat_level.py). Sizes are capped everywhere so that one call stays cheap.

The searches:

- `events`: volume over time by sector and department, totals per sector and department;
- `hostile`: events that look like attacks (denied, IDS alerts, failed logins, threat
  intelligence matches): top attacked assets, top attacking sources, hits on critical assets;
- `collection`: per source (`event.dataset`) and department: rate and latest
  `event.ingested`; a look-back before the range is read too, so a source that fell silent
  shows up with zero events instead of disappearing;
- `alerts`: alerts active in the range: severity, status, new alerts over time, ATT&CK
  tactics and techniques, attacking sources, open alerts per sector for the threat level;
- `incidents`, `overdue_tasks`: open incidents, SLA breaches, tasks past their due time;
- `shared`, `received`, `indicators`: intelligence (the sharing indices, when they exist).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lianfang.collection_health import CollectorSummary, DeadLetterSummary
from lianfang.incidents import sla_state
from lianfang.schema import format_timestamp
from lianfang.scoped_store import ScopedSearch
from lianfang.situation_record import (
    AlertSummary,
    AttackedAsset,
    AttackingSource,
    AttackSummary,
    CollectionHealth,
    EventVolume,
    HeatCell,
    IncidentSummary,
    IntelligenceSummary,
    OverdueTask,
    Scope,
    SectionError,
    SectorThreat,
    Situation,
    SourceHealth,
    TacticCount,
    TechniqueCount,
    TimeRange,
    VolumeBucket,
)
from lianfang.store import IndexNames
from lianfang.threat_level import threat_level

SEVERITIES = ("low", "medium", "high", "critical")
# (name, seconds): the histogram takes the smallest interval giving at most MAX_BUCKETS buckets.
INTERVALS = (
    ("1m", 60),
    ("2m", 120),
    ("5m", 300),
    ("10m", 600),
    ("15m", 900),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
    ("3h", 10800),
    ("6h", 21600),
    ("12h", 43200),
    ("1d", 86400),
    ("7d", 604800),
    ("30d", 2592000),
)
MAX_BUCKETS = 120
MAX_RANGE = timedelta(days=400)
# The range must leave room for the look-back before it and stay within datetime's years.
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
DEFAULT_RANGE = timedelta(hours=24)
SECTORS_CAP = 50
DEPARTMENTS_CAP = 100
SECTORS_PER_BUCKET = 10
DEPARTMENTS_PER_BUCKET = 20
DATASETS_CAP = 50
TECHNIQUES_CAP = 200
TACTICS_CAP = 20
OVERDUE_SCAN_CAP = 200
# Sources that sent in the look-back before the range and nothing in it are listed as silent;
# it is as long as the range, at most a day (each aggregation reads every event it covers).
COLLECTION_LOOKBACK = timedelta(days=1)
# A source is silent when nothing arrived for this long, or for ten of its usual gaps.
SILENT_AFTER_SECONDS = 900.0
UNKNOWN = "unknown"

# What counts as hostile in events (documented in README): the raw material of "attacked
# assets" and "attacking sources" before any detection rule has run.
HOSTILE_EVENTS: dict[str, Any] = {
    "bool": {
        "should": [
            {"term": {"event.type": "denied"}},
            {"term": {"event.kind": "alert"}},
            {"exists": {"field": "threat.enrichments"}},
            {
                "bool": {
                    "filter": [
                        {"term": {"event.category": "authentication"}},
                        {"term": {"event.outcome": "failure"}},
                    ]
                }
            },
        ],
        "minimum_should_match": 1,
    }
}
# A hostile event on a critical asset from a source the asset inventory does not know (with
# no inventory, every source is unknown): internal administrators mistyping a password on
# their own servers do not raise the threat level.
CRITICAL_ASSET: dict[str, Any] = {
    "bool": {
        "should": [
            {"term": {"destination.asset.criticality": "critical"}},
            {"term": {"host.asset.criticality": "critical"}},
        ],
        "minimum_should_match": 1,
        "must_not": [{"exists": {"field": "source.organization.id"}}],
    }
}


class InvalidRange(ValueError):
    """A time range the overview cannot use; carries the parameter and the value."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(f"{parameter}={value!r}: {reason}")
        self.parameter = parameter
        self.value = value
        self.reason = reason


class AttackLookup(Protocol):
    """What the overview needs from the ATT&CK catalogue (detection/attack_catalogue.py)."""

    version: str

    def find(self, technique_id: str) -> Any: ...

    def tactics(self) -> list[Any]: ...


@dataclass(frozen=True)
class SituationRequest:
    """A resolved request: the range, its histogram interval, filters and list sizes."""

    start: datetime
    end: datetime
    now: datetime
    interval: str
    interval_seconds: int
    departments: tuple[str, ...] = ()
    sectors: tuple[str, ...] = ()
    top: int = 10
    timezone: str = "UTC"

    @classmethod
    def resolve(
        cls,
        start: datetime | None,
        end: datetime | None,
        now: datetime,
        *,
        departments: Iterable[str] = (),
        sectors: Iterable[str] = (),
        top: int = 10,
        timezone: str = "UTC",
    ) -> SituationRequest:
        """Fill in the defaults (the last 24 hours) and check the range."""
        # The default end is the next whole minute, so that repeated calls within a minute
        # send identical searches and Elasticsearch's request cache can answer them.
        default_end = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = end.astimezone(UTC) if end else default_end
        if not EARLIEST < end <= LATEST:
            raise InvalidRange("end", format_timestamp(end), "end must be between 1970 and 9999")
        start = start.astimezone(UTC) if start else max(EARLIEST, end - DEFAULT_RANGE)
        if start < EARLIEST:
            raise InvalidRange("start", format_timestamp(start), "start must be after 1970-01-02")
        if start >= end:
            raise InvalidRange("start", format_timestamp(start), "start must be before end")
        if end - start > MAX_RANGE:
            raise InvalidRange("start", format_timestamp(start), "the range is at most 400 days")
        name, seconds = choose_interval(start, end)
        return cls(
            start=start,
            end=end,
            now=now.astimezone(UTC),
            interval=name,
            interval_seconds=seconds,
            departments=tuple(dict.fromkeys(departments)),
            sectors=tuple(dict.fromkeys(sectors)),
            top=top,
            timezone=timezone,
        )


def choose_interval(start: datetime, end: datetime) -> tuple[str, int]:
    """The smallest histogram interval that gives at most MAX_BUCKETS buckets."""
    span = (end - start).total_seconds()
    for name, seconds in INTERVALS:
        if math.ceil(span / seconds) <= MAX_BUCKETS:
            return name, seconds
    return INTERVALS[-1]


# ---------------------------------------------------------------------------- searches


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _range(field: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"range": {field: {"gte": format_timestamp(start), "lt": format_timestamp(end)}}}


def _terms(field: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"terms": {"field": field, "size": size, **extra}}


def _filters(request: SituationRequest, *, sector: bool = True) -> list[dict[str, Any]]:
    """The caller's department and sector filters (within its scope, applied by the store)."""
    clauses: list[dict[str, Any]] = []
    if request.departments:
        clauses.append({"terms": {"organization.id": list(request.departments)}})
    if sector and request.sectors:
        clauses.append({"terms": {"labels.sector": list(request.sectors)}})
    return clauses


def _histogram(request: SituationRequest, field: str) -> dict[str, Any]:
    return {
        "date_histogram": {
            "field": field,
            "fixed_interval": request.interval,
            "time_zone": request.timezone,
            # No extended_bounds: with only the range in the request, a daily index that lies
            # wholly inside it is searched with the range rewritten away, so Elasticsearch's
            # request cache answers it the next time; `bucket_starts` fills in empty ends.
            "min_doc_count": 0,
        },
        "aggs": {
            "by_sector": _terms("labels.sector", SECTORS_PER_BUCKET, missing=UNKNOWN),
            "by_department": _terms("organization.id", DEPARTMENTS_PER_BUCKET, missing=UNKNOWN),
        },
    }


def _events_search(request: SituationRequest, index: str) -> ScopedSearch:
    query = {
        "bool": {"filter": [_range("@timestamp", request.start, request.end), *_filters(request)]}
    }
    return ScopedSearch(
        index,
        {
            "size": 0,
            "track_total_hits": True,
            "query": query,
            "aggs": {
                "over_time": _histogram(request, "@timestamp"),
                "by_sector": _terms("labels.sector", SECTORS_CAP, missing=UNKNOWN),
                "by_department": _terms("organization.id", DEPARTMENTS_CAP, missing=UNKNOWN),
            },
        },
    )


def _hostile_search(request: SituationRequest, index: str) -> ScopedSearch:
    query = {
        "bool": {
            "filter": [
                _range("@timestamp", request.start, request.end),
                *_filters(request),
                HOSTILE_EVENTS,
            ]
        }
    }
    asset_details = {
        "department": _terms("organization.id", 1),
    }
    return ScopedSearch(
        index,
        {
            "size": 0,
            "track_total_hits": True,
            "query": query,
            "aggs": {
                "destinations": {
                    **_terms("destination.ip", request.top),
                    "aggs": {
                        **asset_details,
                        "name": _terms("destination.asset.name", 1),
                        "criticality": _terms("destination.asset.criticality", 1),
                    },
                },
                # Hosts that are the target themselves (log-in attempts) and name no destination.
                "hosts": {
                    "filter": {"bool": {"must_not": [{"exists": {"field": "destination.ip"}}]}},
                    "aggs": {
                        "names": {
                            **_terms("host.name", request.top),
                            "aggs": {
                                **asset_details,
                                "criticality": _terms("host.asset.criticality", 1),
                            },
                        }
                    },
                },
                "sources": {
                    **_terms("source.ip", request.top),
                    "aggs": {"departments": _terms("organization.id", 5)},
                },
                "critical": {
                    "filter": CRITICAL_ASSET,
                    "aggs": {"by_sector": _terms("labels.sector", SECTORS_CAP, missing=UNKNOWN)},
                },
            },
        },
    )


def _collection_search(request: SituationRequest, index: str) -> ScopedSearch:
    since = max(EARLIEST, request.start - min(COLLECTION_LOOKBACK, request.end - request.start))
    query = {"bool": {"filter": [_range("@timestamp", since, request.end), *_filters(request)]}}
    per_source = {
        "in_range": {"filter": _range("@timestamp", request.start, request.end)},
        "latest_ingested": {"max": {"field": "event.ingested"}},
    }
    return ScopedSearch(
        index,
        {
            "size": 0,
            "query": query,
            "aggs": {
                "datasets": {
                    **_terms("event.dataset", DATASETS_CAP, missing=UNKNOWN),
                    "aggs": {
                        "departments": {
                            **_terms("organization.id", DEPARTMENTS_CAP, missing=UNKNOWN),
                            "aggs": per_source,
                        }
                    },
                }
            },
        },
    )


def _alerts_search(request: SituationRequest, index: str) -> ScopedSearch:
    # Active in the range: first seen before its end, last seen at or after its start.
    active = [
        {"range": {"alert.first_seen": {"lt": format_timestamp(request.end)}}},
        {"range": {"alert.last_seen": {"gte": format_timestamp(request.start)}}},
    ]
    by_severity = _terms("alert.severity", len(SEVERITIES))
    return ScopedSearch(
        index,
        {
            "size": 0,
            "track_total_hits": True,
            "query": {"bool": {"filter": [*active, *_filters(request)]}},
            "aggs": {
                "by_severity": by_severity,
                "by_status": _terms("alert.status", 10),
                "by_sector": _terms("labels.sector", SECTORS_CAP, missing=UNKNOWN),
                "by_department": _terms("organization.id", DEPARTMENTS_CAP, missing=UNKNOWN),
                "open": {
                    "filter": {"bool": {"must_not": [{"term": {"alert.status": "closed"}}]}},
                    "aggs": {
                        "by_severity": by_severity,
                        "by_sector": {
                            **_terms("labels.sector", SECTORS_CAP, missing=UNKNOWN),
                            "aggs": {"by_severity": by_severity},
                        },
                    },
                },
                "new": {
                    "filter": _range("alert.first_seen", request.start, request.end),
                    "aggs": {"over_time": _histogram(request, "alert.first_seen")},
                },
                "techniques": _terms("threat.technique.id", TECHNIQUES_CAP),
                "tactics": _terms("threat.tactic.id", TACTICS_CAP),
                "sources": {
                    "filter": {"term": {"alert.entity.type": "source.ip"}},
                    "aggs": {
                        "values": {
                            **_terms("alert.entity.value", request.top),
                            "aggs": {
                                "worst": {"max": {"field": "event.severity"}},
                                "departments": _terms("organization.id", 5),
                            },
                        }
                    },
                },
            },
        },
    )


def _incidents_search(request: SituationRequest, index: str) -> ScopedSearch:
    now = format_timestamp(request.now)
    return ScopedSearch(
        index,
        {
            "size": 0,
            "query": {"bool": {"filter": _filters(request, sector=False)}},
            "aggs": {
                "open": {
                    "filter": {"bool": {"must_not": [{"term": {"incident.status": "closed"}}]}},
                    "aggs": {
                        "by_status": _terms("incident.status", 10),
                        "by_severity": _terms("incident.severity", len(SEVERITIES)),
                        "acknowledge_overdue": {
                            "filter": {
                                "bool": {
                                    "filter": [
                                        {"range": {"incident.sla.acknowledge_by": {"lt": now}}}
                                    ],
                                    "must_not": [{"exists": {"field": "incident.acknowledged_at"}}],
                                }
                            }
                        },
                        "resolve_overdue": {
                            "filter": {"range": {"incident.sla.resolve_by": {"lt": now}}}
                        },
                    },
                },
                "created": {"filter": _range("incident.created_at", request.start, request.end)},
                "resolved": {"filter": _range("incident.resolved_at", request.start, request.end)},
            },
        },
    )


def _overdue_tasks_search(request: SituationRequest, index: str) -> ScopedSearch:
    # Tasks are not nested, so the index can only find incidents with some task past due;
    # which tasks are open and overdue is decided on the documents (sla_state).
    query = {
        "bool": {
            "filter": [
                {"range": {"incident.tasks.due": {"lt": format_timestamp(request.now)}}},
                *_filters(request, sector=False),
            ],
            "must_not": [{"term": {"incident.status": "closed"}}],
        }
    }
    return ScopedSearch(
        index,
        {
            "size": OVERDUE_SCAN_CAP,
            "track_total_hits": True,
            "query": query,
            "sort": [{"incident.sla.resolve_by": "asc"}],
            "_source": [
                "incident.id",
                "incident.title",
                "incident.status",
                "incident.tasks",
                "incident.sla",
                "incident.acknowledged_at",
            ],
        },
    )


def _intel_searches(request: SituationRequest, names: IndexNames) -> list[ScopedSearch]:
    start_us = _millis(request.start) * 1000
    end_us = _millis(request.end) * 1000
    departments = list(request.departments)
    # Objects published into TAXII collections: the publishing department is the scope.
    shared_filters: list[dict[str, Any]] = [
        {"range": {"date_added_us": {"gte": start_us, "lt": end_us}}}
    ]
    if departments:
        shared_filters.append({"terms": {"publisher_department": departments}})
    # Objects handed out by TAXII (the disclosure audit): the receiving department is the scope.
    received_filters = [_range("@timestamp", request.start, request.end)]
    if departments:
        received_filters.append({"terms": {"department": departments}})
    indicator_filters = [
        _range("@timestamp", request.start, request.end),
        *_filters(request, sector=False),
    ]
    return [
        ScopedSearch(
            names.taxii_objects,
            {
                "size": 0,
                "track_total_hits": True,
                "query": {"bool": {"filter": shared_filters}},
                "aggs": {"by_type": _terms("type", 30)},
            },
            scope_field="publisher_department",
        ),
        ScopedSearch(
            names.disclosures,
            {
                "size": 0,
                "query": {"bool": {"filter": received_filters}},
                "aggs": {
                    "objects": {"sum": {"field": "object_count"}},
                    "by_tlp": {
                        **_terms("tlp", 10),
                        "aggs": {"objects": {"sum": {"field": "object_count"}}},
                    },
                },
            },
            scope_field="department",
        ),
        ScopedSearch(
            names.intel,
            {
                "size": 0,
                "track_total_hits": True,
                "query": {"bool": {"filter": indicator_filters}},
                "aggs": {"by_type": _terms("threat.indicator.type", 30)},
            },
        ),
    ]


SEARCH_NAMES = (
    "events",
    "hostile",
    "collection",
    "alerts",
    "incidents",
    "overdue_tasks",
    "shared",
    "received",
    "indicators",
)


def plan_searches(request: SituationRequest, names: IndexNames) -> list[ScopedSearch]:
    """The searches of one overview, in the order of SEARCH_NAMES (one msearch request)."""
    return [
        _events_search(request, names.events_alias),
        _hostile_search(request, names.events_alias),
        _collection_search(request, names.events_alias),
        _alerts_search(request, names.alerts),
        _incidents_search(request, names.incidents),
        _overdue_tasks_search(request, names.incidents),
        *_intel_searches(request, names),
    ]


# ---------------------------------------------------------------------------- shaping


def _aggs(response: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (response or {}).get("aggregations") or {}


def _buckets(aggregation: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return list((aggregation or {}).get("buckets") or [])


def _counts(aggregation: Mapping[str, Any] | None) -> dict[str, int]:
    return {str(b["key"]): int(b["doc_count"]) for b in _buckets(aggregation)}


def _first_key(aggregation: Mapping[str, Any] | None) -> str | None:
    buckets = _buckets(aggregation)
    return str(buckets[0]["key"]) if buckets else None


def _total(response: Mapping[str, Any] | None) -> int:
    total = ((response or {}).get("hits") or {}).get("total") or {}
    return int(total.get("value", 0)) if isinstance(total, Mapping) else int(total)


def _time(milliseconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(milliseconds / 1000, UTC))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def bucket_starts(request: SituationRequest) -> list[int]:
    """The start (epoch ms) of every histogram bucket overlapping the range.

    Buckets are aligned as Elasticsearch aligns fixed intervals in a time zone: on local
    multiples of the interval (a day bucket starts at local midnight).
    """
    zone = _zone(request.timezone)
    step = request.interval_seconds
    start, end = request.start.timestamp(), request.end.timestamp()
    offset = request.start.astimezone(zone).utcoffset() or timedelta(0)
    local = math.floor((start + offset.total_seconds()) / step) * step
    starts: list[int] = []
    while len(starts) <= MAX_BUCKETS + 1:
        moment = datetime.fromtimestamp(local, UTC).replace(tzinfo=None)
        key = local - (zone.utcoffset(moment) or timedelta(0)).total_seconds()
        if key >= end:
            break
        starts.append(int(key * 1000))
        local += step
    return starts


def _add(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for key, value in more.items():
        counts[key] = counts.get(key, 0) + value
    return counts


def _series(histogram: Mapping[str, Any] | None, starts: list[int]) -> list[VolumeBucket]:
    """One bucket per start, empty ones included; Elasticsearch's buckets placed by time."""
    series = [
        VolumeBucket(time=_time(key), count=0, by_sector={}, by_department={}) for key in starts
    ]
    for bucket in _buckets(histogram):
        index = bisect.bisect_right(starts, bucket["key"]) - 1
        if index < 0:
            continue
        target = series[index]
        target.count += int(bucket["doc_count"])
        _add(target.by_sector, _counts(bucket.get("by_sector")))
        _add(target.by_department, _counts(bucket.get("by_department")))
    return series


def _events(response: Mapping[str, Any] | None, starts: list[int]) -> EventVolume:
    aggs = _aggs(response)
    return EventVolume(
        total=_total(response),
        by_sector=_counts(aggs.get("by_sector")),
        by_department=_counts(aggs.get("by_department")),
        over_time=_series(aggs.get("over_time"), starts),
    )


def _alerts(response: Mapping[str, Any] | None, starts: list[int]) -> AlertSummary:
    aggs = _aggs(response)
    opened = aggs.get("open") or {}
    return AlertSummary(
        total=_total(response),
        open=int(opened.get("doc_count", 0)),
        by_severity=_counts(aggs.get("by_severity")),
        open_by_severity=_counts(opened.get("by_severity")),
        by_status=_counts(aggs.get("by_status")),
        by_sector=_counts(aggs.get("by_sector")),
        by_department=_counts(aggs.get("by_department")),
        new_over_time=_series((aggs.get("new") or {}).get("over_time"), starts),
    )


def _attack(response: Mapping[str, Any] | None, catalogue: AttackLookup | None) -> AttackSummary:
    aggs = _aggs(response)
    tactic_names = {t.id: t.name for t in catalogue.tactics()} if catalogue else {}
    tactic_order = {tactic_id: n for n, tactic_id in enumerate(tactic_names)}
    tactics = [
        TacticCount(id=tactic_id, name=tactic_names.get(tactic_id, tactic_id), alerts=count)
        for tactic_id, count in _counts(aggs.get("tactics")).items()
    ]
    tactics.sort(key=lambda t: (tactic_order.get(t.id, len(tactic_order)), t.id))
    techniques: list[TechniqueCount] = []
    heatmap: list[HeatCell] = []
    for technique_id, count in _counts(aggs.get("techniques")).items():
        known = catalogue.find(technique_id) if catalogue else None
        name = known.name if known else technique_id
        technique_tactics = list(known.tactics) if known else []
        techniques.append(
            TechniqueCount(
                id=technique_id,
                name=name,
                alerts=count,
                tactics=[tactic_id for tactic_id, _ in technique_tactics],
            )
        )
        for tactic_id, tactic_name in technique_tactics:
            heatmap.append(
                HeatCell(
                    tactic_id=tactic_id,
                    tactic_name=tactic_name,
                    technique_id=technique_id,
                    technique_name=name,
                    alerts=count,
                )
            )
    heatmap.sort(
        key=lambda c: (tactic_order.get(c.tactic_id, len(tactic_order)), -c.alerts, c.technique_id)
    )
    return AttackSummary(
        tactics=tactics,
        techniques=techniques,
        heatmap=heatmap,
        catalogue_version=catalogue.version if catalogue else None,
    )


def _attacked_assets(response: Mapping[str, Any] | None, top: int) -> list[AttackedAsset]:
    aggs = _aggs(response)
    assets = [
        AttackedAsset(
            asset=str(bucket["key"]),
            kind="ip",
            name=_first_key(bucket.get("name")),
            criticality=_first_key(bucket.get("criticality")),
            department=_first_key(bucket.get("department")),
            hostile_events=int(bucket["doc_count"]),
        )
        for bucket in _buckets(aggs.get("destinations"))
    ]
    assets += [
        AttackedAsset(
            asset=str(bucket["key"]),
            kind="host",
            name=str(bucket["key"]),
            criticality=_first_key(bucket.get("criticality")),
            department=_first_key(bucket.get("department")),
            hostile_events=int(bucket["doc_count"]),
        )
        for bucket in _buckets((aggs.get("hosts") or {}).get("names"))
    ]
    assets.sort(key=lambda a: (-a.hostile_events, a.kind, a.asset))
    return assets[:top]


def _attacking_sources(
    hostile: Mapping[str, Any] | None, alerts: Mapping[str, Any] | None, top: int
) -> list[AttackingSource]:
    found: dict[str, AttackingSource] = {}
    alert_sources = (_aggs(alerts).get("sources") or {}).get("values")
    for bucket in _buckets(alert_sources):
        worst = (bucket.get("worst") or {}).get("value")
        found[str(bucket["key"])] = AttackingSource(
            source=str(bucket["key"]),
            alerts=int(bucket["doc_count"]),
            worst_severity=SEVERITIES[int(worst) - 1] if worst and 1 <= worst <= 4 else None,
            hostile_events=0,
            departments=list(_counts(bucket.get("departments"))),
        )
    for bucket in _buckets(_aggs(hostile).get("sources")):
        key = str(bucket["key"])
        source = found.setdefault(
            key,
            AttackingSource(
                source=key, alerts=0, worst_severity=None, hostile_events=0, departments=[]
            ),
        )
        source.hostile_events = int(bucket["doc_count"])
        source.departments = list(
            dict.fromkeys([*source.departments, *_counts(bucket.get("departments"))])
        )
    rank = {name: n for n, name in enumerate(SEVERITIES)}
    ordered = sorted(
        found.values(),
        key=lambda s: (
            -rank.get(s.worst_severity or "", -1),
            -s.alerts,
            -s.hostile_events,
            s.source,
        ),
    )
    return ordered[:top]


def _overdue_tasks(
    response: Mapping[str, Any] | None, now: datetime, top: int
) -> tuple[int, list[OverdueTask], bool]:
    hits = ((response or {}).get("hits") or {}).get("hits") or []
    tasks: list[OverdueTask] = []
    for hit in hits:
        incident = (hit.get("_source") or {}).get("incident") or {}
        try:
            overdue = set(sla_state(incident, now)["overdue_tasks"])
        except (KeyError, TypeError, ValueError):
            continue  # a malformed incident is left out rather than failing the overview
        for task in incident.get("tasks", []):
            if task.get("id") in overdue:
                tasks.append(
                    OverdueTask(
                        incident_id=str(incident.get("id", "")),
                        incident_title=str(incident.get("title", "")),
                        task_id=str(task["id"]),
                        title=str(task.get("title", "")),
                        department=task.get("department"),
                        owner=task.get("owner"),
                        due=str(task.get("due")),
                    )
                )
    tasks.sort(key=lambda t: (t.due, t.incident_id, t.task_id))
    complete = _total(response) <= len(hits)
    return len(tasks), tasks[:top], complete


def _incidents(
    summary: Mapping[str, Any] | None, overdue: Mapping[str, Any] | None, request: SituationRequest
) -> IncidentSummary:
    aggs = _aggs(summary)
    opened = aggs.get("open") or {}
    count, tasks, complete = _overdue_tasks(overdue, request.now, request.top)
    return IncidentSummary(
        open=int(opened.get("doc_count", 0)),
        by_status=_counts(opened.get("by_status")),
        by_severity=_counts(opened.get("by_severity")),
        acknowledge_overdue=int((opened.get("acknowledge_overdue") or {}).get("doc_count", 0)),
        resolve_overdue=int((opened.get("resolve_overdue") or {}).get("doc_count", 0)),
        overdue_tasks=count,
        overdue_task_list=tasks,
        overdue_tasks_complete=complete,
        created_in_range=int((aggs.get("created") or {}).get("doc_count", 0)),
        resolved_in_range=int((aggs.get("resolved") or {}).get("doc_count", 0)),
    )


def _intelligence(
    shared: Mapping[str, Any] | None,
    received: Mapping[str, Any] | None,
    indicators: Mapping[str, Any] | None,
) -> IntelligenceSummary:
    received_aggs = _aggs(received)
    return IntelligenceSummary(
        received=int((received_aggs.get("objects") or {}).get("value") or 0),
        received_by_tlp={
            str(bucket["key"]): int((bucket.get("objects") or {}).get("value") or 0)
            for bucket in _buckets(received_aggs.get("by_tlp"))
        },
        shared=_total(shared),
        shared_by_type=_counts(_aggs(shared).get("by_type")),
        indicators=_total(indicators),
        indicators_by_type=_counts(_aggs(indicators).get("by_type")),
    )


def _sources(response: Mapping[str, Any] | None, request: SituationRequest) -> list[SourceHealth]:
    minutes = max((request.end - request.start).total_seconds() / 60, 1 / 60)
    sources: list[SourceHealth] = []
    for dataset in _buckets(_aggs(response).get("datasets")):
        for department in _buckets(dataset.get("departments")):
            events = int((department.get("in_range") or {}).get("doc_count", 0))
            latest = (department.get("latest_ingested") or {}).get("value")
            lag = (
                round(max(0.0, request.now.timestamp() - latest / 1000), 3)
                if latest is not None
                else None
            )
            rate = events / minutes
            usual_gap = 60 / rate if rate else math.inf
            sources.append(
                SourceHealth(
                    dataset=str(dataset["key"]),
                    department=str(department["key"]),
                    events=events,
                    events_per_minute=round(rate, 3),
                    latest_ingested=_time(latest) if latest is not None else None,
                    lag_seconds=lag,
                    silent=events == 0
                    or lag is None
                    or lag > max(SILENT_AFTER_SECONDS, 10 * usual_gap),
                )
            )
    sources.sort(key=lambda s: (not s.silent, s.department, s.dataset))
    return sources


def _threat_levels(
    events: EventVolume, alerts: Mapping[str, Any] | None, hostile: Mapping[str, Any] | None
) -> list[SectorThreat]:
    open_by_sector = {
        str(bucket["key"]): _counts(bucket.get("by_severity"))
        for bucket in _buckets((_aggs(alerts).get("open") or {}).get("by_sector"))
    }
    hits = _counts((_aggs(hostile).get("critical") or {}).get("by_sector"))
    sectors = sorted(set(events.by_sector) | set(open_by_sector) | set(hits))
    levels: list[SectorThreat] = []
    for sector in sectors:
        open_alerts = {name: open_by_sector.get(sector, {}).get(name, 0) for name in SEVERITIES}
        volume = events.by_sector.get(sector, 0)
        assessment = threat_level(open_alerts, volume, hits.get(sector, 0))
        levels.append(
            SectorThreat(
                sector=sector,
                level=assessment.level,
                name_zh=assessment.name_zh,
                name_en=assessment.name_en,
                score=assessment.score,
                weighted_open_alerts=assessment.weighted_open_alerts,
                open_alerts=open_alerts,
                events=volume,
                critical_asset_hits=hits.get(sector, 0),
            )
        )
    levels.sort(key=lambda t: (-t.level, -t.score, t.sector))
    return levels


def _split_errors(
    responses: list[Mapping[str, Any]],
) -> tuple[dict[str, Mapping[str, Any] | None], list[SectionError]]:
    """Answers by search name; a failed search becomes an error entry and an empty answer."""
    answers: dict[str, Mapping[str, Any] | None] = {}
    errors: list[SectionError] = []
    for name, response in zip(SEARCH_NAMES, responses, strict=True):
        if "error" in response:
            error = response["error"]
            reason = error.get("reason") if isinstance(error, Mapping) else str(error)
            errors.append(SectionError(section=name, reason=str(reason)[:500]))
            answers[name] = None
        else:
            answers[name] = response
    return answers, errors


def shape_situation(
    request: SituationRequest,
    responses: list[Mapping[str, Any]],
    *,
    scope: tuple[str, ...] | None,
    catalogue: AttackLookup | None = None,
    dead_letters: DeadLetterSummary | None = None,
    collector: CollectorSummary | None = None,
) -> Situation:
    """The overview from the msearch answers (in the order of `plan_searches`)."""
    answers, errors = _split_errors(responses)
    starts = bucket_starts(request)
    events = _events(answers["events"], starts)
    return Situation(
        range=TimeRange(
            start=format_timestamp(request.start),
            end=format_timestamp(request.end),
            interval=request.interval,
            interval_seconds=request.interval_seconds,
            timezone=request.timezone,
        ),
        scope=Scope(
            departments=list(scope) if scope is not None else None,
            department_filter=list(request.departments),
            sector_filter=list(request.sectors),
        ),
        generated_at=format_timestamp(request.now),
        events=events,
        alerts=_alerts(answers["alerts"], starts),
        attack=_attack(answers["alerts"], catalogue),
        top_attacked_assets=_attacked_assets(answers["hostile"], request.top),
        top_attacking_sources=_attacking_sources(
            answers["hostile"], answers["alerts"], request.top
        ),
        incidents=_incidents(answers["incidents"], answers["overdue_tasks"], request),
        intelligence=_intelligence(answers["shared"], answers["received"], answers["indicators"]),
        collection=CollectionHealth(
            sources=_sources(answers["collection"], request),
            dead_letters=dead_letters,
            collector=collector,
        ),
        threat_levels=_threat_levels(events, answers["alerts"], answers["hostile"]),
        errors=errors,
    )
