"""The Parquet archive: ingest with an archive, export a range, read the archive back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from collectors.archive_export import export_range
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from collectors.parquet_archive import ParquetArchive, events_to_table, read_archive_records
from lianfang.schema import Event, Origin
from lianfang.settings import Settings
from lianfang.store import EventStore

LINES = [
    '{"@timestamp":"2026-11-28T01:15:00Z","source":{"ip":"10.0.0.1","bytes":100},"event":{"category":["network"]}}',
    '{"@timestamp":"2026-11-28T01:45:00Z","source":{"ip":"10.0.0.2","bytes":"not a number"}}',
    '{"@timestamp":"2026-11-28T02:05:00Z","user":{"name":"alice"},"db":{"rows":250000}}',
]


def test_typed_columns_and_full_document(tmp_path: Path) -> None:
    events = [
        Event(
            document=json.loads(line) | {"organization": {"id": "finance"}}, origin=Origin("t", n)
        )
        for n, line in enumerate(LINES)
    ]
    table = events_to_table(events)
    assert table.column("source.ip").to_pylist() == ["10.0.0.1", "10.0.0.2", None]
    assert table.column("source.bytes").to_pylist() == [100, None, None]  # bad value stays in JSON
    assert table.column("db.rows").to_pylist() == [None, None, 250000]
    assert table.column("event.category").to_pylist() == [["network"], None, None]
    assert json.loads(table.column("document")[1].as_py())["source"]["bytes"] == "not a number"
    sink = ParquetArchive(tmp_path)
    for event in events:
        sink.add(event)
    files = sink.close()
    names = sorted(str(path.relative_to(tmp_path)).split("-")[0] for path in files)
    assert names == ["date=2026", "date=2026"]
    assert {p.parent.name for p in files} == {"organization=finance"}
    assert sorted(p.name[:7] for p in files) == ["hour=01", "hour=02"]
    assert pq.ParquetFile(files[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_ingest_archive_export_and_read_back(
    settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    lines = [line.replace('"not a number"', "200") for line in LINES]
    log = tmp_path / "events.ndjson"
    log.write_text("\n".join(lines) + "\n")
    archive = ParquetArchive(tmp_path / "archive-at-ingest")
    report, _ = ingest_records(
        file_records(log),
        settings=settings,
        store=store,
        department=Department("finance"),
        archive=archive,
    )
    archive.close()
    assert report.indexed == 3
    at_ingest = [document for document, _ in read_archive_records(tmp_path / "archive-at-ingest")]
    assert sorted(d["@timestamp"] for d in at_ingest) == [
        "2026-11-28T01:15:00.000Z",
        "2026-11-28T01:45:00.000Z",
        "2026-11-28T02:05:00.000Z",
    ]
    store.refresh()

    exported = ParquetArchive(tmp_path / "exported")
    count = export_range(
        store.client,
        store.names.events_alias,
        datetime(2026, 11, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 11, 28, 3, 0, tzinfo=UTC),
        exported,
    )
    exported.close()
    assert count == 2
    documents = [document for document, _ in read_archive_records(tmp_path / "exported")]
    assert {d["event"]["id"] for d in documents} <= {d["event"]["id"] for d in at_ingest}
    assert all(d["event"]["original"] for d in documents)

    # Reading the archive back with `lianfang ingest` into another prefix keeps event.original.
    environment = {
        **os.environ,
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix + "-restored",
        "LIANFANG_HOME_DIR": str(settings.home_dir),
        "LIANFANG_MASKING_KEY": settings.masking_key.get_secret_value(),
    }
    result = subprocess.run(
        [sys.executable, "-m", "lianfang.cli", "ingest", str(tmp_path / "exported"), "--json"],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["files"][0]["indexed"] == 2
        store.client.indices.refresh(index=f"{settings.index_prefix}-restored-events-*")
        hits = store.client.search(index=f"{settings.index_prefix}-restored-events", size=10)[
            "hits"
        ]["hits"]
        assert {hit["_source"]["event"]["original"] for hit in hits} == {lines[1], lines[2]}
    finally:
        restored = list(store.client.indices.get(index=f"{settings.index_prefix}-restored-*"))
        if restored:
            store.client.indices.delete(index=",".join(restored))
        store.client.indices.delete_index_template(name=f"{settings.index_prefix}-restored-events")
