"""The disk spool: order, durability across reopen, torn tails, quota and back-pressure."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from collectors.spool import DiskSpool, SpoolFull, SpoolLocked, encode_event
from lianfang.schema import Event, Origin


def events(first: int, count: int, source: str = "test.log") -> list[Event]:
    return [
        Event(
            document={"@timestamp": "2026-11-28T03:00:00.000Z", "message": f"line {n}"},
            origin=Origin(source, n * 100),
        )
        for n in range(first, first + count)
    ]


def messages(batch) -> list[str]:
    return [event.document["message"] for event in batch.events]


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.jsonl"))


def test_batches_come_back_in_order_with_their_payload(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        spool.put(events(0, 3), {"source": "a", "offset": 300})
        spool.put(events(3, 2), {"source": "a", "offset": 500})
        first = spool.get(timeout=1)
        second = spool.get(timeout=1)
        assert spool.get(timeout=0.05) is None
        assert messages(first) == ["line 0", "line 1", "line 2"]
        assert first.ack == {"source": "a", "offset": 300}
        assert messages(second) == ["line 3", "line 4"]
        assert first.events[1].id == events(1, 1)[0].id  # ids survive the round trip
        assert first.events[1].origin == Origin("test.log", 100)
        spool.ack(first)
        spool.ack(second)
        assert spool.empty
        stats = spool.stats()
        assert (stats.written_events, stats.acknowledged_events, stats.used_bytes) == (5, 5, 0)


def test_unacknowledged_batches_are_delivered_again_after_reopening(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        for n in range(3):
            spool.put(events(n * 10, 2), {"batch": n})
        spool.ack(spool.get(timeout=1))
        spool.get(timeout=1)  # taken but never acknowledged: a crash during delivery
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.stats().pending_batches == 2
        assert [spool.get(timeout=1).ack["batch"] for _ in range(2)] == [1, 2]


def test_events_read_back_from_disk_equal_those_handed_over_in_memory(tmp_path: Path) -> None:
    odd = '省财政厅 \u2028 tab\t quote" back\\slash \udcff emoji 🛡'
    original = Event(
        document={"@timestamp": "2026-11-28T03:00:00.000Z", "message": odd},
        origin=Origin("数据.log", 7),
    )
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        spool.put([original])
        in_memory = spool.get(timeout=1).events[0]
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        from_disk = spool.get(timeout=1).events[0]
    for event in (in_memory, from_disk):
        assert event.document == original.document
        assert (event.id, event.origin) == (original.id, original.origin)


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id":"x","source":"s","offset":1,"document":{"mess',  # torn event line
        b'{"id":"x","source":"s","offset":1,"document":{}}\n',  # a batch without its marker
        b'{"id":"x","source":"s","offset":1,"document":{}}\n{"batch":9,"ev',  # torn marker
    ],
)
def test_a_torn_tail_is_detected_cut_and_skipped(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        spool.put(events(0, 2), {"offset": 1})
        spool.put(events(2, 2), {"offset": 2})
    segment = segment_files(tmp_path)[-1]
    intact_size = segment.stat().st_size
    with segment.open("ab") as damaged:
        damaged.write(tail)
    with caplog.at_level(logging.WARNING), DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        assert "incomplete batch" in caplog.text
        assert spool.stats().torn_tails_discarded == 1
        assert segment.stat().st_size == intact_size
        assert [b.ack["offset"] for b in (spool.get(timeout=1), spool.get(timeout=1))] == [1, 2]
        assert spool.get(timeout=0.05) is None
        spool.put(events(4, 1), {"offset": 3})  # appending after the cut works
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        assert [spool.get(timeout=1).ack["offset"] for _ in range(3)] == [1, 2, 3]


def test_a_damaged_line_inside_a_batch_is_skipped_not_fatal(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        spool.put(events(0, 3))
    segment = segment_files(tmp_path)[0]
    lines = segment.read_bytes().split(b"\n")
    lines[1] = b"{" + b"\x00" * (len(lines[1]) - 1)  # bit rot, same length
    segment.write_bytes(b"\n".join(lines))
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        batch = spool.get(timeout=1)
        assert messages(batch) == ["line 0", "line 2"]
        assert spool.stats().corrupt_lines == 1
        spool.ack(batch)


def test_quota_warns_at_80_percent_then_refuses_or_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch_size = len(b"".join(encode_event(e) for e in events(0, 10)))
    quota = batch_size * 5
    with caplog.at_level(logging.WARNING), DiskSpool(tmp_path, max_bytes=quota) as spool:
        for n in range(4):
            spool.put(events(n * 10, 10))
        assert spool.stats().high_water_warnings == 1
        assert "above 80 % of its quota" in caplog.text
        with pytest.raises(SpoolFull):
            spool.put(events(40, 10), block=False)
        with pytest.raises(SpoolFull):
            spool.put(events(40, 10), timeout=0.1)
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(SpoolFull):
            spool.put(events(40, 10), cancel=cancel)
        assert spool.stats().full_refusals == 3

        blocked = threading.Thread(target=spool.put, args=(events(40, 10),))
        blocked.start()
        time.sleep(0.3)
        assert blocked.is_alive(), "a full spool must hold the writer back"
        spool.ack(spool.get(timeout=1))  # the sender makes room
        blocked.join(timeout=5)
        assert not blocked.is_alive()
        stats = spool.stats()
        assert stats.pending_batches == 4
        assert stats.used_bytes <= quota
        assert stats.full_waits >= 1


def test_an_oversized_batch_is_accepted_into_an_empty_spool(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=100) as spool:
        spool.put(events(0, 50), block=False)
        with pytest.raises(SpoolFull):
            spool.put(events(50, 1), block=False)
        spool.ack(spool.get(timeout=1))
        spool.put(events(50, 1), block=False)


def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20, segment_bytes=2000) as spool:
        for n in range(20):
            spool.put(events(n * 5, 5))
        assert len(segment_files(tmp_path)) > 3
        for _ in range(19):
            spool.ack(spool.get(timeout=1))
        spool.sync()
        assert len(segment_files(tmp_path)) == 1  # only the segment holding the last batch
        spool.ack(spool.get(timeout=1))
    assert [path.stat().st_size for path in segment_files(tmp_path)] == [0]  # closed empty
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.empty
        spool.put(events(0, 1))
        assert messages(spool.get(timeout=1)) == ["line 0"]


def test_acknowledgements_must_follow_the_order(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20) as spool:
        spool.put(events(0, 1))
        spool.put(events(1, 1))
        spool.get(timeout=1)
        second = spool.get(timeout=1)
        with pytest.raises(ValueError, match="in order"):
            spool.ack(second)


def test_one_process_per_spool(tmp_path: Path) -> None:
    with DiskSpool(tmp_path, max_bytes=1 << 20), pytest.raises(SpoolLocked):
        DiskSpool(tmp_path, max_bytes=1 << 20)
    DiskSpool(tmp_path, max_bytes=1 << 20).close()  # free again once closed
