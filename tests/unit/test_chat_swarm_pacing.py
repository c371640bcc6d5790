"""The load generator's pacing: one send schedule for all participants, sinks drained in turn."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.chat.swarm import SINK_POLL, SendSchedule, Swarm, SwarmConfig, _Peer

EPSILON = 1e-9  # float rounding at the edge of a due time


@given(
    st.integers(1, 40),
    st.integers(1, 5),
    st.sampled_from([0.5, 1.0, 3.0]),
    st.lists(st.floats(0, 12, allow_nan=False), max_size=30),
)
def test_each_send_is_returned_once_when_due_and_in_time_order(
    participants: int, messages: int, rate: float, times: list[float]
) -> None:
    schedule = SendSchedule(participants, messages, rate)
    returned: list[tuple[float, int]] = []  # (when it is due, participant)
    seen: Counter[int] = Counter()
    previous = -1.0
    for elapsed in [*sorted(times), 1e9]:
        next_at = schedule.next_at()
        batch = schedule.due(elapsed)
        if next_at is not None and next_at < elapsed - EPSILON:
            assert batch, "a send was due and not returned"
        for index in batch:
            due_at = (seen[index] * participants + index) / (participants * rate)
            seen[index] += 1
            assert previous - EPSILON < due_at <= elapsed + EPSILON  # due now, not before
            returned.append((due_at, index))
        previous = elapsed
    assert seen == Counter(dict.fromkeys(range(participants), messages))
    assert [when for when, _ in returned] == sorted(when for when, _ in returned)
    assert schedule.next_at() is None
    assert schedule.due(1e10) == []


def test_participants_are_staggered_within_each_second() -> None:
    schedule = SendSchedule(4, 2, 1.0)
    assert schedule.due(0.0) == [0]
    assert schedule.next_at() == 0.25
    assert schedule.due(0.6) == [1, 2]
    assert schedule.due(1.3) == [3, 0, 1]
    assert schedule.due(1.3) == []  # nothing twice
    assert schedule.due(5.0) == [2, 3]


def test_a_turn_looks_only_at_what_is_due_however_many_participants() -> None:
    schedule = SendSchedule(1_000_000, 10, 1.0)
    assert schedule.due(0.0) == [0]
    assert schedule.due(0.0000025) == [1, 2]
    assert schedule.next_at() == pytest.approx(0.000003)


def test_rate_zero_sends_everything_at_once_participant_by_participant() -> None:
    schedule = SendSchedule(3, 2, 0.0)
    assert schedule.next_at() == 0.0
    assert schedule.due(0.0) == [0, 0, 1, 1, 2, 2]
    assert schedule.next_at() is None
    assert schedule.due(1.0) == []


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


def test_sinks_are_drained_in_turn_each_about_once_per_poll_interval(
    sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    swarm = Swarm(SwarmConfig(host="127.0.0.1", port=1, participants=10))
    drained: list[int] = []
    monkeypatch.setattr(swarm, "_read", lambda peer, size: drained.append(peer.index))
    for index in range(10):
        sockets.append(socket.socket())
        peer = _Peer(index=index, name=f"p{index}", sock=sockets[-1], slow=False, sink=True)
        swarm._sinks.append(peer)
    swarm._sink_polled = 100.0
    # Twenty turns over four poll intervals: each sink drained four times, in order.
    for turn in range(1, 21):
        swarm._poll_sinks(100.0 + turn * SINK_POLL / 5)
    assert len(drained) in (39, 40)  # float rounding may owe the last one
    assert drained[:10] == list(range(10))
    assert drained[10:20] == list(range(10))
    # A long stall owes at most one drain each, not a burst of catch-up reads.
    drained.clear()
    swarm._poll_sinks(100.0 + 100 * SINK_POLL)
    assert sorted(drained) == list(range(10))
    swarm._sinks[3].ended = "gone"
    drained.clear()
    swarm._poll_sinks(100.0 + 102 * SINK_POLL)
    assert 3 not in drained
    assert len(drained) == 9
