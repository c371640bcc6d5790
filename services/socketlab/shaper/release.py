"""When held verdicts fall due, and how due verdicts are grouped; pure (no clock, no I/O).

:class:`ReleaseQueue` holds items until their release time. A link with a
fixed delay releases packets in arrival order, so release times only grow:
such items go to a first-in-first-out lane, O(1) each. An item due earlier
than the lane's newest (jitter, a packet reordered to leave at once) goes to a
heap instead. :meth:`ReleaseQueue.pop_due` merges the two by (time, arrival),
so the order is exactly that of one heap, equal times leaving in arrival
order. A timer wheel was the other candidate; it would round release times to
its tick, costing the precision the delay is there for, and the FIFO lane is
already O(1) on the common path.

:class:`VerdictBatcher` groups ACCEPT verdicts. The kernel's batch verdict
(``NFQNL_MSG_VERDICT_BATCH``) accepts every packet still queued whose id is
at most the one given; ids grow in arrival order. So the longest run of
arrivals, oldest first, that are all decided can go in one message; a packet
released while an older one is still held (or one with a new payload) needs
its own. Drops are sent one by one, at once, before any batch that spans them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class ReleaseQueue(Generic[T]):
    """Items with release times: a FIFO lane for times that only grow, a heap for the rest."""

    def __init__(self) -> None:
        self._lane: deque[tuple[float, int, T]] = deque()
        self._heap: list[tuple[float, int, T]] = []
        # Tie-breaker: equal release times leave in arrival order.
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._lane) + len(self._heap)

    def push(self, at: float, item: T) -> None:
        """Hold ``item`` until ``at``."""
        entry = (at, next(self._sequence), item)
        lane = self._lane
        if not lane or at >= lane[-1][0]:
            lane.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item due at ``now`` (release time <= now), in order."""
        due: list[T] = []
        lane, heap = self._lane, self._heap
        if not heap:  # the fixed-delay path: one lane, already in order
            while lane and lane[0][0] <= now:
                due.append(lane.popleft()[2])
            return due
        while True:
            # (time, sequence) never ties, so the items themselves are never compared
            if heap and (not lane or heap[0] < lane[0]):
                if heap[0][0] > now:
                    break
                due.append(heapq.heappop(heap)[2])
            elif lane and lane[0][0] <= now:
                due.append(lane.popleft()[2])
            else:
                break
        return due

    def drain(self) -> list[T]:
        """Remove and return everything, in release order (on shutdown)."""
        entries = sorted([*self._lane, *self._heap])
        self._lane.clear()
        self._heap.clear()
        return [entry[2] for entry in entries]

    def entries(self) -> list[tuple[float, T]]:
        """What is held, as (release time, item) in release order; nothing is removed."""
        return [(entry[0], entry[2]) for entry in sorted([*self._lane, *self._heap])]

    def next_time(self) -> float | None:
        """The earliest release time held, or None when empty."""
        fronts = [queue[0][0] for queue in (self._lane, self._heap) if queue]
        return min(fronts) if fronts else None


@dataclass(frozen=True, slots=True)
class VerdictPlan:
    """ACCEPT ``singles`` one by one, then (if set) every queued packet up to ``batch_upto``."""

    singles: tuple[int, ...] = ()
    batch_upto: int | None = None

    @property
    def messages(self) -> int:
        return len(self.singles) + (self.batch_upto is not None)


class VerdictBatcher:
    """The ids the kernel queues for us and we hold, in arrival order; plans ACCEPTs."""

    def __init__(self) -> None:
        self._waiting: deque[int] = deque()  # held ids, arrival order (the kernel's id order)
        self._decided: set[int] = set()  # waiting ids already given their verdict

    def __len__(self) -> int:
        return len(self._waiting) - len(self._decided)

    def hold(self, packet_id: int) -> None:
        """A packet arrived and is held: no batch may pass it until it is released."""
        self._waiting.append(packet_id)

    def release(self, ids: Sequence[int], *, individual: Collection[int] = ()) -> VerdictPlan:
        """Plan ACCEPTs for held ``ids``, now due; ``individual`` ids need their own message.

        A batch covers the oldest waiting ids up to the first one still held; the
        released ids beyond it are singles. Send the singles first, then the batch.
        """
        if not ids:
            return VerdictPlan()
        decided, waiting = self._decided, self._waiting
        decided.update(ids)
        upto: int | None = None
        covers_new = False
        fresh = set(ids)
        while waiting and waiting[0] in decided:
            upto = waiting.popleft()
            decided.discard(upto)
            covers_new = covers_new or (upto in fresh and upto not in individual)
        # released ids still waiting sit behind a held one: a batch would take it along
        singles = tuple(i for i in ids if i in decided or i in individual)
        return VerdictPlan(singles=singles, batch_upto=upto if covers_new else None)
