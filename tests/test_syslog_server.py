"""The syslog server through the collector runtime: real sockets, the real node, exact counts."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from elasticsearch import Elasticsearch

from collectors.collector_config import SyslogListenerConfig
from collectors.inputs.syslog_server import SyslogServer, SyslogServerError
from collectors.normalise import Department
from collectors.runtime import CollectorRuntime, CollectorSnapshot, InputCounters
from lianfang.schema import format_timestamp
from lianfang.settings import Settings, load_settings
from lianfang.store import EventStore

MOMENT = format_timestamp(
    (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=12, minute=0, second=0)
)
FINANCE = Department("finance", "省财政厅", "finance")
MARKER = re.compile(r"[a-z]+ message \d+")


def message(kind: str, number: int, padding: str = "") -> bytes:
    return f"<134>1 {MOMENT} host-{kind} app - - - {kind} message {number}{padding}".encode()


def octet_counted(data: bytes) -> bytes:
    return str(len(data)).encode() + b" " + data


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "syslog.crt", directory / "syslog.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Collector:
    """A runtime with one syslog server, run in a thread."""

    def __init__(self, settings: Settings, server: SyslogServer, **options: float) -> None:
        server.bind()
        self.server = server
        self.runtime = CollectorRuntime(
            settings,
            EventStore.from_settings(settings),
            [],
            push_inputs=[server],
            status_seconds=0.2,
            **options,
        )
        self.result: list[CollectorSnapshot] = []
        self.thread = threading.Thread(target=lambda: self.result.append(self.runtime.run()))
        self.thread.start()

    def address(self, name: str) -> tuple[str, int]:
        return self.server.addresses[name]

    def counters(self, name: str) -> InputCounters:
        return next(item for item in self.runtime.snapshot().inputs if item.source == name)

    def stop(self) -> CollectorSnapshot:
        self.runtime.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()
        return self.result[0]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def send_udp(
    address: tuple[str, int], datagrams: list[bytes], source: str = "127.0.0.1", pace: bool = True
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        for index, datagram in enumerate(datagrams):
            sender.sendto(datagram, address)
            if pace and index % 25 == 24:
                time.sleep(0.02)  # a busy test machine must not overflow the receive buffer


def all_documents(client: Elasticsearch, store: EventStore) -> list[dict]:
    store.refresh()
    response = client.search(index=store.names.events_alias, size=5000, track_total_hits=True)
    return [hit["_source"] for hit in response["hits"]["hits"]]


def test_udp_tcp_and_tls_messages_are_indexed_exactly_once_with_departments_and_counts(
    settings: Settings,
    client: Elasticsearch,
    store: EventStore,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    cert, key = certificate
    listeners = [
        SyslogListenerConfig(
            name="udp", transport="udp", port=0, format="syslog", max_message_bytes=2048
        ),
        SyslogListenerConfig(
            name="tcp",
            transport="tcp",
            port=0,
            format="syslog",
            max_connections=2,
            max_message_bytes=2048,
        ),
        SyslogListenerConfig(name="tls", transport="tls", port=0, tls_cert=cert, tls_key=key),
    ]
    server = SyslogServer(settings, listeners, peers={"127.0.0.1/32": FINANCE})
    collector = Collector(settings, server)
    expected: list[str] = []
    try:
        # UDP from a known peer (one datagram too long) and from an unknown one (127.0.0.2).
        udp = [message("udp", n) for n in range(300)] + [message("udp", 300, "x" * 3000)]
        send_udp(collector.address("udp"), udp)
        send_udp(collector.address("udp"), [message("stranger", n) for n in range(20)], "127.0.0.2")
        expected += [f"udp message {n}" for n in range(301)]
        expected += [f"stranger message {n}" for n in range(20)]

        # TCP, newline framing, with a garbage line and a line too long; then octet counting.
        with socket.create_connection(collector.address("tcp")) as newline:
            lines = [message("newline", n) for n in range(300)]
            lines.insert(150, b"\xff\xfe\xfd binary junk \x01\x02")
            lines.append(message("newline", 300, "y" * 5000))
            newline.sendall(b"\n".join(lines) + b"\n")
        expected += [f"newline message {n}" for n in range(301)]
        with socket.create_connection(collector.address("tcp")) as counted:
            frames = [octet_counted(message("counted", n)) for n in range(300)]
            for start in range(0, len(frames), 7):  # frames split across writes
                counted.sendall(b"".join(frames[start : start + 7]))
        expected += [f"counted message {n}" for n in range(300)]

        # TLS, octet counting as RFC 5425 has it, certificate checked by the client.
        context = ssl.create_default_context(cafile=str(cert))
        host, port = collector.address("tls")
        with (
            socket.create_connection((host, port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as secure,
        ):
            secure.sendall(b"".join(octet_counted(message("tls", n)) for n in range(200)))
        expected += [f"tls message {n}" for n in range(200)]

        # The connection bound: two connections are held open, the third is closed at once.
        wait_for(lambda: collector.counters("tcp").details.get("connections") == 0, 10, "closes")
        held = [socket.create_connection(collector.address("tcp")) for _ in range(2)]
        for number, connection in enumerate(held):
            connection.sendall(message("held", number) + b"\n")
        expected += ["held message 0", "held message 1"]
        wait_for(lambda: collector.counters("tcp").details.get("connections") == 2, 10, "two")
        with socket.create_connection(collector.address("tcp")) as third:
            third.settimeout(10)
            with contextlib.suppress(ConnectionResetError):  # or closed by a reset
                assert third.recv(100) == b""  # closed by the server
        for connection in held:
            connection.close()

        # A broken octet count closes its connection.
        wait_for(lambda: collector.counters("tcp").details.get("connections") == 0, 10, "closes")
        with socket.create_connection(collector.address("tcp")) as broken:
            broken.sendall(b"12x not a frame length\n")
            broken.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                assert broken.recv(100) == b""

        wait_for(
            lambda: collector.runtime.snapshot().totals["indexed"] >= len(expected),
            90,
            f"{len(expected)} events",
        )
    finally:
        snapshot = collector.stop()

    documents = all_documents(client, store)
    found = Counter(MARKER.match(document["message"]).group() for document in documents)
    assert len(documents) == len(expected)
    assert found == Counter(expected)  # each message exactly once
    strangers = [d for d in documents if d["message"].startswith("stranger")]
    assert len(strangers) == 20
    assert all("organization" not in d and "unknown_peer" in d["tags"] for d in strangers)
    others = [d for d in documents if not d["message"].startswith("stranger")]
    assert all(d["organization"]["id"] == "finance" for d in others)
    assert all(d["labels"]["sector"] == "finance" for d in others)
    assert all(d["log"]["source"]["address"].startswith("127.0.0.1:") for d in others)
    truncated = [d for d in documents if "message_truncated" in d.get("tags", [])]
    assert sorted(d["message"][:14] for d in truncated) == ["newline messag", "udp message 30"]
    assert all(len(d["event"]["original"].encode()) == 2048 for d in truncated)

    by_name = {item.source: item for item in snapshot.inputs}
    udp_counts, tcp_counts, tls_counts = by_name["udp"], by_name["tcp"], by_name["tls"]
    assert (udp_counts.read, udp_counts.parsed, udp_counts.indexed) == (321, 321, 321)
    assert udp_counts.dropped == 0 and udp_counts.details["kernel_drops"] == 0
    assert udp_counts.details["truncated"] == 1
    assert udp_counts.details["unknown_peer_messages"] == 20
    assert udp_counts.details["unknown_peers"] == ["127.0.0.2"]
    assert udp_counts.details["departments"] == {"finance": 301, "-": 20}
    assert (tcp_counts.read, tcp_counts.parsed, tcp_counts.failed) == (604, 603, 1)
    assert tcp_counts.indexed == 603
    assert tcp_counts.details["refused_connections"] == 1
    assert tcp_counts.details["framing_errors"] == 1
    assert tcp_counts.details["truncated"] == 1
    assert tcp_counts.last_error and "octet-counting" in tcp_counts.last_error
    assert (tls_counts.read, tls_counts.indexed, tls_counts.format) == (200, 200, "syslog")
    assert snapshot.totals["dropped"] == 0
    assert snapshot.state == "stopped" and snapshot.spool["pending_events"] == 0
    dead = [
        json.loads(line)
        for path in settings.dead_letter_dir.glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [(d["stage"], d["source"]) for d in dead] == [("parse", "syslog:tcp:127.0.0.1")]
    assert "binary junk" in dead[0]["input"]


def test_tcp_reading_pauses_and_resumes_with_a_small_spool_and_loses_nothing(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    small = settings.model_copy(update={"spool_max_bytes": 150_000, "bulk_max_documents": 250})
    listeners = [SyslogListenerConfig(name="tcp", transport="tcp", port=0, format="syslog")]
    collector = Collector(small, SyslogServer(small, listeners, peers={"127.0.0.1/32": FINANCE}))
    count = 4000
    try:
        with socket.create_connection(collector.address("tcp")) as sender:
            for start in range(0, count, 500):
                batch = [message("steady", n, " " + "p" * 300) for n in range(start, start + 500)]
                sender.sendall(b"\n".join(batch) + b"\n")
        wait_for(lambda: collector.runtime.snapshot().totals["indexed"] >= count, 120, "all")
    finally:
        snapshot = collector.stop()
    assert snapshot.spool["full_waits"] >= 1  # the spool was full at times: reading paused
    (tcp,) = snapshot.inputs
    assert (tcp.read, tcp.spooled, tcp.indexed, tcp.dropped) == (count, count, count, 0)
    found = Counter(MARKER.match(d["message"]).group() for d in all_documents(client, store))
    assert found == Counter(f"steady message {n}" for n in range(count))


@pytest.fixture
def no_threads_left() -> Iterator[None]:
    """The server's loop and worker threads end with it."""
    before = set(threading.enumerate())
    yield
    left = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("syslog")]
    assert not left


@pytest.fixture
def unreachable(tmp_path: Path) -> Settings:
    """Settings whose Elasticsearch never answers, with a small spool."""
    return load_settings(
        es_url="http://127.0.0.1:1",
        index_prefix="lftest-unreachable",
        home_dir=tmp_path / "home",
        masking_key="syslog-test-masking-key-01",
        spool_max_bytes=400_000,
        bulk_max_documents=200,
    )


def accounted(counters: InputCounters) -> None:
    """Every message received is parsed, skipped, dead-lettered or dropped; none vanish."""
    details = counters.details
    assert details["buffered_messages"] == 0 and details["batches_in_flight"] == 0
    assert details["received"] == counters.read + details["dropped_queue_full"]
    assert counters.read == counters.parsed + counters.skipped + counters.failed
    assert counters.parsed == counters.spooled + details["dropped_spool_full"]
    assert details["dropped_on_error"] == 0
    assert counters.dropped == details["dropped_queue_full"] + details["dropped_spool_full"]


@pytest.mark.usefixtures("no_threads_left")
def test_a_full_spool_stops_tcp_reading_and_udp_drops_are_counted(
    unreachable: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    listeners = [
        SyslogListenerConfig(name="tcp", transport="tcp", port=0, format="syslog"),
        SyslogListenerConfig(name="udp", transport="udp", port=0, format="syslog"),
    ]
    server = SyslogServer(unreachable, listeners, peers={"127.0.0.0/8": FINANCE})
    collector = Collector(unreachable, server, drain_seconds=0.5, max_backoff_seconds=0.5)
    caplog.set_level(logging.WARNING, logger="collectors.inputs.syslog_server")
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16_384)
        sender.connect(collector.address("tcp"))
        sender.settimeout(1.0)
        sent = 0
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # the server stopped reading: the window closed
            while time.monotonic() - started < 60:
                sender.sendall(message("pressure", sent, " " + "z" * 200) + b"\n")
                sent += 1
        tcp = collector.counters("tcp")
        assert tcp.details["paused_connections"] == 1
        assert tcp.dropped == 0
        spool = collector.runtime.snapshot().spool
        assert spool["full_waits"] >= 1 and spool["used_bytes"] <= unreachable.spool_max_bytes
        assert tcp.spooled < sent  # the rest waits in socket buffers, not in memory

        datagrams = [message("datagram", n) for n in range(3000)]
        send_udp(collector.address("udp"), datagrams, pace=False)

        def all_datagrams_seen() -> bool:
            details = collector.counters("udp").details
            return details.get("received", 0) + (details.get("kernel_drops") or 0) >= 3000

        wait_for(all_datagrams_seen, 20, "the datagrams")
        wait_for(lambda: collector.counters("udp").dropped > 0, 10, "counted UDP drops")
        sender.close()
    finally:
        snapshot = collector.stop()
    by_name = {item.source: item for item in snapshot.inputs}
    for counters in by_name.values():
        accounted(counters)
    udp = by_name["udp"]
    assert udp.dropped > 0 and udp.spooled + udp.dropped == udp.details["received"]
    assert any("dropped" in record.getMessage() for record in caplog.records)
    assert snapshot.totals["dropped"] == sum(item.dropped for item in by_name.values())
    assert snapshot.spool["pending_events"] == snapshot.totals["spooled"]  # none delivered


def test_an_unusable_listener_is_a_configuration_error(
    unreachable: Settings, tmp_path: Path
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        server = SyslogServer(
            unreachable,
            [
                SyslogListenerConfig(transport="udp", port=0),
                SyslogListenerConfig(transport="tcp", port=port),
            ],
        )
        with pytest.raises(SyslogServerError, match=f"cannot listen on tcp 127.0.0.1:{port}"):
            server.bind()
        assert server.addresses == {}  # the UDP socket bound first was closed again
    finally:
        taken.close()
    (tmp_path / "empty.pem").write_text("")
    tls = SyslogListenerConfig(
        transport="tls", port=0, tls_cert=tmp_path / "empty.pem", tls_key=tmp_path / "empty.pem"
    )
    with pytest.raises(SyslogServerError, match="unusable TLS certificate"):
        SyslogServer(unreachable, [tls]).bind()
