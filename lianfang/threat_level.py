"""The threat level of a sector (威胁等级): a documented formula over what the overview counts.

    weighted = Σ weight(severity) × open alerts   (low 1, medium 3, high 9, critical 27)
    score    = weighted / √max(1, events / 100 000) + 2 × log2(1 + critical-asset hits)
    level    = 1 below 3, 2 below 10, 3 below 30, 4 below 90, else 5; at least 3 with an
               open critical alert and at least 2 with an open high one.

Open alerts are those not closed and active in the range; events are the sector's events in
the range; critical-asset hits are hostile events on an asset of criticality `critical`
from a source the asset inventory does not know. Why this shape: each severity step is
worth three of the one below; a sector that sends more telemetry raises more alerts, but
attacks do not grow with log volume, so the damping is the square root; hits grow
logarithmically so that one scan's thousands of probes do not drown every alert; the
floors keep a critical alert visible in the largest sector. README, "Situation overview".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Weight of one open alert per severity (each step is worth three of the one below).
SEVERITY_WEIGHTS = {"low": 1.0, "medium": 3.0, "high": 9.0, "critical": 27.0}
# Event volume at which normalisation starts; above it the weight is divided by sqrt(volume/this).
VOLUME_REFERENCE = 100_000
CRITICAL_HIT_FACTOR = 2.0
# (upper bound of the score, level, Chinese name, English name); the last has no bound.
THREAT_LEVELS = (
    (3.0, 1, "低", "Low"),
    (10.0, 2, "一般", "Guarded"),
    (30.0, 3, "较高", "Elevated"),
    (90.0, 4, "高", "High"),
    (math.inf, 5, "严重", "Severe"),
)
# An open alert of this severity holds the sector at least at this level, whatever its volume.
SEVERITY_FLOORS = {"critical": 3, "high": 2}


@dataclass(frozen=True)
class ThreatAssessment:
    """The result of the threat-level formula for one sector."""

    level: int
    name_zh: str
    name_en: str
    score: float
    weighted_open_alerts: float


def threat_level(
    open_alerts: Mapping[str, int], events: int, critical_asset_hits: int
) -> ThreatAssessment:
    """The documented formula (README): weighted open alerts, volume-normalised, plus hits.

    weighted = Σ weight(severity) × open alerts   (low 1, medium 3, high 9, critical 27)
    score    = weighted / √max(1, events / 100 000) + 2 × log2(1 + critical-asset hits)
    level    = 1 below 3, 2 below 10, 3 below 30, 4 below 90, else 5; at least 3 with an
               open critical alert and at least 2 with an open high one.
    """
    weighted = sum(SEVERITY_WEIGHTS.get(name, 0.0) * count for name, count in open_alerts.items())
    damping = math.sqrt(max(1.0, events / VOLUME_REFERENCE))
    score = weighted / damping + CRITICAL_HIT_FACTOR * math.log2(1 + max(0, critical_asset_hits))
    level = next(level for bound, level, _, _ in THREAT_LEVELS if score < bound)
    for severity, floor in SEVERITY_FLOORS.items():
        if open_alerts.get(severity, 0) > 0:
            level = max(level, floor)
    _, _, name_zh, name_en = next(entry for entry in THREAT_LEVELS if entry[1] == level)
    return ThreatAssessment(level, name_zh, name_en, round(score, 3), weighted)
