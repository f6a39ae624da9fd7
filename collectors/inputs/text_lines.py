"""Reading text lines from files and streams, with byte offsets, bounded line length."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAX_LINE_BYTES = 1024 * 1024
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Line:
    """One line of input: its text, its starting byte offset, and whether it was cut."""

    text: str
    offset: int
    truncated: bool = False


def read_lines(
    stream: BinaryIO, start_offset: int = 0, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[Line]:
    """Yield decoded lines; invalid UTF-8 becomes U+FFFD, overlong lines are cut and flagged.

    A line longer than `max_bytes` is yielded once, truncated, and the rest of it skipped,
    so one hostile line can neither exhaust memory nor vanish unseen.
    """
    offset = start_offset
    while True:
        raw = stream.readline(max_bytes + 1)
        if not raw:
            return
        line_offset = offset
        offset += len(raw)
        truncated = False
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            truncated = True
            raw = raw[:max_bytes]
            while True:  # skip the remainder of the overlong line
                rest = stream.readline(READ_CHUNK)
                offset += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line_offset == 0:
            text = text.removeprefix("\ufeff")
        if text.strip():
            yield Line(text, line_offset, truncated)


def read_file_lines(path: Path, start_offset: int = 0) -> Iterator[Line]:
    """Lines of a file from a byte offset."""
    with path.open("rb") as stream:
        stream.seek(start_offset)
        yield from read_lines(stream, start_offset)
