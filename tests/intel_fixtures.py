"""Intelligence shared by the intel tests: STIX indicators, the intelligence store, and
network events ingested into the real node (as the finance department)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from lianfang.settings import Settings
from lianfang.store import EventStore
from sharing.indicator_confidence import ConfidenceRule
from sharing.intel_store import IntelStore
from sharing.stix_ids import deterministic_id, stix_timestamp
from sharing.tlp import TLP_2_IDS, TlpLevel

PRODUCER = "identity--5a1b2c3d-0000-4000-8000-0000000000aa"


def indicator(
    key: str, pattern: str, *, confidence: int = 60, modified: datetime | None = None, **extra: Any
) -> dict[str, Any]:
    """A valid STIX 2.1 indicator with a deterministic id (modified a day ago by default)."""
    moment = modified or datetime.now(UTC) - timedelta(days=1)
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": deterministic_id("indicator", "test", key),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": stix_timestamp(moment),
        "created_by_ref": PRODUCER,
        "name": key,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
        "confidence": confidence,
        "object_marking_refs": [TLP_2_IDS[TlpLevel.GREEN]],
        **extra,
    }


def intel_store(client: Elasticsearch, settings: Settings) -> IntelStore:
    """The intelligence store of these settings."""
    return IntelStore(client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel))


def ingest_events(
    settings: Settings,
    store: EventStore,
    path: Path,
    events: list[dict[str, Any]],
    indicators: Any = None,
) -> None:
    """Write the events as JSON lines to `path` and ingest them as the finance department."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    report, _ = ingest_records(
        file_records(path),
        settings=settings,
        store=store,
        format_name="json",
        department=Department("finance", "省财政厅", "finance"),
        indicators=indicators,
    )
    assert report.dead_lettered == 0
    store.refresh()


def event(minutes_ago: int, **fields: Any) -> dict[str, Any]:
    """A network event some minutes ago, with these ECS fields."""
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"@timestamp": moment.isoformat(), "event": {"category": ["network"]}, **fields}


def connection(minutes_ago: int, source_ip: str, destination_ip: str) -> dict[str, Any]:
    """A network event from one address to another, some minutes ago."""
    return event(minutes_ago, source={"ip": source_ip}, destination={"ip": destination_ip})


def stored_indicator(
    intel: IntelStore, key: str, pattern: str, source: str, confidence: int = 75
) -> dict[str, Any]:
    """An indicator, taken in by the intelligence store from `source`."""
    created = indicator(key, pattern, confidence=confidence)
    intel.intake([created], source=source)
    return created
