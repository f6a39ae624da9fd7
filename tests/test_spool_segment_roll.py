"""The disk spool when a sender that keeps up acknowledges a segment before the writer rolls.

Found by the syslog server's back-pressure test: a batch that fills the write segment is
acknowledged before the next `put` opens a new segment; the next batch then starts at
(new segment, 0) and must still be acknowledged in order.
"""

from __future__ import annotations

from pathlib import Path

from collectors.spool import DiskSpool
from lianfang.schema import Event, Origin

SEGMENT_BYTES = 64 * 1024


def batch(number: int, size: int = 150) -> list[Event]:
    """About 100 KB of events: more than one segment."""
    return [
        Event(
            {"message": "x" * 600, "n": index},
            Origin("roll", number * size + index),
            f"{number}-{index}",
        )
        for index in range(size)
    ]


def segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("segment-*"))


def test_a_caught_up_sender_acknowledges_across_segment_rolls(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=10_000_000, segment_bytes=SEGMENT_BYTES)
    delivered = []
    for number in range(5):
        spool.put(batch(number))
        taken = spool.get(timeout=1)
        assert taken is not None and taken.sequence == number
        spool.ack(taken)  # every batch fills a segment; the next put rolls after this ack
        delivered.extend(event.id for event in taken.events)
    spool.sync()
    stats = spool.stats()
    assert (stats.pending_batches, stats.pending_events, stats.used_bytes) == (0, 0, 0)
    assert stats.acknowledged_events == len(delivered) == len(set(delivered)) == 750
    assert len(segments(tmp_path)) == 1  # the acknowledged segments were deleted
    spool.close()
    reopened = DiskSpool(tmp_path, max_bytes=10_000_000, segment_bytes=SEGMENT_BYTES)
    assert reopened.empty and reopened.get(timeout=0.1) is None
    reopened.close()


def test_a_batch_after_the_roll_is_delivered_again_after_a_restart(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=10_000_000, segment_bytes=SEGMENT_BYTES)
    spool.put(batch(0))
    first = spool.get(timeout=1)
    assert first is not None
    spool.ack(first)
    spool.put(batch(1))  # rolls to a new segment
    second = spool.get(timeout=1)
    assert second is not None and second.start.offset == 0
    spool.close()  # crash-like: the second batch was taken but never acknowledged
    reopened = DiskSpool(tmp_path, max_bytes=10_000_000, segment_bytes=SEGMENT_BYTES)
    again = reopened.get(timeout=1)
    assert again is not None
    assert [event.id for event in again.events] == [event.id for event in second.events]
    reopened.ack(again)
    assert reopened.empty
    reopened.close()
