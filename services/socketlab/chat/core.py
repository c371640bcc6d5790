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
  connection's input is processed in order, a broadcast is appended once to a
  shared log that every participant reads in order from its own cursor
  (:mod:`socketlab.chat.fanout`), and private frames keep their place in it.
* What the hub holds for one participant is bounded (frames and bytes). A
  participant that would exceed the bound (a slow reader) is disconnected with
  the reason, on a frame boundary; everyone else carries on.
* A sender is rate limited (a token bucket): a message over the rate is refused
  with an ``error`` (``rate-limited``) to the sender alone, and the loop stops
  reading from it until it may send again; readers never pay for a flooder.
* Texts have no control characters but tab; names have none at all, do not
  imitate the hub's notices (``* …``, ``! …``), and are not confusable (same
  skeleton) with a present participant's.
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
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from socketlab.chat import wire
from socketlab.chat.fanout import BroadcastLog, Mailbox
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

RATE_NOTICE_INTERVAL: Final = 1.0  # at most one rate-limited error per second per sender


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
    rate: float = env_field(
        "SOCKETLAB_CHAT_RATE", 50.0, "chat messages per second one participant may send"
    )
    burst: int = env_field(
        "SOCKETLAB_CHAT_BURST", 100, "chat messages one participant may send at once (bucket size)"
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
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")


class Reason(StrEnum):
    """Why a connection ended (sent in ``left`` notices and logs)."""

    BYE = "bye"
    DISCONNECTED = "disconnected"
    TIMEOUT = "heartbeat timeout"
    OVERFLOW = "outgoing queue overflow (reader too slow)"
    PROTOCOL = "protocol error"
    HUB_FULL = "hub full"
    SHUTDOWN = "hub shutting down"


@dataclass(eq=False)
class _Conn:
    id: int
    decoder: FrameDecoder
    outbox: Mailbox
    tokens: float  # the rate limiter's bucket
    tokens_at: float  # when it was last filled
    last_heard: float
    last_ping: float
    last_progress: float  # when the socket last took bytes of a non-empty outbox
    collector: MessageCollector = field(default_factory=MessageCollector)
    name: str | None = None
    sent: int = 0  # this participant's messages so far (their seq)
    closing: Reason | None = None
    refused: int = 0  # messages refused by the rate limiter since the last notice
    refused_notice: float = float("-inf")  # when the last rate-limited error was queued
    skeleton: str | None = None


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
        self._skeletons: dict[str, _Conn] = {}
        self._ids = itertools.count(1)
        self._log = BroadcastLog(
            max_frames=self.config.max_queue_frames, max_bytes=self.config.max_queue_bytes
        )
        self._log_grew = False  # every attached mailbox may have something new
        self._dirty: set[int] = set()
        self._closing: list[Closing] = []
        self._announce: deque[_Conn] = deque()  # left notices still to broadcast
        self.relayed = 0  # messages accepted from senders
        self.delivered = 0  # frames queued to receivers (messages and notices)
        self.rate_limited = 0  # messages refused by the rate limiter

    # ------------------------------------------------------------------ queries

    @property
    def participants(self) -> list[str]:
        """Names of the joined participants, sorted."""
        return sorted(self._names)

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def log_frames(self) -> int:
        """Broadcast frames the shared log keeps (for the slowest cursor)."""
        return len(self._log)

    def outbox(self, conn_id: int) -> Mailbox:
        return self._conns[conn_id].outbox

    def name_of(self, conn_id: int) -> str | None:
        conn = self._conns.get(conn_id)
        return conn.name if conn else None

    def take_dirty(self) -> set[int]:
        """Connections that may have newly queued output since the last call."""
        dirty, self._dirty = self._dirty, set()
        if self._log_grew:
            self._log_grew = False
            dirty.update(mailbox.owner for mailbox in self._log.readers)
        return {cid for cid in dirty if cid in self._conns}

    def take_closing(self) -> list[Closing]:
        """Connections the hub has finished with since the last call."""
        closing, self._closing = self._closing, []
        return closing

    def read_paused_until(self, conn_id: int, now: float) -> float | None:
        """When the loop may read ``conn_id`` again, or None to read it now.

        A sender whose bucket is empty is not read until it holds a token again,
        so a flood waits in its own socket buffers, not in the hub's CPU.
        """
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing is not None:
            return None
        tokens = min(
            float(self.config.burst), conn.tokens + (now - conn.tokens_at) * self.config.rate
        )
        if tokens >= 1.0:
            return None
        return now + (1.0 - tokens) / self.config.rate

    # ------------------------------------------------------------------ inputs

    def open(self, now: float) -> int:
        """A new connection; returns its id."""
        conn_id = next(self._ids)
        limits = wire.limits(self.config.max_frame)
        self._conns[conn_id] = _Conn(
            id=conn_id,
            decoder=FrameDecoder(limits=limits),
            outbox=Mailbox(self._log, owner=conn_id),
            tokens=float(self.config.burst),
            tokens_at=now,
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
            self._drain(conn, now)
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
        if conn is not None:
            conn.outbox.clear()
            if conn.closing is None:
                self._close(conn, Reason.DISCONNECTED)
                self._settle()

    def forget(self, conn_id: int) -> None:
        """The loop closed the socket; drop every trace of it."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        conn.outbox.clear()
        if conn.closing is None:  # closed without our decision: announce it
            conn.closing = Reason.DISCONNECTED
            if conn.name is not None:
                self._announce.append(conn)
            self._settle()
        self._release_name(conn)
        self._dirty.discard(conn_id)

    def tick(self, now: float) -> None:
        """Heartbeats: ping the quiet, close the silent; trim the shared log.

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
        for mailbox in self._log.check():
            self._overflow(self._conns[mailbox.owner])
        self._settle()

    def shutdown(self) -> None:
        """Tell everyone the hub is going away and close every connection."""
        for conn in list(self._conns.values()):
            if conn.closing is None:
                self._error(conn, "shutdown", "the hub is shutting down")
                conn.closing = Reason.SHUTDOWN
                conn.outbox.detach(keep=True)
                self._closing.append(Closing(conn.id, Reason.SHUTDOWN))

    # ------------------------------------------------------------------ internals

    def _drain(self, conn: _Conn, now: float) -> None:
        while conn.closing is None:
            event = conn.decoder.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                self._close(conn, Reason.DISCONNECTED)
                return
            message = conn.collector.feed(event)
            if message is not None:
                self._on_message(conn, message, now)

    def _on_message(self, conn: _Conn, message: Message, now: float) -> None:
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
            self._say(conn, body.get("text"), now)
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
        skeleton = name_skeleton(name)
        lookalike = self._skeletons.get(skeleton)
        if lookalike is not None:
            self._error(
                conn,
                "name-confusable",
                f"the name {name!r} looks like {lookalike.name!r}, who is here; choose another",
            )
            return
        if len(self._names) >= self.config.max_participants:
            self._error(conn, "hub-full", f"{len(self._names)} participants is the limit")
            self._close(conn, Reason.HUB_FULL)
            return
        conn.name = name
        conn.skeleton = skeleton
        self._names[name] = conn
        self._skeletons[skeleton] = conn
        # The welcome is private and queued first: the broadcasts after it follow it.
        self._send(conn, wire.encode_event("welcome", name=name, participants=self.participants))
        conn.outbox.attach()
        self._broadcast(wire.encode_event("joined", name=name), exclude=conn)
        log.info(
            "event=chat_joined conn=%d name=%s participants=%d", conn.id, name, len(self._names)
        )

    def _say(self, conn: _Conn, text: Any, now: float) -> None:
        if not isinstance(text, str) or not text:
            self._error(conn, "bad-text", "say needs a non-empty string text")
            return
        size = len(text.encode("utf-8"))
        if size > self.config.max_text:
            self._error(conn, "too-long", f"{size} bytes; the limit is {self.config.max_text}")
            return
        problem = text_problem(text)
        if problem:
            self._error(conn, "bad-text", problem)
            return
        if not self._take_token(conn, now):
            return
        conn.sent += 1
        self.relayed += 1
        frame = wire.encode_event(
            "message", text=text, seq=conn.sent, ts=self._wall(), **{"from": conn.name}
        )
        self._broadcast(frame, exclude=conn)

    def _take_token(self, conn: _Conn, now: float) -> bool:
        """The rate limiter: True when ``conn`` may send one more message now."""
        config = self.config
        conn.tokens = min(float(config.burst), conn.tokens + (now - conn.tokens_at) * config.rate)
        conn.tokens_at = now
        if conn.tokens >= 1.0:
            conn.tokens -= 1.0
            return True
        conn.refused += 1
        self.rate_limited += 1
        if now - conn.refused_notice >= RATE_NOTICE_INTERVAL:
            log.info(
                "event=chat_rate_limited conn=%d name=%s refused=%d",
                conn.id,
                conn.name,
                conn.refused,
            )
            self._error(
                conn,
                "rate-limited",
                f"slow down: at most {config.rate:g} messages/s (bursts of {config.burst}); "
                f"{conn.refused} refused",
            )
            conn.refused_notice = now
            conn.refused = 0
        return False

    def _broadcast(self, frame: bytes, *, exclude: _Conn | None) -> None:
        origin = exclude.outbox if exclude is not None and exclude.outbox.attached else None
        receivers = self._log.reader_count - (origin is not None)
        over = self._log.append(frame, origin=origin)
        self.delivered += receivers
        self._log_grew = True
        for mailbox in over:
            self._overflow(self._conns[mailbox.owner])

    def _send(self, conn: _Conn, frame: bytes) -> None:
        if conn.closing is not None:
            return
        if not conn.outbox.push(frame):
            conn.outbox.detach(keep=False)
            self._overflow(conn)
            return
        self.delivered += 1
        self._dirty.add(conn.id)

    def _overflow(self, conn: _Conn) -> None:
        """``conn`` would hold more than the bounds: cut it, with the reason.

        Its mailbox is already detached (what it could not read is lost anyway);
        the frame in flight is finished first, so the notice arrives whole.
        """
        if conn.closing is not None:
            return
        log.warning(
            "event=chat_overflow conn=%d name=%s bound_frames=%d bound_bytes=%d",
            conn.id,
            conn.name,
            self.config.max_queue_frames,
            self.config.max_queue_bytes,
        )
        self._error(conn, "overflow", f"disconnected: {Reason.OVERFLOW}", force=True)
        self._close(conn, Reason.OVERFLOW)

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
        conn.outbox.detach(keep=True)  # what is queued still goes out; nothing more joins it
        self._dirty.add(conn.id)
        self._closing.append(Closing(conn.id, reason))
        if conn.name is not None:
            self._announce.append(conn)
        log.info("event=chat_closing conn=%d name=%s reason=%r", conn.id, conn.name, str(reason))

    def _release_name(self, conn: _Conn) -> None:
        if conn.name is not None and self._names.get(conn.name) is conn:
            del self._names[conn.name]
        if conn.skeleton is not None and self._skeletons.get(conn.skeleton) is conn:
            del self._skeletons[conn.skeleton]

    def _settle(self) -> None:
        # Left notices are broadcast here, not inside _close: a notice can make
        # another slow reader overflow, which queues its own notice, and so on,
        # without recursion.
        while self._announce:
            conn = self._announce.popleft()
            if conn.name is not None and self._names.get(conn.name) is conn:
                self._release_name(conn)
                reason = conn.closing or Reason.DISCONNECTED
                self._broadcast(
                    wire.encode_event("left", name=conn.name, reason=str(reason)), exclude=conn
                )


# Characters drawn alike in common fonts, mapped to the Latin letter they imitate
# (after NFKC): the Cyrillic and Greek look-alikes, and digits and signs that pass
# for letters. A small stand-in for the UTS #39 confusables table.
_LOOKALIKES: Final = {  # Latin letter -> the characters that pass for it
    "-": "_\u2010\u2011\u2012\u2013\u2014\u2212",
    "a": "\u0430\u0410\u03b1\u0391@",
    "b": "\u0432\u0412\u03b2\u0392",
    "c": "\u0441\u0421",
    "d": "\u0501",
    "e": "\u0435\u0415\u03b5\u0395",
    "h": "\u04bb\u043d\u041d\u0397",
    "i": "\u0456\u03b9",
    "j": "\u0458\u0408",
    "k": "\u043a\u041a\u03ba\u039a",
    "l": "1|",
    "m": "\u043c\u041c\u039c",
    "n": "\u039d",
    "o": "\u043e\u041e\u03bf\u039f0",
    "p": "\u0440\u0420\u03c1\u03a1",
    "s": "\u0455\u04055$",
    "t": "\u0442\u0422\u03c4\u03a4",
    "u": "\u03c5",
    "v": "\u03bd",
    "x": "\u0445\u0425\u03c7\u03a7",
    "y": "\u0443\u0423\u03a5",
    "z": "\u0396",
}
_CONFUSABLES: Final = str.maketrans(
    {source: letter for letter, sources in _LOOKALIKES.items() for source in sources}
)
_DIGRAPHS: Final = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_NOTICE_MARKS: Final = frozenset("*!")  # how the client prints the hub's notices and errors


def name_skeleton(name: str) -> str:
    """A name's look: two names with the same skeleton are confusable.

    NFKC (fullwidth and compatibility forms), case folded, look-alike letters
    mapped to Latin, combining marks dropped, and letter pairs that read as one
    letter (``rn`` -> ``m``) joined.
    """
    text = unicodedata.normalize("NFKC", name).casefold().translate(_CONFUSABLES)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    for pair, letter in _DIGRAPHS:
        text = text.replace(pair, letter)
    return text


def name_problem(name: Any, *, max_length: int) -> str | None:
    """Why ``name`` cannot be a participant's name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a name is a non-empty string"
    if len(name) > max_length:
        return f"a name has at most {max_length} characters"
    if name != name.strip() or not name.isprintable():
        return "a name has no control characters and no leading or trailing spaces"
    if unicodedata.normalize("NFKC", name)[0] in _NOTICE_MARKS:
        return "a name does not start with * or ! (they mark the hub's notices)"
    return None


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be relayed (a control character), or None when it can."""
    if text.isprintable():
        return None  # the common case, checked in C
    for index, char in enumerate(text):
        if char != "\t" and unicodedata.category(char) == "Cc":
            return (
                f"a text has no control characters but tab (U+{ord(char):04X} at {index}); "
                "send one line per message"
            )
    return None
