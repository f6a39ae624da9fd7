"""Normalising raw values into the shapes ECS expects: IP addresses, MAC addresses, transports.

Elasticsearch rejects a whole document when an `ip` field holds something else, so
formats validate addresses here before they put them into `*.ip` and fall back to
`*.address` for host names.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# IANA protocol numbers that firewall and CEF logs use, by their ECS keyword names.
IANA_TRANSPORTS = {
    "1": "icmp",
    "2": "igmp",
    "4": "ipv4",
    "6": "tcp",
    "17": "udp",
    "41": "ipv6",
    "47": "gre",
    "50": "esp",
    "51": "ah",
    "58": "ipv6-icmp",
    "89": "ospf",
    "103": "pim",
    "112": "vrrp",
    "132": "sctp",
}
TRANSPORT_NUMBERS = {name: number for number, name in IANA_TRANSPORTS.items()}
TRANSPORT_ALIASES = {"icmpv6": "ipv6-icmp", "icmp6": "ipv6-icmp"}
# Device actions that mean a connection or request was stopped, or let through.
DENYING_ACTIONS = frozenset(
    {
        "deny", "denied", "drop", "dropped", "block", "blocked", "reject", "rejected",
        "prevent", "prevented", "discard", "discarded", "quarantine", "quarantined",
        "refuse", "refused",
    }
)  # fmt: skip
ALLOWING_ACTIONS = frozenset(
    {
        "allow", "allowed", "accept", "accepted", "permit", "permitted", "pass", "passed",
        "forward", "forwarded",
    }
)  # fmt: skip
MAC_DIGITS = re.compile(r"[0-9A-Fa-f]{12}")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def ip_address(text: str) -> str | None:
    """`text` if it is an IPv4 or IPv6 address Elasticsearch accepts, else None."""
    if IPV4.fullmatch(text):  # the common case, far cheaper than the ipaddress module
        return text
    return _ipv6_address(text) if ":" in text else None


@lru_cache(maxsize=4096)
def _ipv6_address(text: str) -> str | None:
    if len(text) > 45 or "%" in text:  # Elasticsearch's ip type takes no zone index
        return None
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return text


@lru_cache(maxsize=4096)
def mac_address(text: str) -> str | None:
    """A MAC address in the ECS form (upper-case hex pairs joined by '-'), or None."""
    digits = text.replace(":", "").replace("-", "").replace(".", "")
    if not MAC_DIGITS.fullmatch(digits):
        return None
    digits = digits.upper()
    return "-".join(digits[i : i + 2] for i in range(0, 12, 2))


@lru_cache(maxsize=256)
def transport_fields(text: str) -> tuple[tuple[str, str], ...]:
    """`network.transport` and `network.iana_number` pairs for a protocol name or number.

    A tuple of pairs rather than a dict, because the result is cached and shared:
    callers copy it with `network.update(...)`.
    """
    value = text.strip().lower()
    if not value:
        return ()
    if value.isascii() and value.isdigit():
        number = str(int(value))
        name = IANA_TRANSPORTS.get(number)
        return (
            (("transport", name), ("iana_number", number)) if name else (("iana_number", number),)
        )
    name = TRANSPORT_ALIASES.get(value, value)
    number = TRANSPORT_NUMBERS.get(name)
    return (("transport", name), ("iana_number", number)) if number else (("transport", name),)


def long_value(text: str) -> int | None:
    """`text` as an int if it is a plain decimal number that fits Elasticsearch's `long`."""
    # isdigit() alone also accepts digits int() refuses (superscripts) and other scripts.
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def action_verdict(action: str) -> str | None:
    """The ECS event.type ("denied" or "allowed") a device's action word implies, if any."""
    word = action.strip().lower()
    if word in DENYING_ACTIONS:
        return "denied"
    if word in ALLOWING_ACTIONS:
        return "allowed"
    return None
