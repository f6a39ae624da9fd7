"""The `windows` format: sniffing, the tricky mappings, and robustness against odd input."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collectors.formats.windows import FORMAT, _command_line_args, _registry_data
from collectors.log_format import ParseContext, ParseError

GOLDEN = Path(__file__).parent / "golden" / "windows"
CONTEXT = ParseContext(timezone=ZoneInfo("Asia/Shanghai"))


def golden_records(name: str) -> list[dict[str, Any]]:
    return json.loads((GOLDEN / f"{name}.input.json").read_text(encoding="utf-8"))


def evtx_record(event_id: int, channel: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": "Test-Provider"}},
                "EventID": event_id,
                "Channel": channel,
                "Computer": "ws1",
                "TimeCreated": {"#attributes": {"SystemTime": "2024-03-05T10:00:00.000000Z"}},
            },
            "EventData": data,
        }
    }


@pytest.mark.parametrize(
    "record",
    [
        golden_records("evtx_security")[0],
        json.dumps(golden_records("evtx_sysmon")[0]),
        golden_records("winlogbeat")[0],
        json.dumps(golden_records("winlogbeat")[1]),  # an Elasticsearch export (_source)
        golden_records("winlogbeat")[2],  # dotted keys
        golden_records("flat_exports")[0],  # Get-WinEvent
        json.dumps(golden_records("flat_exports")[2]),  # nxlog
        {"evtx_error": "record 7 unreadable"},
    ],
)
def test_sniff_accepts_every_shape(record: Any) -> None:
    assert FORMAT.sniff(record)


@pytest.mark.parametrize(
    "record",
    [
        '{"message": "hello", "@timestamp": "2024-01-01T00:00:00Z"}',
        {"message": "hello", "@timestamp": "2024-01-01T00:00:00Z"},
        "<13>Mar  5 10:00:00 host app: EventID 4624",
        '{"Event": "not an object", "EventID": 4624}',
        {"Event": {"Name": "no System element"}},
        {"Id": 4624, "Name": "an Id alone is too generic"},
        {
            "eventID": "0f3c",
            "eventSource": "signin.amazonaws.com",
            "eventTime": "2024-01-01T00:00:00Z",
        },
        '{"EventID": 4624, "broken json',
        "[1, 2]",
        {"EventID": 4624},  # no provider or channel
    ],
)
def test_sniff_rejects_other_records(record: Any) -> None:
    assert not FORMAT.sniff(record)


@pytest.mark.parametrize(
    ("command_line", "args"),
    [
        ("cmd.exe /c whoami", ["cmd.exe", "/c", "whoami"]),
        ("C:\\dir\\a.exe  x\t y", ["C:\\dir\\a.exe", "x", "y"]),
        ('"C:\\Program Files\\a.exe" -x "a b" c', ["C:\\Program Files\\a.exe", "-x", "a b", "c"]),
        ('a\\"b', ['a"b']),  # an escaped quote
        ('"a\\\\" b', ["a\\", "b"]),  # an escaped backslash before the closing quote
        ('"say ""hi"""', ['say "hi"']),  # "" inside quotes is a literal quote
        ('"" x', ["", "x"]),  # an empty argument
        ('"unterminated a b', ["unterminated a b"]),
        ("", []),
    ],
)
def test_command_line_is_split_like_windows(command_line: str, args: list[str]) -> None:
    assert _command_line_args(command_line) == args


@pytest.mark.parametrize(
    ("details", "data"),
    [
        ("DWORD (0x00000010)", {"type": "REG_DWORD", "strings": ["16"]}),
        ("QWORD (0x00000001-0x00000000)", {"type": "REG_QWORD", "strings": ["4294967296"]}),
        ("Binary Data", {"type": "REG_BINARY"}),
        ("C:\\evil.exe", {"type": "REG_SZ", "strings": ["C:\\evil.exe"]}),
        ("DWORD (zz)", {"type": "REG_SZ", "strings": ["DWORD (zz)"]}),
    ],
)
def test_registry_details(details: str, data: dict[str, Any]) -> None:
    assert _registry_data(details) == data


def test_event_data_values_are_strings_as_windows_renders_them() -> None:
    record = evtx_record(
        1,
        "Microsoft-Windows-Sysmon/Operational",
        {"ProcessId": 42, "Initiated": True, "Ratio": 0.5, "Empty": "", "Null": None, "Dash": "-"},
    )
    data = FORMAT.parse(record, CONTEXT)["winlog"]["event_data"]
    assert data == {"ProcessId": "42", "Initiated": "true", "Ratio": "0.5", "Dash": "-"}


def test_unnamed_data_become_params_and_user_data_keeps_its_element_name() -> None:
    record = evtx_record(1, "Application", {"Data": {"#text": ["a", "", "c"]}, "Binary": "00"})
    assert FORMAT.parse(record, CONTEXT)["winlog"]["event_data"] == {
        "param1": "a",
        "param3": "c",
        "Binary": "00",
    }
    record["Event"].pop("EventData")
    record["Event"]["UserData"] = {"LogFileCleared": {"#attributes": {"xmlns": "x"}, "A": "1"}}
    assert FORMAT.parse(record, CONTEXT)["winlog"]["user_data"] == {
        "A": "1",
        "xml_name": "LogFileCleared",
    }


def test_sigma_field_names_land_on_their_ecs_fields() -> None:
    """The fields pySigma's ecs_windows pipeline maps event data names to."""
    record = evtx_record(
        4663,
        "Security",
        {
            "SubjectUserName": "alice",
            "SubjectDomainName": "CORP",
            "SubjectUserSid": "S-1-5-21-1-2-3-1107",
            "SubjectLogonId": "0x5b3e2f1",
            "ProcessName": "C:\\Windows\\explorer.exe",
            "ProcessId": "0x1f4",
            "IpAddress": "192.0.2.1",
            "IpPort": "445",
        },
    )
    document = FORMAT.parse(record, CONTEXT)
    assert document["event"]["code"] == "4663"
    assert document["winlog"]["channel"] == "Security"
    assert document["winlog"]["provider_name"] == "Test-Provider"
    assert document["winlog"]["computer_name"] == "ws1"
    assert document["winlog"]["logon"]["id"] == "0x5b3e2f1"
    assert document["user"] == {"id": "S-1-5-21-1-2-3-1107", "name": "alice", "domain": "CORP"}
    assert document["process"] == {
        "pid": 500,
        "executable": "C:\\Windows\\explorer.exe",
        "name": "explorer.exe",
    }
    assert document["source"] == {"ip": "192.0.2.1", "port": 445}


def test_flat_export_without_zone_is_read_in_the_configured_zone() -> None:
    record = golden_records("flat_exports")[2]  # nxlog, EventTime "2024-03-05 17:20:11"
    in_shanghai = FORMAT.parse(record, ParseContext(timezone=ZoneInfo("Asia/Shanghai")))
    in_utc = FORMAT.parse(record, ParseContext(timezone=ZoneInfo("UTC")))
    assert in_shanghai["@timestamp"] == "2024-03-05T09:20:11.000Z"
    assert in_utc["@timestamp"] == "2024-03-05T17:20:11.000Z"


def test_winlogbeat_fields_already_present_are_kept() -> None:
    record = copy.deepcopy(golden_records("winlogbeat")[0])
    record["user"] = {"name": "from-winlogbeat"}
    record["source"] = {"ip": "198.51.100.1"}
    record["event"]["category"] = ["custom"]
    document = FORMAT.parse(record, CONTEXT)
    assert document["user"] == {"name": "from-winlogbeat"}
    assert document["source"]["ip"] == "198.51.100.1"
    assert document["source"]["port"] == 51234  # missing ECS fields are still filled in
    assert document["event"]["category"] == ["custom"]
    assert "original" not in document["event"]


def test_parse_does_not_change_its_input() -> None:
    record = golden_records("winlogbeat")[0]
    before = copy.deepcopy(record)
    FORMAT.parse(record, CONTEXT)
    assert record == before


ODD_VALUES = [None, True, 0, -1, 1.5, "", "-", "x", [], [1, "a"], {}, {"#text": None}, {"a": [{}]}]


def mutations(record: Any, rng: random.Random, count: int) -> list[Any]:
    """Copies of `record` with one value somewhere replaced by an odd one."""
    paths: list[list[Any]] = []

    def walk(value: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*path, key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, [*path, index])

    walk(record, [])
    results = []
    for _ in range(count):
        path = rng.choice(paths[1:])
        mutated = copy.deepcopy(record)
        target = mutated
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = rng.choice(ODD_VALUES)
        results.append(mutated)
    return results


@pytest.mark.parametrize(
    "name",
    [
        "evtx_security",
        "evtx_sysmon",
        "evtx_other",
        "evtx_handwritten",
        "winlogbeat",
        "flat_exports",
    ],
)
def test_odd_values_anywhere_give_an_event_or_a_parse_error(name: str) -> None:
    rng = random.Random(name)
    for record in golden_records(name):
        for mutated in mutations(record, rng, 40):
            try:
                document = FORMAT.parse(mutated, CONTEXT)
            except ParseError as error:
                assert error.reason
                continue
            json.dumps(document)


def test_deeply_nested_input_is_refused() -> None:
    deep: Any = "x"
    for _ in range(900):
        deep = {"a": deep}
    evtx_shaped = evtx_record(1, "Application", {"Deep": deep})
    with pytest.raises(ParseError, match="nested deeper than 16"):
        FORMAT.parse(evtx_shaped, CONTEXT)
    winlogbeat = {"@timestamp": "2024-01-01T00:00:00Z", "winlog": {"event_id": 1, "x": deep}}
    with pytest.raises(ParseError, match="nested deeper than 20"):
        FORMAT.parse(winlogbeat, CONTEXT)
    with pytest.raises(ParseError, match="invalid JSON"):
        FORMAT.parse('{"Event": ' * 100_000, CONTEXT)
