"""The lab protocol server's selectors loop: the sockets, a worker pool and timers.

Everything here is I/O. Each connection's decisions are its
:class:`~socketlab.server.connection.ConnectionState`'s; what a request calls
for is :func:`~socketlab.server.dispatch.answer_message`'s. The loop reads into
the state, carries out the :mod:`~socketlab.server.outcomes` (queue bytes,
open a file and stream it with ``os.sendfile``, the call behind
``socket.sendfile``, which refuses non-blocking sockets; run work on a thread;
answer later; switch to the sink), writes as far as the kernel takes, and
closes what the deadlines condemn.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from socketlab import objects, sampledata
from socketlab.errors import ServiceError
from socketlab.files import list_files
from socketlab.protocol import (
    ConnectionClosed,
    ProtocolError,
    RemoteProtocolError,
    encode_response,
)
from socketlab.server.admission import Admit, Evict, Idle, admit
from socketlab.server.config import ServerConfig
from socketlab.server.connection import ConnectionState, FileSlice, Mode
from socketlab.server.dispatch import answer_message, one_line, settle
from socketlab.server.hashes import HashCache
from socketlab.server.outcomes import (
    Deferred,
    Later,
    Outcome,
    Send,
    SendFile,
    Services,
    StartSink,
    Violation,
    refusal,
)
from socketlab.server.scheduling import Scheduler

log = logging.getLogger("socketlab.server")

RECV_SIZE: Final = 256 * 1024
READS_PER_EVENT: Final = 16  # bound the work one busy peer gets per loop turn
ACCEPTS_PER_EVENT: Final = 64
SENDFILE_CHUNK: Final = 8 * 1024 * 1024


@dataclass(eq=False)
class Connection:
    """A connection as the loop holds it: socket, the fd it is known by, state, selector mask."""

    sock: socket.socket
    fd: int
    state: ConnectionState
    host: str = ""  # the peer's address, for the per-address limit
    events: int = 0


class LabServer:
    """The selectors server; :meth:`bind` then :meth:`serve` until ``stop`` is set."""

    def __init__(self, config: ServerConfig, *, hashes: HashCache | None = None) -> None:
        self.config = config
        self.hashes = hashes if hashes is not None else HashCache()
        self.services = Services(
            config=config,
            hostname=socket.gethostname(),
            registry=objects.default_registry(),
            hashes=self.hashes,
        )
        self._limits = config.limits()
        self._deadlines = config.deadlines()
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, Connection] = {}
        self._per_host: Counter[str] = Counter()
        self._recv_buffer = bytearray(RECV_SIZE)
        self._recv_view = memoryview(self._recv_buffer)
        self._scheduler = Scheduler()
        self.stats = {
            "accepted": 0,
            "closed": 0,
            "protocol_errors": 0,
            "refused_busy": 0,
            "refused_per_peer": 0,
            "evicted_idle": 0,
        }

    # --- lifecycle --------------------------------------------------------------------

    def bind(self) -> int:
        """Prepare the data root and listen; returns the port (useful with port 0 in tests)."""
        if self.config.generate_samples:
            self._prepare_data()
        try:
            listener = socket.create_server(
                (self.config.host, self.config.port), backlog=128, reuse_port=False
            )
        except OSError as exc:
            raise ServiceError(f"cannot listen on {self.config.port}/tcp: {exc}") from exc
        listener.setblocking(False)
        self._listener = listener
        port: int = listener.getsockname()[1]
        return port

    def serve(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; notices it within ``poll_interval``."""
        if self._listener is None:
            self.bind()
        listener = self._listening()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._scheduler.wakeup, selectors.EVENT_READ, "wake")
        log.info(
            "event=listening service=lab-protocol port=%d data_root=%s pickle=%s",
            listener.getsockname()[1],
            self.config.data_root,
            "enabled" if self.config.pickle_key else "disabled",
        )
        try:
            while not stop.is_set():
                self._turn()
        finally:
            self._shutdown()

    def _prepare_data(self) -> None:
        try:
            sampledata.ensure_sample_data(self.config.data_root)
        except OSError as exc:
            log.warning("event=sample_data_failed root=%s error=%s", self.config.data_root, exc)
            return
        # Warm the hash cache off the loop so the first fetch answers at once.
        root = self.config.data_root
        for entry in list_files(root):
            self._scheduler.warm(functools.partial(self.hashes.sha256, root / entry.name))

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn, "server stopping")
        self._scheduler.close()
        self._selector.close()
        if self._listener is not None:
            self._listener.close()
        log.info("event=stopped service=lab-protocol %s", _kv(self.stats))

    # --- the loop ---------------------------------------------------------------------

    def _turn(self) -> None:
        timeout = self._scheduler.timeout(self.config.poll_interval, time.monotonic())
        for key, mask in self._selector.select(timeout=timeout):
            if key.data == "listener":
                self._accept()
            elif key.data == "wake":
                self._scheduler.drain()
            else:
                conn = self._conns.get(key.fd)
                if conn is None:
                    continue
                with self._failures_close(conn):
                    if mask & selectors.EVENT_WRITE:
                        self._pump(conn)
                    if mask & selectors.EVENT_READ and self._is_open(conn):
                        self._on_readable(conn)
        now = time.monotonic()
        self._scheduler.run_due(now)
        self._enforce_deadlines(now)

    def _listening(self) -> socket.socket:
        if self._listener is None:
            raise ServiceError("the server is not bound")
        return self._listener

    def _accept(self) -> None:
        listener = self._listening()
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("event=accept_failed error=%s", exc)
                return
            sock.setblocking(False)
            peer = f"{address[0]}:{address[1]}"
            refused = self._refusal(str(address[0]), peer)
            if refused is not None:
                with contextlib.suppress(OSError):
                    sock.send(encode_response(None, error=refused))
                sock.close()
                continue
            state = ConnectionState(
                peer=peer, limits=self._limits, deadlines=self._deadlines, now=time.monotonic()
            )
            conn = Connection(sock=sock, fd=sock.fileno(), state=state, host=str(address[0]))
            self._conns[conn.fd] = conn
            self._per_host[conn.host] += 1
            self._update_interest(conn)
            self.stats["accepted"] += 1
            log.info("event=accepted peer=%s connections=%d", peer, len(self._conns))

    def _refusal(self, host: str, peer: str) -> str | None:
        """Why a new connection from ``peer`` is not served (admission, in one place).

        May evict the connection idle the longest to make room (see
        :mod:`~socketlab.server.admission`).
        """
        decision = admit(
            from_peer=self._per_host[host],
            total=len(self._conns),
            idle=(
                Idle(key=fd, last_active=max(conn.state.last_recv, conn.state.last_send))
                for fd, conn in self._conns.items()
                if conn.state.idle
            ),
            max_per_peer=self.config.max_per_peer,
            max_connections=self.config.max_connections,
        )
        if isinstance(decision, Admit):
            return None
        if isinstance(decision, Evict):
            victim = self._conns[decision.key]
            self.stats["evicted_idle"] += 1
            log.info("event=evicted peer=%s for=%s", victim.state.peer, peer)
            with contextlib.suppress(OSError):
                victim.sock.send(
                    encode_response(None, error="closing connection: server full, you were idle")
                )
            self._close(victim, "evicted while idle")
            return None
        self.stats["refused_busy" if decision.busy else "refused_per_peer"] += 1
        log.warning("event=refused reason=%r peer=%s", decision.reason, peer)
        return decision.reason

    def _is_open(self, conn: Connection) -> bool:
        return self._conns.get(conn.fd) is conn

    @contextlib.contextmanager
    def _failures_close(self, conn: Connection) -> Iterator[None]:
        """A socket error or a bug while serving ``conn`` costs that connection only."""
        try:
            yield
        except OSError as exc:
            self._close(conn, f"socket error: {exc}")
        except Exception:
            log.exception("event=internal_error peer=%s", conn.state.peer)
            self._close(conn, "internal error")

    def _update_interest(self, conn: Connection) -> None:
        if not self._is_open(conn):
            return
        state = conn.state
        events = selectors.EVENT_WRITE if state.sending else 0
        if state.wants_read():
            events |= selectors.EVENT_READ
        if events == conn.events:
            return
        if events and conn.events:
            self._selector.modify(conn.sock, events, "conn")
        elif events:
            self._selector.register(conn.sock, events, "conn")
        else:
            self._selector.unregister(conn.sock)
        conn.events = events

    # --- one connection ---------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        state = conn.state
        for _ in range(READS_PER_EVENT):
            try:
                size = conn.sock.recv_into(self._recv_buffer)
            except (BlockingIOError, InterruptedError):
                break
            state.receive(self._recv_view[:size], time.monotonic())
            # A sink drinks until the peer stops; a request is usually one short read.
            if not size or (size < RECV_SIZE and state.mode is not Mode.SINK):
                break
        self._pump(conn)

    def _pump(self, conn: Connection) -> None:
        """Write, and answer buffered requests in order, as far as the state allows."""
        state = conn.state
        while self._is_open(conn):
            if not self._write(conn):
                return
            if state.finished:
                self._close(conn, "done" if state.sink else "closed after error")
                return
            now = time.monotonic()
            try:
                request = state.next_request(now)
            except RemoteProtocolError as exc:
                self._protocol_error(conn, exc)
                continue
            if request is None:
                break
            if isinstance(request, ConnectionClosed):
                self._close(conn, "peer closed")
                return
            self._carry_out(conn, answer_message(request, self.services, state.peer), now)
        self._update_interest(conn)

    def _carry_out(self, conn: Connection, outcome: Outcome, now: float) -> None:
        state = conn.state
        if isinstance(outcome, Send):
            state.queue(outcome.data, now)
        elif isinstance(outcome, SendFile):
            self._start_file(conn, outcome, now)
        elif isinstance(outcome, Deferred):
            state.busy = True
            work, peer = outcome.work, state.peer
            self._scheduler.submit(
                lambda: settle(work, peer), lambda done: self._resume(conn, done)
            )
        elif isinstance(outcome, Later):
            state.busy = True
            then = outcome.then
            self._scheduler.call_at(now + outcome.delay, lambda: self._resume(conn, then))
        elif isinstance(outcome, StartSink):
            state.start_sink(outcome.expected, now)
        elif isinstance(outcome, Violation):
            self._protocol_error(conn, outcome.error)

    def _resume(self, conn: Connection, outcome: Outcome) -> None:
        """Carry out what a worker or a timer produced, if the connection is still there."""
        if not self._is_open(conn):
            return
        conn.state.busy = False
        with self._failures_close(conn):
            self._carry_out(conn, outcome, time.monotonic())
            self._pump(conn)

    def _start_file(self, conn: Connection, outcome: SendFile, now: float) -> None:
        state = conn.state
        try:
            fd = os.open(outcome.path, os.O_RDONLY)
        except OSError as exc:
            log.warning("event=request_failed peer=%s error=%s", state.peer, exc)
            state.queue(refusal(f"server error: {exc}").data, now)
            return
        log.info(
            "event=fetch_start peer=%s name=%s size=%d offset=%d",
            state.peer,
            outcome.name,
            outcome.size,
            outcome.offset,
        )
        # Header and slice are queued together before anything is sent, so when
        # sending the header fails the slice is closed with the connection.
        state.queue(outcome.header, now)
        if outcome.count > 0:
            state.queue(FileSlice(fd=fd, offset=outcome.offset, count=outcome.count), now)
        else:
            os.close(fd)

    def _write(self, conn: Connection) -> bool:
        """Send as much as the kernel takes; False when that closed the connection."""
        state = conn.state
        while (item := state.head()) is not None:
            try:
                if isinstance(item, FileSlice):
                    sent = _send_file(conn.sock, item)
                else:
                    sent = conn.sock.send(item)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._close(conn, f"send failed: {exc}")
                return False
            done = state.sent(sent, time.monotonic())
            if done is not None:
                os.close(done.fd)
                log.info("event=fetch_sent peer=%s", state.peer)
            if not sent:
                break
        return True

    # --- errors, deadlines, closing ---------------------------------------------------

    def _protocol_error(self, conn: Connection, exc: ProtocolError) -> None:
        self.stats["protocol_errors"] += 1
        log.warning("event=protocol_error peer=%s error=%s", conn.state.peer, one_line(exc))
        conn.state.fail(Violation(exc).last_words(), time.monotonic())

    def _enforce_deadlines(self, now: float) -> None:
        for conn in list(self._conns.values()):
            reason = conn.state.expired(now)
            if reason is None:
                continue
            if not conn.state.sending and conn.state.mode is not Mode.CLOSING:
                # Best effort, never blocking: tell the peer why before hanging up.
                with contextlib.suppress(OSError):
                    conn.sock.send(encode_response(None, error=f"closing connection: {reason}"))
            self._close(conn, reason)

    def _close(self, conn: Connection, reason: str) -> None:
        if not self._is_open(conn):
            return
        del self._conns[conn.fd]
        self._per_host[conn.host] -= 1
        if self._per_host[conn.host] <= 0:
            del self._per_host[conn.host]
        if conn.events:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        for piece in conn.state.close():
            os.close(piece.fd)
        conn.sock.close()
        self.stats["closed"] += 1
        log.info(
            "event=closed peer=%s reason=%s duration_s=%.3f",
            conn.state.peer,
            reason.replace(" ", "_"),
            time.monotonic() - conn.state.opened,
        )


def _send_file(sock: socket.socket, item: FileSlice) -> int:
    count = min(item.count, SENDFILE_CHUNK)
    try:
        sent = os.sendfile(sock.fileno(), item.fd, item.offset, count)
    except OSError as exc:
        if exc.errno not in {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}:
            raise
        # No sendfile for this pair: fall back to a bounded read and send.
        data = os.pread(item.fd, min(count, RECV_SIZE), item.offset)
        sent = sock.send(data) if data else 0
    if sent == 0 and count:
        raise OSError(errno.EIO, "file shrank while being sent")
    return sent


def _kv(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())
