"""The demo day as labelled anomaly data: a baseline day, a scored day, and truth.json labels.

Two demo days with different seeds and dates: the earlier one is the baseline, the later
one is scored. Both contain the four attack stories (the generator always weaves them in);
the baseline stands for a period believed clean, so its own stories' events are removed
using its truth.json before training (`without_stories`). An entity-window of the scored
day is an anomaly when its department and entity are a story's, for the feature set's
entity field, and the window overlaps the story's time range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from detection.anomaly_models import POOLED, ScoredWindow
from detection.anomaly_scoring import RankedEntity, rank_entities
from detection.evaluation import DetectionQuality, EvaluationError, measure
from detection.event_files import read_event_files
from detection.feature_extraction import (
    DEPARTMENT_COLUMN,
    ENTITY_COLUMN,
    TIMESTAMP_COLUMN,
    WINDOW_COLUMN,
    ColumnNeeds,
)
from detection.feature_sets import FeatureSet
from lianfang.schema import parse_timestamp
from lianfang.settings import Settings

STORY_MARGIN = timedelta(hours=1)
# Which feature sets see each demo story's events. Its entities name several fields (the
# brute force names the `admin` account it logged in as, not a database user), so without
# this a story would label unrelated windows of the same entity. Stories not listed here
# (added to the generator later) label every feature set keyed by one of their entities.
STORY_FEATURE_SETS: dict[str, frozenset[str]] = {
    "ssh-brute-force-then-success": frozenset({"authentication_source", "host_activity"}),
    "port-scan": frozenset({"network_source"}),
    "night-exfiltration": frozenset({"network_source"}),
    "database-export": frozenset({"database_user"}),
}


def story_applies(story: dict[str, Any], feature_set: FeatureSet) -> bool:
    """True when the story's events are among those the feature set looks at."""
    sets = STORY_FEATURE_SETS.get(story["id"])
    if sets is not None and feature_set.name not in sets:
        return False
    return feature_set.entity in story["entities"]


@dataclass(frozen=True)
class DemoDayFiles:
    """One generated demo day: its folder and manifest (truth.json)."""

    folder: Path
    manifest: dict[str, Any]


def latest_weekdays(today: date) -> tuple[date, date]:
    """The two most recent consecutive working days before today (baseline, scored day).

    The demo generator puts most activity in working hours on any date; scoring a
    weekend against a weekday baseline would make every window look off-hours.
    """
    day = today - timedelta(days=1)
    while day.weekday() > 4 or (day - timedelta(days=1)).weekday() > 4:
        day -= timedelta(days=1)
    return day - timedelta(days=1), day


def generate_demo_days(
    out_dir: Path, seed: int, baseline_day: date, scored_day: date, scale: float = 1.0
) -> tuple[DemoDayFiles, DemoDayFiles]:
    """Write a baseline day (seed + 1) and a scored day (seed) under `out_dir`."""
    from collectors.demo_day import DemoSpec, generate_demo_day

    folders = (out_dir / "baseline", out_dir / "scored")
    specs = (
        DemoSpec(seed=seed + 1, day=baseline_day, scale=scale),
        DemoSpec(seed=seed, day=scored_day, scale=scale),
    )
    baseline, scored = (
        DemoDayFiles(folder, generate_demo_day(spec, folder))
        for folder, spec in zip(folders, specs, strict=True)
    )
    return baseline, scored


def read_demo_events(day: DemoDayFiles, needs: ColumnNeeds, settings: Settings) -> pa.Table:
    """Every file of a demo day as one event table, each under its department."""
    tables = []
    for item in day.manifest["files"]:
        table, _ = read_event_files(
            [day.folder / item["path"]],
            needs,
            settings,
            department=item["department"],
            format_name=item["format"],
        )
        tables.append(table)
    return pa.concat_tables(tables)


def _story_span(story: dict[str, Any]) -> tuple[int, int]:
    start = parse_timestamp(story["start"]) - STORY_MARGIN
    end = parse_timestamp(story["end"]) + STORY_MARGIN
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def without_stories(events: pa.Table, manifest: dict[str, Any]) -> pa.Table:
    """The events minus those of a story's entities within its time range (plus a margin)."""
    keep = np.ones(events.num_rows, dtype=bool)
    moments = events.column(TIMESTAMP_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    departments = np.asarray(events.column(DEPARTMENT_COLUMN).to_pylist(), dtype=object)
    for story in manifest["stories"]:
        low, high = _story_span(story)
        during = (moments >= low) & (moments < high) & (departments == story["department"])
        for name, value in story["entities"].items():
            if name not in events.column_names:
                continue
            holds = np.array(
                [
                    values is not None and value in values
                    for values in events.column(name).to_pylist()
                ]
            )
            keep &= ~(during & holds)
    return events.filter(pa.array(keep))


def window_labels(table: pa.Table, feature_set: FeatureSet, manifest: dict[str, Any]) -> np.ndarray:
    """True for the entity-windows of a story (same department, entity and time)."""
    window_ms = int(feature_set.window_delta.total_seconds() * 1000)
    departments = table.column(DEPARTMENT_COLUMN).to_pylist()
    entities = table.column(ENTITY_COLUMN).to_pylist()
    starts = [int(moment.timestamp() * 1000) for moment in table.column(WINDOW_COLUMN).to_pylist()]
    labels = np.zeros(table.num_rows, dtype=bool)
    for story in manifest["stories"]:
        if not story_applies(story, feature_set):
            continue
        entity = story["entities"][feature_set.entity]
        low, high = (
            int(parse_timestamp(story[key]).timestamp() * 1000) for key in ("start", "end")
        )
        for row, (department, name, start) in enumerate(
            zip(departments, entities, starts, strict=True)
        ):
            if department == story["department"] and name == entity:
                labels[row] |= start <= high and start + window_ms > low
    return labels


@dataclass
class StoryRank:
    """Where a story's entity ranks: among its feature set's entities, and overall."""

    story: str
    feature_set: str
    entity: str
    rank_in_feature_set: int | None  # 1-based; None when the entity was not scored
    rank_overall: int | None
    normalised_score: float | None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for --json."""
        return {
            "story": self.story,
            "feature_set": self.feature_set,
            "entity": self.entity,
            "rank_in_feature_set": self.rank_in_feature_set,
            "rank_overall": self.rank_overall,
            "normalised_score": None
            if self.normalised_score is None
            else round(self.normalised_score, 3),
        }


@dataclass
class DemoEvaluation:
    """Quality per feature set on the scored demo day, and the ranks of the story entities."""

    quality: dict[str, DetectionQuality] = field(default_factory=dict)
    ranks: list[StoryRank] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain values for --json."""
        return {
            "quality": {name: quality.as_dict() for name, quality in self.quality.items()},
            "story_ranks": [rank.as_dict() for rank in self.ranks],
            "problems": self.problems,
        }


def story_ranks(
    scored: list[ScoredWindow], feature_sets: list[FeatureSet], manifest: dict[str, Any]
) -> list[StoryRank]:
    """The rank of every story entity that a feature set scores (by its entity field)."""
    entities: list[RankedEntity] = rank_entities(scored)
    overall = {(e.feature_set, e.department, e.entity): i + 1 for i, e in enumerate(entities)}
    within: dict[tuple[str, str, str], int] = {}
    counters: dict[str, int] = {}
    for entity in entities:
        counters[entity.feature_set] = counters.get(entity.feature_set, 0) + 1
        within[(entity.feature_set, entity.department, entity.entity)] = counters[
            entity.feature_set
        ]
    scores = {(e.feature_set, e.department, e.entity): e.normalised_score for e in entities}
    ranks = []
    for story in manifest["stories"]:
        for feature_set in feature_sets:
            if not story_applies(story, feature_set):
                continue
            value = story["entities"][feature_set.entity]
            key = (feature_set.name, story["department"], value)
            pooled = (feature_set.name, POOLED, value)
            found = key if key in overall else pooled if pooled in overall else None
            ranks.append(
                StoryRank(
                    story=story["id"],
                    feature_set=feature_set.name,
                    entity=value,
                    rank_in_feature_set=within.get(found) if found else None,
                    rank_overall=overall.get(found) if found else None,
                    normalised_score=scores.get(found) if found else None,
                )
            )
    return ranks


def feature_set_quality(
    scored: list[ScoredWindow], feature_set: FeatureSet, table: pa.Table, manifest: dict[str, Any]
) -> DetectionQuality:
    """ROC-AUC, PR-AUC, precision and recall of one feature set's windows on the truth."""
    labels = window_labels(table, feature_set, manifest)
    keys = list(
        zip(
            table.column(DEPARTMENT_COLUMN).to_pylist(),
            table.column(ENTITY_COLUMN).to_pylist(),
            table.column(WINDOW_COLUMN).to_pylist(),
            strict=True,
        )
    )
    by_key = {
        (window.department, window.entity, window.window_start): window
        for window in scored
        if window.feature_set == feature_set.name
    }
    missing = [key for key in keys if key not in by_key]
    if missing:
        raise EvaluationError(f"{len(missing)} windows of {feature_set.name} were not scored")
    scores = np.array([by_key[key].normalised_score for key in keys])
    return measure(labels, scores, threshold=1.0)
