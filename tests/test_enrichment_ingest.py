"""Ingest with the enrichment stages into the real index: nothing personal is stored unmasked.

The pipeline, the stages and the BulkWriter are composed here as collectors/file_ingest.py
composes them, with the stages run on every event between the normaliser and the writer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import Elasticsearch
from pydantic import SecretStr

from collectors.enrichment import build_enrichment_stages, dead_letter_file_for, enrich
from collectors.formats import get_format
from collectors.intel_hook import Indicator, IndicatorSet
from collectors.log_format import ParseContext
from collectors.masking import MaskingPolicy
from collectors.normalise import Normaliser
from collectors.pipeline import IngestPipeline
from lianfang.bulk_writer import BulkWriter
from lianfang.schema import Origin
from lianfang.settings import MaskingSettings, Settings
from lianfang.store import EventStore
from tests.test_masking import luhn_complete, make_id

EXAMPLE_ASSETS = Path(__file__).resolve().parents[1] / "config" / "assets.example.yaml"

ID_A = make_id("110105", "19900307", "123")
ID_B = make_id("440305", "19851120", "045")
ID_C = make_id("510104", "20010101", "882")
CARD = luhn_complete("622202123456789012")  # 19 digits
CARD_GROUPED = " ".join(luhn_complete("411111111111111")[i : i + 4] for i in range(0, 16, 4))
MOBILE_A = "13812345678"
MOBILE_B = "15987654321"
EMAIL_A = "zhang.wei@example.cn"
EMAIL_B = "li.si.1988@qq.com"

# Every value that must not reach the index or the dead letters, in each written form,
# and fragments that would still identify the person.
FORBIDDEN = [
    ID_A,
    ID_B,
    ID_C,
    ID_A[:17],
    ID_B[6:14],
    CARD,
    CARD[:12],
    CARD_GROUPED,
    CARD_GROUPED.replace(" ", ""),
    MOBILE_A,
    MOBILE_A[3:],
    "138-1234-5678",
    MOBILE_B,
    MOBILE_B[3:],
    EMAIL_A,
    "zhang.wei",
    EMAIL_B,
    "li.si.1988",
]


def _lines(now: datetime) -> list[str]:
    stamp = now.isoformat(timespec="milliseconds")

    def line(**document: Any) -> str:
        return json.dumps({"@timestamp": stamp, **document}, ensure_ascii=False)

    return [
        line(
            message=f"实名认证 身份证 {ID_A} 手机 {MOBILE_A}",
            labels={"case": "repeat-a"},
            source={"ip": "10.20.1.14"},
            destination={"ip": "185.220.101.9", "port": 443},
        ),
        line(
            message=f"再次认证 id={ID_A}",
            labels={"case": "repeat-b"},
            user={"email": EMAIL_A.upper(), "full_name": "张伟"},
        ),
        line(
            message="db audit",
            db={"statement": f"UPDATE citizen SET phone='+86 138-1234-5678' WHERE id_no='{ID_B}'"},
            labels={"case": "db", "contact": f"{MOBILE_B} / {EMAIL_B}"},
        ),
        line(
            message=f"payment card {CARD_GROUPED} declined",
            url={
                "original": f"/pay?card={CARD}&mail={EMAIL_B.replace('@', '%40')}",
                "full": f"http://phish.example/login?email={EMAIL_A}",
                "query": f"id={ID_C}&m={MOBILE_B}",
                "domain": "phish.example",
            },
            labels={"case": "web"},
        ),
        # Unparseable: goes to the dead letters at the parse stage, raw values inside.
        f'{{"@timestamp": "{stamp}", "message": "broken {ID_C} {MOBILE_A} {EMAIL_A}", ',
        # Parsed, then refused by the mapping (source.ip is no IP): an index-stage dead letter.
        line(message=f"bad ip from {EMAIL_A} {ID_C}", source={"ip": "not-an-ip"}),
    ]


def _ingest(settings: Settings, store: EventStore, lines: Iterable[str]) -> tuple[Any, Any]:
    store.install_templates()
    policy = MaskingPolicy.from_settings(settings)
    dead_letters = dead_letter_file_for(settings, None, policy)
    indicators = IndicatorSet(
        [
            Indicator("indicator--exfil", "ipv4-addr", "185.220.101.9", tlp="AMBER"),
            Indicator("indicator--phish", "url", "http://phish.example/login"),
        ]
    )
    stages = build_enrichment_stages(settings, None, indicators=indicators, masking=policy)
    pipeline = IngestPipeline(
        normaliser=Normaliser(keep_original=True),
        dead_letters=dead_letters,
        log_format=get_format("json"),
        context=ParseContext(timezone=ZoneInfo(settings.timezone)),
    )
    writer = BulkWriter(store.client, store, dead_letters)
    records = ((text, Origin("masking-test.ndjson", n * 1000)) for n, text in enumerate(lines))
    for event in pipeline.events(records):
        writer.add(enrich(event, stages))
    writer.flush()
    store.refresh()
    return pipeline.report, writer.report


@pytest.fixture
def enriched_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "masking_key": SecretStr("integration-test-masking-key-0001"),
            "masking": MaskingSettings(fields=["labels.contact"], redact_fields=["user.full_name"]),
            "asset_inventory_path": EXAMPLE_ASSETS,
        }
    )


def _all_sources(client: Elasticsearch, store: EventStore) -> list[dict[str, Any]]:
    response = client.search(index=store.names.events_alias, size=100, query={"match_all": {}})
    return [hit["_source"] for hit in response["hits"]["hits"]]


def test_no_personal_value_reaches_the_index_or_the_dead_letters(
    enriched_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    parse_report, write_report = _ingest(enriched_settings, store, _lines(now))
    assert parse_report.parse_failed == 1
    assert write_report.indexed == 4
    assert write_report.dead_lettered == 1

    sources = _all_sources(client, store)
    assert len(sources) == 4
    for source in sources:
        text = json.dumps(source, ensure_ascii=False)
        for value in FORBIDDEN:
            assert value not in text, (value, text)
            assert value.upper() not in text, (value, text)
        assert "event" in source and "original" in source["event"]  # kept, but masked

    # Searching: a terms query on every indexed field, and query_string over all fields.
    capabilities = client.field_caps(index=store.names.events_alias, fields="*")["fields"]
    searchable = sorted(
        name
        for name, kinds in capabilities.items()
        if any(
            kind in ("keyword", "text") and info.get("searchable") for kind, info in kinds.items()
        )
    )
    assert "message" in searchable and "db.statement" in searchable
    assert "labels.contact" in searchable and "url.query" in searchable
    terms = {
        "bool": {
            "should": [
                {"terms": {field: FORBIDDEN + [v.upper() for v in FORBIDDEN]}}
                for field in searchable
            ]
        }
    }
    assert client.count(index=store.names.events_alias, query=terms)["count"] == 0
    for value in FORBIDDEN:
        # The phrase, the words, and a substring wildcard (reaches inside keyword values).
        wildcard = "*" + re.sub(r"([^0-9A-Za-z])", r"\\\1", value) + "*"
        for query in (f'"{value}"', re.sub(r"[^0-9A-Za-z]", " ", value), wildcard):
            found = client.count(
                index=store.names.events_alias,
                query={
                    "query_string": {
                        "query": query,
                        "fields": ["*"],
                        "lenient": True,
                        "default_operator": "AND",
                    }
                },
            )["count"]
            assert found == 0, (value, query)

    # The dead letters (one parse failure, one mapping rejection) are masked too.
    dead_files = sorted(enriched_settings.dead_letter_dir.glob("*.jsonl"))
    dead_text = "".join(path.read_text(encoding="utf-8") for path in dead_files)
    assert dead_text.count("\n") == 2
    for value in FORBIDDEN:
        assert value not in dead_text, value
    assert "[ID:" in dead_text and "[EMAIL:" in dead_text and "[MOBILE:" in dead_text


def test_tokens_correlate_and_other_stages_are_indexed(
    enriched_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)
    _ingest(enriched_settings, store, _lines(now))
    by_case = {source["labels"]["case"]: source for source in _all_sources(client, store)}

    token = re.compile(r"\[ID:[0-9a-f]{12}\]")
    first = token.findall(by_case["repeat-a"]["message"])
    second = token.findall(by_case["repeat-b"]["message"])
    assert first and first == second  # the same person, recognisable across events
    assert token.findall(by_case["db"]["db"]["statement"]) != first
    # The token is searchable like any value: both events come back.
    hits = client.search(
        index=store.names.events_alias,
        query={"match_phrase": {"message": first[0]}},
    )["hits"]["hits"]
    assert {hit["_source"]["labels"]["case"] for hit in hits} == {"repeat-a", "repeat-b"}

    repeat_b = by_case["repeat-b"]
    assert repeat_b["user"]["email"].startswith("[EMAIL:") and repeat_b["user"]["email"].endswith(
        ":example.cn]"
    )
    assert re.fullmatch(r"\[REDACTED:[0-9a-f]{12}\]", repeat_b["user"]["full_name"])
    db = by_case["db"]
    assert db["db"]["statement"].count("[MOBILE:138*:") == 1
    assert db["labels"]["contact"].startswith("[MOBILE:159*:")

    # Assets: the department came from the inventory (no department was given).
    repeat_a = by_case["repeat-a"]
    assert repeat_a["organization"]["id"] == "finance"
    assert repeat_a["source"]["asset"]["criticality"] == "critical"
    critical = client.count(
        index=store.names.events_alias, query={"term": {"source.asset.criticality": "critical"}}
    )["count"]
    assert critical == 1

    # Intel: matches recorded, and the matched URL (with an e-mail in it) masked.
    enrichments = {e["matched"]["id"]: e for e in repeat_a["threat"]["enrichments"]}
    assert enrichments["indicator--exfil"]["matched"]["field"] == "destination.ip"
    web = {e["matched"]["id"]: e for e in by_case["web"]["threat"]["enrichments"]}
    atomic = web["indicator--phish"]["matched"]["atomic"]
    assert atomic.startswith("http://phish.example/login?email=[EMAIL:")
