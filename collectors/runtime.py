"""`CollectorRuntime`: files -> IngestPipeline -> DiskSpool -> BulkWriter, with acknowledgements.

Three threads and no unbounded queue:

- the reader polls the `FileFollower`, parses and normalises each chunk with that file's
  `IngestPipeline`, runs the enrichment stages (assets, intelligence, masking: so the
  spool on disk never holds unmasked personal data), and puts the events in the spool
  with the chunk's end offset as the batch's acknowledgement payload; when the spool is full, `put` blocks, so reading waits
  (back-pressure) and memory holds at most one chunk;
- the sender takes batches from the spool in order and writes them with a `BulkWriter`;
  once a batch is stored (or recognised as a duplicate, or dead-lettered) it advances the
  file's checkpoint to the batch's offset and acknowledges the batch in the spool. When
  Elasticsearch is unreachable it backs off (doubling, up to `max_backoff_seconds`) and
  tries the same batch again, while the reader keeps filling the spool;
- the status writer replaces `<home>/collector-status.json` every `status_seconds` with
  a `CollectorSnapshot`, which `lianfang collect status` reads from another process.

Guarantees: a line's checkpoint passes it only after Elasticsearch acknowledged its event,
and a spooled batch is deleted only after that too, so a crash at any moment loses nothing
(at-least-once); the events read again carry the same deterministic ids, and `create`
turns the copies into counted duplicates, so each line is in the index exactly once.
Parse-stage dead letters of re-read lines may be written twice.

Push inputs (`PushInput`: a syslog listener, stdin, a file group of a collector
configuration) receive records themselves on their own threads and hand batches to the
runtime through an `InputFeed`: the same spool, sender and counters, with their own
pipelines. The runtime starts them with `run` and stops them when reading stops; with
push inputs it runs until every one of them is finished (stdin at its end) or `stop`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from collectors.atomic_file import write_json_atomically
from collectors.checkpoints import CheckpointStore
from collectors.enrichment import build_enrichment_stages, dead_letter_file_for
from collectors.formats import get_format
from collectors.inputs.file_follow import FileChunk, FileFollower
from collectors.intel_hook import IndicatorLookup
from collectors.intel_refresh import RefreshingLookup
from collectors.log_format import ParseContext
from collectors.masking import MaskingPolicy
from collectors.normalise import Department, Normaliser
from collectors.pipeline import IngestPipeline
from collectors.spool import DiskSpool, SpoolBatch, SpoolFull
from lianfang.bulk_writer import BulkReport, BulkWriter
from lianfang.schema import Event, Origin
from lianfang.settings import Settings
from lianfang.store import EventStore

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5
RUNNING_STATES = frozenset({"starting", "running", "draining"})
STALE_STATUS_SECONDS = 60.0


@dataclass
class InputCounters:
    """What happened so far to the lines of one file (one generation of a path)."""

    source: str
    path: str
    format: str | None = None
    state: str = "reading"
    read: int = 0
    parsed: int = 0
    skipped: int = 0
    failed: int = 0  # dead-lettered, at parsing or at indexing
    spooled: int = 0
    indexed: int = 0
    duplicates: int = 0
    offset: int = 0  # bytes read
    acknowledged_offset: int = 0  # bytes whose events Elasticsearch acknowledged
    size: int = 0
    lag_bytes: int = 0  # bytes of the file not read yet
    last_error: str | None = None
    dropped: int = 0  # lost before the spool, each counted and logged (datagrams, full spool)
    details: dict[str, Any] = field(default_factory=dict)  # input-specific (listeners)


@dataclass
class CollectorSnapshot:
    """The collector's state as `collect status` shows it."""

    pid: int
    state: str  # starting, running, draining, finished, stopped
    follow: bool
    patterns: list[str]
    started_at: str
    updated_at: str
    elasticsearch: str  # ok, unavailable, unknown
    last_error: str | None
    last_error_at: str | None
    failed_deliveries: int
    spool: dict[str, Any]
    inputs: list[InputCounters]
    totals: dict[str, int] = field(default_factory=dict)
    # The indicator lookup's size and reloads (`RefreshingLookup.status`), when it has one.
    intelligence: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PushInput(Protocol):
    """An input that receives records itself (a listener, a pipe) and spools them via a feed."""

    @property
    def finished(self) -> bool:
        """Nothing more will come (stdin at its end); a listener never finishes."""
        ...

    def start(self, feed: InputFeed) -> None:
        """Begin receiving; called once by `CollectorRuntime.run`."""
        ...

    def stop(self) -> None:
        """Stop receiving; return once what was accepted is spooled or counted as dropped."""
        ...


class InputFeed:
    """What a push input may do with its runtime: spool batches and keep its counters."""

    def __init__(self, runtime: CollectorRuntime) -> None:
        self._runtime = runtime

    @property
    def settings(self) -> Settings:
        """The runtime's settings."""
        return self._runtime.settings

    @property
    def checkpoints(self) -> CheckpointStore:
        """The runtime's checkpoints: a batch acknowledged as (source, offset) advances them."""
        return self._runtime.checkpoints

    @property
    def stopping(self) -> threading.Event:
        """Set once a stop was asked for."""
        return self._runtime._stop_reading

    def register(self, source: str, path: str, **values: Any) -> None:
        """Show an input in the counters (from now on, also while it is idle)."""
        self._runtime._counters_for(source, path)
        self.set(source, **values)

    def count(self, source: str, **increments: int) -> None:
        """Add to counters of an input (read, parsed, skipped, failed, dropped, ...)."""
        counters = self._runtime._counters_for(source)
        with self._runtime._inputs_lock:
            for name, value in increments.items():
                setattr(counters, name, getattr(counters, name) + value)

    def set(self, source: str, **values: Any) -> None:
        """Replace fields of an input's counters (state, format, lag_bytes, details, ...)."""
        counters = self._runtime._counters_for(source)
        with self._runtime._inputs_lock:
            for name, value in values.items():
                setattr(counters, name, value)

    def note_error(self, source: str, message: str) -> None:
        """Record an input's last error (also the collector's last error)."""
        self._runtime._note_error(message, source)

    def put(
        self, source: str, events: list[Event], offset: int, *, wait: bool, replayable: bool
    ) -> bool:
        """Spool a batch acknowledged as (source, offset); False if it was not spooled.

        Without `wait` a full spool refuses at once. With it the call waits for room, and
        gives up when a stop is asked for if the input can read its records again
        (`replayable`: files), or else only once the drain time is over.
        """
        runtime = self._runtime
        cancel = runtime._stop_reading if replayable else runtime._stop_sending
        try:
            runtime.spool.put(
                events, {"source": source, "offset": offset}, block=wait, cancel=cancel
            )
        except SpoolFull:
            return False
        self.count(source, spooled=len(events))
        return True


class CollectorRuntime:
    """Collects files into Elasticsearch through the disk spool until done or stopped."""

    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        patterns: list[str],
        *,
        follow: bool = False,
        format_name: str | None = None,
        department: Department | None = None,
        poll_seconds: float = 0.25,
        scan_seconds: float = 1.0,
        close_detached_after: float = 5.0,
        status_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        drain_seconds: float = 10.0,
        push_inputs: Sequence[PushInput] = (),
        indicators: IndicatorLookup | None = None,
    ) -> None:
        """`indicators`: the active intelligence the files' events are matched against (push
        inputs take their own, like their format and department)."""
        self.settings = settings
        self.indicators = indicators
        self.push_inputs = list(push_inputs)
        self.store = store
        self.follow = follow
        self.patterns = list(patterns)
        self.log_format = get_format(format_name) if format_name else None
        self.normaliser = Normaliser(keep_original=settings.keep_original, department=department)
        self.timezone = ZoneInfo(settings.timezone)
        self.poll_seconds = poll_seconds
        self.status_seconds = status_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.drain_seconds = drain_seconds
        # Configuration errors (no masking key, a broken inventory) surface here, at start.
        department_id = department.id if department else None
        masking = MaskingPolicy.from_settings(settings)
        self.stages = build_enrichment_stages(
            settings, department_id, indicators=indicators, masking=masking
        )
        self.dead_letters = dead_letter_file_for(settings, department_id, masking)
        self.spool = DiskSpool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
        try:
            self.checkpoints = CheckpointStore(settings.checkpoint_dir)
            self.follower = FileFollower(
                patterns,
                self.checkpoints,
                follow=follow,
                chunk_lines=settings.bulk_max_documents,
                scan_seconds=scan_seconds,
                close_detached_after=close_detached_after,
            )
        except BaseException:
            self.spool.close()
            raise
        self._pipelines: dict[str, IngestPipeline] = {}
        self._inputs: dict[str, InputCounters] = {}
        self._inputs_lock = threading.Lock()
        self._stop_reading = threading.Event()  # a stop was asked for
        self._stop_sending = threading.Event()  # the drain time is over: stop delivering
        self._reading_done = threading.Event()
        self._finished = threading.Event()
        self._stop_deadline: float | None = None
        self._templates_ready = False
        self._state = "starting"
        self._started_at = _now()
        self._elasticsearch = "unknown"
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._failed_deliveries = 0
        self.crashed: str | None = None  # an internal error stopped the collector

    # ------------------------------------------------------------------ control

    def run(self) -> CollectorSnapshot:
        """Collect until one-shot input is delivered, or until `stop`; returns the final state."""
        threads = [
            threading.Thread(target=self._read_loop, name="collector-reader", daemon=True),
            threading.Thread(target=self._send_loop, name="collector-sender", daemon=True),
        ]
        status_thread = threading.Thread(
            target=self._status_loop, name="collector-status", daemon=True
        )
        self._state = "running"
        for thread in [*threads, status_thread]:
            thread.start()
        completed = False
        try:
            feed = InputFeed(self)
            for push_input in self.push_inputs:
                push_input.start(feed)
            while threads[1].is_alive():
                threads[1].join(0.2)
                if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                    self._stop_sending.set()
            completed = self._reading_done.is_set() and not self._stop_reading.is_set()
        finally:
            self._stop_reading.set()
            self._stop_sending.set()
            for thread in threads:
                thread.join()
            self._state = "finished" if completed and self.spool.empty else "stopped"
            self._finished.set()
            status_thread.join()
            self.follower.close()
            self.checkpoints.sync()
            snapshot = self.snapshot()
            self.spool.close()  # persists the spool position
            self._write_status(snapshot)
        return snapshot

    def stop(self) -> None:
        """Stop reading; deliver what is spooled for up to `drain_seconds`, then stop.

        A second call stops delivering at once. Checkpoints and the spool position are
        persisted as batches are acknowledged (at most `sync_seconds` behind) and once more
        when `run` ends; what is still spooled is delivered by the next run.
        """
        if self._stop_reading.is_set():
            self._stop_deadline = time.monotonic()
        else:
            self._stop_reading.set()
            self._stop_deadline = time.monotonic() + self.drain_seconds
            self._state = "draining"

    # ------------------------------------------------------------------ reading

    def _read_loop(self) -> None:
        try:
            while not self._stop_reading.is_set():
                chunks = self.follower.poll()
                for chunk in chunks:
                    if not self._spool_chunk(chunk):
                        return
                for source in self.follower.take_closed():
                    self._pipelines.pop(source, None)
                    with self._inputs_lock:
                        if source in self._inputs:
                            self._inputs[source].state = "closed"
                if self.follower.finished and all(item.finished for item in self.push_inputs):
                    return
                if not chunks:
                    self._stop_reading.wait(self.poll_seconds)
        except Exception as error:  # reading must not die silently: report it and stop
            log.exception("collector reader failed")
            self.crashed = f"reader: {type(error).__name__}: {error}"
            self._note_error(self.crashed)
            self._stop_reading.set()
            self._stop_deadline = time.monotonic() + self.drain_seconds
        finally:
            self._stop_push_inputs()
            self._reading_done.set()

    def _stop_push_inputs(self) -> None:
        """Stop every push input; their last batches reach the spool before the drain ends."""
        for push_input in self.push_inputs:
            try:
                push_input.stop()
            except Exception as error:  # one input must not keep the others running
                log.exception("stopping an input failed")
                self._note_error(f"stopping {push_input!r}: {type(error).__name__}: {error}")

    def _spool_chunk(self, chunk: FileChunk) -> bool:
        """Parse one chunk and spool its events; False when stopped while the spool was full."""
        pipeline = self._pipeline_for(chunk)
        counters = self._counters_for(chunk.source, chunk.path)
        failed_before = pipeline.report.parse_failed
        records = ((line.text, Origin(chunk.source, line.offset)) for line in chunk.lines)
        events = list(pipeline.events(records))
        found = self.log_format or pipeline.detected_format
        with self._inputs_lock:
            counters.read = pipeline.report.read
            counters.parsed = pipeline.report.parsed
            counters.skipped = pipeline.report.skipped
            counters.failed += pipeline.report.parse_failed - failed_before
            counters.format = found.name if found else None
        try:
            self.spool.put(
                events,
                {"source": chunk.source, "offset": chunk.end_offset},
                cancel=self._stop_reading,
            )
        except SpoolFull:
            return False  # stopping: these lines are read again from the checkpoint
        with self._inputs_lock:
            counters.spooled += len(events)
        return True

    def _pipeline_for(self, chunk: FileChunk) -> IngestPipeline:
        pipeline = self._pipelines.get(chunk.source)
        if pipeline is None:
            pipeline = IngestPipeline(
                normaliser=self.normaliser,
                dead_letters=self.dead_letters,
                log_format=self.log_format,
                context=ParseContext(timezone=self.timezone, source=chunk.path),
                stages=self.stages,
            )
            self._pipelines[chunk.source] = pipeline
        return pipeline

    def _counters_for(self, source: str, path: str | None = None) -> InputCounters:
        with self._inputs_lock:
            counters = self._inputs.get(source)
            if counters is None:
                if path is None:
                    saved = self.checkpoints.get(source)
                    path = saved.path if saved else source.split("#", 1)[0]
                counters = InputCounters(source=source, path=path)
                self._inputs[source] = counters
                closed = [s for s, c in self._inputs.items() if c.state == "closed"]
                for old in closed[:-100]:  # keep the table bounded in a long follow
                    del self._inputs[old]
            return counters

    # ------------------------------------------------------------------ sending

    def _send_loop(self) -> None:
        try:
            while not self._stop_sending.is_set():
                batch = self.spool.get(timeout=0.2)
                if batch is None:
                    if self._reading_done.is_set() and self.spool.empty:
                        return
                    continue
                if not self._deliver(batch):
                    return
        except Exception as error:
            log.exception("collector sender failed")
            self.crashed = f"sender: {type(error).__name__}: {error}"
            self._note_error(self.crashed)
            self._stop_reading.set()

    def _deliver(self, batch: SpoolBatch) -> bool:
        """Write one batch until Elasticsearch takes it; False if stopped first."""
        backoff = FIRST_BACKOFF_SECONDS
        source = batch.ack.get("source")
        while True:
            writer = BulkWriter(
                self.store.client,
                self.store,
                self.dead_letters,
                max_documents=self.settings.bulk_max_documents,
                max_bytes=self.settings.bulk_max_bytes,
                max_retries=self.settings.bulk_max_retries,
                backoff_seconds=self.settings.bulk_backoff_seconds,
                sleep=self._stop_sending.wait,
            )
            try:
                if not self._templates_ready:
                    self.store.install_templates()
                    self._templates_ready = True
                writer.add_all(batch.events)
            except Exception as error:  # unreachable, refused, or a bug: all are retried
                self._account(source, writer.report)
                self._templates_ready = False
                self._failed_deliveries += 1
                self._elasticsearch = "unavailable"
                self._note_error(f"{type(error).__name__}: {error}", source)
                if self._stop_reading.is_set() or self._stop_sending.is_set():
                    return False  # stopping: the batch stays in the spool for the next run
                pending = self.spool.stats().pending_events
                log.warning(
                    "delivery failed (%s); retrying in %.1f s, %d events wait in the spool",
                    str(error)[:300],
                    backoff,
                    pending,
                )
                if self._stop_requested_during(backoff):
                    return False  # no drain while Elasticsearch is away: the spool keeps it
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            break
        self._account(source, writer.report)
        self._elasticsearch = "ok"
        if source is not None:
            offset = int(batch.ack["offset"])
            self.checkpoints.advance(source, offset)
            counters = self._counters_for(source)
            with self._inputs_lock:
                counters.acknowledged_offset = max(counters.acknowledged_offset, offset)
        self.spool.ack(batch)
        return True

    def _stop_requested_during(self, seconds: float) -> bool:
        """Wait, unless or until a stop is asked for; True if it was."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop_reading.wait(min(remaining, 0.1)) or self._stop_sending.is_set():
                return True
        return self._stop_reading.is_set()

    def _account(self, source: str | None, report: BulkReport) -> None:
        if source is None:
            return
        counters = self._counters_for(source)
        with self._inputs_lock:
            counters.indexed += report.indexed
            counters.duplicates += report.duplicates
            counters.failed += report.dead_lettered

    def _note_error(self, message: str, source: str | None = None) -> None:
        self._last_error = message[:1000]
        self._last_error_at = _now()
        if source is not None:
            self._counters_for(source).last_error = self._last_error

    # ------------------------------------------------------------------ status

    def snapshot(self) -> CollectorSnapshot:
        """The current counters (safe to call from any thread)."""
        progress = {item.source: item for item in self.follower.progress()}
        for source, item in progress.items():
            if source not in self._inputs:  # a file with nothing new to read
                counters = self._counters_for(source, item.path)
                saved = self.checkpoints.get(source)
                counters.acknowledged_offset = saved.offset if saved else 0
        with self._inputs_lock:
            inputs = list(self._inputs.values())
            for counters in inputs:
                item = progress.get(counters.source)
                read_error = self.follower.errors.get(counters.source)
                if read_error is not None:
                    counters.last_error = read_error
                if item is not None:
                    counters.offset = item.offset
                    counters.size = item.size
                    counters.lag_bytes = item.lag_bytes
                    if counters.state != "closed":
                        counters.state = item.state
            inputs = [InputCounters(**asdict(counters)) for counters in inputs]
        spool = self.spool.stats()
        totals = {
            name: sum(getattr(counters, name) for counters in inputs)
            for name in (
                "read",
                "parsed",
                "failed",
                "spooled",
                "indexed",
                "duplicates",
                "lag_bytes",
                "dropped",
            )
        }
        return CollectorSnapshot(
            pid=os.getpid(),
            state=self._state,
            follow=self.follow,
            patterns=self.patterns,
            started_at=self._started_at,
            updated_at=_now(),
            elasticsearch=self._elasticsearch,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            failed_deliveries=self._failed_deliveries,
            spool={**asdict(spool), "fill_ratio": round(spool.fill_ratio, 4)},
            inputs=inputs,
            totals=totals,
            intelligence=(
                self.indicators.status().as_dict()
                if isinstance(self.indicators, RefreshingLookup)
                else None
            ),
        )

    def _status_loop(self) -> None:
        while not self._finished.wait(self.status_seconds):
            try:
                self.checkpoints.sync()
                self.spool.sync()
                self._write_status(self.snapshot())
            except Exception:  # status is informational: never let it stop collection
                log.exception("could not write the collector status")

    def _write_status(self, snapshot: CollectorSnapshot) -> None:
        # Not fsync'd: it is rewritten every second and only informs.
        write_json_atomically(
            self.settings.collector_status_file, snapshot.as_dict(), durable=False
        )


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status a collector wrote, with `running` telling whether it still runs."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    try:
        age = (datetime.now(UTC) - datetime.fromisoformat(status["updated_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        age = float("inf")
    status["running"] = (
        status.get("state") in RUNNING_STATES
        and _alive(int(status.get("pid", 0)))
        and age < STALE_STATUS_SECONDS  # a reused pid does not keep a dead collector alive
    )
    return status


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
