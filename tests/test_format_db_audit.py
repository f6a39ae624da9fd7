"""Database audit: sniffing the three forms, statement classes, rows, CSV header state."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest

from collectors.formats import detect_format
from collectors.formats.db_audit import FORMAT, parse, sniff, statement_action
from collectors.log_format import ParseContext, ParseError
from tests.hostile_records import assert_only_parse_errors, truncations, with_each_value_replaced

PERCONA = {
    "audit_record": {
        "name": "Query",
        "record": "1_2026-11-28T01:00:00",
        "timestamp": "2026-11-28T02:00:00 UTC",
        "command_class": "select",
        "connection_id": "12",
        "status": 0,
        "sqltext": "SELECT * FROM citizens",
        "user": "app[app] @ localhost [10.0.0.5]",
        "host": "localhost",
        "os_user": "",
        "ip": "10.0.0.5",
        "db": "crm",
        "rows_sent": 120,
    }
}
MARIADB = "20261128 10:00:01,dbhost,app,10.0.0.5,12,345,QUERY,crm,'SELECT * FROM citizens',0"
CSV_HEADER = "time,user,client_ip,database,statement,rows_returned,duration_ms,status"


def context() -> ParseContext:
    return ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize(
    "record",
    [
        json.dumps(PERCONA),
        PERCONA,
        '{"timestamp":"2026-11-28 02:00:00","class":"general","event":"status","connection_id":1}',
        MARIADB,
        CSV_HEADER,
        "Timestamp,DB User,Query",
    ],
)
def test_sniff_recognises_database_audit(record: str | dict) -> None:
    assert sniff(record)


@pytest.mark.parametrize(
    "record",
    [
        "time,level,message",  # a CSV, but not of SQL statements
        "time,user,src_ip,action",  # a VPN or badge log: no statement or database column
        "2026-11-28 10:00:00,app,10.0.0.5,crm,SELECT 1,1,1,0",  # data without its header
        '{"timestamp":"2026-11-28T10:00:00+0800","event_type":"alert"}',
        "<13>Nov 28 10:00:00 dbhost mysqld: started",
    ],
)
def test_sniff_rejects_others(record: str) -> None:
    assert not sniff(record)


def test_detect_format() -> None:
    assert detect_format([MARIADB]) is FORMAT
    assert detect_format([json.dumps(PERCONA)]) is FORMAT
    assert (
        detect_format([CSV_HEADER, "2026-11-28 10:00:00,app,10.0.0.5,crm,SELECT 1,1,1,0"]) is FORMAT
    )


@pytest.mark.parametrize(
    ("statement", "declared", "action"),
    [
        ("SELECT 1", None, "select"),
        ("  /* hint */ (select 1)", None, "select"),
        ("WITH t AS (SELECT 1) SELECT * FROM t", None, "select"),
        ("select * from t into outfile '/tmp/x'", "select", "export"),
        ("COPY citizens TO '/tmp/c.csv'", None, "export"),
        ("COPY citizens FROM '/tmp/c.csv'", None, "copy"),
        ("delete from t", None, "delete"),
        (None, "Show Databases", "show_databases"),
        (None, "LOGIN", "connect"),
        ("", None, None),
    ],
)
def test_statement_action(statement: str | None, declared: str | None, action: str | None) -> None:
    assert statement_action(statement, declared) == action


def test_percona_mapping() -> None:
    document = parse(json.dumps(PERCONA), context())
    assert document["@timestamp"] == "2026-11-28T02:00:00.000Z"
    assert document["event"]["dataset"] == "mysql.audit"
    assert document["event"]["category"] == ["database"]
    assert document["event"]["type"] == ["access"]
    assert document["db"] == {
        "user": "app",
        "name": "crm",
        "statement": "SELECT * FROM citizens",
        "rows": 120,
    }
    assert document["user"] == {"name": "app"}
    assert document["source"]["ip"] == "10.0.0.5"


def test_mariadb_time_is_local_and_quotes_are_unescaped() -> None:
    line = "20261128 10:00:01,dbhost,app,10.0.0.5,12,345,QUERY,crm,'SELECT \\'a,b\\'',1064"
    document = parse(line, context())
    assert document["@timestamp"] == "2026-11-28T02:00:01.000Z"
    assert document["db"]["statement"] == "SELECT 'a,b'"
    assert document["event"]["outcome"] == "failure"
    assert document["error"] == {"code": "1064"}
    assert document["host"]["name"] == "dbhost"


def test_mariadb_failed_connect_is_an_authentication_failure() -> None:
    document = parse(
        "20261128 10:00:05,dbhost,admin,192.0.2.44,13,0,FAILED_CONNECT,,,1045", context()
    )
    assert document["event"]["action"] == "connect"
    assert document["event"]["category"] == ["database", "authentication"]
    assert document["event"]["outcome"] == "failure"


def test_csv_header_is_state_and_rows_are_counted() -> None:
    shared = context()
    assert parse(CSV_HEADER, shared) is None
    document = parse(
        '2026-11-28 10:00:00,app,10.0.0.5,crm,"SELECT a, b FROM t",5000,12.5,success', shared
    )
    assert document["event"]["dataset"] == "sql.audit"
    assert document["db"]["rows"] == 5000
    assert document["db"]["statement"] == "SELECT a, b FROM t"
    assert document["event"]["duration"] == 12_500_000
    assert document["event"]["outcome"] == "success"
    # A new header (a concatenated export) changes the layout.
    assert parse("ts,query,username", shared) is None
    document = parse("2026-11-28T02:00:00Z,DROP TABLE t,root", shared)
    assert document["user"]["name"] == "root"
    assert document["event"]["type"] == ["change"]


def test_csv_data_without_header_is_refused() -> None:
    with pytest.raises(ParseError, match="no SQL audit CSV header"):
        parse("2026-11-28 10:00:00,app,10.0.0.5,crm,SELECT 1,1,1,0", context())


def test_hostile_records_only_raise_parse_error() -> None:
    shared = context()
    parse(CSV_HEADER, shared)
    csv_line = '2026-11-28 10:00:00,app,10.0.0.5,crm,"SELECT a, b FROM t",5000,12.5,success'
    variants = [
        *truncations(MARIADB, 2),
        *truncations(csv_line, 2),
        *truncations(json.dumps(PERCONA), 5),
        *with_each_value_replaced(PERCONA),
    ]
    assert_only_parse_errors(parse, variants, shared)
