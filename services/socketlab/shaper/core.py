"""Scheduling core of the NFQUEUE verdict loop: no sockets, no clocks, no netlink.

Every queued packet gets a fate when it arrives: dropped now, or held until a
release time. Release times are drawn per packet (delay plus jitter from the
link's distribution), so two packets can swap places exactly as they would on
a jittery link; an explicit ``reorder`` share (with netem's ``gap``) is
released at once, overtaking the held ones (the netem meaning of
``reorder``). Loss is random (optionally with netem's correlation),
Gilbert-Elliott or netem's four-state chain; :mod:`socketlab.shaper.models`
holds those models and says how each matches netem. A duplicate is a copy of
the payload released at its own time through the injector; a corrupted packet
has one bit of its transport part flipped, so the receiver's checksum sees it,
like netem.

The caller supplies ``now`` (seconds, monotonic) and a seeded ``random.Random``,
which is what makes the core testable with a fake clock and fake packets: the
same seed and the same packets give the same verdicts (release times are
``now`` plus a drawn delay, so they repeat too when ``now`` does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from socketlab.shaper.models import (
    DelaySampler,
    Distribution,
    FourState,
    GilbertElliott,
    LossModel,
    ReorderGate,
    loss_process,
)
from socketlab.shaper.release import ReleaseQueue

# Marks copies we inject ourselves, so the NFQUEUE rule lets them pass instead
# of queueing them again (lab.shaping.builders adds the matching RETURN rule).
INJECT_MARK = 0x50C1AB

_IPV4_MIN_HEADER = 20
_IPV6_HEADER = 40
SHARES = ("loss", "duplicate", "reorder", "corrupt", "loss_correlation", "delay_correlation")


class QueuedPacket(Protocol):
    """What the core needs from a queued packet (``nfnetlink.NfqPacket`` fits)."""

    def get_payload(self) -> bytes: ...

    def set_payload(self, payload: bytes) -> None: ...


P = TypeVar("P", bound=QueuedPacket)


@dataclass(frozen=True, slots=True, kw_only=True)
class Impairment:
    """What the verdict loop does to one link's packets; shares are 0..1.

    ``loss`` is random loss (with ``loss_correlation``, netem's); a
    ``loss_model`` (Gilbert-Elliott or four-state) replaces it. ``jitter``
    spreads the delay by ``delay_distribution`` (uniform: +/- jitter).
    ``reorder_gap`` is netem's ``gap`` (0 or 1: none).
    """

    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    loss_correlation: float = 0.0
    loss_model: LossModel | None = None
    delay_distribution: Distribution = Distribution.UNIFORM
    delay_correlation: float = 0.0
    reorder_gap: int = 0

    def __post_init__(self) -> None:
        for name in ("delay", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1")
        if self.loss_model is not None and not isinstance(
            self.loss_model, GilbertElliott | FourState
        ):
            raise TypeError(f"loss_model must be a loss model, not {self.loss_model!r}")
        if self.loss_model is not None and (self.loss or self.loss_correlation):
            raise ValueError("loss_model replaces loss and loss_correlation: give one of them")
        if not isinstance(self.delay_distribution, Distribution):
            raise TypeError(f"delay_distribution must be one of {', '.join(Distribution)}")
        if self.reorder_gap < 0:
            raise ValueError("reorder_gap must not be negative")
        if self.reorder_gap > 1 and not self.reorder:
            raise ValueError("reorder_gap needs a reorder share")

    @property
    def is_noop(self) -> bool:
        """True when the loop would pass every packet untouched."""
        return self.loss_model is None and not any(
            (self.delay, self.jitter, self.loss, self.duplicate, self.reorder, self.corrupt)
        )


@dataclass(frozen=True, slots=True)
class Accept(Generic[P]):
    """Give the queued packet its ACCEPT verdict now."""

    packet: P


@dataclass(frozen=True, slots=True)
class Inject:
    """Send this copy of a packet (a full IPv4 or IPv6 datagram) through the injector now."""

    payload: bytes


@dataclass(slots=True)
class Counters:
    """Running totals, logged by the loop and useful in tests."""

    received: int = 0
    dropped: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    released: int = 0
    injected: int = 0
    untouchable: int = 0  # chosen for corrupt/duplicate but only partly copied to us


def ip_version(payload: bytes) -> int:
    """4 or 6 from the first nibble (0 for anything else, or nothing)."""
    return payload[0] >> 4 if payload else 0


def is_whole_datagram(payload: bytes) -> bool:
    """True when ``payload`` is one complete IPv4 or IPv6 datagram (its length field matches:
    IPv4's total length, IPv6's payload length plus the 40-byte header).

    The queue copies at most a few KiB of each packet; a coalesced (GRO)
    packet arrives cut short, and writing a cut copy back, or injecting it,
    would send a truncated packet. Those are passed on unmodified instead.
    """
    version = ip_version(payload)
    if version == 6:
        return len(payload) >= _IPV6_HEADER and int.from_bytes(
            payload[4:6], "big"
        ) + _IPV6_HEADER == len(payload)
    return (
        version == 4
        and len(payload) >= _IPV4_MIN_HEADER
        and int.from_bytes(payload[2:4], "big") == len(payload)
    )


def corrupt_payload(payload: bytes, rng: random.Random) -> bytes:
    """Flip one random bit after the IP header (in the transport header or data).

    The IP header stays intact so the packet is still routed and delivered;
    the receiver's TCP/UDP checksum is what notices, as on a real bad link.
    For IPv6 the fixed 40-byte header is kept (a bit of an extension header
    may flip, which the receiver notices as well). A packet with nothing
    after its header is returned unchanged.
    """
    if ip_version(payload) == 6:
        header_len = _IPV6_HEADER
        if len(payload) <= header_len:
            return payload
        position = rng.randrange(header_len, len(payload))
        flipped = payload[position] ^ (1 << rng.randrange(8))
        return payload[:position] + bytes((flipped,)) + payload[position + 1 :]
    if len(payload) < _IPV4_MIN_HEADER:
        return payload
    header_len = (payload[0] & 0x0F) * 4
    if header_len < _IPV4_MIN_HEADER or header_len >= len(payload):
        return payload
    position = rng.randrange(header_len, len(payload))
    flipped = payload[position] ^ (1 << rng.randrange(8))
    return payload[:position] + bytes((flipped,)) + payload[position + 1 :]


class ImpairmentScheduler(Generic[P]):
    """Decide each packet's fate and hand back verdicts when they fall due."""

    def __init__(self, impairment: Impairment, *, rng: random.Random) -> None:
        self.impairment = impairment
        self.counters = Counters()
        self._rng = rng
        # Models with memory draw their starting state from the seed, in this order.
        self._loss = loss_process(
            share=impairment.loss,
            correlation=impairment.loss_correlation,
            model=impairment.loss_model,
            rng=rng,
        )
        self._delay = DelaySampler(
            delay=impairment.delay,
            jitter=impairment.jitter,
            distribution=impairment.delay_distribution,
            correlation=impairment.delay_correlation,
            rng=rng,
        )
        self._reorder = ReorderGate(impairment.reorder, impairment.reorder_gap)
        # Equal release times leave in arrival order; a fixed delay costs O(1) a packet.
        self._held: ReleaseQueue[Accept[P] | Inject] = ReleaseQueue()

    def __len__(self) -> int:
        return len(self._held)

    def admit(self, packet: P, now: float) -> bool:
        """Take a newly queued packet; False means the caller must drop it now."""
        imp, rng, counters = self.impairment, self._rng, self.counters
        counters.received += 1
        if self._loss is not None and self._loss.lost(rng):
            counters.dropped += 1
            return False
        if imp.corrupt and rng.random() < imp.corrupt:
            payload = packet.get_payload()
            if is_whole_datagram(payload):
                packet.set_payload(corrupt_payload(payload, rng))
                counters.corrupted += 1
            else:
                counters.untouchable += 1
        self._hold(Accept(packet), self._release_time(now))
        if imp.duplicate and rng.random() < imp.duplicate:
            payload = packet.get_payload()
            if is_whole_datagram(payload):
                # The copy gets its own release time, so it may even arrive first.
                self._hold(Inject(payload), self._release_time(now))
                counters.duplicated += 1
            else:
                counters.untouchable += 1
        return True

    def pop_due(self, now: float) -> list[Accept[P] | Inject]:
        """Remove and return every held verdict whose release time has come, in order."""
        due = self._held.pop_due(now)
        self._count(due)
        return due

    def drain(self) -> list[Accept[P] | Inject]:
        """Remove and return everything still held (on shutdown: release, don't lose)."""
        due = self._held.drain()
        self._count(due)
        return due

    def held(self) -> list[tuple[float, Accept[P] | Inject]]:
        """(release time, verdict) of everything held, in release order (for inspection)."""
        return self._held.entries()

    def next_release(self) -> float | None:
        """When the earliest held verdict falls due, or None when nothing is held."""
        return self._held.next_time()

    def _hold(self, verdict: Accept[P] | Inject, at: float) -> None:
        self._held.push(at, verdict)

    def _release_time(self, now: float) -> float:
        if self._reorder.immediate(self._rng):
            self.counters.reordered += 1
            return now
        # netem sends a packet whose drawn delay is negative at once, as we do
        return now + max(0.0, self._delay.sample(self._rng))

    def _count(self, due: list[Accept[P] | Inject]) -> None:
        for verdict in due:
            if isinstance(verdict, Inject):
                self.counters.injected += 1
            else:
                self.counters.released += 1
