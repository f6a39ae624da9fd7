"""Feature sets: declarative per-entity, per-window features for anomaly detection.

One YAML definition names the entity (an ECS field such as `source.ip`), the window, the
events it looks at and its features. The same definition drives both computations, so they
cannot drift apart: the Elasticsearch composite aggregation and the offline computation on
files (detection/feature_extraction.py). Built-in sets live next to this module as YAML;
a folder of further YAML files (setting `feature_sets_dir`) adds or replaces sets by name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lianfang.schema import ECS_FIELDS

FeatureKind = Literal["count", "sum", "max", "distinct", "ratio", "off_hours_ratio", "first_seen"]
FeatureUnit = Literal["count", "bytes", "rows", "ratio", "flag"]
Direction = Literal["high", "low", "both"]

FIELD_KINDS: frozenset[str] = frozenset({"sum", "max", "distinct"})
NUMERIC_KINDS: frozenset[str] = frozenset({"sum", "max"})
DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NAME = r"^[a-z][a-z0-9_]*$"
# Aggregations need doc values: text and unindexed fields cannot name entities or be counted.
UNAGGREGATABLE_KINDS = frozenset({"text", "original"})


class FeatureSetError(ValueError):
    """A feature-set definition that cannot be used; carries where it came from and why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class UnknownFeatureSet(KeyError):
    """No feature set has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"no feature set {self.name!r} (known: {', '.join(self.known) or 'none'})"


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `1d` -> timedelta."""
    match = DURATION.match(str(text))
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"duration {text!r}: expected a positive number and s, m, h or d")
    return timedelta(seconds=int(match.group(1)) * DURATION_UNITS[match.group(2)])


def _check_field(name: str) -> str:
    if ECS_FIELDS.get(name) in UNAGGREGATABLE_KINDS:
        raise ValueError(f"{name} is a {ECS_FIELDS[name]} field and cannot be aggregated")
    return name


Conditions = dict[str, str | int | list[str | int]]


def condition_values(conditions: Conditions) -> list[tuple[str, tuple[str, ...]]]:
    """`{field: value or [values]}` as (field, accepted values as strings), sorted by field."""
    result = []
    for name, value in sorted(conditions.items()):
        values = value if isinstance(value, list) else [value]
        result.append((name, tuple(str(item) for item in values)))
    return result


class FeatureSpec(BaseModel):
    """One feature: how it is aggregated over an entity's events in a window, and its words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    kind: FeatureKind
    label: str  # plain words for explanations: "bytes out"
    field: str | None = None  # sum, max, distinct
    where: Conditions = Field(default_factory=dict)  # ratio: share of events matching
    unit: FeatureUnit = "count"
    # Only deviations on this side explain an alert (fewer connections is rarely a threat).
    direction: Direction = "high"
    # An ATT&CK technique this feature clearly implies when it drives an alert (high side).
    technique: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> FeatureSpec:
        if self.kind in FIELD_KINDS and not self.field:
            raise ValueError(f"feature {self.name}: kind {self.kind} needs a field")
        if self.kind not in FIELD_KINDS and self.field:
            raise ValueError(f"feature {self.name}: kind {self.kind} takes no field")
        if self.kind == "ratio" and not self.where:
            raise ValueError(f"feature {self.name}: kind ratio needs `where` conditions")
        if self.kind != "ratio" and self.where:
            raise ValueError(f"feature {self.name}: only ratio features take `where`")
        if self.field:
            _check_field(self.field)
        for name in self.where:
            _check_field(name)
        return self


class WorkingHours(BaseModel):
    """Local working time; events outside it count towards `off_hours_ratio`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str | None = None  # None: the `timezone` setting
    start_hour: int = Field(default=8, ge=0, le=23)
    end_hour: int = Field(default=18, ge=1, le=24)
    weekdays: tuple[int, ...] = (0, 1, 2, 3, 4)  # Monday = 0

    @model_validator(mode="after")
    def _order(self) -> WorkingHours:
        if self.start_hour >= self.end_hour:
            raise ValueError("working_hours: start_hour must be before end_hour")
        if any(day not in range(7) for day in self.weekdays):
            raise ValueError("working_hours: weekdays are 0 (Monday) to 6 (Sunday)")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as error:
                raise ValueError(f"working_hours: unknown timezone {self.timezone!r}") from error
        return self

    def zone(self) -> ZoneInfo:
        """The zone the hours are in (UTC if none was resolved)."""
        return ZoneInfo(self.timezone or "UTC")

    def off_hours_intervals(self, start: datetime, end: datetime) -> list[tuple[int, int]]:
        """Off-hours as merged [start, end) epoch-millisecond intervals clipped to the range.

        Both feature computations use these same intervals (Elasticsearch as range
        queries, the offline path as a lookup), so they classify every instant alike.
        """
        zone = self.zone()
        local_day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date() + timedelta(days=1)
        begin_ms, end_ms = _epoch_ms(start), _epoch_ms(end)
        intervals: list[tuple[int, int]] = []
        while local_day <= last_day:
            midnight = datetime(local_day.year, local_day.month, local_day.day, tzinfo=zone)
            next_midnight = _local_midnight(local_day + timedelta(days=1), zone)
            if local_day.weekday() in self.weekdays:
                work_start = midnight.replace(hour=self.start_hour)
                work_end = (
                    next_midnight if self.end_hour == 24 else midnight.replace(hour=self.end_hour)
                )
                pieces = [(midnight, work_start), (work_end, next_midnight)]
            else:
                pieces = [(midnight, next_midnight)]
            for low, high in pieces:
                low_ms, high_ms = max(_epoch_ms(low), begin_ms), min(_epoch_ms(high), end_ms)
                if low_ms >= high_ms:
                    continue
                if intervals and intervals[-1][1] >= low_ms:
                    intervals[-1] = (intervals[-1][0], max(intervals[-1][1], high_ms))
                else:
                    intervals.append((low_ms, high_ms))
            local_day += timedelta(days=1)
        return intervals


def _local_midnight(day: Any, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class FeatureSet(BaseModel):
    """Which events, grouped by which entity and window, give which features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    title: str  # the alert name: "Unusual network activity of a source address"
    description: str = ""
    entity: str
    window: str = "1h"
    lookback: str = "7d"  # how far back `first_seen` looks for earlier events of the entity
    filter: Conditions = Field(default_factory=dict)
    features: tuple[FeatureSpec, ...]
    working_hours: WorkingHours = Field(default_factory=WorkingHours)

    @field_validator("entity")
    @classmethod
    def _entity_field(cls, value: str) -> str:
        return _check_field(value)

    @field_validator("window", "lookback")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _unique(self) -> FeatureSet:
        names = [feature.name for feature in self.features]
        if not names:
            raise ValueError("a feature set needs at least one feature")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {', '.join(duplicates)}")
        for name in self.filter:
            _check_field(name)
        return self

    @property
    def window_delta(self) -> timedelta:
        """The window length."""
        return parse_duration(self.window)

    @property
    def lookback_delta(self) -> timedelta:
        """How far before a window `first_seen` looks."""
        return parse_duration(self.lookback)

    @property
    def feature_names(self) -> list[str]:
        """Feature names in declaration order (the model's column order)."""
        return [feature.name for feature in self.features]

    def feature(self, name: str) -> FeatureSpec:
        """One feature by name."""
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def needs_first_seen(self) -> bool:
        """True when a feature needs the lookback pass."""
        return any(feature.kind == "first_seen" for feature in self.features)

    def fingerprint(self) -> str:
        """A digest of the definition; a model trained on another definition is refused."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def with_timezone(self, timezone: str) -> FeatureSet:
        """This set with working hours in `timezone` unless the definition names one."""
        if self.working_hours.timezone is not None:
            return self
        hours = self.working_hours.model_copy(update={"timezone": timezone})
        return self.model_copy(update={"working_hours": hours})


@dataclass
class FeatureSetLoad:
    """The usable feature sets by name, and the definitions that could not be read."""

    sets: dict[str, FeatureSet] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def get(self, name: str) -> FeatureSet:
        """One set by name; UnknownFeatureSet if absent."""
        if name not in self.sets:
            raise UnknownFeatureSet(name, sorted(self.sets))
        return self.sets[name]

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[FeatureSet]:
        """The named sets (all when no names are given)."""
        if not names:
            return [self.sets[name] for name in sorted(self.sets)]
        return [self.get(name) for name in names]


def parse_feature_set(text: str, source: str) -> FeatureSet:
    """One feature set from YAML text; FeatureSetError names the source and the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FeatureSetError(source, f"not YAML: {error}") from error
    if not isinstance(data, dict):
        raise FeatureSetError(source, "expected a mapping with name, entity and features")
    try:
        return FeatureSet.model_validate(data)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'definition'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise FeatureSetError(source, reasons) from error


def builtin_definitions() -> list[tuple[str, str]]:
    """(source name, YAML text) of the feature sets shipped with Lianfang."""
    folder = resources.files(__name__)
    return sorted(
        (f"builtin:{item.name}", item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith((".yaml", ".yml"))
    )


def load_feature_sets(directory: Path | None = None, timezone: str = "UTC") -> FeatureSetLoad:
    """Built-in sets plus those in `directory` (same name replaces); bad files are reported."""
    definitions = builtin_definitions()
    if directory is not None:
        if not directory.is_dir():
            return FeatureSetLoad(problems=[f"{directory}: feature-set folder does not exist"])
        definitions += [
            (str(path), path.read_text(encoding="utf-8"))
            for path in sorted(directory.iterdir())
            if path.suffix in (".yaml", ".yml")
        ]
    load = FeatureSetLoad()
    for source, text in definitions:
        try:
            feature_set = parse_feature_set(text, source)
        except FeatureSetError as error:
            load.problems.append(str(error))
            continue
        load.sets[feature_set.name] = feature_set.with_timezone(timezone)
    return load
