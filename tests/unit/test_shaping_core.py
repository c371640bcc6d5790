"""The verdict loop's scheduling core, driven by a fake clock and fake packets."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.shaper.core import Accept, Impairment, ImpairmentScheduler, Inject, corrupt_payload


class FakePacket:
    """Stands in for a queued packet (nfnetlink.NfqPacket): a payload that can be replaced."""

    def __init__(self, number: int, payload: bytes | None = None) -> None:
        self.number = number
        self.payload = payload if payload is not None else ipv4(number)

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload


def ipv4(number: int, body: bytes = b"x" * 32) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), number, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))  # fmt: skip
    return header + body


def scheduler(seed: int = 1, **impairment: float) -> ImpairmentScheduler[FakePacket]:
    return ImpairmentScheduler(Impairment(**impairment), rng=random.Random(seed))


def released_numbers(verdicts: list[Accept[FakePacket] | Inject]) -> list[int]:
    return [v.packet.number for v in verdicts if isinstance(v, Accept)]


def test_constant_delay_holds_each_packet_for_exactly_the_delay() -> None:
    sched = scheduler(delay=0.050)
    for n in range(3):
        assert sched.admit(FakePacket(n), now=n * 0.010)
    assert sched.pop_due(0.0499) == []
    assert released_numbers(sched.pop_due(0.050)) == [0]
    assert sched.next_release() == pytest.approx(0.060)
    assert released_numbers(sched.pop_due(0.071)) == [1, 2]
    assert sched.next_release() is None
    assert sched.counters.released == 3


def test_zero_delay_is_due_immediately() -> None:
    sched = scheduler()
    assert sched.admit(FakePacket(7), now=5.0)
    assert released_numbers(sched.pop_due(5.0)) == [7]


def test_equal_release_times_keep_arrival_order() -> None:
    sched = scheduler(delay=0.010)
    for n in range(50):
        sched.admit(FakePacket(n), now=1.0)
    assert released_numbers(sched.pop_due(1.010)) == list(range(50))


def test_jitter_spreads_release_times_and_reorders_packets() -> None:
    sched = scheduler(delay=0.040, jitter=0.010)
    for n in range(200):
        sched.admit(FakePacket(n), now=n * 0.001)
    release_times = [
        at - v.packet.number * 0.001 for at, v in sched.held() if isinstance(v, Accept)
    ]
    assert min(release_times) >= 0.030 - 1e-9
    assert max(release_times) <= 0.050 + 1e-9
    order = released_numbers(sched.pop_due(10.0))
    assert sorted(order) == list(range(200))
    assert order != list(range(200)), "jitter larger than the packet gap must reorder"


def test_jitter_never_schedules_before_arrival() -> None:
    sched = scheduler(delay=0.001, jitter=0.050)
    for n in range(500):
        sched.admit(FakePacket(n), now=100.0)
    assert all(at >= 100.0 for at, _ in sched.held())


def test_explicit_reorder_lets_packets_overtake_held_ones() -> None:
    sched = scheduler(delay=0.100, reorder=0.25)
    for n in range(400):
        sched.admit(FakePacket(n), now=0.0)
    overtaking = released_numbers(sched.pop_due(0.0))
    assert sched.counters.reordered == len(overtaking)
    assert 60 <= len(overtaking) <= 140  # 25 % of 400, generous for a fixed seed
    assert released_numbers(sched.pop_due(0.100)) == sorted(set(range(400)) - set(overtaking))


def test_loss_drops_about_the_configured_share() -> None:
    sched = scheduler(loss=0.05)
    kept = sum(sched.admit(FakePacket(n), now=0.0) for n in range(20_000))
    assert sched.counters.dropped == 20_000 - kept
    # 99.9 % binomial interval for p=0.05, n=20000 is about 1000 +/- 101
    assert 880 <= sched.counters.dropped <= 1120
    assert len(sched) == kept


def test_full_loss_drops_everything_and_holds_nothing() -> None:
    sched = scheduler(loss=1.0, delay=0.01)
    assert not any(sched.admit(FakePacket(n), now=0.0) for n in range(100))
    assert len(sched) == 0


def test_duplicate_releases_the_original_and_injects_a_copy() -> None:
    sched = scheduler(delay=0.020, duplicate=1.0)
    packet = FakePacket(3)
    assert sched.admit(packet, now=0.0)
    due = sched.pop_due(0.020)
    assert [type(v) for v in due] == [Accept, Inject]
    assert due[1] == Inject(packet.payload)
    assert sched.counters.duplicated == 1
    assert sched.counters.injected == 1


def test_corrupt_flips_exactly_one_bit_after_the_ip_header() -> None:
    sched = scheduler(corrupt=1.0)
    original = ipv4(9)
    packet = FakePacket(9, original)
    sched.admit(packet, now=0.0)
    assert packet.payload[:20] == original[:20]
    diff = [a ^ b for a, b in zip(packet.payload, original, strict=True)]
    assert sum(bin(d).count("1") for d in diff) == 1
    assert sched.counters.corrupted == 1


def test_truncated_copies_are_neither_corrupted_nor_duplicated() -> None:
    sched = scheduler(corrupt=1.0, duplicate=1.0)
    whole = ipv4(4, b"y" * 100)
    packet = FakePacket(4, whole[:60])  # the queue copied only part of it
    assert sched.admit(packet, now=0.0)
    assert packet.payload == whole[:60]
    assert [type(v) for v in sched.pop_due(0.0)] == [Accept]
    assert sched.counters.untouchable == 2
    assert sched.counters.corrupted == sched.counters.duplicated == 0


@given(payload=st.binary(max_size=80), seed=st.integers(0, 2**32))
def test_corrupt_payload_never_crashes_and_keeps_the_length(payload: bytes, seed: int) -> None:
    result = corrupt_payload(payload, random.Random(seed))
    assert len(result) == len(payload)
    assert sum(bin(a ^ b).count("1") for a, b in zip(result, payload, strict=True)) <= 1


def test_drain_releases_everything_in_release_order() -> None:
    sched = scheduler(delay=1.0, jitter=0.5)
    for n in range(20):
        sched.admit(FakePacket(n), now=0.0)
    times = sorted(at for at, _ in sched.held())
    drained = sched.drain()
    assert len(drained) == 20
    assert len(sched) == 0
    assert times == sorted(times)


@given(
    arrivals=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=60),
    delay=st.floats(0, 0.5, allow_nan=False),
    jitter=st.floats(0, 0.5, allow_nan=False),
    duplicate=st.floats(0, 1),
    loss=st.floats(0, 1),
    seed=st.integers(0, 1000),
)
def test_every_admitted_packet_is_released_exactly_once(
    *, arrivals: list[float], delay: float, jitter: float, duplicate: float, loss: float, seed: int
) -> None:
    sched = scheduler(seed, delay=delay, jitter=jitter, duplicate=duplicate, loss=loss)
    admitted = [n for n, t in enumerate(sorted(arrivals)) if sched.admit(FakePacket(n), now=t)]
    verdicts: list[Accept[FakePacket] | Inject] = []
    clock = 0.0
    while (due := sched.next_release()) is not None:
        clock = max(clock, due)
        verdicts += sched.pop_due(clock)
    assert sorted(released_numbers(verdicts)) == admitted
    assert sum(isinstance(v, Inject) for v in verdicts) == sched.counters.duplicated


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"delay": -0.001}, id="negative-delay"),
        pytest.param({"loss": 1.5}, id="loss-above-one"),
        pytest.param({"corrupt": -0.1}, id="negative-corrupt"),
    ],
)
def test_impairment_rejects_impossible_values(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Impairment(**options)


def test_noop_impairment() -> None:
    assert Impairment().is_noop
    assert not Impairment(loss=0.01).is_noop
