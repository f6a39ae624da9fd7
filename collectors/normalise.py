"""The normalisation stage: a parsed document becomes a complete, storable `Event`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lianfang.schema import (
    ECS_VERSION,
    Event,
    Origin,
    document_id,
    format_timestamp,
    parse_timestamp,
)

# Events dated outside this window around their reception keep their claimed time in
# `log.original_timestamp` but are filed at reception time, so a broken clock can
# neither hide an event in 1970 nor create indices years ahead.
OLDEST_ACCEPTED = timedelta(days=3650)
NEWEST_ACCEPTED = timedelta(days=1)


@dataclass(frozen=True)
class Department:
    """The department (and its critical sector) that sent the data."""

    id: str
    name: str | None = None
    sector: str | None = None


@dataclass(frozen=True)
class Normaliser:
    """Completes parsed documents: timestamps, ECS version, department, event.original."""

    keep_original: bool = True
    department: Department | None = None

    def __call__(
        self, document: dict[str, Any], original: str | None, origin: Origin, received: datetime
    ) -> Event:
        """Build the Event for one parsed document."""
        event = document.setdefault("event", {})
        event.setdefault("kind", "event")
        event["ingested"] = format_timestamp(received)
        if not self.keep_original:
            event.pop("original", None)
        elif original is not None:
            event["original"] = original
        # A decoded record (EVTX, Parquet) keeps the event.original it already carries.
        document.setdefault("ecs", {})["version"] = ECS_VERSION
        self._check_time(document, received)
        if self.department is not None:
            organization = document.setdefault("organization", {})
            organization.setdefault("id", self.department.id)
            if self.department.name:
                organization.setdefault("name", self.department.name)
            if self.department.sector:
                document.setdefault("labels", {}).setdefault("sector", self.department.sector)
        return Event(document=document, origin=origin, id=document_id(origin, original))

    @staticmethod
    def _check_time(document: dict[str, Any], received: datetime) -> None:
        claimed = parse_timestamp(document["@timestamp"])
        if received - OLDEST_ACCEPTED <= claimed <= received + NEWEST_ACCEPTED:
            return
        document.setdefault("log", {})["original_timestamp"] = document["@timestamp"]
        document["@timestamp"] = format_timestamp(received)
        tags = document.setdefault("tags", [])
        if isinstance(tags, list):
            tags.append("timestamp_out_of_range")
