"""Waiting for a condition with a deadline, never with a bare sleep.

:func:`wait_for` is the one polling loop of the controller; :func:`wait_for_log`
waits on it for a container to log a line (a server that says it listens).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

from lab.errors import HelperNotReady, NotReady

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.3
LOG_POLL_INTERVAL = 0.1
ENDED_STATES = frozenset({"exited", "dead"})

Stream = Literal["stdout", "stderr", "both"]


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = DEFAULT_POLL_INTERVAL,
) -> T:
    """Call ``probe`` until it returns something truthy and return that.

    Raises :class:`NotReady` naming ``what`` once ``timeout`` seconds have
    passed; the probe always gets one last try at the deadline. A probe may
    raise to give up early (a container that exited will never get ready).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NotReady(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait


class Watched(Protocol):
    """A container whose state and logs can be polled (a helper, in practice)."""

    @property
    def name(self) -> str: ...

    @property
    def status(self) -> str: ...

    def reload(self) -> None: ...

    def logs(self, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> str: ...


def wait_for_log(
    watched: Watched,
    text: str,
    *,
    timeout: float,
    stream: Stream = "both",
    interval: float = LOG_POLL_INTERVAL,
) -> str:
    """Wait until ``watched`` runs and ``text`` is in its output (``""``: running is enough).

    Returns the output so far. Raises :class:`HelperNotReady` with what it
    logged when it exits first (``exited=True``) or at the deadline.
    """
    streams = {"stdout": stream != "stderr", "stderr": stream != "stdout"}
    seen: list[str] = [""]

    def probe() -> tuple[str] | None:
        watched.reload()
        output = watched.logs(**streams)
        seen[0] = output
        if watched.status == "running" and text in output:
            return (output,)
        if watched.status in ENDED_STATES:
            raise HelperNotReady(
                f"{watched.name} exited: {_last_line(output)}", exited=True, output=output
            )
        return None

    wanted = f"{text!r} in the output of {watched.name}" if text else f"{watched.name} to run"
    try:
        (output,) = wait_for(probe, timeout=timeout, what=wanted, interval=interval)
    except HelperNotReady:
        raise
    except NotReady as exc:
        raise HelperNotReady(str(exc), exited=False, output=seen[0]) from exc
    return output


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1] if lines else "no output"
