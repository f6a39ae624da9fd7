"""TAXII building blocks without Elasticsearch: TLP policy (exhaustively), timestamps,
paging tokens, filter parameters, media types, object validation, configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stix2.v21 import TLP_AMBER, TLP_GREEN, TLP_RED, TLP_WHITE

from api.taxii_http import TaxiiError, accepts_taxii, is_taxii_content, parse_filters
from lianfang.principals import Principal, Role
from sharing.object_store import ALL_VERSIONS, VersionFilter
from sharing.object_validation import (
    InvalidObject,
    UnknownValidator,
    validate_minimal,
    validator_named,
)
from sharing.taxii_collections import DEFAULT_CONFIG, TaxiiConfigError, load_taxii_config
from sharing.taxii_paging import InvalidNext, PagePosition, decode_next, encode_next, fingerprint
from sharing.taxii_timestamps import InvalidTimestamp, format_micros, parse_timestamp
from sharing.tlp import (
    TLP_2_EXTENSION,
    TLP_2_IDS,
    PublicationTarget,
    TlpLevel,
    UnknownTlpLevel,
    marking_definition,
    may_receive,
    parse_level,
    publication_decision,
    tlp_of,
)

C, G, A, S, R = (
    TlpLevel.CLEAR,
    TlpLevel.GREEN,
    TlpLevel.AMBER,
    TlpLevel.AMBER_STRICT,
    TlpLevel.RED,
)


def target(members=(), readers=(), community=False, department=None) -> PublicationTarget:
    return PublicationTarget(community, department, frozenset(members), frozenset(readers))


FIN, ENERGY = "department:finance", "department:energy"
TARGETS = {
    "community": target(readers=["*"], community=True),
    "finance_own": target([FIN], [FIN], department="finance"),
    "finance_own_province_reads": target(
        [FIN], [FIN, "role:province_analyst", "role:administrator"], department="finance"
    ),
    "energy_own": target([ENERGY], [ENERGY], department="energy"),
    "group_fin_energy": target([FIN, ENERGY], [FIN, ENERGY]),
    "group_energy_partner": target([ENERGY, "partner:grid"], [ENERGY, "partner:grid"]),
    "group_with_outside_readers": target([FIN], [FIN, "role:sharing_partner"]),
    "finance_unnamed": target([], [FIN], department="finance"),
    "community_owned_by_finance": target([FIN], [FIN], community=True, department="finance"),
}
# Which levels each publisher may publish into each target: the policy written out by hand.
EXPECTED = {
    "community": {"finance": {C, G}, "energy": {C, G}, None: {C, G}},
    "finance_own": {"finance": {C, G, A, S, R}, "energy": {C, G, A}, None: {C, G, A}},
    "finance_own_province_reads": {
        "finance": {C, G, A, S, R},
        "energy": {C, G, A},
        None: {C, G, A},
    },
    "energy_own": {"finance": {C, G, A}, "energy": {C, G, A, S, R}, None: {C, G, A}},
    "group_fin_energy": {"finance": {C, G, A, S}, "energy": {C, G, A, S}, None: {C, G, A}},
    "group_energy_partner": {"finance": {C, G, A}, "energy": {C, G, A, S}, None: {C, G, A}},
    "group_with_outside_readers": {"finance": {C, G}, "energy": {C, G}, None: {C, G}},
    "finance_unnamed": {"finance": {C, G, R}, "energy": {C, G}, None: {C, G}},
    "community_owned_by_finance": {"finance": {C, G}, "energy": {C, G}, None: {C, G}},
}


@pytest.mark.parametrize("target_name", sorted(TARGETS))
@pytest.mark.parametrize("publisher", ["finance", "energy", None])
@pytest.mark.parametrize("level", list(TlpLevel))
def test_publication_policy_exhaustively(
    target_name: str, publisher: str | None, level: TlpLevel
) -> None:
    decision = publication_decision(level, TARGETS[target_name], publisher)
    expected = level in EXPECTED[target_name][publisher]
    assert decision.allowed is expected, (target_name, publisher, level, decision.reason)
    # A refusal always says why; an admission never carries a reason.
    assert bool(decision.reason) is (not expected)
    if not expected:
        assert level.label in decision.reason


def test_red_is_only_received_inside_its_department() -> None:
    assert may_receive(R, "finance", "finance")
    assert not may_receive(R, "finance", "energy")
    assert not may_receive(R, "finance", None)
    assert not may_receive(R, None, None)
    assert all(may_receive(level, "finance", None) for level in (C, G, A, S, None))


def test_tlp_1_ids_come_from_stix2_and_tlp_2_objects_are_as_published() -> None:
    assert tlp_of({"object_marking_refs": [TLP_WHITE.id]}) is C
    assert tlp_of({"object_marking_refs": [TLP_GREEN.id]}) is G
    assert tlp_of({"object_marking_refs": [TLP_AMBER.id]}) is A
    assert tlp_of({"object_marking_refs": [TLP_RED.id]}) is R
    for level, marking_id in TLP_2_IDS.items():
        definition = marking_definition(level)
        assert definition.id == marking_id
        assert definition.name == level.label
        assert definition.extensions[TLP_2_EXTENSION]["tlp_2_0"] == level.value
        assert tlp_of({"object_marking_refs": [marking_id]}) is level
        assert tlp_of({"id": marking_id, "type": "marking-definition"}) is C


def test_effective_level_is_the_most_restrictive_marking() -> None:
    assert tlp_of({}) is None
    assert (
        tlp_of(
            {"object_marking_refs": ["marking-definition--00000000-0000-4000-8000-000000000000"]}
        )
        is None
    )
    assert tlp_of({"object_marking_refs": [TLP_2_IDS[G], TLP_2_IDS[S]]}) is S
    granular = {
        "object_marking_refs": [TLP_2_IDS[C]],
        "granular_markings": [{"marking_ref": TLP_RED.id, "selectors": ["name"]}],
    }
    assert tlp_of(granular) is R


@pytest.mark.parametrize(
    ("text", "level"),
    [("clear", C), ("WHITE", C), ("TLP:AMBER+STRICT", S), (" red ", R), ("tlp:green", G)],
)
def test_parse_level(text: str, level: TlpLevel) -> None:
    assert parse_level(text) is level


def test_parse_level_rejects_unknown() -> None:
    with pytest.raises(UnknownTlpLevel) as caught:
        parse_level("purple")
    assert caught.value.text == "purple"


def test_timestamps_compare_exactly_whatever_their_precision() -> None:
    assert (
        parse_timestamp("2016-01-01T01:01:01.000Z").key
        == parse_timestamp("2016-01-01T01:01:01Z").key
    )
    assert (
        parse_timestamp("2016-01-01T01:01:01.5Z").key
        == parse_timestamp("2016-01-01T01:01:01.500000000Z").key
    )
    assert (
        parse_timestamp("2016-01-01T01:01:01.000000001Z").key
        > parse_timestamp("2016-01-01T01:01:01Z").key
    )
    early, late = parse_timestamp("2016-01-01T01:01:01Z"), parse_timestamp("2016-01-01T01:01:01.1Z")
    assert late.micros - early.micros == 100_000 and late.key > early.key
    assert (
        format_micros(parse_timestamp("2024-02-29T23:59:59.123456Z").micros)
        == "2024-02-29T23:59:59.123456Z"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2016-01-01",
        "2016-01-01T01:01:01",
        "2016-01-01T01:01:01+00:00",
        "2016-02-30T00:00:00Z",
        "2016-01-01T24:00:00Z",
        "\uff12016-01-01T00:00:00Z",  # a full-width digit: int() reads it, STIX does not
        "x",
        5,
        None,
    ],
)
def test_invalid_timestamps(text: object) -> None:
    with pytest.raises(InvalidTimestamp):
        parse_timestamp(text)


def test_next_tokens_round_trip_and_are_bound_to_their_filters() -> None:
    owner = fingerprint("objects", "c1", (None, (), ("indicator",)))
    position = PagePosition(1_700_000_000_123_456, 42, "abc")
    token = encode_next(position, owner)
    assert decode_next(token, owner) == position
    with pytest.raises(InvalidNext, match="other filters"):
        decode_next(token, fingerprint("objects", "c1", (None, (), ("malware",))))
    for garbage in ("", "%%%", "bm90IGpzb24", encode_next(position, owner)[:-3]):
        with pytest.raises(InvalidNext):
            decode_next(garbage, owner)


def params(**values: str) -> list[tuple[str, str]]:
    return list(values.items())


MATCH = frozenset({"id", "type", "version", "spec_version"})


def test_filters_default_to_the_latest_version_and_the_cap() -> None:
    filters = parse_filters([], MATCH, 100)
    assert filters.limit == 100 and filters.versions == VersionFilter() and filters.next is None
    assert parse_filters([("limit", "5000")], MATCH, 100).limit == 100
    assert parse_filters([("limit", "7")], MATCH, 100).limit == 7


def test_filters_parse_every_match_field() -> None:
    filters = parse_filters(
        [
            ("match[id]", "indicator--1,malware--2"),
            ("match[type]", "indicator"),
            ("match[version]", "first,2016-01-01T01:01:01Z,last"),
            ("match[spec_version]", "2.1"),
            ("added_after", "2016-01-01T00:00:00.5Z"),
            ("match[colour]", "red"),  # unknown fields are ignored
            ("other", "x"),
        ],
        MATCH,
        100,
    )
    assert filters.ids == ("indicator--1", "malware--2")
    assert filters.types == ("indicator",)
    assert filters.versions.first and filters.versions.last
    assert filters.versions.keys == (parse_timestamp("2016-01-01T01:01:01Z").key,)
    assert filters.spec_versions == ("2.1",)
    assert filters.added_after_us == parse_timestamp("2016-01-01T00:00:00.5Z").micros
    assert parse_filters([("match[version]", "all")], MATCH, 10).versions == ALL_VERSIONS
    # Fields the endpoint does not support are ignored.
    assert parse_filters([("match[type]", "x")], frozenset({"version"}), 10).types == ()


@pytest.mark.parametrize(
    "bad",
    [
        [("limit", "0")],
        [("limit", "ten")],
        [("limit", "1"), ("limit", "2")],
        [("match[type]", "a"), ("match[type]", "b")],
        [("match[type]", "a,,b")],
        [("match[type]", "a, b")],
        [("match[id]", "x,x")],
        [("match[version]", "all,last")],
        [("match[version]", "first,first")],
        [("match[version]", "yesterday")],
        [("match[version]", "2016-01-01T01:01:01Z,2016-01-01T01:01:01.000Z")],
        [("match[spec_version]", "two")],
        [("added_after", "2016-01-01")],
        [("added_after", "2016-01-01T00:00:00Z"), ("added_after", "2016-01-02T00:00:00Z")],
    ],
)
def test_malformed_filters_are_400(bad: list[tuple[str, str]]) -> None:
    with pytest.raises(TaxiiError) as caught:
        parse_filters(bad, MATCH, 100)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("application/taxii+json;version=2.1", True),
        ("application/taxii+json; version=2.1", True),
        ("application/taxii+json", True),
        ("application/json, application/taxii+json;version=2.1;q=0.5", True),
        ("application/taxii+json;version=2.1;q=0", False),
        ("application/taxii+json;version=2.0", False),
        ("application/vnd.oasis.taxii+json; version=2.0", False),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_negotiation(header: str | None, accepted: bool) -> None:
    assert accepts_taxii(header) is accepted


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("application/taxii+json;version=2.1", True),
        ("application/taxii+json", True),
        ("application/taxii+json;version=2.1;charset=utf-8", True),
        ("application/taxii+json;charset=latin-1", False),
        ("application/taxii+json;version=2.0", False),
        ("application/json", False),
        ("application/stix+json;version=2.1", False),
        (None, False),
    ],
)
def test_content_type(header: str | None, ok: bool) -> None:
    assert is_taxii_content(header) is ok


INDICATOR = {
    "type": "indicator",
    "spec_version": "2.1",
    "id": "indicator--c410e480-e42b-47d1-9476-85307c12bcbf",
    "created": "2018-05-27T12:02:41.312Z",
    "modified": "2018-05-27T12:02:41.312Z",
}


@pytest.mark.parametrize(
    "valid",
    [
        INDICATOR,
        {
            "type": "ipv4-addr",
            "id": "ipv4-addr--ff26c055-6336-5bc5-b98d-13d6226742dd",
            "value": "198.51.100.3",
        },
        json.loads(marking_definition(TlpLevel.RED).serialize()),
    ],
)
def test_valid_objects(valid: dict) -> None:
    validate_minimal(dict(valid))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"type": "Indicator"}, "type"),
        ({"type": "x"}, "type"),
        ({"id": None}, "id is missing"),
        ({"id": "malware--c410e480-e42b-47d1-9476-85307c12bcbf"}, "id must be"),
        ({"id": "indicator--not-a-uuid"}, "UUID"),
        # 32 hexadecimal digits and four hyphens, but not in RFC 4122's places.
        ({"id": "indicator--c410e480-e42b47d1-9476-85307c12-bcbf"}, "UUID"),
        ({"id": "indicator--{c410e480-e42b-47d1-9476-85307c12bcbf}"}, "UUID"),
        ({"spec_version": None}, "spec_version is missing"),
        ({"spec_version": "2.0"}, "not accepted"),
        ({"modified": "yesterday"}, "modified is not"),
        ({"modified": None}, "modified is missing"),
        ({"modified": "2017-01-01T00:00:00Z"}, "earlier than created"),
    ],
)
def test_invalid_objects(change: dict, reason: str) -> None:
    candidate = {**INDICATOR, **change}
    candidate = {k: v for k, v in candidate.items() if v is not None}
    with pytest.raises(InvalidObject, match=reason):
        validate_minimal(candidate)


def test_validators_are_found_by_name() -> None:
    assert validator_named("minimal") is validate_minimal
    with pytest.raises(UnknownValidator):
        validator_named("strictest")


def test_default_configuration_has_a_community_and_one_collection_per_department() -> None:
    config = load_taxii_config(None)
    assert [c.alias for c in config.collections if c.community] == ["community"]
    departments = {c.department for c in config.collections if not c.community}
    assert departments == {"gov-cloud", "finance", "energy", "transport"}
    finance = config.collection("finance")
    assert finance is not None and config.collection(finance.id) is finance
    analyst = Principal("fin", Role.DEPARTMENT_ANALYST, "finance")
    other = Principal("en", Role.DEPARTMENT_ANALYST, "energy")
    partner = Principal("p", Role.SHARING_PARTNER, "finance")  # a partner is not the department
    province = Principal("pa", Role.PROVINCE_ANALYST, None)
    admin = Principal("ad", Role.ADMINISTRATOR, None)
    assert finance.can_read_for(analyst) and finance.can_write_for(analyst)
    assert not finance.visible_to(other) and not finance.visible_to(partner)
    assert finance.can_read_for(province) and not finance.can_write_for(province)
    assert finance.can_read_for(admin) and finance.can_write_for(admin)
    community = config.collection("community")
    assert (
        community is not None and community.can_write_for(partner) and community.can_read_for(other)
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[[collections]]\nid = "not-a-uuid"\ntitle = "x"\n', "UUID"),
        (
            '[[collections]]\nid = "aa46b726-f70f-16db-ad03-e5ad46538be3"\ntitle = "x"\n',
            "version 4",
        ),
        (
            '[[collections]]\nid = "aa46b726-f70f-46db-ad03-e5ad46538be3"\ntitle = "x"\nalias = "a"\n'
            '[[collections]]\nid = "7f826f94-b58e-4e90-8f52-5824fcb53080"\ntitle = "y"\nalias = "a"\n',
            "aliases must be unique",
        ),
        (
            '[[collections]]\nid = "aa46b726-f70f-46db-ad03-e5ad46538be3"\ntitle = "x"\ncan_read = ["everyone"]\n',
            "access entry",
        ),
        (
            '[[collections]]\nid = "aa46b726-f70f-46db-ad03-e5ad46538be3"\ntitle = "x"\nmembers = ["role:administrator"]\n',
            "named organisations",
        ),
        ('[server]\nunmarked_tlp = "purple"\n', "purple"),
        ('[server]\nvalidator = "nope"\n', "validator"),
        ("this is = = not toml", "TOML"),
    ],
)
def test_bad_configuration_is_refused_with_its_path(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "taxii.toml"
    path.write_text(text)
    with pytest.raises(TaxiiConfigError, match=problem) as caught:
        load_taxii_config(path)
    assert caught.value.path == path


def test_yaml_configuration_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "taxii.yaml"
    path.write_text("api_root:\n  name: feeds\ncollections: []\n")
    assert load_taxii_config(path).api_root.name == "feeds"
    with pytest.raises(TaxiiConfigError, match="cannot be read"):
        load_taxii_config(tmp_path / "missing.toml")
    assert DEFAULT_CONFIG.is_file()
