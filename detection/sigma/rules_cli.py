"""`lianfang rules list|validate|test|run`: Sigma rules from the command line.

The group joins lianfang/cli.py through `register_rules_commands`. pySigma is imported
inside the commands, so the CLI starts fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    moment_option,
)
from lianfang.settings import Settings


def _rules_dir(settings: Settings, rules_dir: Path | None) -> Path:
    chosen = rules_dir or settings.sigma_rules_dir
    if chosen is None:
        fail(
            "no rule directory: pass --dir or set sigma_rules_dir (LIANFANG_SIGMA_RULES_DIR)",
            EXIT_USAGE,
        )
    if not chosen.exists():
        fail(f"no such rule directory: {chosen}", EXIT_USAGE)
    return chosen


DIR_OPTION = click.option(
    "--dir",
    "rules_dir",
    type=click.Path(path_type=Path),
    help="rule folder or file (default: settings sigma_rules_dir)",
)


def register_rules_commands(main: click.Group) -> None:
    """Add the `rules` group to the top-level command."""

    @main.group()
    def rules() -> None:
        """Sigma rules: convert, validate, test on a file, run over the events."""

    @rules.command("list")
    @DIR_OPTION
    @click.option("--unsupported", "only_unsupported", is_flag=True, help="only rules not run")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def rules_list(
        settings: Settings, rules_dir: Path | None, only_unsupported: bool, as_json: bool
    ) -> None:
        """Every rule: converted (with its query) or unsupported (with the reason)."""
        from detection.sigma.conversion import convert_rule_set
        from detection.sigma.rule_loading import load_rule_set

        catalogue = convert_rule_set(load_rule_set([_rules_dir(settings, rules_dir)]))
        rows = [] if only_unsupported else [rule.as_dict() for rule in catalogue.converted]
        rows += [rule.as_dict() for rule in catalogue.unsupported]
        summary = {
            "converted": len(catalogue.converted),
            "unsupported": len(catalogue.unsupported),
            "unsupported_by_kind": catalogue.unsupported_by_kind(),
        }
        if as_json:
            emit({"summary": summary, "rules": rows}, True)
            return
        table = Table("status", "level", "title", "id / reason")
        for row in rows:
            converted = row["status_in_lianfang"] == "converted"
            table.add_row(
                "converted" if converted else row["kind"],
                (row.get("level") or "-") if converted else "-",
                row["title"],
                row["id"] if converted else row["reason"],
            )
        Console().print(table)
        console.print(
            f"{summary['converted']} converted, {summary['unsupported']} unsupported "
            f"{summary['unsupported_by_kind']}"
        )

    @rules.command("validate")
    @DIR_OPTION
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def rules_validate(settings: Settings, rules_dir: Path | None, as_json: bool) -> None:
        """pySigma's validators and the ATT&CK tag check; exit 1 when any rule has an issue."""
        from detection.sigma.rule_loading import load_rule_set
        from detection.sigma.validation import validate_rules

        rule_set = load_rule_set([_rules_dir(settings, rules_dir)])
        issues = [issue.as_dict() for issue in validate_rules(rule_set.collection.rules)]
        issues += [
            {"rule_id": "", "title": "", "path": failure.path, "validator": "load",
             "severity": "high", "message": failure.reason}
            for failure in rule_set.failures
        ]  # fmt: skip
        if as_json:
            emit({"rules": len(rule_set.collection.rules), "issues": issues}, True)
        else:
            table = Table("severity", "validator", "rule", "issue")
            for issue in issues:
                table.add_row(
                    issue["severity"],
                    issue["validator"],
                    issue["title"] or issue["path"] or "",
                    issue["message"],
                )
            Console().print(table)
            affected = len({issue["rule_id"] or issue["path"] for issue in issues})
            console.print(
                f"{len(rule_set.collection.rules)} rules, {len(issues)} issues in {affected} rules"
            )
        sys.exit(EXIT_PARTIAL if issues else EXIT_OK)

    @rules.command("test")
    @click.argument("rule")
    @click.option("--on", "log_file", required=True, type=click.Path(path_type=Path))
    @click.option("--format", "format_name", help="log format (default: detected; EVTX: windows)")
    @DIR_OPTION
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def rules_test(
        settings: Settings,
        rule: str,
        log_file: Path,
        format_name: str | None,
        rules_dir: Path | None,
        as_json: bool,
    ) -> None:
        """Run one rule (a file, or an id in --dir) on a log file in a throw-away index."""
        from detection.sigma.rule_test import RuleNotFound, resolve_rule, try_rule_on_file

        if not log_file.exists():
            fail(f"no such file: {log_file}", EXIT_USAGE)
        directory = rules_dir or settings.sigma_rules_dir
        try:
            chosen = resolve_rule(rule, directory)
        except RuleNotFound as error:
            fail(str(error), EXIT_USAGE)
        with exit_when_unavailable():
            client = connect_or_exit(settings)
            result = try_rule_on_file(chosen, log_file, settings, client, format_name)
        if as_json:
            emit(result.as_dict(), True)
        else:
            console.print(f"rule: {chosen.title} ({chosen.id})")
            if result.failure:
                console.print(f"[red]not run:[/red] {result.failure}")
            console.print(
                f"{result.events_read} events read, {result.events_indexed} indexed, "
                f"{result.dead_lettered} dead-lettered; {result.matched} matched"
            )
            table = Table("@timestamp", "event.id", "summary")
            for match in result.matches:
                table.add_row(match["@timestamp"], match["event_id"] or "", match["summary"])
            if result.matches:
                Console().print(table)
        if result.failure:
            sys.exit(EXIT_USAGE)

    @rules.command("run")
    @DIR_OPTION
    @click.option("--from", "start", help="ISO-8601 start (inclusive), with zone")
    @click.option("--to", "end", help="ISO-8601 end (exclusive), with zone")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def rules_run(
        settings: Settings,
        rules_dir: Path | None,
        start: str | None,
        end: str | None,
        as_json: bool,
    ) -> None:
        """Run every converted rule over [--from, --to) of the events; alerts go to the index."""
        from detection.alerts import AlertStore
        from detection.sigma.conversion import convert_rule_set
        from detection.sigma.execution import SigmaRunner
        from detection.sigma.rule_loading import load_rule_set
        from lianfang.store import IndexNames

        window = (moment_option(start, "--from"), moment_option(end, "--to"))
        catalogue = convert_rule_set(load_rule_set([_rules_dir(settings, rules_dir)]))
        with exit_when_unavailable():
            client = connect_or_exit(settings)
            runner = SigmaRunner(client, IndexNames(settings.index_prefix))
            report = runner.run(
                catalogue.converted, AlertStore(client, settings.index_prefix), *window
            )
        summary = {
            "converted": len(catalogue.converted),
            "unsupported_by_kind": catalogue.unsupported_by_kind(),
            **report.as_dict(),
        }
        emit(summary, as_json)
        if not as_json:
            console.print(
                f"{report.rules_run} rules run ({report.rules_skipped} had nothing to search), "
                f"{report.rules_matched} matched {report.events_matched} events; alerts "
                f"{vars(report.alerts)}; {len(report.failures)} rules failed in Elasticsearch"
            )
            for failure in report.failures:
                console.print(f"  failed: {failure.title}: {failure.reason}")
            for rule_id, fields in report.unindexed.items():
                console.print(
                    f"  partial: {rule_id} could not see unindexed (too long) values of "
                    f"{', '.join(fields)}"
                )
        sys.exit(EXIT_PARTIAL if report.failures else EXIT_OK)
