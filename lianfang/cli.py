"""The `lianfang` command: people get tables and progress, scripts get --json and exit codes.

Exit codes: 0 success; 1 finished, but some input was dead-lettered; 2 usage error;
3 Elasticsearch unavailable or could not be provisioned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from collectors.collect_cli import (
    collector_inputs_table,
    log_to_stderr,
    register_collect_commands,
    report_and_exit,
)
from detection.anomaly_cli import register_anomaly_commands
from detection.sigma.rules_cli import register_rules_commands
from lianfang import local_node
from lianfang.command_line import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    connect_or_exit,
    console,
    duration_option,
    emit,
    event_store_or_exit,
    exit_when_unavailable,
    fail,
    moment_option,
    option_group,
    sending_department,
    sending_department_options,
    time_range_options,
)
from lianfang.settings import Settings, load_settings
from sharing.intel_cli import register_intel_commands


@click.group()
@click.pass_context
def main(context: click.Context) -> None:
    """Lianfang (联防): security situational awareness and threat sharing."""
    context.obj = load_settings()


# ------------------------------------------------------------------ es


@main.group()
def es() -> None:
    """Manage the local Elasticsearch node (or report on the configured cluster)."""


@es.command("start")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def es_start(settings: Settings, as_json: bool) -> None:
    """Fetch, unpack and start the local node; a no-op if it already runs."""
    try:
        state, started = local_node.start(settings, log=lambda text: console.print(text))
    except local_node.ExternalClusterConfigured as error:
        emit({"started": False, "external": True, "url": settings.es_url}, as_json)
        if not as_json:
            console.print(str(error))
        return
    except local_node.ProvisioningError as error:
        fail(str(error), EXIT_UNAVAILABLE)
        return
    report = {"started": started, "pid": state.pid, "url": state.url, "version": state.version}
    emit(report, as_json)
    if not as_json:
        verb = "started" if started else "already running"
        console.print(f"Elasticsearch {state.version} {verb} at {state.url} (pid {state.pid})")


@es.command("stop")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def es_stop(settings: Settings, as_json: bool) -> None:
    """Stop the local node started by `es start` (by its pid file, never by name)."""
    try:
        stopped = local_node.stop(settings)
    except local_node.ExternalClusterConfigured as error:
        fail(str(error), EXIT_USAGE)
        return
    emit({"stopped": stopped}, as_json)
    if not as_json:
        console.print("stopped" if stopped else "no local node was running")


@es.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def es_status(settings: Settings, as_json: bool) -> None:
    """Is the node running, where, and how healthy. Exit 3 when it is not running."""
    report = local_node.status(settings)
    if report["mode"] == "external":
        from lianfang.store import connect

        try:
            report["health"] = dict(connect(settings).cluster.health())
            report["running"] = True
        except Exception as error:
            report.update(running=False, error=str(error))
    if as_json:
        emit(report, True)
    else:
        table = Table(show_header=False)
        for key, value in report.items():
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
        Console().print(table)
    if not report.get("running"):
        sys.exit(EXIT_UNAVAILABLE)


@es.command("retention")
@click.option("--days", type=click.IntRange(min=0), required=True, help="keep this many days")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def es_retention(settings: Settings, days: int, as_json: bool) -> None:
    """Delete whole daily event indices older than --days (the core node has no ILM)."""
    store = event_store_or_exit(settings)
    with exit_when_unavailable():
        deleted = store.delete_older_than(days)
    emit({"deleted": deleted}, as_json)
    if not as_json:
        console.print(f"deleted {len(deleted)} indices" + "".join(f"\n  {n}" for n in deleted))


# ------------------------------------------------------------------ ingest


def _bytes_progress(hidden: bool) -> Progress:
    """A bar of the bytes read, with speed and time left, on stderr when it is a terminal."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=hidden or not console.is_terminal,
    )


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "format_name", help="log format (default: detected per file)")
@sending_department_options
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(path_type=Path),
    help="also write the normalised events to this Parquet archive folder",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ingest(
    settings: Settings,
    paths: tuple[Path, ...],
    format_name: str | None,
    department: str | None,
    department_name: str | None,
    sector: str | None,
    archive_dir: Path | None,
    as_json: bool,
) -> None:
    """Read log files, Parquet archives or stdin (-), normalise them to ECS and index them."""
    from collectors.asset_inventory import AssetInventoryError
    from collectors.file_ingest import STDIN, file_records, ingest_records
    from collectors.formats import UnknownFormat
    from collectors.masking import MaskingKeyMissing
    from collectors.parquet_archive import ParquetArchive
    from lianfang.bulk_writer import BulkDeliveryError
    from lianfang.store import StoreUnavailable

    files = [p for p in paths if p == STDIN or p.exists()]
    missing = [str(p) for p in paths if p != STDIN and not p.exists()]
    if missing:
        fail(f"no such file: {', '.join(missing)}", EXIT_USAGE)
    store = event_store_or_exit(settings)
    owner = sending_department(department, department_name, sector)
    from sharing.indicator_matching import ingest_lookup

    indicators = ingest_lookup(settings, store.client)  # active intelligence, if any
    total_bytes = sum(p.stat().st_size for p in files if p != STDIN and p.is_file())
    archive = ParquetArchive(archive_dir) if archive_dir else None
    results: list[dict[str, Any]] = []
    exit_code = EXIT_OK
    with _bytes_progress(hidden=as_json) as progress:
        task = progress.add_task("ingesting", total=total_bytes or None)
        for path in files:
            records = file_records(path, lambda n: progress.advance(task, n))
            try:
                report, dead_letters = ingest_records(
                    records,
                    settings=settings,
                    store=store,
                    format_name=format_name,
                    department=owner,
                    archive=archive,
                    indicators=indicators,
                )
            except (UnknownFormat, MaskingKeyMissing, AssetInventoryError) as error:
                fail(str(error), EXIT_USAGE)
            except (BulkDeliveryError, StoreUnavailable) as error:
                fail(f"{path}: {error}", EXIT_UNAVAILABLE)
            row = {"path": str(path), **report.as_dict()}
            if report.dead_lettered:
                row["dead_letter_file"] = str(dead_letters.current_path)
                exit_code = EXIT_PARTIAL
            results.append(row)
    archive_files = [str(path) for path in archive.close()] if archive else []
    if as_json:
        emit({"files": results, "archive_files": archive_files}, True)
    else:
        table = Table("file", "read", "indexed", "duplicates", "dead-lettered", "events/s")
        for row in results:
            table.add_row(
                row["path"],
                str(row["read"]),
                str(row["indexed"]),
                str(row["duplicates"]),
                str(row["dead_lettered"]),
                f"{row['events_per_second']:,.0f}",
            )
        Console().print(table)
        for row in results:
            if "dead_letter_file" in row:
                console.print(f"dead letters of {row['path']}: {row['dead_letter_file']}")
    sys.exit(exit_code)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def formats(as_json: bool) -> None:
    """List the log formats the collectors read."""
    from collectors.formats import available_formats

    found = available_formats()
    table = Table("format", "description")
    for name, log_format in found.items():
        table.add_row(name, log_format.description)
    emit({name: f.description for name, f in found.items()}, as_json, table)


# ------------------------------------------------------------------ archive


@main.group()
def archive() -> None:
    """The Parquet archive: cold retention and offline detection."""


@archive.command("export")
@click.option("--from", "start", required=True, help="ISO-8601 start (inclusive), with zone")
@click.option("--to", "end", required=True, help="ISO-8601 end (exclusive), with zone")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def archive_export(settings: Settings, start: str, end: str, out_dir: Path, as_json: bool) -> None:
    """Dump the events of [--from, --to) from Elasticsearch into hourly Parquet files."""
    import time
    from datetime import datetime

    from collectors.archive_export import export_range
    from collectors.parquet_archive import ParquetArchive

    try:
        window = [datetime.fromisoformat(value.replace("Z", "+00:00")) for value in (start, end)]
    except ValueError as error:
        fail(f"--from/--to must be ISO-8601: {error}", EXIT_USAGE)
    if any(moment.tzinfo is None for moment in window) or window[0] >= window[1]:
        fail("--from and --to need a zone, and --from must be before --to", EXIT_USAGE)
    store = event_store_or_exit(settings)
    with exit_when_unavailable():
        began = time.perf_counter()
        sink = ParquetArchive(out_dir)
        count = export_range(store.client, store.names.events_alias, window[0], window[1], sink)
        files = sink.close()
    seconds = time.perf_counter() - began
    report = {"events": count, "files": [str(f) for f in files], "seconds": round(seconds, 2)}
    emit(report, as_json)
    if not as_json:
        console.print(
            f"exported {count:,} events into {len(files)} files under {out_dir} in {seconds:.1f} s"
        )


# ------------------------------------------------------------------ users and keys


def _principal_store(settings: Settings):
    from lianfang.principals import PrincipalStore

    with exit_when_unavailable():
        store = PrincipalStore(connect_or_exit(settings), settings.index_prefix)
        store.install()
    return store


@main.group()
def users() -> None:
    """Manage users (administrators, analysts, sharing partners)."""


@users.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(
        ["administrator", "province_analyst", "department_analyst", "sharing_partner"]
    ),
)
@click.option("--department", help="organization.id (required for department roles)")
@click.option("--display-name")
@click.option("--password-stdin", is_flag=True, help="read a password (for HTTP Basic) from stdin")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_add(
    settings: Settings,
    name: str,
    role: str,
    department: str | None,
    display_name: str | None,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Create a user."""
    from lianfang.principals import PrincipalError, Role

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        principal = _principal_store(settings).add_user(
            name, Role(role), department, password, display_name
        )
    except PrincipalError as error:
        fail(str(error), EXIT_USAGE)
    emit(
        {"name": principal.name, "role": str(principal.role), "department": principal.department},
        as_json,
    )
    if not as_json:
        console.print(f"user {name} ({role}{', ' + department if department else ''}) created")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_list(settings: Settings, as_json: bool) -> None:
    """List users."""
    rows = _principal_store(settings).list("user")
    table = Table("name", "role", "department", "disabled", "created")
    for row in rows:
        table.add_row(
            row["name"],
            row["role"],
            row.get("department") or "-",
            str(row["disabled"]),
            row["created_at"],
        )
    emit(rows, as_json, table)


@main.group()
def keys() -> None:
    """Manage API keys (shown once at creation, stored hashed)."""


@keys.command("create")
@click.option("--user", "user_name", required=True)
@click.option("--name", default="", help="a label for the key")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_create(settings: Settings, user_name: str, name: str, as_json: bool) -> None:
    """Create an API key for a user and print it (it cannot be shown again)."""
    from lianfang.principals import PrincipalError

    try:
        key = _principal_store(settings).create_key(user_name, name)
    except PrincipalError as error:
        fail(str(error), EXIT_USAGE)
    if as_json:
        emit({"user": user_name, "key": key}, True)
    else:
        click.echo(key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_list(settings: Settings, as_json: bool) -> None:
    """List API keys (ids and owners, never secrets)."""
    rows = _principal_store(settings).list("key")
    table = Table("key id", "name", "user", "disabled", "created")
    for row in rows:
        table.add_row(
            row["key_id"], row["name"], row["user"], str(row["disabled"]), row["created_at"]
        )
    emit(rows, as_json, table)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_revoke(settings: Settings, key_id: str, as_json: bool) -> None:
    """Revoke an API key (it stays listed, disabled)."""
    revoked = _principal_store(settings).revoke_key(key_id)
    emit({"revoked": revoked}, as_json)
    if not revoked:
        fail(f"no key {key_id}", EXIT_USAGE)
    if not as_json:
        console.print(f"key {key_id} revoked")


# ------------------------------------------------------------------ collect


@main.group()
def collect() -> None:
    """Collect files continuously, with a disk spool and checkpoints (nothing lost, no copies)."""


@collect.command("files")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--follow", is_flag=True, help="keep reading as files grow, rotate and appear")
@click.option("--format", "format_name", help="log format (default: detected per file)")
@sending_department_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def collect_files(
    settings: Settings,
    patterns: tuple[str, ...],
    follow: bool,
    format_name: str | None,
    department: str | None,
    department_name: str | None,
    sector: str | None,
    as_json: bool,
) -> None:
    """Read files or globs into Elasticsearch; with --follow, until SIGINT/SIGTERM.

    Progress is checkpointed per file and only advances once Elasticsearch has the
    events, so a restart resumes where the last run was sure to have delivered.
    """
    import signal
    import threading

    from collectors.asset_inventory import AssetInventoryError
    from collectors.formats import UnknownFormat
    from collectors.inputs.file_follow import find_files
    from collectors.masking import MaskingKeyMissing
    from collectors.runtime import CollectorRuntime, CollectorSnapshot
    from collectors.spool import SpoolLocked

    log_to_stderr()
    if not follow and not find_files(list(patterns)):
        fail(f"no file matches {' '.join(patterns)}", EXIT_USAGE)
    store = event_store_or_exit(settings)
    owner = sending_department(department, department_name, sector)
    from sharing.indicator_matching import live_ingest_lookup

    try:
        runtime = CollectorRuntime(
            settings,
            store,
            list(patterns),
            follow=follow,
            format_name=format_name,
            department=owner,
            indicators=live_ingest_lookup(settings, store.client),  # reloaded while it runs
        )
    except (UnknownFormat, SpoolLocked, AssetInventoryError, MaskingKeyMissing) as error:
        fail(str(error), EXIT_USAGE)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: runtime.stop())
    result: list[CollectorSnapshot] = []
    worker = threading.Thread(target=lambda: result.append(runtime.run()), name="collector")
    worker.start()
    total_bytes = sum(Path(path).stat().st_size for path in find_files(list(patterns)).values())
    with _bytes_progress(hidden=as_json or follow) as progress:
        task = progress.add_task("collecting", total=total_bytes or None)
        while worker.is_alive():
            worker.join(0.5)  # the main thread stays free to run the signal handlers
            read_bytes = sum(item.offset for item in runtime.snapshot().inputs)
            progress.update(task, completed=read_bytes)
    snapshot = result[0] if result else runtime.snapshot()
    report_and_exit(runtime, snapshot, as_json, counts_dropped=False)


@collect.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def collect_status(settings: Settings, as_json: bool) -> None:
    """Counters of the running (or last) collector of this home directory.

    Exit 0 when shown, 3 when the running collector cannot reach Elasticsearch, 2 when
    no collector has run with this home directory.
    """
    from collectors.runtime import read_status

    status = read_status(settings.collector_status_file)
    if status is None:
        fail(f"no collector status in {settings.collector_status_file}", EXIT_USAGE)
        return
    if as_json:
        emit(status, True)
    else:
        spool = status["spool"]
        summary = Table(show_header=False)
        summary.add_row("state", f"{status['state']} (pid {status['pid']})")
        summary.add_row("running", str(status["running"]))
        summary.add_row("elasticsearch", status["elasticsearch"])
        summary.add_row("updated", status["updated_at"])
        summary.add_row(
            "spool",
            f"{spool['pending_events']:,} events, {spool['used_bytes']:,} of "
            f"{spool['quota_bytes']:,} bytes ({spool['fill_ratio']:.0%})",
        )
        if status.get("last_error"):
            summary.add_row("last error", f"{status['last_error_at']}: {status['last_error']}")
        Console().print(summary)
        Console().print(collector_inputs_table(status["inputs"]))
    if status["running"] and status["elasticsearch"] == "unavailable":
        sys.exit(EXIT_UNAVAILABLE)


# ------------------------------------------------------------------ serve


@main.command()
@click.option("--host", help="listen address (default: settings api_host)")
@click.option("--port", type=int, help="listen port (default: settings api_port)")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the API (and dashboard) until interrupted."""
    import uvicorn

    from api.app import create_app

    host = host or settings.api_host
    port = port or settings.api_port
    console.print(f"API on http://{host}:{port}/  (OpenAPI docs: http://{host}:{port}/docs)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


# ------------------------------------------------------------------ demo


@main.group()
def demo() -> None:
    """The reproducible multi-department demo day."""


def _demo_options(baseline_days_help: str) -> Any:
    """The options of `demo generate` and `demo load`: which day, where, how much, --json."""
    return option_group(
        click.option(
            "--out", "out_dir", type=click.Path(path_type=Path), default=Path(".lianfang/demo")
        ),
        click.option("--seed", type=int, help="random seed (default: settings demo_seed)"),
        click.option(
            "--date", "day", help="the UTC day to generate, YYYY-MM-DD (default: yesterday)"
        ),
        click.option(
            "--scale", type=float, default=1.0, help="multiplies the normal background volume"
        ),
        click.option(
            "--baseline-days",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help=baseline_days_help,
        ),
        click.option("--json", "as_json", is_flag=True),
        click.pass_obj,
    )


@demo.command("generate")
@_demo_options(
    "also write this many story-free days before the demo day (OUT/baseline), same scale"
)
def demo_generate(
    settings: Settings,
    out_dir: Path,
    seed: int | None,
    day: str | None,
    scale: float,
    baseline_days: int,
    as_json: bool,
) -> None:
    """Write the demo day's log files and its ground truth (truth.json), and baseline days."""
    from collectors.demo_day import BASELINE_FOLDER, BASELINE_MANIFEST

    manifest, baseline = _generate_demo(settings, out_dir, seed, day, scale, baseline_days)
    if baseline_days:
        manifest["baseline"] = baseline
    emit(manifest, as_json)
    if not as_json:
        table = Table("file", "department", "format", "lines")
        for item in manifest["files"]:
            table.add_row(item["path"], item["department"], item["format"], str(item["lines"]))
        Console().print(table)
        console.print(f"{manifest['events']} events, {len(manifest['stories'])} attack stories")
        if baseline_days:
            _print_baseline(manifest["baseline"], out_dir / BASELINE_FOLDER / BASELINE_MANIFEST)


def _generate_demo(
    settings: Settings,
    out_dir: Path,
    seed: int | None,
    day: str | None,
    scale: float,
    baseline_days: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write the demo day and its baseline days (under OUT/baseline); their manifests.

    The baseline manifest is empty without --baseline-days. Exits with the usage code when
    an option is invalid.
    """
    from datetime import date

    from collectors.demo_day import (
        BASELINE_FOLDER,
        DemoSpec,
        generate_baseline_days,
        generate_demo_day,
    )

    try:
        spec = DemoSpec(
            seed=settings.demo_seed if seed is None else seed,
            day=date.fromisoformat(day) if day else None,
            scale=scale,
        )
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    manifest = generate_demo_day(spec, out_dir)
    try:
        baseline = (
            generate_baseline_days(spec, baseline_days, out_dir / BASELINE_FOLDER)
            if baseline_days
            else {}
        )
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    return manifest, baseline


def _print_baseline(baseline: dict[str, Any], manifest_path: Path) -> None:
    """One line for people: the baseline days, their events and where their files are listed."""
    console.print(
        f"baseline {', '.join(baseline['days'])} (scale {baseline['scale']:g}): "
        f"{baseline['events']:,} events, no attack stories; files listed in {manifest_path}",
        highlight=False,
    )


def _demo_principals(settings: Settings, manifest: dict[str, Any]) -> Path:
    """Demo users (an administrator, one analyst per department) with fresh API keys.

    The keys go to a file readable only by the caller; each run replaces them.
    """
    from lianfang.principals import Role

    store = _principal_store(settings)
    wanted = [("admin", Role.ADMINISTRATOR, None)] + [
        (f"analyst.{d['id']}", Role.DEPARTMENT_ANALYST, d["id"]) for d in manifest["departments"]
    ]
    keys_by_user: dict[str, str] = {}
    for name, role, department in wanted:
        if store.user(name) is None:
            store.add_user(name, role, department)
        keys_by_user[name] = store.create_key(name, "demo")
    path = settings.home_dir / "demo-keys.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(keys_by_user, indent=2) + "\n")
    console.print(f"demo API keys (administrator and one analyst per department): {path}")
    console.print(f"administrator key: {keys_by_user['admin']}")
    return path


@demo.command("load")
@_demo_options("also load this many story-free days before the demo day (an anomaly baseline)")
def demo_load(
    settings: Settings,
    out_dir: Path,
    seed: int | None,
    day: str | None,
    scale: float,
    baseline_days: int,
    as_json: bool,
) -> None:
    """Generate the demo day (and baseline days) and ingest every file under its department."""
    from collectors.demo_day import BASELINE_FOLDER, BASELINE_MANIFEST

    manifest, baseline = _generate_demo(settings, out_dir, seed, day, scale, baseline_days)
    store = event_store_or_exit(settings)
    totals, seconds = _ingest_demo_files(settings, store, out_dir, manifest)
    summary: dict[str, Any] = {
        **totals,
        "seconds": round(seconds, 2),
        "events_per_second": round(totals["read"] / seconds, 1) if seconds else 0.0,
        "day": manifest["day"],
        "stories": [story["id"] for story in manifest["stories"]],
        "truth": str(out_dir / "truth.json"),
    }
    if baseline:
        loaded, loaded_seconds = _ingest_demo_files(
            settings, store, out_dir / BASELINE_FOLDER, baseline
        )
        summary["baseline"] = {
            **{key: baseline[key] for key in ("days", "scale", "start", "end")},
            **loaded,
            "seconds": round(loaded_seconds, 2),
            "manifest": str(out_dir / BASELINE_FOLDER / BASELINE_MANIFEST),
        }
    store.refresh()
    summary["keys_file"] = str(_demo_principals(settings, manifest))
    emit(summary, as_json)
    if not as_json:
        console.print(
            f"demo day {manifest['day']}: {_indexed_text(totals, seconds)} "
            f"= {summary['events_per_second']:,.0f} events/s"
        )
        if baseline:
            loaded = summary["baseline"]
            _print_baseline(baseline, Path(loaded["manifest"]))
            console.print(f"baseline: {_indexed_text(loaded, loaded['seconds'])}")
    dead_lettered = totals["dead_lettered"] + summary.get("baseline", {}).get("dead_lettered", 0)
    sys.exit(EXIT_PARTIAL if dead_lettered else EXIT_OK)


def _indexed_text(totals: dict[str, Any], seconds: float) -> str:
    """How many events a demo load indexed, found present or dead-lettered, and how fast."""
    return (
        f"{totals['indexed']:,} events indexed ({totals['duplicates']:,} already present, "
        f"{totals['dead_lettered']} dead-lettered) in {seconds:.1f} s"
    )


def _ingest_demo_files(
    settings: Settings, store: Any, folder: Path, manifest: dict[str, Any]
) -> tuple[dict[str, int], float]:
    """Ingest every file of a demo manifest under its department: the totals and seconds."""
    import time

    from collectors.asset_inventory import AssetInventoryError
    from collectors.demo_day import DEPARTMENTS
    from collectors.file_ingest import file_records, ingest_records
    from collectors.masking import MaskingKeyMissing
    from collectors.normalise import Department
    from lianfang.bulk_writer import BulkDeliveryError
    from lianfang.store import StoreUnavailable

    started = time.perf_counter()
    departments = {d.id: d for d in DEPARTMENTS}
    totals = {"read": 0, "indexed": 0, "duplicates": 0, "dead_lettered": 0}
    for item in manifest["files"]:
        info = departments[item["department"]]
        owner = Department(info.id, info.name, info.sector)
        try:
            report, _ = ingest_records(
                file_records(folder / item["path"]),
                settings=settings,
                store=store,
                format_name=item["format"],
                department=owner,
            )
        except (BulkDeliveryError, StoreUnavailable) as error:
            fail(f"{item['path']}: {error}", EXIT_UNAVAILABLE)
        except (MaskingKeyMissing, AssetInventoryError) as error:
            fail(str(error), EXIT_USAGE)
        for key in totals:
            totals[key] += getattr(report, key)
    return totals, time.perf_counter() - started


# ------------------------------------------------------------------ detection


@main.group()
def detect() -> None:
    """Run detection: behavioural rules (and Sigma rules when present) over sliding windows."""


@detect.command("run")
@click.option("--every", help="interval between passes (default: settings, 5m)")
@click.option("--once", is_flag=True, help="run the pending windows once and exit")
@click.option("--window", "window_text", help="window length (default: settings, 1h)")
@click.option("--overlap", "overlap_text", help="re-read before the last end (default: 10m)")
@click.option("--from", "start_text", help="backfill from this ISO-8601 time (with --to)")
@click.option("--to", "end_text", help="backfill up to this ISO-8601 time")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="detector source (anomaly, behavioural, intel, sigma)",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def detect_run(
    settings: Settings,
    every: str | None,
    once: bool,
    window_text: str | None,
    overlap_text: str | None,
    start_text: str | None,
    end_text: str | None,
    sources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Run every enabled detector; alerts are grouped, so re-running creates no duplicates.

    Without --from/--to, each pass covers [last completed end - overlap, now) and the end is
    saved in <prefix>-detection-state, so a restart resumes. Exit 1 if a detector failed.
    People get one line per window and a table of each detector's totals at the end.
    """
    from detection.detector import UnknownDetectorSource
    from detection.scheduled_detection import build_scheduled_detection

    config = settings.detection_rules
    window = duration_option(window_text or config.window, "--window")
    overlap = duration_option(overlap_text or config.overlap, "--overlap")
    interval = duration_option(every or config.every, "--every")
    if bool(start_text) != bool(end_text):
        fail("--from and --to go together", EXIT_USAGE)
    try:
        with exit_when_unavailable():
            client = connect_or_exit(settings)
            scheduled = build_scheduled_detection(settings, client, list(sources) or None)
    except UnknownDetectorSource as error:
        fail(str(error), EXIT_USAGE)
    for problem in scheduled.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}")
    scheduler = scheduled.scheduler
    failed = False

    reports: list[Any] = []

    def show(report: Any) -> None:
        nonlocal failed
        failed = failed or bool(report.failed)
        reports.append(report)
        if as_json:
            click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        else:
            console.print(_window_line(report), markup=False, soft_wrap=True)

    try:
        with exit_when_unavailable():
            if start_text:
                start, end = time_range_options(start_text, end_text)
                for report in scheduler.run_range(start, end, window, overlap):
                    show(report)
            elif once:
                for report in scheduler.run_pending(window, overlap):
                    show(report)
            else:
                scheduler.run_forever(interval, window, overlap, show)
    except KeyboardInterrupt:
        console.print("stopped")
    if not as_json and reports:
        _print_detector_totals(reports)
    sys.exit(EXIT_PARTIAL if failed else EXIT_OK)


def _window_line(report: Any) -> str:
    """One line per window for people: the window, what it found, how long, what failed."""
    found = sum(run.found for run in report.runs)
    created = sum(run.created for run in report.runs)
    updated = sum(run.updated for run in report.runs)
    line = (
        f"{report.start:%Y-%m-%d %H:%M} → {report.end:%Y-%m-%d %H:%M} UTC: "
        f"{found} found, {created} new, {updated} updated ({report.seconds:.1f} s)"
    )
    finders = [f"{run.detector} {run.found}" for run in report.runs if run.found]
    if finders:
        line += " · " + ", ".join(finders)
    failures = [f"{run.detector}: {run.error}" for run in report.runs if run.error]
    return "\n  ".join([line, *(f"failed {failure}" for failure in failures)])


def _print_detector_totals(reports: list[Any]) -> None:
    """One table per command run: each detector's counts summed over its windows."""
    from rich.table import Column

    from detection.scheduler import detector_totals

    totals = detector_totals(reports)
    title = (
        f"{len(reports)} window(s), {reports[0].start:%Y-%m-%d %H:%M} → "
        f"{reports[-1].end:%Y-%m-%d %H:%M} UTC"
    )
    table = Table("found", "new", "updated", "same", "suppressed", "seconds", "error", title=title)
    table.columns.insert(0, Column("detector", no_wrap=True))
    for run in totals:
        table.add_row(
            run.detector,
            str(run.found),
            str(run.created),
            str(run.updated),
            str(run.unchanged),
            str(run.suppressed),
            f"{run.seconds:.2f}",
            run.error or "",
        )
    Console().print(table)
    for run in totals:
        if run.details:  # e.g. the intel pass: retro-hunted versions, sightings
            details = ", ".join(f"{k} {v}" for k, v in run.details.items() if v not in ([], 0))
            Console().print(f"{run.detector}: {details or 'nothing new'}", markup=False)


@detect.command("rules")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def detect_rules(settings: Settings, as_json: bool) -> None:
    """List the behavioural rules (built-in and configured) with their ATT&CK techniques."""
    from detection.rule_format import BUILTIN_RULES_DIR, load_rules

    rules, errors = load_rules([BUILTIN_RULES_DIR, *settings.detection_rules.rules_dirs])
    rows = [
        {
            "id": rule.id,
            "name": rule.name,
            "kind": rule.kind,
            "severity": rule.severity,
            "enabled": rule.enabled,
            "window": str(rule.window),
            "techniques": rule.techniques,
            "parameters": rule.parameters,
        }
        for rule in rules
    ]
    table = Table("rule", "kind", "severity", "window", "techniques", "enabled")
    for row in rows:
        table.add_row(
            row["id"],
            row["kind"],
            row["severity"],
            row["window"],
            ", ".join(row["techniques"]),
            str(row["enabled"]),
        )
    emit({"rules": rows, "errors": [str(e) for e in errors]}, as_json, table)
    for error in errors:
        console.print(f"[red]invalid rule:[/red] {error}")
    sys.exit(EXIT_PARTIAL if errors else EXIT_OK)


def _exception_store(settings: Settings) -> Any:
    from detection.alert_exceptions import ExceptionStore

    with exit_when_unavailable():
        return ExceptionStore(connect_or_exit(settings), settings.index_prefix)


@main.group()
def exceptions() -> None:
    """The allow-list: known-benign detections suppressed before they become alerts."""


@exceptions.command("add")
@click.option("--field", "pairs", multiple=True, required=True, help="field=value (repeatable)")
@click.option("--reason", required=True, help="why this is benign")
@click.option("--by", "created_by", required=True, help="who adds it")
@click.option("--expires", help="ISO-8601 time or a duration such as 30d")
@click.option("--department", help="only for this organization.id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def exceptions_add(
    settings: Settings,
    pairs: tuple[str, ...],
    reason: str,
    created_by: str,
    expires: str | None,
    department: str | None,
    as_json: bool,
) -> None:
    """Add an exception, e.g. --field rule.id=beaconing --field source.ip=10.20.0.0/16."""
    from datetime import UTC, datetime

    from detection.alert_exceptions import ExceptionError, parse_field_values

    expires_at = None
    if expires:
        if expires[:1].isdigit() and expires[-1:] in "smhdw" and "-" not in expires:
            expires_at = datetime.now(UTC) + duration_option(expires, "--expires")
        else:
            expires_at = moment_option(expires, "--expires")
    try:
        entry = _exception_store(settings).add(
            parse_field_values(list(pairs)), reason, created_by, expires_at, department
        )
    except ExceptionError as error:
        fail(str(error), EXIT_USAGE)
    emit(entry.as_dict(datetime.now(UTC)), as_json)
    if not as_json:
        console.print(f"exception {entry.id} added")


@exceptions.command("list")
@click.option("--suppressions", "exception_id", help="list the alerts this exception suppressed")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def exceptions_list(settings: Settings, exception_id: str | None, as_json: bool) -> None:
    """Every exception (active, expired, disabled) with its suppression count."""
    from datetime import UTC, datetime

    store = _exception_store(settings)
    if exception_id:
        rows = store.suppressions(exception_id)
        table = Table("suppressed at", "rule", "department", "entity", "first seen")
        for row in rows:
            table.add_row(
                row["suppressed_at"],
                row["rule_id"],
                row.get("organization_id") or "-",
                row["entity_value"],
                row["first_seen"],
            )
        emit(rows, as_json, table)
        return
    now = datetime.now(UTC)
    rows = [entry.as_dict(now) for entry in store.entries()]
    table = Table("id", "state", "fields", "department", "by", "reason", "expires", "suppressed")
    for row in rows:
        table.add_row(
            row["exception_id"],
            row["state"],
            "; ".join(f"{k}={'|'.join(v)}" for k, v in row["fields"].items()),
            row["organization_id"] or "-",
            row["created_by"],
            row["reason"],
            row["expires_at"] or "-",
            str(row["suppressed"]),
        )
    emit(rows, as_json, table)


@exceptions.command("remove")
@click.argument("exception_id")
@click.option("--by", required=True, help="who removes it")
@click.option("--reason", required=True, help="why")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def exceptions_remove(
    settings: Settings, exception_id: str, by: str, reason: str, as_json: bool
) -> None:
    """Disable an exception (it stays listed, with who disabled it and why)."""
    from datetime import UTC, datetime

    from detection.alert_exceptions import ExceptionError

    try:
        entry = _exception_store(settings).disable(exception_id, by, reason)
    except ExceptionError as error:
        fail(str(error), EXIT_USAGE)
    emit(entry.as_dict(datetime.now(UTC)), as_json)
    if not as_json:
        console.print(f"exception {exception_id} disabled")


# ------------------------------------------------------------------ commands of other packages

# detect train|score|eval|feature-sets|models: detection/anomaly_cli.py; rules
# list|validate|test|run: detection/sigma/rules_cli.py; intel publish|pull|push|import|
# export|hunt|keygen|status: sharing/intel_cli.py; collect syslog|stdin|run:
# collectors/collect_cli.py.
register_anomaly_commands(detect)
register_rules_commands(main)
register_intel_commands(main)
register_collect_commands(collect)

if __name__ == "__main__":  # pragma: no cover
    main()
