"""Per-sender accounting of received datagrams (sans-IO: no sockets here).

The listener feeds every datagram to :meth:`Accounting.receive` with its
source address and arrival time; :meth:`Accounting.snapshot` returns the
JSON-ready stats served on ``GET /stats``.

Sessions. Datagrams are grouped by ``(source host, sender id)``. A sender
that restarts begins again at sequence 1 (the seed's lesson), so a datagram
starts a **new session** of the same key when it was sent later than
anything seen so far (``sent_ns`` above the session's maximum) yet its
sequence number is not above the highest seen, or when it comes from a new
source port (a new socket is a new run). Reordered and duplicated datagrams
were sent earlier, so they never trigger this.

Counters per session:

* ``first_seq`` / ``missed_at_start``: the lowest sequence number seen and how
  many came before it (sent while the listener was down, or lost early).
* ``lost``: gaps between ``first_seq`` and ``highest_seq`` not filled yet; a
  late arrival fills its gap again and counts as ``reordered``.
* ``duplicates``: a sequence number seen before.
* ``late``: arrivals older than the tracking window (``window`` sequence
  numbers behind the highest); they cannot be told from duplicates and leave
  ``lost`` unchanged. A datagram of the same sender id from another source port
  that was not sent later than the session's newest (a straggler of an earlier
  run, or a peer using the id) is counted ``late`` too, and changes nothing else.

Bounds. Anyone on the lab network can send well-formed datagrams, so nothing
one datagram does may cost much: a session keeps one bit per sequence number of
its window (8 KiB for the default 65,536), at most ``max_sessions`` sessions are
kept (the one heard from longest ago is folded into the totals), a datagram
costs O(1) (a new session: one pass over the kept ones), and one
that jumps ahead costs at most one pass over the ring. A jump of more than
``max_jump`` sequence numbers (2^20 by default) is no sender's next datagram:
it starts a new session instead of adding up to 2^64 to ``lost``. So a single
datagram moves ``lost`` by at most ``max_jump``; ``missed_at_start`` only
counts sessions whose first sequence number is within ``max_jump`` of 1 (the
others are counted as ``implausible_starts``); every other counter moves by
one, ``bytes`` by one datagram's size.
* ``jitter_ms``: RFC 3550 section 6.4.1 interarrival jitter,
  ``J += (|D(i-1, i)| - J) / 16`` over consecutive arrivals, where ``D`` is
  the difference of transit times (arrival minus send time). Sender and
  listener share the host's clock in the lab, so ``transit_ms_*`` (one-way
  delay) is meaningful too, with its p50 and p99 (``transit_ms_p50``,
  ``transit_ms_p99``, from a bounded histogram); jitter needs only differences.

Kernel counters. :func:`parse_udp_snmp` reads the ``Udp:`` lines of
``/proc/net/snmp`` (the listener's network namespace): ``RcvbufErrors`` are
datagrams the kernel dropped because the socket buffer was full, which the
application never sees and therefore counts as ``lost`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from socketlab.udp.datagram import Classified, Kind, parse
from socketlab.udp.latency import LatencyHistogram

DEFAULT_WINDOW = 1 << 16
DEFAULT_MAX_JUMP = 1 << 20
DEFAULT_MAX_SESSIONS = 256
DEFAULT_MAX_FOREIGN_SOURCES = 256
_NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """Event: the first datagram of a new session arrived."""

    name: str
    source: str
    sender_id: int
    first_seq: int
    restarted: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """Event: a foreign or malformed datagram (reported for logs, first per source)."""

    kind: Kind
    source: str
    reason: str
    sample: bytes


Event = SessionStarted | Rejected


@dataclass(slots=True)
class Session:
    """Counters for one run of one sender (mutable; owned by :class:`Accounting`).

    Which of the last ``window`` sequence numbers arrived is one bit each in a
    ring (``window`` / 8 bytes, allocated once), so a datagram costs O(1) time
    and memory, and one that jumps ahead costs at most one pass over the ring.
    The ring describes ``[low, highest_seq]``, ``low`` being ``first_seq`` until
    the window slides past it; every other bit is zero.
    """

    sender_id: int
    host: str
    port: int
    number: int
    first_seq: int
    highest_seq: int
    max_sent_ns: int
    first_sent_ns: int
    first_arrival_ns: int
    last_arrival_ns: int
    window: int
    plausible_start: bool = True  # first_seq - 1 within the largest plausible jump
    received: int = 0
    bytes: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    lost_final: int = 0
    low: int = 0
    in_window: int = 0  # set bits of the ring: seqs of [low, highest_seq] that arrived
    seen: bytearray = field(default_factory=bytearray)
    jitter_ns: float = 0.0
    last_transit_ns: int | None = None
    transit_sum_ns: int = 0
    transit_max_ns: int = 0
    transits: LatencyHistogram = field(default_factory=LatencyHistogram)  # for percentiles

    def __post_init__(self) -> None:
        if self.window < 8 or self.window % 8:
            raise ValueError("the tracking window is a positive multiple of 8")
        self.low = self.first_seq
        self.seen = bytearray(self.window // 8)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.sender_id:08x}#{self.number}"

    @property
    def lost(self) -> int:
        tracked = self.highest_seq - self.low + 1
        return self.lost_final + max(0, tracked - self.in_window)

    def add(self, seq: int, sent_ns: int, size: int, arrival_ns: int) -> None:
        """Account one valid datagram of this session."""
        self.received += 1
        self.bytes += size
        self.last_arrival_ns = arrival_ns
        self.max_sent_ns = max(self.max_sent_ns, sent_ns)
        transit = arrival_ns - sent_ns
        if self.last_transit_ns is not None:
            self.jitter_ns += (abs(transit - self.last_transit_ns) - self.jitter_ns) / 16
        self.last_transit_ns = transit
        self.transit_sum_ns += transit
        self.transit_max_ns = max(self.transit_max_ns, transit)
        self.transits.add(transit)
        if seq > self.highest_seq:
            self._advance(seq)
        elif seq >= self.low:
            if self._test_and_set(seq):
                self.duplicates += 1
            else:
                self.in_window += 1
                self.reordered += 1
        elif seq < self.first_seq == self.low and self.highest_seq - seq < self.window:
            # An early datagram overtaken by a later one: it was not missed after
            # all, and the numbers between it and the old start now count as gaps.
            self.first_seq = self.low = seq
            self._test_and_set(seq)
            self.in_window += 1
            self.reordered += 1
        else:
            self.late += 1  # older than the window: cannot be told from a duplicate

    def add_next(self, seq: int, sent_ns: int, size: int, arrival_ns: int) -> None:
        """:meth:`add` for the common case, in O(1) with no loop: ``seq`` is
        ``highest_seq + 1`` and ``sent_ns`` above ``max_sent_ns``.

        When the window is full, the number sliding out (``seq - window``) has the
        ring bit ``seq`` takes: read as arrived or lost for good, then reused.
        """
        self.received += 1
        self.bytes += size
        self.last_arrival_ns = arrival_ns
        self.max_sent_ns = sent_ns
        transit = arrival_ns - sent_ns
        last = self.last_transit_ns
        if last is not None:
            self.jitter_ns += (abs(transit - last) - self.jitter_ns) / 16
        self.last_transit_ns = transit
        self.transit_sum_ns += transit
        if transit > self.transit_max_ns:  # noqa: PLR1730 - cheaper than a call to max()
            self.transit_max_ns = transit
        self.transits.add(transit)
        window = self.window
        index = seq % window
        at, mask = index >> 3, 1 << (index & 7)
        seen = self.seen
        byte = seen[at]
        if seq - window == self.low:
            if byte & mask:
                self.in_window -= 1
            else:
                self.lost_final += 1
            self.low += 1
        seen[at] = byte | mask
        self.in_window += 1
        self.highest_seq = seq

    def add_stray(self, size: int, arrival_ns: int) -> None:
        """Account a datagram of this sender id from another socket as ``late``."""
        self.received += 1
        self.bytes += size
        self.late += 1
        self.last_arrival_ns = arrival_ns

    def _advance(self, seq: int) -> None:
        new_low = max(self.first_seq, seq - self.window + 1)
        if new_low > self.low:
            # What slides out of the window: arrived or lost for good.
            leaving_end = min(new_low, self.highest_seq + 1)
            if leaving_end > self.low:
                arrived = self._clear(self.low, leaving_end)
                self.in_window -= arrived
                self.lost_final += leaving_end - self.low - arrived
            if new_low > self.highest_seq + 1:
                self.lost_final += new_low - (self.highest_seq + 1)  # never tracked at all
            self.low = new_low
        self.highest_seq = seq
        self._test_and_set(seq)
        self.in_window += 1

    def _test_and_set(self, seq: int) -> bool:
        index = seq % self.window
        mask = 1 << (index & 7)
        byte = self.seen[index >> 3]
        self.seen[index >> 3] = byte | mask
        return bool(byte & mask)

    def _clear(self, start: int, stop: int) -> int:
        """Clear the bits of seqs ``[start, stop)`` (at most a window); return how many were set."""
        count = stop - start
        first = start % self.window
        if first + count <= self.window:
            return self._clear_bits(first, first + count)
        return self._clear_bits(first, self.window) + self._clear_bits(
            0, first + count - self.window
        )

    def _clear_bits(self, start: int, stop: int) -> int:
        set_bits = 0
        index = start
        while index < stop and index & 7:
            set_bits += self._take(index)
            index += 1
        whole_end = stop & ~7
        if whole_end > index:
            first, last = index >> 3, whole_end >> 3
            set_bits += int.from_bytes(self.seen[first:last], "little").bit_count()
            self.seen[first:last] = bytes(last - first)
            index = whole_end
        while index < stop:
            set_bits += self._take(index)
            index += 1
        return set_bits

    def _take(self, index: int) -> int:
        mask = 1 << (index & 7)
        byte = self.seen[index >> 3]
        self.seen[index >> 3] = byte & ~mask
        return 1 if byte & mask else 0

    def snapshot(self, *, active: bool) -> dict[str, Any]:
        expected = self.highest_seq - self.first_seq + 1
        return {
            "session": self.name,
            "source": f"{self.host}:{self.port}",
            "sender_id": self.sender_id,
            "number": self.number,
            "restarted": self.number > 1,
            "active": active,
            "first_seq": self.first_seq,
            "highest_seq": self.highest_seq,
            "missed_at_start": self.first_seq - 1,
            "plausible_start": self.plausible_start,
            "expected": expected,
            "received": self.received,
            "bytes": self.bytes,
            "lost": self.lost,
            "loss_ratio": self.lost / expected if expected else 0.0,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "late": self.late,
            "jitter_ms": self.jitter_ns / _NS_PER_MS,
            "transit_ms_mean": self.transit_sum_ns / self.received / _NS_PER_MS,
            "transit_ms_max": self.transit_max_ns / _NS_PER_MS,
            "transit_ms_p50": self.transits.quantile_ms(0.5),
            "transit_ms_p99": self.transits.quantile_ms(0.99),
            "first_sent_ns": self.first_sent_ns,
            "first_arrival_ns": self.first_arrival_ns,
            "last_arrival_ns": self.last_arrival_ns,
        }


class Accounting:
    """Every datagram the listener received, by kind and by sender session.

    Not thread-safe: the listener serialises :meth:`receive` and
    :meth:`snapshot` with a lock.
    """

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        max_jump: int = DEFAULT_MAX_JUMP,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_foreign_sources: int = DEFAULT_MAX_FOREIGN_SOURCES,
    ) -> None:
        self.window = -(-window // 8) * 8  # whole bytes of ring
        self.max_jump = max(max_jump, self.window)
        self.max_sessions = max_sessions
        self.max_foreign_sources = max_foreign_sources
        self.datagrams = 0
        self.bytes = 0
        self.foreign = 0
        self.malformed = 0
        self.active: dict[tuple[str, int], Session] = {}
        self.sessions: list[Session] = []  # every session, oldest first (bounded)
        self.retired: dict[str, int] = {}  # counters of sessions dropped from the list
        self.foreign_sources: dict[str, int] = {}
        self.malformed_sources: dict[str, int] = {}

    def receive(self, data: bytes, *, host: str, port: int, arrival_ns: int) -> Event | None:
        """Account one datagram; returns an event worth a log line, if any."""
        self.datagrams += 1
        self.bytes += len(data)
        fields = parse(data)
        if isinstance(fields, Classified):
            return self._reject(fields.kind, f"{host}:{port}", fields.reason, data)
        sender_id, seq, sent_ns = fields
        key = (host, sender_id)
        session = self.active.get(key)
        if (
            session is not None
            and seq == session.highest_seq + 1
            and port == session.port
            and sent_ns > session.max_sent_ns
        ):
            session.add_next(seq, sent_ns, len(data), arrival_ns)  # in order: most datagrams
            return None
        if session is not None and port != session.port and sent_ns <= session.max_sent_ns:
            # Another socket's datagram, sent no later than this run's: a straggler of
            # an earlier run, or someone else using the id. Counted, never followed.
            session.add_stray(len(data), arrival_ns)
            return None
        if session is not None and not self._continues(session, port, seq, sent_ns):
            session = None
        started = None
        if session is None:
            previous = self.active.get(key)
            session = Session(
                sender_id=sender_id,
                host=host,
                port=port,
                number=previous.number + 1 if previous else 1,
                first_seq=seq,
                highest_seq=seq - 1,
                max_sent_ns=sent_ns,
                first_sent_ns=sent_ns,
                first_arrival_ns=arrival_ns,
                last_arrival_ns=arrival_ns,
                window=self.window,
                plausible_start=seq - 1 <= self.max_jump,
            )
            self.active[key] = session
            self.sessions.append(session)
            self._bound_sessions()
            started = SessionStarted(
                session.name, f"{host}:{port}", sender_id, seq, previous is not None
            )
        session.add(seq, sent_ns, len(data), arrival_ns)
        return started

    def _continues(self, session: Session, port: int, seq: int, sent_ns: int) -> bool:
        if seq - session.highest_seq > self.max_jump:
            return False  # no sender skips that far: a new run (or a forgery), apart
        sent_later = sent_ns > session.max_sent_ns
        if sent_later and port != session.port:
            return False
        return not (sent_later and seq <= session.highest_seq)

    def _reject(self, kind: Kind, source: str, reason: str, data: bytes) -> Event | None:
        if kind is Kind.FOREIGN:
            self.foreign += 1
            counts = self.foreign_sources
        else:
            self.malformed += 1
            counts = self.malformed_sources
        seen = counts.get(source)
        if seen is None and len(counts) >= self.max_foreign_sources:
            return None
        counts[source] = (seen or 0) + 1
        return Rejected(kind, source, reason, data[:64]) if seen is None else None

    def _bound_sessions(self) -> None:
        while len(self.sessions) > self.max_sessions:
            # The session heard from longest ago goes (into the totals), so a flood
            # of new sender ids cannot push out a sender that keeps sending.
            # (Never the one just started, which is last.)
            old = min(self.sessions[:-1], key=lambda session: session.last_arrival_ns)
            self.sessions.remove(old)
            if self.active.get((old.host, old.sender_id)) is old:
                del self.active[(old.host, old.sender_id)]
            for name, value in _totals([old]).items():
                self.retired[name] = self.retired.get(name, 0) + value

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready stats: totals at the top, one entry per session."""
        totals = _totals(self.sessions)
        for name, value in self.retired.items():
            totals[name] += value
        active = {id(session) for session in self.active.values()}
        return {
            "datagrams": self.datagrams,
            "bytes": self.bytes,
            **totals,
            "foreign": self.foreign,
            "malformed": self.malformed,
            "foreign_sources": dict(self.foreign_sources),
            "malformed_sources": dict(self.malformed_sources),
            "sessions": [s.snapshot(active=id(s) in active) for s in self.sessions],
        }


def _totals(sessions: list[Session]) -> dict[str, int]:
    return {
        "valid": sum(s.received for s in sessions),
        "lost": sum(s.lost for s in sessions),
        "missed_at_start": sum(s.first_seq - 1 for s in sessions if s.plausible_start),
        "implausible_starts": sum(1 for s in sessions if not s.plausible_start),
        "duplicates": sum(s.duplicates for s in sessions),
        "reordered": sum(s.reordered for s in sessions),
        "late": sum(s.late for s in sessions),
        "session_count": len(sessions),
    }


KERNEL_COUNTERS = ("InDatagrams", "NoPorts", "InErrors", "RcvbufErrors", "InCsumErrors")


def parse_udp_snmp(text: str) -> dict[str, int]:
    """Parse the ``Udp:`` header and value lines of ``/proc/net/snmp``.

    Returns an empty dict when the lines are missing or do not line up.
    """
    rows = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2 or len(rows[0]) != len(rows[1]):
        return {}
    try:
        return {name: int(value) for name, value in zip(rows[0][1:], rows[1][1:], strict=True)}
    except ValueError:
        return {}


def kernel_delta(baseline: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    """The interesting kernel UDP counters, as increases since ``baseline``."""
    return {name: now[name] - baseline.get(name, 0) for name in KERNEL_COUNTERS if name in now}
