"""Waiting for a condition with a deadline, never with a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from lab.errors import NotReady

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.3


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = DEFAULT_POLL_INTERVAL,
) -> T:
    """Call ``probe`` until it returns something truthy and return that.

    Raises :class:`NotReady` naming ``what`` once ``timeout`` seconds have
    passed; the probe always gets one last try at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise NotReady(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait
