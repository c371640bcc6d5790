"""Batch pacing arithmetic and the sender's option checks (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.errors import ConfigError
from socketlab.udp.datagram import minimum_size
from socketlab.udp.pacing import MAX_BURST, Pacing
from socketlab.udp.sender import build_parser, options_from_args


def test_first_datagram_goes_at_once_then_on_schedule() -> None:
    pacing = Pacing(rate=1000, count=0)
    assert pacing.due(0.0) == 1
    assert pacing.due(0.0005) == 1
    assert pacing.due(0.001) == 2
    assert pacing.due(1.0) == 1001


def test_due_is_capped_by_count() -> None:
    pacing = Pacing(rate=1000, count=10)
    assert pacing.due(5.0) == 10
    assert pacing.finished(10)
    assert not pacing.finished(9)


def test_unpaced_sends_in_bursts_right_away() -> None:
    pacing = Pacing(rate=0, count=5000)
    assert pacing.burst(sent=0, elapsed=0.0) == MAX_BURST
    assert pacing.burst(sent=4990, elapsed=0.0) == 10
    assert pacing.deadline(100) == 0.0


def test_seed_pace_is_one_every_five_seconds() -> None:
    pacing = Pacing(rate=1 / 5, count=3)
    assert [pacing.due(t) for t in (0.0, 4.9, 5.0, 10.0, 60.0)] == [1, 1, 2, 3, 3]
    assert pacing.deadline(1) == pytest.approx(5.0)


@given(
    rate=st.floats(min_value=0.1, max_value=1e6),
    sent=st.integers(min_value=0, max_value=10**7),
)
def test_nothing_is_due_before_its_deadline(rate: float, sent: int) -> None:
    pacing = Pacing(rate=rate, count=0)
    deadline = pacing.deadline(sent)
    before = deadline * (1 - 1e-9) - 1e-9
    assert pacing.burst(sent=sent, elapsed=max(0.0, before)) == 0 or sent == 0
    assert pacing.burst(sent=sent, elapsed=deadline * (1 + 1e-9) + 1e-9) >= 1


@given(elapsed=st.floats(min_value=0, max_value=1e4), rate=st.floats(min_value=1, max_value=1e6))
def test_a_late_sender_catches_up_in_capped_bursts(elapsed: float, rate: float) -> None:
    pacing = Pacing(rate=rate, count=0)
    burst = pacing.burst(sent=0, elapsed=elapsed)
    assert 1 <= burst <= MAX_BURST


def test_default_options_follow_the_seed() -> None:
    options = options_from_args(build_parser().parse_args([]))
    assert options.rate == pytest.approx(0.2)
    assert options.count == 10
    assert options.verbose  # one every 5 s: log each like the seed prints "Message sent!"
    assert options.size == minimum_size(1)
    assert 0 <= options.sender_id < 2**32


def test_rate_overrides_interval_and_hex_sender_id() -> None:
    options = options_from_args(
        build_parser().parse_args(["--rate", "50000", "--interval", "3", "--sender-id", "0xff"])
    )
    assert (options.rate, options.sender_id, options.verbose) == (50000, 255, False)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--count", "-1"], id="negative-count"),
        pytest.param(["--rate", "-5"], id="negative-rate"),
        pytest.param(["--interval", "0"], id="zero-interval"),
        pytest.param(["--size", "70000"], id="size-too-big"),
        pytest.param(["--sender-id", "0x100000000"], id="sender-id-too-big"),
    ],
)
def test_bad_options_are_config_errors(args: list[str]) -> None:
    with pytest.raises(ConfigError):
        options_from_args(build_parser().parse_args(args))


def test_a_batched_sender_waits_until_a_whole_batch_is_due() -> None:
    pacing = Pacing(rate=1000, count=100, batch=10)
    assert pacing.burst(sent=0, elapsed=0.0) == 0  # one is due, a batch is not
    assert pacing.deadline(0) == pytest.approx(0.009)  # the 10th is due at 9 ms
    assert pacing.burst(sent=0, elapsed=0.009) == 10
    assert pacing.burst(sent=10, elapsed=0.0185) == 0
    assert pacing.deadline(10) == pytest.approx(0.019)
    # the last few go as soon as they are due, not a batch later
    assert pacing.burst(sent=95, elapsed=0.0995) == 5
    assert pacing.deadline(95) == pytest.approx(0.099)


@given(
    rate=st.floats(min_value=1, max_value=1e6),
    batch=st.integers(min_value=1, max_value=64),
    sent=st.integers(min_value=0, max_value=10_000),
)
def test_a_batch_is_never_sent_before_its_last_datagram_is_due(
    rate: float, batch: int, sent: int
) -> None:
    pacing = Pacing(rate=rate, count=0, batch=batch)
    deadline = pacing.deadline(sent)
    burst = pacing.burst(sent=sent, elapsed=deadline)
    if burst:  # float rounding at the deadline may leave it one short
        assert burst >= batch
        assert pacing.due(deadline) >= sent + burst
    early = pacing.burst(sent=sent, elapsed=max(0.0, deadline * 0.999 - 1e-6))
    assert early == 0 or early >= batch  # never a part of a batch
