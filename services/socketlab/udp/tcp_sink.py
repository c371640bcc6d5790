"""A TCP byte-counting receiver: the TCP side of ``socketlab tcp-vs-udp``.

Runs inside the ``udp-listener`` process so the comparison needs nothing
else. Protocol, one transfer per connection: the client sends its bytes and
shuts down its writing side; the sink counts everything up to EOF, answers
one JSON line ``{"bytes": N, "duration_s": T, "latency": …}`` (first byte to EOF)
and closes.

One selectors loop serves every transfer (up to ``max_connections``, backlog
128), so idle connections hold a socket each, not a thread; a transfer silent
for ``idle_timeout`` seconds is closed.

A stream that starts with a :func:`socketlab.udp.latency.stream_header` is
timed message by message too, and the answer adds ``"latency": {"messages",
"p50_ms", "p99_ms", "max_ms"}`` (``null`` for an untimed stream).
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ServiceError
from socketlab.udp.latency import MessageClock

log = logging.getLogger("socketlab.udp")

TCP_SINK_PORT = 37022
RECV_BUFFER = 1 << 20
MAX_CONNECTIONS = 256
BACKLOG = 128
ACCEPTS_PER_EVENT = 64
READS_PER_EVENT = 16  # bounds what one fast transfer gets per loop turn


@env_config
@dataclass(frozen=True, kw_only=True)
class TcpSinkConfig(EnvConfig):
    """Where the TCP sink listens and how long a silent transfer may last."""

    port: int = env_field(
        "SOCKETLAB_TCP_SINK_PORT", TCP_SINK_PORT, "TCP port of the sink behind tcp-vs-udp"
    )
    # A transfer under heavy loss can stall for a while; this bounds the silence.
    idle_timeout: float = env_field(
        "SOCKETLAB_TCP_SINK_TIMEOUT", 60.0, "seconds a TCP sink transfer may stay silent"
    )
    accept_poll: float = 0.5  # how soon the loop notices stop and idle transfers
    max_connections: int = MAX_CONNECTIONS


class SinkTotals:
    """Connections and bytes the sink has counted (for ``GET /stats``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.connections = 0
        self.bytes = 0

    def add(self, size: int) -> None:
        with self._lock:
            self.connections += 1
            self.bytes += size

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"connections": self.connections, "bytes": self.bytes}

    def reset(self) -> None:
        with self._lock:
            self.connections = 0
            self.bytes = 0


def count_until_eof(conn: socket.socket, clock: MessageClock | None = None) -> tuple[int, float]:
    """Read ``conn`` to EOF (each chunk to ``clock``); return (bytes, seconds from first
    byte to EOF)."""
    buffer = bytearray(RECV_BUFFER)
    view = memoryview(buffer)
    total = 0
    first: float | None = None
    while True:
        size = conn.recv_into(view)
        if size == 0:
            break
        if first is None:
            first = time.monotonic()
        if clock is not None:
            clock.feed(view[:size], time.time_ns())
        total += size
    return total, (time.monotonic() - first) if first is not None else 0.0


@dataclass(eq=False)
class _Transfer:
    """One connection being counted, or answering once its peer half-closed."""

    sock: socket.socket
    peer: str
    last_activity: float
    received: int = 0
    first: float | None = None
    answer: bytes = b""  # what is left to send once the count is done
    clock: MessageClock = field(default_factory=MessageClock)

    def report(self, now: float) -> bytes:
        duration = now - self.first if self.first is not None else 0.0
        answer = {"bytes": self.received, "duration_s": duration, "latency": self.clock.summary()}
        return json.dumps(answer).encode() + b"\n"


class _SinkLoop:
    """Every transfer in one selectors loop: idle ones hold a socket, never a thread."""

    def __init__(self, listener: socket.socket, totals: SinkTotals, config: TcpSinkConfig) -> None:
        self.listener = listener
        self.totals = totals
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.transfers: dict[int, _Transfer] = {}
        self.buffer = bytearray(RECV_BUFFER)
        self.view = memoryview(self.buffer)

    def run(self, stop: threading.Event) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not stop.is_set():
                for key, mask in self.selector.select(self.config.accept_poll):
                    if key.data is None:
                        self._accept()
                    elif mask & selectors.EVENT_WRITE:
                        self._answer(key.data)
                    else:
                        self._receive(key.data)
                self._expire(time.monotonic())
        finally:
            for transfer in list(self.transfers.values()):
                self._close(transfer)
            self.selector.close()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("event=tcp_sink_accept_failed error=%s", exc)
                return
            peer = f"{addr[0]}:{addr[1]}"
            if len(self.transfers) >= self.config.max_connections:
                log.warning("event=tcp_sink_busy peer=%s", peer)
                sock.close()
                continue
            sock.setblocking(False)
            transfer = _Transfer(sock=sock, peer=peer, last_activity=time.monotonic())
            self.transfers[sock.fileno()] = transfer
            self.selector.register(sock, selectors.EVENT_READ, transfer)

    def _receive(self, transfer: _Transfer) -> None:
        for _ in range(READS_PER_EVENT):
            try:
                size = transfer.sock.recv_into(self.view)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("event=tcp_sink_failed peer=%s error=%r", transfer.peer, exc)
                self._close(transfer)
                return
            now = time.monotonic()
            transfer.last_activity = now
            if size == 0:
                self._finish(transfer, now)
                return
            if transfer.first is None:
                transfer.first = now
            transfer.clock.feed(self.view[:size], time.time_ns())
            transfer.received += size

    def _finish(self, transfer: _Transfer, now: float) -> None:
        self.totals.add(transfer.received)
        transfer.answer = transfer.report(now)
        log.info(
            "event=tcp_sink_done peer=%s bytes=%d duration_s=%.3f",
            transfer.peer,
            transfer.received,
            now - transfer.first if transfer.first is not None else 0.0,
        )
        self.selector.modify(transfer.sock, selectors.EVENT_WRITE, transfer)
        self._answer(transfer)

    def _answer(self, transfer: _Transfer) -> None:
        try:
            sent = transfer.sock.send(transfer.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("event=tcp_sink_failed peer=%s error=%r", transfer.peer, exc)
            self._close(transfer)
            return
        transfer.answer = transfer.answer[sent:]
        transfer.last_activity = time.monotonic()
        if not transfer.answer:
            self._close(transfer)

    def _expire(self, now: float) -> None:
        limit = self.config.idle_timeout
        for transfer in list(self.transfers.values()):
            if now - transfer.last_activity > limit:
                log.warning("event=tcp_sink_idle peer=%s seconds=%g", transfer.peer, limit)
                self._close(transfer)

    def _close(self, transfer: _Transfer) -> None:
        self.transfers.pop(transfer.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(transfer.sock)
        transfer.sock.close()


def serve(
    stop: threading.Event,
    *,
    totals: SinkTotals,
    config: TcpSinkConfig,
    ready: threading.Event | None = None,
) -> None:
    """Count transfers until ``stop`` is set; ``ready`` is set once listening."""
    try:
        listener = socket.create_server(("0.0.0.0", config.port), backlog=BACKLOG)
    except OSError as exc:
        raise ServiceError(f"TCP sink cannot listen on {config.port}: {exc}") from exc
    with listener:
        listener.setblocking(False)
        log.info("event=tcp_sink_listening port=%d", config.port)
        if ready is not None:
            ready.set()
        _SinkLoop(listener, totals, config).run(stop)
