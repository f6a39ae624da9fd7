"""`CheckpointStore`: how far each followed file is safely in Elasticsearch.

A checkpoint names one file by device and inode, plus a fingerprint of its first bytes so
that a new file which happens to reuse a deleted file's inode is not taken for it. Its
`offset` only advances when Elasticsearch has acknowledged every line before it (the
runtime calls `advance` when the spool batch that carried the offset is delivered), so a
restart from a checkpoint never skips a line; at worst it re-reads lines whose events are
then recognised as duplicates by their deterministic ids.

Each file gets a `source` when it is first seen: the name its events carry in
`Origin.source` and hence in their ids. The first file seen at a path is named by the
path (the same name `lianfang ingest` uses, so both commands give the same ids); a later
file at the same path (after a rotation or a truncation) is `<path>#<generation>`, so two
generations of a log never share ids even when they hold identical lines. The name is
persisted before any of the file's events are, so it is the same after a crash.

Everything lives in one JSON file, `<home>/checkpoints/checkpoints.json`, replaced
atomically (temporary file, fsync, rename): at once when a file is registered, renamed or
forgotten, and at most every `sync_seconds` (and on `sync`) for advancing offsets, since
an offset persisted a little late only means a few lines read again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from collectors.atomic_file import remove_leftovers, write_json_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoints.json"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 1024


@dataclass(frozen=True)
class Fingerprint:
    """A hash of a file's first `length` bytes (fewer than FINGERPRINT_BYTES while it is short)."""

    length: int
    digest: str

    @classmethod
    def of_bytes(cls, head: bytes) -> Fingerprint:
        """The fingerprint of the given leading bytes of a file."""
        return cls(len(head), hashlib.blake2b(head, digest_size=16).hexdigest())


def read_fingerprint(descriptor: int, length: int = FINGERPRINT_BYTES) -> Fingerprint:
    """Fingerprint the first `length` bytes (or fewer, if the file is shorter) of an open file."""
    return Fingerprint.of_bytes(os.pread(descriptor, length, 0))


@dataclass(frozen=True)
class FileCheckpoint:
    """One file's identity and its acknowledged position."""

    source: str
    path: str
    device: int
    inode: int
    offset: int
    fingerprint: Fingerprint
    generation: int
    updated: float


class CheckpointStore:
    """Persistent checkpoints of every file the collector reads; safe to share between threads."""

    def __init__(self, directory: Path, *, sync_seconds: float = 0.5) -> None:
        self.directory = directory
        self.path = directory / CHECKPOINT_FILE
        self.sync_seconds = sync_seconds
        self._lock = threading.Lock()
        self._unsynced = False
        self._last_save = time.monotonic()
        self._by_source: dict[str, FileCheckpoint] = {}
        # Highest generation ever given out per path: never reused, even after `forget`.
        self._generations: dict[str, int] = {}
        self._load()

    def _load(self) -> None:
        if self.directory.is_dir():
            remove_leftovers(self.directory)
        if not self.path.is_file():
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            for item in saved.get("files", []):
                item["fingerprint"] = Fingerprint(**item["fingerprint"])
                checkpoint = FileCheckpoint(**item)
                self._by_source[checkpoint.source] = checkpoint
            self._generations = {str(k): int(v) for k, v in saved.get("generations", {}).items()}
        except (OSError, ValueError, TypeError, KeyError) as error:
            # Starting over re-reads files (duplicates collapse by id); refusing to start
            # would stop collection altogether, which is worse.
            broken = self.path.with_suffix(f".broken-{int(time.time())}")
            self.path.replace(broken)
            log.error("checkpoints: %s is unreadable (%s); kept as %s", self.path, error, broken)
            self._by_source.clear()
            self._generations.clear()

    def _save(self) -> None:
        """Write every checkpoint (the caller holds the lock)."""
        self._unsynced = False
        self._last_save = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {
            "version": FORMAT_VERSION,
            "files": [asdict(checkpoint) for checkpoint in self._by_source.values()],
            "generations": self._generations,
        }
        write_json_atomically(self.path, data)

    def find(self, device: int, inode: int) -> FileCheckpoint | None:
        """The checkpoint of the file with this device and inode, if any."""
        with self._lock:
            for checkpoint in self._by_source.values():
                if checkpoint.device == device and checkpoint.inode == inode:
                    return checkpoint
        return None

    def get(self, source: str) -> FileCheckpoint | None:
        """The checkpoint of a source."""
        with self._lock:
            return self._by_source.get(source)

    def all(self) -> list[FileCheckpoint]:
        """Every checkpoint."""
        with self._lock:
            return list(self._by_source.values())

    def register(
        self, path: str, device: int, inode: int, fingerprint: Fingerprint
    ) -> FileCheckpoint:
        """Start a checkpoint at offset 0 for a newly seen file; persisted before returning.

        Any checkpoint of the same device and inode is replaced: that inode now holds
        another file (reused inode, or the file was truncated and rewritten).
        """
        with self._lock:
            generation = self._generations.get(path, -1) + 1
            self._generations[path] = generation
            source = path if generation == 0 else f"{path}#{generation}"
            for old in [
                c for c in self._by_source.values() if (c.device, c.inode) == (device, inode)
            ]:
                del self._by_source[old.source]
            checkpoint = FileCheckpoint(
                source=source,
                path=path,
                device=device,
                inode=inode,
                offset=0,
                fingerprint=fingerprint,
                generation=generation,
                updated=time.time(),
            )
            self._by_source[source] = checkpoint
            self._save()
        return checkpoint

    def advance(self, source: str, offset: int) -> bool:
        """Record that everything before `offset` is in Elasticsearch; never moves back.

        Persisted at most every `sync_seconds` (and by `sync`): after a crash, a file is
        read again from a slightly older offset, and its copies collapse by id.
        Returns False for an unknown source (a file forgotten meanwhile) or an older offset.
        """
        with self._lock:
            checkpoint = self._by_source.get(source)
            if checkpoint is None or offset <= checkpoint.offset:
                return False
            self._by_source[source] = replace(checkpoint, offset=offset, updated=time.time())
            self._unsynced = True
            if time.monotonic() - self._last_save >= self.sync_seconds:
                self._save()
        return True

    def sync(self) -> None:
        """Persist advances not yet written."""
        with self._lock:
            if self._unsynced:
                self._save()

    def update(
        self, source: str, *, path: str | None = None, fingerprint: Fingerprint | None = None
    ) -> None:
        """Record a file's new path (renamed by rotation) or its longer fingerprint."""
        with self._lock:
            checkpoint = self._by_source.get(source)
            if checkpoint is None:
                return
            changed = replace(
                checkpoint,
                path=path if path is not None else checkpoint.path,
                fingerprint=fingerprint if fingerprint is not None else checkpoint.fingerprint,
            )
            if changed != checkpoint:
                self._by_source[source] = changed
                self._save()

    def forget(self, source: str) -> None:
        """Drop a checkpoint (its file is gone); its generation number is not reused."""
        with self._lock:
            if self._by_source.pop(source, None) is not None:
                self._save()

    def forget_vanished(self, older_than_seconds: float) -> list[str]:
        """Drop checkpoints idle that long whose file is no longer at its recorded path.

        A file still at its path keeps its checkpoint however old (forgetting it would
        read it again as a new generation, with new ids); a rotated file renamed out of
        sight is forgotten once it has been idle that long. Returns the dropped sources.
        """
        cutoff = time.time() - older_than_seconds
        with self._lock:
            candidates = [c for c in self._by_source.values() if c.updated < cutoff]
        vanished = []
        for checkpoint in candidates:
            try:
                status = os.stat(checkpoint.path)
                present = (status.st_dev, status.st_ino) == (checkpoint.device, checkpoint.inode)
            except OSError:
                present = False
            if not present:
                vanished.append(checkpoint.source)
        with self._lock:
            for source in vanished:
                self._by_source.pop(source, None)
            if vanished:
                self._save()
        return vanished
