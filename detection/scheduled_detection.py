"""The detection scheduler as the settings describe it, shared by `detect run` and `serve`.

`build_scheduled_detection` loads the detectors of the named sources (default: all) and
wires them to the alerts, exceptions and state stores of the deployment's index prefix;
`ScheduleTimings` reads `every`, `window` and `overlap` of `[detection_rules]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from elasticsearch import Elasticsearch

from detection.alert_exceptions import ExceptionStore
from detection.alerts import AlertStore
from detection.detector import DetectorContext, load_detectors
from detection.rule_format import parse_duration
from detection.scheduler import DetectionScheduler, DetectionStateStore
from lianfang.settings import DetectionRuleSettings, Settings
from lianfang.store import IndexNames


@dataclass(frozen=True)
class ScheduleTimings:
    """How often a pass runs, how long a window is, how much of the last one is re-read."""

    every: timedelta
    window: timedelta
    overlap: timedelta

    @classmethod
    def from_settings(cls, config: DetectionRuleSettings) -> ScheduleTimings:
        """From `[detection_rules]`; ValueError names the setting that is not a duration."""
        values: dict[str, timedelta] = {}
        for name in ("every", "window", "overlap"):
            try:
                values[name] = parse_duration(getattr(config, name))
            except ValueError as error:
                raise ValueError(f"detection_rules.{name}: {error}") from error
        return cls(**values)


@dataclass
class ScheduledDetection:
    """A scheduler ready to run, and what its detector sources could not load."""

    scheduler: DetectionScheduler
    problems: list[str] = field(default_factory=list)


def build_scheduled_detection(
    settings: Settings,
    client: Elasticsearch,
    sources: list[str] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ScheduledDetection:
    """The scheduler over every detector of these sources (UnknownDetectorSource if unknown)."""
    prefix = settings.index_prefix
    loaded = load_detectors(
        DetectorContext(settings, client, IndexNames(prefix).events_alias), sources
    )
    scheduler = DetectionScheduler(
        loaded.detectors,
        AlertStore(client, prefix),
        ExceptionStore(client, prefix),
        DetectionStateStore(client, prefix),
        clock,
    )
    return ScheduledDetection(scheduler, loaded.problems)
