"""The situation overview as the API returns it (GET /api/v1/situation): typed, documented records."""

from __future__ import annotations

from pydantic import BaseModel

from lianfang.collection_health import CollectorSummary, DeadLetterSummary


class TimeRange(BaseModel):
    """The range the overview covers and the width of its histogram buckets."""

    start: str
    end: str
    interval: str
    interval_seconds: int
    timezone: str


class Scope(BaseModel):
    """Whose data the overview covers: the caller's departments (None: all) and filters."""

    departments: list[str] | None
    department_filter: list[str]
    sector_filter: list[str]


class VolumeBucket(BaseModel):
    """One histogram bucket: its start and counts (top sectors and departments only)."""

    time: str
    count: int
    by_sector: dict[str, int]
    by_department: dict[str, int]


class EventVolume(BaseModel):
    """Events in the range: total, per sector and department, and over time."""

    total: int
    by_sector: dict[str, int]
    by_department: dict[str, int]
    over_time: list[VolumeBucket]


class AlertSummary(BaseModel):
    """Alerts active in the range (first seen before its end, last seen after its start)."""

    total: int
    open: int
    by_severity: dict[str, int]
    open_by_severity: dict[str, int]
    by_status: dict[str, int]
    by_sector: dict[str, int]
    by_department: dict[str, int]
    new_over_time: list[VolumeBucket]


class TacticCount(BaseModel):
    """Alerts naming one ATT&CK tactic."""

    id: str
    name: str
    alerts: int


class TechniqueCount(BaseModel):
    """Alerts naming one ATT&CK technique, with the technique's tactics."""

    id: str
    name: str
    alerts: int
    tactics: list[str]


class HeatCell(BaseModel):
    """One cell of the ATT&CK heat map: a technique under one of its tactics."""

    tactic_id: str
    tactic_name: str
    technique_id: str
    technique_name: str
    alerts: int


class AttackSummary(BaseModel):
    """ATT&CK tactics and techniques seen in alerts, and the heat-map cells."""

    tactics: list[TacticCount]
    techniques: list[TechniqueCount]
    heatmap: list[HeatCell]
    catalogue_version: str | None


class AttackedAsset(BaseModel):
    """A target of hostile events (an address, or a host that names no destination)."""

    asset: str
    kind: str  # ip | host
    name: str | None
    criticality: str | None
    department: str | None
    hostile_events: int


class AttackingSource(BaseModel):
    """A source address named by alerts or by hostile events."""

    source: str
    alerts: int
    worst_severity: str | None
    hostile_events: int
    departments: list[str]


class OverdueTask(BaseModel):
    """An open task of an open incident, past its due time."""

    incident_id: str
    incident_title: str
    task_id: str
    title: str
    department: str | None
    owner: str | None
    due: str


class IncidentSummary(BaseModel):
    """Open incidents now, SLA breaches, overdue tasks; created and resolved in the range."""

    open: int
    by_status: dict[str, int]
    by_severity: dict[str, int]
    acknowledge_overdue: int
    resolve_overdue: int
    overdue_tasks: int
    overdue_task_list: list[OverdueTask]
    overdue_tasks_complete: bool
    created_in_range: int
    resolved_in_range: int


class IntelligenceSummary(BaseModel):
    """Threat intelligence received and shared in the range (zeros without the indices)."""

    received: int
    received_by_tlp: dict[str, int]
    shared: int
    shared_by_type: dict[str, int]
    indicators: int
    indicators_by_type: dict[str, int]


class SourceHealth(BaseModel):
    """One event source (`event.dataset`) of one department."""

    dataset: str
    department: str
    events: int
    events_per_minute: float
    latest_ingested: str | None
    lag_seconds: float | None
    silent: bool


class CollectionHealth(BaseModel):
    """Per-source rates and lag; dead letters and the collector (province-wide callers only)."""

    sources: list[SourceHealth]
    dead_letters: DeadLetterSummary | None
    collector: CollectorSummary | None


class SectorThreat(BaseModel):
    """The threat level of one sector and the inputs of its formula."""

    sector: str
    level: int
    name_zh: str
    name_en: str
    score: float
    weighted_open_alerts: float
    open_alerts: dict[str, int]
    events: int
    critical_asset_hits: int


class SectionError(BaseModel):
    """A part of the overview Elasticsearch could not compute (the rest is still there)."""

    section: str
    reason: str


class Situation(BaseModel):
    """The situation overview for one caller and time range."""

    range: TimeRange
    scope: Scope
    generated_at: str
    events: EventVolume
    alerts: AlertSummary
    attack: AttackSummary
    top_attacked_assets: list[AttackedAsset]
    top_attacking_sources: list[AttackingSource]
    incidents: IncidentSummary
    intelligence: IntelligenceSummary
    collection: CollectionHealth
    threat_levels: list[SectorThreat]
    errors: list[SectionError]
