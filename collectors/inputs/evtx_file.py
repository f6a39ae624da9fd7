"""Reading Windows .evtx files record by record, reporting damaged parts instead of failing.

Records are decoded by the `evtx` package (a Rust parser) one chunk at a time on a single
thread, so memory stays bounded by one 64 KiB chunk whatever the file size. Each record is
yielded as the package's JSON shape (`{"Event": {"System": ..., "EventData": ...}}`) with an
`Origin` whose offset is the record id from the EVTX record header: the record's place in
this file. It usually equals System/EventRecordID, but exported files renumber their
headers while EventRecordID (winlog.record_id) keeps the id of the original log.

Damage never stops the reading. A record or chunk the parser cannot decode, and a file cut
short (fewer complete chunks than its header declares), are each yielded as a *damage
marker*: a dict `{"evtx_error": "<what is wrong>"}` in the record's place. The `windows`
format refuses a marker with a ParseError carrying that reason, so the pipeline dead-letters
it with the file and record id like any other unreadable record. Only a file that is not an
EVTX file at all (empty, too short, wrong header magic) raises `NotAnEvtxFile`, since there
is nothing in it to yield.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import evtx

from lianfang.schema import Origin

EVTX_ERROR_KEY = "evtx_error"
FILE_HEADER_SIZE = 4096
CHUNK_SIZE = 65536
FILE_MAGIC = b"ElfFile\x00"
# A parser that keeps failing without yielding a record is not going to recover.
MAX_CONSECUTIVE_ERRORS = 10_000

_RECORD_NUMBER = re.compile(r"record number (\d+)")
_GENERIC_PREFIX = "An error occurred while trying to deserialize evtx stream.: "


class NotAnEvtxFile(ValueError):
    """A file that has no valid EVTX file header, so no record can be read from it."""


def damage_marker(reason: str) -> dict[str, Any]:
    """The record yielded in place of unreadable EVTX data."""
    return {EVTX_ERROR_KEY: reason}


def read_evtx(path: Path | str) -> Iterator[tuple[dict[str, Any], Origin]]:
    """Yield (decoded record, origin) for every record; damaged parts yield damage markers."""
    source = str(path)
    declared_chunks = _declared_chunk_count(Path(path))
    try:
        parser = evtx.PyEvtxParser(source, number_of_threads=1)
    except (RuntimeError, OSError) as error:
        raise NotAnEvtxFile(f"{source}: {_clean(str(error))}") from error
    records = parser.records_json()
    last_record_id = 0
    consecutive_errors = 0
    while True:
        try:
            item = next(records)
        except StopIteration:
            break
        except RuntimeError as error:  # the package's error for an undecodable record or chunk
            message = _clean(str(error))
            number = _RECORD_NUMBER.search(message)
            record_id = int(number.group(1)) if number else last_record_id
            yield damage_marker(message), Origin(source, record_id)
            consecutive_errors += 1
            if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                reason = f"gave up after {consecutive_errors} consecutive unreadable records"
                yield damage_marker(reason), Origin(source, last_record_id)
                return
            continue
        consecutive_errors = 0
        record_id = item["event_record_id"]
        try:
            record = json.loads(item["data"])
        except ValueError as error:
            yield (
                damage_marker(f"record {record_id} is not valid JSON: {error}"),
                Origin(source, record_id),
            )
            continue
        last_record_id = record_id
        yield record, Origin(source, record_id)
    truncation = _truncation(Path(path), declared_chunks)
    if truncation:
        yield (
            damage_marker(f"{truncation} (last record read: {last_record_id})"),
            Origin(source, last_record_id),
        )


def _declared_chunk_count(path: Path) -> int:
    with path.open("rb") as stream:
        header = stream.read(FILE_HEADER_SIZE)
    if len(header) < 128 or not header.startswith(FILE_MAGIC):
        found = header[:8]
        raise NotAnEvtxFile(
            f"{path}: not an EVTX file (expected magic {FILE_MAGIC!r}, found {found!r})"
        )
    (chunk_count,) = struct.unpack_from("<H", header, 42)
    return chunk_count


def _truncation(path: Path, declared_chunks: int) -> str | None:
    # The parser silently stops at the end of the data, so a cut-off copy has to be
    # recognised by comparing the file size with what the header promises.
    size = path.stat().st_size
    complete, partial = divmod(max(0, size - FILE_HEADER_SIZE), CHUNK_SIZE)
    problems = []
    if complete < declared_chunks:
        problems.append(
            f"file truncated: header declares {declared_chunks} chunks, "
            f"only {complete} complete chunks present ({size} bytes)"
        )
    if partial:
        problems.append(f"{partial} trailing bytes of an incomplete chunk were not read")
    return "; ".join(problems) or None


def _clean(message: str) -> str:
    return message.replace(_GENERIC_PREFIX, "").strip()
