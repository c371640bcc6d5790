"""Per-message latency for ``socketlab tcp-vs-udp``: a bounded histogram and TCP's message clock.

Pure (no sockets, no clocks: callers pass ``now_ns``). Sender and receiver share
the host's clock in the lab (``time.time_ns`` in both containers reads the same
kernel clock), so a message's latency is its arrival time minus the send time
it carries.

* :class:`LatencyHistogram`: counts in logarithmic buckets 1 % wide, from 1 µs
  to about 20 minutes, so percentiles are read within 1 % whatever the count,
  in a fixed amount of memory (the UDP listener keeps one per session).
* :class:`MessageClock`: reads a TCP byte stream that starts with
  :func:`stream_header` (magic ``SLTM`` and a message size) as messages of that
  size, each beginning with its 8-byte big-endian send time in ns, and times
  each message when its last byte arrives. A stream without the header is
  left alone (byte counting only, as before): the clock costs nothing then.
  Timestamps are unpacked a batch at a time with one ``struct`` call, so a
  fast stream is not held up by per-message Python work.
"""

from __future__ import annotations

import bisect
import math
import struct
from collections import Counter
from dataclasses import dataclass, field

MAGIC = b"SLTM"
_HEADER = struct.Struct("!4sI")
HEADER_SIZE = _HEADER.size
STAMP = struct.Struct("!Q")
MIN_MESSAGE = 16
MAX_MESSAGE = 1 << 20
# Buckets: value_us in [GROWTH**i, GROWTH**(i+1)); bucket 0 also takes anything below 1 µs.
GROWTH = 1.01
BUCKETS = 2100  # GROWTH**2100 µs is about 20 minutes
_LOG_GROWTH = math.log(GROWTH)
_BATCH = 64  # timestamps unpacked per struct call


def bucket_by_log(latency_ns: int) -> int:
    """The bucket of ``latency_ns``, by its definition (the hot path uses :func:`bucket`)."""
    micros = latency_ns / 1000
    return 0 if micros < 1 else min(BUCKETS - 1, int(math.log(micros) / _LOG_GROWTH))


def _lower_bounds() -> list[int]:
    """The least latency in ns of each bucket above 0: ``bucket_by_log`` is monotonic, so
    each is found exactly from its estimate by stepping a few ns either way."""
    bounds = []
    for index in range(1, BUCKETS):
        guess = max(1000, math.ceil(GROWTH**index * 1000))
        while bucket_by_log(guess) >= index:
            guess -= 1
        while bucket_by_log(guess) < index:
            guess += 1
        bounds.append(guess)
    return bounds


_BOUNDS_NS = _lower_bounds()


def bucket(latency_ns: int) -> int:
    """The histogram bucket of ``latency_ns``: one C-level bisection, no logarithm."""
    return bisect.bisect_right(_BOUNDS_NS, latency_ns)


def stream_header(message_size: int) -> bytes:
    """What a timed TCP stream starts with: the magic and the size of each message."""
    if not MIN_MESSAGE <= message_size <= MAX_MESSAGE:
        raise ValueError(f"message size must be {MIN_MESSAGE}..{MAX_MESSAGE} bytes")
    return _HEADER.pack(MAGIC, message_size)


def stamp(message: bytearray | memoryview, sent_ns: int, offset: int = 0) -> None:
    """Write ``sent_ns`` at the start of the message at ``offset``."""
    STAMP.pack_into(message, offset, sent_ns)


@dataclass
class LatencyHistogram:
    """Latencies in ns, counted in logarithmic buckets (mutable, bounded)."""

    counts: Counter[int] = field(default_factory=Counter)
    total: int = 0
    highest_ns: int = 0

    def add(self, latency_ns: int, count: int = 1) -> None:
        self.counts[bisect.bisect_right(_BOUNDS_NS, latency_ns)] += count
        self.total += count
        if latency_ns > self.highest_ns:  # noqa: PLR1730 - cheaper than a call to max()
            self.highest_ns = latency_ns

    def quantile_ms(self, level: float) -> float | None:
        """The ``level`` quantile in ms (its bucket's geometric middle, at most the highest
        value seen), None when empty."""
        if not self.total:
            return None
        wanted = max(1, math.ceil(level * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= wanted:
                middle = 0.001 if index == 0 else float(GROWTH ** (index + 0.5)) / 1000
                return min(middle, self.highest_ns / 1e6)
        return self.highest_ns / 1e6  # pragma: no cover - the counts add up to total

    def summary(self) -> dict[str, float | int | None]:
        return {
            "messages": self.total,
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
            "max_ms": self.highest_ns / 1e6 if self.total else None,
        }


@dataclass
class MessageClock:
    """Times the messages of one TCP stream (mutable; feed it every chunk, in order)."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    size: int = 0  # message size from the header; 0 until read
    timed: bool | None = None  # None: header not read yet; False: not a timed stream
    _head: bytearray = field(default_factory=bytearray)
    _position: int = 0  # bytes of messages consumed (after the header)
    _partial: bytearray = field(default_factory=bytearray)  # a stamp split between chunks
    _batch: struct.Struct | None = None

    def feed(self, data: bytes | bytearray | memoryview, now_ns: int) -> None:
        """The next chunk of the stream, arrived at ``now_ns``."""
        view = memoryview(data)
        if self.timed is None:
            view = self._read_header(view)
        if self.timed and len(view):
            self._messages(view, now_ns)

    def _read_header(self, view: memoryview) -> memoryview:
        needed = HEADER_SIZE - len(self._head)
        self._head += view[:needed]
        if len(self._head) < HEADER_SIZE:
            if not MAGIC.startswith(bytes(self._head[: len(MAGIC)])):
                self.timed = False  # not ours: no need to wait for the rest of a header
            return view[len(view) :]
        magic, size = _HEADER.unpack(self._head)
        if magic != MAGIC or not MIN_MESSAGE <= size <= MAX_MESSAGE:
            self.timed = False
            return view[len(view) :]
        self.timed, self.size = True, size
        self._batch = struct.Struct("!" + f"Q{size - STAMP.size}x" * _BATCH)
        return view[needed:]

    def _messages(self, view: memoryview, now_ns: int) -> None:
        size, length = self.size, len(view)
        offset = 0
        into = self._position % size
        if into:
            # finish the message the last chunk began (its stamp may be split, too)
            if into < STAMP.size:
                self._partial += view[: STAMP.size - into]
            rest = size - into
            if rest > length:
                self._position += length
                return
            self._complete(now_ns)
            offset = rest
        stamps: Counter[int] = Counter()
        whole = (length - offset) // size
        assert self._batch is not None  # noqa: S101 - set with the header
        done = 0
        while whole - done >= _BATCH:
            stamps.update(self._batch.unpack_from(view, offset + done * size))
            done += _BATCH
        for k in range(done, whole):
            stamps[STAMP.unpack_from(view, offset + k * size)[0]] += 1
        for sent_ns, count in stamps.items():
            self.histogram.add(now_ns - sent_ns, count)
        offset += whole * size
        tail = view[offset:]
        if len(tail):
            self._partial = bytearray(tail[: STAMP.size])
        self._position += length

    def _complete(self, now_ns: int) -> None:
        if len(self._partial) >= STAMP.size:
            self.histogram.add(now_ns - STAMP.unpack_from(self._partial)[0])
        self._partial = bytearray()

    def summary(self) -> dict[str, float | int | None] | None:
        """The stream's latency figures, or None for a stream that was not timed."""
        return self.histogram.summary() if self.timed else None
