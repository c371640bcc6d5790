"""The real lab, brought up once per test session and always torn down.

Each session uses a unique Compose project name, so a developer's own lab
(``make lab-up``, project ``socketlab``) and parallel runs never collide.
Teardown removes every container, network and volume labelled with that
project, even when tests fail or the session is interrupted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from lab.api import Lab
from lab.errors import DockerUnavailable
from lab.waiting import wait_for


def _progress(message: str) -> None:
    print(f"[lab] {message}", flush=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    project = os.environ.get("SOCKETLAB_TEST_PROJECT") or f"socketlab-test-{uuid.uuid4().hex[:8]}"
    # A fresh shared key for the signed-pickle demo, not the checkout's own; set
    # before the Lab reads its settings.
    os.environ.setdefault("SOCKETLAB_PICKLE_KEY", uuid.uuid4().hex)
    handle = Lab(project=project, progress=_progress)
    try:
        handle.docker  # noqa: B018 - connect now, so a missing engine fails clearly
    except DockerUnavailable as exc:
        # Integration tests are the point of this suite: never skip them silently.
        pytest.fail(f"integration tests need a Docker engine: {exc}", pytrace=False)
    try:
        handle.up(timeout=240)
        yield handle
    finally:
        handle.down()


@pytest.fixture(scope="module")
def chat_hub(lab: Lab) -> Lab:
    """The lab, once the chat hub answers on server:4572."""
    wait_for(
        lambda: lab.exec("client", ["socketlab", "health", "tcp", "server", "4572"], timeout=15).ok,
        timeout=120,
        what="the chat hub on server:4572",
    )
    return lab
