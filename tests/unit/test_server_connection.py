"""The server's per-connection state without sockets: deadlines on a fake clock, modes, output."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.protocol import (
    ConnectionClosed,
    Limits,
    Message,
    RemoteProtocolError,
    encode_request,
)
from socketlab.protocol.messages import encode_response
from socketlab.server.connection import (
    ConnectionState,
    Deadlines,
    FileSlice,
    Mode,
    message_deadline,
)

DEADLINES = Deadlines(
    header_timeout=0.5, stall_timeout=1.0, idle_timeout=1.5, min_rate=1024.0, close_grace=2.0
)


class Clock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> ConnectionState:
    return ConnectionState(
        peer="10.0.0.2:40000", limits=Limits(max_header=1024), deadlines=DEADLINES, now=clock.now
    )


def request_of(state: ConnectionState, clock: Clock) -> Message:
    item = state.next_request(clock.now)
    assert isinstance(item, Message)
    return item


def drain(state: ConnectionState, clock: Clock) -> list[bytes | FileSlice]:
    """Pretend the socket took everything queued; returns what went out, item by item."""
    out: list[bytes | FileSlice] = []
    while (head := state.head()) is not None:
        if isinstance(head, FileSlice):
            out.append(FileSlice(head.fd, head.offset, head.count))
            state.sent(head.count, clock.now)
        else:
            out.append(bytes(head))
            state.sent(len(head), clock.now)
    return out


# --- deadlines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"elapsed": 0.4, "since_recv": 0.1, "received": 1, "header_pending": True},
            None,
            id="header-in-time",
        ),
        pytest.param(
            {"elapsed": 0.6, "since_recv": 0.1, "received": 1, "header_pending": True},
            "header not complete",
            id="header-late",
        ),
        pytest.param(
            {"elapsed": 0.6, "since_recv": 1.1, "received": 10**6, "header_pending": False},
            "stalled",
            id="stalled",
        ),
        pytest.param(
            {"elapsed": 3.0, "since_recv": 0.5, "received": 100, "header_pending": False},
            "too slow",
            id="slow-content",
        ),
        pytest.param(
            {"elapsed": 3.0, "since_recv": 0.5, "received": 10**6, "header_pending": False},
            None,
            id="fast-content",
        ),
    ],
)
def test_message_deadlines(kwargs: dict[str, object], expected: str | None) -> None:
    reason = message_deadline(DEADLINES, **kwargs)  # type: ignore[arg-type]
    assert (reason is None) if expected is None else (expected in str(reason))


def test_header_must_arrive_in_time(state: ConnectionState, clock: Clock) -> None:
    state.receive(encode_request("hello")[:3], clock.now)
    assert state.next_request(clock.now) is None
    assert state.expired(clock.advance(0.45)) is None
    assert state.expired(clock.advance(0.1)) == "header not complete within 0.5 s"


def test_a_trickled_header_is_still_late(state: ConnectionState, clock: Clock) -> None:
    # One byte every 0.2 s keeps the stall timer happy but not the header deadline.
    wire = encode_request("hello")
    reasons = []
    for index in range(4):
        state.receive(wire[index : index + 1], clock.advance(0.2))
        assert state.next_request(clock.now) is None
        reasons.append(state.expired(clock.now))
    assert reasons[:2] == [None, None]
    assert reasons[-1] == "header not complete within 0.5 s"


def test_content_that_stops_is_stalled(state: ConnectionState, clock: Clock) -> None:
    wire = encode_request("echo", "x" * 5000)
    state.receive(wire[:2000], clock.now)
    assert state.next_request(clock.now) is None  # header parsed, content pending
    assert state.header_done
    assert state.expired(clock.advance(0.9)) is None
    assert state.expired(clock.advance(0.2)) == "stalled: nothing received for 1 s"


def test_content_below_the_minimum_rate_is_too_slow(state: ConnectionState, clock: Clock) -> None:
    wire = encode_request("echo", "x" * 50_000)
    state.receive(wire[:300], clock.now)
    assert state.next_request(clock.now) is None
    for index in range(10):  # 100 bytes every 0.3 s: never stalled, but ~330 B/s < 1024 B/s
        sent = 300 + 100 * (index + 1)
        state.receive(wire[sent - 100 : sent], clock.advance(0.3))
        assert state.next_request(clock.now) is None
    reason = state.expired(clock.now)
    assert reason is not None
    assert reason.startswith("too slow: 1300 bytes in 3.0 s")


def test_fast_content_is_answered_and_the_clock_resets(
    state: ConnectionState, clock: Clock
) -> None:
    state.receive(encode_request("echo", "x" * 3000), clock.now)
    assert request_of(state, clock).json()["value"] == "x" * 3000
    assert state.message_started is None
    assert state.idle


def test_idle_between_messages(state: ConnectionState, clock: Clock) -> None:
    state.receive(encode_request("hello"), clock.now)
    request_of(state, clock)
    state.queue(encode_response("hi"), clock.now)
    drain(state, clock)
    assert state.expired(clock.advance(1.4)) is None
    assert state.expired(clock.advance(0.2)) == "idle for 1.5 s"


def test_our_own_work_does_not_count_against_the_peer(state: ConnectionState, clock: Clock) -> None:
    state.receive(encode_request("fetch", {"name": "x"}), clock.now)
    request_of(state, clock)
    state.busy = True  # a worker hashes a big file
    assert state.expired(clock.advance(60)) is None
    assert not state.wants_read()


def test_a_peer_that_stops_reading_is_dropped(state: ConnectionState, clock: Clock) -> None:
    state.queue(b"x" * 100, clock.now)
    state.sent(40, clock.advance(0.5))
    assert state.expired(clock.advance(0.9)) is None  # progress 0.9 s ago
    assert state.expired(clock.advance(0.2)) == "peer stopped reading for 1 s"


def test_last_words_get_a_grace_period(state: ConnectionState, clock: Clock) -> None:
    state.fail(b"bye", clock.now)
    assert state.mode is Mode.CLOSING
    assert not state.wants_read()
    assert state.expired(clock.advance(1.9)) is None
    assert state.expired(clock.advance(0.2)) == "error message not taken"


def test_next_message_deadline_starts_when_its_bytes_are_already_here(
    state: ConnectionState, clock: Clock
) -> None:
    first, second = encode_request("echo", 1), encode_request("echo", 2)
    state.receive(first + second[:2], clock.now)
    clock.advance(0.4)
    request_of(state, clock)
    assert state.message_started == clock.now
    assert state.message_bytes == 2
    assert not state.header_done


# --- reading: one request at a time, in order ------------------------------------------


def test_pipelined_requests_wait_for_the_previous_answer(
    state: ConnectionState, clock: Clock
) -> None:
    state.receive(b"".join(encode_request("echo", n) for n in range(3)), clock.now)
    assert request_of(state, clock).json()["value"] == 0
    state.queue(encode_response(0), clock.now)
    assert not state.ready()
    assert state.next_request(clock.now) is None  # the answer is not out yet
    drain(state, clock)
    assert request_of(state, clock).json()["value"] == 1
    state.busy = True
    assert state.next_request(clock.now) is None
    state.busy = False
    assert request_of(state, clock).json()["value"] == 2


def test_eof_between_messages_is_connection_closed(state: ConnectionState, clock: Clock) -> None:
    state.receive(b"", clock.now)
    assert isinstance(state.next_request(clock.now), ConnectionClosed)


def test_broken_framing_raises_for_the_loop_to_answer(state: ConnectionState, clock: Clock) -> None:
    state.receive(b"\xff\xff", clock.now)  # a 65535-byte header, over our 1024
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        state.next_request(clock.now)


# --- sink -----------------------------------------------------------------------------


def test_sink_counts_trailing_bytes_then_reports_at_eof(
    state: ConnectionState, clock: Clock
) -> None:
    state.receive(encode_request("sink", {"bytes": 10}) + b"abcd", clock.now)
    request_of(state, clock)
    state.start_sink(10, clock.now)
    assert state.mode is Mode.SINK
    assert state.wants_read()
    state.receive(b"efghij", clock.advance(0.5))
    state.receive(b"", clock.advance(0.1))
    assert state.mode is Mode.CLOSING
    (report,) = drain(state, clock)
    assert isinstance(report, bytes)
    result = json.loads(report[2 + int.from_bytes(report[:2], "big") :])["result"]
    assert result["bytes"] == 10
    assert result["batches"] == 2
    assert result["expected"] == 10
    assert result["duration_s"] == pytest.approx(0.5)
    assert state.finished


def test_sink_with_eof_already_buffered_reports_at_once(
    state: ConnectionState, clock: Clock
) -> None:
    state.receive(encode_request("sink") + b"xyz", clock.now)
    state.receive(b"", clock.now)
    request_of(state, clock)
    state.start_sink(None, clock.now)
    assert state.mode is Mode.CLOSING
    assert state.sending


def test_sink_must_keep_the_minimum_rate(state: ConnectionState, clock: Clock) -> None:
    state.receive(encode_request("sink"), clock.now)
    request_of(state, clock)
    state.start_sink(None, clock.now)
    for _ in range(5):
        state.receive(b"x" * 10, clock.advance(0.5))
    reason = state.expired(clock.now)
    assert reason is not None
    assert reason.startswith("too slow: 50 bytes")


# --- writing --------------------------------------------------------------------------


def test_partial_sends_resume_where_they_stopped(state: ConnectionState, clock: Clock) -> None:
    state.queue(b"hello ", clock.now)
    state.queue(b"world", clock.now)
    head = state.head()
    assert isinstance(head, memoryview)
    assert bytes(head) == b"hello "
    assert state.sent(4, clock.now) is None
    assert bytes(state.head()) == b"o "  # type: ignore[arg-type]
    state.sent(2, clock.now)
    assert bytes(state.head()) == b"world"  # type: ignore[arg-type]


def test_a_finished_file_slice_is_handed_back_once(state: ConnectionState, clock: Clock) -> None:
    piece = FileSlice(fd=7, offset=10, count=100)
    state.queue(b"header", clock.now)
    state.queue(piece, clock.now)
    state.sent(6, clock.now)
    assert state.head() is piece
    assert state.sent(60, clock.now) is None
    assert (piece.offset, piece.count) == (70, 40)
    assert state.sent(40, clock.now) is piece
    assert state.head() is None
    assert state.close() == []


def test_close_returns_the_unsent_slices_and_refuses_more(
    state: ConnectionState, clock: Clock
) -> None:
    pieces = [FileSlice(fd=7, offset=0, count=5), FileSlice(fd=8, offset=0, count=5)]
    state.queue(b"header", clock.now)
    for piece in pieces:
        state.queue(piece, clock.now)
    assert state.close() == pieces
    assert not state.sending
    assert not state.ready()
    with pytest.raises(ValueError, match="closed connection"):
        state.queue(FileSlice(fd=9, offset=0, count=1), clock.now)


# --- hostile input --------------------------------------------------------------------


WELL_FORMED = st.sampled_from([encode_request("echo", 1), encode_request("hello")])


@given(st.lists(st.one_of(WELL_FORMED, st.binary(min_size=1, max_size=64)), max_size=20))
def test_arbitrary_bytes_give_requests_then_a_clean_end_or_a_protocol_error(
    chunks: list[bytes],
) -> None:
    clock = Clock()
    limits = Limits(max_header=64, default_max_content=256)
    state = ConnectionState(peer="p:1", limits=limits, deadlines=DEADLINES, now=clock.now)
    item: Message | ConnectionClosed | None = None
    try:
        for chunk in [*chunks, b""]:  # then EOF (b"" only ever comes last)
            state.receive(chunk, clock.advance(0.01))
            while isinstance(item := state.next_request(clock.now), Message):
                assert len(item.content) <= 256
    except RemoteProtocolError:
        state.fail(b"bye", clock.now)
        assert not state.wants_read()
        assert state.expired(clock.advance(DEADLINES.close_grace + 1)) == "error message not taken"
        return
    assert isinstance(item, ConnectionClosed)  # EOF between messages, nothing else
