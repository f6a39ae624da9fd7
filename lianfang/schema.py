"""The event schema: the ECS subset Lianfang maps explicitly, and the `Event` record.

Events are nested ECS documents (plain dicts, as Elasticsearch stores them) carried in an
`Event` record together with where they came from, so that any stage can dead-letter
an event with its origin, and every event has a deterministic document id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ECS_VERSION = "8.17.0"

# Field -> Elasticsearch type. "caseless_keyword" adds a lower-cased `.caseless` sub-field,
# which pySigma's ECS pipelines query for case-insensitive matches on process paths. Everything not listed is still stored: strings map to
# keyword by a dynamic template, and a field-count limit that ignores the excess keeps a
# field-exploding document from being rejected or blowing up the mapping.
ECS_FIELDS: dict[str, str] = {
    "@timestamp": "date",
    "message": "text",
    "tags": "keyword",
    "labels.sector": "keyword",
    "ecs.version": "keyword",
    "event.id": "keyword",
    "event.kind": "keyword",
    "event.category": "keyword",
    "event.type": "keyword",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "event.severity": "long",
    "event.dataset": "keyword",
    "event.module": "keyword",
    "event.provider": "keyword",
    "event.code": "keyword",
    "event.original": "original",
    "event.created": "date",
    "event.ingested": "date",
    "event.duration": "long",
    "event.risk_score": "float",
    "organization.id": "keyword",
    "organization.name": "keyword",
    "source.ip": "ip",
    "source.port": "long",
    "source.bytes": "long",
    "source.packets": "long",
    "source.domain": "keyword",
    "source.address": "keyword",
    "source.mac": "keyword",
    "source.user.name": "keyword",
    "source.geo.country_iso_code": "keyword",
    "destination.ip": "ip",
    "destination.port": "long",
    "destination.bytes": "long",
    "destination.packets": "long",
    "destination.domain": "keyword",
    "destination.address": "keyword",
    "destination.mac": "keyword",
    "destination.user.name": "keyword",
    "network.transport": "keyword",
    "network.protocol": "keyword",
    "network.direction": "keyword",
    "network.bytes": "long",
    "network.packets": "long",
    "network.community_id": "keyword",
    "network.application": "keyword",
    "user.name": "keyword",
    "user.id": "keyword",
    "user.domain": "keyword",
    "user.email": "keyword",
    "user.roles": "keyword",
    "user.target.name": "keyword",
    "user.effective.name": "keyword",
    "host.name": "keyword",
    "host.hostname": "keyword",
    "host.ip": "ip",
    "host.os.family": "keyword",
    "host.os.type": "keyword",
    "process.name": "caseless_keyword",
    "process.pid": "long",
    "process.executable": "caseless_keyword",
    "process.command_line": "text",
    "process.parent.name": "caseless_keyword",
    "process.parent.pid": "long",
    "process.parent.executable": "caseless_keyword",
    "process.parent.command_line": "text",
    "target.process.name": "caseless_keyword",
    "target.process.executable": "caseless_keyword",
    "file.path": "keyword",
    "file.name": "keyword",
    "file.size": "long",
    "file.hash.md5": "keyword",
    "file.hash.sha1": "keyword",
    "file.hash.sha256": "keyword",
    "url.full": "keyword",
    "url.original": "keyword",
    "url.domain": "keyword",
    "url.path": "keyword",
    "url.query": "keyword",
    "http.request.method": "keyword",
    "http.request.bytes": "long",
    "http.request.referrer": "keyword",
    "http.response.status_code": "long",
    "http.response.bytes": "long",
    "http.response.body.bytes": "long",
    "http.version": "keyword",
    "user_agent.original": "keyword",
    "dns.question.name": "keyword",
    "dns.question.type": "keyword",
    "dns.response_code": "keyword",
    "observer.name": "keyword",
    "observer.type": "keyword",
    "observer.vendor": "keyword",
    "observer.product": "keyword",
    "observer.hostname": "keyword",
    "observer.ip": "ip",
    "rule.id": "keyword",
    "rule.name": "keyword",
    "rule.category": "keyword",
    "log.level": "keyword",
    "log.file.path": "keyword",
    "log.offset": "long",
    "log.syslog.facility.code": "long",
    "log.syslog.facility.name": "keyword",
    "log.syslog.severity.code": "long",
    "log.syslog.severity.name": "keyword",
    "log.syslog.priority": "long",
    "log.syslog.hostname": "keyword",
    "log.syslog.appname": "keyword",
    "log.syslog.procid": "keyword",
    "log.syslog.msgid": "keyword",
    "log.syslog.version": "keyword",
    "threat.indicator.type": "keyword",
    "threat.indicator.id": "keyword",
    "threat.indicator.name": "keyword",
    "threat.indicator.marking.tlp": "keyword",
    "threat.technique.id": "keyword",
    "threat.tactic.id": "keyword",
    "data_stream.dataset": "keyword",
    "db.statement": "text",
    "db.user": "keyword",
    "db.name": "keyword",
    "db.rows": "long",
}

# Fields that analysts may filter on with field:value through the API.
FILTERABLE_FIELDS = frozenset(
    name
    for name, kind in ECS_FIELDS.items()
    if kind in ("keyword", "caseless_keyword", "ip", "long", "float")
)


@dataclass(frozen=True)
class Origin:
    """Where an event came from: the input's name and the position inside it."""

    source: str
    offset: int = 0


@dataclass
class Event:
    """One normalised event on its way to Elasticsearch."""

    document: dict[str, Any]
    origin: Origin
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            self.id = document_id(self.origin, self.document.get("event", {}).get("original"))
        self.document.setdefault("event", {})["id"] = self.id

    @property
    def timestamp(self) -> datetime:
        """The event's @timestamp as an aware UTC datetime."""
        return parse_timestamp(self.document["@timestamp"])


def document_id(origin: Origin, content: str | bytes | None = None) -> str:
    """A deterministic id: the same input position and content always give the same id."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(origin.source.encode("utf-8", "surrogateescape"))
    digest.update(b"\x00")
    digest.update(str(origin.offset).encode())
    if content is not None:
        digest.update(b"\x00")
        digest.update(
            content if isinstance(content, bytes) else content.encode("utf-8", "surrogateescape")
        )
    return digest.hexdigest()


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with millisecond precision, the form every stored date takes."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: convert to an aware datetime first")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Parse a stored ISO-8601 timestamp (with Z or an offset) into an aware datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def set_field(document: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in a nested document, creating the intermediate objects."""
    *parents, leaf = dotted.split(".")
    target = document
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = {}
            target[part] = child
        target = child
    target[leaf] = value


def get_field(document: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """Read `a.b.c` from a nested document (also accepting a literal dotted key)."""
    if dotted in document:
        return document[dotted]
    target: Any = document
    for part in dotted.split("."):
        if not isinstance(target, dict) or part not in target:
            return default
        target = target[part]
    return target


def nest_dotted_keys(document: dict[str, Any]) -> dict[str, Any]:
    """Turn {"source.ip": x} into {"source": {"ip": x}}, recursively, keeping other keys."""
    nested: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            value = nest_dotted_keys(value)
        if "." in key and key != "@timestamp":
            set_field(nested, key, value)
        elif isinstance(value, dict) and isinstance(nested.get(key), dict):
            nested[key].update(value)
        else:
            nested[key] = value
    return nested
