"""The confidence and state of an indicator over time: sightings raise it, silence lowers it.

The rule (documented in README.md, "Threat intelligence"):

    effective = min(100, base + min(bonus_cap, bonus × sightings)) × ½ ^ (max(0, idle − grace) / half_life)

* `base` is the producer's `confidence` (the `default_confidence` setting when it gave none);
* `sightings` is the number of distinct STIX sightings of the indicator (ours and peers');
* `idle` is the time since the indicator's last activity: its latest sighting, or else its
  latest version (`modified`) — a producer revising an indicator vouches for it again;
* no decay for `grace` days (30), then the confidence halves every `half_life` days (30).

The state follows, in this order: `revoked` (the producer revoked it), `expired`
(`valid_until` has passed), `pending` (`valid_from` is still ahead), `inactive` (the
effective confidence fell below `confidence_threshold`), otherwise `active`. Only active
indicators are matched; a new sighting or version can bring an inactive one back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lianfang.settings import IntelSettings

STATES = ("active", "inactive", "pending", "expired", "revoked")
DAY_SECONDS = 86400.0


@dataclass(frozen=True)
class ConfidenceRule:
    """The parameters of the decay rule and the activity threshold."""

    threshold: int = 30
    default: int = 50
    bonus: int = 5
    bonus_cap: int = 30
    grace_days: float = 30.0
    half_life_days: float = 30.0

    @classmethod
    def from_settings(cls, intel: IntelSettings) -> ConfidenceRule:
        """The rule configured in `[intel]`."""
        return cls(
            threshold=intel.confidence_threshold,
            default=intel.default_confidence,
            bonus=intel.sighting_bonus,
            bonus_cap=intel.sighting_bonus_cap,
            grace_days=intel.decay_grace_days,
            half_life_days=intel.decay_half_life_days,
        )


def effective_confidence(
    base: int | None,
    sightings: int,
    last_activity: datetime,
    now: datetime,
    rule: ConfidenceRule,
) -> int:
    """The confidence now, after sighting bonus and decay (0–100)."""
    start = rule.default if base is None else max(0, min(100, int(base)))
    raised = min(100, start + min(rule.bonus_cap, rule.bonus * max(0, sightings)))
    idle_days = max(0.0, (now - last_activity).total_seconds() / DAY_SECONDS)
    decaying_days = max(0.0, idle_days - rule.grace_days)
    return round(raised * 0.5 ** (decaying_days / rule.half_life_days))


def indicator_state(
    *,
    revoked: bool,
    valid_from: datetime | None,
    valid_until: datetime | None,
    confidence: int,
    now: datetime,
    rule: ConfidenceRule,
) -> str:
    """One of STATES, by the precedence in the module docstring."""
    if revoked:
        return "revoked"
    if valid_until is not None and valid_until <= now:
        return "expired"
    if valid_from is not None and valid_from > now:
        return "pending"
    if confidence < rule.threshold:
        return "inactive"
    return "active"
