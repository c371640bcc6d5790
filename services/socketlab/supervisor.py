"""One supervisor for every container process made of several parts.

A component is a function ``serve(stop: threading.Event) -> None`` that blocks
until ``stop`` is set (and notices it within about a second).
:func:`run_components` runs each in its own thread, stops them all on SIGTERM or
SIGINT (or after ``run_for`` seconds), and stops them all as soon as one
returns or raises: a half-working container is worse than a dead one, because
Docker's restart policy and healthcheck only see the dead one. The caller turns
:attr:`Stopped.failures` into the exit status (:meth:`Stopped.raise_for_failures`).

``_Supervisor.guard`` is the single place a component's end is handled, so an
in-process restart policy can be added there later without touching callers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

from socketlab.errors import ServiceError, SocketlabError

log = logging.getLogger("socketlab.supervisor")

Component = Callable[[threading.Event], None]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
WAKE_INTERVAL: Final = 0.2  # the main thread wakes this often, so signals are handled promptly
JOIN_TIMEOUT: Final = 5.0  # per component, after stop


class ComponentFailed(ServiceError):
    """A component of a container process raised instead of stopping when told to."""


@dataclass(frozen=True, kw_only=True)
class Stopped:
    """How a supervised run ended."""

    failures: Mapping[str, BaseException] = field(default_factory=dict)
    signal: str | None = None  # the signal that stopped it, if one did
    still_running: tuple[str, ...] = ()  # components that ignored stop past the join timeout

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise :class:`ComponentFailed` (from the first failure) if any component failed."""
        if not self.failures:
            return
        name, first = next(iter(self.failures.items()))
        others = [other for other in self.failures if other != name]
        also = f" (also failed: {', '.join(others)})" if others else ""
        raise ComponentFailed(f"{name} failed: {first}{also}") from first


class _Supervisor:
    def __init__(self, components: Mapping[str, Component], stop: threading.Event) -> None:
        if not components:
            raise ValueError("nothing to supervise")
        self.components = dict(components)
        self.stop = stop
        self.failures: dict[str, BaseException] = {}
        self.signal: str | None = None
        self._lock = threading.Lock()

    def guard(self, name: str, component: Component) -> None:
        try:
            component(self.stop)
        except SocketlabError as exc:
            # Expected failures (a port in use, a missing binding) are one line.
            log.error("event=component_failed component=%s error=%s", name, exc)  # noqa: TRY400
            self._failed(name, exc)
        except Exception as exc:
            log.exception("event=component_crashed component=%s", name)
            self._failed(name, exc)
        finally:
            self.stop.set()  # one component down takes the process down

    def _failed(self, name: str, exc: BaseException) -> None:
        with self._lock:
            self.failures[name] = exc

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signal = signal.Signals(signum).name
        log.info("event=stopping signal=%s", self.signal)
        self.stop.set()

    def run(self, *, run_for: float | None, join_timeout: float) -> Stopped:
        threads = [
            threading.Thread(target=self.guard, args=item, name=item[0], daemon=True)
            for item in self.components.items()
        ]
        for thread in threads:
            thread.start()
        deadline = None if run_for is None else time.monotonic() + run_for
        while not self.stop.is_set():
            wait = (
                WAKE_INTERVAL
                if deadline is None
                else min(WAKE_INTERVAL, deadline - time.monotonic())
            )
            if deadline is not None and wait <= 0:
                log.info("event=stopping reason=run_for seconds=%g", run_for)
                self.stop.set()
                break
            self.stop.wait(wait)
        join_deadline = time.monotonic() + join_timeout
        for thread in threads:
            thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
        lingering = tuple(thread.name for thread in threads if thread.is_alive())
        if lingering:
            log.warning("event=components_still_running components=%s", ",".join(lingering))
        with self._lock:
            failures = dict(self.failures)
        return Stopped(failures=failures, signal=self.signal, still_running=lingering)


def run_components(
    components: Mapping[str, Component],
    *,
    stop: threading.Event | None = None,
    run_for: float | None = None,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    join_timeout: float = JOIN_TIMEOUT,
) -> Stopped:
    """Run ``components`` until a signal in ``signals``, ``stop``, ``run_for`` s, or one ends.

    Signal handlers are installed only when called from the main thread (pass
    ``signals=()`` to leave them alone) and restored afterwards.
    """
    supervisor = _Supervisor(components, stop or threading.Event())
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, supervisor.on_signal)
    try:
        return supervisor.run(run_for=run_for, join_timeout=join_timeout)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
