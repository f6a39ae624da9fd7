"""Linux audit records: `type=SYSCALL msg=audit(1700000000.123:456): key=value ...`.

The lines of /var/log/audit/audit.log, optionally with `node=<host>` in front (when
auditd names nodes), and also the forms relays write: behind a syslog header
(audisp-syslog) and the kernel's own `audit: type=1400 audit(...)` lines with a
numeric record type. Each line is one event; records sharing a serial number are not
correlated here (the serial is kept in `auditd.log.sequence`).

Value encoding: the kernel writes strings it does not trust (`exe`, `comm`, `name`,
`proctitle`, `cmd`, EXECVE arguments, ...) in double quotes when they are plain, and
as unquoted hex when they contain spaces, quotes or control characters; those are
decoded here (proctitle's NUL separators become spaces). User-space records carry a
nested `msg='...'` section whose pairs are merged with the outer ones. An unquoted
value may run over several words (`op=adding user`) until the next `key=`. The
"enriched" log format appends the resolved names after a 0x1D character (`UID="root"`);
they are kept in `auditd.log.enriched`, and give `user.audit.name`/`user.effective.name`.

Mapping: uid/auid/euid to `user.id`/`user.audit.id`/`user.effective.id`, `acct` to
`user.name`, exe/comm/pid/ppid/cwd to `process.*`, addr/hostname to `source.*`; the
record type, lower-cased, is `event.action`. Two kinds of records are about another
account than the process's: PAM and login records (USER_AUTH, USER_LOGIN, ...) come
from a service running as root for `acct` or the login uid `id`, so user.name/user.id
are that account and the service's uid stays in `auditd.log.uid`; account-management
records (ADD_USER, DEL_USER, USER_CHAUTHTOK, ...) act on `acct`/`id`, which become
`user.target.*` while user.id stays the actor. The unset id 4294967295 (-1) is
dropped. Everything else stays in `auditd.log` as written.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from collectors.ecs_values import ip_address, long_value
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from collectors.syslog_envelope import parse_header
from lianfang.schema import format_timestamp

AUDIT_RECORD = re.compile(
    r"(?:node=(?P<node>\S+) )?type=(?P<type>[A-Z0-9_]+|UNKNOWN\[\d+\]) (?:msg=)?"
    r"audit\((?P<seconds>\d+)\.(?P<fraction>\d+):(?P<serial>\d+)\): ?(?P<body>.*)$",
    re.DOTALL,
)
AUDIT_ANYWHERE = re.compile(r"(?:^|\s)(?:node=\S+ )?type=\S+ (?:msg=)?audit\(\d+\.\d+:\d+\):")
# A value is double- or single-quoted, or bare; a bare value takes following words that
# are not themselves `key=` pairs ("op=adding user id=5"). A key follows a space: bodies
# are searched with a space put in front, and the literal space lets the regex engine
# skip ahead and keeps scanning linear on long runs of key characters.
AUDIT_PAIR = re.compile(
    r" ([\w\-\[\]]+)=(?:\"([^\"]*)\"|'([^']*)'|([^\s\"']*(?: [^\s=\"']+(?=\s|$))*))"
)
HEX_VALUE = re.compile(r"(?:[0-9A-F]{2})+")
EXECVE_ARGUMENT = re.compile(r"a\d+(?:\[\d+\])?")
# Fields the kernel hex-encodes when they contain unsafe characters.
ENCODED_FIELDS = frozenset(
    {
        "acct", "exe", "comm", "name", "cwd", "proctitle", "path", "cmd", "data", "key",
        "ocomm", "grp", "new_group", "watch", "dir", "file", "vm", "old_vm", "new_vm",
        "root_dir", "sw", "old-chardev", "new-chardev",
    }
)  # fmt: skip
UNSET = frozenset({"4294967295", "-1"})
PLACEHOLDERS = frozenset({"", "?", "(null)", "(none)"})

NUMERIC_TYPES = {
    "1100": "USER_AUTH", "1101": "USER_ACCT", "1102": "USER_MGMT", "1103": "CRED_ACQ",
    "1104": "CRED_DISP", "1105": "USER_START", "1106": "USER_END", "1107": "USER_AVC",
    "1108": "USER_CHAUTHTOK", "1109": "USER_ERR", "1110": "CRED_REFR", "1111": "USYS_CONFIG",
    "1112": "USER_LOGIN", "1113": "USER_LOGOUT", "1114": "ADD_USER", "1115": "DEL_USER",
    "1116": "ADD_GROUP", "1117": "DEL_GROUP", "1123": "USER_CMD", "1124": "USER_TTY",
    "1125": "CHUSER_ID", "1126": "GRP_AUTH", "1127": "SYSTEM_BOOT", "1128": "SYSTEM_SHUTDOWN",
    "1129": "SYSTEM_RUNLEVEL", "1130": "SERVICE_START", "1131": "SERVICE_STOP",
    "1132": "GRP_MGMT", "1133": "GRP_CHAUTHTOK", "1200": "DAEMON_START", "1201": "DAEMON_END",
    "1203": "DAEMON_ABORT", "1204": "DAEMON_CONFIG", "1300": "SYSCALL", "1302": "PATH",
    "1303": "IPC", "1304": "SOCKETCALL", "1305": "CONFIG_CHANGE", "1306": "SOCKADDR",
    "1307": "CWD", "1309": "EXECVE", "1320": "EOE", "1325": "NETFILTER_CFG",
    "1326": "SECCOMP", "1327": "PROCTITLE", "1400": "AVC", "1401": "SELINUX_ERR",
    "1700": "ANOM_PROMISCUOUS", "1701": "ANOM_ABEND", "1702": "ANOM_LINK",
}  # fmt: skip

# record type -> (event.category, event.type); types not listed get no category.
CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "USER_LOGIN": (["authentication"], ["start"]),
    "USER_LOGOUT": (["authentication"], ["end"]),
    "USER_AUTH": (["authentication"], ["info"]),
    "USER_ACCT": (["authentication"], ["info"]),
    "GRP_AUTH": (["authentication"], ["info"]),
    "CRED_ACQ": (["authentication"], ["info"]),
    "CRED_REFR": (["authentication"], ["info"]),
    "CRED_DISP": (["authentication"], ["info"]),
    "LOGIN": (["authentication"], ["info"]),
    "USER_START": (["session"], ["start"]),
    "USER_END": (["session"], ["end"]),
    "USER_CMD": (["process"], ["start"]),
    "EXECVE": (["process"], ["start"]),
    "SYSCALL": (["process"], ["info"]),
    "PROCTITLE": (["process"], ["info"]),
    "CHUSER_ID": (["process"], ["change"]),
    "PATH": (["file"], ["info"]),
    "CWD": (["file"], ["info"]),
    "SOCKADDR": (["network"], ["info"]),
    "ADD_USER": (["iam"], ["user", "creation"]),
    "DEL_USER": (["iam"], ["user", "deletion"]),
    "USER_MGMT": (["iam"], ["user", "change"]),
    "USER_CHAUTHTOK": (["iam"], ["user", "change"]),
    "ADD_GROUP": (["iam"], ["group", "creation"]),
    "DEL_GROUP": (["iam"], ["group", "deletion"]),
    "GRP_MGMT": (["iam"], ["group", "change"]),
    "GRP_CHAUTHTOK": (["iam"], ["group", "change"]),
    "CONFIG_CHANGE": (["configuration"], ["change"]),
    "USYS_CONFIG": (["configuration"], ["change"]),
    "NETFILTER_CFG": (["configuration"], ["change"]),
    "DAEMON_CONFIG": (["configuration"], ["change"]),
    "SERVICE_START": (["process"], ["start"]),
    "SERVICE_STOP": (["process"], ["end"]),
    "DAEMON_START": (["process"], ["start"]),
    "DAEMON_END": (["process"], ["end"]),
    "DAEMON_ABORT": (["process"], ["end"]),
    "SYSTEM_BOOT": (["host"], ["start"]),
    "SYSTEM_SHUTDOWN": (["host"], ["end"]),
    "AVC": (["process"], ["info"]),
    "USER_AVC": (["process"], ["info"]),
    "SECCOMP": (["process"], ["info"]),
}
# Records about managing an account: `acct`/`id` name the account acted upon.
ACCOUNT_MANAGEMENT = frozenset(
    {"ADD_USER", "DEL_USER", "USER_MGMT", "USER_CHAUTHTOK", "ADD_GROUP", "DEL_GROUP"}
    | {"GRP_MGMT", "GRP_CHAUTHTOK"}
)
LOGIN_RECORDS = frozenset({"USER_LOGIN", "USER_LOGOUT"})
RESULTS = {"success": "success", "yes": "success", "1": "success"}
RESULTS |= {"failed": "failure", "failure": "failure", "fail": "failure", "no": "failure"}
RESULTS |= {"0": "failure"}
# audit field -> (ECS path, int?) for fields whose meaning does not depend on the record type.
ECS_FIELDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "uid": (("user", "id"), False),
    "auid": (("user", "audit", "id"), False),
    "euid": (("user", "effective", "id"), False),
    "gid": (("user", "group", "id"), False),
    "egid": (("user", "effective", "group", "id"), False),
    "pid": (("process", "pid"), True),
    "ppid": (("process", "parent", "pid"), True),
    "exe": (("process", "executable"), False),
    "comm": (("process", "name"), False),
    "proctitle": (("process", "title"), False),
}
ENRICHED_NAMES = {"AUID": ("user", "audit", "name"), "EUID": ("user", "effective", "name")}


def sniff(record: Record) -> bool:
    """A line of audit.log: `type=... msg=audit(...)`, optionally after `node=`."""
    if not isinstance(record, str):
        return False
    return AUDIT_RECORD.match(record) is not None


def parse(record: Record, context: ParseContext) -> dict[str, Any]:
    """One audit record to ECS."""
    if not isinstance(record, str):
        raise ParseError("auditd expects a text line", record)
    line = record.rstrip("\r\n")
    match = AUDIT_RECORD.match(line)
    envelope = None
    if match is None:
        found = AUDIT_ANYWHERE.search(line)
        if found is None:
            raise ParseError("not an audit record (type=... msg=audit(...))", record)
        start = found.start() + (1 if line[found.start()].isspace() else 0)
        match = AUDIT_RECORD.match(line, start)
        if match is None:
            raise ParseError("not an audit record (type=... msg=audit(...))", record)
        envelope = parse_header(line[:start].rstrip().removesuffix("audit:"), context)

    record_type = match["type"]
    if record_type.isdigit():
        record_type = NUMERIC_TYPES.get(record_type, f"UNKNOWN[{record_type}]")
    seconds, fraction = int(match["seconds"]), match["fraction"]
    try:
        moment = datetime.fromtimestamp(seconds, UTC).replace(
            microsecond=int(fraction[:6].ljust(6, "0"))
        )
    except (OverflowError, OSError, ValueError) as error:
        raise ParseError(f"audit time out of range: {seconds}", record) from error
    body, _, enriched_text = match["body"].partition("\x1d")
    fields = _pairs(body, record_type)

    event: dict[str, Any] = {
        "kind": "event",
        "dataset": "auditd.log",
        "action": "unknown" if record_type.startswith("UNKNOWN") else record_type.lower(),
    }
    categories = CATEGORIES.get(record_type)
    if categories:
        event["category"] = list(categories[0])
        event["type"] = list(categories[1])
    else:
        event["type"] = ["info"]
    document: dict[str, Any] = {"@timestamp": format_timestamp(moment), "event": event}
    sequence = long_value(match["serial"])
    if sequence is None:
        raise ParseError(f"audit serial out of range: {match['serial'][:40]}", record)
    log: dict[str, Any] = {"record_type": record_type, "sequence": sequence}
    auditd: dict[str, Any] = {"log": log}

    outcome = RESULTS.get(fields.pop("res", "").lower()) or RESULTS.get(
        fields.get("success", "").lower()
    )
    if outcome:
        event["outcome"] = outcome
        if record_type == "USER_LOGIN" and outcome == "failure":
            event["type"] = ["info"]
    if record_type in ("AVC", "USER_AVC"):
        verdict = _access_verdict(fields, body)
        if verdict:
            event["type"] = [verdict]
    _map_fields(document, fields, record_type, log)
    if enriched_text:
        enriched = _pairs(enriched_text, record_type)
        log["enriched"] = enriched
        for key, path in ENRICHED_NAMES.items():
            if key in enriched:
                _put(document, path, enriched[key])
        # The resolved name of whichever uid became user.id.
        name_key = "ID" if _about_account(fields, record_type) else "UID"
        if name_key in enriched and "name" not in document.get("user", {}):
            _put(document, ("user", "name"), enriched[name_key])
    document["auditd"] = auditd

    host = match["node"]
    if envelope is not None:
        document["log"] = envelope["log"]
        host = host or envelope["log"]["syslog"].get("hostname")
    if host:
        document["host"] = {"name": host}
    return document


def _access_verdict(fields: dict[str, str], body: str) -> str | None:
    """denied/allowed for an AppArmor (apparmor="DENIED") or SELinux ("avc: denied") decision."""
    apparmor = fields.get("apparmor", "").upper()
    if apparmor == "DENIED" or "avc:  denied" in body:
        return "denied"
    if apparmor == "ALLOWED" or "avc:  granted" in body:
        return "allowed"
    return None


def _pairs(text: str, record_type: str) -> dict[str, str]:
    """The key=value pairs of a record body, the nested msg='...' merged in, values decoded."""
    pairs: dict[str, str] = {}
    for key, double, single, bare in AUDIT_PAIR.findall(" " + text):
        if single:
            if key == "msg":
                for inner_key, inner_value in _pairs(single, record_type).items():
                    pairs.setdefault(inner_key, inner_value)
                continue
            pairs[key] = single
        elif double or not bare:
            pairs[key] = double  # also a bare or quoted empty value
        else:
            value = bare.rstrip()
            if _encoded(key, record_type) and HEX_VALUE.fullmatch(value):
                value = _decode_hex(key, value)
            pairs[key] = value
    return pairs


def _encoded(key: str, record_type: str) -> bool:
    if key in ENCODED_FIELDS:
        return True
    return record_type == "EXECVE" and EXECVE_ARGUMENT.fullmatch(key) is not None


def _decode_hex(key: str, value: str) -> str:
    text = bytes.fromhex(value).decode("utf-8", "backslashreplace")
    if key == "proctitle":
        return text.rstrip("\x00").replace("\x00", " ")
    if key == "key":
        return text.replace("\x01", ",")  # several rule keys are joined by 0x01
    return text


def _map_fields(
    document: dict[str, Any], fields: dict[str, str], record_type: str, log: dict[str, Any]
) -> None:
    """Map the record's fields; unmapped ones go to `log` (auditd.log)."""
    arguments: dict[int, str] = {}
    about_account = _about_account(fields, record_type)
    for key, value in fields.items():
        if value in PLACEHOLDERS:
            continue
        if key in ("auid", "ses") and value in UNSET:
            continue
        if key == "acct":
            path = (
                ("user", "target", "name")
                if record_type in ACCOUNT_MANAGEMENT
                else ("user", "name")
            )
            _put(document, path, value)
        elif key == "id" and record_type in ACCOUNT_MANAGEMENT and value not in UNSET:
            _put(document, ("user", "target", "id"), value)
        elif key == "id" and about_account and value not in UNSET:
            _put(document, ("user", "id"), value)
        elif key == "uid" and about_account:
            log[key] = value  # the uid of the service (sshd, crond) acting for the account
        elif key in ECS_FIELDS:
            path, numeric = ECS_FIELDS[key]
            if numeric:
                number = long_value(value)
                if number is None:
                    log[key] = value
                    continue
                _put(document, path, number)
            else:
                _put(document, path, value)
        elif key == "addr":
            if ip_address(value):
                _put(document, ("source", "ip"), value)
            else:
                _put(document, ("source", "address"), value)
        elif key == "hostname":
            if ip_address(value):
                if "addr" not in fields or fields["addr"] in PLACEHOLDERS:
                    _put(document, ("source", "ip"), value)
            else:
                _put(document, ("source", "domain"), value)
        elif key == "cwd":
            _put(document, ("process", "working_directory"), value)
        elif key == "cmd" and record_type == "USER_CMD":
            _put(document, ("process", "command_line"), value)
        elif key == "name" and record_type in ("PATH", "AVC"):
            # AppArmor names the full path, SELinux only the last component.
            _put(document, ("file", "path" if value.startswith("/") else "name"), value)
        elif record_type == "EXECVE" and EXECVE_ARGUMENT.fullmatch(key) and "[" not in key:
            arguments[int(key[1:])] = value
        elif key == "argc" and record_type == "EXECVE" and long_value(value) is not None:
            _put(document, ("process", "args_count"), long_value(value))
        elif key == "key":
            log["key"] = value
        else:
            log[key] = value
    if arguments:
        args = [arguments[index] for index in sorted(arguments)]
        _put(document, ("process", "args"), args)
        _put(document, ("process", "command_line"), " ".join(args))


def _about_account(fields: dict[str, str], record_type: str) -> bool:
    """Whether user.* describes an account the record names rather than the process's uid.

    PAM and login records (USER_AUTH, USER_LOGIN, ...) come from a service running as
    root on behalf of `acct` (or the login uid `id`); giving that account the service's
    uid would pair the wrong name and id.
    """
    if record_type in ACCOUNT_MANAGEMENT:
        return False
    named = fields.get("acct", "") not in PLACEHOLDERS
    return named or (record_type in LOGIN_RECORDS and fields.get("id", "") not in PLACEHOLDERS)


def _put(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = document
    for part in path[:-1]:
        child = target.get(part)
        if child is None:
            child = target[part] = {}
        target = child
    target[path[-1]] = value


FORMAT = LogFormat(
    name="auditd",
    description="Linux audit records (audit.log, audisp-syslog, kernel audit lines) mapped to ECS",
    sniff=sniff,
    parse=parse,
    priority=40,
)
