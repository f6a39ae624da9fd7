"""Messages of particular programs inside syslog (sshd, sudo, su, account management).

Each parser takes the message text and returns the ECS fields it implies, or None when
the message is not one it knows. The syslog format calls `parse_program_message`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from collectors.ecs_values import ip_address, long_value

Fields = dict[str, Any]


def _source(ip_text: str, port_text: str | None) -> Fields:
    """source.ip/port when they are valid; the raw text otherwise, so nothing is rejected."""
    source: Fields = {}
    ip = ip_address(ip_text)
    if ip:
        source["ip"] = ip
    else:
        source["address"] = ip_text
    port = long_value(port_text) if port_text else None
    if port is not None and port <= 65535:
        source["port"] = port
    return source


def _authentication(action: str, outcome: str, match: re.Match[str]) -> Fields:
    fields: Fields = {
        "event": {
            "kind": "event",
            "dataset": "system.auth",
            "category": ["authentication"],
            "type": ["start"] if outcome == "success" else ["info"],
            "action": action,
            "outcome": outcome,
        },
        "user": {"name": match["user"]},
        "source": _source(match["ip"], match["port"]),
    }
    if match.groupdict().get("method"):
        fields["system"] = {"auth": {"ssh": {"method": match["method"]}}}
    return fields


SSHD_ACCEPTED = re.compile(
    r"Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<ip>[0-9a-fA-F:.]+) port (?P<port>\d+)"
)
SSHD_FAILED = re.compile(
    r"Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S*) from (?P<ip>[0-9a-fA-F:.]+) port (?P<port>\d+)"
)
SSHD_INVALID = re.compile(
    r"[Ii]nvalid user (?P<user>\S*) from (?P<ip>[0-9a-fA-F:.]+)(?: port (?P<port>\d+))?"
)
SUDO = re.compile(
    r"^\s*(?P<user>\S+) : (?:(?P<error>[^;]+?) ; )?TTY=(?P<tty>\S+) ; PWD=(?P<pwd>.+?) ; "
    r"USER=(?P<target>\S+) ;(?: COMMAND=(?P<command>.*))?"
)
SU = re.compile(
    r"(?:(?P<outcome>Successful|FAILED) su for (?P<target>\S+) by (?P<user>\S+))"
    r"|(?:pam_unix\(su(?:-l)?:session\): session opened for user (?P<target2>\S+?)(?:\(uid=\d+\))? by (?P<user2>\S*?)(?:\(uid=\d+\))?$)"
)
USERADD = re.compile(r"new user: name=(?P<name>[^,]+), UID=(?P<uid>\d+), GID=(?P<gid>\d+)")
GROUPADD = re.compile(r"new group: name=(?P<name>[^,]+), GID=(?P<gid>\d+)")
USERMOD_GROUP = re.compile(r"add '(?P<name>[^']+)' to (?:shadow )?group '(?P<group>[^']+)'")
PASSWD = re.compile(r"password changed for (?P<name>\S+)")


def parse_sshd(message: str) -> Fields | None:
    """sshd: accepted and failed logins, invalid users."""
    if match := SSHD_ACCEPTED.search(message):
        return _authentication("ssh_login", "success", match)
    if match := SSHD_FAILED.search(message):
        return _authentication("ssh_login", "failure", match)
    if match := SSHD_INVALID.search(message):
        fields: Fields = {
            "event": {
                "kind": "event",
                "dataset": "system.auth",
                "category": ["authentication"],
                "type": ["info"],
                "action": "invalid_user",
                "outcome": "failure",
            },
            "user": {"name": match["user"]},
            "source": _source(match["ip"], match["port"]),
        }
        return fields
    return None


def parse_sudo(message: str) -> Fields | None:
    """sudo: who ran what as whom, and refusals."""
    match = SUDO.match(message)
    if match is None:
        return None
    outcome = "failure" if match["error"] else "success"
    fields: Fields = {
        "event": {
            "kind": "event",
            "dataset": "system.auth",
            "category": ["process"],
            "type": ["start"] if outcome == "success" else ["denied"],
            "action": "sudo",
            "outcome": outcome,
        },
        "user": {"name": match["user"], "effective": {"name": match["target"]}},
    }
    if match["command"]:
        fields["process"] = {"command_line": match["command"].strip()}
    if match["error"]:
        fields["error"] = {"message": match["error"].strip()}
    return fields


def parse_su(message: str) -> Fields | None:
    """su: switching user."""
    match = SU.search(message)
    if match is None:
        return None
    if match["outcome"]:
        outcome = "success" if match["outcome"] == "Successful" else "failure"
        user, target = match["user"], match["target"]
    else:
        outcome, user, target = "success", match["user2"], match["target2"]
    return {
        "event": {
            "kind": "event",
            "dataset": "system.auth",
            "category": ["authentication"],
            "type": ["start"] if outcome == "success" else ["info"],
            "action": "su",
            "outcome": outcome,
        },
        "user": {"name": user or "unknown", "effective": {"name": target}},
    }


def parse_account_change(message: str) -> Fields | None:
    """useradd, groupadd, usermod and passwd: account and group management."""
    if match := USERADD.search(message):
        return _iam(
            "user-created", ["user", "creation"], {"name": match["name"], "id": match["uid"]}
        )
    if match := GROUPADD.search(message):
        return _iam(
            "group-created", ["group", "creation"], {"name": match["name"]}, group=match["name"]
        )
    if match := USERMOD_GROUP.search(message):
        return _iam(
            "user-added-to-group",
            ["group", "change"],
            {"name": match["name"]},
            group=match["group"],
        )
    if match := PASSWD.search(message):
        return _iam("password-changed", ["user", "change"], {"name": match["name"]})
    return None


def _iam(action: str, types: list[str], target: Fields, group: str | None = None) -> Fields:
    fields: Fields = {
        "event": {
            "kind": "event",
            "dataset": "system.auth",
            "category": ["iam"],
            "type": types,
            "action": action,
            "outcome": "success",
        },
        "user": {"target": target},
    }
    if group:
        fields["group"] = {"name": group}
    return fields


PROGRAM_PARSERS: dict[str, Callable[[str], Fields | None]] = {
    "sshd": parse_sshd,
    "sudo": parse_sudo,
    "su": parse_su,
    "useradd": parse_account_change,
    "groupadd": parse_account_change,
    "usermod": parse_account_change,
    "passwd": parse_account_change,
    "chpasswd": parse_account_change,
}


def parse_program_message(appname: str, message: str) -> Fields | None:
    """ECS fields for a known program's message, or None."""
    parser = PROGRAM_PARSERS.get(appname)
    return parser(message) if parser else None
