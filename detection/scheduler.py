"""The detection scheduler: every detector over sliding windows, exceptions, idempotent upserts.

Each pass covers [last completed end - overlap, now): the overlap re-reads recent events so
that late arrivals are still seen, and AlertStore's deterministic grouping makes reading
them twice harmless. The end of the last completed window is kept in
`<prefix>-detection-state`, so a restarted scheduler resumes where it stopped; a long gap
is caught up in chunks of at most one window.

Two optional parts of a detector (beyond `name` and `run`): `once_per_pass = True` runs it
only with the last window of a pass (a catch-up or a backfill), for detectors that look at
something other than the window (the `intel` detector); `alerts_stored(kept, now)`, called
with the alerts that passed the exceptions once they are stored, returns details that the
pass report shows next to the detector's counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from detection.alert_exceptions import ExceptionStore, apply_exceptions
from detection.alerts import AlertStore
from detection.detector import DetectionWindow, Detector
from lianfang.schema import format_timestamp, parse_timestamp
from lianfang.store import IndexNames

STATE_DOCUMENT = "scheduler"


@dataclass
class DetectorRun:
    """What one detector did over one window."""

    detector: str
    found: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0
    seconds: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # from the detector's alerts_stored


@dataclass
class PassReport:
    """One window's run over every detector."""

    start: datetime
    end: datetime
    runs: list[DetectorRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[DetectorRun]:
        """Detectors that raised."""
        return [run for run in self.runs if run.error]

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return {
            "start": format_timestamp(self.start),
            "end": format_timestamp(self.end),
            "seconds": round(self.seconds, 3),
            "runs": [asdict(run) for run in self.runs],
        }


def detector_totals(reports: list[PassReport]) -> list[DetectorRun]:
    """Each detector's counts summed over several windows (a backfill's summary), first error kept."""
    totals: dict[str, DetectorRun] = {}
    for report in reports:
        for run in report.runs:
            total = totals.setdefault(run.detector, DetectorRun(run.detector))
            total.found += run.found
            total.created += run.created
            total.updated += run.updated
            total.unchanged += run.unchanged
            total.suppressed += run.suppressed
            total.seconds += run.seconds
            total.error = total.error or run.error
            for key, value in run.details.items():
                earlier = total.details.get(key)
                both_counts = isinstance(value, int) and isinstance(earlier, int)
                both_lists = isinstance(value, list) and isinstance(earlier, list)
                total.details[key] = earlier + value if both_counts or both_lists else value
    return list(totals.values())


class DetectionStateStore:
    """`<prefix>-detection-state`: the end of the last completed window."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).detection_state

    def last_end(self) -> datetime | None:
        """The end of the last completed window, or None before the first run."""
        try:
            source = self.client.get(index=self.index, id=STATE_DOCUMENT)["_source"]
        except NotFoundError:
            return None
        return parse_timestamp(source["last_end"])

    def save(self, end: datetime, now: datetime | None = None) -> None:
        """Record a completed window end (never moves backwards)."""
        current = self.last_end()
        if current is not None and current >= end:
            return
        self.client.index(
            index=self.index,
            id=STATE_DOCUMENT,
            document={
                "last_end": format_timestamp(end),
                "updated_at": format_timestamp(now or datetime.now(UTC)),
            },
            refresh=True,
        )


def plan_windows(
    now: datetime, last_end: datetime | None, window: timedelta, overlap: timedelta
) -> list[DetectionWindow]:
    """The windows of the next pass (pure): from the last end (less the overlap) to now.

    Without saved state, one window ending now. A gap longer than a window is split into
    consecutive windows of at most `window`, each re-reading `overlap` before its start.
    """
    if last_end is None:
        return [DetectionWindow(now - window, now)]
    windows: list[DetectionWindow] = []
    cursor = last_end
    while cursor < now:
        end = min(cursor + window, now)
        windows.append(DetectionWindow(cursor - overlap, end))
        cursor = end
    return windows


def split_range(
    start: datetime, end: datetime, window: timedelta, overlap: timedelta
) -> list[DetectionWindow]:
    """An explicit range as consecutive windows of at most `window` (with overlap)."""
    windows: list[DetectionWindow] = []
    cursor = start
    while cursor < end:
        stop = min(cursor + window, end)
        windows.append(DetectionWindow(max(start, cursor - overlap), stop))
        cursor = stop
    return windows


class DetectionScheduler:
    """Runs detectors over windows, filters by exceptions, stores alerts, remembers progress."""

    def __init__(
        self,
        detectors: list[Detector],
        alerts: AlertStore,
        exceptions: ExceptionStore,
        state: DetectionStateStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.detectors = detectors
        self.alerts = alerts
        self.exceptions = exceptions
        self.state = state
        self.clock = clock

    def run_window(
        self, window: DetectionWindow, detectors: list[Detector] | None = None
    ) -> PassReport:
        """Every detector (or those given) over one window; a failing one is reported, the rest go on."""
        began = time.perf_counter()
        report = PassReport(window.start, window.end)
        self.alerts.install()
        entries = self.exceptions.entries()
        for detector in self.detectors if detectors is None else detectors:
            run = DetectorRun(detector.name)
            started = time.perf_counter()
            try:
                found = detector.run(window)
                now = self.clock()
                split = apply_exceptions(found, entries, now)
                upserted = self.alerts.upsert(split.kept, now)
                self.exceptions.record(split.suppressed, now)
                stored = getattr(detector, "alerts_stored", None)
                if stored is not None:
                    run.details = stored(split.kept, now) or {}
                run.found = len(found)
                run.created, run.updated = upserted.created, upserted.updated
                run.unchanged, run.suppressed = upserted.unchanged, len(split.suppressed)
            except Exception as error:  # a broken rule must not stop the others
                run.error = f"{type(error).__name__}: {error}"
            run.seconds = time.perf_counter() - started
            report.runs.append(run)
        self.alerts.refresh()
        report.seconds = time.perf_counter() - began
        return report

    def detectors_for(self, index: int, count: int) -> list[Detector] | None:
        """The detectors of a pass's window `index` of `count`: once-per-pass ones with the last."""
        if index == count - 1:
            return None
        return [d for d in self.detectors if not getattr(d, "once_per_pass", False)]

    def run_pending(
        self,
        window: timedelta,
        overlap: timedelta,
        stop: Callable[[], bool] = lambda: False,
    ) -> list[PassReport]:
        """Catch up from the saved state to now, saving progress after each window.

        `stop` is asked between windows: a stopped catch-up resumes from the last saved end.
        """
        reports: list[PassReport] = []
        planned = plan_windows(self.clock(), self.state.last_end(), window, overlap)
        for index, planned_window in enumerate(planned):
            if stop():
                break
            report = self.run_window(planned_window, self.detectors_for(index, len(planned)))
            reports.append(report)
            self.state.save(planned_window.end, self.clock())
        return reports

    def run_range(
        self, start: datetime, end: datetime, window: timedelta, overlap: timedelta
    ) -> list[PassReport]:
        """An explicit (backfill) range; the saved state is left alone."""
        windows = split_range(start, end, window, overlap)
        return [
            self.run_window(w, self.detectors_for(index, len(windows)))
            for index, w in enumerate(windows)
        ]

    def run_forever(
        self,
        every: timedelta,
        window: timedelta,
        overlap: timedelta,
        on_pass: Callable[[PassReport], None],
        sleep: Callable[[float], None] = time.sleep,
        passes: int | None = None,
    ) -> None:
        """Run pending windows every `every` until interrupted (or `passes` times)."""
        done = 0
        while passes is None or done < passes:
            started = time.monotonic()
            for report in self.run_pending(window, overlap):
                on_pass(report)
            done += 1
            if passes is not None and done >= passes:
                return
            sleep(max(0.0, every.total_seconds() - (time.monotonic() - started)))
