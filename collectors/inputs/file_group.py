"""A group of files of one department and format: the file input of a collector configuration.

`CollectorRuntime` reads its own patterns with one format and one department. A collector
configuration has several file inputs, each with its own; each becomes a `FileGroupInput`,
a push input with its own `FileFollower` and reader thread, sharing the runtime's
checkpoints, spool and sender. It reads exactly like the runtime's reader: chunks of at
most `bulk_max_documents` lines, one pipeline per file, events spooled with the chunk's
end offset as the acknowledgement, so the checkpoint advances only once Elasticsearch has
the events, and a full spool holds the reading back (the lines wait in the file).
"""

from __future__ import annotations

import logging
import threading

from collectors.inputs.file_follow import FileChunk, FileFollower
from collectors.inputs.pipelines import PipelineFactory, run_pipeline
from collectors.intel_hook import IndicatorLookup
from collectors.normalise import Department
from collectors.pipeline import IngestPipeline
from collectors.runtime import InputFeed
from lianfang.schema import Origin
from lianfang.settings import Settings

log = logging.getLogger(__name__)


class FileGroupInput:
    """Reads the files matching some patterns, for one department, into the runtime's spool."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        patterns: list[str],
        *,
        follow: bool = True,
        format_name: str | None = None,
        department: Department | None = None,
        poll_seconds: float = 0.25,
        scan_seconds: float = 1.0,
        close_detached_after: float = 5.0,
        indicators: IndicatorLookup | None = None,
    ) -> None:
        """`indicators`: the active intelligence every event is matched against."""
        self.settings = settings
        self.name = name
        self.patterns = list(patterns)
        self.follow = follow
        self.department = department
        self.factory = PipelineFactory(settings, format_name, indicators=indicators)
        self.poll_seconds = poll_seconds
        self.scan_seconds = scan_seconds
        self.close_detached_after = close_detached_after
        self._feed: InputFeed | None = None
        self._follower: FileFollower | None = None
        self._pipelines: dict[str, IngestPipeline] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()

    def __repr__(self) -> str:
        return f"FileGroupInput({self.name!r}, {self.patterns!r})"

    @property
    def finished(self) -> bool:
        """Without follow: every matched file was read to its end and spooled."""
        return self._done.is_set() and not self.follow

    def start(self, feed: InputFeed) -> None:
        """Start the reader thread."""
        self._feed = feed
        self._follower = FileFollower(
            self.patterns,
            feed.checkpoints,
            follow=self.follow,
            chunk_lines=self.settings.bulk_max_documents,
            scan_seconds=self.scan_seconds,
            close_detached_after=self.close_detached_after,
        )
        self._thread = threading.Thread(
            target=self._read_loop, name=f"files-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (a chunk waiting for room in the spool is read again next time)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._follower is not None:
            self._follower.close()

    def _read_loop(self) -> None:
        feed, follower = self._feed, self._follower
        assert feed is not None and follower is not None
        try:
            while not self._stop.is_set() and not feed.stopping.is_set():
                chunks = follower.poll()
                for chunk in chunks:
                    if not self._spool_chunk(feed, chunk):
                        return
                for source in follower.take_closed():
                    self._pipelines.pop(source, None)
                self._show_progress(feed, follower)
                if follower.finished:
                    return
                if not chunks:
                    self._stop.wait(self.poll_seconds)
        except Exception as error:  # reported in the status; the other inputs go on
            log.exception("file input %s failed", self.name)
            feed.note_error(self.name, f"reader: {type(error).__name__}: {error}")
        finally:
            self._show_progress(feed, follower)
            self._done.set()

    def _spool_chunk(self, feed: InputFeed, chunk: FileChunk) -> bool:
        pipeline = self._pipelines.get(chunk.source)
        if pipeline is None:
            pipeline = self.factory.pipeline(self.department, chunk.path)
            self._pipelines[chunk.source] = pipeline
            feed.register(chunk.source, chunk.path)
        records = ((line.text, Origin(chunk.source, line.offset)) for line in chunk.lines)
        events, counts = run_pipeline(pipeline, records)
        found = pipeline.fixed_format or pipeline.detected_format
        feed.count(
            chunk.source,
            read=counts.read,
            parsed=counts.parsed,
            skipped=counts.skipped,
            failed=counts.failed,
        )
        feed.set(chunk.source, format=found.name if found else None)
        return feed.put(chunk.source, events, chunk.end_offset, wait=True, replayable=True)

    def _show_progress(self, feed: InputFeed, follower: FileFollower) -> None:
        for item in follower.progress():
            feed.register(
                item.source,
                item.path,
                offset=item.offset,
                size=item.size,
                lag_bytes=item.lag_bytes,
                state=item.state,
                details=self._details(),
            )
        for source, message in follower.errors.items():
            feed.set(source, last_error=message)

    def _details(self) -> dict[str, str | None]:
        return {"input": self.name, "department": self.department.id if self.department else None}
