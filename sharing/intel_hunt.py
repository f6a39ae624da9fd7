"""One intelligence pass: decay and expiry, retro-hunts, alerts and sightings for every match.

`IntelHunter.run` is what `lianfang intel hunt` does (and, split into `find`, the
scheduler's `intel` detector in sharing/intel_detector.py, and `import`/`pull`):

1. re-derive every indicator's effective confidence and state (decay, expiry);
2. retro-hunt each active indicator whose current version was never hunted, over the past
   `retro_hunt_days`, within `retro_hunt_budget_seconds` (unfinished ones wait for the next
   pass);
3. collect the matches the ingest-time stage wrote (`threat.enrichments`) since the last
   pass, by `event.ingested`;
4. for each (indicator, department) match: an alert (`rule.type: intel`) in the alerts
   index unless an exception (detection/alert_exceptions.py) suppresses it, and for each
   kept alert a STIX `sighting` stored locally — raising the indicator's confidence — and,
   for an indicator a TAXII peer sent, queued for that peer: the sighting goes back to the
   indicator's producer.

Progress (versions hunted, the ingest-time bookmark) is saved by `commit`, after the alerts
and sightings: a pass that fails before then is done again by the next one, and alerts and
sightings have deterministic ids, so doing it again duplicates nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from collectors.atomic_file import write_json_atomically
from detection.alert_exceptions import ExceptionStore, apply_exceptions
from detection.alerts import Alert, AlertStore
from lianfang.schema import format_timestamp
from lianfang.settings import Settings
from lianfang.store import IndexNames
from sharing.indicator_confidence import ConfidenceRule
from sharing.indicator_matching import HuntMatch, HuntReport, MatchCollector, retro_hunt
from sharing.intel_store import IndicatorRecord, IntakeReport, IntelStore
from sharing.stix_from_alerts import StixProducer
from sharing.stix_identities import department_identity_id
from sharing.stix_outbox import Outbox
from sharing.stix_validation import validate_objects
from sharing.tlp import parse_level

MATCH_RULE_ID = "intel-indicator-match"
ALERT_WINDOW = timedelta(days=1)
ENRICHMENT_PAGE = 2000


def intel_state_dir(settings: Settings) -> Path:
    """Where the intelligence side keeps its small state files."""
    return settings.home_dir / "intel"


def severity_for(confidence: int) -> str:
    """An intelligence match's alert severity from the indicator's effective confidence."""
    if confidence >= 85:
        return "critical"
    if confidence >= 70:
        return "high"
    if confidence >= 40:
        return "medium"
    return "low"


def peer_of(source: str) -> str | None:
    """The TAXII peer an indicator came from (`taxii:<peer>`), else None."""
    return source.removeprefix("taxii:") if source.startswith("taxii:") else None


@dataclass
class HuntRunReport:
    """Everything one pass did."""

    states: dict[str, int] = field(default_factory=dict)
    retro: HuntReport = field(default_factory=HuntReport)
    ingest_matches: int = 0
    alerts_created: int = 0
    alerts_updated: int = 0
    alerts_suppressed: int = 0
    sightings: int = 0
    sightings_queued: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For --json output."""
        return {
            "states": self.states,
            "retro_hunt": self.retro.as_dict(),
            "ingest_matches": self.ingest_matches,
            "alerts_created": self.alerts_created,
            "alerts_updated": self.alerts_updated,
            "alerts_suppressed": self.alerts_suppressed,
            "sightings": self.sightings,
            "sightings_queued": self.sightings_queued,
            "problems": self.problems,
        }


@dataclass
class HuntFindings:
    """What `find` found, before anything is raised; `commit` saves the progress it made."""

    report: HuntRunReport
    matches: list[HuntMatch]
    now: datetime
    enrichments_read: bool  # whether the ingest-time bookmark moves to `now` on commit


class IntelHunter:
    """Runs intelligence passes for one deployment."""

    def __init__(self, settings: Settings, client: Elasticsearch) -> None:
        self.settings = settings
        self.client = client
        self.store = IntelStore(
            client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel)
        )
        self.outbox = Outbox(client, settings.index_prefix)
        self.alerts = AlertStore(client, settings.index_prefix)
        self.events_index = IndexNames(settings.index_prefix).events_alias
        self.state_file = intel_state_dir(settings) / "hunt-state.json"
        self._producer: StixProducer | None = None

    @property
    def producer(self) -> StixProducer:
        """Built on first use (it needs the masking key)."""
        if self._producer is None:
            self._producer = StixProducer.from_settings(self.settings)
        return self._producer

    def run(
        self,
        now: datetime | None = None,
        *,
        days: int | None = None,
        budget_seconds: float | None = None,
        ingest_matches: bool = True,
    ) -> HuntRunReport:
        """One pass (see the module docstring)."""
        findings = self.find(
            now, days=days, budget_seconds=budget_seconds, ingest_matches=ingest_matches
        )
        self.raise_matches(findings.matches, findings.now, findings.report)
        self.commit(findings)
        return findings.report

    def find(
        self,
        now: datetime | None = None,
        *,
        days: int | None = None,
        budget_seconds: float | None = None,
        ingest_matches: bool = True,
    ) -> HuntFindings:
        """Steps 1-3 of a pass: states, retro-hunt, ingest-time matches; nothing raised yet."""
        now = now or datetime.now(UTC)
        intel = self.settings.intel
        report = HuntRunReport()
        self.store.install()
        report.states = self.store.refresh_states(now)
        pending = self.store.pending_hunts()
        horizon = intel.retro_hunt_days if days is None else days
        report.retro = retro_hunt(
            self.client,
            self.events_index,
            pending,
            start=now - timedelta(days=horizon),
            end=now + timedelta(seconds=1),
            budget_seconds=intel.retro_hunt_budget_seconds
            if budget_seconds is None
            else budget_seconds,
            batch_size=intel.retro_hunt_batch_size,
            max_candidates=intel.matcher_max_candidates,
        )
        matches = list(report.retro.matches)
        if ingest_matches:
            found = self.enrichment_matches(now)
            report.ingest_matches = len(found)
            matches += found
        return HuntFindings(report, self.worth_raising(matches), now, ingest_matches)

    def commit(self, findings: HuntFindings) -> None:
        """Save a pass's progress once its alerts and sightings are stored."""
        self.store.mark_hunted(findings.report.retro.hunted, findings.now)
        if findings.enrichments_read:
            state = self._load_state()
            state["enrichments_ingested_until"] = format_timestamp(findings.now)
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.state_file, state)

    # ------------------------------------------------------------------ ingest-time matches

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def enrichment_matches(self, now: datetime) -> list[HuntMatch]:
        """Matches the ingest-time stage recorded since the last pass (by `event.ingested`)."""
        since = self._load_state().get("enrichments_ingested_until")
        bounds: dict[str, str] = {"lte": format_timestamp(now)}
        if since:
            bounds["gt"] = since
        query = {
            "bool": {
                "filter": [
                    {"exists": {"field": "threat.enrichments.matched.id"}},
                    {"range": {"event.ingested": bounds}},
                ]
            }
        }
        matches = MatchCollector()
        records: dict[str, IndicatorRecord | None] = {}
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": ENRICHMENT_PAGE,
                "query": query,
                "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
                "_source": [
                    "@timestamp",
                    "event.id",
                    "organization",
                    "labels.sector",
                    "threat.enrichments",
                ],
            }
            if after is not None:
                body["search_after"] = after
            hits = self.client.search(
                index=self.events_index, ignore_unavailable=True, allow_no_indices=True, **body
            )["hits"]["hits"]
            for hit in hits:
                document = hit["_source"]
                for enrichment in (document.get("threat") or {}).get("enrichments") or ():
                    matched = enrichment.get("matched") or {}
                    indicator_id = matched.get("id")
                    if not isinstance(indicator_id, str):
                        continue
                    if indicator_id not in records:
                        records[indicator_id] = self.store.get(indicator_id)
                    record = records[indicator_id]
                    if record is not None:
                        matches.add(
                            record, document, matched.get("field", ""), matched.get("atomic", "")
                        )
            if len(hits) < ENRICHMENT_PAGE:
                break
            after = hits[-1]["sort"]
        return list(matches.by_key.values())

    # ------------------------------------------------------------------ alerts and sightings

    def match_alert(self, match: HuntMatch) -> Alert:
        """The alert one match raises."""
        indicator = match.indicator
        label = indicator.name or indicator.pattern
        entity_type = match.matched_field if match.atomic else "threat.indicator.id"
        entity_value = match.atomic or indicator.stix_id
        assert match.first_seen is not None and match.last_seen is not None
        return Alert(
            rule_id=MATCH_RULE_ID,
            rule_name="Threat-intelligence indicator match",
            rule_type="intel",
            severity=severity_for(indicator.effective_confidence),
            entity_type=entity_type,
            entity_value=entity_value,
            first_seen=match.first_seen,
            last_seen=match.last_seen,
            explanation=(
                f"{match.count} events matched indicator {label} ({indicator.stix_id}) "
                f"from {indicator.source}, confidence {indicator.effective_confidence}"
            ),
            organization_id=match.department_id,
            organization_name=match.department_name,
            sector=match.sector,
            count=match.count,
            evidence_event_ids=match.event_ids,
            evidence_index=self.events_index,
            window=ALERT_WINDOW,
            entity_fields={"threat.indicator.id": indicator.stix_id},
        )

    def worth_raising(self, matches: list[HuntMatch]) -> list[HuntMatch]:
        """The matches that raise alerts: a department matching its own published indicator learns nothing new."""
        province = self.settings.intel.province_name
        return [
            m
            for m in matches
            if m.indicator.producer is None
            or m.department_id is None
            or m.indicator.producer != department_identity_id(m.department_id, province)
        ]

    def raise_matches(self, matches: list[HuntMatch], now: datetime, report: HuntRunReport) -> None:
        """Alerts for the matches (less exceptions), and a sighting for each alert kept."""
        if not matches:
            return
        pairs = [(m, self.match_alert(m)) for m in matches]
        exceptions = ExceptionStore(self.client, self.settings.index_prefix)
        split = apply_exceptions([alert for _, alert in pairs], exceptions.entries(), now)
        exceptions.record(split.suppressed, now)
        report.alerts_suppressed += len(split.suppressed)
        self.alerts.install()
        upserted = self.alerts.upsert(split.kept, now)
        report.alerts_created += upserted.created
        report.alerts_updated += upserted.updated
        self.alerts.refresh()
        kept = {alert.id for alert in split.kept}
        self.share_sightings([(m, a) for m, a in pairs if a.id in kept], now, report)

    def share_sightings(
        self, pairs: list[tuple[HuntMatch, Alert]], now: datetime, report: HuntRunReport
    ) -> None:
        """A sighting per stored match alert: stored locally, and queued for the producing peer."""
        if not pairs:
            return
        local_objects: list[dict[str, Any]] = []
        for match, alert in pairs:
            document = self.alerts.get(alert.id)
            if document is None:
                continue
            tlp = parse_level(match.indicator.tlp) if match.indicator.tlp else None
            export = self.producer.sighting_objects(document, match.indicator.stix_id, tlp)
            objects = list(export.objects.values())
            invalid = validate_objects(objects).invalid
            if invalid:
                report.problems.append(
                    f"sighting of {match.indicator.stix_id}: {invalid[0].object_id}: {invalid[0].errors}"
                )
                continue
            local_objects += objects
            report.sightings += 1
            peer = peer_of(match.indicator.source)
            if peer is not None:
                report.sightings_queued += bool(
                    self.outbox.add(
                        objects, audience=[peer], origin=f"sighting:{alert.id}", now=now
                    )
                )
        intake: IntakeReport = self.store.intake(local_objects, source="local", now=now)
        report.problems += intake.quarantine_reasons
