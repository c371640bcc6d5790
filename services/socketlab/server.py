"""The lab protocol server on 4571/tcp (``server`` container): many clients, one process.

A single selectors loop around the sans-IO protocol (``socketlab.protocol``).
Each connection has a :class:`~socketlab.protocol.FrameDecoder`; complete
requests are answered in order, one at a time per connection (the next request
is not read until the previous answer is out, which is also the back-pressure).

Actions: ``hello``, ``echo``, ``time``, ``lookup``/``search`` (pure, see
``protocol.messages``); ``objects`` (JSON with a type registry); signed
``pickle`` (only when ``SOCKETLAB_PICKLE_KEY`` is set); ``ls`` and ``fetch``
(files under the data root, streamed with ``os.sendfile``, the call behind
``socket.sendfile``, which refuses non-blocking sockets); ``sink`` (the
blocking/non-blocking demo: after the request the connection carries raw bytes
until the client half-closes; the answer counts bytes, recv batches and time);
``stall`` (answers late, for the client read-timeout demo).

Every connection runs under deadlines (all configuration): a message's header
must arrive within ``header_timeout``; content must keep an average rate of
``min_rate`` bytes/s after that grace period; nothing received for
``stall_timeout`` mid-message, or no send progress for ``stall_timeout``, or
nothing at all for ``idle_timeout`` between messages closes the connection.
So a peer sending one byte every few seconds cannot hold a slot. A protocol
violation gets an error message and closes that connection only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import heapq
import itertools
import json
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Final

from socketlab import objects, sampledata
from socketlab.config import LAB_PROTOCOL_PORT, env_float, env_int, env_str
from socketlab.errors import ServiceError
from socketlab.files import PathRefused, list_files, resolve_name
from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    FrameDecoder,
    Header,
    Limits,
    MessageCollector,
    ProtocolError,
    RemoteProtocolError,
    encode_header,
    encode_response,
)
from socketlab.protocol.messages import (
    BINARY_TYPE,
    Message,
    RequestContext,
    UnknownAction,
    answer,
    binary_reply,
    parse_request,
)

log = logging.getLogger("socketlab.server")

RECV_SIZE: Final = 256 * 1024
READS_PER_EVENT: Final = 16  # bound the work one busy peer gets per loop turn
SENDFILE_CHUNK: Final = 8 * 1024 * 1024
SEND_QUEUE_LOW: Final = 1024 * 1024
CLOSE_GRACE: Final = 2.0  # time to flush a final error message before closing


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything the server can be told; :meth:`from_env` reads the container's env."""

    host: str = "0.0.0.0"
    port: int = LAB_PROTOCOL_PORT
    data_root: Path = Path(sampledata.DEFAULT_DATA_ROOT)
    pickle_key: bytes | None = None
    max_pickle: int = objects.DEFAULT_MAX_PICKLE
    max_connections: int = 256
    header_timeout: float = 10.0
    stall_timeout: float = 15.0
    idle_timeout: float = 60.0
    min_rate: float = 4096.0
    max_stall: float = 60.0
    poll_interval: float = 0.5
    max_header: int = 16 * 1024
    max_content: int = 1024 * 1024
    generate_samples: bool = True

    @classmethod
    def from_env(cls) -> ServerConfig:
        """Configuration from ``SOCKETLAB_*`` environment variables."""
        key = env_str("SOCKETLAB_PICKLE_KEY", "")
        return cls(
            port=env_int("SOCKETLAB_PORT", LAB_PROTOCOL_PORT),
            data_root=sampledata.data_root(),
            pickle_key=key.encode() if key else None,
            max_pickle=env_int("SOCKETLAB_MAX_PICKLE", objects.DEFAULT_MAX_PICKLE),
            max_connections=env_int("SOCKETLAB_MAX_CONNECTIONS", 256),
            header_timeout=env_float("SOCKETLAB_HEADER_TIMEOUT", 10.0),
            stall_timeout=env_float("SOCKETLAB_STALL_TIMEOUT", 15.0),
            idle_timeout=env_float("SOCKETLAB_IDLE_TIMEOUT", 60.0),
            min_rate=env_float("SOCKETLAB_MIN_RATE", 4096.0),
            max_header=env_int("SOCKETLAB_MAX_HEADER", 16 * 1024),
            max_content=env_int("SOCKETLAB_MAX_CONTENT", 1024 * 1024),
        )

    def limits(self) -> Limits:
        return Limits(
            max_header=self.max_header,
            default_max_content=self.max_content,
            max_content={objects.PICKLE_TYPE: self.max_pickle},
        )


class Mode(Enum):
    MESSAGES = "messages"  # framed requests and responses
    SINK = "sink"  # raw bytes counted until the peer half-closes
    CLOSING = "closing"  # flushing a last message, reading nothing


@dataclass
class FileSlice:
    """Part of an open file still to be sent."""

    fd: int
    offset: int
    count: int


@dataclass
class SinkStats:
    """What the sink measured on one connection."""

    expected: int | None
    started: float
    bytes: int = 0
    batches: int = 0
    first_byte: float | None = None
    last_byte: float | None = None

    def add(self, size: int, now: float) -> None:
        self.bytes += size
        self.batches += 1
        if self.first_byte is None:
            self.first_byte = now
        self.last_byte = now

    def report(self) -> dict[str, Any]:
        start = self.first_byte if self.first_byte is not None else self.started
        duration = (self.last_byte or start) - start
        return {
            "bytes": self.bytes,
            "batches": self.batches,
            "duration_s": round(duration, 6),
            "expected": self.expected,
            "mbit_s": round(self.bytes * 8 / duration / 1e6, 3) if duration > 0 else None,
        }


@dataclass
class Connection:
    sock: socket.socket
    peer: str
    decoder: FrameDecoder
    opened: float
    collector: MessageCollector = field(default_factory=MessageCollector)
    mode: Mode = Mode.MESSAGES
    out: deque[bytes | FileSlice] = field(default_factory=deque)
    out_pos: int = 0  # sent prefix of out[0] when it is bytes
    busy: bool = False  # waiting for a worker or a timer before answering
    last_recv: float = 0.0
    last_send: float = 0.0
    message_started: float | None = None
    message_bytes: int = 0
    header_done: bool = False
    closing_since: float = 0.0
    sink: SinkStats | None = None
    events: int = 0  # registered selector mask

    def queued(self) -> bool:
        return bool(self.out)


class HashCache:
    """SHA-256 of files keyed by identity and version, so a 1 GiB file is hashed once.

    Called from worker threads; a per-file lock makes a second caller wait for
    the first one's result instead of hashing the same gigabyte again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int, int, int], str] = {}
        self._busy: dict[tuple[int, int, int, int], threading.Lock] = {}

    def sha256(self, path: Path, *, limit: int | None = None) -> str:
        st = path.stat()
        if limit is not None and limit < st.st_size:
            return _hash_prefix(path, limit)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            file_lock = self._busy.setdefault(key, threading.Lock())
        with file_lock:
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                cached = _hash_prefix(path, st.st_size)
                with self._lock:
                    self._cache[key] = cached
            return cached


def _hash_prefix(path: Path, limit: int) -> str:
    hasher = hashlib.sha256()
    remaining = limit
    with path.open("rb") as handle:
        while remaining > 0:
            chunk = handle.read(min(1024 * 1024, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    return hasher.hexdigest()


class LabServer:
    """The selectors server; :meth:`bind` then :meth:`serve` until ``stop`` is set."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.hostname = socket.gethostname()
        self.registry = objects.default_registry()
        self.hashes = HashCache()
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._conns: dict[int, Connection] = {}
        self._recv_buffer = bytearray(RECV_SIZE)
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lab-worker")
        self._done: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self.stats = {"accepted": 0, "closed": 0, "protocol_errors": 0, "refused_busy": 0}

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
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        listener = self._listening()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
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
        for entry in list_files(self.config.data_root):
            self._workers.submit(self.hashes.sha256, self.config.data_root / entry.name)

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn, "server stopping")
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._selector.close()
        if self._listener is not None:
            self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        log.info("event=stopped service=lab-protocol %s", _kv(self.stats))

    # --- the loop ---------------------------------------------------------------------

    def _turn(self) -> None:
        now = time.monotonic()
        timeout = self.config.poll_interval
        if self._timers:
            timeout = max(0.0, min(timeout, self._timers[0][0] - now))
        for key, mask in self._selector.select(timeout=timeout):
            if key.data == "listener":
                self._accept()
            elif key.data == "wake":
                self._drain_wakeups()
            else:
                conn = self._conns.get(key.fd)
                if conn is None:
                    continue
                try:
                    if mask & selectors.EVENT_WRITE:
                        self._on_writable(conn)
                    if mask & selectors.EVENT_READ and key.fd in self._conns:
                        self._on_readable(conn)
                except OSError as exc:
                    self._close(conn, f"socket error: {exc}")
                except Exception:  # a bug must cost one connection, not the server
                    log.exception("event=internal_error peer=%s", conn.peer)
                    self._close(conn, "internal error")
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            _guarded(callback)
        self._enforce_deadlines(now)

    def _listening(self) -> socket.socket:
        if self._listener is None:
            raise ServiceError("the server is not bound")
        return self._listener

    def _accept(self) -> None:
        listener = self._listening()
        for _ in range(64):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("event=accept_failed error=%s", exc)
                return
            sock.setblocking(False)
            peer = f"{address[0]}:{address[1]}"
            if len(self._conns) >= self.config.max_connections:
                self.stats["refused_busy"] += 1
                with contextlib.suppress(OSError):
                    sock.send(encode_response(None, error="server busy: too many connections"))
                sock.close()
                log.warning("event=refused reason=too_many_connections peer=%s", peer)
                continue
            now = time.monotonic()
            conn = Connection(
                sock=sock,
                peer=peer,
                decoder=FrameDecoder(limits=self.config.limits()),
                opened=now,
                last_recv=now,
                last_send=now,
            )
            self._conns[sock.fileno()] = conn
            conn.events = selectors.EVENT_READ
            self._selector.register(sock, conn.events, "conn")
            self.stats["accepted"] += 1
            log.info("event=accepted peer=%s connections=%d", peer, len(self._conns))

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                callback = self._done.get_nowait()
            except queue.Empty:
                return
            _guarded(callback)

    def _update_interest(self, conn: Connection) -> None:
        if conn.sock.fileno() not in self._conns:
            return
        events = 0
        if conn.out:
            events |= selectors.EVENT_WRITE
        if conn.mode is Mode.SINK or (
            conn.mode is Mode.MESSAGES and not conn.busy and not conn.out
        ):
            events |= selectors.EVENT_READ
        if events == conn.events:
            return
        if events:
            if conn.events:
                self._selector.modify(conn.sock, events, "conn")
            else:
                self._selector.register(conn.sock, events, "conn")
        else:
            self._selector.unregister(conn.sock)
        conn.events = events

    # --- reading ----------------------------------------------------------------------

    def _on_readable(self, conn: Connection) -> None:
        for _ in range(READS_PER_EVENT):
            try:
                size = conn.sock.recv_into(self._recv_buffer)
            except (BlockingIOError, InterruptedError):
                break
            now = time.monotonic()
            conn.last_recv = now
            if conn.mode is Mode.SINK:
                if size and conn.sink is not None:
                    conn.sink.add(size, now)
                    continue
                self._finish_sink(conn)
                return
            data = bytes(self._recv_buffer[:size])
            if size and not conn.decoder.in_message:
                conn.message_started, conn.message_bytes, conn.header_done = now, 0, False
            conn.message_bytes += size
            conn.decoder.receive_data(data)
            if not size:
                break
            if len(data) < RECV_SIZE:
                break
        self._process_events(conn)

    def _process_events(self, conn: Connection) -> None:
        """Pull events while no answer is pending (one request at a time, in order)."""
        while conn.mode is Mode.MESSAGES and not conn.busy and not conn.out:
            try:
                event = conn.decoder.next_event()
            except RemoteProtocolError as exc:
                self._protocol_error(conn, exc)
                return
            if event is NEED_DATA:
                break
            if isinstance(event, ConnectionClosed):
                self._close(conn, "peer closed")
                return
            if isinstance(event, Header):
                conn.header_done = True
            try:
                message = conn.collector.feed(event)
            except RemoteProtocolError as exc:
                self._protocol_error(conn, exc)
                return
            if message is not None:
                self._message_done(conn)
                self._dispatch(conn, message)
        self._update_interest(conn)

    def _message_done(self, conn: Connection) -> None:
        # The deadlines of the next message start now if part of it is already here.
        conn.header_done = False
        if conn.decoder.in_message:
            conn.message_started, conn.message_bytes = time.monotonic(), conn.decoder.buffered
        else:
            conn.message_started, conn.message_bytes = None, 0

    # --- requests ---------------------------------------------------------------------

    def _dispatch(self, conn: Connection, message: Message) -> None:
        content_type = message.header.content_type
        try:
            if content_type == objects.PICKLE_TYPE:
                self._reply(conn, self._pickle(message))
            elif message.is_json:
                self._json_request(conn, message)
            else:
                self._queue(conn, binary_reply(message))
        except (PathRefused, objects.ObjectError, UnknownAction) as exc:
            # The peer framed things correctly but asked for something we refuse:
            # answer with the error and keep the connection.
            log.info("event=refused peer=%s reason=%s", conn.peer, _one_line(exc))
            self._queue(conn, encode_response(None, error=str(exc)))
        except RemoteProtocolError as exc:
            self._protocol_error(conn, exc)
        except OSError as exc:  # e.g. the data root vanished: our problem, not the peer's
            log.warning("event=request_failed peer=%s error=%s", conn.peer, exc)
            self._queue(conn, encode_response(None, error=f"server error: {exc}"))

    def _json_request(self, conn: Connection, message: Message) -> None:
        request = parse_request(message)
        action, value = request.action, request.value
        log.info("event=request peer=%s action=%s", conn.peer, action)
        handlers: dict[str, Callable[[Connection, Any], None]] = {
            "objects": self._objects,
            "ls": self._ls,
            "fetch": self._fetch,
            "sink": self._start_sink,
            "stall": self._stall,
        }
        handler = handlers.get(action)
        if handler is not None:
            handler(conn, value)
            return
        context = RequestContext(peer=conn.peer.rsplit(":", 1)[0], hostname=self.hostname)
        self._reply(conn, answer(request, context))

    def _reply(self, conn: Connection, result: Any) -> None:
        self._queue(conn, encode_response(result))

    def _objects(self, conn: Connection, value: Any) -> None:
        # Decoding through the registry validates every field and refuses unknown types.
        received = self.registry.loads(json.dumps(value))
        sample = objects.sample_objects()
        self._reply(
            conn,
            {
                "types": _type_names(received),
                "echo": json.loads(self.registry.dumps(received)),
                "sample": json.loads(self.registry.dumps(sample)),
                "equal_to_sample": received == sample,
            },
        )

    def _pickle(self, message: Message) -> dict[str, Any]:
        signature = message.header.get("signature")
        loaded = objects.load_signed_pickle(
            message.content,
            signature if isinstance(signature, str) else None,
            self.config.pickle_key,
            max_size=self.config.max_pickle,
        )
        log.info(
            "event=pickle_loaded bytes=%d type=%s", len(message.content), type(loaded).__name__
        )
        return {
            "types": _type_names(loaded),
            "equal_to_sample": loaded == objects.sample_objects(),
        }

    def _ls(self, conn: Connection, value: Any) -> None:
        del value
        entries = list_files(self.config.data_root)
        self._reply(conn, [{"name": e.name, "size": e.size} for e in entries])

    def _fetch(self, conn: Connection, value: Any) -> None:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise RemoteProtocolError(
                'fetch needs {"name": str, "offset"?: int, "prefix_sha256"?: str}'
            )
        name: str = value["name"]
        offset = value.get("offset", 0)
        prefix = value.get("prefix_sha256")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise RemoteProtocolError("fetch offset must be a non-negative integer")
        root = self.config.data_root

        def prepare() -> tuple[Path, int, str, int]:
            # Off the loop: may generate the big sample file and hashes whole files.
            if name == sampledata.BIG_NAME and not (root / name).exists():
                sampledata.ensure_sample_data(root, big=True)
            path = resolve_name(root, name)
            size = path.stat().st_size
            full = self.hashes.sha256(path)
            start = offset
            if start > size or (start and self.hashes.sha256(path, limit=start) != prefix):
                start = 0  # the client's prefix is not ours: restart from scratch
            return path, size, full, start

        def send(result: tuple[Path, int, str, int]) -> None:
            path, size, digest, start = result
            header = encode_header(
                BINARY_TYPE,
                size - start,
                extra={
                    "status": "ok",
                    "name": name,
                    "size": size,
                    "sha256": digest,
                    "offset": start,
                },
            )
            fd = os.open(path, os.O_RDONLY)
            log.info(
                "event=fetch_start peer=%s name=%s size=%d offset=%d", conn.peer, name, size, start
            )
            self._queue(conn, header)
            if size > start:
                self._queue(conn, FileSlice(fd=fd, offset=start, count=size - start))
            else:
                os.close(fd)

        self._run_in_worker(conn, prepare, send)

    def _start_sink(self, conn: Connection, value: Any) -> None:
        expected = value.get("bytes") if isinstance(value, dict) else None
        conn.sink = SinkStats(
            expected=expected if isinstance(expected, int) else None, started=time.monotonic()
        )
        conn.mode = Mode.SINK
        trailing, eof = conn.decoder.trailing_data
        if trailing:
            conn.sink.add(len(trailing), time.monotonic())
        log.info("event=sink_start peer=%s expected=%s", conn.peer, conn.sink.expected)
        if eof:
            self._finish_sink(conn)

    def _finish_sink(self, conn: Connection) -> None:
        report = conn.sink.report() if conn.sink is not None else {}
        log.info("event=sink_done peer=%s %s", conn.peer, _kv(report))
        conn.mode = Mode.CLOSING
        conn.closing_since = time.monotonic()
        self._queue(conn, encode_response(report))

    def _stall(self, conn: Connection, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RemoteProtocolError("stall needs a number of seconds")
        delay = min(float(value), self.config.max_stall)
        conn.busy = True

        def wake() -> None:
            if conn.sock.fileno() in self._conns:
                conn.busy = False
                self._reply(conn, f"stalled for {delay:g} s")
                self._process_events(conn)

        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), wake))

    def _run_in_worker(
        self, conn: Connection, work: Callable[[], Any], then: Callable[[Any], None]
    ) -> None:
        conn.busy = True

        def finished(future: Future[Any]) -> None:
            def on_loop() -> None:
                conn.busy = False
                if conn.sock.fileno() not in self._conns:
                    return
                try:
                    then(future.result())
                except (PathRefused, objects.ObjectError) as exc:
                    log.info("event=refused peer=%s reason=%s", conn.peer, _one_line(exc))
                    self._queue(conn, encode_response(None, error=str(exc)))
                except Exception as exc:  # never let one request's failure stop the loop
                    log.exception("event=worker_failed peer=%s", conn.peer)
                    self._queue(conn, encode_response(None, error=f"server error: {exc}"))
                self._process_events(conn)

            self._done.put(on_loop)
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

        self._workers.submit(work).add_done_callback(finished)
        self._update_interest(conn)

    # --- writing ----------------------------------------------------------------------

    def _queue(self, conn: Connection, item: bytes | FileSlice) -> None:
        if not conn.out:
            conn.last_send = time.monotonic()
        conn.out.append(item)
        # No resume here: we may be inside _process_events already (no recursion).
        self._on_writable(conn, resume=False)

    def _on_writable(self, conn: Connection, *, resume: bool = True) -> None:
        while conn.out:
            item = conn.out[0]
            try:
                if isinstance(item, FileSlice):
                    sent = self._send_file(conn, item)
                    if item.count == 0:
                        os.close(item.fd)
                        conn.out.popleft()
                        log.info("event=fetch_sent peer=%s", conn.peer)
                else:
                    view = memoryview(item)[conn.out_pos :]
                    sent = conn.sock.send(view)
                    conn.out_pos += sent
                    if conn.out_pos == len(item):
                        conn.out.popleft()
                        conn.out_pos = 0
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._close(conn, f"send failed: {exc}")
                return
            if sent:
                conn.last_send = time.monotonic()
            else:
                break
        if not conn.out and conn.mode is Mode.CLOSING:
            self._close(conn, "done" if conn.sink else "closed after error")
            return
        if resume and not conn.out and conn.mode is Mode.MESSAGES and not conn.busy:
            # Requests that arrived while we were answering are already buffered.
            self._process_events(conn)
            return
        self._update_interest(conn)

    def _send_file(self, conn: Connection, item: FileSlice) -> int:
        count = min(item.count, SENDFILE_CHUNK)
        try:
            sent = os.sendfile(conn.sock.fileno(), item.fd, item.offset, count)
        except OSError as exc:
            if exc.errno not in {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}:
                raise
            # No sendfile for this pair: fall back to a bounded read and send.
            data = os.pread(item.fd, min(count, RECV_SIZE), item.offset)
            sent = conn.sock.send(data) if data else 0
        if sent == 0 and count:
            raise OSError(errno.EIO, "file shrank while being sent")
        item.offset += sent
        item.count -= sent
        return sent

    # --- errors, deadlines, closing -----------------------------------------------------

    def _protocol_error(self, conn: Connection, exc: ProtocolError) -> None:
        self.stats["protocol_errors"] += 1
        log.warning("event=protocol_error peer=%s error=%s", conn.peer, _one_line(exc))
        conn.mode = Mode.CLOSING
        conn.closing_since = time.monotonic()
        conn.busy = False
        self._queue(conn, encode_response(None, error=f"protocol error: {exc}"))

    def _enforce_deadlines(self, now: float) -> None:
        for conn in list(self._conns.values()):
            reason = self._expired(conn, now)
            if reason is None:
                continue
            if not conn.out and conn.mode is not Mode.CLOSING:
                # Best effort, never blocking: tell the peer why before hanging up.
                with contextlib.suppress(OSError):
                    conn.sock.send(encode_response(None, error=f"closing connection: {reason}"))
            self._close(conn, reason)

    def _expired(self, conn: Connection, now: float) -> str | None:
        """Why ``conn`` has to go now, or None: the deadline rules of the module docstring."""
        cfg = self.config
        if conn.mode is Mode.CLOSING:
            late = now - conn.closing_since > CLOSE_GRACE
            return "error message not taken" if late else None
        if conn.out:
            late = now - conn.last_send > cfg.stall_timeout
            return f"peer stopped reading for {cfg.stall_timeout:g} s" if late else None
        if conn.busy:
            return None  # our own work (hashing, a stall timer), not the peer's
        if conn.mode is Mode.SINK and conn.sink is not None:
            started: float | None = conn.sink.started
            received = conn.sink.bytes
        else:
            started, received = conn.message_started, conn.message_bytes
        if started is None:
            idle = now - max(conn.last_recv, conn.last_send) > cfg.idle_timeout
            return f"idle for {cfg.idle_timeout:g} s" if idle else None
        return _message_deadline(
            cfg,
            elapsed=now - started,
            since_recv=now - conn.last_recv,
            received=received,
            header_pending=conn.mode is Mode.MESSAGES and not conn.header_done,
        )

    def _close(self, conn: Connection, reason: str) -> None:
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is None:
            return
        if conn.events:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        for item in conn.out:
            if isinstance(item, FileSlice):
                os.close(item.fd)
        conn.out.clear()
        conn.sock.close()
        self.stats["closed"] += 1
        log.info(
            "event=closed peer=%s reason=%s duration_s=%.3f",
            conn.peer,
            reason.replace(" ", "_"),
            time.monotonic() - conn.opened,
        )


def _message_deadline(
    cfg: ServerConfig, *, elapsed: float, since_recv: float, received: int, header_pending: bool
) -> str | None:
    """Deadlines while a message (or sink stream) is arriving."""
    reason = None
    if header_pending and elapsed > cfg.header_timeout:
        reason = f"header not complete within {cfg.header_timeout:g} s"
    elif since_recv > cfg.stall_timeout:
        reason = f"stalled: nothing received for {cfg.stall_timeout:g} s"
    elif elapsed > cfg.header_timeout and received < cfg.min_rate * (elapsed - cfg.header_timeout):
        reason = f"too slow: {received} bytes in {elapsed:.1f} s"
    return reason


def _guarded(callback: Callable[[], None]) -> None:
    """Run a deferred callback; an unexpected error is logged, the loop carries on."""
    try:
        callback()
    except Exception:
        log.exception("event=internal_error where=callback")


def _type_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return sorted({type(v).__name__ for v in value.values()})
    return [type(value).__name__]


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")


def _kv(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


def serve(stop: threading.Event) -> None:
    """The ``lab-protocol`` component of the server container."""
    LabServer(ServerConfig.from_env()).serve(stop)
