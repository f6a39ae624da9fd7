"""Why a window is anomalous, in plain words, from per-feature baseline percentiles.

Every model keeps a `BaselineProfile`: for each feature, the training values' order
statistics (all of them up to PROFILE_POINTS, an evenly spaced subset beyond). A scored
window's features are placed in those distributions; the features far in their tail (on
the side the feature set calls suspicious) are the drivers, worded as
"bytes out 2.4 GB in the hour vs a usual 120 KB, above the 99.9th percentile".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detection.feature_sets import FeatureSet, FeatureSpec

PROFILE_POINTS = 2001
DRIVER_PERCENTILE = 95.0  # a feature must be past this percentile (or below 100 - it) to drive
MAX_DRIVERS = 3
PERCENTILE_LEVELS = (99.9, 99.0, 95.0)
DECIMAL_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


@dataclass
class BaselineProfile:
    """Per-feature order statistics of the training windows."""

    names: tuple[str, ...]
    sorted_values: np.ndarray  # features x points, each row ascending
    rows: int

    @classmethod
    def fit(cls, features: np.ndarray, names: tuple[str, ...] | list[str]) -> BaselineProfile:
        """Keep each column's order statistics (subsampled evenly beyond PROFILE_POINTS)."""
        data = np.asarray(features, dtype=float)
        if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] != len(names):
            raise ValueError(f"expected a non-empty rows x {len(names)} matrix, got {data.shape}")
        ordered = np.sort(data, axis=0)
        if ordered.shape[0] > PROFILE_POINTS:
            # Evenly spaced order statistics: the minimum and maximum are always kept.
            picks = np.round(np.linspace(0, ordered.shape[0] - 1, PROFILE_POINTS)).astype(int)
            ordered = ordered[picks]
        return cls(tuple(names), ordered.T.copy(), int(data.shape[0]))

    def fraction_below(self, values: np.ndarray) -> np.ndarray:
        """Per feature, the share of baseline windows strictly below each value (rows x features)."""
        data = np.atleast_2d(np.asarray(values, dtype=float))
        points = self.sorted_values.shape[1]
        result = np.empty_like(data)
        for column, reference in enumerate(self.sorted_values):
            result[:, column] = np.searchsorted(reference, data[:, column], side="left") / points
        return result

    def fraction_above(self, values: np.ndarray) -> np.ndarray:
        """Per feature, the share of baseline windows strictly above each value."""
        data = np.atleast_2d(np.asarray(values, dtype=float))
        points = self.sorted_values.shape[1]
        result = np.empty_like(data)
        for column, reference in enumerate(self.sorted_values):
            result[:, column] = (
                1 - np.searchsorted(reference, data[:, column], side="right") / points
            )
        return result

    def surprise(self, values: np.ndarray, directions: list[str] | None = None) -> np.ndarray:
        """Per-feature -log10 tail probability on the suspicious side (0 = ordinary).

        The tail is smoothed with one pseudo-window, (k + 1) / (n + 1), so a value beyond
        everything in a baseline of n windows scores log10(n + 1), not infinity.
        """
        directions = directions or ["high"] * len(self.names)
        below = self.fraction_below(values)
        above = self.fraction_above(values)
        # The upper tail of v is the share of the baseline at or above v, and vice versa.
        upper = ((1 - below) * self.rows + 1) / (self.rows + 1)
        lower = ((1 - above) * self.rows + 1) / (self.rows + 1)
        scores = np.zeros_like(upper)
        for column, direction in enumerate(directions):
            tail = {
                "high": upper[:, column],
                "low": lower[:, column],
                "both": np.minimum(upper[:, column], lower[:, column]),
            }[direction]
            scores[:, column] = -np.log10(np.clip(tail, 1e-12, 1.0))
        # A value at the median is never surprising, however lumpy the distribution.
        medians = self.medians()
        for column, direction in enumerate(directions):
            ordinary = values_column(values, column) == medians[column]
            scores[ordinary, column] = 0.0
            if direction == "high":
                scores[values_column(values, column) < medians[column], column] = 0.0
        return scores

    def medians(self) -> np.ndarray:
        """Each feature's baseline median."""
        return np.array([float(np.median(row)) for row in self.sorted_values])

    def maxima(self) -> np.ndarray:
        """Each feature's largest baseline value."""
        return self.sorted_values[:, -1].copy()

    def minima(self) -> np.ndarray:
        """Each feature's smallest baseline value."""
        return self.sorted_values[:, 0].copy()

    def quantile(self, column: int, level: float) -> float:
        """The baseline value at `level` percent for one feature."""
        return float(np.quantile(self.sorted_values[column], level / 100))


def values_column(values: np.ndarray, column: int) -> np.ndarray:
    """One feature's values from a rows x features matrix (or a single row)."""
    return np.atleast_2d(np.asarray(values, dtype=float))[:, column]


@dataclass(frozen=True)
class Driver:
    """One feature that makes a window unusual, with its baseline context."""

    feature: str
    label: str
    value: float
    usual: float
    percentile_phrase: str
    direction: str  # "high" or "low"
    surprise: float
    technique: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Explanation:
    """The drivers of one window and the sentence that says it."""

    drivers: list[Driver] = field(default_factory=list)
    text: str = ""

    @property
    def techniques(self) -> list[str]:
        """ATT&CK techniques implied by high-side drivers, in driver order."""
        return list(dict.fromkeys(d.technique for d in self.drivers if d.technique))


def format_bytes(value: float) -> str:
    """2400000000 -> `2.4 GB` (decimal units, as operators read network volumes)."""
    size = float(value)
    for unit in DECIMAL_UNITS:
        if abs(size) < 1000 or unit == DECIMAL_UNITS[-1]:
            if unit == "B":
                return f"{size:,.0f} B"
            return f"{size:,.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size:,.1f} PB"  # unreachable: the loop returns at the last unit


def format_value(spec: FeatureSpec, value: float) -> str:
    """A feature value in its unit: bytes, rows, a share, a flag or a count."""
    if spec.unit == "bytes":
        return format_bytes(value)
    if spec.unit == "ratio":
        return f"{value * 100:.0f}%"
    if spec.unit == "flag":
        return "yes" if value >= 0.5 else "no"
    if spec.unit == "rows":
        return f"{value:,.0f} rows"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def window_phrase(feature_set: FeatureSet) -> str:
    """`in the hour`, `in the day`, `in 15 minutes`."""
    seconds = int(feature_set.window_delta.total_seconds())
    if seconds == 3600:
        return "in the hour"
    if seconds == 86400:
        return "in the day"
    if seconds % 86400 == 0:
        return f"in {seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"in {seconds // 3600} hours"
    if seconds % 60 == 0:
        return f"in {seconds // 60} minutes"
    return f"in {seconds} seconds"


def percentile_phrase(profile: BaselineProfile, column: int, value: float, direction: str) -> str:
    """Where a value sits in the baseline, claiming only what the baseline's size supports."""
    rows = profile.rows
    if direction == "high":
        if value > profile.maxima()[column]:
            return f"higher than all {rows:,} baseline windows"
        for level in PERCENTILE_LEVELS:
            if rows >= 100 / (100 - level) and value > profile.quantile(column, level):
                return f"above the {_ordinal(level)} percentile"
        share = float(profile.fraction_below(np.array([[value] * len(profile.names)]))[0, column])
        return f"above {share * 100:.0f}% of baseline windows"
    if value < profile.minima()[column]:
        return f"lower than all {rows:,} baseline windows"
    for level in PERCENTILE_LEVELS:
        if rows >= 100 / (100 - level) and value < profile.quantile(column, 100 - level):
            return f"below the {_ordinal(100 - level)} percentile"
    share = float(profile.fraction_above(np.array([[value] * len(profile.names)]))[0, column])
    return f"below {share * 100:.0f}% of baseline windows"


def _ordinal(level: float) -> str:
    text = f"{level:g}"
    if "." in text:
        return f"{text}th"
    number = int(text)
    suffix = (
        "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    )
    return f"{number}{suffix}"


def _driver_text(
    feature_set: FeatureSet, spec: FeatureSpec, value: float, usual: float, phrase: str
) -> str:
    if spec.kind == "first_seen":
        return (
            f"first seen: no earlier event of this {feature_set.entity} in the "
            f"{feature_set.lookback} before"
        )
    if spec.unit == "ratio":
        return f"{spec.label} {format_value(spec, value)} vs a usual {format_value(spec, usual)}, {phrase}"
    return (
        f"{spec.label} {format_value(spec, value)} {window_phrase(feature_set)} "
        f"vs a usual {format_value(spec, usual)}, {phrase}"
    )


def explain_window(
    feature_set: FeatureSet, profile: BaselineProfile, values: np.ndarray
) -> Explanation:
    """The drivers of one window (one row of features) and their sentence."""
    row = np.asarray(values, dtype=float).reshape(1, -1)
    specs = list(feature_set.features)
    directions = [spec.direction for spec in specs]
    surprise = profile.surprise(row, directions)[0]
    below = profile.fraction_below(row)[0]
    above = profile.fraction_above(row)[0]
    medians = profile.medians()
    candidates: list[Driver] = []
    for column, spec in enumerate(specs):
        value, usual = float(row[0, column]), float(medians[column])
        high = below[column] * 100 >= DRIVER_PERCENTILE and value > usual
        low = above[column] * 100 >= DRIVER_PERCENTILE and value < usual
        side = (
            "high"
            if high and spec.direction in ("high", "both")
            else "low"
            if low and spec.direction in ("low", "both")
            else None
        )
        if side is None or surprise[column] <= 0:
            continue
        phrase = percentile_phrase(profile, column, value, side)
        candidates.append(
            Driver(
                feature=spec.name,
                label=spec.label,
                value=value,
                usual=usual,
                percentile_phrase=phrase,
                direction=side,
                surprise=float(surprise[column]),
                technique=spec.technique if side == "high" else None,
                text=_driver_text(feature_set, spec, value, usual, phrase),
            )
        )
    candidates.sort(key=lambda driver: (-driver.surprise, driver.feature))
    drivers = candidates[:MAX_DRIVERS]
    if drivers:
        return Explanation(drivers, "; ".join(driver.text for driver in drivers))
    # No feature is unusual alone: the combination is. Say what the window looked like.
    parts = [
        f"{spec.label} {format_value(spec, float(row[0, column]))}"
        for column, spec in enumerate(specs)
        if spec.kind != "first_seen"
    ]
    return Explanation(
        [],
        "no single feature is beyond its usual range; the combination is unusual: "
        + ", ".join(parts[:4]),
    )


def surprise_matrix(
    feature_set: FeatureSet, profile: BaselineProfile, values: np.ndarray
) -> np.ndarray:
    """Per-feature surprise (rows x features) on each feature's suspicious side."""
    return profile.surprise(values, [spec.direction for spec in feature_set.features])
