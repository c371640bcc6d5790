"""Work the selectors loop does not do itself: blocking jobs on threads, and timers.

A job's result comes back to the loop thread through a queue and a wake-up
socket the loop's selector watches; callbacks (job results and due timers)
always run on the loop thread, so connection state is never shared.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger("socketlab.server")

T = TypeVar("T")


class Scheduler:
    """A small worker pool and a timer heap whose callbacks run on the loop thread."""

    def __init__(self, *, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lab-worker")
        self._done: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()

    @property
    def wakeup(self) -> socket.socket:
        """Readable when a job finished: register it with the selector, then :meth:`drain`."""
        return self._wake_r

    def warm(self, job: Callable[[], object]) -> None:
        """Run ``job`` on a worker for its side effects (a cache to fill)."""
        self._pool.submit(job)

    def submit(self, job: Callable[[], T], then: Callable[[T], None]) -> None:
        """Run ``job`` on a worker; ``then(result)`` runs on the loop thread afterwards."""

        def finished(future: Future[T]) -> None:
            if future.cancelled():  # the server is stopping
                return
            self._done.put(lambda: then(future.result()))
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

        self._pool.submit(job).add_done_callback(finished)

    def call_at(self, when: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop thread once the monotonic clock reaches ``when``."""
        heapq.heappush(self._timers, (when, next(self._timer_ids), callback))

    def timeout(self, limit: float, now: float) -> float:
        """How long the selector may wait: ``limit``, or less when a timer is due sooner."""
        if not self._timers:
            return limit
        return max(0.0, min(limit, self._timers[0][0] - now))

    def drain(self) -> None:
        """Run the callbacks of finished jobs (on the loop thread)."""
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                callback = self._done.get_nowait()
            except queue.Empty:
                return
            _guarded(callback)

    def run_due(self, now: float) -> None:
        """Run the timers due at ``now`` (on the loop thread)."""
        while self._timers and self._timers[0][0] <= now:
            _, _, callback = heapq.heappop(self._timers)
            _guarded(callback)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()


def _guarded(callback: Callable[[], None]) -> None:
    """Run a deferred callback; an unexpected error is logged, the loop carries on."""
    try:
        callback()
    except Exception:
        log.exception("event=internal_error where=callback")
