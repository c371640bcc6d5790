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
  ``lost`` unchanged.
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
    """Counters for one run of one sender (mutable; owned by :class:`Accounting`)."""

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
    received: int = 0
    bytes: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    lost_final: int = 0
    missing: set[int] = field(default_factory=set)
    horizon: int = 0
    jitter_ns: float = 0.0
    last_transit_ns: int | None = None
    transit_sum_ns: int = 0
    transit_max_ns: int = 0
    transits: LatencyHistogram = field(default_factory=LatencyHistogram)  # for percentiles

    @property
    def name(self) -> str:
        return f"{self.host}/{self.sender_id:08x}#{self.number}"

    @property
    def lost(self) -> int:
        return self.lost_final + len(self.missing)

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
        elif seq in self.missing:
            self.missing.discard(seq)
            self.reordered += 1
        elif seq < self.first_seq and self.horizon <= self.first_seq:
            # An early datagram overtaken by a later one: it was not missed after all.
            tracked = self.first_seq - seq - 1 <= self.window
            self._track_gap(seq + 1, self.first_seq)
            self.first_seq = seq
            if tracked:
                self.horizon = seq
            self.reordered += 1
        elif seq < self.horizon:
            self.late += 1
        else:
            self.duplicates += 1

    def _advance(self, seq: int) -> None:
        self._track_gap(self.highest_seq + 1, seq)
        self.highest_seq = seq

    def _track_gap(self, start: int, stop: int) -> None:
        if stop - start > self.window:
            # Too many to track one by one: count them lost for good.
            self.lost_final += stop - start + len(self.missing)
            self.missing.clear()
            self.horizon = max(self.horizon, stop)
            return
        self.missing.update(range(start, stop))
        if len(self.missing) > self.window:
            self._prune()

    def _prune(self) -> None:
        # Keep the newest half of the window; older gaps become final losses.
        keep_from = self.highest_seq - self.window // 2
        old = {seq for seq in self.missing if seq < keep_from}
        self.missing -= old
        self.lost_final += len(old)
        self.horizon = max(self.horizon, keep_from)

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
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        max_foreign_sources: int = DEFAULT_MAX_FOREIGN_SOURCES,
    ) -> None:
        self.window = window
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
                horizon=seq,
            )
            self.active[key] = session
            self.sessions.append(session)
            self._bound_sessions()
            started = SessionStarted(
                session.name, f"{host}:{port}", sender_id, seq, previous is not None
            )
        session.add(seq, sent_ns, len(data), arrival_ns)
        return started

    @staticmethod
    def _continues(session: Session, port: int, seq: int, sent_ns: int) -> bool:
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
            old = self.sessions.pop(0)
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
        "missed_at_start": sum(s.first_seq - 1 for s in sessions),
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
