"""Real EVTX files through read_evtx and the `windows` format, and damaged-file behaviour.

The shared evtx-attack-samples folder (277 files from ATT&CK technique simulations) must
parse completely; the damage tests cut and corrupt a copy of one sample in tmp_path.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from collectors.formats import detect_format, get_format
from collectors.inputs.evtx_file import (
    CHUNK_SIZE,
    EVTX_ERROR_KEY,
    FILE_HEADER_SIZE,
    NotAnEvtxFile,
    read_evtx,
)
from collectors.log_format import ParseContext, ParseError
from collectors.normalise import Normaliser
from collectors.pipeline import IngestPipeline
from lianfang.dead_letter import DeadLetterFile

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "evtx-attack-samples"
# 15 chunks, 565 records: large enough to cut and corrupt in the middle.
MULTI_CHUNK_SAMPLE = "AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx"
# Records the format is expected to refuse, by "file name:record id" -> why. None today.
EXPECTED_REFUSALS: dict[str, str] = {}

WINDOWS = get_format("windows")
RECORD_MAGIC = b"**\x00\x00"


def sample_files() -> list[Path]:
    if not SAMPLES.is_dir():
        pytest.skip(f"shared EVTX samples not present at {SAMPLES}")
    files = sorted(SAMPLES.rglob("*.evtx"))
    if not files:
        pytest.skip(f"no .evtx files under {SAMPLES}")
    return files


def multi_chunk_sample() -> bytes:
    path = SAMPLES / MULTI_CHUNK_SAMPLE
    if not path.is_file():
        pytest.skip(f"sample {path} not present")
    return path.read_bytes()


def read_all(path: Path) -> tuple[list[dict], list[dict]]:
    """(decoded records, damage markers) of one file."""
    records, markers = [], []
    for record, _origin in read_evtx(path):
        (markers if EVTX_ERROR_KEY in record else records).append(record)
    return records, markers


def test_every_shared_sample_parses() -> None:
    files = sample_files()
    context = ParseContext()
    records = 0
    refused: dict[str, str] = {}
    damaged: list[str] = []
    datasets: Counter[str] = Counter()
    for path in files:
        for record, origin in read_evtx(path):
            records += 1
            if EVTX_ERROR_KEY in record:
                damaged.append(f"{path.name}:{origin.offset}: {record[EVTX_ERROR_KEY]}")
                continue
            try:
                document = WINDOWS.parse(record, context)
            except ParseError as error:
                refused[f"{path.name}:{origin.offset}"] = error.reason
                continue
            assert document is not None
            datasets[document["event"]["dataset"]] += 1
            assert document["winlog"]["event_id"] == document["event"]["code"]
            json.dumps(document)  # storable as it is
    print(
        f"\n{len(files)} EVTX files, {records} records, {sum(datasets.values())} parsed, "
        f"{len(refused)} refused, {len(damaged)} damaged; datasets: {dict(datasets.most_common())}"
    )
    assert not damaged, damaged[:10]
    unexpected = {key: reason for key, reason in refused.items() if key not in EXPECTED_REFUSALS}
    assert not unexpected, list(unexpected.items())[:10]
    assert sum(datasets.values()) == records - len(refused)


def test_samples_are_detected_as_windows() -> None:
    path = sample_files()[0]
    first = [record for record, _ in zip(read_evtx(path), range(5), strict=False)]
    assert detect_format(record for record, _origin in first).name == "windows"


def test_origin_offset_is_the_record_header_id() -> None:
    path = sample_files()[0]
    pairs = list(read_evtx(path))
    assert all(origin.source == str(path) for _record, origin in pairs)
    offsets = [origin.offset for _record, origin in pairs]
    last_record = pairs[-1][0]
    # This file was exported: its record headers are renumbered 1..n while each
    # System/EventRecordID (winlog.record_id) keeps the id from the original log.
    assert offsets == list(range(1, len(offsets) + 1))
    assert last_record["Event"]["System"]["EventRecordID"] != offsets[-1]


def test_truncated_file_yields_its_records_and_reports_the_cut(tmp_path: Path) -> None:
    data = multi_chunk_sample()
    full = tmp_path / "full.evtx"
    full.write_bytes(data)
    all_records, _ = read_all(full)
    cut = tmp_path / "cut.evtx"
    # Keep the header, four whole chunks and half of the fifth.
    cut.write_bytes(data[: FILE_HEADER_SIZE + 4 * CHUNK_SIZE + CHUNK_SIZE // 2])
    records, markers = read_all(cut)
    assert 0 < len(records) < len(all_records)
    assert records == all_records[: len(records)]
    assert len(markers) == 1
    reason = markers[0][EVTX_ERROR_KEY]
    assert "truncated" in reason and "15 chunks" in reason and "4 complete" in reason
    with pytest.raises(ParseError, match="damaged EVTX data: file truncated"):
        WINDOWS.parse(markers[0], ParseContext())


def test_damaged_record_is_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    data = bytearray(multi_chunk_sample())
    second_chunk = FILE_HEADER_SIZE + CHUNK_SIZE
    record_starts = [
        offset
        for offset in range(second_chunk + 512, second_chunk + CHUNK_SIZE)
        if data[offset : offset + 4] == RECORD_MAGIC
    ]
    victim = record_starts[5]
    data[victim + 24 : victim + 60] = b"\xff" * 36  # garbage where the BinXML starts
    damaged = tmp_path / "damaged.evtx"
    damaged.write_bytes(bytes(data))
    results = list(read_evtx(damaged))
    markers = [(record, origin) for record, origin in results if EVTX_ERROR_KEY in record]
    assert len(markers) == 1
    marker, origin = markers[0]
    assert "record number" in marker[EVTX_ERROR_KEY]
    assert origin.offset > 0
    ids = [origin.offset for record, origin in results if EVTX_ERROR_KEY not in record]
    assert len(ids) == 564 and max(ids) > origin.offset  # records after the damage are read


def test_damaged_chunk_header_skips_only_that_chunk(tmp_path: Path) -> None:
    data = bytearray(multi_chunk_sample())
    second_chunk = FILE_HEADER_SIZE + CHUNK_SIZE
    data[second_chunk : second_chunk + 8] = b"XXXXXXXX"
    damaged = tmp_path / "bad-chunk.evtx"
    damaged.write_bytes(bytes(data))
    records, markers = read_all(damaged)
    assert len(markers) == 1 and "chunk" in markers[0][EVTX_ERROR_KEY]
    full = tmp_path / "full.evtx"
    full.write_bytes(multi_chunk_sample())
    all_records, _ = read_all(full)
    assert 0 < len(records) < len(all_records)
    assert records[-1] == all_records[-1]  # the chunks after the damaged one are read


@pytest.mark.parametrize(
    "content", [b"", b"hello world" * 100, b"ElfFile", b"XXXXXXXX" + b"\x00" * 4088]
)
def test_not_an_evtx_file_is_refused_up_front(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not.evtx"
    path.write_bytes(content)
    with pytest.raises(NotAnEvtxFile, match="not an EVTX file"):
        list(read_evtx(path))


def test_damage_reaches_the_dead_letter_file(tmp_path: Path) -> None:
    data = multi_chunk_sample()
    cut = tmp_path / "cut.evtx"
    cut.write_bytes(data[: FILE_HEADER_SIZE + 2 * CHUNK_SIZE + 100])
    dead_letters = DeadLetterFile(tmp_path / "dead")
    pipeline = IngestPipeline(
        normaliser=Normaliser(), dead_letters=dead_letters, context=ParseContext()
    )
    events = list(pipeline.events(read_evtx(cut)))
    assert events and pipeline.report.parse_failed == 1
    assert pipeline.report.formats == {"windows": len(events)}
    (letter,) = [json.loads(line) for line in dead_letters.current_path.read_text().splitlines()]
    assert letter["source"] == str(cut)
    assert letter["reason"].startswith("windows: damaged EVTX data: file truncated")


def test_user_data_fields_are_also_event_data_for_sigma() -> None:
    """An event with UserData only (TerminalServices 21): its fields under event_data too."""
    record = {
        "Event": {
            "System": {
                "Provider": {
                    "#attributes": {
                        "Name": "Microsoft-Windows-TerminalServices-LocalSessionManager"
                    }
                },
                "EventID": 21,
                "Channel": "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
                "Computer": "WS-01",
                "EventRecordID": 7,
                "TimeCreated": {"#attributes": {"SystemTime": "2021-03-01T10:00:00.000000Z"}},
            },
            "UserData": {
                "EventXML": {
                    "#attributes": {"xmlns": "Event_NS"},
                    "User": "CORP\\bob",
                    "SessionID": "2",
                    "Address": "16777216",
                }
            },
        }
    }
    winlog = WINDOWS.parse(record, ParseContext())["winlog"]
    assert winlog["user_data"] == {
        "User": "CORP\\bob",
        "SessionID": "2",
        "Address": "16777216",
        "xml_name": "EventXML",
    }
    assert winlog["event_data"] == {"User": "CORP\\bob", "SessionID": "2", "Address": "16777216"}
    # An event with EventData keeps only its own event data.
    record["Event"]["EventData"] = {"Reason": "1"}
    assert WINDOWS.parse(record, ParseContext())["winlog"]["event_data"] == {"Reason": "1"}
