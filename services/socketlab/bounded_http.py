"""A small HTTP server whose every cost is bounded: the feed server's and the UDP status endpoint's.

``http.server.ThreadingHTTPServer`` gives each connection a thread for as long as
the client likes: a client sending one byte every few seconds never meets the
per-read timeout, so a few hundred of them hold a few hundred threads, and the
listen backlog of 5 stalls everyone else. Here instead:

* one selectors loop accepts connections (backlog :attr:`HttpLimits.backlog`)
  and reads each request head without blocking, within a **whole-head deadline**
  (``head_timeout``) and a **total head size cap** (``max_head``, 431 past it);
  at most ``max_pending`` heads arrive at once, the oldest is dropped for a new one;
* a complete head goes to a **fixed pool** of ``workers`` threads through a
  queue of ``queue`` places; when that is full the client gets a 503 at once;
* the body must arrive by ``body_timeout`` after the head, and every send must
  make progress within ``io_timeout``; one request per connection (HTTP/1.0).

Handlers are ordinary :class:`http.server.BaseHTTPRequestHandler` subclasses
built on :class:`BoundedRequestHandler`; ``self.server`` is the
:class:`BoundedHttpServer`. With nothing arriving, the loop and the workers
sleep in the kernel: an idle server costs no CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from socketlab.errors import ServiceError

log = logging.getLogger("socketlab.http")

ACCEPTS_PER_EVENT: Final = 64
RECV_SIZE: Final = 4096
_HEAD_END: Final = (b"\r\n\r\n", b"\n\n")


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    """What one server may spend: threads, waiting connections, bytes and seconds."""

    workers: int = 16  # requests handled at once
    queue: int = 64  # complete heads waiting for a worker; a 503 beyond
    max_pending: int = 256  # connections whose head is still arriving
    head_timeout: float = 10.0  # seconds for the whole request line and headers
    body_timeout: float = 10.0  # seconds for the whole body, after the head
    io_timeout: float = 10.0  # seconds one send may go without progress
    max_head: int = 16 * 1024  # bytes of request line and headers together
    backlog: int = 128

    def __post_init__(self) -> None:
        if min(self.workers, self.queue, self.max_pending, self.max_head, self.backlog) < 1:
            raise ValueError("HTTP limits must be positive")
        if min(self.head_timeout, self.body_timeout, self.io_timeout) <= 0:
            raise ValueError("HTTP timeouts must be positive")


@dataclass(eq=False)
class _Pending:
    """A connection whose request head is still arriving."""

    sock: socket.socket
    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, eq=False)
class Accepted:
    """What a worker gets: the socket, the bytes read so far (the head, maybe more)."""

    sock: socket.socket
    address: Any
    received: bytes


class _DeadlineReader(io.RawIOBase):
    """The bytes already read, then the socket, every read bounded by one deadline."""

    def __init__(self, sock: socket.socket, received: bytes, *, deadline: float) -> None:
        self._sock = sock
        self._buffer = memoryview(received)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        if self._buffer:
            count = min(len(target), len(self._buffer))
            target[:count] = self._buffer[:count]
            self._buffer = self._buffer[count:]
            return count
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not complete within its deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(target)


class _TimedWriter(io.RawIOBase):
    """Writes that must make progress within ``timeout`` seconds each."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.settimeout(self._timeout)
        self._sock.sendall(data)
        return len(data)


class BoundedRequestHandler(BaseHTTPRequestHandler):
    """Base of the handlers: one request per connection, I/O bounded by the server's limits."""

    server: BoundedHttpServer  # type: ignore[assignment]
    request: Accepted
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        limits = self.server.limits
        self.connection = self.request.sock
        reader = _DeadlineReader(
            self.connection,
            self.request.received,
            deadline=time.monotonic() + limits.body_timeout,
        )
        self.rfile = io.BufferedReader(reader)
        self.wfile = _TimedWriter(self.connection, limits.io_timeout)  # type: ignore[assignment]

    def handle(self) -> None:
        self.handle_one_request()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.rfile.close()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # callers log events of their own


def _status_line(status: int, reason: str) -> bytes:
    body = f"{reason}\n".encode()
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class BoundedHttpServer:
    """Bind at construction (``port`` is known then); :meth:`start`; :meth:`close`."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedRequestHandler],
        *,
        limits: HttpLimits,
        name: str,
    ) -> None:
        self.limits = limits
        self.name = name
        self._handler = handler
        try:
            self._listener = socket.create_server(address, backlog=limits.backlog)
        except OSError as exc:
            raise ServiceError(f"{name} cannot listen on {address[1]}/tcp: {exc}") from exc
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._pending: dict[int, _Pending] = {}  # by fd, oldest first
        self._work: queue.Queue[Accepted | None] = queue.Queue(maxsize=limits.queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counters = {"accepted": 0, "busy": 0, "head_timeout": 0, "head_too_large": 0}

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        loop = threading.Thread(target=self._loop, name=f"{self.name}-accept", daemon=True)
        self._threads.append(loop)
        for number in range(self.limits.workers):
            self._threads.append(
                threading.Thread(target=self._worker, name=f"{self.name}-{number}", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def close(self, *, join_timeout: float = 2.0) -> None:
        """Stop accepting, drop waiting heads, let workers finish what they hold."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")
        for _ in range(self.limits.workers):
            with contextlib.suppress(queue.Full):
                self._work.put_nowait(None)
        deadline = time.monotonic() + join_timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for pending in list(self._pending.values()):
            pending.sock.close()
        self._pending.clear()
        while True:  # heads nobody will answer now
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.sock.close()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.close()
        self._listener.close()
        self._wake_read.close()
        self._wake_write.close()

    # --- the accept and head loop -----------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            timeout = self._next_deadline()
            for key, _ in self._selector.select(timeout):
                if key.data == "listener":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_read.recv(64)
                else:
                    self._read_head(key.data)
            self._expire(time.monotonic())

    def _next_deadline(self) -> float | None:
        if not self._pending:
            return None  # nothing to time out: sleep until a connection or close()
        # Deadlines grow with the accept order, so the oldest head's comes first.
        oldest = next(iter(self._pending.values()))
        return max(0.0, oldest.deadline - time.monotonic())

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("event=accept_failed server=%s error=%s", self.name, exc)
                return
            sock.setblocking(False)
            if len(self._pending) >= self.limits.max_pending:
                # Heads arrive oldest first: the one waiting longest makes room.
                self._drop(next(iter(self._pending.values())), None)
            pending = _Pending(
                sock=sock, address=address, deadline=time.monotonic() + self.limits.head_timeout
            )
            self._pending[sock.fileno()] = pending
            self._selector.register(sock, selectors.EVENT_READ, pending)
            self.counters["accepted"] += 1

    def _read_head(self, pending: _Pending) -> None:
        try:
            data = pending.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(pending, None)
            return
        pending.head += data
        end = head_end(pending.head)
        if end is None or end > self.limits.max_head:
            if end is not None or len(pending.head) > self.limits.max_head:
                self.counters["head_too_large"] += 1
                self._drop(pending, _status_line(431, "Request Header Fields Too Large"))
            return
        self._unwatch(pending)
        accepted = Accepted(
            sock=pending.sock, address=pending.address, received=bytes(pending.head)
        )
        try:
            self._work.put_nowait(accepted)
        except queue.Full:
            self.counters["busy"] += 1
            log.warning("event=http_busy server=%s peer=%s", self.name, _peer(pending.address))
            _send_last_words(pending.sock, _status_line(503, "Service Unavailable"))
            pending.sock.close()

    def _expire(self, now: float) -> None:
        for pending in list(self._pending.values()):
            if pending.deadline > now:
                break  # oldest first: the rest are younger
            self.counters["head_timeout"] += 1
            self._drop(pending, _status_line(408, "Request Timeout"))

    def _unwatch(self, pending: _Pending) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(pending.sock)

    def _drop(self, pending: _Pending, last_words: bytes | None) -> None:
        self._unwatch(pending)
        if last_words is not None:
            _send_last_words(pending.sock, last_words)
        pending.sock.close()

    # --- the workers ------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            self.handle(item)

    def handle(self, accepted: Accepted) -> None:
        """Serve one request on a worker thread; the socket is closed afterwards."""
        sock = accepted.sock
        try:
            sock.setblocking(True)
            self._handler(accepted, accepted.address, self)  # type: ignore[arg-type]
        except Exception:
            # One broken request must not cost the worker; the handler logs its own.
            log.exception("event=http_handler_failed server=%s", self.name)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


def head_end(data: bytes | bytearray) -> int | None:
    """Where the request head ends (just past its blank line), or None if not yet."""
    found = [at + len(end) for end in _HEAD_END if (at := data.find(end)) >= 0]
    return min(found) if found else None


def _send_last_words(sock: socket.socket, data: bytes) -> None:
    # Best effort and never blocking: the loop must not wait for one client.
    with contextlib.suppress(OSError):
        sock.send(data)


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def wait_unless_gone(
    sock: socket.socket, seconds: float, *, stopping: Callable[[], bool], tick: float = 0.5
) -> bool:
    """Wait ``seconds``; False as soon as the client closed (or ``stopping()``), else True.

    For handlers that hold a client on purpose (a slow fault feed): their work
    must end when the client has gone, not when the timer does.
    """
    deadline = time.monotonic() + seconds
    poller = selectors.DefaultSelector()
    try:
        poller.register(sock, selectors.EVENT_READ)
        while not stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if poller.select(min(tick, left)) and _closed_by_peer(sock):
                return False
        return False
    finally:
        poller.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0)
        data = sock.recv(RECV_SIZE)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    # Bytes after the request (a pipelined one) are not ours to answer: dropped.
    return not data
