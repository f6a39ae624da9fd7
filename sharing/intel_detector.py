"""The scheduler's `intel` detector: one intelligence pass with each `detect run` pass.

The pass is `IntelHunter`'s (sharing/intel_hunt.py): decay and expiry, the retro-hunt of
never-hunted indicator versions over the past `retro_hunt_days` within
`retro_hunt_budget_seconds`, and the ingest-time matches since the last pass. It looks at
the intelligence, not at the scheduler's window: it runs once per scheduler pass (with its
last window, `once_per_pass`), at the real time, so a backfill of last week still hunts
new indicators over the whole horizon.

`run` returns the match alerts instead of storing them, so the scheduler applies exceptions
and upserts them like any detector's; `alerts_stored` then makes a sighting for each alert
that was kept (none for a suppressed one) and saves the pass's progress. If anything fails
before that, the next pass hunts the same versions again (ids are deterministic).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from detection.alerts import Alert
from detection.detector import DetectionWindow, DetectorContext, DetectorLoad
from sharing.indicator_matching import HuntMatch
from sharing.intel_hunt import HuntFindings, IntelHunter


class IntelDetector:
    """Runs one intelligence pass per scheduler pass and hands its alerts to the scheduler."""

    name = "intel"
    once_per_pass = True

    def __init__(
        self, hunter: IntelHunter, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.hunter = hunter
        self.clock = clock
        self._findings: HuntFindings | None = None
        self._pairs: list[tuple[HuntMatch, Alert]] = []

    def run(self, window: DetectionWindow) -> list[Alert]:
        """The alerts of this pass's matches (not yet stored); the window is not used."""
        self._findings = self.hunter.find(self.clock())
        self._pairs = [(m, self.hunter.match_alert(m)) for m in self._findings.matches]
        return [alert for _, alert in self._pairs]

    def alerts_stored(self, kept: list[Alert], now: datetime) -> dict[str, Any]:
        """Sightings for the alerts the scheduler kept and stored; then the progress is saved."""
        findings = self._findings
        if findings is None:
            return {}
        report = findings.report
        kept_ids = {alert.id for alert in kept}
        report.alerts_suppressed = len({a.id for _, a in self._pairs} - kept_ids)
        self.hunter.share_sightings(
            [(m, a) for m, a in self._pairs if a.id in kept_ids], now, report
        )
        self.hunter.commit(findings)
        self._findings, self._pairs = None, []
        retro = report.retro
        return {
            "indicators": report.states.get("active", 0),
            "retro_hunted": len(retro.hunted),
            "retro_unfinished": len(retro.unfinished),
            "retro_failed": len(retro.failed),
            "retro_matches": len(retro.matches),
            "ingest_matches": report.ingest_matches,
            "sightings": report.sightings,
            "sightings_queued": report.sightings_queued,
            "problems": report.problems[:10],
        }


def load_detectors(context: DetectorContext) -> DetectorLoad:
    """The `intel` source: one detector for the deployment's intelligence store."""
    return DetectorLoad(detectors=[IntelDetector(IntelHunter(context.settings, context.client))])
