"""Splitting a syslog TCP stream into messages: RFC 6587 octet counting or newline framing.

A sender picks one framing for its connection, so it is recognised from the first byte
(RFC 6587 section 3.4): a digit starts an octet-counted frame (`MSG-LEN SP SYSLOG-MSG`,
what RFC 5425 prescribes over TLS), anything else (normally `<`) starts newline-delimited
messages (non-transparent framing: LF, with an optional CR before it, or NUL ends one).

Messages longer than `max_message_bytes` are cut to that length, flagged `truncated`, and
the rest of them skipped without being held in memory. An octet-counting header that is
not `1-9 digits, then a space` leaves no way to find the next frame: `FramingError`, and
the connection should be closed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LENGTH_DIGITS = 9  # a frame of up to 999 999 999 bytes; longer headers are garbage


class FramingError(ValueError):
    """The stream cannot be split into messages any more; carries the offending bytes."""

    def __init__(self, reason: str, data: bytes) -> None:
        super().__init__(f"{reason}: {data[:40]!r}")
        self.reason = reason
        self.data = data


@dataclass(frozen=True)
class Frame:
    """One syslog message from a stream: its bytes (without framing) and whether it was cut."""

    data: bytes
    truncated: bool = False


class StreamFramer:
    """Feeds on the bytes of one connection and returns the complete messages found."""

    def __init__(self, max_message_bytes: int) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, not {max_message_bytes}")
        self.max_message_bytes = max_message_bytes
        self.framing: str | None = None  # "octet-counting" or "newline", from the first byte
        self._buffer = bytearray()
        self._skipping = 0  # octet counting: bytes of a cut frame still to skip
        self._discarding_line = False  # newline: the rest of a cut line is being skipped

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """The messages completed by `data`; raises FramingError on a broken octet count."""
        self._buffer += data
        if self.framing is None:
            start = self._buffer.lstrip(b"\r\n\x00 ")
            if not start:
                self._buffer.clear()
                return []
            self._buffer = bytearray(start)
            self.framing = "octet-counting" if start[:1].isdigit() else "newline"
        if self.framing == "octet-counting":
            return self._octet_frames()
        return self._newline_frames()

    def finish(self) -> list[Frame]:
        """At the end of the stream: a last newline-framed message without its newline."""
        if self.framing != "newline" or self._discarding_line:
            self._buffer.clear()
            return []
        rest = bytes(self._buffer).rstrip(b"\r")
        self._buffer.clear()
        return [Frame(rest)] if rest.strip() else []

    # ------------------------------------------------------------------ octet counting

    def _octet_frames(self) -> list[Frame]:
        frames: list[Frame] = []
        buffer = self._buffer
        while True:
            if self._skipping:
                skipped = min(self._skipping, len(buffer))
                del buffer[:skipped]
                self._skipping -= skipped
                if self._skipping:
                    return frames
            # Some senders put a newline after each frame; it is not part of the next header.
            while buffer[:1] in (b"\n", b"\r"):
                del buffer[:1]
            if not buffer:
                return frames
            space = buffer.find(b" ", 0, MAX_LENGTH_DIGITS + 1)
            if space < 0:
                if len(buffer) > MAX_LENGTH_DIGITS or not bytes(buffer).isdigit():
                    raise FramingError("octet-counting frame without a valid length", bytes(buffer))
                return frames  # the header is still arriving
            header = bytes(buffer[:space])
            if not header.isdigit() or header.startswith(b"0"):
                raise FramingError("octet-counting frame without a valid length", bytes(buffer))
            length = int(header)
            body_start = space + 1
            if length > self.max_message_bytes:
                available = len(buffer) - body_start
                if available < self.max_message_bytes:
                    return frames  # wait for the part that is kept
                frames.append(
                    Frame(bytes(buffer[body_start : body_start + self.max_message_bytes]), True)
                )
                consumed = min(len(buffer), body_start + length)
                self._skipping = body_start + length - consumed
                del buffer[:consumed]
                continue
            end = body_start + length
            if len(buffer) < end:
                return frames
            frames.append(Frame(bytes(buffer[body_start:end])))
            del buffer[:end]

    # ------------------------------------------------------------------ newline

    def _newline_frames(self) -> list[Frame]:
        frames: list[Frame] = []
        buffer = self._buffer
        last = max(buffer.rfind(b"\n"), buffer.rfind(b"\x00"))
        if last >= 0:
            pieces = bytes(buffer[:last]).replace(b"\x00", b"\n").split(b"\n")
            del buffer[: last + 1]
            if self._discarding_line:  # the first piece ends a line already cut
                pieces = pieces[1:]
                self._discarding_line = False
            for piece in pieces:
                message = piece.rstrip(b"\r")
                if len(message) > self.max_message_bytes:
                    frames.append(Frame(message[: self.max_message_bytes], True))
                elif message.strip():
                    frames.append(Frame(message))
        if len(buffer) > self.max_message_bytes:
            if not self._discarding_line:
                frames.append(Frame(bytes(buffer[: self.max_message_bytes]), True))
                self._discarding_line = True
            buffer.clear()
        return frames
