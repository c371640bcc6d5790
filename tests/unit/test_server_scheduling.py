"""The loop's scheduler: job results and timers come back on the loop thread, in order."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import pytest

from socketlab.server.scheduling import Scheduler


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    scheduler = Scheduler(workers=2)
    yield scheduler
    scheduler.close()


def test_timers_run_when_due_in_order(scheduler: Scheduler) -> None:
    ran: list[str] = []
    scheduler.call_at(10.0, lambda: ran.append("b"))
    scheduler.call_at(5.0, lambda: ran.append("a"))
    scheduler.call_at(10.0, lambda: ran.append("c"))  # same time: in the order scheduled
    assert scheduler.timeout(1.0, now=0.0) == 1.0
    assert scheduler.timeout(1.0, now=4.5) == 0.5
    assert scheduler.timeout(1.0, now=6.0) == 0.0
    scheduler.run_due(4.9)
    assert ran == []
    scheduler.run_due(5.0)
    assert ran == ["a"]
    scheduler.run_due(11.0)
    assert ran == ["a", "b", "c"]
    assert scheduler.timeout(1.0, now=11.0) == 1.0


def test_a_failing_timer_does_not_stop_the_others(scheduler: Scheduler) -> None:
    ran: list[int] = []

    def broken() -> None:
        raise RuntimeError("bug")

    scheduler.call_at(1.0, broken)
    scheduler.call_at(1.0, lambda: ran.append(1))
    scheduler.run_due(2.0)
    assert ran == [1]


def test_job_results_come_back_on_the_draining_thread(scheduler: Scheduler) -> None:
    release = threading.Event()
    results: list[tuple[int, str]] = []

    def job(n: int) -> int:
        assert release.wait(5)
        return n * n

    def record(result: int) -> None:
        results.append((result, threading.current_thread().name))

    for n in (2, 3):
        scheduler.submit(lambda n=n: job(n), record)
    scheduler.drain()
    assert results == []  # nothing finished yet
    release.set()
    while len(results) < 2:
        readable, _, _ = select.select([scheduler.wakeup], [], [], 5)
        assert readable, "no wake-up within 5 s"
        scheduler.drain()
    assert sorted(results) == [(4, "MainThread"), (9, "MainThread")]
