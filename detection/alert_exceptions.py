"""Exceptions (the allow-list): known-benign detections suppressed before they become alerts.

An exception lists field values an alert must all match (`rule.id`, `organization.id`,
`alert.entity.value`, `source.ip`, ... any value of the alert or of its entity), who
added it and why, and an optional expiry. Entries live in `<prefix>-exceptions` and are
never deleted: removing one disables it (with who and why), and an expired one stays
listed as expired. Every suppression is recorded there too (one record per exception and
alert, so re-running a window does not count it twice) and can be listed.

Values match exactly, as `fnmatch` patterns when they contain `*` or `?`, and as networks
when they are CIDR blocks and the alert's value is an IP address.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from detection.alerts import Alert
from lianfang.schema import format_timestamp, parse_timestamp
from lianfang.store import IndexNames, install_index

EXCEPTION_RECORD = "exception"
SUPPRESSION_RECORD = "suppression"
EXCEPTION_FIELDS = {
    "record_type": "keyword",
    "exception_id": "keyword",
    "organization_id": "keyword",
    "created_by": "keyword",
    "created_at": "date",
    "expires_at": "date",
    "reason": "text",
    "disabled": "boolean",
    "disabled_by": "keyword",
    "disabled_at": "date",
    "alert_id": "keyword",
    "rule_id": "keyword",
    "entity_value": "keyword",
    "suppressed_at": "date",
    "first_seen": "date",
}
LIST_LIMIT = 10000


class ExceptionError(ValueError):
    """An exception entry is malformed or unknown; carries the offending input."""

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(value, reason)
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.value!r}: {self.reason}"


@dataclass
class ExceptionEntry:
    """One allow-list entry."""

    id: str
    fields: dict[str, list[str]]
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    organization_id: str | None = None
    disabled: bool = False
    disabled_by: str | None = None
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    suppressed: int = 0  # filled in when listing

    def state(self, now: datetime) -> str:
        """active, expired or disabled."""
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def matches(self, view: dict[str, list[str]]) -> bool:
        """Every field of the entry has a matching value in the alert's view."""
        if self.organization_id and self.organization_id not in view.get("organization.id", []):
            return False
        for name, wanted in self.fields.items():
            actual = view.get(name, [])
            if not any(value_matches(pattern, value) for pattern in wanted for value in actual):
                return False
        return True

    def document(self) -> dict[str, Any]:
        """The entry as stored."""
        return {
            "record_type": EXCEPTION_RECORD,
            "exception_id": self.id,
            "fields": self.fields,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": format_timestamp(self.created_at),
            "expires_at": format_timestamp(self.expires_at) if self.expires_at else None,
            "organization_id": self.organization_id,
            "disabled": self.disabled,
            "disabled_by": self.disabled_by,
            "disabled_reason": self.disabled_reason,
            "disabled_at": format_timestamp(self.disabled_at) if self.disabled_at else None,
        }

    @classmethod
    def from_document(cls, source: dict[str, Any]) -> ExceptionEntry:
        """Read a stored entry."""

        def moment(key: str) -> datetime | None:
            return parse_timestamp(source[key]) if source.get(key) else None

        return cls(
            id=source["exception_id"],
            fields={k: list(v) for k, v in source["fields"].items()},
            reason=source["reason"],
            created_by=source["created_by"],
            created_at=parse_timestamp(source["created_at"]),
            expires_at=moment("expires_at"),
            organization_id=source.get("organization_id"),
            disabled=bool(source.get("disabled")),
            disabled_by=source.get("disabled_by"),
            disabled_reason=source.get("disabled_reason"),
            disabled_at=moment("disabled_at"),
        )

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """For listings: the stored fields plus state and suppression count."""
        return {**self.document(), "state": self.state(now), "suppressed": self.suppressed}


def value_matches(pattern: str, value: str) -> bool:
    """Exact, fnmatch (`*`, `?`) or CIDR match of one alert value."""
    if pattern == value:
        return True
    if "/" in pattern:
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            pass
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return False


def alert_view(alert: Alert) -> dict[str, list[str]]:
    """The values of an alert that exception fields can name."""
    view: dict[str, list[str]] = {
        "rule.id": [alert.rule_id],
        "rule.name": [alert.rule_name],
        "rule.type": [alert.rule_type],
        "alert.severity": [alert.severity],
        "alert.entity.type": [alert.entity_type],
        "alert.entity.value": [alert.entity_value],
        alert.entity_type: [alert.entity_value],
        "threat.technique.id": [t.id for t in alert.techniques],
    }
    if alert.organization_id:
        view["organization.id"] = [alert.organization_id]
    for name, value in alert.entity_fields.items():
        view.setdefault(name, []).append(str(value))
    return view


def parse_field_values(pairs: list[str]) -> dict[str, list[str]]:
    """`field=value` pairs (repeat a field for alternatives) as a mapping."""
    fields: dict[str, list[str]] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name.strip() or not value.strip():
            raise ExceptionError(pair, "expected field=value")
        fields.setdefault(name.strip(), []).append(value.strip())
    if not fields:
        raise ExceptionError(pairs, "an exception needs at least one field=value")
    return fields


@dataclass
class Suppression:
    """An alert held back by an exception."""

    exception: ExceptionEntry
    alert: Alert


@dataclass
class ExceptionFilter:
    """The result of applying exceptions: alerts to store, and the ones suppressed."""

    kept: list[Alert] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)


def apply_exceptions(
    alerts: list[Alert], entries: list[ExceptionEntry], now: datetime
) -> ExceptionFilter:
    """Split alerts by the active entries (pure); the first matching entry is credited."""
    active = [entry for entry in entries if entry.state(now) == "active"]
    result = ExceptionFilter()
    for alert in alerts:
        view = alert_view(alert)
        entry = next((e for e in active if e.matches(view)), None)
        if entry is None:
            result.kept.append(alert)
        else:
            result.suppressed.append(Suppression(entry, alert))
    return result


class ExceptionStore:
    """The `<prefix>-exceptions` index: entries and their suppression records."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).exceptions

    def install(self) -> None:
        """Create the index if it does not exist."""
        install_index(self.client, self.index, EXCEPTION_FIELDS)

    def add(
        self,
        fields: dict[str, list[str]],
        reason: str,
        created_by: str,
        expires_at: datetime | None = None,
        organization_id: str | None = None,
        now: datetime | None = None,
    ) -> ExceptionEntry:
        """Store a new entry (who and why are required)."""
        now = now or datetime.now(UTC)
        if not reason.strip() or not created_by.strip():
            raise ExceptionError(reason, "an exception needs who added it and why")
        if not fields:
            raise ExceptionError(fields, "an exception needs at least one field value")
        if expires_at is not None and expires_at <= now:
            raise ExceptionError(format_timestamp(expires_at), "the expiry is in the past")
        entry = ExceptionEntry(
            id=uuid.uuid4().hex[:12],
            fields=fields,
            reason=reason.strip(),
            created_by=created_by.strip(),
            created_at=now,
            expires_at=expires_at,
            organization_id=organization_id,
        )
        self.install()
        self.client.create(index=self.index, id=entry.id, document=entry.document(), refresh=True)
        return entry

    def get(self, exception_id: str) -> ExceptionEntry:
        """One entry; ExceptionError when unknown."""
        try:
            source = self.client.get(index=self.index, id=exception_id)["_source"]
        except NotFoundError:
            raise ExceptionError(exception_id, "no such exception") from None
        if source.get("record_type") != EXCEPTION_RECORD:
            raise ExceptionError(exception_id, "no such exception")
        return ExceptionEntry.from_document(source)

    def disable(
        self, exception_id: str, by: str, reason: str, now: datetime | None = None
    ) -> ExceptionEntry:
        """Stop an entry from suppressing; it stays listed with who disabled it and why."""
        if not by.strip() or not reason.strip():
            raise ExceptionError(exception_id, "removing an exception needs who and why")
        entry = self.get(exception_id)
        if entry.disabled:
            raise ExceptionError(exception_id, f"already disabled by {entry.disabled_by}")
        entry.disabled = True
        entry.disabled_by = by.strip()
        entry.disabled_reason = reason.strip()
        entry.disabled_at = now or datetime.now(UTC)
        self.client.index(index=self.index, id=entry.id, document=entry.document(), refresh=True)
        return entry

    def entries(self) -> list[ExceptionEntry]:
        """Every entry (active, expired and disabled), oldest first, with suppression counts."""
        if not self.client.indices.exists(index=self.index):
            return []
        response = self.client.search(
            index=self.index,
            size=LIST_LIMIT,
            query={"term": {"record_type": EXCEPTION_RECORD}},
            sort=[{"created_at": "asc"}],
        )
        tally = self.client.search(
            index=self.index,
            size=0,
            query={"term": {"record_type": SUPPRESSION_RECORD}},
            aggs={"by": {"terms": {"field": "exception_id", "size": LIST_LIMIT}}},
        )
        counts = {b["key"]: b["doc_count"] for b in tally["aggregations"]["by"]["buckets"]}
        entries = [ExceptionEntry.from_document(hit["_source"]) for hit in response["hits"]["hits"]]
        for entry in entries:
            entry.suppressed = counts.get(entry.id, 0)
        return entries

    def record(self, suppressions: list[Suppression], now: datetime | None = None) -> None:
        """Store one record per (exception, alert); recording again changes nothing."""
        if not suppressions:
            return
        now = now or datetime.now(UTC)
        operations: list[dict[str, Any]] = []
        for item in suppressions:
            alert = item.alert
            key = f"{item.exception.id}\x00{alert.id}".encode()
            operations.append(
                {
                    "create": {
                        "_index": self.index,
                        "_id": hashlib.blake2b(key, digest_size=16).hexdigest(),
                    }
                }
            )
            operations.append(
                {
                    "record_type": SUPPRESSION_RECORD,
                    "exception_id": item.exception.id,
                    "alert_id": alert.id,
                    "rule_id": alert.rule_id,
                    "organization_id": alert.organization_id,
                    "entity_type": alert.entity_type,
                    "entity_value": alert.entity_value,
                    "first_seen": format_timestamp(alert.first_seen),
                    "explanation": alert.explanation,
                    "suppressed_at": format_timestamp(now),
                }
            )
        self.install()
        response = self.client.bulk(operations=operations, refresh=True)
        if response.get("errors"):
            failed = [
                item["create"]["error"]
                for item in response["items"]
                if item["create"].get("status") not in (201, 409)
            ]
            if failed:
                raise RuntimeError(f"could not record suppressions: {failed[0]}")

    def suppressions(self, exception_id: str | None = None) -> list[dict[str, Any]]:
        """Suppression records, newest first (of one exception, or all)."""
        if not self.client.indices.exists(index=self.index):
            return []
        clauses: list[dict[str, Any]] = [{"term": {"record_type": SUPPRESSION_RECORD}}]
        if exception_id:
            clauses.append({"term": {"exception_id": exception_id}})
        response = self.client.search(
            index=self.index,
            size=LIST_LIMIT,
            query={"bool": {"filter": clauses}},
            sort=[{"suppressed_at": "desc"}, {"first_seen": "desc"}],
        )
        return [hit["_source"] for hit in response["hits"]["hits"]]
