"""The engine's release queue (FIFO lane + heap) and verdict batching, against simple models."""

from __future__ import annotations

import heapq
import itertools

from hypothesis import given
from hypothesis import strategies as st

from socketlab.shaper.release import ReleaseQueue, VerdictBatcher, VerdictPlan

# --------------------------------------------------------------------------- ReleaseQueue


def test_fixed_delay_stays_in_the_fifo_lane_and_leaves_in_order() -> None:
    queue: ReleaseQueue[int] = ReleaseQueue()
    for n in range(5):
        queue.push(1.0 + n * 0.01, n)
    assert queue._heap == []  # the O(1) path is the point of the lane
    assert queue.next_time() == 1.0
    assert queue.pop_due(0.999) == []
    assert queue.pop_due(1.02) == [0, 1, 2]
    assert queue.pop_due(5.0) == [3, 4]
    assert len(queue) == 0
    assert queue.next_time() is None


def test_an_earlier_time_goes_to_the_heap_and_overtakes() -> None:
    queue: ReleaseQueue[str] = ReleaseQueue()
    queue.push(2.0, "delayed")
    queue.push(1.0, "reordered")  # e.g. netem's reorder: sent at once
    assert queue.next_time() == 1.0
    assert queue.pop_due(1.5) == ["reordered"]
    assert queue.pop_due(2.0) == ["delayed"]


def test_equal_times_leave_in_arrival_order_across_both_lanes() -> None:
    queue: ReleaseQueue[int] = ReleaseQueue()
    queue.push(5.0, 0)
    queue.push(3.0, 1)  # heap
    queue.push(5.0, 2)  # lane, same time as 0
    queue.push(3.0, 3)  # heap, same time as 1
    assert queue.entries() == [(3.0, 1), (3.0, 3), (5.0, 0), (5.0, 2)]
    assert queue.pop_due(5.0) == [1, 3, 0, 2]


def test_drain_returns_everything_in_release_order() -> None:
    queue: ReleaseQueue[int] = ReleaseQueue()
    for at, item in [(3.0, 0), (1.0, 1), (4.0, 2), (2.0, 3)]:
        queue.push(at, item)
    assert queue.drain() == [1, 3, 0, 2]
    assert len(queue) == 0


pushes = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)),
    max_size=200,
)


@given(pushes)
def test_the_same_order_as_one_heap(operations: list[tuple[float, float]]) -> None:
    """Each operation pushes an item at one time, then pops what is due at another."""
    queue: ReleaseQueue[int] = ReleaseQueue()
    model: list[tuple[float, int]] = []
    sequence = itertools.count()
    for at, now in operations:
        number = next(sequence)
        queue.push(at, number)
        heapq.heappush(model, (at, number))
        expected = []
        while model and model[0][0] <= now:
            expected.append(heapq.heappop(model)[1])
        assert queue.pop_due(now) == expected
        assert len(queue) == len(model)
        assert queue.next_time() == (model[0][0] if model else None)
    assert queue.drain() == [number for _, number in sorted(model)]


# --------------------------------------------------------------------------- VerdictBatcher


class FakeKernelQueue:
    """The kernel's side: ids in arrival order, and what verdict messages do to them."""

    def __init__(self) -> None:
        self.queued: list[int] = []
        self.accepted: list[int] = []

    def apply(self, plan: VerdictPlan) -> None:
        for packet_id in plan.singles:
            assert packet_id in self.queued, f"a verdict for {packet_id}, no longer queued"
            self.queued.remove(packet_id)
            self.accepted.append(packet_id)
        if plan.batch_upto is not None:
            # nfqnl_recv_verdict_batch: every queued entry until the first with a larger id
            while self.queued and self.queued[0] <= plan.batch_upto:
                self.accepted.append(self.queued.pop(0))


def test_in_order_releases_become_one_batch() -> None:
    batcher = VerdictBatcher()
    for packet_id in (10, 11, 12):
        batcher.hold(packet_id)
    assert batcher.release([10, 11]) == VerdictPlan(batch_upto=11)
    assert batcher.release([12]) == VerdictPlan(batch_upto=12)
    assert len(batcher) == 0


def test_a_packet_overtaking_a_held_one_gets_its_own_verdict() -> None:
    batcher = VerdictBatcher()
    for packet_id in (1, 2, 3):
        batcher.hold(packet_id)
    assert batcher.release([2]) == VerdictPlan(singles=(2,))
    # 1 now completes the run 1, 2: the batch up to 2 is harmless for 2 (already gone)
    assert batcher.release([1]) == VerdictPlan(batch_upto=2)
    assert batcher.release([3]) == VerdictPlan(batch_upto=3)


def test_a_rewritten_packet_goes_alone_and_before_the_batch() -> None:
    batcher = VerdictBatcher()
    for packet_id in (1, 2, 3):
        batcher.hold(packet_id)
    plan = batcher.release([1, 2, 3], individual={2})
    assert plan == VerdictPlan(singles=(2,), batch_upto=3)
    assert plan.messages == 2


def test_only_rewritten_packets_need_no_batch() -> None:
    batcher = VerdictBatcher()
    batcher.hold(7)
    assert batcher.release([7], individual={7}) == VerdictPlan(singles=(7,))


def test_nothing_released_is_no_message() -> None:
    batcher = VerdictBatcher()
    batcher.hold(1)
    assert batcher.release([]).messages == 0


@st.composite
def schedules(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Arrivals (ids in order; some dropped at once) and releases of held ids in any order."""
    count = draw(st.integers(0, 60))
    events: list[tuple[str, int]] = []
    held: list[int] = []
    next_id = 1
    for _ in range(count * 2):
        if draw(st.booleans()) or not held:
            kind = "drop" if draw(st.integers(0, 4)) == 0 else "hold"
            events.append((kind, next_id))
            if kind == "hold":
                held.append(next_id)
            next_id += 1
        else:
            events.append(("release", held.pop(draw(st.integers(0, len(held) - 1)))))
    return events


@given(schedules(), st.data())
def test_batches_accept_exactly_what_was_released(
    events: list[tuple[str, int]], data: st.DataObject
) -> None:
    batcher = VerdictBatcher()
    kernel = FakeKernelQueue()
    released: list[int] = []
    pending: list[int] = []  # released, verdicts not yet planned (a turn's worth)
    for kind, packet_id in events:
        if kind == "hold":
            kernel.queued.append(packet_id)
            batcher.hold(packet_id)
        elif kind == "drop":
            kernel.queued.append(packet_id)
            kernel.queued.remove(packet_id)  # its DROP goes out at once
        else:
            pending.append(packet_id)
            if data.draw(st.booleans()):  # end of a turn: plan and send
                rewritten = {i for i in pending if data.draw(st.integers(0, 5)) == 0}
                kernel.apply(batcher.release(pending, individual=rewritten))
                released += pending
                pending = []
                assert sorted(kernel.accepted) == sorted(released)
    kernel.apply(batcher.release(pending))
    released += pending
    assert sorted(kernel.accepted) == sorted(released)
    assert len(kernel.accepted) == len(set(kernel.accepted))
