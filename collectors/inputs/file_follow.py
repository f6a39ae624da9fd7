"""Reading files and globs in bounded chunks, from their checkpoints, through rotation.

`FileFollower.poll()` does one round: find the files the patterns match, then read at
most one chunk (up to `chunk_lines` complete lines, at most about 1 MiB) from each open
file. Files are told apart by device and inode, not by name, so:

- rotation by rename (`app.log` -> `app.log.1`, new `app.log`): the old file stays open
  and is read to its end (and kept open `close_detached_after` seconds for late writes),
  while the new file at the path is read from 0 as a new generation;
- truncation (size below the read position, or changed first bytes: copytruncate) starts
  the file again at 0 as a new generation;
- a new file that matches a glob is picked up at the next scan;
- a file seen before resumes from its checkpoint, if its fingerprint still matches; the
  `#` header lines at its start (Zeek TSV, W3C) come again with the first chunk, so a
  format that learns its columns from them still parses the lines after the checkpoint.

It is poll-based (no inotify), so it works on any filesystem, including network mounts.
A line is only taken once its newline is there; the last line of a file without one is
taken only in one-shot mode or when a rotated file is closed. Lines are decoded exactly as
`lianfang ingest` decodes them (`read_lines`), so both give the same events and ids.

One-shot mode (no follow) scans once and reads each matched file to its end.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from collectors.checkpoints import FINGERPRINT_BYTES, CheckpointStore, Fingerprint
from collectors.inputs.text_lines import MAX_LINE_BYTES, Line, read_lines

log = logging.getLogger(__name__)

# Rotated-and-compressed copies are not text; a glob like app.log* would otherwise catch them.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z")
READ_BYTES = MAX_LINE_BYTES + 1  # one read always tells whether a line is overlong
DEFAULT_CHUNK_LINES = 2000
HEADER_BYTES = 64 * 1024  # how much of a file's start may be header lines to replay
# Checkpoints of files gone from their path are dropped after this long without progress.
FORGET_VANISHED_AFTER = 7 * 24 * 3600.0
CLEANUP_EVERY = 3600.0


@dataclass(frozen=True)
class FileChunk:
    """Complete lines read from one file, and the offset just after them."""

    source: str
    path: str
    lines: list[Line]
    start_offset: int
    end_offset: int


@dataclass(frozen=True)
class FileProgress:
    """Where reading a file stands."""

    source: str
    path: str
    offset: int
    size: int
    state: str  # reading, following, rotated, closed

    @property
    def lag_bytes(self) -> int:
        """Bytes of the file not read yet."""
        return max(0, self.size - self.offset)


def find_files(patterns: list[str]) -> dict[tuple[int, int], str]:
    """The regular files that paths or globs match now, by (device, inode), as real paths."""
    found: dict[tuple[int, int], str] = {}
    for pattern in patterns:
        pattern = os.path.abspath(os.path.expanduser(pattern))
        candidates = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for path in candidates:
            if path.endswith(COMPRESSED_SUFFIXES):
                continue
            try:
                status = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                found.setdefault((status.st_dev, status.st_ino), os.path.realpath(path))
    return found


def header_lines(descriptor: int, before: int) -> list[Line]:
    """The `#` lines that open a file (Zeek TSV, W3C), when reading resumes at `before`.

    Stateful formats learn their columns from these headers, so they are parsed again
    before the first lines read after a restart. Their events, if a format makes any,
    have the ids they had the first time, so replaying them never duplicates anything.
    """
    if before <= 0:
        return []
    head = os.pread(descriptor, min(before, HEADER_BYTES), 0)
    head = head[: head.rfind(b"\n") + 1]  # complete lines only
    headers = []
    for line in read_lines(io.BytesIO(head)):
        if not line.text.startswith("#"):
            break
        headers.append(line)
    return headers


class _OpenFile:
    """One file being read: its descriptor, identity and read position."""

    def __init__(
        self,
        source: str,
        path: str,
        descriptor: int,
        status: os.stat_result,
        offset: int,
        fingerprint: Fingerprint,
    ) -> None:
        self.source = source
        self.path = path
        self.descriptor = descriptor
        self.key = (status.st_dev, status.st_ino)
        self.size = status.st_size
        self.offset = offset
        self.fingerprint = fingerprint
        self.skipping_overlong = False
        self.detached_since: float | None = None  # no longer at any matched path
        self.at_end = False
        # Header lines replayed before the first lines read after resuming mid-file.
        self.preamble: list[Line] = []

    def progress(self) -> FileProgress:
        if self.detached_since is not None:
            state = "rotated"
        else:
            state = "following" if self.at_end else "reading"
        return FileProgress(self.source, self.path, self.offset, self.size, state)


class FileFollower:
    """Reads the files matching some paths or globs, once or continuously."""

    def __init__(
        self,
        patterns: list[str],
        checkpoints: CheckpointStore,
        *,
        follow: bool,
        chunk_lines: int = DEFAULT_CHUNK_LINES,
        scan_seconds: float = 1.0,
        close_detached_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        self.checkpoints = checkpoints
        self.follow = follow
        self.chunk_lines = chunk_lines
        self.scan_seconds = scan_seconds
        self.close_detached_after = close_detached_after
        self.clock = clock
        self._open: dict[tuple[int, int], _OpenFile] = {}
        self._closed: list[FileProgress] = []
        self._newly_closed: list[str] = []
        self._last_scan: float | None = None
        self._last_cleanup: float | None = None
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}  # the last read error of each source
        self._unopenable: set[str] = set()

    # ------------------------------------------------------------------ discovery

    def _scan(self) -> None:
        now = self.clock()
        if self._last_scan is not None and (
            not self.follow or now - self._last_scan < self.scan_seconds
        ):
            return
        self._last_scan = now
        found = find_files(self.patterns)
        for key, opened in list(self._open.items()):
            path = found.get(key)
            if path is None:
                if opened.detached_since is None:
                    opened.detached_since = now
                    log.info("%s was rotated or removed; reading it to its end", opened.path)
            else:
                opened.detached_since = None
                if path != opened.path:
                    opened.path = path
                    self.checkpoints.update(opened.source, path=path)
        for key, path in found.items():
            if key not in self._open:
                self._open_file(path)

    def _open_file(self, path: str) -> None:
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            if path not in self._unopenable:  # said once, not at every scan
                self._unopenable.add(path)
                log.warning("cannot open %s: %s", path, error)
            return
        self._unopenable.discard(path)
        status = os.fstat(descriptor)
        key = (status.st_dev, status.st_ino)
        if key in self._open:  # replaced between stat and open by a file already open
            os.close(descriptor)
            return
        head = os.pread(descriptor, FINGERPRINT_BYTES, 0)
        saved = self.checkpoints.find(*key)
        if saved is not None and Fingerprint.of_bytes(head[: saved.fingerprint.length]) == (
            saved.fingerprint
        ):
            if status.st_size >= saved.offset:
                if saved.path != path:
                    self.checkpoints.update(saved.source, path=path)
                opened = _OpenFile(
                    saved.source, path, descriptor, status, saved.offset, saved.fingerprint
                )
                opened.preamble = header_lines(descriptor, saved.offset)
                self._open[key] = opened
                return
            log.info("%s is shorter than its checkpoint: truncated, reading from 0", path)
        fingerprint = Fingerprint.of_bytes(head)
        checkpoint = self.checkpoints.register(path, *key, fingerprint)
        self._open[key] = _OpenFile(checkpoint.source, path, descriptor, status, 0, fingerprint)

    # ------------------------------------------------------------------ reading

    def poll(self) -> list[FileChunk]:
        """Scan if due, then read at most one chunk from each open file."""
        with self._lock:
            self._scan()
            self._clean_up_checkpoints()
            chunks = []
            for opened in list(self._open.values()):
                try:
                    chunk = self._read(opened)
                except OSError as error:  # one unreadable file must not stop the others
                    log.warning("cannot read %s: %s; closing it", opened.path, error)
                    self.errors[opened.source] = f"{type(error).__name__}: {error}"
                    self._close(opened)
                    continue
                if chunk is not None:
                    chunks.append(chunk)
            return chunks

    def _clean_up_checkpoints(self) -> None:
        now = self.clock()
        if self._last_cleanup is not None and now - self._last_cleanup < CLEANUP_EVERY:
            return
        self._last_cleanup = now
        for source in self.checkpoints.forget_vanished(FORGET_VANISHED_AFTER):
            log.info("forgot the checkpoint of %s: its file is gone", source)

    def _read(self, opened: _OpenFile) -> FileChunk | None:
        status = os.fstat(opened.descriptor)
        if status.st_size != opened.size or status.st_size < opened.offset:
            self._check_rewritten(opened, status)
        opened.size = status.st_size
        start = opened.offset
        data = os.pread(opened.descriptor, READ_BYTES, start)
        read_all = len(data) < READ_BYTES
        skipped = 0
        if opened.skipping_overlong:  # the rest of a line already taken, cut
            newline = data.find(b"\n")
            skipped = len(data) if newline < 0 else newline + 1
            opened.skipping_overlong = newline < 0
            data = data[skipped:]
        cut, took_every_line = self._cut(data)
        if cut == 0 and len(data) == READ_BYTES:  # no newline in a full read: overlong
            cut, opened.skipping_overlong = len(data), True
        elif took_every_line and read_all and self._take_partial_line(opened):
            cut = len(data)
        opened.offset = start + skipped + cut
        opened.at_end = read_all and opened.offset == start + skipped + len(data)
        if opened.at_end:
            self._close_if_done(opened)
        if opened.offset == start:
            return None
        piece = io.BytesIO(data[:cut])
        lines = list(read_lines(piece, start_offset=start + skipped))
        if opened.preamble and lines:
            lines, opened.preamble = opened.preamble + lines, []
        return FileChunk(opened.source, opened.path, lines, start, opened.offset)

    def _cut(self, data: bytes) -> tuple[int, bool]:
        """Bytes up to the end of at most `chunk_lines` complete lines; were they all?"""
        if data.count(b"\n") <= self.chunk_lines:
            return data.rfind(b"\n") + 1, True
        position = 0
        for _ in range(self.chunk_lines):
            position = data.index(b"\n", position) + 1
        return position, False

    def _take_partial_line(self, opened: _OpenFile) -> bool:
        """Whether a last line without its newline is taken now."""
        return not self.follow or self._detached_long_enough(opened)

    def _detached_long_enough(self, opened: _OpenFile) -> bool:
        return (
            opened.detached_since is not None
            and self.clock() - opened.detached_since >= self.close_detached_after
        )

    def _check_rewritten(self, opened: _OpenFile, status: os.stat_result) -> None:
        """Start over when the file was truncated or its first bytes changed."""
        head = os.pread(opened.descriptor, FINGERPRINT_BYTES, 0)
        known = opened.fingerprint
        same_start = Fingerprint.of_bytes(head[: known.length]) == known
        if status.st_size >= opened.offset and same_start:
            if len(head) > known.length:  # a short file grew: fingerprint more of it
                opened.fingerprint = Fingerprint.of_bytes(head)
                self.checkpoints.update(opened.source, fingerprint=opened.fingerprint)
            return
        log.info("%s was truncated or rewritten; reading it again from 0", opened.path)
        self._remember_closed(opened)
        fingerprint = Fingerprint.of_bytes(head)
        checkpoint = self.checkpoints.register(opened.path, *opened.key, fingerprint)
        opened.source = checkpoint.source
        opened.fingerprint = fingerprint
        opened.offset = 0
        opened.skipping_overlong = False

    def _close_if_done(self, opened: _OpenFile) -> None:
        if self.follow and not self._detached_long_enough(opened):
            return
        deleted = os.fstat(opened.descriptor).st_nlink == 0
        self._close(opened)
        if deleted:  # a renamed file keeps its checkpoint: a glob may find it again
            self.checkpoints.forget(opened.source)

    def _close(self, opened: _OpenFile) -> None:
        os.close(opened.descriptor)
        del self._open[opened.key]
        self._remember_closed(opened)

    def _remember_closed(self, opened: _OpenFile) -> None:
        progress = opened.progress()
        self._closed.append(
            FileProgress(progress.source, progress.path, progress.offset, progress.size, "closed")
        )
        del self._closed[:-100]  # a long-running follower sees many rotated generations
        self._newly_closed.append(opened.source)

    # ------------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        """One-shot mode: every matched file was read to its end."""
        with self._lock:
            return not self.follow and self._last_scan is not None and not self._open

    def take_closed(self) -> list[str]:
        """Sources closed since the last call (their per-file state can be dropped)."""
        with self._lock:
            closed, self._newly_closed = self._newly_closed, []
            return closed

    def progress(self) -> list[FileProgress]:
        """Open files first, then the most recently closed ones."""
        with self._lock:
            return [opened.progress() for opened in self._open.values()] + list(self._closed)

    def close(self) -> None:
        """Close every open file."""
        with self._lock:
            for opened in self._open.values():
                os.close(opened.descriptor)
            self._open.clear()
