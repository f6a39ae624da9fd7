"""The store against the real node: template, mappings, dead letters, idempotence, retention."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from pathlib import Path

from elasticsearch import Elasticsearch

from lianfang.bulk_writer import BulkWriter
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event, Origin
from lianfang.settings import Settings
from lianfang.store import EventStore, delete_prefix

DAY = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)


def make_event(number: int, **fields: object) -> Event:
    document = {
        "@timestamp": DAY.isoformat().replace("+00:00", "Z"),
        "event": {"kind": "event", "dataset": "test"},
        "message": f"event number {number}",
        "source": {"ip": f"10.0.0.{number % 250 + 1}"},
        **fields,
    }
    return Event(document=document, origin=Origin("test-input", number))


def writer_for(store: EventStore, settings: Settings, **options: object) -> BulkWriter:
    return BulkWriter(store.client, store, DeadLetterFile(settings.dead_letter_dir), **options)


def count(client: Elasticsearch, store: EventStore) -> int:
    store.refresh()
    return client.count(index=store.names.events_alias)["count"]


def test_template_is_installed_once_with_intended_mappings(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    assert store.install_templates() is True
    assert store.install_templates() is False
    writer_for(store, settings).add_all([make_event(1, custom={"anything": "goes"})])
    index = store.index_for(DAY)
    properties = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert properties["@timestamp"]["type"] == "date"
    assert properties["source"]["properties"]["ip"]["type"] == "ip"
    assert properties["event"]["properties"]["id"]["type"] == "keyword"
    assert properties["message"]["type"] == "text"
    assert properties["event"]["properties"]["original"]["index"] is False
    assert properties["custom"]["properties"]["anything"]["type"] == "keyword"
    aliases = client.indices.get_alias(index=index)[index]["aliases"]
    assert store.names.events_alias in aliases


def test_field_explosion_does_not_reject_the_document(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    store.install_templates()
    wide = {f"field_{n}": "x" for n in range(3000)}
    report = writer_for(store, settings).add_all([make_event(1, wide=wide)])
    assert report.indexed == 1
    assert count(client, store) == 1


def test_rejected_document_goes_to_dead_letter_and_batch_mates_are_indexed(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    store.install_templates()
    events = [make_event(n) for n in range(10)]
    events[4].document["source"]["ip"] = "not-an-ip-address"
    report = writer_for(store, settings).add_all(events)
    assert report.indexed == 9
    assert report.dead_lettered == 1
    assert count(client, store) == 9
    dead = [
        json.loads(line)
        for line in DeadLetterFile(settings.dead_letter_dir).current_path.read_text().splitlines()
    ]
    assert len(dead) == 1
    assert dead[0]["stage"] == "index"
    assert dead[0]["offset"] == 4
    assert (
        "document_parsing_exception" in dead[0]["reason"] or "mapper_parsing" in dead[0]["reason"]
    )
    assert dead[0]["input"]["source"]["ip"] == "not-an-ip-address"


def test_a_retried_batch_creates_no_duplicates(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    store.install_templates()
    first = writer_for(store, settings).add_all([make_event(n) for n in range(50)])
    again = writer_for(store, settings).add_all([make_event(n) for n in range(50)])
    assert first.indexed == 50
    assert again.indexed == 0
    assert again.duplicates == 50
    assert count(client, store) == 50


def test_batches_are_bounded_by_count_and_bytes(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    store.install_templates()
    by_count = writer_for(store, settings, max_documents=7).add_all(
        [make_event(n) for n in range(20)]
    )
    assert by_count.batches == 3
    by_bytes = writer_for(store, settings, max_bytes=2000).add_all(
        [make_event(n) for n in range(100, 120)]
    )
    assert by_bytes.batches >= by_bytes.bytes_sent / 2000 > 1
    assert count(client, store) == 40


def test_busy_cluster_429_is_retried_until_it_accepts(
    store: EventStore, client: Elasticsearch, settings: Settings
) -> None:
    """A real 429: the index is blocked read_only_allow_delete, lifted during the first backoff."""
    store.install_templates()
    index = store.index_for(DAY)
    client.indices.create(index=index)
    client.indices.put_settings(index=index, settings={"index.blocks.read_only_allow_delete": True})
    sleeps: list[float] = []

    def lift_block_on_first_backoff(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            client.indices.put_settings(
                index=index, settings={"index.blocks.read_only_allow_delete": None}
            )

    writer = writer_for(store, settings, sleep=lift_block_on_first_backoff, backoff_seconds=0.01)
    report = writer.add_all([make_event(n) for n in range(5)])
    assert sleeps, "the writer should have backed off at least once"
    assert report.retries >= 1
    assert report.indexed == 5
    assert count(client, store) == 5


def test_retention_deletes_only_old_daily_indices(store: EventStore, client: Elasticsearch) -> None:
    store.install_templates()
    names = store.names
    for day in (date(2026, 11, 1), date(2026, 11, 20), date(2026, 11, 28)):
        client.indices.create(index=names.events_index_for(day))
    unrelated = f"{names.prefix}-events-archive"
    client.indices.create(index=unrelated)
    deleted = store.delete_older_than(7, today=date(2026, 11, 29))
    assert deleted == [
        names.events_index_for(date(2026, 11, 1)),
        names.events_index_for(date(2026, 11, 20)),
    ]
    remaining = set(client.indices.get(index=f"{names.prefix}-*"))
    assert remaining == {names.events_index_for(date(2026, 11, 28)), unrelated}


def test_dead_letter_file_records_every_field(tmp_path: Path) -> None:
    dead_letters = DeadLetterFile(tmp_path)
    dead_letters.write(stage="parse", source="a.log", offset=42, reason="bad", input="garbage")
    record = json.loads(dead_letters.current_path.read_text())
    assert record["source"] == "a.log" and record["offset"] == 42 and record["input"] == "garbage"
    assert dead_letters.counts["parse"] == 1


def test_concurrent_writes_to_dead_letters_do_not_interleave(tmp_path: Path) -> None:
    dead_letters = DeadLetterFile(tmp_path)

    def write_many(worker: int) -> None:
        for n in range(200):
            dead_letters.write(
                stage="parse", source=f"w{worker}", offset=n, reason="r", input="x" * 500
            )

    threads = [threading.Thread(target=write_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = dead_letters.current_path.read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["reason"] == "r" for line in lines)


def test_delete_prefix_removes_every_index_and_template_of_its_prefix_only(
    client: Elasticsearch, store: EventStore, settings: Settings
) -> None:
    prefix = settings.index_prefix
    store.install_templates()
    names = [f"{prefix}-events-2026.01.{day:02d}" for day in range(1, 61)]  # more than one batch
    for name in names:
        client.indices.create(index=name)
    neighbour = f"{prefix}x-kept"  # shares the text, not the prefix
    client.indices.create(index=neighbour)
    try:
        delete_prefix(client, prefix)
        assert not client.indices.exists(index=",".join(names[:3]))
        assert list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all")) == []
        assert not client.indices.exists_index_template(name=store.names.events_template)
        assert client.indices.exists(index=neighbour)
    finally:
        client.indices.delete(index=neighbour)
