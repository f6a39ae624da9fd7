"""The syslog header in front of an embedded payload (CEF, LEEF, firewall key=value lines).

Devices and relays send structured payloads behind an RFC 3164 or RFC 5424 header, or
behind a bare `<PRI>`. The header is read by the syslog format itself, so its time-zone
and missing-year rules apply to embedded formats too.
"""

from __future__ import annotations

import re
from typing import Any

from collectors.formats import syslog
from collectors.log_format import ParseContext, ParseError

PRI_ONLY = re.compile(r"<(\d{1,3})>")
# `<PRI>1 TIMESTAMP HOST` without app, procid, msgid and structured data, as QRadar's
# LEEF guide shows RFC 5424 headers; the missing fields are filled with NILVALUEs.
SHORT_5424 = re.compile(r"<\d{1,3}>1 \S+ \S+")


def parse_header(header: str, context: ParseContext) -> dict[str, Any] | None:
    """The syslog document of a header (`@timestamp` if it has a time, `log.syslog`), or None.

    None means there is no header or it is not syslog; the payload is still usable then.
    """
    header = header.strip().lstrip("\ufeff")
    if not header:
        return None
    if match := PRI_ONLY.fullmatch(header):
        value = int(match[1])
        if value > 191:
            return None
        facility, severity = divmod(value, 8)
        return {
            "log": {
                "syslog": {
                    "priority": value,
                    "facility": {"code": facility, "name": syslog.FACILITIES[facility]},
                    "severity": {"code": severity, "name": syslog.SEVERITIES[severity]},
                }
            }
        }
    if SHORT_5424.fullmatch(header):
        header += " - - - -"
    try:
        # The trailing space stands in for the (removed) payload the syslog regexes expect.
        return syslog.parse(header + " ", context)
    except ParseError:
        return None
