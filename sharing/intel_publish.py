"""Publishing: alerts and joint incidents become validated STIX in the outbox, under their TLP.

A record is published only if every object made from it passes the OASIS validator;
otherwise nothing of it is queued and the reasons are reported. Published indicators also
enter the local intelligence store (source `local`), so what one department detected is
matched at ingest in every other department's events — the joint defence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from detection.alerts import SEVERITIES, AlertStore
from lianfang.settings import Settings
from lianfang.store import IndexNames
from sharing.indicator_confidence import ConfidenceRule
from sharing.intel_store import IntelStore
from sharing.stix_from_alerts import StixExport, StixProducer
from sharing.stix_outbox import EVERYONE, Outbox
from sharing.stix_validation import validate_objects
from sharing.tlp import TlpLevel


@dataclass
class PublishReport:
    """What was published, held back and why."""

    published: list[str] = field(default_factory=list)  # record ids
    objects_queued: int = 0
    indicators: int = 0
    withheld: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # records whose STIX did not validate
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For --json output."""
        return {
            "published": self.published,
            "objects_queued": self.objects_queued,
            "indicators": self.indicators,
            "withheld": self.withheld,
            "refused": self.refused,
            "missing": self.missing,
        }


class Publisher:
    """Turns alerts and incidents into shared STIX."""

    def __init__(
        self, settings: Settings, client: Elasticsearch, producer: StixProducer | None = None
    ) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer or StixProducer.from_settings(settings)
        self.alerts = AlertStore(client, settings.index_prefix)
        self.outbox = Outbox(client, settings.index_prefix)
        self.store = IntelStore(
            client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel)
        )
        self.incidents_index = IndexNames(settings.index_prefix).incidents

    def publish_alerts(
        self, alert_ids: Iterable[str], tlp: TlpLevel | None = None, now: datetime | None = None
    ) -> PublishReport:
        """Publish these alerts (by id)."""
        report = PublishReport()
        for alert_id in dict.fromkeys(alert_ids):
            document = self.alerts.get(alert_id)
            if document is None:
                report.missing.append(alert_id)
                continue
            self._queue(
                f"alert:{alert_id}", self.producer.alert_objects(document, tlp), report, now
            )
        return report

    def publish_recent(
        self, since: datetime, tlp: TlpLevel | None = None, now: datetime | None = None
    ) -> PublishReport:
        """Publish alerts active since a moment, at or above `publish_min_severity`.

        Intelligence-match alerts are left out (they travel as sightings), and so are alerts
        closed as false positives.
        """
        minimum = SEVERITIES.index(self.settings.intel.publish_min_severity)
        query = {
            "bool": {
                "filter": [
                    {"range": {"alert.last_seen": {"gte": since.isoformat()}}},
                    {"terms": {"alert.severity": list(SEVERITIES[minimum:])}},
                ],
                "must_not": [
                    {"term": {"rule.type": "intel"}},
                    {"term": {"alert.resolution": "false_positive"}},
                ],
            }
        }
        if not self.client.indices.exists(index=self.alerts.index):
            return PublishReport()
        self.alerts.refresh()
        ids: list[str] = []
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": 1000, "query": query, "sort": [{"alert.id": "asc"}]}
            if after is not None:
                body["search_after"] = after
            hits = self.client.search(index=self.alerts.index, **body)["hits"]["hits"]
            ids += [hit["_source"]["alert"]["id"] for hit in hits]
            if len(hits) < 1000:
                break
            after = hits[-1]["sort"]
        return self.publish_alerts(ids, tlp, now)

    def publish_incident(
        self, incident_id: str, tlp: TlpLevel | None = None, now: datetime | None = None
    ) -> PublishReport:
        """Publish a joint incident with its alerts, tasks and a report bundling them."""
        report = PublishReport()
        try:
            document = self.client.get(index=self.incidents_index, id=incident_id)["_source"]
        except NotFoundError:
            report.missing.append(incident_id)
            return report
        alerts = []
        for alert_id in document["incident"].get("alert_ids") or ():
            alert = self.alerts.get(alert_id)
            if alert is None:
                report.missing.append(alert_id)
            else:
                alerts.append(alert)
        export = self.producer.incident_objects(document, alerts, tlp)
        self._queue(f"incident:{incident_id}", export, report, now)
        return report

    def _queue(
        self, origin: str, export: StixExport, report: PublishReport, now: datetime | None
    ) -> None:
        objects = list(export.objects.values())
        report.withheld += [f"{origin}: {reason}" for reason in export.withheld]
        validation = validate_objects(objects)
        if not validation.valid:
            for result in validation.invalid:
                report.refused.append(f"{origin}: {result.object_id}: {'; '.join(result.errors)}")
            return
        if not any(o["type"] in ("indicator", "sighting", "incident") for o in objects):
            return  # only reference objects: nothing about this record can be shared
        report.objects_queued += self.outbox.add(
            objects, audience=[EVERYONE], origin=origin, now=now
        )
        indicators = [o for o in objects if o["type"] in ("indicator", "sighting")]
        intake = self.store.intake(indicators, source="local", now=now)
        report.indicators += intake.indicators_new + intake.indicators_updated
        report.published.append(origin)
