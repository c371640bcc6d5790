"""The Docker engine: connecting with an error a user can act on, and the one place
where Docker SDK and HTTP errors become :class:`~lab.errors.LabError`\\ s."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions

from lab.config import DEFAULT_DOCKER_HOST
from lab.errors import DockerError, DockerNotFound, DockerUnavailable, LabError


def connect(
    factory: Callable[[], Any] = docker.from_env,
    *,
    host: str = DEFAULT_DOCKER_HOST,
) -> docker.DockerClient:
    """Return a Docker client that has answered a ping.

    Raises :class:`DockerUnavailable` naming ``host`` (the configured
    ``DOCKER_HOST``) when no engine answers, instead of the SDK's nested
    connection traceback.
    """
    try:
        client = factory()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise DockerUnavailable(
            f"cannot reach Docker at {host}: is the daemon running? ({_root_cause(exc)})"
        ) from exc
    return client


def connect_url(url: str, *, timeout: float) -> docker.DockerClient:
    """A client of the engine at ``url`` (``unix://``, ``tcp://``, ``ssh://``) that has
    answered a ping; ``timeout``: seconds an HTTP call may take. ``ssh://`` goes
    through the ``ssh`` command, so the user's ssh configuration applies."""
    return connect(
        lambda: docker.DockerClient(
            base_url=url, timeout=timeout, use_ssh_client=url.startswith("ssh://")
        ),
        host=url,
    )


def client_factory(*, timeout: float) -> Callable[[], docker.DockerClient]:
    """A :func:`connect` factory whose HTTP calls give up after ``timeout`` seconds."""
    return lambda: docker.from_env(timeout=timeout)


@contextlib.contextmanager
def docker_errors(what: str, *, http_error: type[LabError] = DockerError) -> Iterator[None]:
    """Translate what the Docker SDK raises inside the block into a LabError about ``what``.

    A missing object is :class:`DockerNotFound`; any other API error a
    :class:`DockerError`; a failed or timed-out HTTP call ``http_error`` (a
    caller waiting for a command passes :class:`~lab.errors.CommandTimeout`).
    """
    try:
        yield
    except docker.errors.NotFound as exc:
        raise DockerNotFound(f"{what}: {_explanation(exc)}") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {_explanation(exc)}") from exc
    except requests.exceptions.RequestException as exc:
        raise http_error(f"{what}: {exc}") from exc
    except docker.errors.DockerException as exc:
        raise DockerError(f"{what}: {exc}") from exc


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__
