"""Hostile input through the whole ingest path into the real node: each case has a defined outcome.

Nothing is lost: every line read is indexed or written to the dead-letter file with a reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from collectors.file_ingest import file_records, ingest_records
from lianfang.settings import Settings
from lianfang.store import EventStore

VALID = '{"@timestamp":"2026-11-28T01:00:00Z","message":"ok %d"}'


def ingest_bytes(
    data: bytes, tmp_path: Path, settings: Settings, store: EventStore, name: str, **options: str
):
    path = tmp_path / name
    path.write_bytes(data)
    report, dead_letters = ingest_records(
        file_records(path), settings=settings, store=store, **options
    )
    store.refresh()
    dead = []
    if dead_letters.current_path.exists():
        dead = [json.loads(line) for line in dead_letters.current_path.read_text().splitlines()]
    return report, dead


def stored(store: EventStore) -> list[dict]:
    response = store.client.search(index=store.names.events_alias, size=100)
    return [hit["_source"] for hit in response["hits"]["hits"]]


def test_bom_invalid_utf8_binary_and_huge_lines(
    tmp_path: Path, settings: Settings, store: EventStore
) -> None:
    huge = b'{"@timestamp":"2026-11-28T01:00:00Z","message":"' + b"A" * (2 * 1024 * 1024) + b'"}'
    data = b"\n".join(
        [
            b"\xef\xbb\xbf" + (VALID % 1).encode(),  # BOM before the first line: stripped
            b'{"@timestamp":"2026-11-28T01:00:00Z","message":"bad \xff\xfe bytes"}',  # replaced by U+FFFD
            b"\x00\x01\x02\x03\xde\xad\xbe\xef binary garbage",  # not JSON: dead letter
            huge,  # cut at 1 MiB: no longer valid JSON, dead letter, the rest goes on
            (VALID % 2).encode(),
        ]
    )
    report, dead = ingest_bytes(
        data, tmp_path, settings, store, "hostile.ndjson", format_name="json"
    )
    assert report.read == 5
    assert report.indexed == 3
    assert report.read == report.indexed + report.dead_lettered
    messages = sorted(event["message"] for event in stored(store))
    assert messages == ["bad \ufffd\ufffd bytes", "ok 1", "ok 2"]
    reasons = [d["reason"] for d in dead]
    assert len(reasons) == 2 and all(r.startswith("json: invalid JSON") for r in reasons)
    assert len(dead[1]["input"]) == 1024 * 1024  # the cut line is kept, up to the bound


def test_deep_nesting_and_field_explosion(
    tmp_path: Path, settings: Settings, store: EventStore
) -> None:
    deep = '{"@timestamp":"2026-11-28T01:00:00Z","a":' + '{"b":' * 40 + "1" + "}" * 40 + "}"
    very_deep = '{"a":' * 5000 + "1" + "}" * 5000
    wide = json.dumps({"@timestamp": "2026-11-28T01:00:00Z", **{f"k{n}": n for n in range(5000)}})
    data = "\n".join([deep, very_deep, wide, VALID % 3]).encode()
    report, dead = ingest_bytes(
        data, tmp_path, settings, store, "nested.ndjson", format_name="json"
    )
    assert report.read == 4
    assert [d["reason"].split(":")[0] for d in dead] == ["json", "json"]
    assert "deeper than 20 levels" in dead[0]["reason"]
    assert (
        report.indexed == 2
    )  # the 5000-field document is stored; fields beyond the limit are not indexed
    mapping = store.client.indices.get_mapping(index=store.names.events_alias)
    fields = next(iter(mapping.values()))["mappings"]["properties"]
    assert len(fields) < 2100


def test_timestamps_far_in_the_future_or_past_are_filed_at_reception(
    tmp_path: Path, settings: Settings, store: EventStore
) -> None:
    lines = [
        '{"@timestamp":"2099-01-01T00:00:00Z","message":"future"}',
        '{"@timestamp":"1970-01-01T00:00:01Z","message":"past"}',
        '{"@timestamp":"9999-12-31T23:59:59Z","message":"far future"}',
    ]
    report, dead = ingest_bytes(
        "\n".join(lines).encode(), tmp_path, settings, store, "time.ndjson", format_name="json"
    )
    assert report.indexed == 3 and not dead
    for event in stored(store):
        assert "timestamp_out_of_range" in event["tags"]
        assert event["log"]["original_timestamp"][:4] in ("2099", "1970", "9999")
        assert event["@timestamp"][:4] == event["event"]["ingested"][:4]


def test_cef_and_leef_escaping_edge_cases(
    tmp_path: Path, settings: Settings, store: EventStore
) -> None:
    lines = [
        r"CEF:0|Vendor\|Pipe|Product\\Slash|1.0|100|Name with = sign|5|src=10.0.0.1 msg=a\=b c\\d\nnext line suser=li ming",
        "CEF:0|only|three|fields",
        "LEEF:2.0|Vendor|Product|1.0|ID42|^|src=10.0.0.2^usrName=wang^devTime=2026-11-28 10:00:00",
    ]
    report, dead = ingest_bytes("\n".join(lines).encode(), tmp_path, settings, store, "cef.log")
    assert report.read == 3
    assert report.indexed + report.dead_lettered == 3
    events = stored(store)
    cef = next(e for e in events if e.get("observer", {}).get("vendor") == "Vendor|Pipe")
    assert cef["observer"]["product"] == "Product\\Slash"
    assert cef["message"] == "a=b c\\d\nnext line"
    assert cef["source"]["user"]["name"] == "li ming"  # suser: a value runs to the next key
    assert any(d["input"] == "CEF:0|only|three|fields" for d in dead)
