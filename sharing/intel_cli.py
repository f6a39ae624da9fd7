"""`lianfang intel …`: threat intelligence from the command line.

publish (alerts and incidents -> STIX in the outbox), pull and push (TAXII peers), import
(STIX bundles, CSV/TXT IOC lists, MISP feeds, signed offline bundles), export (a bundle
file, optionally signed), hunt (decay, retro-hunt, alerts and sightings), keygen, status.
`pull` and `import` retro-hunt the new and revised indicators at once (`--no-hunt` skips).
The group joins lianfang/cli.py through `register_intel_commands`; heavy imports happen
inside the commands so that the CLI starts fast.

Exit codes: 0 success; 1 done, but something was quarantined, refused, held back by
policy failures or left unfinished; 2 usage error (unknown peer, bad file or key, an
unsigned or tampered signed bundle); 3 Elasticsearch or a peer unavailable.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lianfang.command_line import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    connect_or_exit,
    emit,
    fail,
    moment_option,
)
from lianfang.settings import Settings


def _client(settings: Settings) -> Any:
    client = connect_or_exit(settings)
    try:
        client.cluster.health()
    except Exception as error:
        fail(f"Elasticsearch is not reachable: {error}", EXIT_UNAVAILABLE)
    return client


def _moment(text: str | None, option: str) -> datetime | None:
    """ISO-8601 with a zone, or a duration back from now (`7d`, `12h`)."""
    if text is None:
        return None
    from detection.rule_format import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        return moment_option(text, option)


def _level(text: str | None) -> Any:
    from sharing.tlp import UnknownTlpLevel, parse_level

    if text is None:
        return None
    try:
        return parse_level(text)
    except UnknownTlpLevel as error:
        fail(str(error), EXIT_USAGE)


def _hunt_new_indicators(settings: Settings, client: Any, versions: int) -> Any:
    """Retro-hunt new and revised indicators now, within the budget (None: nothing new)."""
    from collectors.masking import MaskingKeyMissing
    from sharing.intel_hunt import HuntRunReport, IntelHunter

    if versions <= 0:
        return None
    try:
        # Ingest-time matches are left to the scheduler's pass, which owns their bookmark.
        return IntelHunter(settings, client).run(ingest_matches=False)
    except MaskingKeyMissing as error:  # the sightings need it; the hunt is redone later
        report = HuntRunReport()
        report.problems.append(f"retro-hunt not finished: {error}")
        return report


def _show_hunt(report: Any) -> None:
    data = report.as_dict()
    _print_pairs(
        "retro-hunt of the new indicators",
        {
            "hunted": data["retro_hunt"]["hunted"],
            "unfinished": data["retro_hunt"]["unfinished"],
            "matches": data["retro_hunt"]["matches"],
            "alerts created": report.alerts_created,
            "alerts updated": report.alerts_updated,
            "sightings": report.sightings,
            "sightings queued": report.sightings_queued,
        },
    )
    for problem in report.problems:
        Console(stderr=True).print(problem, markup=False)


def _hunt_incomplete(report: Any) -> bool:
    return report is not None and bool(
        report.retro.unfinished or report.retro.failed or report.problems
    )


def _print_pairs(title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in data.items():
        table.add_row(str(key), str(value))
    Console().print(table)


def register_intel_commands(main: click.Group) -> None:
    """Add the `intel` group to the main command."""

    @main.group()
    def intel() -> None:
        """Threat intelligence: STIX 2.1 publishing, feeds, TAXII peers, matching."""

    @intel.command("publish")
    @click.option("--alert", "alert_ids", multiple=True, help="an alert id (repeatable)")
    @click.option("--incident", "incident_ids", multiple=True, help="a joint incident id")
    @click.option("--since", help="alerts active since (ISO-8601 or a duration such as 1d)")
    @click.option("--tlp", help="TLP of what is published (default: [intel] settings)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_publish(
        settings: Settings,
        alert_ids: tuple[str, ...],
        incident_ids: tuple[str, ...],
        since: str | None,
        tlp: str | None,
        as_json: bool,
    ) -> None:
        """Turn alerts and joint incidents into validated STIX and queue them for sharing."""
        from collectors.masking import MaskingKeyMissing
        from sharing.intel_publish import Publisher, PublishReport

        if not (alert_ids or incident_ids or since):
            fail("name --alert, --incident or --since", EXIT_USAGE)
        level = _level(tlp)
        client = _client(settings)
        try:
            publisher = Publisher(settings, client)
        except MaskingKeyMissing as error:
            fail(str(error), EXIT_USAGE)
        report = PublishReport()
        parts = []
        if alert_ids:
            parts.append(publisher.publish_alerts(alert_ids, level))
        for incident_id in incident_ids:
            parts.append(publisher.publish_incident(incident_id, level))
        if since:
            parts.append(publisher.publish_recent(_moment(since, "--since"), level))
        for part in parts:
            report.published += part.published
            report.objects_queued += part.objects_queued
            report.indicators += part.indicators
            report.withheld += part.withheld
            report.refused += part.refused
            report.missing += part.missing
        emit(report.as_dict(), as_json)
        if not as_json:
            _print_pairs(
                "published",
                {
                    "records": len(report.published),
                    "objects queued": report.objects_queued,
                    "indicators": report.indicators,
                    "withheld": len(report.withheld),
                    "refused": len(report.refused),
                    "missing": ", ".join(report.missing) or "-",
                },
            )
            for line in report.withheld + report.refused:
                Console(stderr=True).print(line)
        if report.missing and not (report.published or report.withheld):
            sys.exit(EXIT_USAGE)
        sys.exit(EXIT_PARTIAL if report.refused else EXIT_OK)

    def _sync(
        settings: Settings, peer: str | None, as_json: bool, direction: str, hunt: bool = False
    ) -> None:
        from sharing.taxii_sync import PeerConfigError, TaxiiSync

        client = _client(settings)
        sync = TaxiiSync(settings, client)
        try:
            reports = sync.pull(peer) if direction == "pull" else sync.push(peer)
        except PeerConfigError as error:
            fail(str(error), EXIT_USAGE)
        hunted = None
        if hunt:
            versions = sum(r.intake.indicators_new + r.intake.indicators_updated for r in reports)
            hunted = _hunt_new_indicators(settings, client, versions)
        rows = [r.as_dict() for r in reports]
        output: dict[str, Any] = {"collections": rows}
        if direction == "pull":
            output["hunt"] = hunted.as_dict() if hunted is not None else None
        emit(output, as_json)
        if not as_json:
            table = Table(
                "peer", "collection", "pages", "objects", "quarantined", "held back", "error"
            )
            for report in reports:
                table.add_row(
                    report.peer,
                    report.collection,
                    str(report.pages),
                    str(report.objects),
                    str(report.intake.quarantined),
                    str(report.held_back),
                    report.error or "",
                )
            Console().print(table)
            if hunted is not None:
                _show_hunt(hunted)
        if not reports and not settings.intel.peers:
            console = Console(stderr=True)
            console.print(
                "no TAXII peers configured ([[intel.peers]] in lianfang.toml)", markup=False
            )
        if any(r.error for r in reports):
            sys.exit(EXIT_UNAVAILABLE)
        partial = any(r.failures or r.held_back or r.intake.quarantined for r in reports)
        partial = partial or _hunt_incomplete(hunted)
        sys.exit(EXIT_PARTIAL if partial else EXIT_OK)

    @intel.command("pull")
    @click.option("--peer", help="only this peer (default: every configured peer)")
    @click.option("--no-hunt", is_flag=True, help="do not retro-hunt new indicators now")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_pull(settings: Settings, peer: str | None, no_hunt: bool, as_json: bool) -> None:
        """Fetch what peers added since the last pull (bookmarks survive restarts).

        New and revised indicators are retro-hunted at once, within the budget.
        """
        _sync(settings, peer, as_json, "pull", hunt=not no_hunt)

    @intel.command("push")
    @click.option("--peer", help="only this peer (default: every configured peer)")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_push(settings: Settings, peer: str | None, as_json: bool) -> None:
        """Send peers what was published since the last push, within their TLP ceiling."""
        _sync(settings, peer, as_json, "push")

    @intel.command("import")
    @click.argument("source")
    @click.option(
        "--format",
        "feed_format",
        type=click.Choice(["auto", "stix", "txt", "csv", "misp"]),
        default="auto",
    )
    @click.option("--name", help="the feed's name (default: from the file name)")
    @click.option("--tlp", default="amber", help="TLP of plain entries without one (default amber)")
    @click.option("--confidence", type=click.IntRange(0, 100), help="confidence of plain entries")
    @click.option("--valid-days", type=click.IntRange(1, 3650), default=90)
    @click.option(
        "--trusted-key",
        "trusted_key_paths",
        multiple=True,
        type=click.Path(path_type=Path),
        help="public key (or folder of *.pub) whose signature is required",
    )
    @click.option(
        "--require-signature", is_flag=True, help="refuse files without a valid signature"
    )
    @click.option("--no-hunt", is_flag=True, help="do not retro-hunt new indicators now")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_import(
        settings: Settings,
        source: str,
        feed_format: str,
        name: str | None,
        tlp: str,
        confidence: int | None,
        valid_days: int,
        trusted_key_paths: tuple[Path, ...],
        require_signature: bool,
        no_hunt: bool,
        as_json: bool,
    ) -> None:
        """Import a STIX bundle (file or URL), a CSV/TXT IOC list or a MISP feed.

        New and revised indicators are retro-hunted at once, within the budget.
        """
        from sharing.feed_import import FeedError, FeedOptions, load_feed
        from sharing.indicator_confidence import ConfidenceRule
        from sharing.intel_store import IntelStore
        from sharing.signed_bundles import KeyFileError, SignatureError, trusted_keys, verify_file

        keys_from = list(trusted_key_paths)
        if settings.intel.trusted_keys_dir is not None:
            keys_from.append(settings.intel.trusted_keys_dir)
        signed_by = None
        if require_signature or trusted_key_paths:
            if source.startswith(("http://", "https://")):
                fail("signed bundles are imported from files", EXIT_USAGE)
            try:
                keys = trusted_keys(keys_from)
                if not keys:
                    fail("no trusted public key given (--trusted-key)", EXIT_USAGE)
                signed_by = verify_file(Path(source), keys)
            except (SignatureError, KeyFileError) as error:
                fail(f"refused: {error}", EXIT_USAGE)
        feed_name = name or (f"offline-{signed_by.key_id}" if signed_by else None)
        options = FeedOptions(
            name=feed_name or Path(source.rstrip("/")).stem or "feed",
            tlp=_level(tlp),
            confidence=settings.intel.default_confidence if confidence is None else confidence,
            validity=timedelta(days=valid_days),
        )
        try:
            load = load_feed(source, feed_format, options)
        except FeedError as error:
            fail(str(error), EXIT_USAGE)
        client = _client(settings)
        store = IntelStore(
            client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel)
        )
        prefix = "offline" if signed_by else "feed"
        report = store.intake(load.objects, source=f"{prefix}:{options.name}")
        hunted = None
        if not no_hunt:
            versions = report.indicators_new + report.indicators_updated
            hunted = _hunt_new_indicators(settings, client, versions)
        result = {
            "source": source,
            "format": load.format,
            "signed_by": signed_by.key_id if signed_by else None,
            "skipped": load.skipped,
            "problems": load.problems[:50],
            **report.as_dict(),
            "hunt": hunted.as_dict() if hunted is not None else None,
        }
        emit(result, as_json)
        if not as_json:
            _print_pairs(
                f"imported {source}",
                {k: v for k, v in result.items() if k not in ("problems", "hunt")},
            )
            for problem in load.problems[:50]:
                Console(stderr=True).print(problem)
            if hunted is not None:
                _show_hunt(hunted)
        partial = report.quarantined or load.problems or _hunt_incomplete(hunted)
        sys.exit(EXIT_PARTIAL if partial else EXIT_OK)

    @intel.command("export")
    @click.option("--out", "out_path", required=True, type=click.Path(path_type=Path))
    @click.option("--since", help="published since (ISO-8601 or a duration such as 7d)")
    @click.option("--until", help="published before (ISO-8601)")
    @click.option("--type", "types", multiple=True, help="only these STIX types (repeatable)")
    @click.option("--max-tlp", default="amber", help="the most restrictive TLP exported")
    @click.option("--sign", "key_path", type=click.Path(path_type=Path), help="Ed25519 private key")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_export(
        settings: Settings,
        out_path: Path,
        since: str | None,
        until: str | None,
        types: tuple[str, ...],
        max_tlp: str,
        key_path: Path | None,
        as_json: bool,
    ) -> None:
        """Write a slice of what was published as one STIX bundle (signed with --sign)."""
        from sharing.bundle_export import export_bundle
        from sharing.signed_bundles import KeyFileError, load_private_key
        from sharing.stix_outbox import Outbox

        private_key = None
        if key_path is not None:
            try:
                private_key = load_private_key(key_path)
            except KeyFileError as error:
                fail(str(error), EXIT_USAGE)
        client = _client(settings)
        report = export_bundle(
            Outbox(client, settings.index_prefix),
            out_path,
            max_tlp=_level(max_tlp),
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            types=types or None,
            private_key=private_key,
        )
        emit(report.as_dict(), as_json)
        if not as_json:
            _print_pairs("exported", report.as_dict())
        sys.exit(EXIT_PARTIAL if report.invalid else EXIT_OK)

    @intel.command("hunt")
    @click.option(
        "--days", type=click.IntRange(0, 3650), help="retro-hunt horizon (default: settings)"
    )
    @click.option(
        "--budget", type=float, help="seconds the retro-hunt may take (default: settings)"
    )
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_hunt(
        settings: Settings, days: int | None, budget: float | None, as_json: bool
    ) -> None:
        """Decay and expire indicators, retro-hunt new ones, raise alerts and sightings."""
        from collectors.masking import MaskingKeyMissing
        from sharing.intel_hunt import IntelHunter

        client = _client(settings)
        try:
            report = IntelHunter(settings, client).run(days=days, budget_seconds=budget)
        except MaskingKeyMissing as error:
            fail(str(error), EXIT_USAGE)
        data = report.as_dict()
        emit(data, as_json)
        if not as_json:
            _print_pairs("states", report.states)
            _print_pairs(
                "retro-hunt", {k: v for k, v in data["retro_hunt"].items() if k != "unsupported"}
            )
            _print_pairs(
                "results",
                {
                    k: data[k]
                    for k in (
                        "ingest_matches",
                        "alerts_created",
                        "alerts_updated",
                        "alerts_suppressed",
                        "sightings",
                        "sightings_queued",
                    )
                },
            )
            for item in data["retro_hunt"]["unsupported"]:
                Console(stderr=True).print(f"not evaluated: {item['id']}: {item['reason']}")
        unfinished = report.retro.unfinished or report.retro.failed or report.problems
        sys.exit(EXIT_PARTIAL if unfinished else EXIT_OK)

    @intel.command("keygen")
    @click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
    @click.option("--name", default="lianfang", help="file name stem of the key pair")
    @click.option("--json", "as_json", is_flag=True)
    def intel_keygen(out_dir: Path, name: str, as_json: bool) -> None:
        """Create an Ed25519 key pair for signing offline bundles."""
        from sharing.signed_bundles import KeyFileError, generate_keypair, key_id, load_public_key

        try:
            private_path, public_path = generate_keypair(out_dir, name)
        except KeyFileError as error:
            fail(str(error), EXIT_USAGE)
        result = {
            "private_key": str(private_path),
            "public_key": str(public_path),
            "key_id": key_id(load_public_key(public_path)),
        }
        emit(result, as_json)
        if not as_json:
            _print_pairs("key pair", result)

    @intel.command("status")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def intel_status(settings: Settings, as_json: bool) -> None:
        """Indicators by state, plan and source; unevaluable patterns; the quarantine."""
        from sharing.indicator_confidence import ConfidenceRule
        from sharing.intel_store import IntelStore

        client = _client(settings)
        store = IntelStore(
            client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel)
        )
        data = {
            **store.summary(),
            "unsupported": store.unsupported(),
            "quarantine": [
                {k: q.get(k) for k in ("received_at", "source", "object_id", "reasons")}
                for q in store.quarantine.list(20)
            ],
        }
        emit(data, as_json)
        if not as_json:
            _print_pairs(
                "indicators",
                {k: v for k, v in data.items() if k not in ("unsupported", "quarantine")},
            )
            for item in data["unsupported"]:
                Console().print(f"not evaluated: {item['stix_id']}: {item['plan']['reason']}")
            for item in data["quarantine"]:
                Console().print(
                    f"quarantined: {item['object_id']} from {item['source']}: {item['reasons']}"
                )
