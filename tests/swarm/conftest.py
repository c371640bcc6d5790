"""The Swarm tests' fixtures: a 3-node Swarm in containers and the default lab on it.

``cluster`` builds (once, cached by digest) the node image from the lab's local
Debian base on the host engine, starts three nodes and forms the Swarm
(:mod:`tests.swarm.cluster`); ``swarm_env`` points the lab at it the way a user
would (``DOCKER_HOST`` at the manager, ``SOCKETLAB_ORCHESTRATOR=swarm``, each
node's endpoint, the host engine as the build engine, ``--spread``);
``swarm_lab`` brings the default lab up as a stack under a unique project and
always tears it down. Both are session-wide and removed however the session ends.

The figures measured on the way (node image, nodes, Swarm, lab up with its image
distribution, lab down) are printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from cluster import FIGURES, Cluster, running_cluster

from lab.api import Lab, find_repo_root
from lab.config import DEFAULT_DOCKER_HOST, LabConfig
from lab.errors import LabError
from lab.images import BASE_PACKAGES, ImageNames, ensure_images, host_codename, local_base_tag

NODES = 3


def _progress(message: str) -> None:
    print(f"[swarm] {message}", flush=True)
    if message.startswith(("images on ", "saved ")):
        FIGURES[f"lab up: {message.split(' ', maxsplit=1)[0]}"] = message


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("swarm figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def host_url() -> str:
    """The engine the tests start on (it builds the images and runs the nodes)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


@pytest.fixture(scope="session")
def host(host_url: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=host_url, timeout=600)
    try:
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Swarm tests need a Docker engine: {exc}", pytrace=False)
    yield client
    client.close()


def node_base_image(host: docker.DockerClient, config: LabConfig, repo_root: Path) -> str:
    """The lab's local Debian base (or SOCKETLAB_BASE_IMAGE when present), built first
    with the lab's images if neither is there yet."""
    names = ImageNames(namespace=config.images.namespace)
    local = local_base_tag(host_codename(), BASE_PACKAGES, repo=names.base)
    candidates = (local, config.images.base_image)
    for attempt in range(2):
        for candidate in candidates:
            with contextlib.suppress(docker.errors.ImageNotFound):
                host.images.get(candidate)
                return candidate
        if attempt == 0:
            ensure_images(host, repo_root, progress=_progress, config=config.images)
    pytest.fail(f"no base image for the Swarm nodes: none of {', '.join(candidates)}")


@pytest.fixture(scope="session")
def cluster(host: docker.DockerClient) -> Iterator[Cluster]:
    config = LabConfig.from_env()
    base = node_base_image(host, config, find_repo_root(configured=config.root))
    name = f"socketlab-swarm-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with running_cluster(host, name=name, size=NODES, base_image=base, progress=_progress) as made:
        FIGURES["cluster"] = f"{NODES} nodes, Swarm formed in {time.monotonic() - started:.1f} s"
        for step, seconds in made.timings.items():
            FIGURES[f"cluster: {step}"] = f"{seconds:.1f} s"
        yield made


@pytest.fixture(scope="session")
def swarm_env(cluster: Cluster, host_url: str) -> Iterator[dict[str, str]]:
    environment = cluster.environment(build_host=host_url) | {"SOCKETLAB_SWARM_SPREAD": "1"}
    patch = pytest.MonkeyPatch()
    for key, value in environment.items():
        patch.setenv(key, value)
    # a fresh key for the signed-pickle demo, not the checkout's own
    patch.setenv("SOCKETLAB_PICKLE_KEY", os.environ.get("SOCKETLAB_PICKLE_KEY") or uuid.uuid4().hex)
    try:
        yield environment
    finally:
        patch.undo()


@pytest.fixture(scope="session")
def swarm_lab(swarm_env: dict[str, str]) -> Iterator[Lab]:
    project = f"socketlab-test-{uuid.uuid4().hex[:8]}"
    handle = Lab(project=project, progress=_progress)
    assert handle.config.orchestrator == "swarm"
    try:
        started = time.monotonic()
        handle.up(timeout=300)
        FIGURES["lab up --swarm --spread"] = f"{time.monotonic() - started:.1f} s"
        yield handle
    finally:
        with contextlib.suppress(LabError):
            handle.down()
