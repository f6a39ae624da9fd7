"""Standard input as a collector input: `lianfang collect stdin`, for pipelines.

`tail -F app.log | lianfang collect stdin --format syslog` sends each line through the
collector's pipeline, spool and sender. Lines are decoded exactly as `lianfang ingest -`
decodes them, with the same origin (`stdin`, byte offset), so both give the same event
ids. Batches are spooled when `bulk_max_documents` lines are there or 0.2 s after the
first, so a slow pipe is not held back; a full spool stops the reading (the writer of the
pipe then blocks). A pipe cannot be read again, so on a stop the lines already read are
spooled while the drain time lasts; whatever the spool still refuses then is counted as
dropped. At the end of the input, the collector delivers what is spooled and exits.
"""

from __future__ import annotations

import io
import logging
import os
import select
import threading
import time
from typing import BinaryIO

from collectors.inputs.pipelines import PipelineFactory, run_pipeline
from collectors.inputs.text_lines import MAX_LINE_BYTES, Line, read_lines
from collectors.intel_hook import IndicatorLookup
from collectors.normalise import Department
from collectors.runtime import InputFeed
from lianfang.schema import Origin
from lianfang.settings import Settings

log = logging.getLogger(__name__)

STDIN_SOURCE = "stdin"  # the origin `lianfang ingest -` gives its lines too
READ_BYTES = 1024 * 1024
FLUSH_SECONDS = 0.2


class StreamLines:
    """Splits bytes read from a stream into `Line`s with byte offsets, as `read_lines` does."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.offset = 0  # of the first byte not yet turned into a line
        self._buffer = bytearray()
        self._skipping = False  # the rest of a cut line is being skipped

    def feed(self, data: bytes) -> list[Line]:
        """The complete lines that `data` ends."""
        self._buffer += data
        lines: list[Line] = []
        cut = self._buffer.rfind(b"\n") + 1
        if cut:
            start = self.offset
            piece = bytes(self._buffer[:cut])
            if self._skipping:  # drop the tail of a cut line, up to its newline
                end = piece.index(b"\n") + 1
                start, piece = start + end, piece[end:]
                self._skipping = False
            lines.extend(read_lines(io.BytesIO(piece), start, self.max_line_bytes))
            del self._buffer[:cut]
            self.offset += cut
        if len(self._buffer) > self.max_line_bytes and not self._skipping:
            head = bytes(self._buffer[: self.max_line_bytes])
            text = head.decode("utf-8", errors="replace")
            lines.append(
                Line(text.removeprefix("\ufeff") if self.offset == 0 else text, self.offset, True)
            )
            self._skipping = True
        if self._skipping:
            self.offset += len(self._buffer)
            self._buffer.clear()
        return lines

    def finish(self) -> list[Line]:
        """The last line, when the stream ends without a newline."""
        if self._skipping or not self._buffer:
            self._buffer.clear()
            return []
        rest = bytes(self._buffer)
        self._buffer.clear()
        lines = list(read_lines(io.BytesIO(rest), self.offset, self.max_line_bytes))
        self.offset += len(rest)
        return lines


class StdinInput:
    """Reads a stream (standard input) line by line into the runtime's spool."""

    def __init__(
        self,
        settings: Settings,
        stream: BinaryIO,
        *,
        format_name: str | None = None,
        department: Department | None = None,
        source: str = STDIN_SOURCE,
        indicators: IndicatorLookup | None = None,
    ) -> None:
        """`indicators`: the active intelligence every event is matched against."""
        self.settings = settings
        self.stream = stream
        self.source = source
        self.department = department
        self.factory = PipelineFactory(settings, format_name, indicators=indicators)
        self.pipeline = self.factory.pipeline(department, source)
        self._feed: InputFeed | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"StdinInput({self.source!r})"

    @property
    def finished(self) -> bool:
        """The stream has ended and everything read is spooled (or counted as dropped)."""
        return self._done.is_set()

    def start(self, feed: InputFeed) -> None:
        """Start reading in a thread of its own."""
        self._feed = feed
        details = {"department": self.department.id if self.department else None}
        feed.register(self.source, self.source, state="reading", details=details)
        self._thread = threading.Thread(target=self._read_loop, name="stdin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading; spool the lines already read."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _read_loop(self) -> None:
        feed = self._feed
        assert feed is not None
        splitter = StreamLines()
        descriptor = self.stream.fileno()
        pending: list[Line] = []
        first_pending_at = 0.0
        state = "stopped"
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([descriptor], [], [], FLUSH_SECONDS)
                data = os.read(descriptor, READ_BYTES) if ready else None
                if data == b"":
                    pending.extend(splitter.finish())
                    state = "finished"
                    break
                if data:
                    if not pending:
                        first_pending_at = time.monotonic()
                    pending.extend(splitter.feed(data))
                due = time.monotonic() - first_pending_at >= FLUSH_SECONDS
                if pending and (len(pending) >= self.settings.bulk_max_documents or due):
                    self._spool(feed, pending, splitter.offset)
                    pending = []
                feed.set(self.source, offset=splitter.offset)
        except Exception as error:  # reported in the status; the runtime goes on
            log.exception("reading %s failed", self.source)
            feed.note_error(self.source, f"{type(error).__name__}: {error}")
            state = "failed"
        finally:
            if pending:
                self._spool(feed, pending, splitter.offset)
            feed.set(self.source, offset=splitter.offset, state=state)
            self._done.set()

    def _spool(self, feed: InputFeed, lines: list[Line], end_offset: int) -> None:
        records = ((line.text, Origin(self.source, line.offset)) for line in lines)
        events, counts = run_pipeline(self.pipeline, records)
        found = self.pipeline.fixed_format or self.pipeline.detected_format
        feed.count(
            self.source,
            read=counts.read,
            parsed=counts.parsed,
            skipped=counts.skipped,
            failed=counts.failed,
        )
        feed.set(self.source, format=found.name if found else None)
        if events and not feed.put(self.source, events, end_offset, wait=True, replayable=False):
            feed.count(self.source, dropped=len(events))
            message = (
                f"dropped {len(events)} events: the spool stayed full until the drain time ended"
            )
            log.warning("%s: %s", self.source, message)
            feed.note_error(self.source, message)
