"""The asset inventory: which department owns an address or host, how critical it is, who runs it.

The inventory is a YAML or CSV file (setting `asset_inventory_path`). Each entry has
`match` (CIDRs, IPv4 or IPv6, bare addresses, exact host names, or `*.suffix` wildcards)
and any of `name`, `organization_id`, `organization_name`, `sector`,
`criticality` (low, medium, high, critical) and `owner`.

YAML::

    assets:
      - match: [10.10.0.0/16, "*.gov-cloud.example"]
        organization_id: gov-cloud
        organization_name: 省政务云平台
        sector: government
        criticality: medium
        owner: 政务云运维中心
      - match: [10.10.1.15, gc-bastion]
        name: gc-bastion
        criticality: critical

CSV: a header row with the same column names; `match` holds one or more patterns
separated by spaces.

The most specific entry wins (longest prefix for addresses, exact name before the
longest wildcard for hosts), and a field it leaves out is inherited from the next less
specific entry (any entry containing one of its networks, or a wildcard above one of its
names; `name` is never inherited): above, `gc-bastion` is critical and still belongs to
gov-cloud.

Where the results go (ECS has no asset field set in core, so these are custom fields
under the side they describe, next to ECS' own `<side>.ip` and `<side>.domain`):

    <side>.organization.id / .name       the owning department (side: source, destination, host)
    <side>.asset.criticality / .owner / .sector / .name

and when the event has no `organization.id` yet (no department was given at ingest),
the top-level `organization.id`, `organization.name` and `labels.sector` are taken from
the host's asset, else the source's, else the destination's. Values already present in
the event are never overwritten.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from collectors.longest_match import (
    DomainTable,
    IpPrefixTable,
    normalise_domain,
    parse_ip,
    parse_network,
)
from lianfang.schema import Event

CRITICALITIES = ("low", "medium", "high", "critical")
ENTRY_KEYS = frozenset(
    {"match", "name", "organization_id", "organization_name", "sector", "criticality", "owner"}
)
# Fields of an event side that name it, tried in this order: the address, then names.
SIDE_ADDRESS_FIELDS = ("ip",)
SIDE_NAME_FIELDS = ("domain", "address")
HOST_NAME_FIELDS = ("name", "hostname")


class AssetInventoryError(ValueError):
    """The inventory file is missing or malformed; the message names the file and entry."""


@dataclass(frozen=True)
class Asset:
    """What the inventory knows about one address range or host."""

    name: str | None = None
    organization_id: str | None = None
    organization_name: str | None = None
    sector: str | None = None
    criticality: str | None = None
    owner: str | None = None

    def inherit(self, parent: Asset) -> Asset:
        """This asset with the fields it leaves out taken from `parent` (except the name)."""
        missing = {
            item.name: getattr(parent, item.name)
            for item in fields(self)
            if item.name != "name"
            and getattr(self, item.name) is None
            and getattr(parent, item.name) is not None
        }
        return replace(self, **missing) if missing else self

    @cached_property
    def side_fields(self) -> dict[str, dict[str, str]]:
        """The objects merged into an event side: {"organization": {...}, "asset": {...}}."""
        organization = {
            key: value
            for key, value in (("id", self.organization_id), ("name", self.organization_name))
            if value is not None
        }
        asset = {
            key: value
            for key, value in (
                ("criticality", self.criticality),
                ("owner", self.owner),
                ("sector", self.sector),
                ("name", self.name),
            )
            if value is not None
        }
        return {
            key: value for key, value in (("organization", organization), ("asset", asset)) if value
        }


class AssetInventory:
    """Address and host-name lookups over the inventory's entries."""

    def __init__(self) -> None:
        self.networks: IpPrefixTable[Asset] = IpPrefixTable()
        self.hosts: DomainTable[Asset] = DomainTable()

    def __len__(self) -> int:
        return len(self.networks) + len(self.hosts)

    @classmethod
    def from_entries(cls, entries: Iterable[Mapping[str, Any]], source: str = "") -> AssetInventory:
        """Build from entry mappings (as read from YAML or CSV); validates every entry."""
        inventory = cls()
        parsed: list[tuple[list[str], Asset]] = []
        first_seen: dict[str, str] = {}
        for number, entry in enumerate(entries, start=1):
            where = f"{source} entry {number}" if source else f"entry {number}"
            patterns = _patterns(entry, where)
            asset = _asset(entry, where)
            for pattern in patterns:
                try:
                    key = _pattern_key(pattern)
                except ValueError as error:
                    raise AssetInventoryError(f"{where}: bad match {pattern!r}: {error}") from error
                if key in first_seen:
                    raise AssetInventoryError(
                        f"{where}: {pattern!r} is already listed in {first_seen[key]}"
                    )
                first_seen[key] = where
            parsed.append((patterns, asset))
        inventory._store(parsed)
        return inventory

    def _store(self, parsed: list[tuple[list[str], Asset]]) -> None:
        """Add every entry, then let each inherit what it leaves out from its parents.

        An entry's parents are the networks containing any of its networks and the
        wildcards above any of its names, most specific first, so a server listed by
        name and address inherits its department from its network. Inheritance only
        fills empty fields, so repeating the pass until nothing changes terminates.
        """
        for patterns, asset in parsed:
            self._put(patterns, asset)
        resolved = [asset for _, asset in parsed]
        for _ in range(len(parsed) + 1):
            changed = False
            for index, (patterns, _) in enumerate(parsed):
                current = resolved[index]
                updated = current
                for parent in self._parents(patterns):
                    updated = updated.inherit(parent)
                if updated != current:
                    resolved[index] = updated
                    self._put(patterns, updated)
                    changed = True
            if not changed:
                break

    def _put(self, patterns: list[str], asset: Asset) -> None:
        for pattern in patterns:
            if _looks_like_network(pattern):
                self.networks.add(pattern, asset)
            else:
                self.hosts.add(pattern, asset)

    def _parents(self, patterns: list[str]) -> Iterable[Asset]:
        for pattern in patterns:
            if _looks_like_network(pattern):
                version, address, length = parse_network(pattern)
                yield from self.networks.containing(version, address, shorter_than=length)
        for pattern in patterns:
            if not _looks_like_network(pattern):
                yield from self.hosts.parents(pattern)

    @classmethod
    def load(cls, path: Path) -> AssetInventory:
        """Read a `.yaml`/`.yml` or `.csv` inventory file."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise AssetInventoryError(f"cannot read asset inventory {path}: {error}") from error
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            try:
                document = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise AssetInventoryError(f"{path}: invalid YAML: {error}") from error
            if document is None:
                return cls()
            if not isinstance(document, dict) or not isinstance(document.get("assets"), list):
                raise AssetInventoryError(f"{path}: expected a mapping with an 'assets' list")
            entries = document["assets"]
        elif suffix == ".csv":
            entries = list(csv.DictReader(text.splitlines()))
        else:
            raise AssetInventoryError(f"{path}: asset inventory must be .yaml, .yml or .csv")
        return cls.from_entries(entries, source=str(path))

    def match_address(self, address: str) -> Asset | None:
        """The asset of the longest network containing `address` (None for non-addresses)."""
        return self.networks.lookup(address)

    def match_host(self, name: str) -> Asset | None:
        """The asset of the exact host name, else of the longest matching wildcard."""
        return self.hosts.lookup_value(name)

    def match_any(self, value: str) -> Asset | None:
        """An address or a host name, whichever `value` is."""
        parsed = parse_ip(value)
        if parsed is not None:
            return self.networks.lookup_int(*parsed)
        return self.hosts.lookup_value(value)


class AssetStage:
    """Enrichment stage: tags source, destination and host with their inventory entries."""

    def __init__(self, inventory: AssetInventory) -> None:
        self.inventory = inventory

    def __call__(self, event: Event) -> Event:
        """Add `<side>.organization.*` and `<side>.asset.*`; fill a missing top-level department."""
        document = event.document
        host_asset = self._enrich_host(document)
        source_asset = self._enrich_side(document, "source")
        destination_asset = self._enrich_side(document, "destination")
        organization = document.get("organization")
        if not isinstance(organization, dict) or not organization.get("id"):
            owner = next(
                (
                    asset
                    for asset in (host_asset, source_asset, destination_asset)
                    if asset is not None and asset.organization_id
                ),
                None,
            )
            if owner is not None:
                _set_department(document, owner)
        return event

    def _enrich_side(self, document: dict[str, Any], side: str) -> Asset | None:
        values = document.get(side)
        if not isinstance(values, dict):
            return None
        asset = None
        for name in SIDE_ADDRESS_FIELDS:
            address = values.get(name)
            if isinstance(address, str):
                asset = self.inventory.match_address(address)
                if asset is not None:
                    break
        if asset is None:
            for name in SIDE_NAME_FIELDS:
                value = values.get(name)
                if isinstance(value, str) and value:
                    asset = self.inventory.match_any(value)
                    if asset is not None:
                        break
        if asset is not None:
            _merge(values, asset.side_fields)
        return asset

    def _enrich_host(self, document: dict[str, Any]) -> Asset | None:
        host = document.get("host")
        if not isinstance(host, dict):
            return None
        asset = None
        for name in HOST_NAME_FIELDS:
            value = host.get(name)
            if isinstance(value, str) and value:
                asset = self.inventory.match_host(value)
                if asset is not None:
                    break
        if asset is None:
            addresses = host.get("ip")
            for address in [addresses] if isinstance(addresses, str) else addresses or ():
                if isinstance(address, str):
                    asset = self.inventory.match_address(address)
                    if asset is not None:
                        break
        if asset is not None:
            _merge(host, asset.side_fields)
        return asset


def _merge(target: dict[str, Any], additions: dict[str, dict[str, str]]) -> None:
    """Add the objects' fields without overwriting what the event already says."""
    for key, values in additions.items():
        existing = target.get(key)
        if existing is None:
            target[key] = dict(values)
        elif isinstance(existing, dict):
            for field_name, value in values.items():
                existing.setdefault(field_name, value)


def _set_department(document: dict[str, Any], asset: Asset) -> None:
    organization = document.get("organization")
    if not isinstance(organization, dict):
        organization = {}
        document["organization"] = organization
    organization["id"] = asset.organization_id
    if asset.organization_name:
        organization.setdefault("name", asset.organization_name)
    if asset.sector:
        labels = document.get("labels")
        if not isinstance(labels, dict):
            labels = {}
            document["labels"] = labels
        labels.setdefault("sector", asset.sector)


def _looks_like_network(pattern: str) -> bool:
    return "/" in pattern or parse_ip(pattern) is not None


def _pattern_key(pattern: str) -> str:
    """A canonical form, so that one network or name listed twice is caught."""
    if _looks_like_network(pattern):
        version, address, length = parse_network(pattern)
        return f"ip{version}:{address}/{length}"
    name = normalise_domain(pattern)
    if not name or "*" in name.removeprefix("*."):
        raise ValueError("not a host name or '*.suffix' wildcard")
    return f"name:{name}"


def _patterns(entry: Mapping[str, Any], where: str) -> list[str]:
    if not isinstance(entry, Mapping):
        raise AssetInventoryError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - ENTRY_KEYS - {None}
    if unknown:
        raise AssetInventoryError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"allowed: {', '.join(sorted(ENTRY_KEYS))}"
        )
    match = entry.get("match")
    if isinstance(match, str):
        patterns = match.split()
    elif isinstance(match, list) and all(isinstance(item, str) for item in match):
        patterns = [item.strip() for item in match if item.strip()]
    else:
        raise AssetInventoryError(f"{where}: 'match' must be a string or a list of strings")
    if not patterns:
        raise AssetInventoryError(f"{where}: 'match' is empty")
    return patterns


def _asset(entry: Mapping[str, Any], where: str) -> Asset:
    values: dict[str, str | None] = {}
    for key in ENTRY_KEYS - {"match"}:
        value = entry.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            values[key] = None
        elif isinstance(value, str | int):
            values[key] = str(value).strip()
        else:
            raise AssetInventoryError(f"{where}: {key!r} must be a string")
    criticality = values.get("criticality")
    if criticality is not None:
        criticality = criticality.lower()
        if criticality not in CRITICALITIES:
            raise AssetInventoryError(
                f"{where}: criticality {criticality!r} is not one of {', '.join(CRITICALITIES)}"
            )
        values["criticality"] = criticality
    return Asset(**values)
