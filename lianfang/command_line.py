"""What every `lianfang` command shares: exit codes, error exits, --json or tables, options.

The command modules (lianfang/cli.py and the groups it registers from detection/,
sharing/ and collectors/) all import from here, so a message, an exit code or the shape
of an option is written once. Elasticsearch and the collectors are imported inside the
functions, so the CLI starts fast.

Exit codes: 0 success; 1 finished, but partly (dead letters, findings, failures); 2 usage
error; 3 Elasticsearch (or a peer) unavailable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lianfang.settings import Settings

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

# Progress, warnings and errors go to stderr, so that stdout holds only the result.
console = Console(stderr=True)


def emit(data: Any, as_json: bool, table: Table | str | None = None) -> None:
    """Print JSON for scripts or a table/text for people."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    elif table is not None:
        Console().print(table)


def fail(message: str, code: int) -> NoReturn:
    """Print an error for people and exit with a meaningful code."""
    # Messages quote user input and paths; square brackets in them are not markup.
    console.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


@contextmanager
def exit_when_unavailable() -> Iterator[None]:
    """Exit 3 with the store's message when Elasticsearch is unavailable inside the block."""
    from lianfang.store import StoreUnavailable

    try:
        yield
    except StoreUnavailable as error:
        fail(str(error), EXIT_UNAVAILABLE)


def connect_or_exit(settings: Settings) -> Any:  # Elasticsearch
    """A client for the configured cluster; exits 3 when none can be had."""
    from lianfang.store import connect

    with exit_when_unavailable():
        return connect(settings)


def event_store_or_exit(settings: Settings) -> Any:  # EventStore
    """The event store of these settings; exits 3 when Elasticsearch is unavailable."""
    from lianfang.store import EventStore

    with exit_when_unavailable():
        return EventStore.from_settings(settings)


def duration_option(text: str, option: str) -> timedelta:
    """A duration such as 5m or 1h; exits with the usage code when it is not one."""
    from detection.rule_format import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        fail(f"{option}: {error}", EXIT_USAGE)


def moment_option(text: str | None, option: str) -> datetime | None:
    """An ISO-8601 time with a zone (None stays None); exits with the usage code otherwise."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        fail(f"{option}: {error}", EXIT_USAGE)
    if moment.tzinfo is None:
        fail(f"{option} needs a zone, e.g. 2026-11-28T00:00:00+08:00", EXIT_USAGE)
    return moment


def time_range_options(
    start_text: str | None, end_text: str | None
) -> tuple[datetime | None, datetime | None]:
    """--from and --to: both or neither, with zones, --from first; exits 2 otherwise."""
    start, end = moment_option(start_text, "--from"), moment_option(end_text, "--to")
    if bool(start) != bool(end):
        fail("--from and --to go together", EXIT_USAGE)
    if start and end and start >= end:
        fail("--from must be before --to", EXIT_USAGE)
    return start, end


def option_group(*options: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """One decorator for several click options, shown in --help in this order."""

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# Who sent the events: --department, --department-name and --sector.
sending_department_options = option_group(
    click.option("--department", help="organization.id of the sending department"),
    click.option("--department-name", help="organization.name of the sending department"),
    click.option("--sector", help="labels.sector (critical sector) of the sending department"),
)


def sending_department(
    department: str | None, name: str | None, sector: str | None
) -> Any:  # Department | None
    """The Department of the --department options (None when no --department is given)."""
    from collectors.normalise import Department

    return Department(department, name, sector) if department else None
