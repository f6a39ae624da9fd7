"""Pure computations behind behavioural rules that Elasticsearch cannot do without scripts.

The core distribution has no painless, so anything beyond counts, sums, cardinalities and
percentiles is computed here, on the small results aggregations return: the entropy of
DNS names (from a bucket's top terms), the regularity of connection times (from a pair's
timestamps), ordered sequences, baselines, working hours and explanation text.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

# Second-level labels under which registrations happen one level deeper (example.com.cn).
# A heuristic instead of the public suffix list, which would need a download.
REGISTRY_SECOND_LEVELS = frozenset({"com", "net", "org", "gov", "edu", "ac", "co", "mil", "int"})
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TEMPLATE_KEY = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")
BYTE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def shannon_entropy(text: str) -> float:
    """Bits per character of a string (0 for the empty string)."""
    if not text:
        return 0.0
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def parent_domain(name: str) -> str:
    """The registered domain of a DNS name: `a.b.example.com` -> `example.com`,
    `x.example.com.cn` -> `example.com.cn`."""
    labels = [label for label in name.lower().rstrip(".").split(".") if label]
    if len(labels) <= 2:
        return ".".join(labels)
    keep = 3 if len(labels[-1]) == 2 and labels[-2] in REGISTRY_SECOND_LEVELS else 2
    return ".".join(labels[-keep:])


def subdomain_part(name: str) -> str:
    """The labels left of the registered domain, dots removed (what a tunnel encodes)."""
    cleaned = name.lower().rstrip(".")
    parent = parent_domain(cleaned)
    return cleaned[: -len(parent)].rstrip(".").replace(".", "") if parent else ""


def label_entropy(names: Iterable[str], min_length: int = 0) -> float | None:
    """Mean entropy of the subdomain parts at least `min_length` long (None if there are none)."""
    values = [
        shannon_entropy(part)
        for name in names
        if len(part := subdomain_part(name)) >= max(min_length, 1)
    ]
    return statistics.fmean(values) if values else None


def max_subdomains(names: Iterable[str]) -> tuple[int, str | None]:
    """The most distinct names under one registered domain, and that domain."""
    per_parent: dict[str, set[str]] = defaultdict(set)
    for name in names:
        per_parent[parent_domain(name)].add(name.lower())
    if not per_parent:
        return 0, None
    parent, members = max(per_parent.items(), key=lambda item: (len(item[1]), item[0]))
    return len(members), parent


@dataclass(frozen=True)
class IntervalStats:
    """How regular a series of event times is."""

    mean_seconds: float
    coefficient_of_variation: float


def interval_stats(moments: Sequence[datetime]) -> IntervalStats | None:
    """Mean gap and its coefficient of variation (std/mean); None with fewer than 3 events."""
    ordered = sorted(moments)
    gaps = [(b - a).total_seconds() for a, b in pairwise(ordered)]
    if len(gaps) < 2:
        return None
    mean = statistics.fmean(gaps)
    if mean <= 0:
        return IntervalStats(0.0, math.inf)
    return IntervalStats(mean, statistics.pstdev(gaps) / mean)


@dataclass(frozen=True)
class SequenceMatch:
    """The events that completed a sequence: per step, the ones used (oldest first)."""

    steps: tuple[tuple[int, ...], ...]  # indices into each step's time list
    first: datetime
    last: datetime


def find_sequence(
    step_times: Sequence[Sequence[datetime]], min_counts: Sequence[int], within: timedelta
) -> SequenceMatch | None:
    """The earliest completion of: >= min_counts[0] events of step 0, then of step 1, ...

    All within `within` of the completing event; each step's events strictly precede the
    next step's. Greedy backwards from every candidate final event: taking the latest
    possible events of each earlier step leaves the most room for the steps before it.
    """
    if not step_times or len(step_times) != len(min_counts):
        raise ValueError("one time list and one minimum count per step")
    ordered = [sorted(enumerate(times), key=lambda item: item[1]) for times in step_times]
    last_step = ordered[-1]
    need_last = max(min_counts[-1], 1)
    for end_position in range(need_last - 1, len(last_step)):
        end = last_step[end_position][1]
        horizon = end - within
        chosen_last = last_step[end_position - need_last + 1 : end_position + 1]
        if chosen_last[0][1] < horizon:
            continue
        chosen: list[tuple[int, ...]] = [tuple(index for index, _ in chosen_last)]
        boundary = chosen_last[0][1]
        complete = True
        for step in range(len(ordered) - 2, -1, -1):
            need = max(min_counts[step], 1)
            eligible = [item for item in ordered[step] if horizon <= item[1] < boundary]
            if len(eligible) < need:
                complete = False
                break
            picked = eligible[-need:] if min_counts[step] > 0 else eligible[-1:]
            # Report every eligible event as evidence, not only the minimum needed.
            chosen.append(tuple(index for index, _ in eligible))
            boundary = picked[0][1]
        if complete:
            chosen.reverse()
            first = min(step_times[0][i] for i in chosen[0])
            return SequenceMatch(tuple(chosen), first, end)
    return None


@dataclass(frozen=True)
class BaselineComparison:
    """A window's value against the same entity's earlier windows."""

    value: float
    mean: float
    std: float
    maximum: float
    periods: int

    @property
    def ratio(self) -> float:
        """value / mean (infinite for an entity with no earlier activity)."""
        return self.value / self.mean if self.mean > 0 else math.inf

    @property
    def zscore(self) -> float:
        """How many standard deviations above the mean (infinite when the history is flat)."""
        if self.std > 0:
            return (self.value - self.mean) / self.std
        return math.inf if self.value > self.mean else 0.0

    def metrics(self) -> dict[str, float]:
        """The values baseline rule conditions refer to."""
        return {
            "value": self.value,
            "baseline_mean": self.mean,
            "baseline_std": self.std,
            "baseline_max": self.maximum,
            "baseline_periods": float(self.periods),
            "ratio_to_baseline": self.ratio,
            "zscore": self.zscore,
        }


def compare_to_baseline(
    values_by_period: dict[datetime, float],
    period: datetime,
    period_length: timedelta,
    history: timedelta,
) -> BaselineComparison:
    """Compare one period's value with the earlier periods of the same entity.

    History runs from the entity's first active period inside [period - history, period):
    quiet periods after it count as zero, periods before it do not exist for this entity
    (a host first seen yesterday is not judged against six silent days it was not there).
    """
    earlier = [p for p in values_by_period if period - history <= p < period]
    value = values_by_period.get(period, 0.0)
    if not earlier:
        return BaselineComparison(value, 0.0, 0.0, 0.0, 0)
    start = min(earlier)
    count = max(1, round((period - start) / period_length))
    series = [values_by_period.get(start + period_length * i, 0.0) for i in range(count)]
    return BaselineComparison(
        value, statistics.fmean(series), statistics.pstdev(series), max(series), count
    )


@dataclass(frozen=True)
class WorkingHours:
    """When people normally work: local hours on working days, in one zone."""

    start: time
    end: time
    days: frozenset[int]  # 0 = Monday
    zone: ZoneInfo

    @classmethod
    def parse(cls, hours: str, days: Iterable[Any], zone: str) -> WorkingHours:
        """`08:00-19:00`, [mon, tue, ...] or [1..5] (1 = Monday), `Asia/Shanghai`."""
        try:
            first, second = (part.strip() for part in hours.split("-"))
            start, end = time.fromisoformat(first), time.fromisoformat(second)
        except ValueError:
            raise ValueError(f"working hours {hours!r} must look like 08:00-19:00") from None
        if end <= start:
            raise ValueError(f"working hours {hours!r} must end after they start")
        numbers: set[int] = set()
        for day in days:
            if isinstance(day, int) and 1 <= day <= 7:
                numbers.add(day - 1)
            elif isinstance(day, str) and day[:3].lower() in WEEKDAY_NAMES:
                numbers.add(WEEKDAY_NAMES.index(day[:3].lower()))
            else:
                raise ValueError(f"working day {day!r} must be 1-7 (Monday = 1) or mon..sun")
        return cls(start, end, frozenset(numbers), ZoneInfo(zone))

    def off_hours(self, begin: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The UTC intervals of [begin, end) outside working hours, merged."""
        intervals: list[tuple[datetime, datetime]] = []
        local_day = begin.astimezone(self.zone).date() - timedelta(days=1)
        last_day = end.astimezone(self.zone).date() + timedelta(days=1)
        cursor = begin
        while local_day <= last_day:
            if local_day.weekday() in self.days:
                work_start = datetime.combine(local_day, self.start, self.zone).astimezone(UTC)
                work_end = datetime.combine(local_day, self.end, self.zone).astimezone(UTC)
                if work_start > cursor:
                    intervals.append((cursor, min(work_start, end)))
                cursor = max(cursor, work_end)
            local_day += timedelta(days=1)
        if cursor < end:
            intervals.append((cursor, end))
        return [(a, b) for a, b in intervals if a < b and a < end and b > begin]

    def is_working_time(self, moment: datetime) -> bool:
        """Whether a moment falls inside working hours."""
        local = moment.astimezone(self.zone)
        return local.weekday() in self.days and self.start <= local.time() < self.end


def human_bytes(value: float) -> str:
    """2400000000 -> `2.4 GB` (decimal units, as network tools report)."""
    size = float(value)
    for unit in BYTE_UNITS:
        if abs(size) < 1000 or unit == BYTE_UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{value} B"


def render_explanation(template: str, values: dict[str, Any]) -> str:
    """Fill `{name}` / `{name:spec}` from values; dotted names are looked up whole.

    Specs: any Python format spec, plus `bytes` (human-readable size). Floats without a
    spec print with up to 3 significant decimals; a missing value prints as `?`.
    """

    def fill(match: re.Match[str]) -> str:
        key, spec = match.group(1), match.group(2)
        value = values.get(key)
        if value is None:
            return "?"
        if spec == "bytes":
            return human_bytes(value)
        if spec:
            try:
                return format(value, spec)
            except (TypeError, ValueError):
                return str(value)
        if isinstance(value, float):
            if math.isinf(value):
                return "∞"
            return f"{value:,.0f}" if value.is_integer() else f"{value:.3g}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    return TEMPLATE_KEY.sub(fill, template)
