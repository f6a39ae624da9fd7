"""The threat-intelligence hook: indicator matching at ingest, written as ECS `threat.enrichments`.

Anything that can answer "which known indicators does this event contain?" is an
`IndicatorLookup`; the sharing side (STIX 2.1 / TAXII 2.1 feeds) fills one and hands it
to `build_enrichment_stages`. `IndicatorSet` is the in-memory implementation: hash
lookups for IP addresses, domains (a domain indicator also matches its subdomains),
URLs and file hashes (MD5, SHA-1, SHA-256), and longest-match tables for CIDR
indicators, so a lookup's cost does not depend on how many indicators are loaded.

Each match becomes one entry of `threat.enrichments` (ECS 8.x)::

    {"indicator": {"type": "ipv4-addr", "ip": "185.220.101.9", "id": "indicator--…",
                   "name": "185.220.101.9", "provider": "…", "marking": {"tlp": "AMBER"},
                   "confidence": "High"},
     "matched": {"atomic": "185.220.101.9", "field": "destination.ip",
                 "id": "indicator--…", "type": "indicator_match_rule"}}

`indicator.ip` is set for address indicators, `indicator.url.domain` for domains,
`indicator.url.full` for URLs and `indicator.file.hash.<kind>` for hashes; a CIDR
indicator names its network in `indicator.name` only (it is no single IP). The
masking stage runs after this one and masks `matched.atomic`, `indicator.name` and
`indicator.url.full`, which copy event values that may hold personal data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from collectors.longest_match import DomainTable, IpPrefixTable, normalise_domain, parse_ip
from lianfang.schema import Event

MATCH_TYPE = "indicator_match_rule"
INDICATOR_TYPES = ("ipv4-addr", "ipv6-addr", "domain-name", "url", "file")
HASH_KINDS_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256"}
HEX_DIGITS = frozenset("0123456789abcdef")

# Event fields each kind of indicator is compared with (values may be lists).
IP_FIELDS = ("source.ip", "destination.ip", "client.ip", "server.ip", "host.ip", "related.ip")
DOMAIN_FIELDS = (
    "dns.question.name",
    "url.domain",
    "destination.domain",
    "source.domain",
    "server.domain",
    "client.domain",
    "tls.client.server_name",
    "related.hosts",
)
URL_FIELDS = ("url.full", "url.original")
HASH_FIELDS = (
    *(
        f"{owner}.hash.{kind}"
        for owner in ("file", "process", "dll")
        for kind in ("md5", "sha1", "sha256")
    ),
    "related.hash",
)


@dataclass(frozen=True)
class Indicator:
    """One indicator of compromise: an address or CIDR, a domain, a URL or a file hash."""

    id: str
    type: str  # one of INDICATOR_TYPES (the ECS threat.indicator.type values)
    value: str
    provider: str | None = None
    name: str | None = None
    tlp: str | None = None  # TLP marking: WHITE/CLEAR, GREEN, AMBER, AMBER+STRICT, RED
    confidence: str | None = None  # ECS: Not Specified, None, Low, Medium, High
    description: str | None = None


@dataclass(frozen=True)
class IndicatorMatch:
    """An indicator found in an event: which field held which atomic value."""

    indicator: Indicator
    field: str
    atomic: str

    def enrichment(self) -> dict[str, Any]:
        """The ECS `threat.enrichments` entry for this match."""
        indicator = self.indicator
        described: dict[str, Any] = {
            "type": indicator.type,
            "id": indicator.id,
            "name": indicator.name or indicator.value,
        }
        if indicator.type in ("ipv4-addr", "ipv6-addr"):
            if "/" not in indicator.value:
                described["ip"] = indicator.value
        elif indicator.type == "domain-name":
            described["url"] = {"domain": normalise_domain(indicator.value)}
        elif indicator.type == "url":
            described["url"] = {"full": indicator.value}
        elif indicator.type == "file":
            digest = indicator.value.strip().lower()
            described["file"] = {"hash": {HASH_KINDS_BY_LENGTH[len(digest)]: digest}}
        if indicator.provider:
            described["provider"] = indicator.provider
        if indicator.tlp:
            described["marking"] = {"tlp": indicator.tlp}
        if indicator.confidence:
            described["confidence"] = indicator.confidence
        if indicator.description:
            described["description"] = indicator.description
        return {
            "indicator": described,
            "matched": {
                "atomic": self.atomic,
                "field": self.field,
                "id": indicator.id,
                "type": MATCH_TYPE,
            },
        }


class IndicatorLookup(Protocol):
    """Finds the known indicators in an event document (a stored `_source` works too)."""

    def match(self, document: Mapping[str, Any]) -> list[IndicatorMatch]:
        """Every indicator match in the document; empty when there is none."""
        ...


class IndicatorSet:
    """In-memory indicators with constant-time lookups per event field."""

    def __init__(self, indicators: Iterable[Indicator] = ()) -> None:
        self._addresses: dict[tuple[int, int], list[Indicator]] = {}
        self._networks: IpPrefixTable[list[Indicator]] = IpPrefixTable()
        self._domains: DomainTable[list[Indicator]] = DomainTable(match_subdomains=True)
        self._urls: dict[str, list[Indicator]] = {}
        self._hashes: dict[str, list[Indicator]] = {}
        self._has_networks = False
        self._count = 0
        for indicator in indicators:
            self.add(indicator)

    def __len__(self) -> int:
        return self._count

    def add(self, indicator: Indicator) -> None:
        """Add one indicator; raises ValueError when its value does not fit its type."""
        kind, value = indicator.type, indicator.value.strip()
        if kind in ("ipv4-addr", "ipv6-addr"):
            if "/" in value:
                existing = self._networks.get(value)
                if existing is None:
                    existing = []
                    self._networks.add(value, existing)
                    self._has_networks = True
                existing.append(indicator)
            else:
                parsed = parse_ip(value)
                if parsed is None:
                    raise ValueError(f"indicator {indicator.id}: {value!r} is not an IP address")
                self._addresses.setdefault(parsed, []).append(indicator)
        elif kind == "domain-name":
            name = normalise_domain(value)
            if not name or "/" in name or " " in name:
                raise ValueError(f"indicator {indicator.id}: {value!r} is not a domain name")
            existing = self._domains.get(name)
            if existing is None:
                existing = []
                self._domains.add(name, existing)
            existing.append(indicator)
        elif kind == "url":
            self._urls.setdefault(normalise_url(value), []).append(indicator)
        elif kind == "file":
            digest = value.lower()
            if len(digest) not in HASH_KINDS_BY_LENGTH or not set(digest) <= HEX_DIGITS:
                raise ValueError(f"indicator {indicator.id}: {value!r} is not an MD5/SHA-1/SHA-256")
            self._hashes.setdefault(digest, []).append(indicator)
        else:
            raise ValueError(
                f"indicator {indicator.id}: type {kind!r} is not one of {', '.join(INDICATOR_TYPES)}"
            )
        self._count += 1

    def match(self, document: Mapping[str, Any]) -> list[IndicatorMatch]:
        """Every indicator match in the document."""
        if not self._count:
            return []
        matches: list[IndicatorMatch] = []
        if self._addresses or self._has_networks:
            for field, value in _values(document, _IP_PATHS):
                matches.extend(self._match_ip(field, value))
        if len(self._domains):
            for field, value in _values(document, _DOMAIN_PATHS):
                for _, indicators in self._domains.matches(value):
                    matches.extend(IndicatorMatch(i, field, value) for i in indicators)
        if self._urls:
            for field, value in _values(document, _URL_PATHS):
                for indicator in self._match_url(value):
                    matches.append(IndicatorMatch(indicator, field, value))
        if self._hashes:
            for field, value in _values(document, _HASH_PATHS):
                for indicator in self._hashes.get(value.lower(), ()):
                    matches.append(IndicatorMatch(indicator, field, value))
        return matches

    def _match_ip(self, field: str, value: str) -> list[IndicatorMatch]:
        parsed = parse_ip(value)
        if parsed is None:
            return []
        found = [IndicatorMatch(i, field, value) for i in self._addresses.get(parsed, ())]
        if self._has_networks:
            for indicators in self._networks.all_matches_int(*parsed):
                found.extend(IndicatorMatch(i, field, value) for i in indicators)
        return found

    def _match_url(self, value: str) -> list[Indicator]:
        normalised = normalise_url(value)
        found = list(self._urls.get(normalised, ()))
        # An indicator URL without a query also matches the same URL with one.
        bare = normalised.partition("?")[0]
        if bare != normalised:
            found.extend(self._urls.get(bare, ()))
        return found


def normalise_url(url: str) -> str:
    """Scheme and host lower case, default port and fragment dropped; path and query kept."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or host is None:
        return text
    scheme = parts.scheme.lower()
    netloc = host.rstrip(".")
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _values(
    document: Mapping[str, Any], fields: tuple[tuple[str, tuple[str, ...]], ...]
) -> Iterator[tuple[str, str]]:
    for field, path in fields:
        value: Any = document
        for part in path:
            if not isinstance(value, dict):
                value = None
                break
            value = value.get(part)
            if value is None:
                break
        if value is None:
            value = document.get(field)  # a literal dotted key, as some sources send
        if isinstance(value, str):
            if value:
                yield field, value
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, str) and item:
                    yield field, item


def _paths(fields: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((field, tuple(field.split("."))) for field in fields)


_IP_PATHS = _paths(IP_FIELDS)
_DOMAIN_PATHS = _paths(DOMAIN_FIELDS)
_URL_PATHS = _paths(URL_FIELDS)
_HASH_PATHS = _paths(HASH_FIELDS)


class IntelStage:
    """Enrichment stage: appends the lookup's matches to `threat.enrichments`."""

    def __init__(self, lookup: IndicatorLookup) -> None:
        self.lookup = lookup

    def __call__(self, event: Event) -> Event:
        """Add one enrichment per new match (running twice adds nothing)."""
        matches = self.lookup.match(event.document)
        if not matches:
            return event
        threat = event.document.get("threat")
        if not isinstance(threat, dict):
            threat = {}
            event.document["threat"] = threat
        enrichments = threat.get("enrichments")
        if not isinstance(enrichments, list):
            enrichments = []
            threat["enrichments"] = enrichments
        seen = {
            (
                entry.get("matched", {}).get("id"),
                entry.get("matched", {}).get("field"),
                entry.get("matched", {}).get("atomic"),
            )
            for entry in enrichments
            if isinstance(entry, dict)
        }
        for found in matches:
            key = (found.indicator.id, found.field, found.atomic)
            if key not in seen:
                seen.add(key)
                enrichments.append(found.enrichment())
        return event
