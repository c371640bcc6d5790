"""A TCP byte-counting receiver: the TCP side of ``socketlab tcp-vs-udp``.

Runs inside the ``udp-listener`` process so the comparison needs nothing
else. Protocol, one transfer per connection: the client sends its bytes and
shuts down its writing side; the sink counts everything up to EOF, answers
one JSON line ``{"bytes": N, "duration_s": T}`` (first byte to EOF) and closes.
A stream that starts with a :func:`socketlab.udp.latency.stream_header` is
timed message by message too, and the answer adds ``"latency": {"messages",
"p50_ms", "p99_ms", "max_ms"}`` (``null`` for an untimed stream).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ServiceError
from socketlab.udp.latency import MessageClock

log = logging.getLogger("socketlab.udp")

TCP_SINK_PORT = 37022
RECV_BUFFER = 1 << 20
MAX_CONNECTIONS = 16


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
    accept_poll: float = 0.5  # how soon the accept loop notices stop


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


def _handle(
    conn: socket.socket,
    peer: str,
    totals: SinkTotals,
    slots: threading.Semaphore,
    idle_timeout: float,
) -> None:
    try:
        with conn:
            conn.settimeout(idle_timeout)
            clock = MessageClock()
            total, duration = count_until_eof(conn, clock)
            totals.add(total)
            answer = {"bytes": total, "duration_s": duration, "latency": clock.summary()}
            conn.sendall(json.dumps(answer).encode() + b"\n")
            log.info("event=tcp_sink_done peer=%s bytes=%d duration_s=%.3f", peer, total, duration)
    except OSError as exc:
        log.warning("event=tcp_sink_failed peer=%s error=%r", peer, exc)
    finally:
        slots.release()


def serve(
    stop: threading.Event,
    *,
    totals: SinkTotals,
    config: TcpSinkConfig,
    ready: threading.Event | None = None,
) -> None:
    """Accept transfers until ``stop`` is set; ``ready`` is set once listening."""
    slots = threading.Semaphore(MAX_CONNECTIONS)
    try:
        listener = socket.create_server(("0.0.0.0", config.port), backlog=MAX_CONNECTIONS)
    except OSError as exc:
        raise ServiceError(f"TCP sink cannot listen on {config.port}: {exc}") from exc
    with listener as server:
        server.settimeout(config.accept_poll)
        log.info("event=tcp_sink_listening port=%d", config.port)
        if ready is not None:
            ready.set()
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            if not slots.acquire(blocking=False):
                log.warning("event=tcp_sink_busy peer=%s:%s", *addr[:2])
                conn.close()
                continue
            peer = f"{addr[0]}:{addr[1]}"
            threading.Thread(
                target=_handle,
                args=(conn, peer, totals, slots, config.idle_timeout),
                name=f"sink-{peer}",
                daemon=True,
            ).start()
