"""Pure parts of the intelligence side: pattern plans, confidence decay, feeds, signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sharing.feed_import import FeedError, FeedOptions, classify, load_feed, refang
from sharing.indicator_confidence import ConfidenceRule, effective_confidence, indicator_state
from sharing.indicator_matching import IntelLookup, lookup_for, observed_data_for_event
from sharing.intel_store import IndicatorRecord
from sharing.signed_bundles import (
    TamperedBundle,
    UnsignedBundle,
    UntrustedKey,
    generate_keypair,
    load_private_key,
    sign_file,
    trusted_keys,
    verify_file,
)
from sharing.stix_ids import deterministic_id, parse_stix_timestamp, stix_timestamp
from sharing.stix_patterns import plan_pattern
from sharing.stix_validation import validate_objects
from sharing.taxii_sync import may_send
from sharing.tlp import TLP_2_IDS, TlpLevel

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RULE = ConfidenceRule(
    threshold=30, default=50, bonus=5, bonus_cap=30, grace_days=30, half_life_days=30
)
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---------------------------------------------------------------------- ids and timestamps


def test_deterministic_ids_are_stable_uuid4_shaped() -> None:
    first = deterministic_id("indicator", "a", "b")
    assert first == deterministic_id("indicator", "a", "b")
    assert first != deterministic_id("indicator", "a", "c")
    assert first.split("--")[1][14] == "4"  # the version nibble


def test_stix_timestamps_round_trip() -> None:
    assert stix_timestamp("2026-11-28T10:00:00.123456+08:00") == "2026-11-28T02:00:00.123Z"
    assert parse_stix_timestamp("2026-11-28T02:00:00.123456789Z").microsecond == 123456
    with pytest.raises(ValueError):
        parse_stix_timestamp("yesterday")


# ---------------------------------------------------------------------- pattern plans


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("[ipv4-addr:value = '203.0.113.7' OR ipv4-addr:value = '203.0.113.8']", "atomic"),
        (
            "[ipv4-addr:value ISSUBSET '198.51.100.0/24'] OR [domain-name:value = 'Evil.EXAMPLE.']",
            "atomic",
        ),
        (f"[file:hashes.'SHA-256' = '{SHA256.upper()}']", "atomic"),
        ("[email-addr:value = 'Phish@Evil.example']", "atomic"),
        (
            "[network-traffic:dst_ref.value = '203.0.113.5' AND network-traffic:dst_port = 4444]",
            "query",
        ),
        ("[domain-name:value LIKE '%.evil.example']", "query"),
        ("[url:value MATCHES '^https?://x\\\\.example/']", "query"),
        ("[file:name NOT = 'a.exe']", "query"),
        ("[url:value MATCHES '(?i)evil']", "matcher"),
        (
            "[ipv4-addr:value = '1.2.3.4'] FOLLOWEDBY [domain-name:value = 'x.example'] WITHIN 300 SECONDS",
            "matcher",
        ),
        ("[ipv4-addr:value = '1.2.3.4'] REPEATS 5 TIMES", "matcher"),
        ("[windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\Run']", "unsupported"),
        ("[ipv4-addr:value = '1.2.3.4'", "unsupported"),
    ],
)
def test_pattern_plans(pattern: str, kind: str) -> None:
    plan = plan_pattern(pattern)
    assert plan.kind == kind, plan
    if kind == "atomic":
        assert plan.atomics and plan.query is None
    elif kind in ("query", "matcher"):
        assert plan.query is not None
    else:
        assert plan.reason


def test_atomic_values_are_normalised() -> None:
    plan = plan_pattern(
        "[ipv4-addr:value ISSUBSET '198.51.100.0/24'] OR [domain-name:value = 'Evil.EXAMPLE.']"
    )
    assert [(a.type, a.value) for a in plan.atomics] == [
        ("ipv4-addr", "198.51.100.0/24"),
        ("domain-name", "evil.example"),
    ]


def test_compiled_query_shapes() -> None:
    plan = plan_pattern(
        "[network-traffic:dst_ref.value = '203.0.113.5' AND network-traffic:dst_port = 4444]"
    )
    assert plan.query == {
        "bool": {
            "filter": [
                {"term": {"destination.ip": "203.0.113.5"}},
                {"term": {"destination.port": 4444}},
            ]
        }
    }
    like = plan_pattern("[domain-name:value LIKE '%.evil.example']")
    assert {"wildcard": {"dns.question.name": {"value": "*.evil.example"}}} in like.query["bool"][
        "should"
    ]
    # A non-address on an address field can never match: no invalid query is sent.
    never = plan_pattern("[ipv4-addr:value = 'foo' AND ipv4-addr:value != 'bar']")
    assert "match_none" in json.dumps(never.query)


def test_other_pattern_languages_are_reported() -> None:
    plan = plan_pattern("alert tcp any any -> any 80", pattern_type="snort")
    assert plan.kind == "unsupported" and "snort" in plan.reason


# ---------------------------------------------------------------------- confidence


def test_confidence_grows_with_sightings_and_decays_with_silence() -> None:
    assert effective_confidence(50, 0, NOW, NOW, RULE) == 50
    assert effective_confidence(50, 2, NOW, NOW, RULE) == 60
    assert effective_confidence(50, 100, NOW, NOW, RULE) == 80  # the bonus is capped
    assert effective_confidence(None, 0, NOW, NOW, RULE) == 50  # default
    assert effective_confidence(80, 0, NOW - timedelta(days=30), NOW, RULE) == 80  # grace
    assert effective_confidence(80, 0, NOW - timedelta(days=60), NOW, RULE) == 40  # one half-life
    assert effective_confidence(80, 0, NOW - timedelta(days=90), NOW, RULE) == 20


def test_indicator_states_in_precedence_order() -> None:
    def state(**kw: object) -> str:
        args = {
            "revoked": False,
            "valid_from": NOW - timedelta(days=1),
            "valid_until": None,
            "confidence": 50,
        }
        args.update(kw)
        return indicator_state(now=NOW, rule=RULE, **args)  # type: ignore[arg-type]

    assert state() == "active"
    assert state(revoked=True, valid_until=NOW - timedelta(days=1)) == "revoked"
    assert state(valid_until=NOW) == "expired"
    assert state(valid_from=NOW + timedelta(hours=1)) == "pending"
    assert state(confidence=29) == "inactive"


# ---------------------------------------------------------------------- ingest lookup


def record(
    pattern: str, stix_id: str = "indicator--00000000-0000-4000-8000-000000000001"
) -> IndicatorRecord:
    return IndicatorRecord(
        stix_id=stix_id,
        modified="2026-11-28T00:00:00.000Z",
        pattern=pattern,
        plan=plan_pattern(pattern),
        state="active",
        effective_confidence=75,
        confidence=75,
        producer=None,
        source="feed:test",
        tlp="amber",
        name="test",
        sightings=0,
        last_sighting=None,
        hunted_version=None,
    )


def test_lookup_matches_addresses_domains_hashes_and_emails() -> None:
    lookup = lookup_for(
        [
            record(
                "[ipv4-addr:value = '203.0.113.77']",
                "indicator--00000000-0000-4000-8000-000000000001",
            ),
            record(
                "[domain-name:value = 'evil.example']",
                "indicator--00000000-0000-4000-8000-000000000002",
            ),
            record(
                f"[file:hashes.'SHA-256' = '{SHA256}']",
                "indicator--00000000-0000-4000-8000-000000000003",
            ),
            record(
                "[email-addr:value = 'phish@evil.example']",
                "indicator--00000000-0000-4000-8000-000000000004",
            ),
            record(
                "[network-traffic:dst_port = 1]", "indicator--00000000-0000-4000-8000-000000000005"
            ),
        ]
    )
    assert len(lookup) == 4  # the query plan is no set entry
    event = {
        "source": {"ip": "203.0.113.77"},
        "dns": {"question": {"name": "cdn.evil.example"}},
        "file": {"hash": {"sha256": SHA256.upper()}},
        "email": {"from": {"address": "Phish@evil.example"}},
    }
    found = {(m.indicator.id[-1], m.field) for m in lookup.match(event)}
    assert found == {
        ("1", "source.ip"),
        ("2", "dns.question.name"),
        ("3", "file.hash.sha256"),
        ("4", "email.from.address"),
    }
    assert (
        lookup.match(
            {"source": {"ip": "203.0.113.78"}, "dns": {"question": {"name": "evil.example.org"}}}
        )
        == []
    )
    [enrichment] = [m.enrichment() for m in lookup.match({"source": {"ip": "203.0.113.77"}})]
    assert enrichment["indicator"]["marking"] == {"tlp": "AMBER"}
    assert enrichment["indicator"]["confidence"] == "High"


def test_lookup_records_values_that_do_not_fit() -> None:
    from collectors.intel_hook import Indicator

    lookup = IntelLookup([Indicator("indicator--x", "file", "not-a-hash")])
    assert len(lookup) == 0 and lookup.refused


def test_event_as_observed_data_for_the_matcher() -> None:
    document = {
        "@timestamp": "2026-11-28T01:00:00.000Z",
        "event": {"id": "e1"},
        "source": {"ip": "10.1.1.1", "port": 50000},
        "destination": {"ip": "203.0.113.5", "port": 4444},
        "network": {"transport": "TCP"},
        "url": {"full": "http://evil.example/x"},
    }
    bundle = observed_data_for_event(document)
    observed, *scos = bundle["objects"]
    assert observed["number_observed"] == 1 and len(observed["object_refs"]) == len(scos)
    traffic = next(s for s in scos if s["type"] == "network-traffic")
    assert traffic["dst_port"] == 4444 and traffic["protocols"] == ["tcp"]
    from stix2matcher.matcher import match

    pattern = "[network-traffic:dst_ref.value = '203.0.113.5' AND network-traffic:dst_port = 4444]"
    assert match(pattern, [bundle], stix_version="2.1")
    assert not match("[network-traffic:dst_port = 22]", [bundle], stix_version="2.1")


# ---------------------------------------------------------------------- feeds


def test_refang_and_classify() -> None:
    assert refang("hxxp://evil[.]example/x") == "http://evil.example/x"
    assert classify("1.2.3[.]4").value == "1.2.3.4"  # type: ignore[union-attr]
    assert classify("198.51.100.0/24").value == "198.51.100.0/24"  # type: ignore[union-attr]
    assert classify("2001:db8::1").type == "ipv6-addr"  # type: ignore[union-attr]
    assert classify(SHA256).hash_name == "SHA-256"  # type: ignore[union-attr]
    assert classify("bad guy") is None and classify("no_tld") is None


def options(**kw: object) -> FeedOptions:
    values: dict[str, object] = {"name": "cert-list", "tlp": TlpLevel.GREEN, "confidence": 60}
    values.update(kw)
    return FeedOptions(**values)  # type: ignore[arg-type]


def test_txt_feed(tmp_path: Path) -> None:
    feed = tmp_path / "iocs.txt"
    feed.write_text(
        "# CERT list\n203.0.113.9\nevil[.]example  # C2\nhxxp://evil.example/a\n"
        f"{SHA256}\nphish@evil.example\nnot an ioc\n\n; comment\n"
    )
    load = load_feed(str(feed), "auto", options())
    indicators = [o for o in load.objects if o["type"] == "indicator"]
    assert load.format == "txt" and len(indicators) == 5
    assert load.problems == ["line 7: 'not an ioc' is no recognised indicator"]
    assert all(i["object_marking_refs"] == [TLP_2_IDS[TlpLevel.GREEN]] for i in indicators)
    assert validate_objects(load.objects).valid
    again = load_feed(str(feed), "auto", options())
    assert again.objects == load.objects  # deterministic ids and timestamps


def test_csv_feed_with_header(tmp_path: Path) -> None:
    feed = tmp_path / "iocs.csv"
    feed.write_text(
        "indicator,type,description,confidence,first_seen,expires,tlp\n"
        "203.0.113.10,ip,scanner,80,2026-11-01,2026-12-31,clear\n"
        "evil.example,domain,c2,,2026-11-02,,\n"
        "???,,junk,,,,\n"
    )
    load = load_feed(str(feed), "auto", options())
    indicators = {o["name"]: o for o in load.objects if o["type"] == "indicator"}
    assert set(indicators) == {"203.0.113.10", "evil.example"}
    first = indicators["203.0.113.10"]
    assert first["confidence"] == 80 and first["description"] == "scanner"
    assert first["valid_from"].startswith("2026-11-01") and first["valid_until"].startswith(
        "2026-12-31"
    )
    assert first["object_marking_refs"] == [TLP_2_IDS[TlpLevel.CLEAR]]
    assert indicators["evil.example"]["confidence"] == 60
    assert len(load.problems) == 1 and "row 4" in load.problems[0]
    assert validate_objects(load.objects).valid


def test_csv_feed_without_header(tmp_path: Path) -> None:
    feed = tmp_path / "plain.csv"
    feed.write_text("2026-11-01,203.0.113.11,scanner\n2026-11-01,evil2.example,c2\n")
    load = load_feed(str(feed), "csv", options())
    assert sorted(o["name"] for o in load.objects if o["type"] == "indicator") == [
        "203.0.113.11",
        "evil2.example",
    ]


def misp_event(event_uuid: str) -> dict[str, object]:
    return {
        "Event": {
            "uuid": event_uuid,
            "info": "Phishing wave against provincial agencies",
            "date": "2026-11-20",
            "timestamp": "1795132800",
            "publish_timestamp": "1795136400",
            "Orgc": {"name": "CERT-Example", "uuid": "5a1b2c3d-0000-4000-8000-00000000000a"},
            "Tag": [{"name": "tlp:amber"}],
            "Attribute": [
                {
                    "uuid": "6a1b2c3d-0000-4000-8000-000000000001",
                    "type": "ip-dst",
                    "value": "203.0.113.20",
                    "to_ids": True,
                    "timestamp": "1795132800",
                },
                {
                    "uuid": "6a1b2c3d-0000-4000-8000-000000000002",
                    "type": "domain|ip",
                    "value": "evil3.example|203.0.113.21",
                    "to_ids": True,
                },
                {
                    "uuid": "6a1b2c3d-0000-4000-8000-000000000003",
                    "type": "email-src",
                    "value": "phish@evil3.example",
                    "to_ids": True,
                    "Tag": [{"name": "tlp:green"}],
                },
                {
                    "uuid": "6a1b2c3d-0000-4000-8000-000000000004",
                    "type": "comment",
                    "value": "ignored",
                    "to_ids": False,
                },
                {
                    "uuid": "6a1b2c3d-0000-4000-8000-000000000005",
                    "type": "md5",
                    "value": "nothex",
                    "to_ids": True,
                },
            ],
            "Object": [
                {
                    "Attribute": [
                        {
                            "uuid": "6a1b2c3d-0000-4000-8000-000000000006",
                            "type": "filename|sha256",
                            "value": f"a.exe|{SHA256}",
                            "to_ids": True,
                        }
                    ]
                }
            ],
        }
    }


def test_misp_feed_folder(tmp_path: Path) -> None:
    event_uuid = "4a1b2c3d-0000-4000-8000-000000000001"
    (tmp_path / "manifest.json").write_text(
        json.dumps({event_uuid: {"info": "x"}, "4a1b2c3d-0000-4000-8000-0000000000ff": {}})
    )
    (tmp_path / f"{event_uuid}.json").write_text(json.dumps(misp_event(event_uuid)))
    load = load_feed(str(tmp_path), "auto", options())
    assert load.format == "misp"
    indicators = {o["id"]: o for o in load.objects if o["type"] == "indicator"}
    assert len(indicators) == 4
    both = indicators["indicator--6a1b2c3d-0000-4000-8000-000000000002"]
    assert (
        both["pattern"]
        == "[domain-name:value = 'evil3.example'] OR [ipv4-addr:value = '203.0.113.21']"
    )
    assert indicators["indicator--6a1b2c3d-0000-4000-8000-000000000003"]["object_marking_refs"] == [
        TLP_2_IDS[TlpLevel.GREEN]
    ]
    assert indicators["indicator--6a1b2c3d-0000-4000-8000-000000000001"]["object_marking_refs"] == [
        TLP_2_IDS[TlpLevel.AMBER]
    ]
    [report] = [o for o in load.objects if o["type"] == "report"]
    assert report["id"] == f"report--{event_uuid}" and set(indicators) <= set(report["object_refs"])
    assert any("nothex" in p for p in load.problems)  # unusable attribute reported
    assert any("0000000000ff" in p for p in load.problems)  # missing event file reported
    assert validate_objects(load.objects).valid


def test_stix_bundle_feed_and_errors(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"type": "bundle", "id": "bundle--1", "objects": [{"type": "x"}]}))
    assert load_feed(str(bundle)).objects == [{"type": "x"}]
    with pytest.raises(FeedError):
        load_feed(str(tmp_path / "missing.txt"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(FeedError):
        load_feed(str(broken), "stix")


# ---------------------------------------------------------------------- signatures and TLP


def test_signed_bundles_refuse_tampering_unsigned_and_untrusted(tmp_path: Path) -> None:
    private_path, public_path = generate_keypair(tmp_path / "keys")
    assert oct(private_path.stat().st_mode & 0o777) == "0o600"
    bundle = tmp_path / "slice.json"
    bundle.write_text(json.dumps({"type": "bundle", "id": "bundle--x", "objects": []}))
    keys = trusted_keys([tmp_path / "keys"])
    with pytest.raises(UnsignedBundle):
        verify_file(bundle, keys)
    sign_file(bundle, load_private_key(private_path))
    assert verify_file(bundle, keys).key_path == public_path
    generate_keypair(tmp_path / "other", "other")
    with pytest.raises(UntrustedKey):
        verify_file(bundle, trusted_keys([tmp_path / "other"]))
    bundle.write_text(bundle.read_text().replace("[]", "[ ]"))
    with pytest.raises(TamperedBundle):
        verify_file(bundle, keys)
    sign_file(bundle, load_private_key(private_path))
    signature = bundle.with_name(bundle.name + ".sig")
    data = json.loads(signature.read_text())
    data["signature"] = data["signature"][:-4] + "AAA="
    signature.write_text(json.dumps(data))
    with pytest.raises(TamperedBundle):
        verify_file(bundle, keys)
    with pytest.raises(Exception, match="exists"):
        generate_keypair(tmp_path / "keys")


def test_tlp_ceiling_for_peers() -> None:
    assert may_send(TlpLevel.GREEN, TlpLevel.AMBER)
    assert may_send(TlpLevel.AMBER, TlpLevel.AMBER)
    assert not may_send(TlpLevel.AMBER_STRICT, TlpLevel.AMBER)
    assert not may_send(TlpLevel.RED, TlpLevel.RED)  # RED never leaves
    assert not may_send(None, TlpLevel.AMBER)  # unmarked is not assumed shareable
