"""Converted Sigma rules run over a time window of the events alias; hits become Alerts.

Each rule is one `query_string` search (in filter context: no scoring, cacheable) with the
time window as a range filter, sent in `msearch` batches so thousands of rules cost a few
round trips. A rule whose query Elasticsearch refuses (a regex too complex, too many
clauses) is reported in `RunReport.failures` with Elasticsearch's reason; the other rules
of the batch are unaffected.

A field missing from an event only makes its own condition false: a Lucene clause on an
absent field matches nothing, so `NOT field:x` is true and `a OR field:x` still matches on
`a` (tests/test_sigma_rules.py proves both against the node).

A string longer than the events template's keyword limit (`ignore_above`), or a value
its field type refuses (`ignore_malformed`), is kept in the document but not indexed, so no
query can see it. Elasticsearch lists such fields in each document's `_ignored`; for a
rule testing one of them, those documents' values are decided in Python and the rest of
the rule by Elasticsearch (unindexed.py). A rule for which that is not possible (more than
MAX_UNINDEXED_DOCUMENTS such documents, a clause we cannot decide) is named in
`RunReport.unindexed` with the fields, rather than silently seeing less.

Hits are grouped into alerts per (rule, entity, department, hour). The entity is the most
specific one the rule looks at: the source address when the rule tests one (remote logons,
network rules), the account when it tests user fields, otherwise the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from detection.alerts import Alert, AlertStore, AttackTechnique, UpsertReport
from detection.sigma.conversion import ConvertedRule
from detection.sigma.query_plan import index_accepts, mapped_fields
from detection.sigma.unindexed import UndecidableClause, decided_queries
from lianfang.schema import parse_timestamp
from lianfang.store import IndexNames

RULE_TYPE = "sigma"
BATCH_SIZE = 100
PAGE_SIZE = 500
MAX_EVENTS_PER_RULE = 10_000
# query_string's default (10,000) is too low for some case-folded SigmaHQ alternations.
MAX_DETERMINIZED_STATES = 100_000
ALERT_WINDOW = timedelta(hours=1)
# Documents with unindexed values whose clauses are decided in Python, per rule and run.
MAX_UNINDEXED_DOCUMENTS = 1_000
# Elasticsearch refuses request lines over 4 KiB; msearch carries index lists in its body,
# but paging (search_after) puts them in the URL.
MAX_URL_TARGET = 3000

SOURCE_ADDRESS_FIELDS = ("source.ip", "source.address")
# Rule fields that test a remote address: ECS names, and raw event data (wildcard IP tests).
SOURCE_ADDRESS_MARKERS = (*SOURCE_ADDRESS_FIELDS, "IpAddress", "SourceIp", "SourceAddress")
ACCOUNT_FIELD_MARKERS = (
    "user.",
    "TargetUserName",
    "SubjectUserName",
    "AccountName",
    "SamAccountName",
    "MemberName",
)
HOST_FIELDS = ("host.name", "winlog.computer_name", "host.hostname", "observer.name")
BASE_SOURCE_FIELDS = (
    "@timestamp",
    "event.id",
    "event.code",
    "event.action",
    "event.dataset",
    "organization.id",
    "organization.name",
    "labels.sector",
    "host.name",
    "host.hostname",
    "winlog.computer_name",
    "winlog.channel",
    "observer.name",
    "user.name",
    "user.domain",
    "source.ip",
    "source.address",
    "process.executable",
    "process.command_line",
    "file.path",
    "registry.path",
    "message",
    "log.file.path",
)
SUMMARY_FIELDS = (
    "process.command_line",
    "process.executable",
    "registry.path",
    "file.path",
    "powershell.file.script_block_text",
    "user.name",
    "source.ip",
    "message",
)
SUMMARY_VALUE_LIMIT = 200


@dataclass(frozen=True)
class RuleFailure:
    """A converted rule that Elasticsearch could not run, with Elasticsearch's reason."""

    rule_id: str
    title: str
    reason: str


@dataclass
class RuleMatches:
    """The events one rule matched in the window (up to MAX_EVENTS_PER_RULE)."""

    rule: ConvertedRule
    total: int
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def truncated(self) -> bool:
        """Whether more events matched than were fetched."""
        return self.total > len(self.events)


@dataclass
class RunReport:
    """What one run over a window did."""

    rules_run: int = 0
    rules_skipped: int = 0  # no index in the window can hold a match (query_plan.py)
    shard_searches: int = 0  # (rule, index) pairs actually searched
    rules_matched: int = 0
    events_matched: int = 0
    alerts: UpsertReport = field(default_factory=UpsertReport)
    failures: list[RuleFailure] = field(default_factory=list)
    truncated_rules: list[str] = field(default_factory=list)
    # rule id -> fields it tests that hold unindexed (too long, malformed) values in its indices
    unindexed: dict[str, list[str]] = field(default_factory=dict)
    search_seconds: float = 0.0
    alert_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "rules_run": self.rules_run,
            "rules_skipped": self.rules_skipped,
            "shard_searches": self.shard_searches,
            "rules_matched": self.rules_matched,
            "events_matched": self.events_matched,
            "alerts": vars(self.alerts),
            "failures": [vars(failure) for failure in self.failures],
            "truncated_rules": self.truncated_rules,
            "unindexed": self.unindexed,
            "search_seconds": round(self.search_seconds, 3),
            "alert_seconds": round(self.alert_seconds, 3),
        }


@dataclass(frozen=True)
class IndexContent:
    """What one index holds in the window, as far as rule planning needs it."""

    pairs: set[tuple[str, str]]  # (event.code, winlog.channel), lower-cased, "" when absent
    fields: set[str]
    unindexed: frozenset[str] = frozenset()  # fields with unindexed values (_ignored)


TechniqueLookup = Callable[[str], AttackTechnique | None]


def catalogue_lookup() -> TechniqueLookup:
    """Technique lookup in the ATT&CK catalogue; ids without data get an empty name."""
    from detection.attack_catalogue import AttackCatalogue, AttackCatalogueError

    try:
        catalogue = AttackCatalogue.load()
    except AttackCatalogueError:
        return lambda technique_id: None
    return catalogue.find


def window_filter(start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """The @timestamp range clause of [start, end), or nothing for an open window."""
    if start is None and end is None:
        return []
    bounds: dict[str, str] = {}
    if start is not None:
        bounds["gte"] = start.astimezone(UTC).isoformat()
    if end is not None:
        bounds["lt"] = end.astimezone(UTC).isoformat()
    return [{"range": {"@timestamp": bounds}}]


def rule_search_body(
    rule: ConvertedRule,
    start: datetime | None,
    end: datetime | None,
    size: int = PAGE_SIZE,
    search_after: list[Any] | None = None,
) -> dict[str, Any]:
    """The search for one rule over [start, end) (pure; tested without a cluster)."""
    clauses: list[dict[str, Any]] = [
        {
            "query_string": {
                "query": rule.query,
                "allow_leading_wildcard": True,
                "max_determinized_states": MAX_DETERMINIZED_STATES,
            }
        }
    ]
    clauses.extend(window_filter(start, end))
    wanted = list(dict.fromkeys([*BASE_SOURCE_FIELDS, *(_stored_name(f) for f in rule.fields)]))
    body: dict[str, Any] = {
        "size": size,
        "query": {"bool": {"filter": clauses}},
        "sort": [{"@timestamp": "asc"}, {"event.id": "asc"}],
        "_source": wanted,
        "track_total_hits": True,
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def _stored_name(index_field: str) -> str:
    return index_field.removesuffix(".keyword")


def _error_reason(error: Any) -> str:
    """Elasticsearch's error object reduced to its most specific reason."""
    if not isinstance(error, dict):
        return str(error)
    reasons = [f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()]
    for failure in error.get("failed_shards", [])[:1]:
        reasons.append(_error_reason(failure.get("reason")))
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        reasons.append(_error_reason(cause))
    return " / ".join(dict.fromkeys(reason for reason in reasons if reason))


class SigmaRunner:
    """Runs converted rules against one deployment's events alias."""

    def __init__(
        self,
        client: Elasticsearch,
        names: IndexNames,
        *,
        batch_size: int = BATCH_SIZE,
        max_events_per_rule: int = MAX_EVENTS_PER_RULE,
        technique_lookup: TechniqueLookup | None = None,
        plan_indices: bool = True,
    ) -> None:
        self.client = client
        self.plan_indices = plan_indices
        self.names = names
        self.batch_size = batch_size
        self.max_events_per_rule = max_events_per_rule
        self._lookup = technique_lookup

    def search(
        self,
        rules: Sequence[ConvertedRule],
        start: datetime | None = None,
        end: datetime | None = None,
        report: RunReport | None = None,
    ) -> list[RuleMatches]:
        """The events each rule matches in [start, end); failing rules go to report.failures."""
        report = report if report is not None else RunReport()
        began = time.perf_counter()
        matches: list[RuleMatches] = []
        page = min(PAGE_SIZE, self.max_events_per_rule)
        plan = self.index_plan(start, end) if self.plan_indices else None
        targeted: list[tuple[ConvertedRule, str]] = []
        for rule in rules:
            target = self._target(rule, plan)
            if target is None:
                report.rules_run += 1
                report.rules_skipped += 1
            else:
                targeted.append((rule, target))
                if plan is not None:
                    self._note_unindexed(rule, target, plan, report)
        for offset in range(0, len(targeted), self.batch_size):
            chunk = targeted[offset : offset + self.batch_size]
            searches: list[dict[str, Any]] = []
            for rule, target in chunk:
                searches.append({"index": target, "allow_no_indices": True})
                searches.append(rule_search_body(rule, start, end, size=page))
                report.shard_searches += target.count(",") + 1 if plan is not None else 0
            try:
                responses = self.client.msearch(searches=searches)["responses"]
            except (ApiError, TransportError) as error:
                # The whole request failed (too large, node unavailable): run rules singly.
                responses = [self._single(rule, target, start, end, page) for rule, target in chunk]
                if all("error" in response for response in responses):
                    raise error from None
            for (rule, target), response in zip(chunk, responses, strict=True):
                report.rules_run += 1
                if "error" in response:
                    report.failures.append(
                        RuleFailure(rule.id, rule.title, _error_reason(response["error"]))
                    )
                    continue
                shard_failures = response.get("_shards", {}).get("failures") or []
                if shard_failures:
                    report.failures.append(
                        RuleFailure(rule.id, rule.title, _error_reason(shard_failures[0]["reason"]))
                    )
                    continue
                total = response["hits"]["total"]["value"]
                if not total:
                    continue
                events = [hit["_source"] for hit in response["hits"]["hits"]]
                if total > len(events):
                    events = self._more(rule, target, start, end, response["hits"]["hits"], events)
                found = RuleMatches(rule, total, events)
                if found.truncated:
                    report.truncated_rules.append(rule.id)
                matches.append(found)
                report.rules_matched += 1
                report.events_matched += total
        if report.unindexed:
            self._decide_unindexed(targeted, start, end, report, matches)
        report.search_seconds += time.perf_counter() - began
        return matches

    def index_plan(self, start: datetime | None, end: datetime | None) -> dict[str, IndexContent]:
        """Per index with events in the window: its (code, channel) pairs and mapped fields."""
        pairs: dict[str, set[tuple[str, str]]] = {}
        unindexed: dict[str, frozenset[str]] = {}
        after: dict[str, Any] | None = None
        window = window_filter(start, end)
        while True:
            composite: dict[str, Any] = {
                "size": 2000,
                "sources": [
                    {"index": {"terms": {"field": "_index"}}},
                    {"code": {"terms": {"field": "event.code", "missing_bucket": True}}},
                    {"channel": {"terms": {"field": "winlog.channel", "missing_bucket": True}}},
                ],
            }
            aggs: dict[str, Any] = {"content": {"composite": composite}}
            if after is not None:
                composite["after"] = after
            else:
                # Which fields of each index hold values that were not indexed (_ignored).
                aggs["ignored"] = {
                    "terms": {"field": "_index", "size": 10_000},
                    "aggs": {"fields": {"terms": {"field": "_ignored", "size": 1_000}}},
                }
            response = self.client.search(
                index=self.names.events_alias,
                allow_no_indices=True,
                size=0,
                query={"bool": {"filter": window}},
                aggs=aggs,
            )
            for bucket in response.get("aggregations", {}).get("ignored", {}).get("buckets", []):
                ignored = bucket["fields"]["buckets"]
                unindexed[bucket["key"]] = frozenset(item["key"] for item in ignored)
            aggregation = response.get("aggregations", {}).get("content", {})
            for bucket in aggregation.get("buckets", []):
                key = bucket["key"]
                code, channel = key.get("code") or "", key.get("channel") or ""
                pairs.setdefault(key["index"], set()).add((str(code).lower(), channel.lower()))
            after = aggregation.get("after_key")
            if not after:
                break
        if not pairs:
            return {}
        # The alias, not the index list: hundreds of daily names overflow the HTTP line.
        mappings = self.client.indices.get_mapping(index=self.names.events_alias)
        return {
            index: IndexContent(
                pairs[index],
                mapped_fields(mappings.get(index, {}).get("mappings", {}).get("properties", {})),
                unindexed.get(index, frozenset()),
            )
            for index in sorted(pairs)
        }

    def _target(self, rule: ConvertedRule, plan: dict[str, IndexContent] | None) -> str | None:
        """The indices to search for a rule (comma-joined), or None when none can match."""
        if plan is None:
            return self.names.events_alias
        gate = {name: frozenset(values) for name, values in rule.gate.items()}
        clauses = [frozenset(clause) for clause in rule.required_fields]
        chosen = [
            index
            for index, content in plan.items()
            if index_accepts(gate, clauses, content.pairs, content.fields)
        ]
        return ",".join(chosen) if chosen else None

    @staticmethod
    def _note_unindexed(
        rule: ConvertedRule, target: str, plan: dict[str, IndexContent], report: RunReport
    ) -> None:
        """Record the rule's fields that hold unindexed (too long, malformed) values in its indices."""
        tested = set(rule.fields)
        blind = {
            name
            for index in target.split(",")
            if index in plan
            for name in plan[index].unindexed & tested
        }
        if blind:
            report.unindexed[rule.id] = sorted(blind)

    def _decide_unindexed(
        self,
        targeted: list[tuple[ConvertedRule, str]],
        start: datetime | None,
        end: datetime | None,
        report: RunReport,
        matches: list[RuleMatches],
    ) -> None:
        """Rules over unindexed values: those documents' clauses decided in Python."""
        found_by_rule = {found.rule.id: found for found in matches}
        for rule, target in targeted:
            fields = report.unindexed.get(rule.id)
            if not fields:
                continue
            response = self.client.search(
                index=self._url_target(target),
                allow_no_indices=True,
                size=MAX_UNINDEXED_DOCUMENTS,
                query={
                    "bool": {
                        "filter": [*window_filter(start, end), {"terms": {"_ignored": fields}}]
                    }
                },
                source=[_stored_name(name) for name in fields],
                track_total_hits=True,
            )
            if response["hits"]["total"]["value"] > MAX_UNINDEXED_DOCUMENTS:
                continue  # too many to decide here: the rule stays reported as partial
            documents = {hit["_id"]: hit["_source"] for hit in response["hits"]["hits"]}
            try:
                decided = decided_queries(rule.query, fields, documents)
            except UndecidableClause:
                continue
            events: list[dict[str, Any]] = []
            for query, ids in decided:
                body = rule_search_body(replace(rule, query=query), start, end, size=len(ids))
                body["query"]["bool"]["filter"].append({"ids": {"values": ids}})
                try:
                    hits = self.client.search(
                        index=self._url_target(target), allow_no_indices=True, **body
                    )["hits"]["hits"]
                except ApiError as error:
                    reason = error.body.get("error") if isinstance(error.body, dict) else error
                    report.failures.append(RuleFailure(rule.id, rule.title, _error_reason(reason)))
                    break
                events.extend(hit["_source"] for hit in hits)
            else:
                del report.unindexed[rule.id]
                if events:
                    self._add_events(rule, events, found_by_rule, matches, report)

    @staticmethod
    def _add_events(
        rule: ConvertedRule,
        events: list[dict[str, Any]],
        found_by_rule: dict[str, RuleMatches],
        matches: list[RuleMatches],
        report: RunReport,
    ) -> None:
        """Events matched through decided clauses, added to the rule's matches once each."""
        found = found_by_rule.get(rule.id)
        if found is None:
            found = found_by_rule[rule.id] = RuleMatches(rule, 0)
            matches.append(found)
            report.rules_matched += 1
        known = {_get(event, "event.id") for event in found.events}
        new = [event for event in events if _get(event, "event.id") not in known]
        found.events.extend(new)
        found.total += len(new)
        report.events_matched += len(new)

    def _url_target(self, target: str) -> str:
        """`target` for a request URL; a long index list becomes the alias (same result)."""
        return target if len(target) <= MAX_URL_TARGET else self.names.events_alias

    def _single(
        self,
        rule: ConvertedRule,
        target: str,
        start: datetime | None,
        end: datetime | None,
        size: int,
    ) -> dict[str, Any]:
        try:
            return dict(
                self.client.search(
                    index=self._url_target(target),
                    allow_no_indices=True,
                    **rule_search_body(rule, start, end, size=size),
                )
            )
        except ApiError as error:
            return {
                "error": error.body.get("error") if isinstance(error.body, dict) else str(error)
            }

    def _more(
        self,
        rule: ConvertedRule,
        target: str,
        start: datetime | None,
        end: datetime | None,
        hits: list[dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Page on with search_after up to the per-rule cap."""
        while hits and len(events) < self.max_events_per_rule:
            size = min(PAGE_SIZE, self.max_events_per_rule - len(events))
            response = self.client.search(
                index=self._url_target(target),
                allow_no_indices=True,
                **rule_search_body(rule, start, end, size=size, search_after=hits[-1]["sort"]),
            )
            hits = response["hits"]["hits"]
            events.extend(hit["_source"] for hit in hits)
        return events

    def alerts(self, matches: Iterable[RuleMatches]) -> list[Alert]:
        """One alert per rule, entity, department and hour of matching events."""
        alerts: list[Alert] = []
        for found in matches:
            techniques = self.techniques(found.rule)
            groups: dict[tuple[str, str, str | None, int], list[dict[str, Any]]] = {}
            for event in found.events:
                entity_type, entity_value = entity_of(found.rule, event)
                moment = parse_timestamp(event["@timestamp"])
                bucket = int(moment.timestamp()) // int(ALERT_WINDOW.total_seconds())
                organization = _get(event, "organization.id")
                key = (entity_type, entity_value, organization, bucket)
                groups.setdefault(key, []).append(event)
            for (entity_type, entity_value, organization, _), events in groups.items():
                times = [parse_timestamp(event["@timestamp"]) for event in events]
                alerts.append(
                    Alert(
                        rule_id=found.rule.id,
                        rule_name=found.rule.title,
                        rule_type=RULE_TYPE,
                        severity=found.rule.severity,
                        entity_type=entity_type,
                        entity_value=entity_value,
                        first_seen=min(times),
                        last_seen=max(times),
                        explanation=explanation(found.rule, events, entity_type, entity_value),
                        organization_id=organization,
                        organization_name=_get(events[0], "organization.name"),
                        sector=_get(events[0], "labels.sector"),
                        count=len(events),
                        evidence_event_ids=[
                            event_id for event in events if (event_id := _get(event, "event.id"))
                        ],
                        evidence_index=self.names.events_alias,
                        techniques=techniques,
                        window=ALERT_WINDOW,
                    )
                )
        return alerts

    def techniques(self, rule: ConvertedRule) -> list[AttackTechnique]:
        """The rule's ATT&CK techniques with names, restricted to the tactics the rule names."""
        if self._lookup is None:
            self._lookup = catalogue_lookup()
        found: list[AttackTechnique] = []
        for technique_id in rule.techniques:
            known = self._lookup(technique_id)
            if known is None:
                found.append(AttackTechnique(technique_id, ""))
                continue
            tactics = known.tactics
            named = tuple(t for t in tactics if _shortname(t[1]) in rule.tactics)
            found.append(AttackTechnique(known.id, known.name, named or tactics))
        return found

    def run(
        self,
        rules: Sequence[ConvertedRule],
        alert_store: AlertStore,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> RunReport:
        """Search every rule over [start, end) and upsert the alerts."""
        report = RunReport()
        matches = self.search(rules, start, end, report)
        began = time.perf_counter()
        alert_store.install()
        report.alerts = alert_store.upsert(self.alerts(matches))
        report.alert_seconds = time.perf_counter() - began
        return report


def _shortname(tactic_name: str) -> str:
    return tactic_name.lower().replace(" ", "-")


def _get(document: dict[str, Any], dotted: str) -> Any:
    value: Any = document
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def entity_of(rule: ConvertedRule, event: dict[str, Any]) -> tuple[str, str]:
    """(entity field, value): source address, account, or host, as the rule suggests."""
    fields = rule.fields
    if any(marker in f for f in fields for marker in SOURCE_ADDRESS_MARKERS):
        for name in SOURCE_ADDRESS_FIELDS:
            if value := _get(event, name):
                return name, str(value)
    tests_account = any(marker in f for f in fields for marker in ACCOUNT_FIELD_MARKERS)
    if tests_account and (value := _get(event, "user.name")):
        return "user.name", str(value)
    for name in HOST_FIELDS:
        if value := _get(event, name):
            return name, str(value)
    return "host.name", "unknown"


def event_summary(event: dict[str, Any]) -> str:
    """A one-line description of a matched event."""
    parts = []
    code, channel = _get(event, "event.code"), _get(event, "winlog.channel")
    if code or channel:
        parts.append(f"event {code or '?'}" + (f" in {channel}" if channel else ""))
    elif dataset := _get(event, "event.dataset"):
        parts.append(str(dataset))
    for name in SUMMARY_FIELDS:
        value = _get(event, name)
        if value not in (None, ""):
            text = str(value)
            if len(text) > SUMMARY_VALUE_LIMIT:
                text = text[:SUMMARY_VALUE_LIMIT] + "..."
            parts.append(f"{name}={text}")
            if len(parts) >= 4:
                break
    return ", ".join(parts)


def explanation(
    rule: ConvertedRule, events: list[dict[str, Any]], entity_type: str, entity_value: str
) -> str:
    """Why the alert exists: the rule, how many events, on what, and the first event."""
    count = len(events)
    noun = "event" if count == 1 else "events"
    return (
        f"Sigma rule '{rule.title}' ({rule.level or 'no level'}) matched {count} {noun} "
        f"for {entity_type}={entity_value}; first: {event_summary(events[0])}"
    )
