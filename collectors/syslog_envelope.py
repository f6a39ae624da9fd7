"""The syslog header in front of an embedded payload (CEF, LEEF, firewall key=value lines).

Devices and relays send structured payloads behind an RFC 3164 or RFC 5424 header, or
behind a bare `<PRI>`. The header is read by the syslog format itself, so its time-zone
and missing-year rules apply to embedded formats too. A device sends many events per
second behind the same header, so parsed headers are cached (per zone and reception
time, which the result depends on) and each caller gets its own copy.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from collectors.formats import syslog
from collectors.log_format import ParseContext, ParseError

PRI_ONLY = re.compile(r"<(\d{1,3})>")
# `<PRI>1 TIMESTAMP HOST` without app, procid, msgid and structured data, as QRadar's
# LEEF guide shows RFC 5424 headers; the missing fields are filled with NILVALUEs.
SHORT_5424 = re.compile(r"<\d{1,3}>1 \S+ \S+")


def parse_header(header: str, context: ParseContext) -> dict[str, Any] | None:
    """The syslog fields of a header (`@timestamp` if it has a time, `log.syslog`, `host`), or None.

    None means there is no header or it is not syslog; the payload is still usable then.
    """
    header = header.strip().lstrip("\ufeff")
    if not header:
        return None
    parsed = _parse_cached(header, context.timezone, context.received)
    if parsed is None:
        return None
    timestamp, syslog_fields, host = parsed
    document: dict[str, Any] = {"log": {"syslog": _copy(syslog_fields)}}
    if timestamp is not None:
        document["@timestamp"] = timestamp
    if host is not None:
        document["host"] = _copy(host)
    return document


def _copy(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested dicts (structured data holds dicts of dicts), sharing only strings."""
    return {
        key: _copy(value) if isinstance(value, dict) else value for key, value in fields.items()
    }


@lru_cache(maxsize=1024)
def _parse_cached(
    header: str, timezone: ZoneInfo, received: datetime
) -> tuple[str | None, dict[str, Any], dict[str, Any] | None] | None:
    """(@timestamp, log.syslog, host) of a header; callers must copy before changing them."""
    if match := PRI_ONLY.fullmatch(header):
        value = int(match[1])
        if value > 191:
            return None
        facility, severity = divmod(value, 8)
        fields = {
            "priority": value,
            "facility": {"code": facility, "name": syslog.FACILITIES[facility]},
            "severity": {"code": severity, "name": syslog.SEVERITIES[severity]},
        }
        return None, fields, None
    if SHORT_5424.fullmatch(header):
        header += " - - - -"
    try:
        # The trailing space stands in for the (removed) payload the syslog regexes expect.
        document = syslog.parse(header + " ", ParseContext(timezone=timezone, received=received))
    except (ParseError, ValueError):  # ValueError: syslog's int() of odd digits ("[²2]")
        return None
    return document["@timestamp"], document["log"]["syslog"], document.get("host")
