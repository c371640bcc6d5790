"""One connection of the lab protocol server without I/O: mode, deadlines, what to read and send.

The selectors loop owns the socket and the clock and asks this state for
every decision:

* it hands over what it read with :meth:`ConnectionState.receive` (``b""`` at
  EOF) and pulls complete requests with :meth:`~ConnectionState.next_request`,
  which yields one only while :meth:`~ConnectionState.ready` (one request at a
  time, in order: the next one is not parsed until the previous answer is out,
  which is also the back-pressure);
* it sends what :meth:`~ConnectionState.head` names and reports how much went
  out with :meth:`~ConnectionState.sent`;
* now and then it asks :meth:`~ConnectionState.expired` whether the connection
  has to go, and why.

Modes: ``MESSAGES`` (framed requests and responses), ``SINK`` (raw bytes
counted until the peer half-closes) and ``CLOSING`` (flushing a last message,
reading nothing).

Deadlines (:class:`Deadlines`): a message's header must arrive within
``header_timeout``; its content must keep an average of ``min_rate`` bytes/s
after that grace period; nothing received for ``stall_timeout`` mid-message, no
send progress for ``stall_timeout``, or nothing at all for ``idle_timeout``
between messages closes the connection. So a peer sending one byte every few
seconds cannot hold a slot. Time spent on our own work (a worker hashing, a
``stall`` timer) is never held against the peer.

File content to send is a :class:`FileSlice` holding an open descriptor. The
state never touches it but hands every slice it lets go of back to the loop
(:meth:`~ConnectionState.sent` when done, :meth:`~ConnectionState.close`), so
the loop can close each one exactly once.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    FrameDecoder,
    Header,
    Limits,
    Message,
    MessageCollector,
    encode_response,
)

log = logging.getLogger("socketlab.server")

CLOSE_GRACE: Final = 2.0  # time to flush a final message before closing anyway


class Mode(Enum):
    MESSAGES = "messages"  # framed requests and responses
    SINK = "sink"  # raw bytes counted until the peer half-closes
    CLOSING = "closing"  # flushing a last message, reading nothing


@dataclass(frozen=True, kw_only=True)
class Deadlines:
    """The time limits of a connection (seconds; ``min_rate`` in bytes/s)."""

    header_timeout: float = 10.0
    stall_timeout: float = 15.0
    idle_timeout: float = 60.0
    min_rate: float = 4096.0
    close_grace: float = CLOSE_GRACE


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


class ConnectionState:
    """Everything about one connection but its socket; times are the loop's monotonic clock."""

    def __init__(self, *, peer: str, limits: Limits, deadlines: Deadlines, now: float) -> None:
        self.peer = peer
        self.deadlines = deadlines
        self.decoder = FrameDecoder(limits=limits)
        self.collector = MessageCollector()
        self.mode = Mode.MESSAGES
        self.opened = now
        self.busy = False  # waiting for a worker or a timer before answering
        self.closed = False
        self.last_recv = now
        self.last_send = now
        self.message_started: float | None = None  # first byte of the message arriving
        self.message_bytes = 0
        self.header_done = False
        self.closing_since = 0.0
        self.sink: SinkStats | None = None
        self._out: deque[bytes | FileSlice] = deque()
        self._out_pos = 0  # sent prefix of _out[0] when it is bytes

    # --- what the loop watches --------------------------------------------------------

    @property
    def sending(self) -> bool:
        """Something is queued for the peer."""
        return bool(self._out)

    def ready(self) -> bool:
        """A buffered request may be answered now."""
        return self.mode is Mode.MESSAGES and not self.busy and not self._out and not self.closed

    def wants_read(self) -> bool:
        return self.mode is Mode.SINK or self.ready()

    @property
    def idle(self) -> bool:
        """Between messages with nothing owed either way: what ``idle_timeout`` measures."""
        return self.ready() and self.message_started is None

    @property
    def finished(self) -> bool:
        """Closing and the last message is out: the loop may close the socket."""
        return self.mode is Mode.CLOSING and not self._out

    # --- reading ----------------------------------------------------------------------

    def receive(self, data: bytes | memoryview, now: float) -> None:
        """Take what the socket gave; ``b""`` means the peer half-closed."""
        self.last_recv = now
        size = len(data)
        if self.mode is Mode.SINK:
            if size and self.sink is not None:
                self.sink.add(size, now)
            else:
                self.finish_sink(now)
            return
        if self.mode is Mode.CLOSING:
            return  # the stream is over; nothing read now can change the last words
        if size and not self.decoder.in_message:
            self.message_started, self.message_bytes, self.header_done = now, 0, False
        self.message_bytes += size
        self.decoder.receive_data(bytes(data))

    def next_request(self, now: float) -> Message | ConnectionClosed | None:
        """The next complete request, ConnectionClosed at the peer's EOF, or None for now.

        Raises :class:`~socketlab.protocol.RemoteProtocolError` when the peer
        broke the framing; answer that with :meth:`fail`.
        """
        while self.ready():
            event = self.decoder.next_event()
            if event is NEED_DATA:
                return None
            if isinstance(event, ConnectionClosed):
                return event
            if isinstance(event, Header):
                self.header_done = True
            message = self.collector.feed(event)
            if message is not None:
                self._message_done(now)
                return message
        return None

    def _message_done(self, now: float) -> None:
        # The deadlines of the next message start now if part of it is already here.
        self.header_done = False
        if self.decoder.in_message:
            self.message_started, self.message_bytes = now, self.decoder.buffered
        else:
            self.message_started, self.message_bytes = None, 0

    # --- modes ------------------------------------------------------------------------

    def start_sink(self, expected: int | None, now: float) -> None:
        """From now on count raw bytes until the peer half-closes, then report."""
        self.sink = SinkStats(expected=expected, started=now)
        self.mode = Mode.SINK
        trailing, eof = self.decoder.trailing_data
        if trailing:
            self.sink.add(len(trailing), now)
        log.info("event=sink_start peer=%s expected=%s", self.peer, expected)
        if eof:
            self.finish_sink(now)

    def finish_sink(self, now: float) -> None:
        report = self.sink.report() if self.sink is not None else {}
        log.info(
            "event=sink_done peer=%s %s", self.peer, " ".join(f"{k}={v}" for k, v in report.items())
        )
        self.mode = Mode.CLOSING
        self.closing_since = now
        self.queue(encode_response(report), now)

    def fail(self, last_words: bytes, now: float) -> None:
        """Send ``last_words`` (an error message), read nothing more, then close."""
        self.mode = Mode.CLOSING
        self.closing_since = now
        self.busy = False
        self.queue(last_words, now)

    # --- writing ----------------------------------------------------------------------

    def queue(self, item: bytes | FileSlice, now: float) -> None:
        """Append ``item`` to what goes out, in order."""
        if self.closed:
            # The loop checks liveness before queueing; a slice queued here would leak its fd.
            raise ValueError(f"queueing on the closed connection of {self.peer}")
        if not self._out:
            self.last_send = now
        self._out.append(item)

    def head(self) -> memoryview | FileSlice | None:
        """What to send next: the unsent bytes of the first item, or the file slice."""
        if not self._out:
            return None
        item = self._out[0]
        if isinstance(item, FileSlice):
            return item
        return memoryview(item)[self._out_pos :]

    def sent(self, count: int, now: float) -> FileSlice | None:
        """Account for ``count`` bytes of :meth:`head` sent; returns a file slice now done."""
        item = self._out[0]
        if count:
            self.last_send = now
        if isinstance(item, FileSlice):
            item.offset += count
            item.count -= count
            if item.count > 0:
                return None
            self._out.popleft()
            return item
        self._out_pos += count
        if self._out_pos == len(item):
            self._out.popleft()
            self._out_pos = 0
        return None

    def close(self) -> list[FileSlice]:
        """Drop everything queued; returns the file slices whose descriptors must be closed."""
        self.closed = True
        slices = [item for item in self._out if isinstance(item, FileSlice)]
        self._out.clear()
        self._out_pos = 0
        return slices

    # --- deadlines --------------------------------------------------------------------

    def expired(self, now: float) -> str | None:
        """Why the connection has to go now, or None (the rules of the module docstring)."""
        limits = self.deadlines
        if self.mode is Mode.CLOSING:
            late = now - self.closing_since > limits.close_grace
            return "error message not taken" if late else None
        if self._out:
            late = now - self.last_send > limits.stall_timeout
            return f"peer stopped reading for {limits.stall_timeout:g} s" if late else None
        if self.busy:
            return None  # our own work (hashing, a stall timer), not the peer's
        if self.mode is Mode.SINK and self.sink is not None:
            started: float | None = self.sink.started
            received = self.sink.bytes
        else:
            started, received = self.message_started, self.message_bytes
        if started is None:
            idle = now - max(self.last_recv, self.last_send) > limits.idle_timeout
            return f"idle for {limits.idle_timeout:g} s" if idle else None
        return message_deadline(
            limits,
            elapsed=now - started,
            since_recv=now - self.last_recv,
            received=received,
            header_pending=self.mode is Mode.MESSAGES and not self.header_done,
        )


def message_deadline(
    limits: Deadlines, *, elapsed: float, since_recv: float, received: int, header_pending: bool
) -> str | None:
    """The deadlines while a message (or a sink stream) is arriving."""
    if header_pending and elapsed > limits.header_timeout:
        return f"header not complete within {limits.header_timeout:g} s"
    if since_recv > limits.stall_timeout:
        return f"stalled: nothing received for {limits.stall_timeout:g} s"
    grace_over = elapsed - limits.header_timeout
    if grace_over > 0 and received < limits.min_rate * grace_over:
        return f"too slow: {received} bytes in {elapsed:.1f} s"
    return None
