"""Packet values -> :class:`CaptureAnalysis`: what one capture says about its link.

Sans-IO: :class:`CaptureAnalyzer` is fed :class:`~lab.report.packets.Packet`
values one at a time and keeps bounded state (:class:`~lab.report.config.PcapLimits`);
:func:`analyze_file` is the only function here that opens a file.

TCP, per direction of each connection (the rules follow Wireshark's analysis):

* **retransmission**: a segment that carries sequence space below the highest
  seen so far and either covers bytes already seen, was already acknowledged
  (spurious), follows two or more duplicate ACKs (fast), or fills a hole long
  (the connection's handshake RTT, else 3 ms) after the data above it was sent;
  a hole filled sooner than that is **out of order** (reordering, not a resend).
* **duplicate ACK**: a pure ACK (no data, no SYN/FIN/RST) repeating the previous
  ACK number and window of that direction.
* **zero window**: a segment (not SYN/FIN/RST) advertising a receive window of 0;
  a **zero-window probe** is a segment of at most one byte at the next (or previous)
  sequence number while the other side's window is 0; a keep-alive is the same
  without a zero window. Neither counts as a retransmission.
* **RTT samples**: TCP timestamps when the connection carries them (a TSval's first
  sighting to the first segment echoing it), else data to the ACK that acknowledges
  exactly its end (Karn: never for resent data). A sample belongs to the direction
  whose segment it times. The capture point sees its own host's turnaround as tiny
  samples, so the ``tcp.rtt_*`` metrics use the direction leaving ``local`` when that
  address is given, else the direction with the highest median (the far end's).
* **max segment**: the largest payload of one captured segment, from the headers
  (a sender-side capture sees GSO/TSO super-segments up to 64 KB).

UDP: the lab's datagrams (``Message #n`` plus the header documented in
:mod:`socketlab.udp.datagram`) are grouped into sessions by address, ports and
sender id; a jump in sequence numbers opens a gap (lost until a late datagram
fills it, which then counts as reordered). Only the header is needed, so a snap
length that cuts the padding still works; when the whole datagram was captured
its CRC is checked too. Gaps older than ``udp_window`` numbers are final.

Goodput is new payload bytes (resent data excluded) per direction and time bin.
"""

from __future__ import annotations

import math
import random
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from lab.report.config import PcapLimits
from lab.report.errors import PcapError
from lab.report.packets import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Packet,
    ReadCounts,
    TcpSegment,
    read_packets,
)
from socketlab.udp.datagram import MAGIC, Kind, classify

SEQ_MOD: Final = 1 << 32
HALF: Final = 1 << 31
DEFAULT_REORDER_THRESHOLD: Final = 0.003  # Wireshark's default when no handshake was seen
RESENT: Final = frozenset({"retransmission", "fast", "spurious"})
OTHER: Final = "other"  # the direction label beyond max_flows * 2 directions
# The documented header after "Message #n\n" minus the CRC: magic, sender, seq, sent_ns, length.
_LAB_HEADER: Final = struct.Struct("!4sIQQH")
_TEXT_LIMIT: Final = 32  # "Message #" + 20 digits + "\n" fits


def _unwrap(relative: int, reference: int) -> int:
    """The 64-bit sequence number nearest ``reference`` that is ``relative`` mod 2**32."""
    return reference + ((relative - reference + HALF) % SEQ_MOD) - HALF


def _serial_before(a: int, b: int) -> bool:
    """RFC 1982 comparison of 32-bit TCP timestamps: ``a`` strictly before ``b``."""
    return a != b and (b - a) % SEQ_MOD < HALF


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``share`` in 0..1); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, kw_only=True)
class DirectionStats:
    """Traffic from ``src`` to ``dst`` (IP addresses), all protocols."""

    src: str
    dst: str
    packets: int
    bytes: int
    tcp_segments: int = 0
    goodput_bytes: int = 0  # new TCP payload plus UDP payload
    retransmissions: int = 0
    udp_datagrams: int = 0
    rtt_samples: int = 0
    rtt_p50_ms: float | None = None

    @property
    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


@dataclass(frozen=True, kw_only=True)
class TimeBin:
    """What happened in ``[start, start + bin_seconds)`` (Unix time)."""

    start: float
    goodput: Mapping[str, int] = field(default_factory=dict)  # direction label -> bytes
    retransmissions: int = 0
    duplicate_acks: int = 0
    zero_windows: int = 0
    udp_received: int = 0
    udp_gaps: int = 0  # sequence numbers found missing in this bin
    udp_reordered: int = 0


@dataclass(frozen=True, kw_only=True)
class TcpSummary:
    connections: int = 0
    untracked: int = 0  # segments of connections beyond max_flows
    segments: int = 0
    retransmissions: int = 0  # all kinds below
    fast_retransmissions: int = 0
    spurious_retransmissions: int = 0
    out_of_order: int = 0
    duplicate_acks: int = 0
    zero_windows: int = 0
    zero_window_probes: int = 0
    keep_alives: int = 0
    max_segment: int = 0
    mss_option: int | None = None  # the largest MSS a SYN announced
    rtt_source: str | None = None  # "timestamps" or "acks"
    rtt_direction: str | None = None  # the direction label the metrics use
    rtt_samples_ms: tuple[float, ...] = ()  # that direction's samples (kept ones)
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class UdpSession:
    src: str
    sport: int
    dst: str
    dport: int
    sender_id: int
    first_seq: int
    highest_seq: int
    received: int
    lost: int
    reordered: int
    duplicates: int
    late: int


@dataclass(frozen=True, kw_only=True)
class UdpSummary:
    datagrams: int = 0  # every UDP datagram
    lab_datagrams: int = 0  # ours, header valid
    foreign: int = 0
    malformed: int = 0  # ours by the magic, but the rest is wrong (corrupted, cut)
    untracked: int = 0  # ours, in sessions beyond max_flows
    sessions: tuple[UdpSession, ...] = ()
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0


@dataclass(frozen=True, kw_only=True)
class ReadSummary:
    """How much of the file was read (see :class:`~lab.report.packets.ReadCounts`)."""

    records: int = 0
    not_ip: int = 0
    undecodable: int = 0
    damaged: str | None = None
    limited: bool = False

    @classmethod
    def of(cls, counts: ReadCounts) -> ReadSummary:
        return cls(
            records=counts.records,
            not_ip=counts.not_ip,
            undecodable=counts.undecodable,
            damaged=counts.damaged,
            limited=counts.limited,
        )


@dataclass(frozen=True, kw_only=True)
class CaptureAnalysis:
    packets: int  # IP packets analysed
    bytes: int  # their IP bytes
    first_time: float | None
    last_time: float | None
    directions: tuple[DirectionStats, ...]
    tcp: TcpSummary
    udp: UdpSummary
    bin_seconds: float
    bins: tuple[TimeBin, ...]  # by start time; empty bins left out
    unbinned: int = 0  # packets past max_bins
    read: ReadSummary = field(default_factory=ReadSummary)

    def metrics(self) -> dict[str, float | None]:
        """The ``pcap`` check's metrics (:data:`lab.report.metrics.PCAP_METRICS`)."""
        return {
            "tcp.retransmissions": self.tcp.retransmissions,
            "tcp.max_segment": self.tcp.max_segment,
            "tcp.rtt_p50": self.tcp.rtt_p50_ms,
            "tcp.rtt_p99": self.tcp.rtt_p99_ms,
            "tcp.zero_windows": self.tcp.zero_windows,
            "udp.lost": self.udp.lost,
            "udp.reordered": self.udp.reordered,
            "bytes": self.bytes,
        }


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Bin:
    goodput: dict[str, int] = field(default_factory=dict)
    retransmissions: int = 0
    duplicate_acks: int = 0
    zero_windows: int = 0
    udp_received: int = 0
    udp_gaps: int = 0
    udp_reordered: int = 0


@dataclass(slots=True)
class _Direction:
    src: str
    dst: str
    packets: int = 0
    bytes: int = 0
    tcp_segments: int = 0
    goodput_bytes: int = 0
    retransmissions: int = 0
    udp_datagrams: int = 0


@dataclass(slots=True)
class _Side:
    """One direction of one TCP connection, in that direction's sequence space."""

    label: str
    base: int | None = None  # first sequence number seen (raw)
    high: int = 0  # highest sequence number seen plus one (unwrapped, relative to base)
    high_time: float = 0.0
    holes: deque[list[int]] = field(default_factory=deque)  # never-seen ranges below high
    last_ack: int | None = None  # raw ACK number this side last sent
    last_window: int = -1
    dupacks: int = 0
    window_zero: bool = False
    in_flight: deque[tuple[int, int, float]] = field(default_factory=deque)
    ts_sent: deque[tuple[int, float]] = field(default_factory=deque)
    last_ts: int | None = None
    uses_timestamps: bool = False
    last_kind: str = ""  # how the last segment this side sent was classified

    def position(self, raw: int) -> int:
        assert self.base is not None  # noqa: S101 - set by the first segment
        return _unwrap((raw - self.base) % SEQ_MOD, self.high)


@dataclass(slots=True)
class _Connection:
    sides: dict[str, _Side]  # keyed by source "ip:port"
    syn_time: float | None = None
    syn_from: str | None = None
    handshake_rtt: float | None = None
    synack_seen: bool = False


@dataclass(slots=True)
class _UdpState:
    src: str
    sport: int
    dst: str
    dport: int
    sender_id: int
    first_seq: int
    highest_seq: int
    received: int = 1
    reordered: int = 0
    duplicates: int = 0
    late: int = 0
    lost_final: int = 0
    missing: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)  # missing numbers, ascending (lazy)


class CaptureAnalyzer:
    """Feed packets in capture order with :meth:`feed`; :meth:`result` summarises."""

    def __init__(self, *, limits: PcapLimits | None = None, local: str | None = None) -> None:
        self.limits = limits or PcapLimits()
        self.local = local
        self.packets = 0
        self.bytes = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.unbinned = 0
        self._bins: dict[int, _Bin] = {}
        self._directions: dict[str, _Direction] = {}
        self._connections: dict[tuple[str, str], _Connection] = {}
        self._tcp = _TcpCounts()
        self._udp: dict[tuple[str, int, str, int, int], _UdpState] = {}
        self._udp_counts = _UdpCounts()
        # One reservoir for every RTT sample: (direction label, source, seconds).
        self._samples: list[tuple[str, str, float]] = []
        self._samples_seen = 0
        self._rng = random.Random(0)  # noqa: S311 - sampling, not secrets; seeded: reproducible

    # ------------------------------------------------------------------ feeding

    def feed(self, packet: Packet) -> None:
        """Account one packet."""
        self.packets += 1
        self.bytes += packet.length
        if self.first_time is None:
            self.first_time = packet.time
        self.last_time = packet.time if self.last_time is None else max(self.last_time, packet.time)
        direction = self._direction(packet.src, packet.dst)
        direction.packets += 1
        direction.bytes += packet.length
        bin_ = self._bin(packet.time)
        if packet.tcp is not None:
            self._feed_tcp(packet, packet.tcp, direction, bin_)
        elif packet.proto == "udp":
            self._feed_udp(packet, direction, bin_)

    def _direction(self, src: str, dst: str) -> _Direction:
        label = f"{src} -> {dst}"
        found = self._directions.get(label)
        if found is None:
            if len(self._directions) >= 2 * self.limits.max_flows:
                label = OTHER
                found = self._directions.get(OTHER)
            if found is None:
                found = _Direction(
                    src=src if label != OTHER else "*", dst=dst if label != OTHER else "*"
                )
                self._directions[label] = found
        return found

    def _bin(self, time: float) -> _Bin | None:
        # In whole nanoseconds: 0.3 s / 0.1 s must be bin 3, not 2.9999999999999996.
        key = round(time * 1e9) // max(1, round(self.limits.bin_seconds * 1e9))
        found = self._bins.get(key)
        if found is None:
            if len(self._bins) >= self.limits.max_bins:
                self.unbinned += 1
                return None
            found = self._bins[key] = _Bin()
        return found

    def _sample(self, label: str, source: str, seconds: float) -> None:
        if seconds < 0:
            return  # timestamps out of order in the file: no sample
        self._samples_seen += 1
        if len(self._samples) < self.limits.max_rtt_samples:
            self._samples.append((label, source, seconds))
            return
        slot = self._rng.randrange(self._samples_seen)
        if slot < len(self._samples):
            self._samples[slot] = (label, source, seconds)

    # ------------------------------------------------------------------ TCP

    def _connection(self, packet: Packet, segment: TcpSegment) -> _Connection | None:
        here, there = f"{packet.src}:{packet.sport}", f"{packet.dst}:{packet.dport}"
        key = (here, there) if here < there else (there, here)
        found = self._connections.get(key)
        opening = segment.has(TCP_SYN) and not segment.has(TCP_ACK)
        if found is not None and opening:
            side = found.sides[here]
            if side.base is not None and side.base != segment.seq:
                found = None  # the same ports again: a new connection
        if found is None:
            if key not in self._connections and len(self._connections) >= self.limits.max_flows:
                return None
            label_here = f"{packet.src} -> {packet.dst}"
            label_there = f"{packet.dst} -> {packet.src}"
            found = _Connection(
                sides={here: _Side(label=label_here), there: _Side(label=label_there)}
            )
            self._connections[key] = found
            self._tcp.connections += 1
        return found

    def _feed_tcp(
        self, packet: Packet, segment: TcpSegment, direction: _Direction, bin_: _Bin | None
    ) -> None:
        tcp = self._tcp
        tcp.segments += 1
        direction.tcp_segments += 1
        connection = self._connection(packet, segment)
        if connection is None:
            tcp.untracked += 1
            return
        here, there = f"{packet.src}:{packet.sport}", f"{packet.dst}:{packet.dport}"
        side, other = connection.sides[here], connection.sides[there]
        now = packet.time
        syn, fin, rst = segment.has(TCP_SYN), segment.has(TCP_FIN), segment.has(TCP_RST)
        self._handshake(connection, here, segment, now)
        if syn and segment.mss is not None:
            tcp.mss_option = max(tcp.mss_option or 0, segment.mss)
        tcp.max_segment = max(tcp.max_segment, segment.payload)
        if segment.window == 0 and not (syn or fin or rst):
            tcp.zero_windows += 1
            if bin_ is not None:
                bin_.zero_windows += 1
        if side.base is None:
            side.base, side.high, side.high_time = segment.seq, 0, now
        seq = side.position(segment.seq)
        end = seq + segment.payload + syn + fin
        kind = self._sequence_kind(connection, side, other, segment, seq=seq, end=end, now=now)
        new_bytes = self._account(side, kind, seq=seq, end=end, now=now)
        if kind in RESENT:
            direction.retransmissions += 1
            if bin_ is not None:
                bin_.retransmissions += 1
        payload_new = min(segment.payload, new_bytes)
        direction.goodput_bytes += payload_new
        if bin_ is not None and payload_new:
            bin_.goodput[side.label] = bin_.goodput.get(side.label, 0) + payload_new
        self._acknowledge(side, other, segment, now, bin_, kind=kind)
        self._timestamps(side, other, segment, now)
        side.window_zero = segment.window == 0 and not rst
        side.last_kind = kind

    def _account(self, side: _Side, kind: str, *, seq: int, end: int, now: float) -> int:
        """Move ``side``'s sequence state for one segment of ``kind``; new bytes it carried."""
        tcp = self._tcp
        if kind == "new":
            new_bytes = self._advance(side, seq, end, now)
            side.in_flight.append((seq, end, now))
            if len(side.in_flight) > self.limits.max_in_flight:
                side.in_flight.popleft()
            return new_bytes
        if kind == "probe":
            return self._advance(side, seq, end, now) if end > side.high else 0
        if kind == "out_of_order":
            tcp.out_of_order += 1
            return self._fill(side, seq, end)
        if kind in RESENT:
            tcp.retransmissions += 1
            tcp.fast_retransmissions += kind == "fast"
            tcp.spurious_retransmissions += kind == "spurious"
            # Karn: a resent range no longer times anything.
            side.in_flight = deque(
                entry for entry in side.in_flight if entry[1] <= seq or entry[0] >= end
            )
            return self._fill(side, seq, end)
        return 0

    def _handshake(
        self, connection: _Connection, here: str, segment: TcpSegment, now: float
    ) -> None:
        syn, ack = segment.has(TCP_SYN), segment.has(TCP_ACK)
        if syn and not ack:
            connection.syn_time, connection.syn_from = now, here
        elif syn and ack:
            connection.synack_seen = True
        elif (
            ack
            and connection.handshake_rtt is None
            and connection.synack_seen
            and connection.syn_from == here
            and connection.syn_time is not None
        ):
            connection.handshake_rtt = now - connection.syn_time

    def _sequence_kind(
        self,
        connection: _Connection,
        side: _Side,
        other: _Side,
        segment: TcpSegment,
        *,
        seq: int,
        end: int,
        now: float,
    ) -> str:
        """new, empty, probe, keep_alive, out_of_order, or one of :data:`RESENT`."""
        tcp = self._tcp
        control = segment.has(TCP_SYN) or segment.has(TCP_FIN) or segment.has(TCP_RST)
        small = segment.payload <= 1 and not control and segment.has(TCP_ACK)
        # Linux probes with no data one byte back (as a keep-alive does); others send
        # the next byte. A zero-length segment at the next number is a plain ACK.
        behind = seq == side.high - 1
        next_byte = seq == side.high and segment.payload == 1
        if small and other.window_zero and (behind or next_byte):
            tcp.zero_window_probes += 1
            return "probe"
        if small and behind:
            tcp.keep_alives += 1
            return "keep_alive"
        if end <= seq:
            return "empty"
        if seq >= side.high:
            return "new"
        return self._resend_kind(connection, side, other, seq=seq, end=end, now=now)

    def _resend_kind(
        self, connection: _Connection, side: _Side, other: _Side, *, seq: int, end: int, now: float
    ) -> str:
        """A segment starting below the highest number seen: which kind of resend, if any."""
        acked = None if other.last_ack is None else side.position(other.last_ack)
        if other.dupacks >= 2 and acked == seq:
            return "fast"
        if acked is not None and end <= acked:
            return "spurious"
        if self._seen_before(side, seq, min(end, side.high)):
            return "retransmission"
        threshold = connection.handshake_rtt or DEFAULT_REORDER_THRESHOLD
        return "out_of_order" if now - side.high_time < threshold else "retransmission"

    @staticmethod
    def _seen_before(side: _Side, start: int, stop: int) -> bool:
        """Whether any byte of ``[start, stop)`` (below ``high``) was already captured."""
        unseen = 0
        for low, high in side.holes:
            unseen += max(0, min(stop, high) - max(start, low))
        return unseen < stop - start

    def _advance(self, side: _Side, seq: int, end: int, now: float) -> int:
        """New data at or above ``high``: a hole opens when it jumps ahead."""
        if seq > side.high:
            side.holes.append([side.high, seq])
            if len(side.holes) > self.limits.max_in_flight:
                side.holes.popleft()  # the oldest hole is taken as seen: bounded state
        added = end - max(seq, side.high)
        side.high = max(side.high, end)
        side.high_time = now
        return added

    def _fill(self, side: _Side, seq: int, end: int) -> int:
        """Bytes of ``[seq, end)`` never captured before (holes it fills), plus any above high."""
        filled = 0
        kept: deque[list[int]] = deque()
        for low, high in side.holes:
            overlap_low, overlap_high = max(low, seq), min(high, end)
            if overlap_low >= overlap_high:
                kept.append([low, high])
                continue
            filled += overlap_high - overlap_low
            if low < overlap_low:
                kept.append([low, overlap_low])
            if overlap_high < high:
                kept.append([overlap_high, high])
        side.holes = kept
        if end > side.high:
            filled += end - side.high
            side.high = end
        return filled

    def _acknowledge(
        self,
        side: _Side,
        other: _Side,
        segment: TcpSegment,
        now: float,
        bin_: _Bin | None,
        *,
        kind: str,
    ) -> None:
        """Duplicate ACKs, and ACK-based RTT samples of ``other``'s data."""
        if not segment.has(TCP_ACK):
            return
        control = segment.has(TCP_SYN) or segment.has(TCP_FIN) or segment.has(TCP_RST)
        # Not duplicates: probes and keep-alives, the ACKs answering them, a zero window.
        answering = other.last_kind in {"probe", "keep_alive"}
        pure = segment.payload == 0 and not control and kind == "empty" and not answering
        if (
            pure
            and segment.window != 0
            and side.last_ack == segment.ack
            and side.last_window == segment.window
            and other.base is not None
            and other.high > 0
        ):
            side.dupacks += 1
            self._tcp.duplicate_acks += 1
            if bin_ is not None:
                bin_.duplicate_acks += 1
        elif side.last_ack != segment.ack:
            side.dupacks = 0
        side.last_ack, side.last_window = segment.ack, segment.window
        if other.base is None or not other.in_flight:
            return
        acked = other.position(segment.ack)
        timed: tuple[int, int, float] | None = None
        while other.in_flight and other.in_flight[0][1] <= acked:
            timed = other.in_flight.popleft()
        if timed is not None and timed[1] == acked and not other.uses_timestamps:
            self._sample(other.label, "acks", now - timed[2])

    def _timestamps(self, side: _Side, other: _Side, segment: TcpSegment, now: float) -> None:
        """TSval first sightings of ``side``; TSecr echoes time ``other``'s."""
        if segment.ts_val is None:
            return
        side.uses_timestamps = True
        if side.last_ts is None or _serial_before(side.last_ts, segment.ts_val):
            side.last_ts = segment.ts_val
            side.ts_sent.append((segment.ts_val, now))
            if len(side.ts_sent) > self.limits.max_in_flight:
                side.ts_sent.popleft()
        echo = segment.ts_ecr
        if echo is None or not segment.has(TCP_ACK) or not other.ts_sent:
            return
        while other.ts_sent and _serial_before(other.ts_sent[0][0], echo):
            other.ts_sent.popleft()
        if other.ts_sent and other.ts_sent[0][0] == echo:
            _, sent = other.ts_sent.popleft()
            self._sample(other.label, "timestamps", now - sent)

    # ------------------------------------------------------------------ UDP

    def _feed_udp(self, packet: Packet, direction: _Direction, bin_: _Bin | None) -> None:
        counts = self._udp_counts
        counts.datagrams += 1
        direction.udp_datagrams += 1
        direction.goodput_bytes += packet.udp_length
        if bin_ is not None and packet.udp_length:
            label = f"{packet.src} -> {packet.dst}"
            bin_.goodput[label] = bin_.goodput.get(label, 0) + packet.udp_length
        header = lab_datagram(packet.udp_data, packet.udp_length)
        if header is None:
            counts.foreign += 1
            return
        if isinstance(header, str):
            counts.malformed += 1
            return
        sender_id, seq = header
        counts.lab += 1
        if bin_ is not None:
            bin_.udp_received += 1
        key = (packet.src, packet.sport, packet.dst, packet.dport, sender_id)
        session = self._udp.get(key)
        if session is None:
            if len(self._udp) >= self.limits.max_flows:
                counts.untracked += 1
                return
            self._udp[key] = _UdpState(
                src=packet.src,
                sport=packet.sport,
                dst=packet.dst,
                dport=packet.dport,
                sender_id=sender_id,
                first_seq=seq,
                highest_seq=seq,
            )
            return
        self._udp_sequence(session, seq, bin_)

    def _udp_sequence(self, session: _UdpState, seq: int, bin_: _Bin | None) -> None:
        window = self.limits.udp_window
        session.received += 1
        if seq > session.highest_seq:
            gap = seq - session.highest_seq - 1
            if gap:
                tracked_from = max(session.highest_seq + 1, seq - window)
                session.lost_final += tracked_from - (session.highest_seq + 1)
                for number in range(tracked_from, seq):
                    session.missing.add(number)
                    session.order.append(number)
                if bin_ is not None:
                    bin_.udp_gaps += gap
            session.highest_seq = seq
            horizon = seq - window
            while session.order and session.order[0] < horizon:
                number = session.order.popleft()
                if number in session.missing:
                    session.missing.discard(number)
                    session.lost_final += 1
        elif seq in session.missing:
            session.missing.discard(seq)
            session.reordered += 1
            if bin_ is not None:
                bin_.udp_reordered += 1
        elif seq < session.highest_seq - window or seq < session.first_seq:
            session.late += 1
        else:
            session.duplicates += 1

    # ------------------------------------------------------------------ result

    def _rtt(self) -> tuple[str | None, str | None, list[float]]:
        """Which samples the metrics use: (source, direction label, samples in ms)."""
        sources = {source for _, source, _ in self._samples}
        if not sources:
            return None, None, []
        source = "timestamps" if "timestamps" in sources else "acks"
        by_direction: dict[str, list[float]] = {}
        for label, kind, seconds in self._samples:
            if kind == source:
                by_direction.setdefault(label, []).append(seconds * 1000.0)
        if self.local is not None:
            leaving = [label for label in by_direction if label.startswith(f"{self.local} -> ")]
            if leaving:
                merged = [value for label in leaving for value in by_direction[label]]
                return source, leaving[0] if len(leaving) == 1 else f"{self.local} -> *", merged
        label = max(
            by_direction, key=lambda name: (percentile(by_direction[name], 0.5) or 0.0, name)
        )
        return source, label, by_direction[label]

    def result(self, read: ReadCounts | None = None) -> CaptureAnalysis:
        """Everything counted so far, as frozen values."""
        source, rtt_label, samples = self._rtt()
        per_direction: dict[str, list[float]] = {}
        for label, kind, seconds in self._samples:
            if kind == source:
                per_direction.setdefault(label, []).append(seconds * 1000.0)
        directions = tuple(
            DirectionStats(
                src=d.src,
                dst=d.dst,
                packets=d.packets,
                bytes=d.bytes,
                tcp_segments=d.tcp_segments,
                goodput_bytes=d.goodput_bytes,
                retransmissions=d.retransmissions,
                udp_datagrams=d.udp_datagrams,
                rtt_samples=len(per_direction.get(label, [])),
                rtt_p50_ms=percentile(per_direction.get(label, []), 0.5),
            )
            for label, d in self._directions.items()
        )
        tcp = self._tcp
        sessions = tuple(
            UdpSession(
                src=s.src,
                sport=s.sport,
                dst=s.dst,
                dport=s.dport,
                sender_id=s.sender_id,
                first_seq=s.first_seq,
                highest_seq=s.highest_seq,
                received=s.received,
                lost=s.lost_final + len(s.missing),
                reordered=s.reordered,
                duplicates=s.duplicates,
                late=s.late,
            )
            for s in self._udp.values()
        )
        udp = self._udp_counts
        width = self.limits.bin_seconds
        return CaptureAnalysis(
            packets=self.packets,
            bytes=self.bytes,
            first_time=self.first_time,
            last_time=self.last_time,
            directions=directions,
            tcp=TcpSummary(
                connections=tcp.connections,
                untracked=tcp.untracked,
                segments=tcp.segments,
                retransmissions=tcp.retransmissions,
                fast_retransmissions=tcp.fast_retransmissions,
                spurious_retransmissions=tcp.spurious_retransmissions,
                out_of_order=tcp.out_of_order,
                duplicate_acks=tcp.duplicate_acks,
                zero_windows=tcp.zero_windows,
                zero_window_probes=tcp.zero_window_probes,
                keep_alives=tcp.keep_alives,
                max_segment=tcp.max_segment,
                mss_option=tcp.mss_option,
                rtt_source=source,
                rtt_direction=rtt_label,
                rtt_samples_ms=tuple(samples),
                rtt_p50_ms=percentile(samples, 0.5),
                rtt_p99_ms=percentile(samples, 0.99),
            ),
            udp=UdpSummary(
                datagrams=udp.datagrams,
                lab_datagrams=udp.lab,
                foreign=udp.foreign,
                malformed=udp.malformed,
                untracked=udp.untracked,
                sessions=sessions,
                lost=sum(s.lost for s in sessions),
                reordered=sum(s.reordered for s in sessions),
                duplicates=sum(s.duplicates for s in sessions),
            ),
            bin_seconds=width,
            bins=tuple(
                TimeBin(
                    start=key * width,
                    goodput=dict(b.goodput),
                    retransmissions=b.retransmissions,
                    duplicate_acks=b.duplicate_acks,
                    zero_windows=b.zero_windows,
                    udp_received=b.udp_received,
                    udp_gaps=b.udp_gaps,
                    udp_reordered=b.udp_reordered,
                )
                for key, b in sorted(self._bins.items())
            ),
            unbinned=self.unbinned,
            read=ReadSummary.of(read) if read is not None else ReadSummary(records=self.packets),
        )


@dataclass(slots=True)
class _TcpCounts:
    connections: int = 0
    untracked: int = 0
    segments: int = 0
    retransmissions: int = 0
    fast_retransmissions: int = 0
    spurious_retransmissions: int = 0
    out_of_order: int = 0
    duplicate_acks: int = 0
    zero_windows: int = 0
    zero_window_probes: int = 0
    keep_alives: int = 0
    max_segment: int = 0
    mss_option: int | None = None


@dataclass(slots=True)
class _UdpCounts:
    datagrams: int = 0
    lab: int = 0
    foreign: int = 0
    malformed: int = 0
    untracked: int = 0


def lab_datagram(data: bytes, length: int) -> tuple[int, int] | str | None:
    """``(sender_id, seq)`` of one of the lab's datagrams, a reason string when it carries
    the magic but is wrong, None when it is not ours. ``data`` may be cut short by the
    capture; ``length`` is the payload length the UDP header gives."""
    newline = data.find(b"\n", 0, _TEXT_LIMIT)
    start = newline + 1
    if newline < 0 or data[start : start + len(MAGIC)] != MAGIC:
        return None
    if len(data) < start + _LAB_HEADER.size:
        return "header cut off by the capture"
    _, sender_id, seq, _sent_ns, declared = _LAB_HEADER.unpack_from(data, start)
    if declared != length:
        return f"length field {declared}, datagram {length} bytes"
    if seq == 0 or data[:start] != b"Message #%d\n" % seq:
        return "text line does not match the header"
    if len(data) >= length and classify(data[:length]).kind is not Kind.VALID:
        return "CRC mismatch"
    return sender_id, seq


def analyze(
    packets: Iterable[Packet],
    *,
    limits: PcapLimits | None = None,
    local: str | None = None,
    read: ReadCounts | None = None,
) -> CaptureAnalysis:
    """Analyse packets in capture order (see the module docstring for the rules)."""
    analyzer = CaptureAnalyzer(limits=limits, local=local)
    for packet in packets:
        analyzer.feed(packet)
    return analyzer.result(read)


def analyze_file(
    path: Path, *, limits: PcapLimits | None = None, local: str | None = None
) -> CaptureAnalysis:
    """Read and analyse one pcap file; PcapError when it cannot be read at all."""
    limits = limits or PcapLimits()
    counts = ReadCounts()
    analyzer = CaptureAnalyzer(limits=limits, local=local)
    try:
        with path.open("rb") as stream:
            for packet in read_packets(stream, limits=limits, counts=counts):
                analyzer.feed(packet)
    except OSError as exc:
        raise PcapError(f"{path}: {exc.strerror or exc}") from exc
    except PcapError as exc:
        raise PcapError(f"{path}: {exc}") from exc
    return analyzer.result(counts)
