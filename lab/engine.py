"""Connecting to the Docker engine, with an error a user can act on."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import requests.exceptions

from lab.errors import DockerUnavailable

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


def docker_host() -> str:
    """The address the Docker SDK will use (``DOCKER_HOST`` or the local socket)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def connect(
    factory: Callable[[], Any] = docker.from_env,
) -> docker.DockerClient:
    """Return a Docker client that has answered a ping.

    Raises :class:`DockerUnavailable` with the address tried when no engine
    answers, instead of the SDK's nested connection traceback.
    """
    try:
        client = factory()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise DockerUnavailable(
            f"cannot reach Docker at {docker_host()}: is the daemon running? ({_root_cause(exc)})"
        ) from exc
    return client


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__
