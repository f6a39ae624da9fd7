"""Database audit logs: who ran which statement on which database, and how many rows came back.

Three forms, told apart line by line:

- MySQL JSON (dataset "mysql.audit"): Percona's audit_log plugin
  (`{"audit_record": {"name": "Query", "timestamp": "2026-11-28T02:00:00 UTC",
  "command_class": "select", "sqltext": ..., "user": "app[app] @ localhost [10.0.0.5]",
  ...}}`) and MySQL Enterprise Audit's JSON events (`{"timestamp": "2026-11-28 02:00:00",
  "class": "general", "event": "status", "login": {...}, "general_data": {...}}`), whose
  times are UTC. Rows come from `rows_sent`/`rows` (Percona builds that add them) or
  Enterprise's `query_statistics.rows_sent`.
- MariaDB server_audit file lines (dataset "mariadb.audit"):
  `20261128 10:00:00,dbhost,app,10.0.0.5,12,345,QUERY,crm,'SELECT ...',0` - time in the
  server's zone (read in the configured zone), the statement single-quoted with `\\'`
  and `\\\\` escapes, the return code last; MariaDB 12 writes the client as host:port.
  The plugin's syslog output arrives through the syslog format, not here.
- Any other SQL audit export as CSV with a header line (dataset "sql.audit"). The header
  names the columns (common aliases accepted: time/timestamp, user/username,
  client_ip/ip, database/db, statement/query/sql, rows_returned/rows/rows_sent,
  duration_ms, status/result/error_code, action/command, ...) and must include a time
  and a statement or database column; parsing it returns None and keeps the column
  layout in `context.state`. Columns it does not know are kept under
  `sql.audit.<column>`. A statement must fit on its line (CSV quoting, no newlines).

Mapping (ECS plus the `db.*` fields of lianfang.schema): the user -> user.name and
db.user, the client -> source.ip (source.address for a host name), the database ->
db.name, the statement -> db.statement, rows returned -> db.rows (what leak detection
counts), the statement class -> event.action (select/insert/update/delete/export/
connect/...; a SELECT ... INTO OUTFILE is "export"), a non-zero status or return code ->
event.outcome "failure" and error.code. event.category is ["database"] (plus
"authentication" for connects); event.type is ["access"] for reads, ["change"] for
writes and DDL, ["start"]/["end"] for connect/disconnect, ["info"] otherwise.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from typing import Any

from collectors.ecs_values import ip_address
from collectors.formats.json_lines import decode_json
from collectors.log_format import LogFormat, ParseContext, ParseError, Record
from lianfang.schema import format_timestamp

STATE_KEY = "db_audit_csv_columns"
NANOSECONDS = 1_000_000_000
# Keeps event.duration (nanoseconds) inside a signed 64-bit long.
MAX_DURATION_SECONDS = 9e9
MARIADB_LINE = re.compile(
    r"(?P<date>\d{8}) (?P<time>\d{2}:\d{2}:\d{2}),(?P<server>[^,]*),(?P<user>[^,]*),"
    r"(?P<client>[^,]*),(?P<connection>\d+),(?P<query>\d+),(?P<operation>[A-Z_]+),"
    r"(?P<database>[^,]*),(?P<rest>.*)$",
    re.DOTALL,
)
MARIADB_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
PERCONA_USER = re.compile(
    r"(?P<user>[^\[\s]*)\[(?P<priv>[^\]]*)\] @ (?P<host>\S*) \[(?P<ip>[^\]]*)\]"
)
# The first keyword of a statement, after comments and opening parentheses.
LEADING_NOISE = re.compile(r"(?:\s+|/\*.*?\*/|--[^\n]*\n|#[^\n]*\n|\()*", re.DOTALL)
FIRST_WORD = re.compile(r"[A-Za-z_]+")
EXPORT_STATEMENT = re.compile(r"\bINTO\s+(?:OUT|DUMP)FILE\b|^\s*COPY\b.+\bTO\b", re.I | re.DOTALL)
ACCESS_PREFIXES = ("select", "show", "desc", "explain", "export", "read", "handler", "with")
CHANGE_PREFIXES = (
    "insert",
    "update",
    "delete",
    "replace",
    "create",
    "drop",
    "alter",
    "truncate",
    "rename",
    "grant",
    "revoke",
    "write",
    "load",
    "merge",
    "set_password",
)
SUCCESS_WORDS = {
    "success",
    "succeeded",
    "successful",
    "ok",
    "true",
    "pass",
    "passed",
    "allowed",
    "granted",
    "completed",
}
FAILURE_WORDS = {"failure", "failed", "fail", "error", "false", "denied", "rejected", "blocked"}
ACTION_ALIASES = {
    "login": "connect",
    "logon": "connect",
    "logout": "disconnect",
    "logoff": "disconnect",
    "quit": "disconnect",
}
PERCONA_ACTIONS = {"connect": "connect", "quit": "disconnect", "change user": "change_user"}
MARIADB_ACTIONS = {
    "CONNECT": "connect",
    "FAILED_CONNECT": "connect",
    "DISCONNECT": "disconnect",
    "CHANGEUSER": "change_user",
}
# Column roles of the generic CSV and the header names that mean them.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "time": (
        "time",
        "timestamp",
        "ts",
        "event_time",
        "eventtime",
        "datetime",
        "date_time",
        "log_time",
        "@timestamp",
        "start_time",
    ),
    "user": (
        "user",
        "username",
        "user_name",
        "db_user",
        "dbuser",
        "login",
        "login_name",
        "account",
    ),
    "client_ip": (
        "client_ip",
        "ip",
        "source_ip",
        "src_ip",
        "client_addr",
        "client_address",
        "remote_addr",
        "remote_ip",
        "client_host",
        "client",
        "host",
    ),
    "database": ("database", "db", "db_name", "dbname", "database_name", "schema"),
    "statement": ("statement", "query", "sql", "sql_text", "sqltext", "query_text", "command_text"),
    "rows": (
        "rows_returned",
        "rows",
        "rows_sent",
        "row_count",
        "returned_rows",
        "result_rows",
        "rows_affected",
        "affected_rows",
    ),
    "duration_ms": ("duration_ms", "elapsed_ms", "time_ms", "latency_ms", "execution_time_ms"),
    "duration_s": ("duration_s", "duration_sec", "elapsed_s", "query_time"),
    "duration_us": ("duration_us", "elapsed_us"),
    "status": (
        "status",
        "result",
        "outcome",
        "success",
        "error_code",
        "return_code",
        "retcode",
        "sqlcode",
    ),
    "action": (
        "action",
        "command",
        "command_class",
        "operation",
        "statement_type",
        "sql_command",
        "query_type",
    ),
    "server": ("server", "server_host", "db_host", "hostname", "instance", "server_name"),
}
DURATION_UNITS = (("duration_ms", 1_000_000), ("duration_s", NANOSECONDS), ("duration_us", 1_000))
ROLE_OF_ALIAS = {alias: role for role, aliases in COLUMN_ALIASES.items() for alias in aliases}
HEADER_NAME = re.compile(r"[@A-Za-z_][\w .-]*")


def sniff(record: Record) -> bool:
    """A MySQL audit JSON record, a MariaDB server_audit line or a SQL audit CSV header."""
    if isinstance(record, dict):
        return _is_mysql_json(record)
    line = record.lstrip("\ufeff")
    if line.startswith("{"):
        if '"audit_record"' not in line and '"connection_id"' not in line:
            return False
        try:
            value = decode_json(line)
        except ParseError:
            return False
        return isinstance(value, dict) and _is_mysql_json(value)
    return bool(MARIADB_LINE.match(line)) or _header_columns(line) is not None


def _is_mysql_json(value: dict[str, Any]) -> bool:
    if isinstance(value.get("audit_record"), dict):
        return True
    return "timestamp" in value and "class" in value and "connection_id" in value


def parse(record: Record, context: ParseContext) -> dict[str, Any] | None:
    """One audit record to ECS; None for a CSV header line."""
    if isinstance(record, dict):
        return _parse_mysql_json(record, record)
    line = record.lstrip("\ufeff").rstrip("\r\n")
    if line.startswith("{"):
        value = decode_json(line)
        if not isinstance(value, dict):
            raise ParseError(f"expected a JSON object, got {type(value).__name__}", record)
        return _parse_mysql_json(value, record)
    if match := MARIADB_LINE.match(line):
        return _parse_mariadb(match, context, record)
    return _parse_csv(line, context, record)


# --- shared mapping ----------------------------------------------------------------


def _document(
    moment: datetime,
    dataset: str,
    action: str | None,
    failed: bool | None,
) -> dict[str, Any]:
    category = ["database"]
    if action in ("connect", "disconnect", "change_user"):
        category.append("authentication")
    event: dict[str, Any] = {
        "kind": "event",
        "dataset": dataset,
        "category": category,
        "type": [_event_type(action)],
    }
    if dataset != "sql.audit":
        event["module"] = dataset.split(".", 1)[0]
    if action:
        event["action"] = action
    if failed is not None:
        event["outcome"] = "failure" if failed else "success"
    return {"@timestamp": format_timestamp(moment), "event": event}


def _event_type(action: str | None) -> str:
    if not action:
        return "info"
    if action in ("connect", "change_user"):
        return "start"
    if action == "disconnect":
        return "end"
    if action.startswith(ACCESS_PREFIXES):
        return "access"
    if action.startswith(CHANGE_PREFIXES):
        return "change"
    return "info"


def statement_action(statement: str | None, declared: str | None = None) -> str | None:
    """The action of a statement: the declared class, else its first keyword; exports win."""
    if statement and EXPORT_STATEMENT.search(statement):
        return "export"
    if declared:
        action = declared.strip().lower().replace(" ", "_")
        return ACTION_ALIASES.get(action, action)
    if not statement:
        return None
    start = LEADING_NOISE.match(statement)
    word = FIRST_WORD.match(statement, start.end() if start else 0)
    if word is None:
        return None
    keyword = word.group().lower()
    return "select" if keyword == "with" else keyword


def _set_user(document: dict[str, Any], name: str | None) -> None:
    if name:
        document["user"] = {"name": name}
        document.setdefault("db", {})["user"] = name


def _set_client(document: dict[str, Any], address: str | None, ip: str | None = None) -> None:
    if ip and _is_ip(ip):
        document["source"] = {"ip": ip, "address": address or ip}
        if address and address != ip and not _is_ip(address):
            document["source"]["domain"] = address
    elif address:
        if _is_ip(address):
            document["source"] = {"ip": address, "address": address}
        else:
            document["source"] = {"address": address, "domain": address}


def _set_database(document: dict[str, Any], name: str | None, statement: str | None) -> None:
    db = document.setdefault("db", {})
    if name:
        db["name"] = name
    if statement:
        db["statement"] = statement
    if not db:
        del document["db"]


def _set_error(document: dict[str, Any], code: Any) -> None:
    document["error"] = {"code": str(code)}


def _is_ip(text: str) -> bool:
    return ip_address(text) is not None


def _int(value: Any) -> int | None:
    """An integer that fits a signed 64-bit long (Elasticsearch's `long`), or None."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    return None


# --- MySQL JSON --------------------------------------------------------------------


def _parse_mysql_json(value: dict[str, Any], record: Record) -> dict[str, Any]:
    if isinstance(value.get("audit_record"), dict):
        return _parse_percona(dict(value["audit_record"]), record)
    if _is_mysql_json(value):
        return _parse_mysql_enterprise(dict(value), record)
    raise ParseError(
        "JSON record is neither a Percona audit_record nor a MySQL audit event", record
    )


def _utc_time(raw: Any, record: Record) -> datetime:
    if not isinstance(raw, str):
        raise ParseError(f"MySQL audit timestamp is not a string: {raw!r}", record)
    text = raw.strip().removesuffix(" UTC")  # Percona: "2026-11-28T02:00:00 UTC"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ParseError(f"unreadable MySQL audit timestamp {raw!r}", record) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_percona(audit: dict[str, Any], record: Record) -> dict[str, Any]:
    moment = _utc_time(audit.pop("timestamp", None), record)
    name = _take_text(audit, "name")
    statement = _take_text(audit, "sqltext")
    command_class = _take_text(audit, "command_class")
    if name and name.lower() in PERCONA_ACTIONS:
        action: str | None = PERCONA_ACTIONS[name.lower()]
    else:
        action = statement_action(statement, command_class or name)
    status = _int(audit.get("status"))
    document = _document(moment, "mysql.audit", action, None if status is None else status != 0)
    if status is not None:
        del audit["status"]
        if status:
            _set_error(document, status)
    user_field = _take_text(audit, "user")
    user_name = user_field
    host = _take_text(audit, "host")
    ip = _take_text(audit, "ip")
    if user_field and (match := PERCONA_USER.fullmatch(user_field)):
        # "user[priv_user] @ host [ip]" in query records
        user_name = match["user"] or match["priv"] or None
        host = host or match["host"] or None
        ip = ip or match["ip"] or None
        audit["user_string"] = user_field
    _set_user(document, user_name)
    _set_client(document, host, ip)
    _set_database(document, _take_text(audit, "db"), statement)
    rows_field = "rows_sent" if "rows_sent" in audit else "rows"
    rows = _int(audit.get(rows_field))
    if rows is not None:
        document.setdefault("db", {})["rows"] = rows
        del audit[rows_field]
    _stringify_id(audit, "connection_id")
    if command_class:
        audit["command_class"] = command_class
    if name:
        audit["name"] = name
    document["mysql"] = {"audit": _without_placeholders(audit)}
    return document


def _parse_mysql_enterprise(audit: dict[str, Any], record: Record) -> dict[str, Any]:
    moment = _utc_time(audit.pop("timestamp", None), record)
    event_class = _text(audit.get("class"))
    event_name = _text(audit.get("event"))
    data: dict[str, Any] = {}
    for key in ("general_data", "connection_data", "table_access_data"):
        if isinstance(audit.get(key), dict):
            data = audit[key]
            if _text(data.get("query")):  # it goes to db.statement; do not store it twice
                audit[key] = {name: value for name, value in data.items() if name != "query"}
            break
    statement = _text(data.get("query"))
    if event_class == "connection":
        action: str | None = event_name.replace("-", "_") if event_name else None
    elif event_class == "general":
        declared = _text(data.get("sql_command")) or _text(data.get("command"))
        action = statement_action(statement, declared)
    else:
        action = statement_action(statement, event_name)
    status = _int(data.get("status"))
    document = _document(moment, "mysql.audit", action, None if status is None else status != 0)
    if status:
        _set_error(document, status)
    login = audit.get("login") if isinstance(audit.get("login"), dict) else {}
    account = audit.get("account") if isinstance(audit.get("account"), dict) else {}
    _set_user(document, _text(login.get("user")) or _text(account.get("user")))
    # account.host is the account's host pattern ("%"), not where the client is.
    _set_client(document, None, _text(login.get("ip")))
    _set_database(document, _text(data.get("db")), statement)
    statistics = audit.get("query_statistics")
    if isinstance(statistics, dict):
        rows = _int(statistics.get("rows_sent"))
        if rows is not None:
            document.setdefault("db", {})["rows"] = rows
        query_time = statistics.get("query_time")
        if (
            isinstance(query_time, int | float)
            and not isinstance(query_time, bool)
            and 0 <= query_time < MAX_DURATION_SECONDS
        ):
            document["event"]["duration"] = round(query_time * NANOSECONDS)
    _stringify_id(audit, "connection_id")
    # Connection attributes are client-chosen keys: one JSON string, not a field each.
    connection_data = audit.get("connection_data")
    if isinstance(connection_data, dict) and "connection_attributes" in connection_data:
        audit["connection_data"] = {
            **connection_data,
            "connection_attributes": json.dumps(
                connection_data["connection_attributes"], ensure_ascii=False, separators=(",", ":")
            ),
        }
    document["mysql"] = {"audit": _without_placeholders(audit)}
    return document


def _without_placeholders(value: dict[str, Any]) -> dict[str, Any]:
    """The object without empty strings and nulls (MySQL writes "" for "not known")."""
    cleaned: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = _without_placeholders(item)
        if item not in (None, "", {}):
            cleaned[key] = item
    return cleaned


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _take_text(record: dict[str, Any], name: str) -> str | None:
    """A string field, removed from the record; any other type is left where it is."""
    value = record.get(name)
    if not isinstance(value, str):
        return None
    del record[name]
    return value or None


def _stringify_id(record: dict[str, Any], name: str) -> None:
    # Connection ids are identifiers, and some writers quote them: always keyword.
    value = record.get(name)
    if isinstance(value, int | str) and not isinstance(value, bool):
        record[name] = str(value)


# --- MariaDB server_audit ----------------------------------------------------------


def _parse_mariadb(match: re.Match[str], context: ParseContext, record: Record) -> dict[str, Any]:
    date, clock = match["date"], match["time"]
    try:
        moment = datetime(
            int(date[:4]),
            int(date[4:6]),
            int(date[6:]),
            int(clock[:2]),
            int(clock[3:5]),
            int(clock[6:]),
            tzinfo=context.timezone,
        )
    except ValueError as error:
        raise ParseError(f"impossible server_audit time {date} {clock}: {error}", record) from error
    object_text, comma, retcode_text = match["rest"].rpartition(",")
    retcode = _int(retcode_text)
    # Table events (READ, WRITE, ...) end with an empty return code.
    if not comma or (retcode is None and retcode_text):
        raise ParseError("server_audit line without a numeric return code at the end", record)
    operation = match["operation"]
    quoted = object_text.startswith("'") and object_text.endswith("'") and len(object_text) >= 2
    statement = MARIADB_ESCAPE.sub(r"\1", object_text[1:-1]) if quoted else None
    if operation in MARIADB_ACTIONS:
        action: str | None = MARIADB_ACTIONS[operation]
    elif operation.startswith("QUERY"):
        action = statement_action(statement)
    else:
        action = operation.lower()  # table events: READ, WRITE, CREATE, ALTER, RENAME, DROP
    failed = None if retcode is None else retcode != 0
    if operation == "FAILED_CONNECT":
        failed = True
    document = _document(moment, "mariadb.audit", action, failed)
    if retcode:
        _set_error(document, retcode)
    if match["server"]:
        document["host"] = {"name": match["server"], "hostname": match["server"]}
    _set_user(document, match["user"] or None)
    _set_mariadb_client(document, match["client"])
    _set_database(document, match["database"] or None, statement)
    audit: dict[str, Any] = {
        "operation": operation,
        "connection_id": match["connection"],
        "query_id": match["query"],
    }
    if retcode is not None:
        audit["retcode"] = retcode
    if object_text and not quoted:
        audit["object"] = object_text
    document["mariadb"] = {"audit": audit}
    return document


def _set_mariadb_client(document: dict[str, Any], client: str) -> None:
    if not client:
        return
    if _is_ip(client):
        _set_client(document, client)
        return
    host, colon, port = client.rpartition(":")  # MariaDB 12: host:port
    if colon and port.isdigit() and host:
        _set_client(document, host)
        document["source"]["port"] = int(port)
    else:
        _set_client(document, client)


# --- generic SQL audit CSV ---------------------------------------------------------


def _header_columns(line: str) -> list[tuple[str, str]] | None:
    """(role, column name) per column if `line` is a SQL audit CSV header, else None."""
    first = line.split(",", 1)[0].strip().strip('"').lower()
    if _normalise_header(first) not in ROLE_OF_ALIAS:
        return None  # cheap rejection: headers start with a known column name
    try:
        names = next(csv.reader((line,)))
    except (csv.Error, StopIteration):
        return None
    columns: list[tuple[str, str]] = []
    roles: set[str] = set()
    for raw in names:
        name = _normalise_header(raw)
        if not name or not HEADER_NAME.fullmatch(raw.strip()):
            return None
        role = ROLE_OF_ALIAS.get(name, "")
        if role and role in roles:
            role = ""  # a second column of the same meaning is kept as it is
        roles.add(role)
        columns.append((role, name))
    # A time and a user alone could be any CSV (VPN, badge readers): ask for SQL columns.
    if "time" not in roles or not roles & {"statement", "database"}:
        return None
    return columns


def _normalise_header(name: str) -> str:
    return name.strip().strip('"').lower().replace(" ", "_").replace("-", "_")


def _parse_csv(line: str, context: ParseContext, record: Record) -> dict[str, Any] | None:
    header = _header_columns(line)
    if header is not None:
        context.state[STATE_KEY] = header
        return None
    columns = context.state.get(STATE_KEY)
    if not columns:
        raise ParseError("not a database audit record (no SQL audit CSV header seen)", record)
    try:
        values = next(csv.reader((line,)))
    except (csv.Error, StopIteration) as error:
        raise ParseError(f"unreadable CSV line: {error}", record) from error
    if len(values) != len(columns):
        raise ParseError(
            f"SQL audit CSV line has {len(values)} fields, the header {len(columns)}", record
        )
    by_role: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for (role, name), value in zip(columns, values, strict=True):
        value = value.strip()
        if not value:
            continue
        if role:
            by_role[role] = value
        else:
            extra[name] = value
    if "time" not in by_role:
        raise ParseError("SQL audit CSV line without a time", record)
    moment = _csv_time(by_role["time"], context, record)
    statement = by_role.get("statement")
    action = statement_action(statement, by_role.get("action"))
    failed = _status_failed(by_role.get("status"))
    document = _document(moment, "sql.audit", action, failed)
    status = by_role.get("status")
    if status is not None:
        extra["status"] = status
        if failed and _int(status) is not None:
            _set_error(document, status)
    _set_user(document, by_role.get("user"))
    _set_client(document, by_role.get("client_ip"))
    if "server" in by_role:
        document["host"] = {"name": by_role["server"]}
    _set_database(document, by_role.get("database"), statement)
    if "rows" in by_role:
        rows = _int(by_role["rows"])
        if rows is None:
            extra["rows"] = by_role["rows"]
        else:
            document.setdefault("db", {})["rows"] = rows
    for role, nanoseconds_per_unit in DURATION_UNITS:
        if role in by_role:
            try:
                document["event"]["duration"] = round(float(by_role[role]) * nanoseconds_per_unit)
            except ValueError:
                extra[role] = by_role[role]
            break
    if extra:
        document["sql"] = {"audit": extra}
    return document


def _csv_time(raw: str, context: ParseContext, record: Record) -> datetime:
    try:
        if raw.replace(".", "", 1).isdigit():
            seconds = float(raw)
            return datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
        moment = datetime.fromisoformat(raw.replace("/", "-"))
    except (ValueError, OverflowError, OSError) as error:
        raise ParseError(f"unreadable time {raw!r}", record) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=context.timezone)


def _status_failed(status: str | None) -> bool | None:
    if status is None:
        return None
    number = _int(status)
    if number is not None:
        return number != 0
    word = status.strip().lower()
    if word in SUCCESS_WORDS:
        return False
    if word in FAILURE_WORDS:
        return True
    return None


FORMAT = LogFormat(
    name="db_audit",
    description="Database audit logs: MySQL (Percona/Enterprise JSON), MariaDB server_audit, SQL audit CSV with header",
    sniff=sniff,
    parse=parse,
    priority=30,
)
