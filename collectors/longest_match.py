"""Longest-match lookup tables for IP prefixes and DNS names, shared by assets and intel.

`IpPrefixTable` keeps one dict per prefix length (network bits -> value), so a lookup is
one shift and one dict probe per distinct prefix length present, whatever the number of
entries. `DomainTable` holds exact names and `*.suffix` wildcards; a lookup probes the name
and then each parent suffix, so it costs one dict probe per label.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Generic, TypeVar

Value = TypeVar("Value")

IPV4_BITS = 32
IPV6_BITS = 128
# ::ffff:a.b.c.d carries an IPv4 address; inventories and feeds list it as IPv4.
_V4_MAPPED_PREFIX = 0xFFFF << 32


def parse_ip(text: str) -> tuple[int, int] | None:
    """An address as (version, integer), or None when `text` is not a plain IP address.

    Uses inet_pton (strict: no "10.1" shorthands) for speed; an IPv6 zone ("%eth0") is
    dropped and an IPv4-mapped IPv6 address is returned as IPv4.
    """
    if ":" in text:
        text = text.partition("%")[0]
        try:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except (OSError, ValueError):
            return None
        if value >> 32 == 0xFFFF:
            return 4, value & 0xFFFFFFFF
        return 6, value
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def parse_network(text: str) -> tuple[int, int, int]:
    """A CIDR (or a bare address, as a host route) as (version, network integer, prefix length).

    Raises ValueError for anything else, including host bits set ("10.0.0.1/8"), which
    is usually a typo for a different network.
    """
    network = ipaddress.ip_network(text.strip(), strict=True)
    value = int(network.network_address)
    if network.version == 6 and value >> 32 == 0xFFFF and network.prefixlen >= 96:
        return 4, value & 0xFFFFFFFF, network.prefixlen - 96
    return network.version, value, network.prefixlen


class IpPrefixTable(Generic[Value]):
    """Longest-prefix match over IPv4 and IPv6 networks."""

    def __init__(self) -> None:
        # (prefix length, shift, {network >> shift: value}), longest prefix first.
        self._levels: dict[int, list[tuple[int, int, dict[int, Value]]]] = {4: [], 6: []}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, network: str, value: Value) -> None:
        """Map a CIDR or a bare address to `value`; the same network added again replaces it."""
        version, address, length = parse_network(network)
        bits = IPV4_BITS if version == 4 else IPV6_BITS
        shift = bits - length
        levels = self._levels[version]
        table = next((level[2] for level in levels if level[0] == length), None)
        if table is None:
            table = {}
            levels.append((length, shift, table))
            levels.sort(key=lambda level: -level[0])
        if address >> shift not in table:
            self._count += 1
        table[address >> shift] = value

    def get(self, network: str) -> Value | None:
        """The value stored for exactly this network, if any."""
        version, address, length = parse_network(network)
        for level_length, shift, table in self._levels[version]:
            if level_length == length:
                return table.get(address >> shift)
        return None

    def lookup(self, address: str) -> Value | None:
        """The value of the longest prefix containing `address`, or None (also for non-IPs)."""
        parsed = parse_ip(address)
        if parsed is None:
            return None
        return self.lookup_int(*parsed)

    def lookup_int(self, version: int, address: int) -> Value | None:
        """Like `lookup` for an already parsed address."""
        for _, shift, table in self._levels[version]:
            hit = table.get(address >> shift)
            if hit is not None:
                return hit
        return None

    def all_matches_int(self, version: int, address: int) -> list[Value]:
        """Values of every network containing the parsed address, longest prefix first."""
        return [
            hit
            for _, shift, table in self._levels[version]
            if (hit := table.get(address >> shift)) is not None
        ]

    def containing(self, version: int, address: int, shorter_than: int) -> Iterator[Value]:
        """Values of the networks containing `address` with a prefix shorter than given, longest first."""
        for length, shift, table in self._levels[version]:
            if length >= shorter_than:
                continue
            hit = table.get(address >> shift)
            if hit is not None:
                yield hit

    @property
    def prefix_lengths(self) -> dict[int, list[int]]:
        """The distinct prefix lengths per IP version (what a lookup's cost depends on)."""
        return {version: [level[0] for level in levels] for version, levels in self._levels.items()}


def normalise_domain(name: str) -> str:
    """Lower case without the root dot: the form names are stored and looked up in."""
    return name.strip().rstrip(".").lower()


class DomainTable(Generic[Value]):
    """Exact DNS names and `*.suffix` wildcards; the most specific match wins.

    `*.example.gov.cn` matches every name below example.gov.cn but not the name itself;
    with `match_subdomains`, a plain name matches itself and every name below it (how
    threat-intelligence domain indicators are meant).
    """

    def __init__(self, *, match_subdomains: bool = False) -> None:
        self.match_subdomains = match_subdomains
        self._exact: dict[str, Value] = {}
        self._below: dict[str, Value] = {}

    def __len__(self) -> int:
        return len(self._exact) + len(self._below)

    def add(self, pattern: str, value: Value) -> None:
        """Map a name, or `*.suffix` for every name below suffix, to `value`."""
        name = normalise_domain(pattern)
        if name.startswith("*."):
            suffix = name[2:]
            if not suffix or "*" in suffix:
                raise ValueError(f"bad wildcard {pattern!r}: only a leading '*.' is allowed")
            self._below[suffix] = value
            return
        if not name or "*" in name:
            raise ValueError(f"bad host name {pattern!r}")
        self._exact[name] = value

    def get(self, pattern: str) -> Value | None:
        """The value stored for exactly this pattern (a name or `*.suffix`), if any."""
        name = normalise_domain(pattern)
        if name.startswith("*."):
            return self._below.get(name[2:])
        return self._exact.get(name)

    def matches(self, name: str) -> Iterator[tuple[str, Value]]:
        """Every (pattern, value) matching `name`, most specific first."""
        name = normalise_domain(name)
        hit = self._exact.get(name)
        if hit is not None:
            yield name, hit
        if not self._below and not self.match_subdomains:
            return
        dot = name.find(".")
        while dot != -1:
            suffix = name[dot + 1 :]
            if self.match_subdomains:  # a plain name also stands for every name below it
                hit = self._exact.get(suffix)
                if hit is not None:
                    yield suffix, hit
            hit = self._below.get(suffix)
            if hit is not None:
                yield "*." + suffix, hit
            dot = name.find(".", dot + 1)

    def lookup(self, name: str) -> tuple[str, Value] | None:
        """(the matching pattern, its value) for the most specific match, or None."""
        return next(self.matches(name), None)

    def lookup_value(self, name: str) -> Value | None:
        """Only the value of `lookup`."""
        found = next(self.matches(name), None)
        return None if found is None else found[1]

    def parents(self, name: str) -> Iterator[Value]:
        """Values of the wildcards above `name`, most specific first (for inheritance)."""
        name = normalise_domain(name)
        if name.startswith("*."):
            name = name[2:]
        dot = name.find(".")
        while dot != -1:
            hit = self._below.get(name[dot + 1 :])
            if hit is not None:
                yield hit
            dot = name.find(".", dot + 1)
