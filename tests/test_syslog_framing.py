"""Syslog stream framing, peer departments and the collector configuration: pure logic."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from collectors.asset_inventory import AssetInventory
from collectors.collector_config import (
    CollectorConfigError,
    load_collector_config,
    settings_from_file,
)
from collectors.inputs.stdin_stream import StreamLines
from collectors.inputs.syslog_framing import Frame, FramingError, StreamFramer
from collectors.inputs.text_lines import read_lines
from collectors.normalise import Department
from collectors.peer_departments import PeerDepartments

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "collector.example.toml"


def feed_in_pieces(framer: StreamFramer, data: bytes, size: int) -> list[Frame]:
    frames = []
    for start in range(0, len(data), size):
        frames.extend(framer.feed(data[start : start + size]))
    return frames + framer.finish()


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_newline_framing_whatever_the_read_sizes(piece: int) -> None:
    data = b"<13>first\r\n<13>second\n\n<13>third\x00<13>last without newline"
    frames = feed_in_pieces(StreamFramer(1024), data, piece)
    assert [f.data for f in frames] == [
        b"<13>first",
        b"<13>second",
        b"<13>third",
        b"<13>last without newline",
    ]
    assert not any(f.truncated for f in frames)


@pytest.mark.parametrize("piece", [1, 2, 5, 1000])
def test_octet_counting_whatever_the_read_sizes(piece: int) -> None:
    messages = [b"<13>1 - - - - - - a", b"<13>with\nnewline inside", "<13>中文".encode()]
    data = b"".join(str(len(m)).encode() + b" " + m for m in messages) + b"\n"
    framer = StreamFramer(1024)
    frames = feed_in_pieces(framer, data, piece)
    assert framer.framing == "octet-counting"
    assert [f.data for f in frames] == messages


def test_an_oversize_message_is_cut_flagged_and_the_next_one_is_intact() -> None:
    long = b"<13>" + b"x" * 5000
    newline = StreamFramer(1000)
    frames = feed_in_pieces(newline, long + b"\n<13>next\n", 300)
    assert [(len(f.data), f.truncated) for f in frames] == [(1000, True), (8, False)]
    counted = StreamFramer(1000)
    data = str(len(long)).encode() + b" " + long + b"8 <13>next"
    frames = feed_in_pieces(counted, data, 333)
    assert [(f.data[:4], len(f.data), f.truncated) for f in frames] == [
        (b"<13>", 1000, True),
        (b"<13>", 8, False),
    ]


@pytest.mark.parametrize("garbage", [b"12x <13>bad", b"1234567890123 <13>", b"0 <13>zero", b"9"])
def test_a_broken_octet_count_is_a_framing_error(garbage: bytes) -> None:
    framer = StreamFramer(1000)
    with pytest.raises(FramingError):
        framer.feed(garbage + b"x" * 20)


def test_binary_garbage_in_newline_mode_is_passed_on_as_messages() -> None:
    frames = feed_in_pieces(StreamFramer(100), b"\xff\xfe\x00garbage\x01\x02\n<13>ok\n", 4)
    assert [f.data for f in frames] == [b"\xff\xfe", b"garbage\x01\x02", b"<13>ok"]


@pytest.mark.parametrize("piece", [1, 5, 64, 10_000])
def test_stdin_lines_match_read_lines_offsets(piece: int) -> None:
    data = "\ufeffone\r\ntwo\n\nthree ü\n".encode() + b"y" * 50 + b"\nfour"
    expected = list(read_lines(io.BytesIO(data), 0, 20))
    splitter = StreamLines(max_line_bytes=20)
    lines = []
    for start in range(0, len(data), piece):
        lines.extend(splitter.feed(data[start : start + piece]))
    lines.extend(splitter.finish())
    assert [(line.text, line.offset, line.truncated) for line in lines] == [
        (line.text, line.offset, line.truncated) for line in expected
    ]
    assert splitter.offset == len(data)


def test_peer_departments_prefer_networks_then_default_then_inventory() -> None:
    finance, relay = Department("finance", "省财政厅"), Department("finance-relay")
    inventory = AssetInventory.from_entries(
        [{"match": ["10.30.0.0/16"], "organization_id": "energy", "sector": "energy"}]
    )
    peers = PeerDepartments(
        {"10.20.0.0/16": finance, "10.20.9.0/24": relay, "::ffff:10.50.0.0/112": finance},
        inventory,
    )
    assert peers.department_of("10.20.1.1") == finance
    assert peers.department_of("10.20.9.7") == relay  # longest prefix
    assert peers.department_of("10.30.1.1") == Department("energy", None, "energy")
    assert peers.department_of("10.50.0.1") == finance
    assert peers.department_of("192.0.2.1") is None
    dedicated = PeerDepartments({"10.20.0.0/16": finance}, inventory, default=relay)
    assert dedicated.department_of("10.30.1.1") == relay  # the listener's own department
    assert dedicated.department_of("10.20.0.1") == finance


def test_the_example_configuration_parses_and_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_collector_config(EXAMPLE_CONFIG)
    assert {"gov-cloud", "finance", "energy", "transport"} <= set(config.departments)
    assert len(config.files) >= 3 and any(not item.follow for item in config.files)
    assert {item.transport for item in config.syslog} == {"udp", "tcp", "tls"}
    assert len(set(config.input_names)) == len(config.input_names)
    assert config.peer_networks()["10.20.0.0/16"] == Department("finance", "省财政厅", "finance")
    monkeypatch.delenv("LIANFANG_ES_URL", raising=False)
    settings = settings_from_file(EXAMPLE_CONFIG)
    assert settings.masking.departments["energy"].enabled is False
    assert settings.asset_inventory_path == Path("config/assets.example.yaml")
    assert settings.spool_max_bytes == 2 * 1024**3
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text())
    assert set(raw) - {"collector", "masking"} <= set(type(settings).model_fields)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ('[[collector.files]]\npaths = ["/x"]\ndepartment = "nobody"\n', "'nobody' is not in"),
        ('[[collector.files]]\npaths = ["/x"]\nformat = "nonsense"\n', "unknown format"),
        ('[[collector.syslog]]\ntransport = "tls"\nport = 6514\n', "needs tls_cert"),
        ("[[collector.syslog]]\nport = 5514\n[[collector.syslog]]\nport = 5514\n", "both listen"),
        ('[[collector.syslog]]\nport = 1\ncolour = "red"\n', "colour"),
        ('[collector.peers]\n"10.0.0.1/8" = "finance"\n', "not a network"),
        ("[collector]\n", "no input"),
    ],
)
def test_configuration_errors_name_the_problem(tmp_path: Path, change: str, reason: str) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[collector.departments.finance]\nname = "省财政厅"\n' + change)
    with pytest.raises(CollectorConfigError) as caught:
        load_collector_config(path)
    assert reason in str(caught.value)
    assert str(path) in str(caught.value)
