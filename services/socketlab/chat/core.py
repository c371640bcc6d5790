"""The chat hub without I/O: participants, names, fan-out, bounded queues, heartbeats.

The I/O loop owns the sockets and the clock; this core owns every decision.
The loop calls :meth:`ChatHub.open` for a new connection,
:meth:`~ChatHub.receive_data` with what it read (``b""`` at EOF),
:meth:`~ChatHub.tick` now and then, and :meth:`~ChatHub.connection_lost` when
a socket fails. It then sends what :meth:`~ChatHub.outbox` holds for the
connections :meth:`~ChatHub.take_dirty` names, and closes those
:meth:`~ChatHub.take_closing` names once their outbox is flushed (or a grace
period passed), calling :meth:`~ChatHub.forget` afterwards.

Guarantees:

* Names are unique among joined participants; a taken name is an ``error``
  (``name-taken``) and the connection may try another.
* A sender's messages reach every other participant in the order sent: each
  connection's input is processed in order and every outbox is a FIFO.
* Every outbox is bounded (frames and bytes). A participant whose outbox
  would overflow is disconnected with the reason, everyone else carries on.
* A connection silent for ``peer_timeout`` (no byte at all, not even a
  ``pong`` to our ``ping``) is closed and announced as left.
* Bad input gets an ``error`` to that connection only: invalid UTF-8, a text
  over ``max_text``, a non-JSON or unknown event keep the connection; broken
  framing or a frame over ``max_frame`` closes it (the stream is lost).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from socketlab.chat import wire
from socketlab.config import EnvConfig, env_config, env_field
from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    FrameDecoder,
    Message,
    MessageCollector,
    RemoteProtocolError,
)
from socketlab.protocol.messages import JSON_TYPE

log = logging.getLogger("socketlab.chat")

PEEK_LIMIT: Final = 256 * 1024  # bytes handed to one send() call at most


@env_config
@dataclass(frozen=True, kw_only=True)
class HubConfig(EnvConfig):
    """Limits and timers of the hub (the container reads them once, from the environment)."""

    max_participants: int = env_field(
        "SOCKETLAB_CHAT_MAX_PARTICIPANTS", 2000, "participants the chat hub admits at once"
    )
    max_name: int = wire.DEFAULT_MAX_NAME
    max_text: int = env_field(
        "SOCKETLAB_CHAT_MAX_TEXT", wire.DEFAULT_MAX_TEXT, "longest chat message, in bytes"
    )
    max_frame: int = wire.DEFAULT_MAX_FRAME
    max_queue_frames: int = env_field(
        "SOCKETLAB_CHAT_QUEUE_FRAMES", 8192, "frames queued for one participant before it is cut"
    )
    max_queue_bytes: int = env_field(
        "SOCKETLAB_CHAT_QUEUE_BYTES",
        4 * 1024 * 1024,
        "bytes queued for one participant before it is cut",
    )
    heartbeat_interval: float = env_field(
        "SOCKETLAB_CHAT_HEARTBEAT", 3.0, "seconds of quiet before the hub pings a participant"
    )
    peer_timeout: float = env_field(
        "SOCKETLAB_CHAT_PEER_TIMEOUT", 10.0, "seconds of silence after which a participant is gone"
    )

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0 or self.peer_timeout <= self.heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < peer_timeout")
        if self.max_text > self.max_frame or self.max_queue_frames < 1:
            raise ValueError("max_text must fit in max_frame; queues need room")


class Reason(StrEnum):
    """Why a connection ended (sent in ``left`` notices and logs)."""

    BYE = "bye"
    DISCONNECTED = "disconnected"
    TIMEOUT = "heartbeat timeout"
    OVERFLOW = "outgoing queue overflow (reader too slow)"
    PROTOCOL = "protocol error"
    HUB_FULL = "hub full"
    SHUTDOWN = "hub shutting down"


class Outbox:
    """A bounded FIFO of encoded frames waiting for the socket.

    Frames that go out together are coalesced into one chunk by :meth:`peek`,
    so a backlog is walked once, not again after every partial send;
    ``frames`` still counts the messages inside for the bound.
    """

    __slots__ = ("_bytes", "_chunks", "_counts", "_frames", "_offset", "max_bytes", "max_frames")

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._chunks: deque[bytes] = deque()
        self._counts: deque[int] = deque()  # frames in each chunk
        self._offset = 0  # bytes of the first chunk already sent
        self._bytes = 0  # unsent bytes in total
        self._frames = 0

    def __len__(self) -> int:
        return self._bytes

    @property
    def frames(self) -> int:
        return self._frames

    def push(self, frame: bytes) -> bool:
        """Queue ``frame``; False (and nothing queued) when the bounds would be exceeded."""
        size = len(frame)
        if self._frames >= self.max_frames or self._bytes + size > self.max_bytes:
            return False
        self._chunks.append(frame)
        self._counts.append(1)
        self._frames += 1
        self._bytes += size
        return True

    def force(self, frame: bytes) -> None:
        """Queue ``frame`` regardless of the bounds (a last word before closing)."""
        self._chunks.append(frame)
        self._counts.append(1)
        self._frames += 1
        self._bytes += len(frame)

    def clear(self) -> None:
        self._chunks.clear()
        self._counts.clear()
        self._offset = 0
        self._bytes = 0
        self._frames = 0

    def peek(self, limit: int = PEEK_LIMIT) -> bytes:
        """Up to about ``limit`` bytes from the front, several frames joined (fewer syscalls)."""
        chunks = self._chunks
        if not chunks:
            return b""
        first = chunks[0]
        if len(chunks) == 1 or len(first) - self._offset >= limit:
            return first[self._offset :] if self._offset else first
        taken, size = 1, len(first) - self._offset
        for chunk in itertools.islice(chunks, 1, None):
            if size + len(chunk) > limit:
                break
            taken += 1
            size += len(chunk)
        if taken == 1:
            return first[self._offset :] if self._offset else first
        joined = b"".join(itertools.islice(chunks, 0, taken))
        count = 0
        for _ in range(taken):
            chunks.popleft()
            count += self._counts.popleft()
        chunks.appendleft(joined)
        self._counts.appendleft(count)
        return joined[self._offset :] if self._offset else joined

    def consume(self, size: int) -> None:
        """Drop ``size`` bytes from the front (they reached the socket)."""
        self._bytes -= size
        chunks = self._chunks
        while size:
            head = len(chunks[0]) - self._offset
            if size < head:
                self._offset += size
                return
            size -= head
            chunks.popleft()
            self._frames -= self._counts.popleft()
            self._offset = 0


@dataclass(eq=False)
class _Conn:
    id: int
    decoder: FrameDecoder
    outbox: Outbox
    last_heard: float
    last_ping: float
    last_progress: float  # when the socket last took bytes of a non-empty outbox
    collector: MessageCollector = field(default_factory=MessageCollector)
    name: str | None = None
    sent: int = 0  # this participant's messages so far (their seq)
    closing: Reason | None = None


@dataclass(frozen=True)
class Closing:
    """A connection the loop should close once its outbox is flushed."""

    conn_id: int
    reason: Reason


class ChatHub:
    """All chat decisions for any number of connections; no sockets, no clock."""

    def __init__(
        self, *, config: HubConfig | None = None, wall_clock: Callable[[], float] | None = None
    ) -> None:
        self.config = config or HubConfig()
        self._wall = wall_clock or (lambda: 0.0)
        self._conns: dict[int, _Conn] = {}
        self._names: dict[str, _Conn] = {}
        self._ids = itertools.count(1)
        self._dirty: set[int] = set()
        self._closing: list[Closing] = []
        self._announce: deque[_Conn] = deque()  # left notices still to broadcast
        self.relayed = 0  # messages accepted from senders
        self.delivered = 0  # frames queued to receivers (messages and notices)

    # ------------------------------------------------------------------ queries

    @property
    def participants(self) -> list[str]:
        """Names of the joined participants, sorted."""
        return sorted(self._names)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def outbox(self, conn_id: int) -> Outbox:
        return self._conns[conn_id].outbox

    def name_of(self, conn_id: int) -> str | None:
        conn = self._conns.get(conn_id)
        return conn.name if conn else None

    def take_dirty(self) -> set[int]:
        """Connections with newly queued output since the last call."""
        dirty, self._dirty = self._dirty, set()
        return {cid for cid in dirty if cid in self._conns}

    def take_closing(self) -> list[Closing]:
        """Connections the hub has finished with since the last call."""
        closing, self._closing = self._closing, []
        return closing

    # ------------------------------------------------------------------ inputs

    def open(self, now: float) -> int:
        """A new connection; returns its id."""
        conn_id = next(self._ids)
        limits = wire.limits(self.config.max_frame)
        self._conns[conn_id] = _Conn(
            id=conn_id,
            decoder=FrameDecoder(limits=limits),
            outbox=Outbox(
                max_frames=self.config.max_queue_frames, max_bytes=self.config.max_queue_bytes
            ),
            last_heard=now,
            last_ping=now,
            last_progress=now,
        )
        return conn_id

    def receive_data(self, conn_id: int, data: bytes, now: float) -> None:
        """Bytes read from ``conn_id`` (``b""`` when the peer closed its side)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing is not None:
            return
        conn.last_heard = now
        try:
            conn.decoder.receive_data(data)
            self._drain(conn)
        except RemoteProtocolError as exc:
            self._error(conn, "protocol", str(exc))
            self._close(conn, Reason.PROTOCOL)
        self._settle()

    def sent(self, conn_id: int, size: int, now: float) -> None:
        """The socket took ``size`` bytes from the front of the outbox."""
        conn = self._conns[conn_id]
        conn.outbox.consume(size)
        if size:
            conn.last_progress = now

    def connection_lost(self, conn_id: int) -> None:
        """The socket failed (reset, broken pipe): the participant is gone."""
        conn = self._conns.get(conn_id)
        if conn is not None and conn.closing is None:
            self._close(conn, Reason.DISCONNECTED)
            self._settle()

    def forget(self, conn_id: int) -> None:
        """The loop closed the socket; drop every trace of it."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        if conn.closing is None:  # closed without our decision: announce it
            conn.closing = Reason.DISCONNECTED
            if conn.name is not None:
                self._announce.append(conn)
            self._settle()
        if conn.name is not None and self._names.get(conn.name) is conn:
            del self._names[conn.name]
        self._dirty.discard(conn_id)

    def tick(self, now: float) -> None:
        """Heartbeats: ping the quiet, close the silent.

        A peer that reads what we send is alive even when its ``pong`` is
        still queued behind a long backlog: only a peer that is silent *and*
        (has nothing pending, or has taken none of it for ``peer_timeout``)
        is declared gone.
        """
        interval, timeout = self.config.heartbeat_interval, self.config.peer_timeout
        ping = wire.ping()
        for conn in list(self._conns.values()):
            if conn.closing is not None:
                continue
            silent = now - conn.last_heard
            reading = len(conn.outbox) > 0 and now - conn.last_progress <= timeout
            if silent > timeout and not reading:
                log.info(
                    "event=chat_peer_timeout conn=%d name=%s silent_s=%.1f",
                    conn.id,
                    conn.name,
                    silent,
                )
                self._close(conn, Reason.TIMEOUT)
            elif silent >= interval and now - conn.last_ping >= interval:
                conn.last_ping = now
                self._send(conn, ping)
        self._settle()

    def shutdown(self) -> None:
        """Tell everyone the hub is going away and close every connection."""
        for conn in list(self._conns.values()):
            if conn.closing is None:
                self._error(conn, "shutdown", "the hub is shutting down")
                conn.closing = Reason.SHUTDOWN
                self._closing.append(Closing(conn.id, Reason.SHUTDOWN))

    # ------------------------------------------------------------------ internals

    def _drain(self, conn: _Conn) -> None:
        while conn.closing is None:
            event = conn.decoder.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                self._close(conn, Reason.DISCONNECTED)
                return
            message = conn.collector.feed(event)
            if message is not None:
                self._on_message(conn, message)

    def _on_message(self, conn: _Conn, message: Message) -> None:
        body = self._parse(conn, message)
        if body is None:
            return
        kind = body["type"]
        if kind == "ping":
            self._send(conn, wire.pong())
        elif kind == "pong":
            pass  # liveness was noted when the bytes arrived
        elif kind == "join":
            self._join(conn, body.get("name"))
        elif kind == "bye":
            self._send(conn, wire.bye())
            self._close(conn, Reason.BYE)
        elif conn.name is None:
            self._error(conn, "not-joined", f"join with a name before {kind!r}")
        elif kind == "say":
            self._say(conn, body.get("text"))
        elif kind == "who":
            self._send(conn, wire.encode_event("participants", names=self.participants))
        else:
            self._error(conn, "unknown-event", f"unknown event type {kind!r}")

    def _parse(self, conn: _Conn, message: Message) -> dict[str, Any] | None:
        """The event's JSON object, or None after telling the client what is wrong."""
        if message.header.content_type != JSON_TYPE:
            self._error(conn, "bad-event", f"chat events are {JSON_TYPE}")
            return None
        try:
            text = message.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._error(conn, "invalid-utf8", f"content is not valid UTF-8: {exc}")
            return None
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self._error(conn, "bad-event", f"content is not JSON: {exc}")
            return None
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            self._error(conn, "bad-event", 'an event is a JSON object with a string "type"')
            return None
        return body

    def _join(self, conn: _Conn, name: Any) -> None:
        if conn.name is not None:
            self._error(conn, "already-joined", f"you are already {conn.name!r}")
            return
        problem = name_problem(name, max_length=self.config.max_name)
        if problem:
            self._error(conn, "bad-name", problem)
            return
        assert isinstance(name, str)  # noqa: S101 - name_problem checked it
        if name in self._names:
            self._error(conn, "name-taken", f"the name {name!r} is taken; choose another")
            return
        if len(self._names) >= self.config.max_participants:
            self._error(conn, "hub-full", f"{len(self._names)} participants is the limit")
            self._close(conn, Reason.HUB_FULL)
            return
        conn.name = name
        self._names[name] = conn
        self._send(conn, wire.encode_event("welcome", name=name, participants=self.participants))
        self._broadcast(wire.encode_event("joined", name=name), exclude=conn)
        log.info(
            "event=chat_joined conn=%d name=%s participants=%d", conn.id, name, len(self._names)
        )

    def _say(self, conn: _Conn, text: Any) -> None:
        if not isinstance(text, str) or not text:
            self._error(conn, "bad-text", "say needs a non-empty string text")
            return
        size = len(text.encode("utf-8"))
        if size > self.config.max_text:
            self._error(conn, "too-long", f"{size} bytes; the limit is {self.config.max_text}")
            return
        conn.sent += 1
        self.relayed += 1
        frame = wire.encode_event(
            "message", text=text, seq=conn.sent, ts=self._wall(), **{"from": conn.name}
        )
        self._broadcast(frame, exclude=conn)

    def _broadcast(self, frame: bytes, *, exclude: _Conn | None) -> None:
        # The fan-out hot path (N - 1 pushes per message), so _send is inlined;
        # the rare overflow goes through _send again for the full treatment.
        dirty = self._dirty
        overflowed: list[_Conn] = []
        delivered = 0
        for other in self._names.values():
            if other is exclude or other.closing is not None:
                continue
            if other.outbox.push(frame):
                delivered += 1
                dirty.add(other.id)
            else:
                overflowed.append(other)
        self.delivered += delivered
        for conn in overflowed:
            self._send(conn, frame)

    def _send(self, conn: _Conn, frame: bytes) -> None:
        if conn.closing is not None:
            return
        if not conn.outbox.push(frame):
            log.warning(
                "event=chat_overflow conn=%d name=%s queued_frames=%d queued_bytes=%d",
                conn.id,
                conn.name,
                conn.outbox.frames,
                len(conn.outbox),
            )
            conn.outbox.clear()  # what it could not read is lost anyway; say why instead
            self._error(conn, "overflow", f"disconnected: {Reason.OVERFLOW}", force=True)
            self._close(conn, Reason.OVERFLOW)
            return
        self.delivered += 1
        self._dirty.add(conn.id)

    def _error(self, conn: _Conn, code: str, detail: str, *, force: bool = False) -> None:
        log.info("event=chat_client_error conn=%d name=%s code=%s", conn.id, conn.name, code)
        frame = wire.encode_event("error", code=code, detail=detail)
        if force:
            conn.outbox.force(frame)
            self._dirty.add(conn.id)
        else:
            self._send(conn, frame)

    def _close(self, conn: _Conn, reason: Reason) -> None:
        if conn.closing is not None:
            return
        conn.closing = reason
        self._closing.append(Closing(conn.id, reason))
        if conn.name is not None:
            self._announce.append(conn)
        log.info("event=chat_closing conn=%d name=%s reason=%r", conn.id, conn.name, str(reason))

    def _settle(self) -> None:
        # Left notices are broadcast here, not inside _close: a notice can make
        # another slow reader overflow, which queues its own notice, and so on,
        # without recursion.
        while self._announce:
            conn = self._announce.popleft()
            if conn.name is not None and self._names.get(conn.name) is conn:
                del self._names[conn.name]
                reason = conn.closing or Reason.DISCONNECTED
                self._broadcast(
                    wire.encode_event("left", name=conn.name, reason=str(reason)), exclude=conn
                )


def name_problem(name: Any, *, max_length: int) -> str | None:
    """Why ``name`` cannot be a participant's name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a name is a non-empty string"
    if len(name) > max_length:
        return f"a name has at most {max_length} characters"
    if name != name.strip() or not name.isprintable():
        return "a name has no control characters and no leading or trailing spaces"
    return None
