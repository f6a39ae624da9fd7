"""Following files without Elasticsearch: checkpoints, rotation, truncation, partial lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

from collectors.checkpoints import CheckpointStore, Fingerprint
from collectors.file_ingest import file_records
from collectors.inputs.file_follow import FileChunk, FileFollower
from collectors.inputs.text_lines import MAX_LINE_BYTES


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def follower(tmp_path: Path, pattern: str | Path, **options) -> FileFollower:
    options.setdefault("follow", True)
    options.setdefault("scan_seconds", 0)
    return FileFollower([str(pattern)], CheckpointStore(tmp_path / "checkpoints"), **options)


def drain(reader: FileFollower, rounds: int = 20) -> list[FileChunk]:
    chunks: list[FileChunk] = []
    for _ in range(rounds):
        chunks += reader.poll()
    return chunks


def texts(chunks: list[FileChunk]) -> list[str]:
    return [line.text for chunk in chunks for line in chunk.lines]


def acknowledge(reader: FileFollower, chunks: list[FileChunk]) -> None:
    for chunk in chunks:
        reader.checkpoints.advance(chunk.source, chunk.end_offset)
    reader.checkpoints.sync()


def test_one_shot_reads_everything_in_bounded_chunks_like_ingest(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(
        b"\xef\xbb\xbffirst\n\nsecond\r\n" + b"".join(b"n%d\n" % n for n in range(25)) + b"last"
    )
    reader = follower(tmp_path, log, follow=False, chunk_lines=10)
    chunks = drain(reader)
    assert reader.finished
    assert max(len(chunk.lines) for chunk in chunks) <= 10
    assert chunks[-1].end_offset == log.stat().st_size
    expected = [(text, origin) for text, origin in file_records(log)]
    got = [(line.text, line.offset) for chunk in chunks for line in chunk.lines]
    assert got == [(text, origin.offset) for text, origin in expected]
    assert {chunk.source for chunk in chunks} == {expected[0][1].source}  # same ids as ingest


def test_resumes_from_the_acknowledged_checkpoint_only(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {n}\n" for n in range(30)))
    first = follower(tmp_path, log, follow=False, chunk_lines=10)
    chunks = first.poll()
    acknowledge(first, chunks)  # the first 10 lines reached Elasticsearch
    first.poll()  # read but never acknowledged: a crash before delivery
    first.close()
    again = follower(tmp_path, log, follow=False, chunk_lines=10)
    assert texts(drain(again)) == [f"line {n}" for n in range(10, 30)]


def test_follow_holds_a_partial_line_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntw")
    reader = follower(tmp_path, log)
    assert texts(drain(reader, 3)) == ["one"]
    with log.open("a") as sink:
        sink.write("o\nthree\n")
    assert texts(drain(reader, 3)) == ["two", "three"]
    assert not reader.finished


def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    clock = FakeClock()
    log = tmp_path / "app.log"
    log.write_text("a1\na2\n")
    reader = follower(tmp_path, tmp_path / "app.log", clock=clock, close_detached_after=5)
    assert texts(drain(reader, 2)) == ["a1", "a2"]
    with log.open("a") as old:
        old.write("a3\n")  # written just before the rename, not yet read
        log.rename(tmp_path / "app.log.1")
        log.write_text("b1\n")
        old.write("a4\nlate-partial")  # the application still writes to its open file
        old.flush()
        chunks = drain(reader, 3)
    by_source: dict[str, list[str]] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source, []).extend(line.text for line in chunk.lines)
    path = str(log.resolve())
    assert by_source == {path: ["a3", "a4"], f"{path}#1": ["b1"]}
    clock.now += 6  # past close_detached_after: the old file's last line is taken, file closed
    assert texts(drain(reader, 2)) == ["late-partial"]
    assert [p.state for p in reader.progress()] == ["following", "closed"]
    assert reader.take_closed() == [path]


def test_a_glob_follows_a_renamed_file_under_its_new_name(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x1\n")
    reader = follower(tmp_path, tmp_path / "app.log*")
    chunks = drain(reader, 2)
    acknowledge(reader, chunks)
    log.rename(tmp_path / "app.log.1")
    with (tmp_path / "app.log.1").open("a") as sink:
        sink.write("x2\n")
    chunks = drain(reader, 2)
    assert texts(chunks) == ["x2"]
    assert {chunk.source for chunk in chunks} == {str(log.resolve())}  # same file, same ids
    saved = reader.checkpoints.get(str(log.resolve()))
    assert saved.path == str((tmp_path / "app.log.1").resolve())


def test_truncation_starts_again_at_zero_as_a_new_generation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("old 1\nold 2\nold 3\n")
    reader = follower(tmp_path, log)
    acknowledge(reader, drain(reader, 2))
    log.write_text("new 1\n")  # truncate and write: smaller than the read position
    chunks = drain(reader, 2)
    assert texts(chunks) == ["new 1"]
    assert chunks[0].source == f"{log.resolve()}#1"
    assert chunks[0].start_offset == 0


def test_copytruncate_that_grew_past_the_position_is_detected_by_fingerprint(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text("aaaa\n")
    reader = follower(tmp_path, log)
    drain(reader, 2)
    log.write_text("bbbb\ncccc\n")  # rewritten and already longer than the old position
    chunks = drain(reader, 2)
    assert texts(chunks) == ["bbbb", "cccc"]
    assert chunks[0].source.endswith("#1")


def test_a_reused_inode_with_other_content_is_a_new_file(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("first file\n")
    status = os.stat(log)
    store = CheckpointStore(tmp_path / "checkpoints")
    store.register(str(log.resolve()), status.st_dev, status.st_ino, Fingerprint.of_bytes(b"other"))
    store.advance(str(log.resolve()), 11)
    store.sync()
    reader = FileFollower([str(log)], CheckpointStore(tmp_path / "checkpoints"), follow=False)
    chunks = drain(reader, 2)
    assert texts(chunks) == ["first file"]
    assert chunks[0].source.endswith("#1")


def test_an_overlong_line_is_cut_once_and_its_rest_skipped(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"before\n" + b"x" * (MAX_LINE_BYTES * 2 + 10) + b"\nafter\n")
    reader = follower(tmp_path, log, follow=False)
    lines = [line for chunk in drain(reader) for line in chunk.lines]
    assert [line.text[:6] for line in lines] == ["before", "xxxxxx", "after"]
    assert lines[1].truncated and len(lines[1].text) == MAX_LINE_BYTES
    assert lines[2].offset == log.stat().st_size - len(b"after\n")


def test_new_files_matching_a_glob_are_picked_up_and_compressed_ones_ignored(
    tmp_path: Path,
) -> None:
    reader = follower(tmp_path, tmp_path / "*.log*")
    assert drain(reader, 2) == []
    (tmp_path / "a.log").write_text("alpha\n")
    (tmp_path / "b.log.1.gz").write_bytes(b"\x1f\x8b binary\n")
    (tmp_path / "c.log").write_text("gamma\n")
    assert sorted(texts(drain(reader, 2))) == ["alpha", "gamma"]


def test_checkpoints_are_written_atomically_and_generations_never_reused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    first = store.register("/var/log/x.log", 1, 10, Fingerprint.of_bytes(b"a"))
    store.forget(first.source)
    second = store.register("/var/log/x.log", 1, 11, Fingerprint.of_bytes(b"b"))
    assert (first.source, second.source) == ("/var/log/x.log", "/var/log/x.log#1")
    assert store.advance(second.source, 500)
    assert not store.advance(second.source, 400)  # never backwards
    store.sync()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    saved = json.loads((tmp_path / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == 500
    reloaded = CheckpointStore(tmp_path)
    assert reloaded.get(second.source).offset == 500
    assert reloaded.register("/var/log/x.log", 1, 12, Fingerprint.of_bytes(b"c")).generation == 2


def test_an_unreadable_checkpoint_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "checkpoints.json").write_text('{"files": [{"trunc')
    store = CheckpointStore(tmp_path)
    assert store.all() == []
    assert list(tmp_path.glob("checkpoints.broken-*"))


def test_checkpoints_of_vanished_files_are_forgotten_only_when_idle(tmp_path: Path) -> None:
    present = tmp_path / "present.log"
    present.write_text("x\n")
    status = os.stat(present)
    store = CheckpointStore(tmp_path / "checkpoints")
    kept = store.register(str(present), status.st_dev, status.st_ino, Fingerprint.of_bytes(b"x"))
    gone = store.register(str(tmp_path / "rotated.log.3"), 1, 2, Fingerprint.of_bytes(b"y"))
    assert store.forget_vanished(3600) == []  # both were just updated
    assert store.forget_vanished(-1) == [gone.source]
    assert store.get(kept.source) is not None  # still at its path: kept however old
    assert CheckpointStore(tmp_path / "checkpoints").get(gone.source) is None


def test_header_lines_are_replayed_when_resuming_mid_file(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_text("#separator \\x09\n#fields\ta\tb\n1\t2\n3\t4\n")
    first = follower(tmp_path, log, follow=False, chunk_lines=3)
    acknowledge(first, [first.poll()[0]])  # headers and "1 2" are in the index
    first.close()
    again = follower(tmp_path, log, follow=False)
    chunks = drain(again)
    lines = [(line.text, line.offset) for chunk in chunks for line in chunk.lines]
    assert lines == [("#separator \\x09", 0), ("#fields\ta\tb", 16), ("3\t4", 32)]
    assert chunks[0].start_offset == 32 and chunks[0].end_offset == log.stat().st_size
