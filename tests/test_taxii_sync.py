"""TAXII client sync against the OASIS reference server (medallion), in both directions.

A department's alert becomes validated STIX, is published under its TLP, pushed to the
reference server, pulled by a second deployment (another province), sighted there, and the
sighting comes back and raises the indicator's confidence at the producer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from elasticsearch import Elasticsearch
from taxii2client.v21 import Collection

from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from detection.alerts import Alert, AlertStore
from detection.attack_catalogue import AttackCatalogue
from lianfang.cli import main
from lianfang.settings import Settings, TaxiiPeer, TaxiiPeerCollection
from lianfang.store import EventStore, IndexNames
from sharing.indicator_confidence import ConfidenceRule
from sharing.intel_hunt import IntelHunter
from sharing.intel_publish import Publisher
from sharing.intel_store import IntelStore
from sharing.stix_identities import department_identity_id
from sharing.taxii_sync import PeerConnection, PeerUnavailable, TaxiiSync, sync_state_path

USER, PASSWORD = "lianfang", "medallion-test-password"
PASSWORD_ENV = "LIANFANG_TEST_MEDALLION_PASSWORD"
ACCEPT = {"Accept": "application/taxii+json;version=2.1"}
SHARED = str(uuid.UUID("8f3e5a4c-1d2b-4c6e-9a7f-0b1c2d3e4f50"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def medallion(tmp_path: Path) -> Iterator[str]:
    """The OASIS reference TAXII server, memory backend, on a free loopback port."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = {
        "/discovery": {
            "title": "medallion under test",
            "description": "OASIS reference TAXII 2.1 server",
            "default": f"{base}/api1/",
            "api_roots": [f"{base}/api1/"],
        },
        "api1": {
            "information": {
                "title": "api1",
                "description": "shared intelligence",
                "versions": ["application/taxii+json;version=2.1"],
                "max_content_length": 9765625,
            },
            "status": [],
            "collections": [
                {
                    "id": SHARED,
                    "title": "shared",
                    "description": "both directions",
                    "can_read": True,
                    "can_write": True,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": [],
                }
            ],
        },
    }
    (tmp_path / "medallion-data.json").write_text(json.dumps(data))
    config = {
        "backend": {
            "module": "medallion.backends.memory_backend",
            "module_class": "MemoryBackend",
            "filename": str(tmp_path / "medallion-data.json"),
        },
        "users": {USER: PASSWORD},
        "taxii": {"max_page_size": 50},
    }
    (tmp_path / "medallion.json").write_text(json.dumps(config))
    log = (tmp_path / "medallion.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from medallion.scripts.run import main; main()",
         "--host", "127.0.0.1", "--port", str(port), str(tmp_path / "medallion.json")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(
                    f"{base}/taxii2/", auth=(USER, PASSWORD), headers=ACCEPT, timeout=2
                ).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (tmp_path / "medallion.log").read_text()
            assert time.monotonic() < deadline, "medallion did not start"
            time.sleep(0.1)
        yield f"{base}/api1/"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def with_peer(settings: Settings, api_root: str, province: str, **changes: Any) -> Settings:
    peer = TaxiiPeer(
        name="hub",
        api_root=api_root,
        username=USER,
        password_env=PASSWORD_ENV,
        collections=[TaxiiPeerCollection(id=SHARED, direction="both")],
        max_tlp="amber",
        page_size=20,
    )
    intel = settings.intel.model_copy(
        update={"province_name": province, "peers": [peer], "sync_backoff_seconds": 0.01, **changes}
    )
    return settings.model_copy(update={"intel": intel})


def brute_force_alert(now: datetime) -> Alert:
    return Alert(
        rule_id="ssh-brute-force",
        rule_name="SSH brute force",
        rule_type="behavioural",
        severity="high",
        entity_type="source.ip",
        entity_value="203.0.113.77",
        first_seen=now - timedelta(hours=2),
        last_seen=now - timedelta(hours=1),
        explanation="412 failed SSH logins from 203.0.113.77",
        organization_id="gov-cloud",
        organization_name="省政务云平台",
        sector="government",
        count=412,
        techniques=AttackCatalogue.load().techniques(["T1110.001"]),
        entity_fields={"source.ip": "203.0.113.77"},
    )


def red_alert(now: datetime) -> Alert:
    return Alert(
        rule_id="port-scan-vertical",
        rule_name="Vertical port scan",
        rule_type="behavioural",
        severity="critical",
        entity_type="source.ip",
        entity_value="198.51.100.23",
        first_seen=now - timedelta(hours=3),
        last_seen=now - timedelta(hours=2),
        explanation="scan of scada-hmi-01",
        organization_id="energy",
        count=600,
        techniques=AttackCatalogue.load().techniques(["T1046"]),
        entity_fields={"source.ip": "198.51.100.23"},
    )


@pytest.mark.slow
def test_alert_reaches_the_peer_and_the_sighting_comes_back(
    client: Elasticsearch,
    settings: Settings,
    medallion: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    producer = with_peer(settings, medallion, "Province A", department_tlp={"energy": "red"})
    peer = with_peer(
        settings.model_copy(
            update={"index_prefix": f"{settings.index_prefix}-b", "home_dir": tmp_path / "b"}
        ),
        medallion,
        "Province B",
    )
    now = datetime.now(UTC)

    # Province A: a department's alert, published under its TLP and pushed.
    alerts = AlertStore(client, producer.index_prefix)
    alerts.install()
    alert, secret = brute_force_alert(now), red_alert(now)
    alerts.upsert([alert, secret], now)
    published = Publisher(producer, client).publish_alerts([alert.id, secret.id])
    assert published.refused == [] and len(published.published) == 2
    [pushed] = TaxiiSync(producer, client).push()
    assert pushed.error is None and pushed.objects > 0 and pushed.failures == []
    assert pushed.held_back > 0  # the energy department's RED objects stayed home
    served = Collection(
        f"{medallion}collections/{SHARED}/", user=USER, password=PASSWORD
    ).get_objects()
    served_types = {o["type"] for o in served["objects"]}
    assert {
        "indicator",
        "sighting",
        "identity",
        "attack-pattern",
        "marking-definition",
    } <= served_types
    assert "198.51.100.23" not in json.dumps(served)

    # Province B pulls it: the indicator is active there.
    [pulled] = TaxiiSync(peer, client).pull()
    assert (
        pulled.error is None
        and pulled.intake.quarantined == 0
        and pulled.intake.indicators_new == 1
    )
    peer_store = IntelStore(client, peer.index_prefix, ConfidenceRule.from_settings(peer.intel))
    [received] = list(peer_store.indicators(("active",)))
    assert received.source == "taxii:hub" and received.tlp == "amber"
    assert received.producer == department_identity_id("gov-cloud", "Province A")

    # B's finance department talks to the attacker: the hunt raises an alert and a sighting.
    events = tmp_path / "b-events.ndjson"
    moment = (now - timedelta(minutes=30)).isoformat()
    events.write_text(
        json.dumps(
            {
                "@timestamp": moment,
                "source": {"ip": "10.20.0.5"},
                "destination": {"ip": "203.0.113.77", "port": 22},
            }
        )
        + "\n"
    )
    event_store = EventStore(client, IndexNames(peer.index_prefix))
    ingest_records(file_records(events), settings=peer, store=event_store, format_name="json",
                   department=Department("finance", "省财政厅", "finance"))  # fmt: skip
    event_store.refresh()
    hunt = IntelHunter(peer, client).run()
    assert hunt.alerts_created == 1 and hunt.sightings_queued == 1
    [sent_back] = TaxiiSync(peer, client).push()
    assert sent_back.error is None and sent_back.failures == []

    # A pulls the sighting: the producer's indicator gains a sighting and confidence.
    producer_store = IntelStore(
        client, producer.index_prefix, ConfidenceRule.from_settings(producer.intel)
    )
    [indicator_id] = [
        r.stix_id for r in producer_store.indicators(None) if "203.0.113.77" in r.pattern
    ]
    before = producer_store.get(indicator_id)
    assert before is not None and before.sightings == 1  # the department's own sighting
    [back] = TaxiiSync(producer, client).pull()
    assert back.error is None and back.intake.sightings >= 1
    after = producer_store.get(indicator_id)
    assert (
        after is not None
        and after.sightings == 2
        and after.effective_confidence > before.effective_confidence
    )
    sightings = client.search(
        index=producer_store.sightings_index, query={"term": {"sighting_of_ref": indicator_id}}
    )
    where = {
        ref for hit in sightings["hits"]["hits"] for ref in hit["_source"]["where_sighted_refs"]
    }
    assert department_identity_id("finance", "Province B") in where

    # Bookmarks survive a restart: a new sync pulls nothing new; without them, all is a duplicate.
    assert json.loads(sync_state_path(producer).read_text())["hub"][SHARED]["added_after"]
    [quiet] = TaxiiSync(producer, client).pull()
    assert quiet.objects == 0
    sync_state_path(producer).unlink()
    [again] = TaxiiSync(producer, client).pull()
    assert (
        again.objects > 0 and again.intake.stored == 0 and again.intake.duplicates == again.objects
    )


def test_invalid_objects_from_a_peer_are_quarantined(
    client: Elasticsearch, settings: Settings, medallion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    configured = with_peer(settings, medallion, "Province C")
    collection = Collection(f"{medallion}collections/{SHARED}/", user=USER, password=PASSWORD)
    good = {
        "type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.uuid4()}",
        "created": "2026-11-01T00:00:00.000Z", "modified": "2026-11-01T00:00:00.000Z",
        "pattern": "[domain-name:value = 'c2.evil.example']", "pattern_type": "stix",
        "valid_from": "2026-11-01T00:00:00Z", "confidence": 60,
    }  # fmt: skip
    bad = {
        **good,
        "id": f"indicator--{uuid.uuid4()}",
        "pattern": "[domain-name:value = ",
        "confidence": 101,
    }
    collection.add_objects(json.dumps({"objects": [good, bad]}))
    [report] = TaxiiSync(configured, client).pull()
    assert report.intake.stored == 1 and report.intake.quarantined == 1
    store = IntelStore(
        client, configured.index_prefix, ConfidenceRule.from_settings(configured.intel)
    )
    [entry] = store.quarantine.list()
    assert entry["object_id"] == bad["id"] and entry["source"] == "taxii:hub"
    assert any("confidence" in reason for reason in entry["reasons"])
    assert store.get(good["id"]) is not None and store.get(bad["id"]) is None


def test_retries_back_off_and_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = TaxiiPeer(name="flaky", api_root="http://127.0.0.1:9/api1/")
    waits: list[float] = []
    connection = PeerConnection(
        peer, retries=3, backoff_seconds=0.5, timeout_seconds=1, sleep=waits.append
    )
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise requests.ConnectionError("refused")
        return "ok"

    assert connection.call(flaky) == "ok" and waits == [0.5, 1.0]

    def forbidden() -> str:
        response = requests.Response()
        response.status_code = 403
        raise requests.HTTPError("403", response=response)

    waits.clear()
    with pytest.raises(PeerUnavailable):
        connection.call(forbidden)
    assert waits == []  # a refusal is not retried

    def down() -> str:
        raise requests.ConnectionError("down")

    with pytest.raises(PeerUnavailable):
        connection.call(down)
    assert waits == [0.5, 1.0, 2.0]


def test_unreachable_peer_is_reported(
    client: Elasticsearch, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    configured = with_peer(
        settings, f"http://127.0.0.1:{free_port()}/api1/", "Province D", sync_retries=1
    )
    [report] = TaxiiSync(configured, client, sleep=lambda _: None).pull()
    assert report.error is not None and "hub" in report.error
    assert (
        not sync_state_path(configured).exists()
        or "added_after" not in sync_state_path(configured).read_text()
    )


def run_cli(settings: Settings, *args: str) -> Any:
    env = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": settings.masking_key.get_secret_value(),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.mark.slow
def test_offline_exchange_with_signed_bundles(
    client: Elasticsearch, settings: Settings, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    alerts = AlertStore(client, settings.index_prefix)
    alerts.install()
    alert = brute_force_alert(now)
    alerts.upsert([alert], now)
    published = run_cli(settings, "intel", "publish", "--alert", alert.id, "--json")
    assert published.exit_code == 0, published.output
    keys = run_cli(settings, "intel", "keygen", "--out", str(tmp_path / "keys"), "--json")
    assert keys.exit_code == 0, keys.output
    out = tmp_path / "slice.json"
    exported = run_cli(
        settings,
        "intel",
        "export",
        "--out",
        str(out),
        "--sign",
        str(tmp_path / "keys" / "lianfang.key"),
        "--json",
    )
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["objects"] > 0 and out.with_name("slice.json.sig").exists()

    isolated = settings.model_copy(
        update={"index_prefix": f"{settings.index_prefix}-ics", "home_dir": tmp_path / "ics"}
    )
    trusted = str(tmp_path / "keys" / "lianfang.pub")
    imported = run_cli(isolated, "intel", "import", str(out), "--trusted-key", trusted, "--json")
    assert imported.exit_code == 0, imported.output
    result = json.loads(imported.output)
    assert result["signed_by"] and result["indicators_new"] == 1 and result["quarantined"] == 0

    tampered = tmp_path / "tampered.json"
    tampered.write_text(out.read_text().replace("203.0.113.77", "203.0.113.78"))
    tampered.with_name("tampered.json.sig").write_text(out.with_name("slice.json.sig").read_text())
    refused = run_cli(isolated, "intel", "import", str(tampered), "--trusted-key", trusted)
    assert refused.exit_code == 2 and "changed after it was signed" in refused.output
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(out.read_text())
    refused = run_cli(
        isolated, "intel", "import", str(unsigned), "--require-signature", "--trusted-key", trusted
    )
    assert refused.exit_code == 2 and "unsigned" in refused.output
    status = run_cli(isolated, "intel", "status", "--json")
    assert status.exit_code == 0 and json.loads(status.output)["indicators"] == 1
