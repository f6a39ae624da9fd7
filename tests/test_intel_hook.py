"""The threat-intelligence hook: indicator kinds, ECS enrichments, the stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from collectors.intel_hook import (
    MATCH_TYPE,
    Indicator,
    IndicatorLookup,
    IndicatorMatch,
    IndicatorSet,
    IntelStage,
    normalise_url,
)
from lianfang.schema import Event, Origin

MD5 = "44d88612fea8a8f36de82e1278abb02f"
SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"


@pytest.fixture
def indicators() -> IndicatorSet:
    return IndicatorSet(
        [
            Indicator(
                "indicator--ip", "ipv4-addr", "185.220.101.9", provider="CNCERT", tlp="AMBER"
            ),
            Indicator("indicator--net", "ipv4-addr", "203.0.113.0/24", confidence="High"),
            Indicator("indicator--v6", "ipv6-addr", "2001:db8:bad::/48"),
            Indicator("indicator--domain", "domain-name", "Evil.Example."),
            Indicator("indicator--url", "url", "HTTP://Phish.Example:80/login"),
            Indicator("indicator--md5", "file", MD5.upper()),
            Indicator("indicator--sha256", "file", SHA256),
        ]
    )


def _fields(matches: list[IndicatorMatch]) -> set[tuple[str, str, str]]:
    return {(m.indicator.id, m.field, m.atomic) for m in matches}


def test_each_kind_matches_its_fields(indicators: IndicatorSet) -> None:
    document = {
        "source": {"ip": "203.0.113.77"},
        "destination": {"ip": "185.220.101.9", "domain": "cdn.evil.example"},
        "related": {"ip": ["10.0.0.1", "2001:db8:bad:1::2"], "hash": [SHA256]},
        "dns": {"question": {"name": "EVIL.example"}},
        "url": {"full": "http://phish.example/login?user=x"},
        "file": {"hash": {"md5": MD5}},
    }
    assert _fields(indicators.match(document)) == {
        ("indicator--net", "source.ip", "203.0.113.77"),
        ("indicator--ip", "destination.ip", "185.220.101.9"),
        ("indicator--v6", "related.ip", "2001:db8:bad:1::2"),
        ("indicator--domain", "destination.domain", "cdn.evil.example"),
        ("indicator--domain", "dns.question.name", "EVIL.example"),
        ("indicator--url", "url.full", "http://phish.example/login?user=x"),
        ("indicator--md5", "file.hash.md5", MD5),
        ("indicator--sha256", "related.hash", SHA256),
    }


def test_near_misses_do_not_match(indicators: IndicatorSet) -> None:
    document = {
        "source": {"ip": "203.0.114.1"},
        "destination": {"ip": "185.220.101.90", "domain": "notevil.example"},
        "dns": {"question": {"name": "evil.example.com"}},
        "url": {"full": "http://phish.example/login2"},
        "file": {"hash": {"md5": MD5[:-1] + "0"}},
    }
    assert indicators.match(document) == []


def test_enrichment_is_ecs_shaped(indicators: IndicatorSet) -> None:
    by_id = {
        m.indicator.id: m.enrichment()
        for m in indicators.match(
            {
                "destination": {"ip": "185.220.101.9"},
                "source": {"ip": "203.0.113.5"},
                "dns": {"question": {"name": "a.evil.example"}},
                "url": {"original": "http://phish.example/login"},
                "file": {"hash": {"md5": MD5}},
            }
        )
    }
    assert by_id["indicator--ip"] == {
        "indicator": {
            "type": "ipv4-addr",
            "id": "indicator--ip",
            "name": "185.220.101.9",
            "ip": "185.220.101.9",
            "provider": "CNCERT",
            "marking": {"tlp": "AMBER"},
        },
        "matched": {
            "atomic": "185.220.101.9",
            "field": "destination.ip",
            "id": "indicator--ip",
            "type": MATCH_TYPE,
        },
    }
    network = by_id["indicator--net"]["indicator"]
    assert "ip" not in network and network["name"] == "203.0.113.0/24"
    assert network["confidence"] == "High"
    assert by_id["indicator--domain"]["indicator"]["url"] == {"domain": "evil.example"}
    assert by_id["indicator--url"]["indicator"]["url"] == {"full": "HTTP://Phish.Example:80/login"}
    assert by_id["indicator--md5"]["indicator"]["file"] == {"hash": {"md5": MD5}}
    assert by_id["indicator--md5"]["matched"]["field"] == "file.hash.md5"


def test_stage_appends_once_and_is_idempotent(indicators: IndicatorSet) -> None:
    event = Event(
        document={
            "destination": {"ip": "185.220.101.9"},
            "threat": {"enrichments": [{"matched": {"id": "other", "field": "x", "atomic": "y"}}]},
        },
        origin=Origin("test", 0),
    )
    stage = IntelStage(indicators)
    stage(event)
    stage(event)
    enrichments = event.document["threat"]["enrichments"]
    assert [entry["matched"]["id"] for entry in enrichments] == ["other", "indicator--ip"]


def test_empty_set_is_a_no_op() -> None:
    document = {"destination": {"ip": "185.220.101.9"}}
    event = Event(document=dict(document), origin=Origin("test", 0))
    assert IntelStage(IndicatorSet())(event).document == {**document, "event": {"id": event.id}}
    assert len(IndicatorSet()) == 0


def test_any_lookup_fits_the_protocol() -> None:
    class Fixed:
        def match(self, document: Mapping[str, Any]) -> list[IndicatorMatch]:
            return [
                IndicatorMatch(
                    Indicator("i", "domain-name", "x.example"), "url.domain", "x.example"
                )
            ]

    lookup: IndicatorLookup = Fixed()
    event = IntelStage(lookup)(Event(document={}, origin=Origin("t", 0)))
    assert event.document["threat"]["enrichments"][0]["matched"]["field"] == "url.domain"


@pytest.mark.parametrize(
    ("indicator", "message"),
    [
        (Indicator("a", "ipv4-addr", "10.0.0.300"), "not an IP"),
        (Indicator("b", "file", "abc"), "MD5"),
        (Indicator("c", "file", "z" * 32), "MD5"),
        (Indicator("d", "email-addr", "a@b.cn"), "not one of"),
        (Indicator("e", "domain-name", "http://x/"), "not a domain"),
    ],
)
def test_malformed_indicators_are_refused(indicator: Indicator, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndicatorSet([indicator])


def test_url_normalisation() -> None:
    assert normalise_url("HTTPS://Example.COM:443/A?b=C#frag") == "https://example.com/A?b=C"
    assert normalise_url("http://example.com:8080") == "http://example.com:8080/"
    assert normalise_url("http://[2001:db8::1]:80/x") == "http://[2001:db8::1]/x"
    assert normalise_url("not a url") == "not a url"
    assert normalise_url("http://[bad/") == "http://[bad/"


def test_several_indicators_for_one_value_all_match() -> None:
    indicators = IndicatorSet(
        [
            Indicator("feed-a", "ipv4-addr", "198.51.100.23"),
            Indicator("feed-b", "ipv4-addr", "198.51.100.23"),
            Indicator("feed-c", "ipv4-addr", "198.51.100.0/24"),
            Indicator("feed-d", "ipv4-addr", "198.51.100.0/24"),
        ]
    )
    assert len(indicators) == 4
    matches = indicators.match({"source": {"ip": "198.51.100.23"}})
    assert sorted(m.indicator.id for m in matches) == ["feed-a", "feed-b", "feed-c", "feed-d"]
