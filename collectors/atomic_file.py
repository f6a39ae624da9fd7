"""Replacing a small state file so that a crash leaves either the old or the new content.

The content is written to a temporary file beside the target, fsync'd, renamed over the
target, and the directory is fsync'd so that the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


# Temporary names end in .tmp and start with a dot: `remove_leftovers` finds them.
def write_atomically(path: Path, content: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `content`; with `durable`, the new content survives a crash."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as sink:
        sink.write(content)
        if durable:
            sink.flush()
            os.fsync(sink.fileno())
    os.replace(temporary, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def remove_leftovers(directory: Path) -> None:
    """Delete temporary files that a crash in `write_atomically` left in `directory`."""
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def write_json_atomically(path: Path, data: Any, *, durable: bool = True) -> None:
    """`write_atomically` for a JSON document."""
    text = json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"
    write_atomically(path, text.encode("utf-8"), durable=durable)
