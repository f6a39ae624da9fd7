"""Export a time range of stored events from Elasticsearch into the Parquet archive."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from elasticsearch import Elasticsearch

from collectors.parquet_archive import ParquetArchive
from lianfang.event_search import EventQuery, search_events
from lianfang.schema import Event, Origin
from lianfang.scoped_store import ScopedStore

PAGE_SIZE = 5000


def export_range(
    client: Elasticsearch,
    index: str,
    start: datetime,
    end: datetime,
    archive: ParquetArchive,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy every event in [start, end) into the archive, oldest first; returns the count."""
    cursor: str | None = None
    exported = 0
    while True:
        query = EventQuery(start=start, end=end, size=PAGE_SIZE, cursor=cursor, newest_first=False)
        page = search_events(ScopedStore(client, None), index, query)
        for document in page.events:
            event_id = document.get("event", {}).get("id", "")
            archive.add(
                Event(
                    document=document,
                    origin=Origin(f"elasticsearch:{index}", exported),
                    id=event_id,
                )
            )
            exported += 1
        if progress is not None:
            progress(len(page.events))
        if page.next_cursor is None:
            return exported
        cursor = page.next_cursor
