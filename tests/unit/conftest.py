"""Shared fixtures of the unit tests."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from lab.errors import NotReady
from lab.waiting import wait_for as lab_wait_for

T = TypeVar("T")

# --------------------------------------------------------------------------------------
# Container side (socketlab): loopback helpers shared by the socketlab unit tests.
# --------------------------------------------------------------------------------------

WAIT_TIMEOUT = 15.0  # generous: the machine is shared
WAIT_INTERVAL = 0.02


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for(
    probe: Callable[[], T | None],
    *,
    what: str = "the condition",
    timeout: float = WAIT_TIMEOUT,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """``lab.waiting.wait_for`` with a short poll; ``ignore`` errors count as not yet."""

    def attempt() -> T | None:
        try:
            return probe()
        except ignore:
            return None

    try:
        return lab_wait_for(attempt, timeout=timeout, what=what, interval=WAIT_INTERVAL)
    except NotReady as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def free_port() -> Callable[..., int]:
    """``free_port(kind=SOCK_STREAM)``: a loopback port nobody listens on (yet)."""
    return _free_port


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """``wait_for(probe, what=..., timeout=..., ignore=(...))``: poll until truthy, or fail."""
    return _wait_for
