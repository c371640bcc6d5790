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
The containers rely on Compose's ``restart: on-failure`` instead: the process
exits non-zero, Docker starts it again and counts it (``lab status`` shows it).

With a :class:`Heartbeat`, the supervisor touches a file every few seconds
while every component runs, and removes it when they stop: the container's
healthcheck only has to look at the file's age (``healthcheck.sh fresh``),
which costs no interpreter start.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ServiceError, SocketlabError

log = logging.getLogger("socketlab.supervisor")

Component = Callable[[threading.Event], None]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
WAKE_INTERVAL: Final = 0.2  # the main thread wakes this often, so signals are handled promptly
JOIN_TIMEOUT: Final = 5.0  # per component, after stop


@env_config
@dataclass(frozen=True, kw_only=True)
class HeartbeatConfig(EnvConfig):
    """Where a container process keeps its liveness file (none unless set)."""

    path: Path | None = env_field(
        "SOCKETLAB_HEARTBEAT",
        None,
        "file a service touches while all its parts run (read by its healthcheck); unset: none",
    )
    every: float = env_field(
        "SOCKETLAB_HEARTBEAT_EVERY", 5.0, "seconds between two touches of the heartbeat file"
    )

    def heartbeat(self) -> Heartbeat | None:
        return Heartbeat(self.path, every=self.every) if self.path is not None else None


class Heartbeat:
    """A file whose modification time says "still running" (touched by :func:`run_components`)."""

    def __init__(self, path: Path, *, every: float) -> None:
        if every <= 0:
            raise ValueError("a heartbeat needs a positive interval")
        self.path = path
        self.every = every
        self._failed = False

    def beat(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError as exc:
            if not self._failed:  # once: a read-only place stays read-only
                log.warning("event=heartbeat_failed path=%s error=%s", self.path, exc)
            self._failed = True

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


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

    def run(
        self, *, run_for: float | None, join_timeout: float, heartbeat: Heartbeat | None
    ) -> Stopped:
        threads = [
            threading.Thread(target=self.guard, args=item, name=item[0], daemon=True)
            for item in self.components.items()
        ]
        for thread in threads:
            thread.start()
        deadline = None if run_for is None else time.monotonic() + run_for
        next_beat = time.monotonic()
        while not self.stop.is_set():
            if heartbeat is not None and time.monotonic() >= next_beat:
                heartbeat.beat()
                next_beat = time.monotonic() + heartbeat.every
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
        if heartbeat is not None:
            heartbeat.stop()
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
    heartbeat: Heartbeat | None = None,
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
        return supervisor.run(run_for=run_for, join_timeout=join_timeout, heartbeat=heartbeat)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
