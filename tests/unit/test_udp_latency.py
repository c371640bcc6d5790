"""Per-message latency: the bounded histogram and the TCP message clock, fed in any pieces."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.udp.latency import (
    BUCKETS,
    GROWTH,
    HEADER_SIZE,
    LatencyHistogram,
    MessageClock,
    bucket,
    bucket_by_log,
    stamp,
    stream_header,
)

MS = 1_000_000


def timed_stream(size: int, sent: list[int], tail: int = 0) -> bytes:
    body = bytearray()
    for sent_ns in sent:
        message = bytearray(size)
        stamp(message, sent_ns)
        body += message
    return stream_header(size) + bytes(body) + b"\x07" * tail


def test_percentiles_are_within_one_percent() -> None:
    histogram = LatencyHistogram()
    rng = random.Random(3)
    values = sorted(rng.uniform(1, 500) for _ in range(10_000))  # ms
    for value in values:
        histogram.add(int(value * MS))
    for level in (0.5, 0.99):
        exact = values[int(level * len(values)) - 1]
        measured = histogram.quantile_ms(level)
        assert measured == pytest.approx(exact, rel=0.011)
    assert histogram.summary()["messages"] == 10_000


def test_the_histogram_is_bounded_whatever_it_is_fed() -> None:
    histogram = LatencyHistogram()
    for value in (-5, 0, 1, 10**18, 2**62, 999):
        histogram.add(value)
    assert len(histogram.counts) <= BUCKETS
    assert max(histogram.counts) == BUCKETS - 1  # huge values share the last bucket
    assert histogram.quantile_ms(0.01) == 0.001  # below a microsecond (clock skew included)
    assert LatencyHistogram().quantile_ms(0.5) is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=16, max_value=3000),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=0, max_value=15),
    st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=40),
)
def test_every_whole_message_is_timed_however_the_stream_is_cut(
    size: int, messages: int, tail: int, cuts: list[int]
) -> None:
    sent = [1_000 * MS + k for k in range(messages)]
    data = timed_stream(size, sent, tail=min(tail, size - 1))
    clock = MessageClock()
    position, now, turn = 0, 2_000 * MS, 0
    while position < len(data):
        piece = cuts[turn % len(cuts)]
        clock.feed(data[position : position + piece], now)
        position, turn = position + piece, turn + 1
    assert clock.timed
    assert clock.size == size
    assert clock.histogram.total == messages
    summary = clock.summary()
    assert summary is not None
    # every message took ~1000 ms (sent at 1000 ms + k ns, all arrived at 2000 ms)
    assert summary["p50_ms"] == pytest.approx(1000, rel=0.011)


def test_a_message_is_timed_when_its_last_byte_arrives() -> None:
    data = timed_stream(100, [0, 0])
    clock = MessageClock()
    clock.feed(data[: HEADER_SIZE + 150], 5 * MS)  # the first whole, half the second
    clock.feed(data[HEADER_SIZE + 150 :], 9 * MS)
    assert clock.histogram.total == 2
    assert clock.histogram.quantile_ms(0.5) == pytest.approx(5, rel=0.011)
    assert clock.histogram.quantile_ms(1.0) == pytest.approx(9, rel=0.011)


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(b"GET / HTTP/1.1\r\n", id="someone-else's-bytes"),
        pytest.param(bytes(range(256)), id="the-old-byte-pattern"),
        pytest.param(b"SLTM\x00\x00\x00\x01", id="message-size-1"),
        pytest.param(b"SLTM\xff\xff\xff\xff", id="message-size-4g"),
    ],
)
def test_a_stream_without_a_valid_header_is_left_alone(start: bytes) -> None:
    clock = MessageClock()
    clock.feed(start, 1)
    clock.feed(b"\x00" * 100_000, 2)
    assert clock.timed is False
    assert clock.summary() is None
    assert clock.histogram.total == 0


def test_a_header_in_pieces_is_still_read() -> None:
    data = timed_stream(64, [0] * 10)
    clock = MessageClock()
    for index in range(len(data)):
        clock.feed(data[index : index + 1], MS)
    assert clock.histogram.total == 10


def test_message_sizes_out_of_range_are_refused_by_the_sender() -> None:
    with pytest.raises(ValueError, match="message size"):
        stream_header(8)


@given(st.integers(min_value=-(10**6), max_value=10**16))
def test_the_bucket_lookup_agrees_with_the_logarithm(latency_ns: int) -> None:
    assert bucket(latency_ns) == bucket_by_log(latency_ns)


def test_the_bucket_lookup_agrees_at_every_bucket_edge() -> None:
    edges = [int(GROWTH**index * 1000) for index in range(BUCKETS + 5)]
    for edge in edges:
        for latency_ns in (edge - 1, edge, edge + 1):
            assert bucket(latency_ns) == bucket_by_log(latency_ns), latency_ns
