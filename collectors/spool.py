"""`DiskSpool`: the durable first-in first-out buffer between parsing and Elasticsearch.

Parsed events are appended in batches to segment files (`segment-<n>.jsonl` under
`<home>/spool/`): one JSON line per event (id, source, offset, document) and then one
marker line that commits the batch and carries its acknowledgement payload (for the
collector: the file checkpoint that becomes valid once the batch is in Elasticsearch).
Each batch is fsync'd before `put` returns, so a batch that was put survives a crash.

The sender takes batches in order with `get` and calls `ack` once Elasticsearch has them;
the acknowledged position is persisted in `position.json` (at most every `sync_seconds`,
and on `sync`/`close`) and segments wholly behind it are then deleted. A batch taken but
not acknowledged, or acknowledged after the last persisted position, is delivered again
after a restart (ids are deterministic, so Elasticsearch reports the copy as a duplicate).
The last few batches put are also handed to `get` from memory, so a sender that keeps up
does not read them back from disk.

A crash in the middle of a `put` leaves an incomplete batch (a torn line, or event lines
without their marker) at the end of the last segment; reopening detects it, logs it, and
cuts it off. Its events are not lost: the checkpoint it carried was never reached, so the
input reads those lines again.

The unacknowledged bytes are bounded by a quota: above 80 % of it a warning is logged
and counted, and a `put` that would exceed it waits for the sender (or raises `SpoolFull`
at once with `block=False`), so each caller chooses between back-pressure and dropping.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from collectors.atomic_file import remove_leftovers, write_json_atomically
from lianfang.schema import Event, Origin

log = logging.getLogger(__name__)

SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".jsonl"
POSITION_FILE = "position.json"
LOCK_FILE = "lock"
BATCH_MARKER = b'{"batch":'
HIGH_WATER_RATIO = 0.8
LARGEST_SEGMENT_BYTES = 64 * 1024 * 1024
SMALLEST_SEGMENT_BYTES = 64 * 1024
# Batches just put are also kept in memory, so a sender that keeps up is handed them
# without reading them back from disk; older ones are read from their segment.
MEMORY_BATCHES = 4


class SpoolFull(RuntimeError):
    """The spool holds its quota of unacknowledged data; the batch was not written."""


class SpoolLocked(RuntimeError):
    """Another process already uses this spool directory."""


@dataclass(frozen=True, order=True)
class SpoolPosition:
    """A byte position in the spool: segment number and offset inside that segment."""

    segment: int
    offset: int


@dataclass(frozen=True)
class SpoolBatch:
    """One committed batch as the sender sees it."""

    sequence: int
    events: list[Event]
    ack: dict[str, Any]
    start: SpoolPosition
    end: SpoolPosition

    @property
    def size(self) -> int:
        """Bytes the batch occupies in its segment."""
        return self.end.offset - self.start.offset


@dataclass(frozen=True)
class SpoolStats:
    """A snapshot of the spool's fill level and counters."""

    used_bytes: int
    quota_bytes: int
    segments: int
    pending_batches: int
    pending_events: int
    written_batches: int
    written_events: int
    acknowledged_batches: int
    acknowledged_events: int
    high_water_warnings: int
    full_waits: int
    full_refusals: int
    torn_tails_discarded: int
    corrupt_lines: int

    @property
    def fill_ratio(self) -> float:
        """Unacknowledged bytes as a fraction of the quota."""
        return self.used_bytes / self.quota_bytes if self.quota_bytes else 0.0


def _segment_name(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:012d}{SEGMENT_SUFFIX}"


def _segment_number(path: Path) -> int | None:
    stem = path.name.removeprefix(SEGMENT_PREFIX).removesuffix(SEGMENT_SUFFIX)
    if not path.name.startswith(SEGMENT_PREFIX) or not stem.isdigit():
        return None
    return int(stem)


def encode_event(event: Event) -> bytes:
    """One spool line for an event: orjson, or ASCII JSON for what orjson refuses."""
    record = {
        "id": event.id,
        "source": event.origin.source,
        "offset": event.origin.offset,
        "document": event.document,
    }
    try:
        line = orjson.dumps(record, default=str)
    except (orjson.JSONEncodeError, TypeError):  # lone surrogates, huge integers
        line = json.dumps(record, separators=(",", ":"), default=str).encode("ascii")
    return line + b"\n"


def decode_event(line: bytes) -> Event:
    """The event of one spool line; raises ValueError for a damaged line."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:  # escaped lone surrogates, written by the fallback
        record = json.loads(line)
    return Event(
        document=record["document"],
        origin=Origin(record["source"], record["offset"]),
        id=record["id"],
    )


class DiskSpool:
    """A durable FIFO of event batches with a size quota; one writer and one reader thread."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int | None = None,
        sync_seconds: float = 0.5,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool quota must be positive, not {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(
            LARGEST_SEGMENT_BYTES, max(max_bytes // 16, SMALLEST_SEGMENT_BYTES)
        )
        self.sync_seconds = sync_seconds
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_handle = self._take_lock()
        remove_leftovers(directory)
        self._state = threading.Condition()
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._closed = False
        self._recent: OrderedDict[SpoolPosition, SpoolBatch] = OrderedDict()
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._deletable: list[int] = []
        # Committed end of every segment not yet deleted: how far the reader may go.
        self._segment_ends: dict[int, int] = {}
        self._acked = SpoolPosition(1, 0)
        self._next_ack_sequence = 0
        self._next_sequence = 0
        self._used = 0
        self._pending_batches = 0
        self._pending_events = 0
        self._above_high_water = False
        self._counters = dict.fromkeys(
            (
                "written_batches",
                "written_events",
                "acknowledged_batches",
                "acknowledged_events",
                "high_water_warnings",
                "full_waits",
                "full_refusals",
                "torn_tails_discarded",
                "corrupt_lines",
            ),
            0,
        )
        self._recover()
        self._write_segment = max(self._segment_ends)
        self._writer: IO[bytes] = (directory / _segment_name(self._write_segment)).open("ab")
        self._read_cursor = self._acked
        self._reader: IO[bytes] | None = None
        self._reader_segment = -1

    # ------------------------------------------------------------------ opening

    def _take_lock(self) -> IO[bytes]:
        handle = (self.directory / LOCK_FILE).open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise SpoolLocked(
                f"{self.directory} is used by another collector (one collector per home directory)"
            ) from None
        return handle

    def _recover(self) -> None:
        """Load the acknowledged position, drop acknowledged segments, cut a torn tail."""
        position_path = self.directory / POSITION_FILE
        if position_path.is_file():
            try:
                saved = json.loads(position_path.read_text())
                self._acked = SpoolPosition(int(saved["segment"]), int(saved["offset"]))
                self._next_ack_sequence = int(saved.get("sequence", 0))
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning(
                    "spool: unreadable %s (%s); reading from the oldest segment",
                    position_path,
                    error,
                )
        segments = sorted(
            number
            for path in self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")
            if (number := _segment_number(path)) is not None
        )
        for number in segments:
            if number < self._acked.segment:
                (self.directory / _segment_name(number)).unlink(missing_ok=True)
        segments = [number for number in segments if number >= self._acked.segment]
        if not segments:
            self._acked = SpoolPosition(self._acked.segment, 0)
            (self.directory / _segment_name(self._acked.segment)).touch()
            segments = [self._acked.segment]
        elif segments[0] > self._acked.segment:  # position lost: start at the oldest
            self._acked = SpoolPosition(segments[0], 0)
        acked_path = self.directory / _segment_name(self._acked.segment)
        if acked_path.is_file() and acked_path.stat().st_size < self._acked.offset:
            log.warning("spool: %s is shorter than its acknowledged position", acked_path.name)
            self._acked = SpoolPosition(self._acked.segment, acked_path.stat().st_size)
        last_sequence = self._next_ack_sequence - 1
        for number in segments:
            start = self._acked.offset if number == self._acked.segment else 0
            end, batches, events, sequence = self._scan_segment(number, start)
            self._segment_ends[number] = end
            self._pending_batches += batches
            self._pending_events += events
            self._used += end - start
            if sequence is not None:
                last_sequence = sequence
        self._next_sequence = last_sequence + 1
        if self._pending_batches:
            log.info(
                "spool: %d batches (%d events, %d bytes) from a previous run await delivery",
                self._pending_batches,
                self._pending_events,
                self._used,
            )

    def _scan_segment(self, number: int, start: int) -> tuple[int, int, int, int | None]:
        """Find the end of the last committed batch; cut anything after it."""
        path = self.directory / _segment_name(number)
        committed = start
        batches = events = 0
        last_sequence: int | None = None
        with path.open("rb") as source:
            source.seek(start)
            position = start
            events_in_batch = 0
            for line in source:
                position += len(line)
                if not line.endswith(b"\n"):
                    break  # a torn last line
                if line.startswith(BATCH_MARKER):
                    try:
                        marker = json.loads(line)
                        last_sequence = int(marker["batch"])
                        events += int(marker.get("events", events_in_batch))
                    except (ValueError, KeyError, TypeError):
                        self._counters["corrupt_lines"] += 1
                        events += events_in_batch
                    batches += 1
                    committed = position
                    events_in_batch = 0
                else:
                    events_in_batch += 1
        size = path.stat().st_size
        if size > committed:
            log.warning(
                "spool: cut %d bytes of an incomplete batch at the end of %s (interrupted "
                "write); its lines are read again from their file checkpoint",
                size - committed,
                path.name,
            )
            self._counters["torn_tails_discarded"] += 1
            with path.open("r+b") as damaged:
                damaged.truncate(committed)
                os.fsync(damaged.fileno())
        return committed, batches, events, last_sequence

    # ------------------------------------------------------------------ writing

    def put(
        self,
        events: list[Event],
        ack: dict[str, Any] | None = None,
        *,
        block: bool = True,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Append one batch durably; returns its sequence number.

        The spool keeps a reference to `events` for a while: do not change them after.

        When the quota would be exceeded, waits up to `timeout` (forever with None) or
        until `cancel` is set for the sender to make room, then raises SpoolFull; with
        `block` False it raises SpoolFull at once. A batch is always accepted into an
        empty spool, so an oversized batch cannot wedge it.
        """
        body = b"".join(encode_event(event) for event in events)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._write_lock:
            sequence = self._next_sequence
            marker = json.dumps(
                {"batch": sequence, "events": len(events), "ack": ack or {}},
                separators=(",", ":"),
                default=str,
            ).encode("ascii")
            data = body + marker + b"\n"
            self._reserve(len(data), block, deadline, cancel)
            try:
                if self._segment_ends[self._write_segment] >= self.segment_bytes:
                    self._roll_segment()
                self._writer.write(data)
                self._writer.flush()
                os.fsync(self._writer.fileno())
            except BaseException:
                self._undo_partial_write(len(data))
                raise
            self._next_sequence = sequence + 1
            with self._state:
                start = SpoolPosition(self._write_segment, self._segment_ends[self._write_segment])
                end = SpoolPosition(start.segment, start.offset + len(data))
                self._recent[start] = SpoolBatch(sequence, events, ack or {}, start, end)
                if len(self._recent) > MEMORY_BATCHES:
                    self._recent.popitem(last=False)
                self._segment_ends[self._write_segment] = end.offset
                self._pending_batches += 1
                self._pending_events += len(events)
                self._counters["written_batches"] += 1
                self._counters["written_events"] += len(events)
                self._state.notify_all()
        return sequence

    def _reserve(
        self, size: int, block: bool, deadline: float | None, cancel: threading.Event | None
    ) -> None:
        with self._state:
            waited = False
            while self._pending_batches and self._used + size > self.max_bytes:
                remaining = None if deadline is None else deadline - time.monotonic()
                given_up = (
                    not block
                    or self._closed
                    or (cancel is not None and cancel.is_set())
                    or (remaining is not None and remaining <= 0)
                )
                if given_up:
                    self._counters["full_refusals"] += 1
                    raise SpoolFull(
                        f"spool full: {self._used} of {self.max_bytes} bytes unacknowledged"
                    )
                if not waited:
                    self._counters["full_waits"] += 1
                    waited = True
                # Short waits so that `cancel` and `close` are noticed promptly.
                self._state.wait(min(remaining, 0.25) if remaining is not None else 0.25)
            self._used += size
            if not self._above_high_water and self._used >= HIGH_WATER_RATIO * self.max_bytes:
                self._above_high_water = True
                self._counters["high_water_warnings"] += 1
                log.warning(
                    "spool above %d %% of its quota (%d of %d bytes unacknowledged): "
                    "Elasticsearch is not keeping up or is unreachable",
                    int(HIGH_WATER_RATIO * 100),
                    self._used,
                    self.max_bytes,
                )

    def _undo_partial_write(self, size: int) -> None:
        """Cut whatever part of a failed write reached the file and reopen it cleanly."""
        with self._state:
            self._used -= size
        path = self.directory / _segment_name(self._write_segment)
        with contextlib.suppress(OSError):
            self._writer.close()  # may fail again flushing its buffer: that data is cut below
        try:
            os.truncate(path, self._segment_ends[self._write_segment])
        except OSError as error:  # the next open cuts the incomplete batch anyway
            log.error("spool: could not cut a failed write from %s: %s", path.name, error)
        self._writer = path.open("ab")

    def _roll_segment(self) -> None:
        self._writer.close()
        number = self._write_segment + 1
        self._writer = (self.directory / _segment_name(number)).open("ab")
        with self._state:
            old = self._write_segment
            self._segment_ends[number] = 0
            self._write_segment = number
            if self._acked == SpoolPosition(old, self._segment_ends[old]):
                # Everything in the old segment was acknowledged before this roll (a sender
                # that keeps up): move on as `ack` does for a segment that is not the last,
                # or the next batch, at (number, 0), would not follow the acknowledged one.
                self._acked = SpoolPosition(number, 0)
                self._read_cursor = max(self._read_cursor, self._acked)
                del self._segment_ends[old]
                self._deletable.append(old)
                self._unsynced = True

    # ------------------------------------------------------------------ reading

    def get(self, timeout: float | None = None) -> SpoolBatch | None:
        """The next committed batch after the last one taken, or None after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            while True:
                cursor = self._read_cursor
                if cursor.offset < self._segment_ends.get(cursor.segment, 0):
                    break
                if cursor.segment < self._write_segment:
                    self._read_cursor = SpoolPosition(cursor.segment + 1, 0)
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if self._closed or (remaining is not None and remaining <= 0):
                    return None
                self._state.wait(remaining)
            while self._recent and next(iter(self._recent)) < cursor:
                self._recent.popitem(last=False)
            remembered = self._recent.pop(cursor, None)
            if remembered is not None:
                self._read_cursor = remembered.end
                return remembered
        return self._read_batch(cursor)

    def _read_batch(self, start: SpoolPosition) -> SpoolBatch:
        if self._reader is None or self._reader_segment != start.segment:
            if self._reader is not None:
                self._reader.close()
            self._reader = (self.directory / _segment_name(start.segment)).open("rb")
            self._reader_segment = start.segment
        self._reader.seek(start.offset)
        events: list[Event] = []
        offset = start.offset
        sequence, ack = -1, {}
        while True:
            line = self._reader.readline()
            if not line:  # cannot happen below a committed end; be safe rather than loop
                break
            offset += len(line)
            if line.startswith(BATCH_MARKER):
                try:
                    marker = json.loads(line)
                    sequence, ack = int(marker["batch"]), marker.get("ack") or {}
                except (ValueError, KeyError, TypeError):
                    self._count_corrupt(line)
                break
            try:
                events.append(decode_event(line))
            except (ValueError, KeyError, TypeError):
                self._count_corrupt(line)
        end = SpoolPosition(start.segment, offset)
        with self._state:
            self._read_cursor = end
        return SpoolBatch(sequence, events, ack, start, end)

    def _count_corrupt(self, line: bytes) -> None:
        with self._state:
            self._counters["corrupt_lines"] += 1
        log.error(
            "spool: skipped a damaged line in segment %d: %r", self._reader_segment, line[:200]
        )

    # ------------------------------------------------------------------ acknowledging

    def ack(self, batch: SpoolBatch) -> None:
        """Mark the oldest unacknowledged batch as delivered.

        The position is persisted at most every `sync_seconds` (and by `sync`): a crash
        just after an acknowledgement only delivers that batch again.
        """
        with self._state:
            if batch.start != self._acked:
                raise ValueError(
                    f"batches are acknowledged in order: expected {self._acked}, got {batch.start}"
                )
            acked = batch.end
            while acked.offset >= self._segment_ends.get(acked.segment, 0) and (
                acked.segment < self._write_segment
            ):
                acked = SpoolPosition(acked.segment + 1, 0)
            self._acked = acked
            self._next_ack_sequence = batch.sequence + 1
            self._used -= batch.size
            self._pending_batches -= 1
            self._pending_events -= len(batch.events)
            self._counters["acknowledged_batches"] += 1
            self._counters["acknowledged_events"] += len(batch.events)
            if self._read_cursor < acked:
                self._read_cursor = acked
            finished = [number for number in self._segment_ends if number < acked.segment]
            for number in finished:
                del self._segment_ends[number]
            self._deletable.extend(finished)
            if self._above_high_water and self._used < HIGH_WATER_RATIO * self.max_bytes:
                self._above_high_water = False
                log.info("spool back below %d %% of its quota", int(HIGH_WATER_RATIO * 100))
            self._unsynced = True
            due = bool(finished) or time.monotonic() - self._last_sync >= self.sync_seconds
            self._state.notify_all()
        if due:
            self.sync()

    def sync(self) -> None:
        """Persist the acknowledged position; then delete the segments wholly behind it."""
        with self._sync_lock:
            with self._state:
                if not self._unsynced:
                    return
                acked, sequence = self._acked, self._next_ack_sequence
                deletable = [n for n in self._deletable if n < acked.segment]
                self._deletable = [n for n in self._deletable if n >= acked.segment]
                self._unsynced = False
                self._last_sync = time.monotonic()
            write_json_atomically(
                self.directory / POSITION_FILE,
                {"segment": acked.segment, "offset": acked.offset, "sequence": sequence},
            )
            for number in deletable:  # only once the position past them is durable
                (self.directory / _segment_name(number)).unlink(missing_ok=True)

    # ------------------------------------------------------------------ state

    def stats(self) -> SpoolStats:
        """Fill level and counters."""
        with self._state:
            return SpoolStats(
                used_bytes=self._used,
                quota_bytes=self.max_bytes,
                segments=len(self._segment_ends),
                pending_batches=self._pending_batches,
                pending_events=self._pending_events,
                **self._counters,
            )

    @property
    def empty(self) -> bool:
        """True when every batch put has been acknowledged."""
        with self._state:
            return self._pending_batches == 0

    def close(self) -> None:
        """Close the files and release the directory lock; wakes any waiting caller."""
        with self._state:
            self._closed = True
            self._state.notify_all()
        with self._write_lock:
            self._writer.close()
            self.sync()
            if self.empty and self._segment_ends.get(self._write_segment, 0) > 0:
                self._start_afresh()
        if self._reader is not None:
            self._reader.close()
        fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
        self._lock_handle.close()

    def _start_afresh(self) -> None:
        """Everything is delivered: leave one empty segment instead of megabytes of history."""
        number = self._write_segment + 1
        (self.directory / _segment_name(number)).touch()
        write_json_atomically(
            self.directory / POSITION_FILE,
            {"segment": number, "offset": 0, "sequence": self._next_sequence},
        )
        for old in list(self._segment_ends):
            (self.directory / _segment_name(old)).unlink(missing_ok=True)

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
