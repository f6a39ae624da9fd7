"""Unit tests of the kernel's pure logic: schema helpers, search bodies, settings, line reading."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collectors.inputs.text_lines import read_lines
from lianfang.event_search import (
    EventQuery,
    FieldFilter,
    InvalidQuery,
    build_search_body,
    decode_cursor,
    encode_cursor,
)
from lianfang.schema import Origin, document_id, format_timestamp, get_field, nest_dotted_keys
from lianfang.scoped_store import in_scope, restrict_query
from lianfang.settings import load_settings
from lianfang.store import IndexNames, events_template_body, mapping_properties


def test_document_ids_are_deterministic_and_position_sensitive() -> None:
    first = document_id(Origin("a.log", 10), "same line")
    assert first == document_id(Origin("a.log", 10), "same line")
    assert first != document_id(Origin("a.log", 11), "same line")  # a repeated line is a new event
    assert first != document_id(Origin("b.log", 10), "same line")


def test_nest_dotted_keys_merges_with_nested_objects() -> None:
    nested = nest_dotted_keys({"source.ip": "1.2.3.4", "source": {"port": 22}, "@timestamp": "t"})
    assert nested == {"source": {"ip": "1.2.3.4", "port": 22}, "@timestamp": "t"}
    assert get_field(nested, "source.port") == 22
    assert get_field(nested, "source.nothing", "default") == "default"


def test_timestamps_are_utc_milliseconds_and_naive_is_refused() -> None:
    moment = datetime.fromisoformat("2026-11-28T10:00:00.123456+08:00")
    assert format_timestamp(moment) == "2026-11-28T02:00:00.123Z"
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(datetime(2026, 1, 1))


def test_search_body_has_filters_range_text_and_stable_sort() -> None:
    query = EventQuery(
        start=datetime(2026, 11, 28, tzinfo=UTC),
        end=datetime(2026, 11, 29, tzinfo=UTC),
        filters=(FieldFilter.parse("source.ip:10.0.0.1"),),
        text="failed password",
        size=50,
    )
    body = build_search_body(query)
    clauses = body["query"]["bool"]["filter"]
    assert {"term": {"source.ip": "10.0.0.1"}} in clauses
    assert {
        "range": {
            "@timestamp": {"gte": "2026-11-28T00:00:00.000Z", "lt": "2026-11-29T00:00:00.000Z"}
        }
    } in clauses
    assert body["query"]["bool"]["must"][0]["simple_query_string"]["query"] == "failed password"
    assert [next(iter(s)) for s in body["sort"]] == ["@timestamp", "event.id"]


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor(["2026-11-28T00:00:00Z", "abc"])) == [
        "2026-11-28T00:00:00Z",
        "abc",
    ]
    with pytest.raises(InvalidQuery):
        decode_cursor("not a cursor")
    with pytest.raises(InvalidQuery):
        decode_cursor(encode_cursor([1, 2, 3]))


@pytest.mark.parametrize("text", ["nocolon", ":value", "field:", "password.hash:x"])
def test_filters_refuse_malformed_and_unknown_fields(text: str) -> None:
    with pytest.raises(InvalidQuery):
        FieldFilter.parse(text)


def test_template_maps_ecs_types_and_limits_field_explosion() -> None:
    body = events_template_body(IndexNames("demo"))
    assert body["index_patterns"] == ["demo-events-*"]
    assert body["template"]["aliases"] == {"demo-events": {}}
    settings = body["template"]["settings"]
    assert settings["mapping.total_fields.ignore_dynamic_beyond_limit"] is True
    properties = mapping_properties({"source.ip": "ip", "@timestamp": "date"})
    assert properties == {
        "@timestamp": {"type": "date"},
        "source": {"properties": {"ip": {"type": "ip"}}},
    }


def test_daily_index_names_round_trip() -> None:
    names = IndexNames("lf")
    index = names.events_index_for(datetime(2026, 1, 2).date())
    assert index == "lf-events-2026.01.02"
    assert names.day_of_events_index(index) == datetime(2026, 1, 2).date()
    assert names.day_of_events_index("lf-events-whatever") is None
    assert names.day_of_events_index("other-events-2026.01.02") is None


def test_index_names_are_the_deployed_ones() -> None:
    # Renaming any of these would orphan the data of running deployments.
    names = IndexNames("lf")
    assert {
        "every_index": names.every_index,
        "alerts": names.alerts,
        "exceptions": names.exceptions,
        "incidents": names.incidents,
        "principals": names.principals,
        "audit_template": names.audit_template,
        "audit_pattern": names.audit_pattern,
        "audit_index": names.audit_index_for("2026-11-28T10:00:00.000Z"),
        "disclosures": names.disclosures,
        "intel": names.intel,
        "intel_objects": names.intel_objects,
        "intel_sightings": names.intel_sightings,
        "intel_quarantine": names.intel_quarantine,
        "intel_outbox": names.intel_outbox,
        "taxii_objects": names.taxii_objects,
        "taxii_status": names.taxii_status,
        "detection_state": names.detection_state,
    } == {
        "every_index": "lf-*",
        "alerts": "lf-alerts",
        "exceptions": "lf-exceptions",
        "incidents": "lf-incidents",
        "principals": "lf-principals",
        "audit_template": "lf-audit",
        "audit_pattern": "lf-audit-*",
        "audit_index": "lf-audit-2026.11",
        "disclosures": "lf-disclosures",
        "intel": "lf-intel",
        "intel_objects": "lf-intel-objects",
        "intel_sightings": "lf-intel-sightings",
        "intel_quarantine": "lf-intel-quarantine",
        "intel_outbox": "lf-intel-outbox",
        "taxii_objects": "lf-taxii-objects",
        "taxii_status": "lf-taxii-status",
        "detection_state": "lf-detection-state",
    }
    scratch = names.rule_test_names("abc")
    assert scratch.prefix == "lf-ruletest-abc"
    assert scratch.events_alias == "lf-ruletest-abc-events"


def test_settings_come_from_environment_then_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lianfang.toml"
    config.write_text('index_prefix = "from-toml"\ntimezone = "UTC"\n')
    monkeypatch.setenv("LIANFANG_CONFIG", str(config))
    monkeypatch.setenv("LIANFANG_TIMEZONE", "Asia/Urumqi")
    settings = load_settings()
    assert settings.index_prefix == "from-toml"
    assert settings.timezone == "Asia/Urumqi"  # the environment wins over the file
    assert load_settings(index_prefix="explicit").index_prefix == "explicit"


def test_lines_keep_offsets_replace_bad_utf8_strip_bom_and_cut_huge_lines() -> None:
    data = b"\xef\xbb\xbffirst\nbad \xff\xfe bytes\r\n\n" + b"x" * 3000 + b"\nlast"
    lines = list(read_lines(io.BytesIO(data), max_bytes=1000))
    assert [line.text[:5] for line in lines] == ["first", "bad \ufffd", "xxxxx", "last"]
    assert lines[0].offset == 0
    assert lines[1].offset == len(b"\xef\xbb\xbffirst\n")
    assert lines[2].truncated and len(lines[2].text) == 1000
    assert lines[3].offset == len(data) - 4


def test_scoping_wraps_every_query_and_hides_other_departments() -> None:
    assert restrict_query({"term": {"a": 1}}, None) == {"term": {"a": 1}}
    assert restrict_query(None, ("finance",)) == {
        "bool": {
            "must": [{"match_all": {}}],
            "filter": [{"terms": {"organization.id": ["finance"]}}],
        }
    }
    assert restrict_query(None, ()) == {
        "bool": {"must": [{"match_all": {}}], "filter": [{"terms": {"organization.id": []}}]}
    }
    assert in_scope({"organization": {"id": "finance"}}, ("finance",))
    assert not in_scope({"organization": {"id": "energy"}}, ("finance",))
    assert not in_scope({}, ("finance",))
    assert in_scope({}, None)
