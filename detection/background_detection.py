"""The detection scheduler inside `lianfang serve`: pending windows every `every`, in a thread.

Enabled by `detection_rules.schedule_in_serve`. The thread builds the scheduler on its first
pass (a failure is retried on the next), then runs `run_pending` every `every` — the same
passes as `lianfang detect run`, sharing its saved state, so serve and a separate
`detect run` resume from each other. Nothing a pass does can stop the API: a failing
detector is reported by the scheduler, anything else a pass raises is logged and kept as
the last pass's error; `status()` (GET /api/v1/detection/schedule) shows the last pass.
`stop()` is asked between windows, so shutdown waits at most for the window being run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from detection.scheduled_detection import (
    ScheduledDetection,
    ScheduleTimings,
    build_scheduled_detection,
)
from detection.scheduler import PassReport
from lianfang.schema import format_timestamp
from lianfang.settings import Settings

logger = logging.getLogger(__name__)
THREAD_NAME = "lianfang-detection"


@dataclass
class BackgroundPass:
    """What one background pass did (all of its windows)."""

    started_at: str
    finished_at: str | None = None
    seconds: float = 0.0
    windows: int = 0
    found: int = 0
    created: int = 0
    updated: int = 0
    suppressed: int = 0
    failures: list[str] = field(default_factory=list)  # "detector: error"
    error: str | None = None  # the pass itself failed (store unreachable, ...)

    def add(self, report: PassReport) -> None:
        """Count one window's report."""
        self.windows += 1
        for run in report.runs:
            self.found += run.found
            self.created += run.created
            self.updated += run.updated
            self.suppressed += run.suppressed
            if run.error:
                self.failures.append(f"{run.detector}: {run.error}")


class BackgroundDetection:
    """Runs scheduler passes in a daemon thread until stopped."""

    def __init__(
        self,
        build: Callable[[], ScheduledDetection],
        timings: ScheduleTimings | None,
        configuration_error: str | None = None,
    ) -> None:
        self.build = build
        self.timings = timings
        self.configuration_error = configuration_error
        self._scheduled: ScheduledDetection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._passes = 0
        self._failed_passes = 0
        self._last: BackgroundPass | None = None
        self._next_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, client: Elasticsearch) -> BackgroundDetection:
        """Every detector source, with `[detection_rules]` timings (a bad one is reported)."""
        try:
            timings: ScheduleTimings | None = ScheduleTimings.from_settings(
                settings.detection_rules
            )
            error = None
        except ValueError as problem:
            timings, error = None, str(problem)
        return cls(lambda: build_scheduled_detection(settings, client), timings, error)

    def start(self) -> None:
        """Start the thread (not when the timings could not be read)."""
        if self.timings is None or self._thread is not None:
            if self.configuration_error:
                logger.error("detection in serve not started: %s", self.configuration_error)
            return
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask the thread to stop and wait for it; True when it ended."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        ended = not self._thread.is_alive()
        if not ended:
            logger.warning("detection pass still running after %.0f s at shutdown", timeout)
        return ended

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        assert self.timings is not None
        every = self.timings.every.total_seconds()
        while not self._stop.is_set():
            began = time.monotonic()
            self.run_pass()
            wait = max(0.0, every - (time.monotonic() - began))
            with self._lock:
                self._next_at = datetime.now(UTC) + timedelta(seconds=wait)
            self._stop.wait(wait)

    def run_pass(self) -> BackgroundPass:
        """One pass of pending windows; never raises."""
        assert self.timings is not None
        began = time.perf_counter()
        record = BackgroundPass(started_at=format_timestamp(datetime.now(UTC)))
        try:
            if self._scheduled is None:
                self._scheduled = self.build()
                for problem in self._scheduled.problems:
                    logger.warning("detector source problem: %s", problem)
            for report in self._scheduled.scheduler.run_pending(
                self.timings.window, self.timings.overlap, stop=self._stop.is_set
            ):
                record.add(report)
        except Exception as error:  # the API must outlive any failure of a pass
            record.error = f"{type(error).__name__}: {error}"
            logger.exception("detection pass failed")
        record.seconds = round(time.perf_counter() - began, 3)
        record.finished_at = format_timestamp(datetime.now(UTC))
        for failure in record.failures:
            logger.warning("detector failed: %s", failure)
        logger.info(
            "detection pass: %d windows, %d found, %d new, %d updated in %.1f s",
            record.windows,
            record.found,
            record.created,
            record.updated,
            record.seconds,
        )
        with self._lock:
            self._passes += 1
            self._failed_passes += bool(record.error or record.failures)
            self._last = record
        return record

    def status(self) -> dict[str, Any]:
        """For the status route: whether it runs, how often, the last pass, load problems."""
        with self._lock:
            last = asdict(self._last) if self._last is not None else None
            next_at = format_timestamp(self._next_at) if self._next_at and self.running else None
            return {
                "enabled": True,
                "running": self.running,
                "every_seconds": self.timings.every.total_seconds() if self.timings else None,
                "passes": self._passes,
                "failed_passes": self._failed_passes,
                "detectors": len(self._scheduled.scheduler.detectors) if self._scheduled else 0,
                "problems": list(self._scheduled.problems) if self._scheduled else [],
                "configuration_error": self.configuration_error,
                "last_pass": last,
                "next_pass_at": next_at,
            }
