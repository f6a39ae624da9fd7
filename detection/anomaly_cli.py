"""`lianfang detect train|score|eval|feature-sets|models`: anomaly detection from the command line.

The commands join the `detect` group of lianfang/cli.py (`register_anomaly_commands`).
Heavy imports (pyod, scikit-learn) happen inside the commands, so the CLI starts fast.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lianfang.command_line import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    connect_or_exit,
    console,
    emit,
    exit_when_unavailable,
    fail,
    option_group,
    time_range_options,
)
from lianfang.settings import Settings


def _feature_sets(settings: Settings, names: tuple[str, ...]) -> list[Any]:
    from detection.feature_sets import UnknownFeatureSet, load_feature_sets

    loaded = load_feature_sets(settings.anomaly.feature_sets_dir, settings.timezone)
    for problem in loaded.problems:
        console.print(f"[yellow]invalid feature set:[/yellow] {problem}")
    try:
        return loaded.select(list(names) or None)
    except UnknownFeatureSet as error:
        fail(str(error), EXIT_USAGE)


def _rule(quantile: float | None, settings: Settings) -> Any:
    from detection.anomaly_models import ThresholdRule

    try:
        return ThresholdRule(quantile=quantile or settings.anomaly.threshold_quantile)
    except ValueError as error:
        fail(f"--threshold-quantile: {error}", EXIT_USAGE)


def _check_detector(name: str) -> None:
    from detection.anomaly_detectors import available_detectors

    if name not in available_detectors():
        fail(f"no detector {name!r} (known: {', '.join(available_detectors())})", EXIT_USAGE)


def _column_needs(feature_sets: list[Any]) -> Any:
    """The event columns that any of these feature sets reads."""
    from detection.feature_extraction import column_needs

    needs = column_needs(feature_sets[0])
    for feature_set in feature_sets[1:]:
        needs = needs | column_needs(feature_set)
    return needs


def _read_files(
    settings: Settings,
    paths: tuple[Path, ...],
    feature_sets: list[Any],
    department: str | None,
    format_name: str | None,
    only_departments: tuple[str, ...] = (),
) -> Any:
    """The events of these files (of `only_departments`, when named); exits 2 on a bad file."""
    from detection.event_files import EventFileError, read_event_files

    needs = _column_needs(feature_sets)
    try:
        table, report = read_event_files(
            list(paths), needs, settings, department=department, format_name=format_name
        )
    except EventFileError as error:
        fail(str(error), EXIT_USAGE)
    if report.rejected:
        console.print(
            f"[yellow]{report.rejected} records could not be parsed:[/yellow] "
            f"{report.dead_letter_file}"
        )
    return _only_departments(table, only_departments)


def _feature_tables(
    events: Any, feature_sets: list[Any], start: datetime | None, end: datetime | None
) -> Iterator[tuple[Any, datetime, datetime, Any]]:
    """(feature set, start, end, feature table) for each feature set; none without events.

    Without --from/--to, a feature set covers the time range of the events.
    """
    from detection.feature_extraction import compute_features, table_time_range

    if events.num_rows == 0:
        return
    for feature_set in feature_sets:
        low, high = (start, end) if start and end else table_time_range(events, feature_set)
        yield feature_set, low, high, compute_features(events, feature_set, low, high)


def _elasticsearch(settings: Settings, start: datetime | None, end: datetime | None) -> Any:
    """A client for a --from/--to run; exits 2 without them, 3 when Elasticsearch is unavailable."""
    if not (start and end):
        fail("give --from and --to (or --input files)", EXIT_USAGE)
    return connect_or_exit(settings)


def _problems(problems: list[str]) -> None:
    for problem in problems:
        console.print(f"[yellow]problem:[/yellow] {problem}")


def _local(moment: datetime, settings: Settings) -> str:
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(settings.timezone)).strftime("%Y-%m-%d %H:%M")


# --feature-set and --department of train and score.
_SCOPE_OPTIONS = option_group(
    click.option("--feature-set", "set_names", multiple=True, help="feature set (default: all)"),
    click.option("--department", "departments", multiple=True, help="only these organization.id"),
)
# How train and score read --input files.
_INPUT_FILE_OPTIONS = option_group(
    click.option("--input-department", help="organization.id for file events that name none"),
    click.option("--format", "format_name", help="log format of --input files (default: detected)"),
)

# ------------------------------------------------------------------ feature-sets, models


@click.command("feature-sets")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def feature_sets_command(settings: Settings, as_json: bool) -> None:
    """List the anomaly feature sets (built-in and configured) and their features."""
    from detection.feature_sets import load_feature_sets

    loaded = load_feature_sets(settings.anomaly.feature_sets_dir, settings.timezone)
    rows = [
        {
            "name": feature_set.name,
            "entity": feature_set.entity,
            "window": feature_set.window,
            "filter": feature_set.filter,
            "features": [
                {"name": f.name, "kind": f.kind, "field": f.field, "technique": f.technique}
                for f in feature_set.features
            ],
        }
        for feature_set in loaded.sets.values()
    ]
    table = Table("feature set", "entity", "window", "features")
    for row in rows:
        table.add_row(
            row["name"], row["entity"], row["window"], ", ".join(f["name"] for f in row["features"])
        )
    emit({"feature_sets": rows, "problems": loaded.problems}, as_json, table)
    if not as_json:
        _problems(loaded.problems)
    sys.exit(EXIT_PARTIAL if loaded.problems else EXIT_OK)


@click.command("models")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_command(settings: Settings, as_json: bool) -> None:
    """List the trained anomaly models (newest version of each)."""
    from detection.anomaly_models import ModelRepository, models_root

    found = ModelRepository(models_root(settings.home_dir)).catalogue()
    table = Table(
        "feature set", "department", "version", "detector", "trained on", "rows", "threshold"
    )
    for meta in found:
        table.add_row(
            meta.feature_set,
            meta.department,
            f"v{meta.version}",
            meta.detector["name"],
            f"{meta.training_start[:16]} → {meta.training_end[:16]}",
            str(meta.training_rows),
            f"{meta.threshold:.3f}",
        )
    emit([meta.as_dict() for meta in found], as_json, table)


# ------------------------------------------------------------------ train


@click.command("train")
@click.option("--from", "start_text", help="baseline start, ISO-8601 with zone")
@click.option("--to", "end_text", help="baseline end (exclusive)")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="train from files instead of Elasticsearch (Parquet archive, JSON lines, CSV, logs)",
)
@_SCOPE_OPTIONS
@click.option("--detector", help="detector (default: settings anomaly.detector, ensemble)")
@click.option("--pooled", is_flag=True, help="also train one model over all departments")
@click.option("--threshold-quantile", type=float, help="alert above this baseline quantile")
@click.option(
    "--baseline-trim",
    type=float,
    default=0.0,
    show_default=True,
    help="refit without this share of the most anomalous baseline windows",
)
@_INPUT_FILE_OPTIONS
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def train_command(
    settings: Settings,
    start_text: str | None,
    end_text: str | None,
    inputs: tuple[Path, ...],
    set_names: tuple[str, ...],
    departments: tuple[str, ...],
    detector: str | None,
    pooled: bool,
    threshold_quantile: float | None,
    baseline_trim: float,
    input_department: str | None,
    format_name: str | None,
    as_json: bool,
) -> None:
    """Train one model per feature set and department on a baseline period; save them.

    Models go to <home_dir>/models/<feature set>/<department>/v<N>/. Exit 1 if some model
    could not be trained (the reasons are printed), 3 if Elasticsearch is unavailable.
    """
    from detection.anomaly_models import ModelRepository, models_root
    from detection.anomaly_scoring import (
        AnomalyRunReport,
        train_feature_set,
        train_from_elasticsearch,
    )
    from lianfang.store import IndexNames

    start, end = time_range_options(start_text, end_text)
    detector = detector or settings.anomaly.detector
    _check_detector(detector)
    rule = _rule(threshold_quantile, settings)
    feature_sets = _feature_sets(settings, set_names)
    repository = ModelRepository(models_root(settings.home_dir))
    per_department = settings.anomaly.per_department
    if inputs:
        events = _read_files(
            settings, inputs, feature_sets, input_department, format_name, departments
        )
        report = AnomalyRunReport()
        if events.num_rows == 0:
            report.problems += [f"{f.name}: the files hold no events" for f in feature_sets]
        for feature_set, low, high, table in _feature_tables(events, feature_sets, start, end):
            train_feature_set(
                table,
                feature_set,
                low,
                high,
                repository,
                detector=detector,
                rule=rule,
                per_department=per_department,
                pooled=pooled or not per_department,
                baseline_trim=baseline_trim,
                report=report,
            )
    else:
        client = _elasticsearch(settings, start, end)
        with exit_when_unavailable():
            report = train_from_elasticsearch(
                client,
                IndexNames(settings.index_prefix).events_alias,
                feature_sets,
                start,
                end,
                repository,
                departments=list(departments) or None,
                detector=detector,
                rule=rule,
                per_department=per_department,
                pooled=pooled or not per_department,
                baseline_trim=baseline_trim,
            )
    rows = [meta.as_dict() for meta in report.trained]
    table = Table(
        "feature set", "department", "version", "detector", "windows", "entities", "threshold"
    )
    for meta in report.trained:
        table.add_row(
            meta.feature_set,
            meta.department,
            f"v{meta.version}",
            meta.detector["name"],
            str(meta.training_rows),
            str(meta.training_entities),
            f"{meta.threshold:.3f}",
        )
    emit(
        {"trained": rows, "problems": report.problems, "models": str(repository.root)},
        as_json,
        table,
    )
    if not as_json:
        _problems(report.problems)
        console.print(f"{len(rows)} models saved under {repository.root}")
    sys.exit(EXIT_PARTIAL if report.problems or not rows else EXIT_OK)


def _only_departments(events: Any, departments: tuple[str, ...]) -> Any:
    """The events of these departments (all when none are named)."""
    if not departments:
        return events
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(list(departments), pa.string())
    return events.filter(pc.is_in(events.column("organization.id"), value_set=wanted))


# ------------------------------------------------------------------ score


@click.command("score")
@click.option("--from", "start_text", help="window start, ISO-8601 with zone")
@click.option("--to", "end_text", help="window end (exclusive)")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="score files instead of Elasticsearch; prints ranked entities",
)
@click.option(
    "--baseline",
    "baselines",
    multiple=True,
    type=click.Path(path_type=Path),
    help="with --input: train on these files (default: on the input itself)",
)
@click.option(
    "--models",
    "use_models",
    is_flag=True,
    help="with --input: use the trained models instead of fitting",
)
@click.option("--detector", help="with --input: detector to fit (default: settings)")
@_SCOPE_OPTIONS
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--no-alerts", is_flag=True, help="Elasticsearch: rank only, raise no alerts")
@click.option("--threshold-quantile", type=float, help="with --input: alert threshold quantile")
@_INPUT_FILE_OPTIONS
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def score_command(
    settings: Settings,
    start_text: str | None,
    end_text: str | None,
    inputs: tuple[Path, ...],
    baselines: tuple[Path, ...],
    use_models: bool,
    detector: str | None,
    set_names: tuple[str, ...],
    departments: tuple[str, ...],
    top: int,
    no_alerts: bool,
    threshold_quantile: float | None,
    input_department: str | None,
    format_name: str | None,
    as_json: bool,
) -> None:
    """Score entity-windows and print the most anomalous, with the reasons in plain words.

    Against Elasticsearch (--from/--to) the trained models score the window and alerts
    (rule type "anomaly") are raised for windows above their threshold. With --input,
    files are scored without Elasticsearch: a model is fitted on --baseline files (or on
    the input itself), or the trained models are used with --models.
    """
    from detection.alerts import AlertStore
    from detection.anomaly_models import ModelRepository, models_root
    from detection.anomaly_scoring import (
        AnomalyRunReport,
        alerts_for,
        score_elasticsearch_window,
        score_events_offline,
        score_feature_set,
    )
    from lianfang.store import IndexNames

    start, end = time_range_options(start_text, end_text)
    feature_sets = _feature_sets(settings, set_names)
    repository = ModelRepository(models_root(settings.home_dir))
    if inputs:
        events = _read_files(
            settings, inputs, feature_sets, input_department, format_name, departments
        )
        if use_models:
            report = AnomalyRunReport()
            for feature_set, _, _, table in _feature_tables(events, feature_sets, start, end):
                model_for = partial(repository.find, feature_set.name)
                score_feature_set(table, feature_set, model_for, explain_top=top, report=report)
            mode = f"trained models in {repository.root}"
        else:
            detector = detector or settings.anomaly.detector
            _check_detector(detector)
            baseline_events = (
                _read_files(settings, baselines, feature_sets, input_department, format_name)
                if baselines
                else None
            )
            report, _ = score_events_offline(
                events,
                feature_sets,
                baseline_events=baseline_events,
                detector=detector,
                rule=_rule(threshold_quantile, settings),
                per_department=settings.anomaly.per_department,
                start=start,
                end=end,
                explain_top=top,
            )
            mode = (
                f"{detector} fitted on {'the baseline files' if baselines else 'the input itself'}"
            )
        from detection.anomaly_scoring import TechniqueResolver

        by_name = {feature_set.name: feature_set for feature_set in feature_sets}
        report.alerts = alerts_for(report.scored, by_name, TechniqueResolver())
    else:
        client = _elasticsearch(settings, start, end)
        with exit_when_unavailable():
            report = score_elasticsearch_window(
                client,
                IndexNames(settings.index_prefix).events_alias,
                feature_sets,
                start,
                end,
                repository,
                None if no_alerts else AlertStore(client, settings.index_prefix),
                departments=list(departments) or None,
                explain_top=top,
            )
        mode = f"trained models in {repository.root}"
    _show_scores(settings, report, top, mode, as_json)
    sys.exit(EXIT_PARTIAL if report.problems else EXIT_OK)


def _show_scores(settings: Settings, report: Any, top: int, mode: str, as_json: bool) -> None:
    from detection.anomaly_scoring import rank_entities, ranked

    windows = ranked(report.scored)[:top]
    entities = rank_entities(report.scored)[:top]
    upserted = report.upserted
    data = {
        "mode": mode,
        "windows_scored": report.windows,
        "above_threshold": sum(window.above_threshold for window in report.scored),
        "top_windows": [window.as_dict() for window in windows],
        "top_entities": [
            {
                "feature_set": entity.feature_set,
                "department": entity.department,
                "entity_type": entity.entity_type,
                "entity": entity.entity,
                "normalised_score": round(entity.normalised_score, 3),
                "windows_above_threshold": entity.windows_above_threshold,
                "worst_window": entity.worst.window_start.isoformat(),
                "explanation": entity.worst.explanation.text,
            }
            for entity in entities
        ],
        "alerts": len(report.alerts),
        "alerts_stored": None if upserted is None else vars(upserted),
        "problems": report.problems,
    }
    if as_json:
        emit(data, True)
        return
    out = Console()
    out.print(f"[bold]most anomalous entities[/bold] ({mode}; score 1.0 = the alert threshold)")
    for position, entity in enumerate(entities, start=1):
        out.print(
            f"{position:>3}  {entity.normalised_score:6.2f}  {entity.feature_set}  "
            f"{entity.department}  {entity.entity_type}={entity.entity}  "
            f"{_local(entity.worst.window_start, settings)}",
            highlight=False,
        )
        out.print(f"{'':13}{entity.worst.explanation.text}", highlight=False, soft_wrap=True)
    if not as_json:
        _problems(report.problems)
    stored = (
        f"; stored: {upserted.created} new, {upserted.updated} updated, {upserted.unchanged} known"
        if upserted
        else ""
    )
    console.print(
        f"{sum(report.windows.values()):,} entity-windows scored, "
        f"{data['above_threshold']} above threshold, {len(report.alerts)} alerts{stored}"
    )


# ------------------------------------------------------------------ eval


@click.command("eval")
@click.option(
    "--nsl-kdd",
    "nsl_kdd",
    type=click.Path(path_type=Path),
    help="NSL-KDD folder: train on KDDTrain+_20Percent, score KDDTest+",
)
@click.option(
    "--labelled",
    type=click.Path(path_type=Path),
    help="CSV/Parquet feature table with a label column (scored)",
)
@click.option(
    "--train",
    "train_file",
    type=click.Path(path_type=Path),
    help="with --labelled: a labelled training table (default: the scored one)",
)
@click.option("--label-column", default="label", show_default=True)
@click.option(
    "--normal-value",
    "normal_values",
    multiple=True,
    help="label values meaning normal (default: normal, benign, 0, false)",
)
@click.option("--demo", is_flag=True, help="two generated demo days, scored against truth.json")
@click.option("--demo-dir", type=click.Path(path_type=Path), help="where --demo writes its days")
@click.option("--demo-scale", type=float, default=1.0, show_default=True)
@click.option(
    "--detector",
    "detectors",
    multiple=True,
    help="detector (repeatable; default: the default configuration)",
)
@click.option("--normal-only", is_flag=True, help="train on the normal training rows only")
@click.option(
    "--threshold-quantile",
    type=float,
    help="precision/recall at this quantile of the training scores (default: settings)",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def eval_command(
    settings: Settings,
    nsl_kdd: Path | None,
    labelled: Path | None,
    train_file: Path | None,
    label_column: str,
    normal_values: tuple[str, ...],
    demo: bool,
    demo_dir: Path | None,
    demo_scale: float,
    detectors: tuple[str, ...],
    normal_only: bool,
    threshold_quantile: float | None,
    as_json: bool,
) -> None:
    """Measure precision, recall, ROC-AUC and PR-AUC on labelled data."""
    threshold_quantile = threshold_quantile or settings.anomaly.threshold_quantile
    if sum(bool(choice) for choice in (nsl_kdd, labelled, demo)) != 1:
        fail("choose one of --nsl-kdd DIR, --labelled FILE or --demo", EXIT_USAGE)
    names = list(detectors) or [settings.anomaly.detector]
    for name in names:
        _check_detector(name)
    if demo:
        _eval_demo(settings, names, demo_dir, demo_scale, threshold_quantile, as_json)
        return
    from detection.evaluation import EvaluationError, evaluate_detector
    from detection.labelled_data import (
        LabelledDataError,
        labelled_split,
        load_nsl_kdd,
        read_table,
    )

    try:
        if nsl_kdd:
            split = load_nsl_kdd(nsl_kdd)
        else:
            scored = read_table(labelled)
            training = read_table(train_file) if train_file else scored
            split = labelled_split(
                training,
                scored,
                label_column,
                tuple(normal_values) or ("normal", "benign", "0", "false"),
            )
    except LabelledDataError as error:
        fail(str(error), EXIT_USAGE)
    runs, problems = [], []
    for name in names:
        try:
            runs.append(
                evaluate_detector(
                    split, name, normal_only=normal_only, threshold_quantile=threshold_quantile
                )
            )
        except (EvaluationError, ValueError) as error:
            problems.append(f"{name}: {error}")
    table = Table("detector", "training", "ROC-AUC", "PR-AUC", "precision", "recall", "seconds")
    for run in runs:
        quality = run.quality
        table.add_row(
            run.detector,
            run.training,
            f"{quality.roc_auc:.4f}",
            f"{quality.pr_auc:.4f}",
            f"{quality.precision:.3f}",
            f"{quality.recall:.3f}",
            f"{run.seconds:.1f}",
        )
    emit({"runs": [run.as_dict() for run in runs], "problems": problems}, as_json, table)
    if not as_json:
        _problems(problems)
    sys.exit(EXIT_PARTIAL if problems else EXIT_OK)


def _eval_demo(
    settings: Settings,
    detectors: list[str],
    demo_dir: Path | None,
    scale: float,
    threshold_quantile: float,
    as_json: bool,
) -> None:
    from detection.anomaly_models import ThresholdRule
    from detection.anomaly_scoring import score_events_offline
    from detection.demo_evaluation import (
        DemoEvaluation,
        feature_set_quality,
        generate_demo_days,
        latest_weekdays,
        read_demo_events,
        story_ranks,
        without_stories,
    )
    from detection.evaluation import EvaluationError

    feature_sets = _feature_sets(settings, ())
    needs = _column_needs(feature_sets)
    folder = demo_dir or Path(tempfile.mkdtemp(prefix="lianfang-demo-eval-"))
    baseline_day, scored_day = latest_weekdays(date.today())
    baseline, scored = generate_demo_days(
        folder, settings.demo_seed, baseline_day, scored_day, scale
    )
    baseline_events = without_stories(
        read_demo_events(baseline, needs, settings), baseline.manifest
    )
    events = read_demo_events(scored, needs, settings)
    results: dict[str, Any] = {}
    for name in detectors:
        report, tables = score_events_offline(
            events,
            feature_sets,
            baseline_events=baseline_events,
            detector=name,
            rule=ThresholdRule(quantile=threshold_quantile),
        )
        evaluation = DemoEvaluation(problems=list(report.problems))
        for feature_set in feature_sets:
            if feature_set.name not in tables:
                continue
            try:
                evaluation.quality[feature_set.name] = feature_set_quality(
                    report.scored, feature_set, tables[feature_set.name], scored.manifest
                )
            except EvaluationError as error:
                evaluation.problems.append(f"{feature_set.name}: {error}")
        evaluation.ranks = story_ranks(report.scored, feature_sets, scored.manifest)
        results[name] = evaluation
    data = {
        "days": {"baseline": baseline_day.isoformat(), "scored": scored_day.isoformat()},
        "folder": str(folder),
        "detectors": {name: evaluation.as_dict() for name, evaluation in results.items()},
    }
    if as_json:
        emit(data, True)
        return
    for name, evaluation in results.items():
        table = Table(
            "feature set",
            "ROC-AUC",
            "PR-AUC",
            "precision",
            "recall",
            "story windows",
            title=f"{name}: demo day {scored_day} against a baseline of {baseline_day}",
        )
        for feature_set, quality in evaluation.quality.items():
            table.add_row(
                feature_set,
                f"{quality.roc_auc:.4f}",
                f"{quality.pr_auc:.4f}",
                f"{quality.precision:.3f}",
                f"{quality.recall:.3f}",
                str(quality.positives),
            )
        Console().print(table)
        ranks = Table("story", "feature set", "entity", "rank in set", "rank overall")
        for rank in evaluation.ranks:
            ranks.add_row(
                rank.story,
                rank.feature_set,
                rank.entity,
                str(rank.rank_in_feature_set or "-"),
                str(rank.rank_overall or "-"),
            )
        Console().print(ranks)
        _problems(evaluation.problems)


def register_anomaly_commands(group: click.Group) -> None:
    """Add the anomaly commands to the `detect` group (keeps any the group already has)."""
    for command in (
        train_command,
        score_command,
        eval_command,
        feature_sets_command,
        models_command,
    ):
        if command.name not in group.commands:
            group.add_command(command)
