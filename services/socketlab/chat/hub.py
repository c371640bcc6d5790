"""The chat hub on :data:`~socketlab.config.CHAT_PORT`: one selectors loop around :class:`ChatHub`.

Sockets are non-blocking. Each loop turn reads what is there and hands it to
the core, then gives every connection with something due one ``send`` of its
mailbox's front (so a broadcast costs one append, and each participant one
syscall per turn however many messages arrived meanwhile); interest in
``EVENT_WRITE`` only while something is left. A sender the rate limiter has
paused is not read until it may send again. Accepted sockets get a modest
``SO_SNDBUF`` so a slow reader's backlog piles up in the hub's bounded outbox
(where it is counted and capped) rather than in an unbounded-looking kernel
buffer, and ``TCP_NODELAY`` because chat lines are small and latency matters.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from socketlab.chat.core import ChatHub, HubConfig, Reason
from socketlab.config import CHAT_PORT, EnvConfig, env_config, env_field
from socketlab.errors import ServiceError

log = logging.getLogger("socketlab.chat")

RECV_SIZE: Final = 64 * 1024
READS_PER_EVENT: Final = 4  # bound the work one busy peer gets per loop turn
ACCEPTS_PER_EVENT: Final = 64


@env_config
@dataclass(frozen=True, kw_only=True)
class HubServerConfig(EnvConfig):
    """The hub's socket-level settings plus the core's :class:`HubConfig`."""

    host: str = env_field("SOCKETLAB_CHAT_HOST", "0.0.0.0", "address the chat hub listens on")
    port: int = env_field("SOCKETLAB_CHAT_PORT", CHAT_PORT, "TCP port of the chat hub")
    backlog: int = 1024
    send_buffer: int = env_field(
        "SOCKETLAB_CHAT_SNDBUF", 64 * 1024, "SO_SNDBUF of each chat connection at the hub, bytes"
    )
    poll_interval: float = 0.25
    close_grace: float = 1.0
    core: HubConfig = field(default_factory=HubConfig)


class HubServer:
    """The chat hub's sockets; :meth:`bind` then :meth:`run` (port 0 for tests)."""

    def __init__(self, config: HubServerConfig) -> None:
        self.config = config
        self.hub = ChatHub(config=config.core, wall_clock=time.time)
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._socks: dict[int, socket.socket] = {}
        self._events: dict[int, int] = {}  # the selector events each connection is registered for
        self._paused: dict[int, float] = {}  # rate-limited connections -> when to read again
        self._close_at: dict[int, float] = {}  # closing connections -> hard deadline
        self._accept_resume: float | None = None  # accepting paused (e.g. out of fds) until

    def bind(self) -> int:
        """Listen; returns the bound port."""
        try:
            listener = socket.create_server(
                (self.config.host, self.config.port), backlog=self.config.backlog
            )
        except OSError as exc:
            raise ServiceError(f"chat hub cannot listen on port {self.config.port}: {exc}") from exc
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._listener = listener
        port: int = listener.getsockname()[1]
        log.info("event=chat_listening port=%d", port)
        return port

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then say goodbye to everyone."""
        if self._listener is None:
            self.bind()
        last_tick = time.monotonic()
        try:
            while not stop.is_set():
                writable = self._turn()
                now = time.monotonic()
                if now - last_tick >= self.config.poll_interval:
                    last_tick = now
                    self.hub.tick(now)
                    self._maybe_resume_accepting(now)
                self._resume_reading(now)
                self._flush_and_close(now, writable)
            self.hub.shutdown()
            self._flush_and_close(time.monotonic(), set())
            self._drain_closing()
        finally:
            for conn_id in list(self._socks):
                self._drop(conn_id)
            self._selector.close()
            if self._listener is not None:
                self._listener.close()

    # ------------------------------------------------------------------ loop

    def _turn(self) -> set[int]:
        """Accept and read what is ready; returns the connections ready for writing."""
        writable: set[int] = set()
        timeout = self.config.poll_interval
        if self._paused:
            timeout = max(0.0, min(timeout, min(self._paused.values()) - time.monotonic()))
        for key, mask in self._selector.select(timeout=timeout):
            if key.data is None:
                self._accept()
                continue
            conn_id: int = key.data
            if mask & selectors.EVENT_READ:
                self._on_readable(conn_id)
            if mask & selectors.EVENT_WRITE:
                writable.add(conn_id)
        return writable

    def _accept(self) -> None:
        assert self._listener is not None  # noqa: S101 - run() binds first
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: keep serving the others, retry later
                # The pending connection keeps the listener readable: stop watching it
                # for a moment instead of spinning on the same error.
                log.warning("event=chat_accept_failed error=%r", exc)
                self._selector.unregister(self._listener)
                self._accept_resume = time.monotonic() + self.config.poll_interval
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer)
            conn_id = self.hub.open(time.monotonic())
            self._socks[conn_id] = sock
            self._events[conn_id] = selectors.EVENT_READ
            self._selector.register(sock, selectors.EVENT_READ, conn_id)

    def _maybe_resume_accepting(self, now: float) -> None:
        if self._accept_resume is not None and now >= self._accept_resume:
            assert self._listener is not None  # noqa: S101 - only set after accept()
            self._accept_resume = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _on_readable(self, conn_id: int) -> None:
        sock = self._socks[conn_id]
        for _ in range(READS_PER_EVENT):
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.info("event=chat_recv_failed conn=%d error=%r", conn_id, exc)
                self.hub.connection_lost(conn_id)
                return
            now = time.monotonic()
            self.hub.receive_data(conn_id, data, now)
            if not data:
                return
            until = self.hub.read_paused_until(conn_id, now)
            if until is not None:  # rate limited: its flood waits in its own socket
                self._paused[conn_id] = until
                self._update_interest(conn_id)
                return

    def _resume_reading(self, now: float) -> None:
        for conn_id, until in list(self._paused.items()):
            if now >= until:
                del self._paused[conn_id]
                if conn_id in self._socks:
                    self._update_interest(conn_id)

    def _flush(self, conn_id: int, now: float) -> None:
        """One send of what is due (at most one per connection per turn)."""
        chunk = self.hub.outbox(conn_id).peek()
        if chunk:
            try:
                sent = self._socks[conn_id].send(chunk)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                log.info("event=chat_send_failed conn=%d error=%r", conn_id, exc)
                self.hub.connection_lost(conn_id)
                sent = 0
            if sent:
                self.hub.sent(conn_id, sent, now)
        self._update_interest(conn_id)

    def _update_interest(self, conn_id: int) -> None:
        """Read unless closing or paused; write while something is due."""
        sock = self._socks.get(conn_id)
        if sock is None:
            return
        # A closing connection is not read any more (an EOF would keep it readable).
        reading = conn_id not in self._close_at and conn_id not in self._paused
        events = (selectors.EVENT_READ if reading else 0) | (
            selectors.EVENT_WRITE if len(self.hub.outbox(conn_id)) else 0
        )
        current = self._events.get(conn_id, 0)
        if events == current:
            return
        if not current:
            self._selector.register(sock, events, conn_id)
        elif not events:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, events, conn_id)
        self._events[conn_id] = events

    def _flush_and_close(self, now: float, writable: set[int]) -> None:
        # A flush can end a connection (send failure), whose left notice dirties
        # others: repeat until the core has nothing new (each connection still
        # gets one send per turn).
        flushed: set[int] = set()
        pending = writable
        while True:
            dirty = self.hub.take_dirty() | pending
            pending = set()
            closing = self.hub.take_closing()
            if not dirty - flushed and not closing:
                break
            for item in closing:
                if item.conn_id in self._socks:
                    self._close_at[item.conn_id] = now + self.config.close_grace
                    self._paused.pop(item.conn_id, None)
                    self._log_close(item.conn_id, item.reason)
                    self._update_interest(item.conn_id)
            for conn_id in dirty - flushed:
                if conn_id in self._socks:
                    flushed.add(conn_id)
                    self._flush(conn_id, now)
        for conn_id, deadline in list(self._close_at.items()):
            if conn_id not in self._socks:
                del self._close_at[conn_id]
            elif not len(self.hub.outbox(conn_id)) or now >= deadline:
                self._drop(conn_id)

    def _drain_closing(self) -> None:
        """At shutdown: give the last words up to ``close_grace`` to go out."""
        deadline = time.monotonic() + self.config.close_grace
        while self._close_at and time.monotonic() < deadline:
            self._selector.select(timeout=0.05)
            self._flush_and_close(time.monotonic(), set(self._close_at))

    def _log_close(self, conn_id: int, reason: Reason) -> None:
        log.info(
            "event=chat_disconnect conn=%d name=%s reason=%r",
            conn_id,
            self.hub.name_of(conn_id),
            str(reason),
        )

    def _drop(self, conn_id: int) -> None:
        sock = self._socks.pop(conn_id, None)
        self._close_at.pop(conn_id, None)
        self._paused.pop(conn_id, None)
        if self._events.pop(conn_id, 0) and sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        if sock is not None:
            sock.close()
        self.hub.forget(conn_id)


def serve(stop: threading.Event, config: HubServerConfig) -> None:
    """The ``chat`` component of the server container: serve until ``stop`` is set."""
    HubServer(config).run(stop)
