"""Plain intelligence feeds as STIX 2.1: STIX bundles, CSV/TXT IOC lists, MISP feeds.

Formats (`--format`, detected when `auto`):

* `stix` — a bundle (or a JSON list of objects, or one object), from a file or an
  http(s) URL; objects are taken as they are;
* `txt` — one indicator per line; `#`, `;` and `//` start comments; defanged values
  (`hxxp://`, `evil[.]example`, `1.2.3[.]4`) are refanged; the type is recognised:
  IPv4/IPv6 address or CIDR, URL, e-mail address, MD5/SHA-1/SHA-256, domain name;
* `csv` — a header names the columns: the value (`indicator`, `ioc`, `value`,
  `observable`, or a type name such as `ip`, `domain`, `url`, `sha256`), optionally `type`,
  `description`, `confidence` (0–100), `valid_from`/`first_seen`, `valid_until`/`expires`,
  `tlp`; without a header the first recognisable cell of each row is the value;
* `misp` — a MISP feed: a folder or URL with `manifest.json` and one `<uuid>.json` per
  event, or one event file. Attributes marked `to_ids` become indicators (`ip-src`,
  `ip-dst`, `…|port`, `domain`, `hostname`, `domain|ip`, `url`, `email-src`, `email`,
  `md5`, `sha1`, `sha256`, `filename|<hash>`), the creating organisation (`Orgc`) an
  identity, each event a `report`, `tlp:*` tags TLP markings.

CSV, TXT and MISP indicators get deterministic ids (MISP: the attribute's UUID), and their
`created`/`modified` come from the data (MISP timestamps) or the file's modification time, so
importing the same feed twice changes nothing. A line or attribute that cannot be used is
reported with its position and reason, never silently dropped.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from sharing.stix_from_alerts import Observable, stix_pattern
from sharing.stix_ids import deterministic_id, parse_stix_timestamp, stix_timestamp
from sharing.tlp import TlpLevel, marking_definition, parse_level

FORMATS = ("auto", "stix", "txt", "csv", "misp")
URL_TIMEOUT = 60
MAX_DOWNLOAD = 256 * 1024 * 1024
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$"
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
HASH_BY_LENGTH = {32: "MD5", 40: "SHA-1", 64: "SHA-256"}
VALUE_COLUMNS = ("indicator", "ioc", "value", "observable", "ip", "ip_address", "domain",
                 "hostname", "url", "email", "md5", "sha1", "sha256", "hash")  # fmt: skip
MISP_TYPES = {
    "ip-src": "ip",
    "ip-dst": "ip",
    "ip-src|port": "ip",
    "ip-dst|port": "ip",
    "domain": "domain",
    "hostname": "domain",
    "domain|ip": "domain|ip",
    "url": "url",
    "email-src": "email",
    "email": "email",
    "md5": "hash",
    "sha1": "hash",
    "sha256": "hash",
    "filename|md5": "hash",
    "filename|sha1": "hash",
    "filename|sha256": "hash",
}


class FeedError(ValueError):
    """A feed that cannot be read at all; carries the source and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass
class FeedLoad:
    """The STIX objects made from a feed, and the entries that could not be used."""

    source: str
    format: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class FeedOptions:
    """How plain entries become indicators."""

    name: str
    tlp: TlpLevel = TlpLevel.AMBER
    confidence: int = 50
    validity: timedelta = timedelta(days=90)


def refang(text: str) -> str:
    """`hxxp://evil[.]example` -> `http://evil.example` (common defanging forms)."""
    value = text.strip().strip("\"'")
    value = re.sub(r"^hxxp", "http", value, flags=re.IGNORECASE)
    value = re.sub(r"^fxp", "ftp", value, flags=re.IGNORECASE)
    for token in ("[.]", "(.)", "{.}", "[dot]", "(dot)"):
        value = value.replace(token, ".")
    for token in ("[@]", "(@)", "[at]", "(at)"):
        value = value.replace(token, "@")
    return value.replace("[:]", ":").replace("[://]", "://")


def classify(text: str) -> Observable | None:
    """The observable a plain IOC string is, or None when it is none of the known kinds."""
    value = refang(text)
    if not value or " " in value:
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        network = None
    if network is not None:
        kind = "ipv4-addr" if network.version == 4 else "ipv6-addr"
        shown = str(network) if "/" in value else str(network.network_address)
        return Observable(kind, shown, "feed")
    if "://" in value:
        return Observable("url", value, "feed")
    if _EMAIL.match(value):
        return Observable("email-addr", value.lower(), "email.from.address")
    if _HEX.match(value) and len(value) in HASH_BY_LENGTH:
        return Observable("file", value.lower(), "file.hash", HASH_BY_LENGTH[len(value)])
    name = value.lower().rstrip(".")
    if _DOMAIN.match(name):
        return Observable("domain-name", name, "feed")
    return None


def feed_identity(name: str) -> dict[str, Any]:
    """The identity that stands for a feed without a producer of its own."""
    return {
        "type": "identity",
        "spec_version": "2.1",
        "id": deterministic_id("identity", "feed", name),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": "2026-01-01T00:00:00.000Z",
        "name": name,
        "identity_class": "organization",
    }


def plain_indicator(
    observable: Observable,
    options: FeedOptions,
    timestamp: datetime,
    *,
    description: str | None = None,
    confidence: int | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    tlp: TlpLevel | None = None,
    object_id: str | None = None,
) -> dict[str, Any]:
    """A STIX indicator for one plain IOC, with a deterministic id."""
    start = valid_from or timestamp
    end = valid_until or start + options.validity
    if end <= start:
        end = start + timedelta(seconds=1)
    level = tlp or options.tlp
    indicator: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": object_id
        or deterministic_id("indicator", "feed", options.name, stix_pattern(observable)),
        "created": stix_timestamp(timestamp),
        "modified": stix_timestamp(timestamp),
        "created_by_ref": deterministic_id("identity", "feed", options.name),
        "name": observable.value,
        "description": description or f"From feed {options.name}",
        "indicator_types": ["malicious-activity"],
        "pattern": stix_pattern(observable),
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": stix_timestamp(start),
        "valid_until": stix_timestamp(end),
        "confidence": max(0, min(100, options.confidence if confidence is None else confidence)),
        "object_marking_refs": [marking_definition(level).id],
    }
    return indicator


def _markings(levels: Iterable[TlpLevel]) -> list[dict[str, Any]]:
    return [
        json.loads(marking_definition(level).serialize())
        for level in sorted(set(levels), key=lambda x: x.rank)
    ]


# ---------------------------------------------------------------------- reading sources


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _fetch(url: str) -> tuple[bytes, datetime]:
    try:
        response = requests.get(url, timeout=URL_TIMEOUT, stream=True)
        response.raise_for_status()
        content = response.raw.read(MAX_DOWNLOAD + 1, decode_content=True)
    except requests.RequestException as error:
        raise FeedError(url, f"cannot download: {error}") from error
    if len(content) > MAX_DOWNLOAD:
        raise FeedError(url, f"larger than {MAX_DOWNLOAD} bytes")
    stamp = response.headers.get("Last-Modified")
    moment = datetime.now(UTC)
    if stamp:
        try:
            from email.utils import parsedate_to_datetime

            moment = parsedate_to_datetime(stamp).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    return content, moment


def _read(source: str) -> tuple[bytes, datetime]:
    if _is_url(source):
        return _fetch(source)
    path = Path(source)
    try:
        return path.read_bytes(), datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
    except OSError as error:
        raise FeedError(source, f"cannot read: {error.strerror or error}") from error


def detect_format(source: str, content: bytes | None) -> str:
    """The format of a source from its name and first bytes."""
    if not _is_url(source) and Path(source).is_dir():
        return "misp"
    lowered = source.lower().split("?")[0]
    if lowered.endswith("manifest.json") or lowered.endswith("/"):
        return "misp"
    head = (content or b"")[:4096].lstrip()
    if head.startswith((b"{", b"[")):
        try:
            data = json.loads(content or b"")
        except ValueError:
            return "txt"
        if isinstance(data, dict) and "Event" in data:
            return "misp"
        return "stix"
    if lowered.endswith(".csv"):
        return "csv"
    return "txt"


def load_feed(
    source: str, feed_format: str = "auto", options: FeedOptions | None = None
) -> FeedLoad:
    """Read a feed (file, folder or URL) into STIX objects."""
    if feed_format not in FORMATS:
        raise FeedError(source, f"unknown format {feed_format!r}; one of {FORMATS}")
    options = options or FeedOptions(name=_default_name(source))
    is_folder = not _is_url(source) and Path(source).is_dir()
    content: bytes | None = None
    moment = datetime.now(UTC)
    if not is_folder and not (feed_format == "misp" and _is_url(source) and source.endswith("/")):
        content, moment = _read(source)
    kind = detect_format(source, content) if feed_format == "auto" else feed_format
    if kind == "stix":
        assert content is not None
        return _load_stix(source, content)
    if kind == "misp":
        return _load_misp(source, content, options)
    assert content is not None
    text = content.decode("utf-8-sig", errors="replace")
    if kind == "csv":
        return _load_csv(source, text, options, moment)
    return _load_txt(source, text, options, moment)


def _default_name(source: str) -> str:
    tail = source.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", tail.rsplit(".", 1)[0]).strip("-")
    return name or "feed"


def _load_stix(source: str, content: bytes) -> FeedLoad:
    load = FeedLoad(source, "stix")
    try:
        data = json.loads(content)
    except ValueError as error:
        raise FeedError(source, f"not JSON: {error}") from error
    if isinstance(data, dict) and data.get("type") == "bundle":
        objects = data.get("objects")
        if not isinstance(objects, list):
            raise FeedError(source, "a bundle without an objects list")
    elif isinstance(data, dict) and isinstance(data.get("objects"), list):
        objects = data["objects"]  # a TAXII envelope saved to a file
    elif isinstance(data, list):
        objects = data
    elif isinstance(data, dict):
        objects = [data]
    else:
        raise FeedError(source, "neither a bundle, an object nor a list of objects")
    load.objects = objects
    return load


def _load_txt(source: str, text: str, options: FeedOptions, moment: datetime) -> FeedLoad:
    load = FeedLoad(source, "txt")
    indicators: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        value = re.split(r"\s+(?:#|//|;)", line.strip(), maxsplit=1)[0].strip()
        if not value or value.startswith(("#", ";", "//")):
            continue
        observable = classify(value.split()[0] if value.split() else value)
        if observable is None:
            load.problems.append(f"line {number}: {value[:100]!r} is no recognised indicator")
            load.skipped += 1
            continue
        indicator = plain_indicator(observable, options, moment)
        indicators[indicator["id"]] = indicator
    load.objects = _with_references(list(indicators.values()), options)
    return load


def _column(header: list[str], names: Iterable[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _date(text: str | None) -> datetime | None:
    if not text or not text.strip():
        return None
    value = text.strip()
    try:
        return parse_stix_timestamp(value if "T" in value or ":" in value else value + "T00:00:00Z")
    except ValueError:
        return None


def _load_csv(source: str, text: str, options: FeedOptions, moment: datetime) -> FeedLoad:
    load = FeedLoad(source, "csv")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return load
    header = rows[0]
    value_column = _column(header, VALUE_COLUMNS)
    has_header = value_column is not None
    columns = {
        "description": _column(header, ("description", "comment", "info", "tags")),
        "confidence": _column(header, ("confidence", "score")),
        "valid_from": _column(header, ("valid_from", "first_seen", "date", "created")),
        "valid_until": _column(header, ("valid_until", "expires", "expiration", "valid_to")),
        "tlp": _column(header, ("tlp",)),
    } if has_header else {}  # fmt: skip
    indicators: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        observable = None
        if value_column is not None and value_column < len(row):
            observable = classify(row[value_column])
        elif not has_header:
            observable = next((o for o in map(classify, row) if o is not None), None)
        if observable is None:
            load.problems.append(f"row {number}: no recognised indicator in {row[:4]!r}")
            load.skipped += 1
            continue

        def cell(name: str, row: list[str] = row) -> str | None:
            index = columns.get(name)
            return row[index] if index is not None and index < len(row) else None

        confidence = None
        if cell("confidence"):
            try:
                confidence = int(float(cell("confidence") or ""))
            except ValueError:
                load.problems.append(
                    f"row {number}: confidence {cell('confidence')!r} is no number"
                )
        tlp = None
        if cell("tlp"):
            try:
                tlp = parse_level(cell("tlp") or "")
            except ValueError as error:
                load.problems.append(f"row {number}: {error}")
        indicator = plain_indicator(
            observable,
            options,
            moment,
            description=cell("description") or None,
            confidence=confidence,
            valid_from=_date(cell("valid_from")),
            valid_until=_date(cell("valid_until")),
            tlp=tlp,
        )
        indicators[indicator["id"]] = indicator
    load.objects = _with_references(list(indicators.values()), options)
    return load


def _with_references(
    indicators: list[dict[str, Any]], options: FeedOptions
) -> list[dict[str, Any]]:
    if not indicators:
        return []
    from sharing.tlp import MARKING_LEVELS

    levels = {MARKING_LEVELS[ref] for i in indicators for ref in i["object_marking_refs"]}
    return [*_markings(levels), feed_identity(options.name), *indicators]


# ---------------------------------------------------------------------- MISP


def _load_misp(source: str, content: bytes | None, options: FeedOptions) -> FeedLoad:
    load = FeedLoad(source, "misp")
    events: list[tuple[str, Any]] = []
    if content is not None and not source.lower().split("?")[0].endswith("manifest.json"):
        try:
            data = json.loads(content)
        except ValueError as error:
            raise FeedError(source, f"not JSON: {error}") from error
        if isinstance(data, dict) and "Event" in data:
            events.append((source, data))
        else:
            raise FeedError(source, "not a MISP event (no 'Event')")
    else:
        base = (
            source
            if source.endswith("/") or not _is_url(source)
            else source.rsplit("/", 1)[0] + "/"
        )
        if content is None:
            manifest_source = (
                urljoin(base, "manifest.json")
                if _is_url(base)
                else str(Path(source) / "manifest.json")
            )
            content, _ = _read(manifest_source)
        try:
            manifest = json.loads(content)
        except ValueError as error:
            raise FeedError(source, f"manifest.json is not JSON: {error}") from error
        if not isinstance(manifest, dict):
            raise FeedError(source, "manifest.json is not an object of event UUIDs")
        for event_uuid in sorted(manifest):
            where = (
                urljoin(base, f"{event_uuid}.json")
                if _is_url(base)
                else str(Path(source) / f"{event_uuid}.json")
            )
            try:
                raw, _ = _read(where)
                events.append((where, json.loads(raw)))
            except (FeedError, ValueError) as error:
                load.problems.append(f"event {event_uuid}: {error}")
                load.skipped += 1
    objects: dict[str, dict[str, Any]] = {}
    for where, data in events:
        for stix_object in _misp_event(where, data, options, load):
            objects[stix_object["id"]] = stix_object
    markings = [o for o in objects.values() if o["type"] == "marking-definition"]
    load.objects = [*markings, *(o for o in objects.values() if o["type"] != "marking-definition")]
    return load


def _misp_tlp(tags: Any) -> TlpLevel | None:
    for tag in tags or ():
        name = str(tag.get("name", "")) if isinstance(tag, dict) else ""
        if name.lower().startswith("tlp:"):
            try:
                return parse_level(name)
            except ValueError:
                continue
    return None


def _misp_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError):
        return _date(str(value))


def _misp_uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _misp_event(
    where: str, data: dict[str, Any], options: FeedOptions, load: FeedLoad
) -> list[dict[str, Any]]:
    event = data.get("Event")
    if not isinstance(event, dict):
        load.problems.append(f"{where}: no Event object")
        load.skipped += 1
        return []
    event_uuid = _misp_uuid(event.get("uuid")) or deterministic_id("report", where).split("--")[1]
    organisation = event.get("Orgc") or {}
    org_name = organisation.get("name") or options.name
    org_uuid = _misp_uuid(organisation.get("uuid"))
    identity = {
        "type": "identity",
        "spec_version": "2.1",
        "id": f"identity--{org_uuid}"
        if org_uuid
        else deterministic_id("identity", "misp-org", org_name),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": "2026-01-01T00:00:00.000Z",
        "name": org_name,
        "identity_class": "organization",
    }
    event_tlp = _misp_tlp(event.get("Tag")) or options.tlp
    event_time = _misp_time(event.get("timestamp")) or _date(event.get("date")) or datetime.now(UTC)
    attributes = list(event.get("Attribute") or [])
    for misp_object in event.get("Object") or ():
        attributes += list(misp_object.get("Attribute") or [])
    indicators: list[dict[str, Any]] = []
    levels = {event_tlp}
    for attribute in attributes:
        if not isinstance(attribute, dict) or attribute.get("deleted") in (True, "1", 1):
            continue
        kind = MISP_TYPES.get(str(attribute.get("type")))
        if kind is None or attribute.get("to_ids") in (False, "0", 0):
            load.skipped += 1
            continue
        value = str(attribute.get("value", ""))
        parts = value.split("|")
        observables: list[Observable] = []
        if kind == "domain|ip" and len(parts) == 2:
            observables = [o for o in (classify(parts[0]), classify(parts[1])) if o is not None]
        else:
            candidate = parts[-1] if kind == "hash" else parts[0]
            found = classify(candidate)
            if found is not None:
                observables = [found]
        if not observables:
            load.problems.append(
                f"{where}: attribute {attribute.get('uuid')}: {value[:80]!r} unusable"
            )
            load.skipped += 1
            continue
        moment = _misp_time(attribute.get("timestamp")) or event_time
        level = _misp_tlp(attribute.get("Tag")) or event_tlp
        levels.add(level)
        attribute_uuid = _misp_uuid(attribute.get("uuid"))
        pattern = " OR ".join(stix_pattern(o) for o in observables)
        indicator = plain_indicator(
            observables[0],
            options,
            moment,
            description=str(attribute.get("comment") or event.get("info") or "")[:1000] or None,
            valid_from=_misp_time(attribute.get("first_seen")) or moment,
            valid_until=_misp_time(attribute.get("last_seen")),
            tlp=level,
            object_id=f"indicator--{attribute_uuid}" if attribute_uuid else None,
        )
        indicator["pattern"] = pattern
        indicator["created_by_ref"] = identity["id"]
        indicator["name"] = value[:200]
        if indicator["valid_until"] <= indicator["valid_from"]:
            indicator["valid_until"] = stix_timestamp(
                parse_stix_timestamp(indicator["valid_from"]) + options.validity
            )
        indicators.append(indicator)
    if not indicators:
        return []
    published = _misp_time(event.get("publish_timestamp")) or event_time
    report = {
        "type": "report",
        "spec_version": "2.1",
        "id": f"report--{event_uuid}",
        "created": stix_timestamp(event_time),
        "modified": stix_timestamp(event_time),
        "created_by_ref": identity["id"],
        "name": str(event.get("info") or f"MISP event {event_uuid}")[:500],
        "report_types": ["threat-report"],
        "published": stix_timestamp(published),
        "object_refs": [identity["id"], *(i["id"] for i in indicators)],
        "object_marking_refs": [marking_definition(event_tlp).id],
    }
    return [*_markings(levels), identity, *indicators, report]
