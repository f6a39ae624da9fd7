"""`lianfang collect syslog|stdin|run`: the collector's push inputs on the command line.

These commands join the `collect` group of lianfang/cli.py through
`register_collect_commands`. Each builds a `CollectorRuntime` with push inputs (a syslog
server, standard input, the file groups of a configuration file), runs it until its
inputs are done or SIGINT/SIGTERM, and reports like `collect files`, with the same exit
codes. `collect status` shows their counters while they run. Every input matches its
events against the active intelligence, reloaded while it runs (`ingest_indicators`).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from lianfang.command_line import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    console,
    emit,
    event_store_or_exit,
    fail,
    sending_department,
    sending_department_options,
)
from lianfang.settings import Settings


def _configuration_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the configuration is wrong (exit 2)."""
    from collectors.asset_inventory import AssetInventoryError
    from collectors.collector_config import CollectorConfigError
    from collectors.formats import UnknownFormat
    from collectors.inputs.syslog_server import SyslogServerError
    from collectors.masking import MaskingKeyMissing
    from collectors.spool import SpoolLocked

    return (
        AssetInventoryError,
        CollectorConfigError,
        UnknownFormat,
        SyslogServerError,
        MaskingKeyMissing,
        SpoolLocked,
        ValueError,
    )


def log_to_stderr() -> None:
    """Log lines to stderr; Elasticsearch's transport only on errors (outages are reported)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)  # the runtime reports outages


def _peer_networks(peers: tuple[str, ...]) -> dict[str, Any]:
    """`CIDR=DEPARTMENT` options as a network -> Department mapping."""
    from collectors.longest_match import parse_network
    from collectors.normalise import Department

    networks = {}
    for item in peers:
        network, separator, department = item.partition("=")
        if not separator or not department.strip():
            raise click.BadParameter(f"{item!r} is not CIDR=DEPARTMENT", param_hint="--peer")
        try:
            parse_network(network)
        except ValueError as error:
            raise click.BadParameter(f"{network!r}: {error}", param_hint="--peer") from error
        networks[network.strip()] = Department(department.strip())
    return networks


def ingest_indicators(settings: Settings) -> Any:  # RefreshingLookup | None
    """The active intelligence for long-running inputs (None: matching at ingest is off)."""
    from lianfang.store import StoreUnavailable, connect
    from sharing.indicator_matching import live_ingest_lookup

    try:
        client = connect(settings)
    except StoreUnavailable:
        return None  # no cluster configured: run_collector reports it
    return live_ingest_lookup(settings, client)


def run_collector(
    settings: Settings, push_inputs: list[Any], as_json: bool, indicators: Any = None
) -> None:
    """Run a runtime with these push inputs until done or signalled; report and exit.

    `indicators`, the lookup the inputs were given, puts its reload counters in the status.
    """
    from collectors.runtime import CollectorRuntime, CollectorSnapshot

    def close_inputs() -> None:
        for item in push_inputs:
            closer = getattr(item, "close_sockets", None)
            if closer is not None:
                closer()

    try:
        store = event_store_or_exit(settings)
        try:
            runtime = CollectorRuntime(
                settings, store, [], push_inputs=push_inputs, indicators=indicators
            )
        except _configuration_errors() as error:
            fail(str(error), EXIT_USAGE)
    except SystemExit:  # the listeners must not stay bound
        close_inputs()
        raise
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: runtime.stop())
    result: list[CollectorSnapshot] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(runtime.run())
        except BaseException as error:  # an input that could not start
            failure.append(error)

    worker = threading.Thread(target=work, name="collector")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)  # the main thread stays free to run the signal handlers
    if failure:
        fail(f"the collector could not start: {failure[0]}", EXIT_USAGE)
    report_and_exit(runtime, result[0], as_json, counts_dropped=True)


def report_and_exit(runtime: Any, snapshot: Any, as_json: bool, *, counts_dropped: bool) -> None:
    """Show how a collector run ended (JSON or the inputs table and totals) and exit.

    Exit 1 when events were dead-lettered (or, with `counts_dropped`, dropped by push
    inputs) or the runtime crashed, 3 when undelivered events wait for Elasticsearch.
    """
    totals = snapshot.totals
    undelivered = snapshot.spool["pending_events"]
    dropped = totals.get("dropped", 0) if counts_dropped else 0
    if as_json:
        emit(snapshot.as_dict(), True)
    else:
        Console().print(collector_inputs_table(snapshot.as_dict()["inputs"]))
        dropped_text = f", {dropped:,} dropped" if counts_dropped else ""
        console.print(
            f"{snapshot.state}: {totals['indexed']:,} indexed, {totals['duplicates']:,} already "
            f"present, {totals['failed']:,} dead-lettered{dropped_text}; "
            f"{undelivered:,} events wait in the spool"
        )
        if totals["failed"]:
            console.print(f"dead letters: {runtime.dead_letters.current_path}")
    if runtime.crashed:
        fail(f"the collector stopped on an internal error: {runtime.crashed}", EXIT_PARTIAL)
    if undelivered and snapshot.elasticsearch == "unavailable":
        sys.exit(EXIT_UNAVAILABLE)
    sys.exit(EXIT_PARTIAL if totals["failed"] or dropped else EXIT_OK)


def collector_inputs_table(inputs: list[dict[str, Any]]) -> Table:
    """The per-input counters of a collector snapshot (or status file), with its last errors."""
    table = Table(
        Column("input", overflow="fold"),  # a path is wrapped, never cut short
        *("format", "state", "read", "parsed", "failed", "spooled", "indexed", "dupl."),
        *("dropped", "lag"),
    )
    errors = []
    for row in inputs:
        table.add_row(
            row["source"],
            row["format"] or "",
            row["state"],
            f"{row['read']:,}",
            f"{row.get('parsed', 0):,}",
            f"{row['failed']:,}",
            f"{row.get('spooled', 0):,}",
            f"{row['indexed']:,}",
            f"{row['duplicates']:,}",
            f"{row.get('dropped', 0):,}",
            f"{row['lag_bytes']:,} B",
        )
        if row.get("last_error"):
            errors.append(f"{row['source']}: {row['last_error']}")
    if errors:  # below the table: an error message is too long for a column
        table.caption = "last errors:\n" + "\n".join(errors)
        table.caption_justify = "left"
    return table


def build_configured_inputs(
    settings: Settings, config_path: Path, indicators: Any = None
) -> list[Any]:
    """The push inputs of a collector configuration file, built and (for syslog) bound.

    `indicators` (an `IndicatorLookup`) is shared by every input.
    """
    from collectors.collector_config import load_collector_config
    from collectors.inputs.file_group import FileGroupInput
    from collectors.inputs.syslog_server import SyslogServer

    config = load_collector_config(config_path)
    inputs: list[Any] = []
    names = config.input_names
    for index, item in enumerate(config.files):
        inputs.append(
            FileGroupInput(
                settings,
                names[index],
                item.paths,
                follow=item.follow,
                format_name=item.format,
                department=config.department(item.department),
                indicators=indicators,
            )
        )
    if config.syslog:
        inventory = _inventory(settings)
        departments = {
            department_id: config.department(department_id) for department_id in config.departments
        }
        server = SyslogServer(
            settings,
            config.syslog,
            peers=config.peer_networks(),
            departments=departments,
            inventory=inventory,
            indicators=indicators,
        )
        server.bind()
        inputs.append(server)
    return inputs


def register_collect_commands(collect: click.Group) -> None:
    """Add `syslog`, `stdin` and `run` to the `collect` group."""

    @collect.command("syslog")
    @click.option("--port", type=click.IntRange(0, 65535), default=5514, show_default=True)
    @click.option("--host", default="127.0.0.1", show_default=True, help="listen address")
    @click.option("--udp", is_flag=True, help="listen on UDP (default: UDP and TCP)")
    @click.option("--tcp", is_flag=True, help="listen on TCP (TLS with --tls-cert/--tls-key)")
    @click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("--tls-client-ca", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("--format", "format_name", help="log format (default: detected per peer)")
    @click.option("--department", help="organization.id of peers outside every --peer network")
    @click.option("--department-name", help="organization.name of that department")
    @click.option("--sector", help="labels.sector of that department")
    @click.option("--peer", "peers", multiple=True, help="CIDR=DEPARTMENT (repeatable)")
    @click.option("--max-connections", type=click.IntRange(min=1), default=256, show_default=True)
    @click.option(
        "--max-message-bytes", type=click.IntRange(min=480), default=65536, show_default=True
    )
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def collect_syslog(
        settings: Settings,
        port: int,
        host: str,
        udp: bool,
        tcp: bool,
        tls_cert: Path | None,
        tls_key: Path | None,
        tls_client_ca: Path | None,
        format_name: str | None,
        department: str | None,
        department_name: str | None,
        sector: str | None,
        peers: tuple[str, ...],
        max_connections: int,
        max_message_bytes: int,
        as_json: bool,
    ) -> None:
        """Receive syslog over UDP, TCP or TLS into Elasticsearch until SIGINT/SIGTERM.

        TCP framing (RFC 6587 octet counting or newlines) is recognised per connection.
        Peers are mapped to departments by --peer networks, then --department, then the
        asset inventory; other peers are ingested without one and tagged unknown_peer.
        """
        from collectors.collector_config import SyslogListenerConfig
        from collectors.inputs.syslog_server import SyslogServer

        log_to_stderr()
        tls = tls_cert is not None or tls_key is not None
        if tls and (tls_cert is None or tls_key is None):
            fail("TLS needs both --tls-cert and --tls-key", EXIT_USAGE)
        if not udp and not tcp:
            udp, tcp = not tls, True
        transports = [*(["udp"] if udp else []), *(["tls" if tls else "tcp"] if tcp else [])]
        owner = sending_department(department, department_name, sector)
        indicators = ingest_indicators(settings)
        try:
            listeners = [
                SyslogListenerConfig(
                    transport=transport,
                    host=host,
                    port=port,
                    format=format_name,
                    department=owner.id if owner else None,
                    tls_cert=tls_cert if transport == "tls" else None,
                    tls_key=tls_key if transport == "tls" else None,
                    tls_client_ca=tls_client_ca if transport == "tls" else None,
                    max_connections=max_connections,
                    max_message_bytes=max_message_bytes,
                )
                for transport in transports
            ]
            server = SyslogServer(
                settings,
                listeners,
                peers=_peer_networks(peers),
                departments={owner.id: owner} if owner else {},
                inventory=_inventory(settings),
                indicators=indicators,
            )
            server.bind()
        except _configuration_errors() as error:
            fail(str(error), EXIT_USAGE)
        _say_where_listening([server])
        run_collector(settings, [server], as_json, indicators)

    @collect.command("stdin")
    @click.option("--format", "format_name", help="log format (default: detected)")
    @sending_department_options
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def collect_stdin(
        settings: Settings,
        format_name: str | None,
        department: str | None,
        department_name: str | None,
        sector: str | None,
        as_json: bool,
    ) -> None:
        """Read standard input through the spool into Elasticsearch until it ends.

        Same event ids as `lianfang ingest -`; a full spool stops the reading (the
        writer of the pipe waits), so a pipeline can outlast an Elasticsearch outage.
        """
        from collectors.inputs.stdin_stream import StdinInput

        log_to_stderr()
        indicators = ingest_indicators(settings)
        try:
            stdin = StdinInput(
                settings,
                sys.stdin.buffer,
                format_name=format_name,
                department=sending_department(department, department_name, sector),
                indicators=indicators,
            )
        except _configuration_errors() as error:
            fail(str(error), EXIT_USAGE)
        if sys.stdin.isatty():
            console.print("reading standard input (end it with Ctrl-D)")
        run_collector(settings, [stdin], as_json, indicators)

    @collect.command("run")
    @click.option(
        "--config",
        "config_path",
        required=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML settings file with [collector] tables (config/collector.example.toml)",
    )
    @click.option("--check", is_flag=True, help="validate the configuration and exit")
    @click.option("--json", "as_json", is_flag=True)
    def collect_run(config_path: Path, check: bool, as_json: bool) -> None:
        """Run every input of a collector configuration: file groups and syslog listeners.

        The file is also the settings file (like LIANFANG_CONFIG=FILE; the environment
        still wins), so its masking, asset inventory and spool settings apply.
        """
        from collectors.collector_config import settings_from_file

        log_to_stderr()
        indicators = None
        try:
            settings = settings_from_file(config_path)
            if check:
                summary = check_configuration(settings, config_path)
            else:
                indicators = ingest_indicators(settings)
                inputs = build_configured_inputs(settings, config_path, indicators)
        except _configuration_errors() as error:
            fail(str(error), EXIT_USAGE)
        if check:
            table = Table("input", "kind", "department", "format", "where")
            for row in summary["inputs"]:
                table.add_row(*(str(row[key] or "") for key in table_columns()))
            emit(summary, as_json, table)
            if not as_json:
                console.print(f"{config_path}: valid")
            return
        _say_where_listening(inputs)
        run_collector(settings, inputs, as_json, indicators)


def table_columns() -> tuple[str, ...]:
    """The keys of a `--check` summary row, in table order."""
    return ("name", "kind", "department", "format", "where")


def check_configuration(settings: Settings, config_path: Path) -> dict[str, Any]:
    """Validate a configuration fully (formats, inventory, masking key, TLS files), binding nothing."""
    from collectors.collector_config import load_collector_config
    from collectors.inputs.pipelines import PipelineFactory
    from collectors.inputs.syslog_server import SyslogServer

    config = load_collector_config(config_path)
    _inventory(settings)
    rows = []
    names = config.input_names
    for index, item in enumerate(config.files):
        PipelineFactory(settings, item.format)
        rows.append(
            {
                "name": names[index],
                "kind": "files (follow)" if item.follow else "files",
                "department": item.department,
                "format": item.format or "detected",
                "where": " ".join(item.paths),
            }
        )
    for listener in config.syslog:
        PipelineFactory(settings, listener.format)
        if listener.transport == "tls":
            SyslogServer.tls_context(listener)
        rows.append(
            {
                "name": listener.label,
                "kind": f"syslog {listener.transport}",
                "department": listener.department,
                "format": listener.format or "detected",
                "where": f"{listener.host}:{listener.port}",
            }
        )
    return {"config": str(config_path), "inputs": rows, "peers": config.peers}


def _say_where_listening(inputs: list[Any]) -> None:
    """One line per bound listener on stderr (with port 0, the port the system chose)."""
    for item in inputs:
        for name, (host, port) in getattr(item, "addresses", {}).items():
            console.print(f"{name}: listening on {host}:{port}")


def _inventory(settings: Settings) -> Any:
    from collectors.asset_inventory import AssetInventory

    if settings.asset_inventory_path is None:
        return None
    return AssetInventory.load(settings.asset_inventory_path)
