"""Feature tables: one row per (department, entity, window), one column per declared feature.

Two computations of the same feature-set definition give the same table:

* `extract_features` pushes the work down to Elasticsearch: a composite aggregation over
  (organization.id, entity, date_histogram window), paged with `after_key`, with one
  sub-aggregation per feature (sum, max, cardinality, filters), plus, for `first_seen`, a
  second composite over (organization.id, entity) with the earliest event in the lookback.
  Only one page is held at a time, so memory is bounded by the result, not by the events.
* `compute_features` does the same on an event table in Python (numpy), for files
  without Elasticsearch (detection/event_files.py builds the table).

Feature semantics, shared by both: `count` events in the window; `sum`/`max` of a numeric
field (missing values count as 0; a window without any value gives 0); `distinct` values of
a field (Elasticsearch's cardinality is exact below its precision threshold, 3000 values per
window here, and within about 1% above); `ratio` the share of the window's events matching
`where`; `off_hours_ratio` the share outside working hours; `first_seen` 1 when the entity
has no earlier event within `lookback` before this window (in the data available).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from elasticsearch import Elasticsearch

from detection.feature_sets import (
    NUMERIC_KINDS,
    FeatureSet,
    FeatureSpec,
    condition_values,
)
from lianfang.schema import format_timestamp

DEPARTMENT_COLUMN = "organization.id"
ENTITY_COLUMN = "entity"
WINDOW_COLUMN = "window_start"
COUNT_COLUMN = "event_count"
FIRST_EVENT_COLUMN = "first_event"
LAST_EVENT_COLUMN = "last_event"
TIMESTAMP_COLUMN = "@timestamp"
KEY_COLUMNS = (DEPARTMENT_COLUMN, ENTITY_COLUMN, WINDOW_COLUMN)
UNKNOWN_DEPARTMENT = "_unknown"
CARDINALITY_PRECISION = 3000
# Each composite page re-reads every matching event, so fewer, larger pages are faster
# (120k entity-windows: 26 s with pages of 2,000, 8 s with 10,000). A page's buckets,
# counting the single-bucket filters under each window, stay below search.max_buckets.
DEFAULT_PAGE_SIZE = 10_000
MAX_BUCKETS_PER_PAGE = 60_000
TIME_TYPE = pa.timestamp("ms", tz="UTC")


class FeatureExtractionError(RuntimeError):
    """Elasticsearch refused or broke off a feature aggregation; carries the feature set."""

    def __init__(self, feature_set: str, reason: str) -> None:
        super().__init__(f"feature set {feature_set}: {reason}")
        self.feature_set = feature_set
        self.reason = reason


def feature_table_schema(feature_set: FeatureSet) -> pa.Schema:
    """The columns of a feature table: keys, event count and time span, then the features."""
    return pa.schema(
        [
            pa.field(DEPARTMENT_COLUMN, pa.string()),
            pa.field(ENTITY_COLUMN, pa.string()),
            pa.field(WINDOW_COLUMN, TIME_TYPE),
            pa.field(COUNT_COLUMN, pa.int64()),
            pa.field(FIRST_EVENT_COLUMN, TIME_TYPE),
            pa.field(LAST_EVENT_COLUMN, TIME_TYPE),
        ]
        + [pa.field(name, pa.float64()) for name in feature_set.feature_names]
    )


def sort_feature_table(table: pa.Table) -> pa.Table:
    """Rows ordered by department, entity and window (both computations agree on this)."""
    return table.sort_by([(name, "ascending") for name in KEY_COLUMNS])


def feature_matrix(table: pa.Table, feature_set: FeatureSet) -> np.ndarray:
    """The feature columns as a float matrix (rows x features), NaN replaced by 0."""
    if table.num_rows == 0:
        return np.zeros((0, len(feature_set.features)))
    columns = [
        table.column(name).to_numpy(zero_copy_only=False) for name in feature_set.feature_names
    ]
    return np.nan_to_num(np.column_stack(columns).astype(float), nan=0.0)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _interval(feature_set: FeatureSet) -> str:
    seconds = int(feature_set.window_delta.total_seconds())
    return f"{seconds}s"


def complete_windows(
    feature_set: FeatureSet, start: datetime, end: datetime
) -> tuple[datetime, datetime] | None:
    """The whole feature windows that end in (start, end], as one range; None if there are none.

    Windows are aligned to the epoch like the `date_histogram` buckets, so the range runs
    from the window holding `start` to the last window boundary at or before `end`: a
    window still open at `end` is left for a later range that covers its end.
    """
    seconds = int(feature_set.window_delta.total_seconds())
    low = int(start.timestamp()) // seconds * seconds
    high = int(end.timestamp()) // seconds * seconds
    if low >= high:
        return None
    return datetime.fromtimestamp(low, UTC), datetime.fromtimestamp(high, UTC)


# ------------------------------------------------------------------ Elasticsearch


def _term_clauses(conditions: dict[str, Any]) -> list[dict[str, Any]]:
    clauses = []
    for name, values in condition_values(conditions):
        if len(values) == 1:
            clauses.append({"term": {name: values[0]}})
        else:
            clauses.append({"terms": {name: list(values)}})
    return clauses


def _range(start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "range": {
            TIMESTAMP_COLUMN: {
                "gte": format_timestamp(start),
                "lt": format_timestamp(end),
                "format": "strict_date_optional_time",
            }
        }
    }


def _department_clauses(
    departments: list[str] | None, excluded: list[str] | None
) -> list[dict[str, Any]]:
    """Filters keeping `departments` (all if none) except `excluded`.

    UNKNOWN_DEPARTMENT stands for events without organization.id, as in the feature table.
    """
    clauses: list[dict[str, Any]] = []
    without_department = {"bool": {"must_not": [{"exists": {"field": DEPARTMENT_COLUMN}}]}}
    if departments and UNKNOWN_DEPARTMENT not in departments:
        clauses.append({"terms": {DEPARTMENT_COLUMN: departments}})
    elif departments:
        named = [d for d in departments if d != UNKNOWN_DEPARTMENT]
        either: list[dict[str, Any]] = [{"terms": {DEPARTMENT_COLUMN: named}}] if named else []
        clauses.append(
            {"bool": {"should": [*either, without_department], "minimum_should_match": 1}}
        )
    if excluded:
        named = [d for d in excluded if d != UNKNOWN_DEPARTMENT]
        if named:
            clauses.append({"bool": {"must_not": [{"terms": {DEPARTMENT_COLUMN: named}}]}})
        if UNKNOWN_DEPARTMENT in excluded:
            clauses.append({"exists": {"field": DEPARTMENT_COLUMN}})
    return clauses


def _query(
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    departments: list[str] | None,
    excluded_departments: list[str] | None = None,
) -> dict[str, Any]:
    clauses = [_range(start, end), {"exists": {"field": feature_set.entity}}]
    clauses += _term_clauses(feature_set.filter)
    clauses += _department_clauses(departments, excluded_departments)
    return {"bool": {"filter": clauses}}


def _off_hours_query(feature_set: FeatureSet, start: datetime, end: datetime) -> dict[str, Any]:
    intervals = feature_set.working_hours.off_hours_intervals(start, end)
    if not intervals:
        return {"match_none": {}}
    return {
        "bool": {
            "should": [
                {"range": {TIMESTAMP_COLUMN: {"gte": low, "lt": high, "format": "epoch_millis"}}}
                for low, high in intervals
            ],
            "minimum_should_match": 1,
        }
    }


def _feature_aggregation(
    feature: FeatureSpec, feature_set: FeatureSet, start: datetime, end: datetime
) -> dict[str, Any] | None:
    if feature.kind == "sum":
        return {"sum": {"field": feature.field}}
    if feature.kind == "max":
        return {"max": {"field": feature.field}}
    if feature.kind == "distinct":
        return {
            "cardinality": {"field": feature.field, "precision_threshold": CARDINALITY_PRECISION}
        }
    if feature.kind == "ratio":
        return {"filter": {"bool": {"filter": _term_clauses(feature.where)}}}
    if feature.kind == "off_hours_ratio":
        return {"filter": _off_hours_query(feature_set, start, end)}
    return None  # count: the bucket's doc_count; first_seen: the lookback pass


def _department_entity_sources(feature_set: FeatureSet) -> list[dict[str, Any]]:
    """The composite sources of a feature set's (department, entity) pairs."""
    return [
        {"department": {"terms": {"field": DEPARTMENT_COLUMN, "missing_bucket": True}}},
        {"entity": {"terms": {"field": feature_set.entity}}},
    ]


def _composite_search(
    name: str,
    sources: list[dict[str, Any]],
    sub_aggregations: dict[str, Any],
    query: dict[str, Any],
    after: dict[str, Any] | None,
    page_size: int,
) -> dict[str, Any]:
    """The search body of one page of the composite aggregation `name` (pure)."""
    composite: dict[str, Any] = {"size": page_size, "sources": sources}
    if after is not None:
        composite["after"] = after
    return {
        "size": 0,
        "track_total_hits": False,
        "query": query,
        "aggs": {name: {"composite": composite, "aggs": sub_aggregations}},
    }


def composite_request(
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    *,
    after: dict[str, Any] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    departments: list[str] | None = None,
    excluded_departments: list[str] | None = None,
) -> dict[str, Any]:
    """The search body of one page of the feature aggregation (pure)."""
    sub_aggregations: dict[str, Any] = {
        FIRST_EVENT_COLUMN: {"min": {"field": TIMESTAMP_COLUMN}},
        LAST_EVENT_COLUMN: {"max": {"field": TIMESTAMP_COLUMN}},
    }
    for feature in feature_set.features:
        aggregation = _feature_aggregation(feature, feature_set, start, end)
        if aggregation is not None:
            sub_aggregations[f"f_{feature.name}"] = aggregation
    window = {
        "date_histogram": {"field": TIMESTAMP_COLUMN, "fixed_interval": _interval(feature_set)}
    }
    return _composite_search(
        "windows",
        [*_department_entity_sources(feature_set), {"window": window}],
        sub_aggregations,
        _query(feature_set, start, end, departments, excluded_departments),
        after,
        page_size,
    )


def first_seen_request(
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    *,
    after: dict[str, Any] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    departments: list[str] | None = None,
    excluded_departments: list[str] | None = None,
) -> dict[str, Any]:
    """One page of the earliest event per (department, entity) in [start - lookback, end)."""
    return _composite_search(
        "entities",
        _department_entity_sources(feature_set),
        {"first": {"min": {"field": TIMESTAMP_COLUMN}}},
        _query(
            feature_set, start - feature_set.lookback_delta, end, departments, excluded_departments
        ),
        after,
        page_size,
    )


def _value(aggregation: dict[str, Any] | None) -> float:
    if not aggregation:
        return 0.0
    value = aggregation.get("value")
    return float(value) if value is not None else 0.0


def _department(key: dict[str, Any]) -> str:
    value = key.get("department")
    return UNKNOWN_DEPARTMENT if value is None else str(value)


def rows_from_buckets(
    feature_set: FeatureSet,
    buckets: list[dict[str, Any]],
    first_seen: dict[tuple[str, str], int] | None = None,
) -> dict[str, list[Any]]:
    """Columns of a feature table from composite buckets (pure)."""
    window_ms = int(feature_set.window_delta.total_seconds() * 1000)
    columns: dict[str, list[Any]] = {name: [] for name in feature_table_schema(feature_set).names}
    for bucket in buckets:
        key = bucket["key"]
        department, entity, window = _department(key), str(key["entity"]), int(key["window"])
        count = int(bucket["doc_count"])
        columns[DEPARTMENT_COLUMN].append(department)
        columns[ENTITY_COLUMN].append(entity)
        columns[WINDOW_COLUMN].append(window)
        columns[COUNT_COLUMN].append(count)
        columns[FIRST_EVENT_COLUMN].append(int(_value(bucket.get(FIRST_EVENT_COLUMN))))
        columns[LAST_EVENT_COLUMN].append(int(_value(bucket.get(LAST_EVENT_COLUMN))))
        for feature in feature_set.features:
            aggregation = bucket.get(f"f_{feature.name}")
            if feature.kind == "count":
                value = float(count)
            elif feature.kind in ("ratio", "off_hours_ratio"):
                value = aggregation["doc_count"] / count if count else 0.0
            elif feature.kind == "first_seen":
                earliest = (first_seen or {}).get((department, entity))
                value = float(earliest is not None and window <= earliest < window + window_ms)
            else:
                value = _value(aggregation)
            columns[feature.name].append(value)
    return columns


def _pages(
    client: Elasticsearch,
    index: str,
    feature_set: FeatureSet,
    build: Callable[..., dict[str, Any]],
    name: str,
) -> Iterator[list[dict[str, Any]]]:
    after: dict[str, Any] | None = None
    while True:
        try:
            response = client.search(
                index=index, ignore_unavailable=True, allow_no_indices=True, **build(after=after)
            )
        except Exception as error:  # the client raises many transport and API error types
            raise FeatureExtractionError(
                feature_set.name, f"{type(error).__name__}: {error}"
            ) from error
        aggregation = response.get("aggregations", {}).get(name)
        if not aggregation or not aggregation["buckets"]:
            return
        yield aggregation["buckets"]
        after = aggregation.get("after_key")
        if after is None:
            return


def earliest_events(
    client: Elasticsearch,
    index: str,
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    *,
    departments: list[str] | None = None,
    excluded_departments: list[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> dict[tuple[str, str], int]:
    """(department, entity) -> epoch ms of its earliest event in [start - lookback, end)."""
    earliest: dict[tuple[str, str], int] = {}
    build = partial(
        first_seen_request,
        feature_set,
        start,
        end,
        page_size=page_size,
        departments=departments,
        excluded_departments=excluded_departments,
    )
    for buckets in _pages(client, index, feature_set, build, "entities"):
        for bucket in buckets:
            key = bucket["key"]
            earliest[(_department(key), str(key["entity"]))] = int(_value(bucket["first"]))
    return earliest


def extract_features(
    client: Elasticsearch,
    index: str,
    feature_set: FeatureSet,
    start: datetime,
    end: datetime,
    *,
    departments: list[str] | None = None,
    excluded_departments: list[str] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> pa.Table:
    """The feature table of [start, end), computed by Elasticsearch page by page.

    `departments` keeps only those departments, `excluded_departments` leaves some out
    (UNKNOWN_DEPARTMENT names events without organization.id in both).
    """
    scope = {"departments": departments, "excluded_departments": excluded_departments}
    first_seen = (
        earliest_events(client, index, feature_set, start, end, page_size=page_size, **scope)
        if feature_set.needs_first_seen()
        else None
    )
    schema = feature_table_schema(feature_set)
    batches: list[pa.RecordBatch] = []
    filters = sum(f.kind in ("ratio", "off_hours_ratio") for f in feature_set.features)
    capped = max(1, min(page_size, MAX_BUCKETS_PER_PAGE // (1 + filters)))
    build = partial(composite_request, feature_set, start, end, page_size=capped, **scope)
    for buckets in _pages(client, index, feature_set, build, "windows"):
        columns = rows_from_buckets(feature_set, buckets, first_seen)
        batches.append(pa.RecordBatch.from_pydict(columns, schema=schema))
    return sort_feature_table(pa.Table.from_batches(batches, schema=schema))


def departments_with_events(
    client: Elasticsearch, index: str, feature_set: FeatureSet, start: datetime, end: datetime
) -> list[str]:
    """The departments with feature-set events in [start, end), sorted (UNKNOWN_DEPARTMENT too)."""
    try:
        response = client.search(
            index=index,
            ignore_unavailable=True,
            allow_no_indices=True,
            size=0,
            track_total_hits=False,
            query=_query(feature_set, start, end, None),
            aggs={
                "departments": {
                    "terms": {
                        "field": DEPARTMENT_COLUMN,
                        "missing": UNKNOWN_DEPARTMENT,
                        "size": 10_000,
                    }
                }
            },
        )
    except Exception as error:  # the client raises many transport and API error types
        raise FeatureExtractionError(
            feature_set.name, f"{type(error).__name__}: {error}"
        ) from error
    buckets = response.get("aggregations", {}).get("departments", {}).get("buckets", [])
    return sorted(str(bucket["key"]) for bucket in buckets)


# ------------------------------------------------------------------ offline


@dataclass(frozen=True)
class ColumnNeeds:
    """The event fields a feature computation reads: keywords as string lists, numbers."""

    keywords: frozenset[str]
    numbers: frozenset[str]

    def __or__(self, other: ColumnNeeds) -> ColumnNeeds:
        return ColumnNeeds(self.keywords | other.keywords, self.numbers | other.numbers)


def column_needs(feature_set: FeatureSet) -> ColumnNeeds:
    """Which fields of the events the feature set reads, and how."""
    keywords = {feature_set.entity, *feature_set.filter}
    numbers: set[str] = set()
    for feature in feature_set.features:
        if feature.kind in NUMERIC_KINDS and feature.field:
            numbers.add(feature.field)
        elif feature.field:
            keywords.add(feature.field)
        keywords.update(feature.where)
    return ColumnNeeds(frozenset(keywords), frozenset(numbers))


def number_column(field: str) -> str:
    """The event-table column holding a field's numeric value (keywords keep the plain name)."""
    return f"{field}#number"


def _list_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(row index, value) of every non-null element of a list<string> column."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(array)
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    return parents[valid].astype(np.int64), np.asarray(
        values.filter(pc.is_valid(values)), dtype=object
    )


def _matches(table: pa.Table, conditions: dict[str, Any]) -> np.ndarray:
    """Rows where every condition's field holds one of its values (any element of a list)."""
    mask = np.ones(table.num_rows, dtype=bool)
    for name, values in condition_values(conditions):
        if name not in table.column_names:
            return np.zeros(table.num_rows, dtype=bool)
        rows, found = _list_values(table.column(name))
        hit = np.zeros(table.num_rows, dtype=bool)
        hit[rows[np.isin(found, np.array(values, dtype=object))]] = True
        mask &= hit
    return mask


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, inverse = np.unique(values.astype(str), return_inverse=True)
    return uniques, inverse.astype(np.int64)


def compute_features(
    events: pa.Table, feature_set: FeatureSet, start: datetime, end: datetime
) -> pa.Table:
    """The feature table of [start, end) from an event table (pure; same as Elasticsearch's).

    Events before `start` are only used for `first_seen` (within the lookback).
    """
    schema = feature_table_schema(feature_set)
    if events.num_rows == 0 or feature_set.entity not in events.column_names:
        return schema.empty_table()
    window_ms = int(feature_set.window_delta.total_seconds() * 1000)
    start_ms, end_ms = _ms(start), _ms(end)
    timestamps = events.column(TIMESTAMP_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    departments = np.asarray(
        events.column(DEPARTMENT_COLUMN).fill_null(UNKNOWN_DEPARTMENT).to_pylist()
        if DEPARTMENT_COLUMN in events.column_names
        else [UNKNOWN_DEPARTMENT] * events.num_rows,
        dtype=object,
    )
    selected = _matches(events, feature_set.filter)
    # One row per (event, entity value): a multi-valued entity field puts the event in
    # every value's bucket, as the composite aggregation does; repeated values count once.
    rows, entities = _list_values(events.column(feature_set.entity))
    keep = selected[rows]
    rows, entities = rows[keep], entities[keep]
    entity_names, entity_codes = _codes(entities)
    department_names, department_codes_all = _codes(departments)
    pairs = np.unique(np.column_stack([rows, entity_codes]), axis=0) if rows.size else None
    if pairs is None:
        return schema.empty_table()
    rows, entity_codes = pairs[:, 0], pairs[:, 1]
    moments = timestamps[rows]
    department_codes = department_codes_all[rows]

    in_range = (moments >= start_ms) & (moments < end_ms)
    earliest: dict[tuple[int, int], int] = {}
    if feature_set.needs_first_seen():
        looked = (moments >= start_ms - int(feature_set.lookback_delta.total_seconds() * 1000)) & (
            moments < end_ms
        )
        entity_keys = np.column_stack([department_codes[looked], entity_codes[looked]])
        if entity_keys.size:
            unique_keys, inverse = np.unique(entity_keys, axis=0, return_inverse=True)
            minima = np.full(len(unique_keys), np.iinfo(np.int64).max)
            np.minimum.at(minima, inverse.ravel(), moments[looked])
            earliest = {
                (int(k[0]), int(k[1])): int(m) for k, m in zip(unique_keys, minima, strict=True)
            }

    rows, entity_codes = rows[in_range], entity_codes[in_range]
    moments, department_codes = moments[in_range], department_codes[in_range]
    if rows.size == 0:
        return schema.empty_table()
    windows = moments // window_ms * window_ms
    keys, groups = np.unique(
        np.column_stack([department_codes, entity_codes, windows]), axis=0, return_inverse=True
    )
    groups = groups.ravel()
    group_count = len(keys)
    counts = np.bincount(groups, minlength=group_count)
    first_events = np.full(group_count, np.iinfo(np.int64).max)
    last_events = np.full(group_count, np.iinfo(np.int64).min)
    np.minimum.at(first_events, groups, moments)
    np.maximum.at(last_events, groups, moments)

    columns: dict[str, Any] = {
        DEPARTMENT_COLUMN: department_names[keys[:, 0]].tolist(),
        ENTITY_COLUMN: entity_names[keys[:, 1]].tolist(),
        WINDOW_COLUMN: keys[:, 2],
        COUNT_COLUMN: counts,
        FIRST_EVENT_COLUMN: first_events,
        LAST_EVENT_COLUMN: last_events,
    }
    off_hours: np.ndarray | None = None
    for feature in feature_set.features:
        if feature.kind == "count":
            values = counts.astype(float)
        elif feature.kind in NUMERIC_KINDS:
            name = number_column(feature.field or "")
            numbers = (  # missing values are NaN here
                events.column(name).to_numpy(zero_copy_only=False).astype(float)
                if name in events.column_names
                else np.full(events.num_rows, np.nan)
            )[rows]
            if feature.kind == "sum":
                values = np.bincount(groups, weights=np.nan_to_num(numbers), minlength=group_count)
            else:
                values = np.full(group_count, -np.inf)
                np.maximum.at(values, groups, np.where(np.isnan(numbers), -np.inf, numbers))
                values[np.isneginf(values)] = 0.0
        elif feature.kind == "distinct":
            values = _distinct_per_group(events, feature.field or "", rows, groups, group_count)
        elif feature.kind == "ratio":
            hits = _matches(events, feature.where)[rows]
            values = np.bincount(groups, weights=hits, minlength=group_count) / counts
        elif feature.kind == "off_hours_ratio":
            if off_hours is None:
                off_hours = _off_hours_mask(feature_set, start, end, moments)
            values = np.bincount(groups, weights=off_hours, minlength=group_count) / counts
        else:  # first_seen
            values = np.array(
                [
                    float(window <= earliest.get((int(d), int(e)), -1) < window + window_ms)
                    for d, e, window in keys
                ]
            )
        columns[feature.name] = np.asarray(values, dtype=float)
    return sort_feature_table(pa.Table.from_pydict(columns, schema=schema))


def _off_hours_mask(
    feature_set: FeatureSet, start: datetime, end: datetime, moments: np.ndarray
) -> np.ndarray:
    intervals = feature_set.working_hours.off_hours_intervals(start, end)
    if not intervals:
        return np.zeros(len(moments))
    bounds = np.array(intervals, dtype=np.int64).ravel()  # sorted, disjoint: low, high, ...
    position = np.searchsorted(bounds, moments, side="right")
    return (position % 2 == 1).astype(float)  # odd: inside [low, high)


def _distinct_per_group(
    events: pa.Table, field: str, rows: np.ndarray, groups: np.ndarray, group_count: int
) -> np.ndarray:
    if field not in events.column_names:
        return np.zeros(group_count)
    event_rows, values = _list_values(events.column(field))
    if values.size == 0:
        return np.zeros(group_count)
    _, value_codes = _codes(values)
    # For each (event, entity) row, the values of its event: join on the event index.
    order = np.argsort(event_rows, kind="stable")
    event_rows, value_codes = event_rows[order], value_codes[order]
    starts = np.searchsorted(event_rows, rows, side="left")
    stops = np.searchsorted(event_rows, rows, side="right")
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.zeros(group_count)
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    pairs = np.unique(np.column_stack([groups[owner], value_codes[offsets]]), axis=0)
    return np.bincount(pairs[:, 0], minlength=group_count).astype(float)


def table_time_range(events: pa.Table, feature_set: FeatureSet) -> tuple[datetime, datetime]:
    """The whole windows that cover every event of a table: [first window, after the last)."""
    if events.num_rows == 0:
        raise ValueError("no events: cannot derive a time range")
    timestamps = events.column(TIMESTAMP_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
    window_ms = int(feature_set.window_delta.total_seconds() * 1000)
    low = int(timestamps.min()) // window_ms * window_ms
    high = (int(timestamps.max()) // window_ms + 1) * window_ms
    return datetime.fromtimestamp(low / 1000, UTC), datetime.fromtimestamp(high / 1000, UTC)


def as_baseline(table: pa.Table, feature_set: FeatureSet) -> pa.Table:
    """The table prepared for training: `first_seen` only for entities with a single window.

    A baseline often starts where the data starts, so the first window of every entity has
    no earlier event and would be flagged as new; the model would then learn that "first
    seen" is ordinary for known entities. In a baseline an entity counts as new only if it
    has no earlier event and no other window in the baseline.
    """
    names = [f.name for f in feature_set.features if f.kind == "first_seen"]
    if not names or table.num_rows == 0:
        return table
    departments = table.column(DEPARTMENT_COLUMN).to_pylist()
    entities = table.column(ENTITY_COLUMN).to_pylist()
    windows: dict[tuple[str, str], int] = {}
    for key in zip(departments, entities, strict=True):
        windows[key] = windows.get(key, 0) + 1
    single = np.array([windows[key] == 1 for key in zip(departments, entities, strict=True)])
    for name in names:
        position = table.column_names.index(name)
        flagged = table.column(name).to_numpy(zero_copy_only=False) * single
        table = table.set_column(
            position, table.schema.field(name), pa.array(flagged, pa.float64())
        )
    return table
