"""Alerts: the record every detector emits, and the index that groups and keeps them.

An alert is identified by (rule, entity, grouping window): the same rule firing for the
same entity within one window updates one alert instead of creating many, and running a
detection again over the same window changes nothing. Updates are read-merge-write with
optimistic concurrency (`if_seq_no`), because the core Elasticsearch has no scripting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from lianfang.schema import format_timestamp, parse_timestamp
from lianfang.store import IndexNames, mapping_properties

SEVERITIES = ("low", "medium", "high", "critical")
# Sigma levels and our severities share names; "informational" maps to low.
SEVERITY_SCORES = {"low": 21, "medium": 47, "high": 73, "critical": 99}
STATUSES = ("open", "acknowledged", "closed")
RESOLUTIONS = ("true_positive", "false_positive")
EVIDENCE_CAP = 500
UPSERT_BATCH = 500
ALERT_TEMPLATE_VERSION = 1

ALERT_FIELDS: dict[str, str] = {
    "@timestamp": "date",
    "event.kind": "keyword",
    "event.severity": "long",
    "organization.id": "keyword",
    "organization.name": "keyword",
    "labels.sector": "keyword",
    "rule.id": "keyword",
    "rule.name": "keyword",
    "rule.type": "keyword",
    "rule.version": "keyword",
    "threat.framework": "keyword",
    "threat.tactic.id": "keyword",
    "threat.tactic.name": "keyword",
    "threat.technique.id": "keyword",
    "threat.technique.name": "keyword",
    "alert.id": "keyword",
    "alert.severity": "keyword",
    "alert.risk_score": "float",
    "alert.entity.type": "keyword",
    "alert.entity.value": "keyword",
    "alert.window.start": "date",
    "alert.window.end": "date",
    "alert.first_seen": "date",
    "alert.last_seen": "date",
    "alert.count": "long",
    "alert.evidence.event_ids": "keyword",
    "alert.evidence.index": "keyword",
    "alert.explanation": "text",
    "alert.status": "keyword",
    "alert.resolution": "keyword",
    "alert.assignee": "keyword",
    "alert.updated_at": "date",
    "alert.created_at": "date",
}


@dataclass(frozen=True)
class AttackTechnique:
    """One ATT&CK technique with its tactics, as named in the ATT&CK data."""

    id: str
    name: str
    tactics: tuple[tuple[str, str], ...] = ()  # (TA id, tactic name)


@dataclass
class Alert:
    """One detection: what fired, about whom, when, why, and how sure."""

    rule_id: str
    rule_name: str
    rule_type: str  # sigma, behavioural, anomaly, intel
    severity: str
    entity_type: str  # the ECS field that names the entity, e.g. source.ip
    entity_value: str
    first_seen: datetime
    last_seen: datetime
    explanation: str
    organization_id: str | None = None
    organization_name: str | None = None
    sector: str | None = None
    count: int = 1
    evidence_event_ids: list[str] = field(default_factory=list)
    evidence_index: str | None = None
    techniques: list[AttackTechnique] = field(default_factory=list)
    risk_score: float | None = None
    rule_version: str | None = None
    window: timedelta = timedelta(hours=1)
    # The values that name the entity when it spans several fields (e.g. source.ip and
    # destination.ip of a beaconing pair); exceptions match on them.
    entity_fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def window_start(self) -> datetime:
        """The start of the grouping window that holds first_seen."""
        seconds = int(self.window.total_seconds())
        epoch = int(self.first_seen.timestamp())
        return datetime.fromtimestamp(epoch - epoch % seconds, UTC)

    @property
    def id(self) -> str:
        """Deterministic: the same rule, department, entity and window give the same alert."""
        key = "\x00".join(
            [
                self.rule_id,
                self.organization_id or "",
                self.entity_type,
                self.entity_value,
                format_timestamp(self.window_start),
            ]
        )
        return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()

    def document(self, now: datetime) -> dict[str, Any]:
        """The alert as stored."""
        tactics = sorted({tactic for technique in self.techniques for tactic in technique.tactics})
        document: dict[str, Any] = {
            "@timestamp": format_timestamp(self.last_seen),
            "event": {"kind": "alert", "severity": SEVERITIES.index(self.severity) + 1},
            "rule": {"id": self.rule_id, "name": self.rule_name, "type": self.rule_type},
            "alert": {
                "id": self.id,
                "severity": self.severity,
                "risk_score": self.risk_score
                if self.risk_score is not None
                else SEVERITY_SCORES[self.severity],
                "entity": {"type": self.entity_type, "value": self.entity_value},
                "window": {
                    "start": format_timestamp(self.window_start),
                    "end": format_timestamp(self.window_start + self.window),
                },
                "first_seen": format_timestamp(self.first_seen),
                "last_seen": format_timestamp(self.last_seen),
                "count": self.count,
                "evidence": {"event_ids": self.evidence_event_ids[:EVIDENCE_CAP]},
                "explanation": self.explanation,
                "status": "open",
                "created_at": format_timestamp(now),
                "updated_at": format_timestamp(now),
            },
        }
        if self.entity_fields:
            document["alert"]["entity"]["fields"] = dict(self.entity_fields)
        if self.rule_version:
            document["rule"]["version"] = self.rule_version
        if self.evidence_index:
            document["alert"]["evidence"]["index"] = self.evidence_index
        if self.techniques:
            document["threat"] = {
                "framework": "MITRE ATT&CK",
                "technique": {
                    "id": [t.id for t in self.techniques],
                    "name": [t.name for t in self.techniques],
                },
                "tactic": {"id": [t[0] for t in tactics], "name": [t[1] for t in tactics]},
            }
        if self.organization_id:
            document["organization"] = {"id": self.organization_id}
            if self.organization_name:
                document["organization"]["name"] = self.organization_name
        if self.sector:
            document["labels"] = {"sector": self.sector}
        return document


def merge_alert(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a new detection of the same alert into the stored one (pure, idempotent).

    Evidence is the union of event ids (up to EVIDENCE_CAP); the count is the size of that
    union while it is below the cap, else the larger of the two counts, so re-running a
    window never inflates it. Triage state (status, assignee, resolution) is kept.
    """
    merged = {**existing}
    old, fresh = existing["alert"], new["alert"]
    evidence = list(dict.fromkeys(old["evidence"]["event_ids"] + fresh["evidence"]["event_ids"]))
    alert = {**old}
    alert["first_seen"] = min(old["first_seen"], fresh["first_seen"], key=parse_timestamp)
    alert["last_seen"] = max(old["last_seen"], fresh["last_seen"], key=parse_timestamp)
    if len(evidence) < EVIDENCE_CAP:
        alert["count"] = max(len(evidence), old["count"], fresh["count"])
    else:
        alert["count"] = max(old["count"], fresh["count"])
    alert["evidence"] = {**old["evidence"], "event_ids": evidence[:EVIDENCE_CAP]}
    alert["explanation"] = fresh["explanation"]
    alert["severity"] = max(old["severity"], fresh["severity"], key=SEVERITIES.index)
    alert["risk_score"] = max(old["risk_score"], fresh["risk_score"])
    changed = alert != old
    if changed:
        alert["updated_at"] = fresh["updated_at"]
    merged["alert"] = alert
    merged["@timestamp"] = alert["last_seen"]
    return merged


@dataclass
class UpsertReport:
    """How many alerts were created, updated with new evidence, or already known."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


class AlertStore:
    """The alerts index (`<prefix>-alerts`): one mutable document per alert id."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).alerts

    def install(self) -> None:
        """Create the alerts index with explicit mappings if it does not exist."""
        if self.client.indices.exists(index=self.index):
            return
        self.client.indices.create(
            index=self.index,
            settings={"number_of_shards": 1, "number_of_replicas": 0},
            mappings={
                "dynamic": True,
                "_meta": {"version": ALERT_TEMPLATE_VERSION},
                "properties": mapping_properties(ALERT_FIELDS),
            },
        )

    def upsert(self, alerts: list[Alert], now: datetime | None = None) -> UpsertReport:
        """Create or merge each alert; safe to call again with the same detections.

        Alerts are read with one mget and written with one bulk request per UPSERT_BATCH
        (a Sigma run over a day raises hundreds); a write that meets a concurrent change
        (409) is redone one at a time with the read-merge-write retry of `_upsert_one`.
        """
        now = now or datetime.now(UTC)
        report = UpsertReport()
        documents: dict[str, dict[str, Any]] = {}
        for alert in alerts:
            document = alert.document(now)
            alert_id = document["alert"]["id"]
            if alert_id in documents:  # the same alert twice in one call: fold it first
                document = merge_alert(documents[alert_id], document)
            documents[alert_id] = document
        pending = list(documents.values())
        for start in range(0, len(pending), UPSERT_BATCH):
            self._upsert_batch(pending[start : start + UPSERT_BATCH], report)
        return report

    def _upsert_batch(self, documents: list[dict[str, Any]], report: UpsertReport) -> None:
        ids = [document["alert"]["id"] for document in documents]
        found = self.client.mget(index=self.index, ids=ids)["docs"]
        operations: list[dict[str, Any]] = []
        written: list[tuple[dict[str, Any], str]] = []  # (new detection, outcome) per operation
        for document, current in zip(documents, found, strict=True):
            if not current.get("found"):
                operations += [{"create": {"_id": document["alert"]["id"]}}, document]
                written.append((document, "created"))
                continue
            merged = merge_alert(current["_source"], document)
            if merged == current["_source"]:
                report.unchanged += 1
                continue
            header = {
                "_id": document["alert"]["id"],
                "if_seq_no": current["_seq_no"],
                "if_primary_term": current["_primary_term"],
            }
            operations += [{"index": header}, merged]
            written.append((document, "updated"))
        if not operations:
            return
        response = self.client.bulk(index=self.index, operations=operations)
        for (document, outcome), item in zip(written, response["items"], strict=True):
            result = next(iter(item.values()))
            if result.get("status") == 409:
                self._upsert_one(document, report)  # changed meanwhile: merge with theirs
            elif "error" in result:
                raise RuntimeError(f"alert {result.get('_id')} not written: {result['error']}")
            else:
                setattr(report, outcome, getattr(report, outcome) + 1)

    def _upsert_one(
        self, document: dict[str, Any], report: UpsertReport, attempts: int = 5
    ) -> None:
        alert_id = document["alert"]["id"]
        for _ in range(attempts):
            try:
                current = self.client.get(index=self.index, id=alert_id)
            except NotFoundError:
                try:
                    self.client.create(index=self.index, id=alert_id, document=document)
                    report.created += 1
                    return
                except ConflictError:
                    continue  # someone created it meanwhile: merge with theirs
            merged = merge_alert(current["_source"], document)
            if merged == current["_source"]:
                report.unchanged += 1
                return
            try:
                self.client.index(
                    index=self.index,
                    id=alert_id,
                    document=merged,
                    if_seq_no=current["_seq_no"],
                    if_primary_term=current["_primary_term"],
                )
                report.updated += 1
                return
            except ConflictError:
                continue
        raise RuntimeError(f"alert {alert_id} kept changing under {attempts} merge attempts")

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """One alert by id."""
        try:
            return self.client.get(index=self.index, id=alert_id)["_source"]
        except NotFoundError:
            return None

    def refresh(self) -> None:
        """Make written alerts searchable."""
        self.client.indices.refresh(index=self.index)
