"""The syslog server: UDP, TCP and TLS listeners feeding the collector runtime's spool.

`SyslogServer` is a `PushInput` of `CollectorRuntime`: its messages go through the same
pipeline (parse, normalise, assets, intelligence, masking), the same disk spool and the
same BulkWriter as collected files, and appear in the same status counters.

- **Listeners.** One asyncio event loop (its own thread) serves every listener. UDP: one
  message per datagram. TCP and TLS: RFC 6587 octet counting or newline framing, told
  apart per connection by its first byte (collectors/inputs/syslog_framing.py). TLS uses
  the listener's certificate and key (and, when `tls_client_ca` is set, requires client
  certificates signed by it). Sockets are bound by `bind`, before the runtime starts, so
  a port in use or an unreadable certificate is a configuration error, not a dead thread.
- **Bounds.** At most `max_connections` connections per TCP/TLS listener: more are
  closed at once and counted (`refused_connections`); connections idle longer than
  `idle_timeout_seconds` are closed (`idle_closed`). A message longer than
  `max_message_bytes` is cut to that size, counted (`truncated`) and its event tagged
  `message_truncated`. Unframeable TCP input (a broken octet count) closes the connection
  (`framing_errors`); bytes that frame but do not parse are dead-lettered like any line.
  A last message without its newline is taken when the sender closes its side; one cut
  off by a reset or by the server's own close is not a message (`incomplete_at_close`).
- **Origin and department.** An event's origin is `syslog:<transport>:<peer ip>` with a
  per-server sequence as its offset (starting at the start time in nanoseconds, so a
  restarted server never reuses one: event ids hash origin and message). The department
  comes from the peer's address: the configured peer networks, else the listener's own
  department, else the asset inventory. A peer none of them knows is ingested without a
  department, tagged `unknown_peer`, and counted (`unknown_peer_messages`, and the first
  addresses in `unknown_peers`). `log.source.address` holds the sender's address and port.
- **Back-pressure and drops.** Messages are batched (up to `bulk_max_documents`, or
  0.2 s) and parsed and spooled by one worker thread per listener, at most two batches
  at a time. When the spool is full, TCP and TLS stop reading (the senders' TCP windows
  close) until it has room again; UDP cannot wait: datagrams arriving while the batches
  are full are dropped, and so are batches the full spool refuses, each counted in the
  listener's `dropped` (with `dropped_queue_full` / `dropped_spool_full`) and logged as a
  warning, never silently. Datagrams the kernel dropped because its receive buffer was
  full are read from /proc/net/udp (`kernel_drops`).
- **Stopping.** `stop` closes the sockets, spools what was received (TCP waits for room
  until the runtime's drain time is over; what is still refused then is counted as
  dropped) and returns. Datagrams still in the kernel's buffer at that moment are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.collector_config import SyslogListenerConfig
from collectors.inputs.pipelines import PipelineFactory, run_pipeline
from collectors.inputs.syslog_framing import FramingError, StreamFramer
from collectors.intel_hook import IndicatorLookup
from collectors.normalise import Department
from collectors.peer_departments import PeerDepartments
from collectors.pipeline import IngestPipeline
from collectors.runtime import InputFeed
from lianfang.schema import Event, Origin
from lianfang.settings import Settings

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
STATUS_SECONDS = 0.5
MAX_BATCHES_IN_FLIGHT = 2
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_PIPELINES = 1024  # per listener: one per peer, least recently used dropped first
MAX_LISTED_UNKNOWN_PEERS = 20
MAX_KNOWN_PEERS = 65_536  # department lookups remembered per listener
UDP_RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024
UDP_READ_BYTES = 65_535
TLS_HANDSHAKE_SECONDS = 30.0
WARN_EVERY_SECONDS = 10.0
UNKNOWN_PEER_TAG = "unknown_peer"
TRUNCATED_TAG = "message_truncated"


class SyslogServerError(RuntimeError):
    """A listener that cannot be set up (port taken, unusable certificate); names the listener."""

    def __init__(self, listener: str, reason: str) -> None:
        super().__init__(f"{listener}: {reason}")
        self.listener = listener
        self.reason = reason


@dataclass(frozen=True)
class _Message:
    data: bytes
    peer: str
    port: int
    sequence: int
    truncated: bool


class _Warning:
    """A warning logged at its first occurrence, then at most every WARN_EVERY_SECONDS."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.count = 0
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def occurred(self, number: int, *arguments: object) -> None:
        with self._lock:
            self.count += number
            now = time.monotonic()
            if self._logged_at is not None and now - self._logged_at < WARN_EVERY_SECONDS:
                return
            self._logged_at = now
            total = self.count
        log.warning(self.template + " (%d so far)", *arguments, total)


def peer_address(address: str) -> str:
    """An address as a peer name: IPv4-mapped IPv6 addresses as plain IPv4."""
    if address.startswith("::ffff:") and "." in address:
        return address.removeprefix("::ffff:")
    return address


def udp_kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (Linux /proc/net/udp*), or None."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9] == str(inode):
                return int(fields[12])
    return None


class _Listener:
    """One bound socket, its batching, its worker thread and its counters."""

    def __init__(
        self,
        config: SyslogListenerConfig,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        departments: PeerDepartments,
        factory: PipelineFactory,
        batch_events: int,
        server: SyslogServer,
    ) -> None:
        self.config = config
        self.sock = sock
        self.tls = tls
        self.departments = departments
        self.factory = factory
        self.batch_events = batch_events
        self.server = server
        self.transport_name = config.transport
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        self.source = config.label
        self.path = f"{config.transport}://{host}:{port}"
        self.feed: InputFeed | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"syslog-{self.source}")
        self.closer: Any = None  # the asyncio server or datagram transport
        # Event-loop thread only.
        self.pending: list[_Message] = []
        self.pending_bytes = 0
        self.in_flight = 0
        self.connections: set[_StreamProtocol] = set()
        self.paused: set[_StreamProtocol] = set()
        self.received = 0
        self.truncated = 0
        self.dropped_queue_full = 0
        self.dropped_on_error = 0
        self.connections_total = 0
        self.refused_connections = 0
        self.framing_errors = 0
        self.idle_closed = 0
        self.incomplete_at_close = 0
        self.kernel_drops: int | None = None
        # Worker thread only.
        self.pipelines: OrderedDict[str, tuple[IngestPipeline, Department | None]] = OrderedDict()
        self.peer_departments: dict[str, Department | None] = {}
        self.dropped_spool_full = 0
        self.unknown_peer_messages = 0
        self.unknown_peers: set[str] = set()
        self.formats: Counter[str] = Counter()
        self.by_department: Counter[str] = Counter()
        self.stats_lock = threading.Lock()  # the worker's counters, read by `publish`
        self.refused_warning = _Warning(
            f"{self.source}: refused a connection from %s: {config.max_connections} connections are open"
        )
        self.drop_warning = _Warning(f"{self.source}: dropped %d messages: %s")

    # ------------------------------------------------------------------ receiving (loop)

    @property
    def full(self) -> bool:
        """The next batch is complete and waits for a free slot."""
        return len(self.pending) >= self.batch_events or self.pending_bytes >= MAX_BATCH_BYTES

    def accept(self, data: bytes, peer: str, port: int, truncated: bool) -> None:
        """Take one message into the next batch."""
        self.received += 1
        if truncated:
            self.truncated += 1
        self.pending.append(_Message(data, peer, port, self.server.next_sequence(), truncated))
        self.pending_bytes += len(data)

    def datagram(self, data: bytes, peer: str, port: int) -> None:
        """One UDP datagram: accepted, or dropped when the batches are full."""
        if self.full and not self.submit():
            self.received += 1
            self.dropped_queue_full += 1
            self.drop_warning.occurred(1, 1, "the spool and the batches are full (UDP cannot wait)")
            return
        message = data.rstrip(b"\r\n\x00")
        if not message.strip():
            return
        cut = len(message) > self.config.max_message_bytes
        self.accept(message[: self.config.max_message_bytes], peer, port, cut)
        if self.full:
            self.submit()

    def submit(self) -> bool:
        """Hand the pending messages to the worker; False while both slots are busy."""
        if not self.pending:
            return True
        if self.in_flight >= MAX_BATCHES_IN_FLIGHT or self.loop is None:
            return False
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        self.in_flight += 1
        future = self.loop.run_in_executor(self.executor, self.spool_batch, batch)
        future.add_done_callback(lambda done: self._batch_done(done, len(batch)))
        return True

    def _batch_done(self, future: asyncio.Future[None], size: int) -> None:
        self.in_flight -= 1
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:  # a bug: its messages are counted lost
            self.dropped_on_error += size
            log.error("%s: a batch of %d messages failed: %r", self.source, size, error)
            if self.feed is not None:
                self.feed.note_error(self.source, f"batch failed: {type(error).__name__}: {error}")
        if self.full:
            self.submit()
        if not self.full:
            for connection in list(self.paused):
                connection.resume()

    def tick(self, now: float) -> None:
        """Periodic work: flush a partial batch, close idle connections."""
        self.submit()
        for connection in list(self.connections):
            if connection not in self.paused and now - connection.last_activity > (
                self.config.idle_timeout_seconds
            ):
                self.idle_closed += 1
                connection.close()

    # ------------------------------------------------------------------ spooling (worker)

    def spool_batch(self, batch: list[_Message]) -> None:
        """Parse a batch per peer and put its events in the spool (the worker thread)."""
        feed = self.feed
        assert feed is not None
        by_peer: dict[str, list[_Message]] = {}
        for message in batch:
            by_peer.setdefault(message.peer, []).append(message)
        events: list[Event] = []
        totals = Counter[str]()
        for peer, messages in by_peer.items():
            pipeline, department = self._pipeline_for(peer)
            origin_source = f"syslog:{self.transport_name}:{peer}"
            by_sequence = {message.sequence: message for message in messages}
            records = (
                (message.data.decode("utf-8", "replace"), Origin(origin_source, message.sequence))
                for message in messages
            )
            peer_events, counts = run_pipeline(pipeline, records)
            for event in peer_events:
                message = by_sequence.get(event.origin.offset)
                self._mark(event, message, department)
            events.extend(peer_events)
            totals.update(
                read=counts.read, parsed=counts.parsed, skipped=counts.skipped, failed=counts.failed
            )
            found = pipeline.fixed_format or pipeline.detected_format
            with self.stats_lock:
                if department is None:
                    self.unknown_peer_messages += len(messages)
                self.by_department[department.id if department else "-"] += len(messages)
                if found is not None and counts.parsed:
                    self.formats[found.name] += counts.parsed
        feed.count(self.source, **totals)
        if not events:
            return
        waits = self.transport_name != "udp"  # TCP stops reading meanwhile: back-pressure
        if not feed.put(self.source, events, batch[-1].sequence, wait=waits, replayable=False):
            self.dropped_spool_full += len(events)
            reason = (
                "the spool is full"
                if not waits
                else "the spool stayed full until the drain time ended"
            )
            self.drop_warning.occurred(len(events), len(events), reason)
            feed.note_error(self.source, f"dropped {len(events)} events: {reason}")

    def _pipeline_for(self, peer: str) -> tuple[IngestPipeline, Department | None]:
        known = self.pipelines.get(peer)
        if known is not None:
            self.pipelines.move_to_end(peer)
            return known
        department = self._department_of(peer)
        pipeline = self.factory.pipeline(department, f"syslog:{self.transport_name}:{peer}")
        self.pipelines[peer] = (pipeline, department)
        if len(self.pipelines) > MAX_PIPELINES:
            self.pipelines.popitem(last=False)
        return pipeline, department

    def _department_of(self, peer: str) -> Department | None:
        if peer in self.peer_departments:
            return self.peer_departments[peer]
        department = self.departments.department_of(peer)
        if len(self.peer_departments) >= MAX_KNOWN_PEERS:
            self.peer_departments.clear()
        self.peer_departments[peer] = department
        if department is None and len(self.unknown_peers) < MAX_LISTED_UNKNOWN_PEERS:
            log.warning(
                "%s: messages from %s, a peer in no configured network: ingested "
                "without a department and tagged %s",
                self.source,
                peer,
                UNKNOWN_PEER_TAG,
            )
            with self.stats_lock:
                self.unknown_peers.add(peer)
        return department

    @staticmethod
    def _mark(event: Event, message: _Message | None, department: Department | None) -> None:
        document = event.document
        tags = document.get("tags")
        if not isinstance(tags, list):
            tags = [tags] if isinstance(tags, str) else []
            document["tags"] = tags
        if department is None:
            tags.append(UNKNOWN_PEER_TAG)
        if message is not None:
            if message.truncated:
                tags.append(TRUNCATED_TAG)
            log_fields = document.setdefault("log", {})
            if isinstance(log_fields, dict):
                log_fields.setdefault("source", {})["address"] = f"{message.peer}:{message.port}"
        if not tags:
            del document["tags"]

    # ------------------------------------------------------------------ status

    def publish(self, state: str) -> None:
        """Show the counters in the runtime's status."""
        if self.feed is None:
            return
        if self.transport_name == "udp":
            drops = udp_kernel_drops(self.sock)  # None once closed: keep the last figure
            self.kernel_drops = drops if drops is not None else self.kernel_drops
        with self.stats_lock:
            unknown_peers = sorted(self.unknown_peers)
            by_department = dict(self.by_department)
            formats = dict(self.formats)
            common = self.formats.most_common(1)
            unknown_peer_messages = self.unknown_peer_messages
        details = {
            "transport": self.transport_name,
            "address": f"{self.address[0]}:{self.address[1]}",
            "received": self.received,
            "truncated": self.truncated,
            "dropped_queue_full": self.dropped_queue_full,
            "dropped_spool_full": self.dropped_spool_full,
            "dropped_on_error": self.dropped_on_error,
            "unknown_peer_messages": unknown_peer_messages,
            "unknown_peers": unknown_peers,
            "departments": by_department,
            "formats": formats,
            "buffered_messages": len(self.pending),
            "batches_in_flight": self.in_flight,
        }
        if self.transport_name == "udp":
            details["kernel_drops"] = self.kernel_drops
        else:
            details.update(
                connections=len(self.connections),
                connections_total=self.connections_total,
                refused_connections=self.refused_connections,
                idle_closed=self.idle_closed,
                framing_errors=self.framing_errors,
                incomplete_at_close=self.incomplete_at_close,
                paused_connections=len(self.paused),
            )
        fixed = self.factory.log_format
        self.feed.set(
            self.source,
            state=state,
            format=fixed.name if fixed else (common[0][0] if common else None),
            dropped=self.dropped_queue_full + self.dropped_spool_full + self.dropped_on_error,
            lag_bytes=self.pending_bytes + sum(c.framer.buffered_bytes for c in self.connections),
            details=details,
        )


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, listener: _Listener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.listener.datagram(data, peer_address(addr[0]), addr[1])

    def error_received(self, exc: Exception) -> None:
        log.warning("%s: receive error: %s", self.listener.source, exc)


class _StreamProtocol(asyncio.Protocol):
    """One TCP or TLS connection: framing, the connection bound, pausing."""

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener
        self.framer = StreamFramer(listener.config.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.port = 0
        self.last_activity = time.monotonic()
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peername = transport.get_extra_info("peername") or ("unknown", 0)
        self.peer, self.port = peer_address(str(peername[0])), int(peername[1])
        listener = self.listener
        if len(listener.connections) >= listener.config.max_connections:
            self.refused = True
            listener.refused_connections += 1
            listener.refused_warning.occurred(1, self.peer)
            transport.abort()
            return
        listener.connections.add(self)
        listener.connections_total += 1

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.last_activity = time.monotonic()
        listener = self.listener
        try:
            frames = self.framer.feed(data)
        except FramingError as error:
            listener.framing_errors += 1
            if listener.feed is not None:
                listener.feed.note_error(
                    listener.source, f"{self.peer}: {error}; connection closed"
                )
            log.warning("%s: %s: %s; closing the connection", listener.source, self.peer, error)
            self.close()
            return
        self._take(frames)
        if listener.full and not listener.submit():
            self.pause()

    def eof_received(self) -> bool | None:
        # The sender closed its side: a last message without its newline is complete.
        self._take(self.framer.finish())
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        if self.framer.buffered_bytes:  # cut off by a reset or by our close: not a message
            self.listener.incomplete_at_close += 1
        self.listener.connections.discard(self)
        self.listener.paused.discard(self)

    def _take(self, frames: Iterable[Any]) -> None:
        for frame in frames:
            self.listener.accept(frame.data, self.peer, self.port, frame.truncated)

    def pause(self) -> None:
        if self.transport is not None and self not in self.listener.paused:
            self.transport.pause_reading()
            self.listener.paused.add(self)

    def resume(self) -> None:
        self.listener.paused.discard(self)
        self.last_activity = time.monotonic()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class SyslogServer:
    """UDP/TCP/TLS syslog listeners as one push input of a `CollectorRuntime`."""

    def __init__(
        self,
        settings: Settings,
        listeners: list[SyslogListenerConfig],
        *,
        peers: dict[str, Department] | None = None,
        departments: dict[str, Department] | None = None,
        inventory: Any = None,
        indicators: IndicatorLookup | None = None,
    ) -> None:
        """`peers`: network -> department; `departments`: id -> record for listener defaults;
        `indicators`: the active intelligence every event is matched against."""
        if not listeners:
            raise ValueError("a syslog server needs at least one listener")
        self.settings = settings
        self.configs = list(listeners)
        self._peers = dict(peers or {})
        self._departments = dict(departments or {})
        self._inventory = inventory
        self._indicators = indicators
        self._listeners: list[_Listener] = []
        self._sequence = time.time_ns()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stopped = False

    # ------------------------------------------------------------------ set-up

    def bind(self) -> None:
        """Open every socket and TLS context; SyslogServerError (nothing left open) if one fails."""
        try:
            for config in self.configs:
                self._listeners.append(self._bind_one(config))
        except BaseException:
            self.close_sockets()
            raise

    def _bind_one(self, config: SyslogListenerConfig) -> _Listener:
        factory = PipelineFactory(self.settings, config.format, indicators=self._indicators)
        default = self._departments.get(config.department) if config.department else None
        if config.department and default is None:
            default = Department(config.department)
        departments = PeerDepartments(self._peers, self._inventory, default=default)
        tls = self.tls_context(config) if config.transport == "tls" else None
        kind = socket.SOCK_DGRAM if config.transport == "udp" else socket.SOCK_STREAM
        try:
            family, _, _, _, address = socket.getaddrinfo(
                config.host, config.port, type=kind, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind)
        except OSError as error:
            raise SyslogServerError(
                config.label, f"cannot resolve {config.host}: {error}"
            ) from error
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if kind == socket.SOCK_DGRAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
            sock.bind(address)
            if kind == socket.SOCK_STREAM:
                sock.listen(min(config.max_connections, 1024))
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            where = f"{config.transport} {config.host}:{config.port}"
            raise SyslogServerError(
                config.label, f"cannot listen on {where}: {error.strerror or error}"
            ) from error
        batch_events = max(1, self.settings.bulk_max_documents)
        return _Listener(config, sock, tls, departments, factory, batch_events, self)

    @staticmethod
    def tls_context(config: SyslogListenerConfig) -> ssl.SSLContext:
        """The server-side TLS context of a listener; SyslogServerError if unusable."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
            if config.tls_client_ca is not None:
                context.load_verify_locations(str(config.tls_client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as error:
            raise SyslogServerError(
                config.label, f"unusable TLS certificate or key: {error}"
            ) from error
        return context

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Where each listener listens (host, port), by listener name; after `bind`."""
        return {listener.source: listener.address for listener in self._listeners}

    def close_sockets(self) -> None:
        """Close sockets bound but never served (when the runtime could not be built)."""
        for listener in self._listeners:
            listener.sock.close()
            listener.executor.shutdown(wait=False)
        self._listeners = []

    def next_sequence(self) -> int:
        """The next message's offset (event-loop thread)."""
        self._sequence += 1
        return self._sequence

    # ------------------------------------------------------------------ PushInput

    @property
    def finished(self) -> bool:
        """A listener never runs out of input."""
        return False

    def start(self, feed: InputFeed) -> None:
        """Serve in a thread of its own until `stop`."""
        if not self._listeners:
            self.bind()
        for listener in self._listeners:
            listener.feed = feed
            feed.register(listener.source, listener.path, state="starting")
        self._thread = threading.Thread(target=self._serve, name="syslog-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise SyslogServerError(
                "syslog", f"could not start: {self._failure}"
            ) from self._failure

    def stop(self) -> None:
        """Close the listeners, spool what was received, and return."""
        if self._stopped:
            return
        self._stopped = True
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop_event.set)
            self._thread.join()
        else:
            self.close_sockets()

    # ------------------------------------------------------------------ the event loop

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported to `start`, or logged if it was running
            self._failure = self._failure or error
            log.exception("the syslog server failed")
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        try:
            for listener in self._listeners:
                listener.loop = loop
                if listener.transport_name == "udp":
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda listener=listener: _DatagramProtocol(listener), sock=listener.sock
                    )
                    listener.closer = transport
                else:
                    listener.closer = await loop.create_server(
                        lambda listener=listener: _StreamProtocol(listener),
                        sock=listener.sock,
                        ssl=listener.tls,
                        ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS if listener.tls else None,
                    )
                log.info("syslog listener %s on %s", listener.source, listener.path)
        except BaseException as error:
            self._failure = error
            self._ready.set()
            raise
        self._ready.set()
        last_status = 0.0
        while not self._stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), FLUSH_SECONDS)
            now = time.monotonic()
            for listener in self._listeners:
                listener.tick(now)
            if now - last_status >= STATUS_SECONDS:
                last_status = now
                for listener in self._listeners:
                    listener.publish("listening")
        await self._shut_down()

    async def _shut_down(self) -> None:
        for listener in self._listeners:
            listener.closer.close()
            for connection in list(listener.connections):
                connection.close()
        await asyncio.sleep(0)  # let the closing connections hand over their last frames
        for listener in self._listeners:
            while listener.pending or listener.in_flight:
                listener.submit()
                await asyncio.sleep(0.02)
            listener.executor.shutdown(wait=True)
            listener.publish("stopped")
