"""One Sigma rule against one log file, without touching the platform's indices.

The file is ingested into a private index prefix (`<prefix>-ruletest-<random>`, whose
template and indices match none of the platform's patterns), the rule runs over it, and
the temporary indices and template are deleted whatever happens. EVTX files are read with
the `windows` format; other files (JSON lines, text logs, Parquet archives) go through
`file_records` with the given format or the detected one.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from collectors.file_ingest import file_records, ingest_records
from collectors.inputs.evtx_file import read_evtx
from collectors.log_format import Record
from detection.sigma.conversion import (
    ConvertedRule,
    RuleConverter,
    UnsupportedRule,
    rule_key,
    rule_path,
)
from detection.sigma.execution import RunReport, SigmaRunner, event_summary
from detection.sigma.rule_loading import load_rule_set
from lianfang.schema import Origin
from lianfang.settings import Settings
from lianfang.store import EventStore, IndexNames

SHOWN_MATCHES = 50


class RuleNotFound(LookupError):
    """No rule with this id or path in the rule directory."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no Sigma rule {key!r} in {where}")
        self.key = key


@dataclass
class RuleTestResult:
    """What the rule found in the file."""

    rule: ConvertedRule | UnsupportedRule
    events_read: int = 0
    events_indexed: int = 0
    dead_lettered: int = 0
    matched: int = 0
    matches: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "rule": self.rule.as_dict(),
            "events_read": self.events_read,
            "events_indexed": self.events_indexed,
            "dead_lettered": self.dead_lettered,
            "matched": self.matched,
            "matches": self.matches,
            "failure": self.failure,
        }


def resolve_rule(key: str, rules_dir: Path | None) -> ConvertedRule | UnsupportedRule:
    """A rule by file path, or by id (or path) inside rules_dir; converted or unsupported."""
    path = Path(key)
    if path.is_file():
        rule_set = load_rule_set([path])
        candidates = list(rule_set.collection.rules)
        if not candidates:
            reason = "; ".join(failure.reason for failure in rule_set.failures) or "no rule"
            return UnsupportedRule(key, "", "invalid-rule", reason, str(path))
        return RuleConverter().convert(candidates[0])
    if rules_dir is None:
        raise RuleNotFound(key, "(no rule directory: pass --dir or set sigma_rules_dir)")
    rule_set = load_rule_set([rules_dir])
    for rule in rule_set.collection.rules:
        if key in (rule_key(rule), rule_path(rule), rule.title):
            return RuleConverter().convert(rule)
    raise RuleNotFound(key, str(rules_dir))


def _records(path: Path) -> Iterator[tuple[Record, Origin]]:
    if path.suffix.lower() == ".evtx":
        yield from read_evtx(path)
    else:
        yield from file_records(path)


def try_rule_on_file(
    rule: ConvertedRule | UnsupportedRule,
    path: Path,
    settings: Settings,
    client: Elasticsearch,
    format_name: str | None = None,
) -> RuleTestResult:
    """Ingest the file into a throw-away prefix, run the rule, delete the indices."""
    result = RuleTestResult(rule)
    if isinstance(rule, UnsupportedRule):
        result.failure = f"{rule.kind}: {rule.reason}"
        return result
    names = IndexNames(settings.index_prefix).rule_test_names(uuid.uuid4().hex[:10])
    store = EventStore(client, names)
    private = settings.model_copy(update={"index_prefix": names.prefix})
    if path.suffix.lower() == ".evtx":
        format_name = format_name or "windows"
    try:
        report, _ = ingest_records(
            _records(path), settings=private, store=store, format_name=format_name
        )
        result.events_read = report.read
        result.events_indexed = report.indexed + report.duplicates
        result.dead_lettered = report.dead_lettered
        store.refresh()
        run = RunReport()
        matches = SigmaRunner(client, names, plan_indices=False).search([rule], report=run)
        if run.failures:
            result.failure = run.failures[0].reason
        for found in matches:
            result.matched += found.total
            for event in found.events[:SHOWN_MATCHES]:
                result.matches.append(
                    {
                        "event_id": event.get("event", {}).get("id"),
                        "@timestamp": event.get("@timestamp"),
                        "summary": event_summary(event),
                    }
                )
    finally:
        _delete_prefix(client, names)
    return result


def _delete_prefix(client: Elasticsearch, names: IndexNames) -> None:
    indices = list(client.indices.get(index=names.every_index, expand_wildcards="all"))
    if indices:
        client.indices.delete(index=",".join(indices))
    with contextlib.suppress(NotFoundError):
        client.indices.delete_index_template(name=names.events_template)
