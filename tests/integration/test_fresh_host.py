"""A fresh machine needs only Docker and Python: ``make lab-up`` in a bare host.

The "bare host" is a container made from the local Debian base with what a new
user installs (Docker CLI, Compose v1, python3-venv, git, make, mmdebstrap) and
no compiler and no headers. It drives the host's Docker engine through the
mounted socket, like a user's shell drives theirs. Inside it, a clean clone of
this checkout's HEAD runs ``make lab-up``: the controller's venv, the local
bases (mmdebstrap, in the bare host), the sources download and the image builds
all happen there, under an image namespace of its own, so nothing cached on
the host is reused and nothing shared is touched.

How pip inside the bare host reaches PyPI: the host's CA bundle and pip
configuration are mounted read-only (and ``PIP_*`` passed on), as registries
here answer only through the host's TLS set-up. Nothing is prepared on the
host but a ``git bundle`` of HEAD.

The base image is set to a name that no registry can serve (``.invalid``), so
both runs are in the offline world whatever the machine: the first builds the
local bases with mmdebstrap; the second, with mmdebstrap removed and nothing
cached in its namespace, must stop with lab doctor's "mmdebstrap is not
installed" row and exit 1.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from lab import engine
from lab.api import PROJECT_LABEL, Lab
from lab.config import LabConfig
from lab.images import ensure_local_base

REPO = Path(__file__).resolve().parents[2]
UNSERVABLE_BASE = "socketlab-none.invalid/python:3.11-slim"
BARE_PACKAGES = "docker.io docker-compose git make mmdebstrap gpg python3-venv ca-certificates"
# What the bare host must not have: a compiler, C headers, Python headers.
NO_TOOLCHAIN = (
    "! command -v gcc && ! command -v cc && ! command -v x86_64-linux-gnu-gcc-12"
    " && ! test -e /usr/include/stdio.h && ! find /usr/include -name Python.h | grep -q ."
)
LAB_UP_TIMEOUT = 1800  # a cold build: venv, two mmdebstrap bases, builder, runtime, netkit
# Where pip looks for configuration, besides PIP_* variables.
PIP_CONFIG_PATHS = ("/etc/pip.conf", "/etc/xdg/pip", "~/.config/pip", "~/.pip")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _progress(message: str) -> None:
    print(f"[bare-host] {message}", flush=True)


@dataclass
class BareHost:
    """The running bare-host container and what it was given."""

    container: docker.models.containers.Container
    checkout: str

    def sh(
        self, script: str, *, timeout: float, env: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """Run ``script`` in the checkout (bounded by coreutils timeout); exit code and output."""
        argv = [
            "timeout",
            "-k",
            "10",
            f"{timeout:g}",
            "sh",
            "-c",
            f"cd {self.checkout} && {script}",
        ]
        code, out = self.container.exec_run(argv, environment=env or {}, demux=False)
        return int(code), (out or b"").decode(errors="replace")


def _mounts() -> dict[str, dict[str, str]]:
    """The engine's socket, plus the host's CA bundle and pip configuration, read-only."""
    host = LabConfig.from_env().docker_host
    if not host.startswith("unix://"):
        pytest.fail(f"the bare host needs the engine's unix socket, not {host}", pytrace=False)
    volumes = {host.removeprefix("unix://"): {"bind": "/var/run/docker.sock", "mode": "rw"}}
    for raw in (CA_BUNDLE, *PIP_CONFIG_PATHS, os.environ.get("PIP_CONFIG_FILE", "")):
        path = Path(raw).expanduser() if raw else None
        if path is not None and path.exists():
            target = str(path).replace(str(Path.home()), "/root", 1)
            volumes[str(path)] = {"bind": target, "mode": "ro"}
    return volumes


def _image(client: docker.DockerClient, tag: str, label: dict[str, str]) -> None:
    base = ensure_local_base(client, _progress)
    dockerfile = (
        f"FROM {base}\n"
        "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        f"--no-install-recommends {BARE_PACKAGES} >/dev/null && rm -rf /var/lib/apt/lists/* "
        f"&& {NO_TOOLCHAIN}\n"
    )
    try:
        client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, labels=label, rm=True, forcerm=True
        )
    except docker.errors.BuildError as exc:
        log = " | ".join(str(chunk.get("stream", "")).strip() for chunk in exc.build_log)[-800:]
        pytest.fail(f"cannot build the bare host: {exc} {log}", pytrace=False)


def _remove_namespace(client: docker.DockerClient, namespace: str) -> None:
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{namespace}/"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def bare_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BareHost]:
    token = uuid.uuid4().hex[:8]
    project = f"socketlab-test-bare-{token}"
    label = {PROJECT_LABEL: project}
    client = engine.connect(lambda: docker.from_env(timeout=LAB_UP_TIMEOUT + 60))
    bundle_dir = tmp_path_factory.mktemp("bundle")
    subprocess.run(
        ["git", "-C", str(REPO), "bundle", "create", str(bundle_dir / "repo.bundle"), "HEAD"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    tag = f"socketlab-test/bare-host:{token}"
    container = None
    try:
        _image(client, tag, label)
        volumes = _mounts() | {str(bundle_dir): {"bind": "/bundle", "mode": "ro"}}
        container = client.containers.run(
            tag,
            ["sleep", "infinity"],
            name=project,
            labels=label,
            detach=True,
            init=True,
            volumes=volumes,
            environment={
                **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
                "HOME": "/root",
                "SOCKETLAB_BASE_IMAGE": UNSERVABLE_BASE,
            },
            # mmdebstrap's root mode mounts /proc, /sys and /dev in its chroot, as on a
            # real machine where the user is root.
            cap_add=["SYS_ADMIN"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        )
        host = BareHost(container=container, checkout="/root/socketlab")
        code, out = container.exec_run(
            ["git", "clone", "-q", "/bundle/repo.bundle", host.checkout], demux=False
        )
        assert code == 0, out
        yield host
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(tag, force=True)


def test_make_lab_up_works_on_a_bare_host(
    bare_host: BareHost, record_property: Callable[[str, object], None]
) -> None:
    code, out = bare_host.sh(NO_TOOLCHAIN + " && command -v mmdebstrap", timeout=30)
    assert code == 0, f"the bare host has a toolchain or lacks mmdebstrap: {out}"
    project = f"socketlab-test-bare-lab-{uuid.uuid4().hex[:8]}"
    namespace = f"socketlab-test-fresh-{uuid.uuid4().hex[:8]}"
    env = {"SOCKETLAB_IMAGE_NAMESPACE": namespace}
    host_side = Lab(project=project)
    try:
        started = time.monotonic()
        code, out = bare_host.sh(f"make lab-up PROJECT={project}", timeout=LAB_UP_TIMEOUT, env=env)
        elapsed = time.monotonic() - started
        record_property("bare_host_make_lab_up_seconds", f"{elapsed:.0f}")
        _progress(f"make lab-up in the bare host took {elapsed:.0f} s")
        assert code == 0, out[-3000:]
        assert "Traceback" not in out
        # It built everything itself: bases with mmdebstrap, then the images.
        assert f"building local base image {namespace}/base:" in " ".join(out.split())
        assert f"{namespace}/build-base:" in out

        rows = {row.service: row for row in host_side.status()}
        assert set(rows) == {"server", "client", "udp-listener", "rss-poller"}
        assert all((r.state, r.health) == ("running", "healthy") for r in rows.values()), rows
        assert all(r.image.startswith(f"{namespace}/runtime:") for r in rows.values()), rows

        code, hello = bare_host.sh(
            f"docker-compose -p {project} exec -T client socketlab client hello", timeout=60
        )
        assert code == 0, hello
        assert f"Hello, {host_side.ip('client')}!" in hello

        # The netkit image works too: its shaping engine (netlink, no compiled binding)
        # and its tools, with nothing of the builder stage in it.
        code, netkit = bare_host.sh(
            f"docker run --rm $(docker images -q {namespace}/netkit | head -n 1) sh -c "
            "'socketlab shaper --help >/dev/null && tc -V && ! command -v gcc && echo netkit ok'",
            timeout=60,
        )
        assert (code, netkit.strip().splitlines()[-1]) == (0, "netkit ok"), netkit
    finally:
        bare_host.sh(f"make lab-down PROJECT={project}", timeout=300, env=env)
        host_side.down()
        assert host_side.leftovers() == {"containers": [], "networks": [], "volumes": []}
        _remove_namespace(host_side.docker, namespace)


def test_without_mmdebstrap_and_no_cached_base_make_lab_up_stops_with_the_doctors_row(
    bare_host: BareHost,
) -> None:
    code, out = bare_host.sh(
        "dpkg --purge mmdebstrap >/dev/null && ! command -v mmdebstrap", timeout=60
    )
    assert code == 0, out
    project = f"socketlab-test-bare-lab-{uuid.uuid4().hex[:8]}"
    namespace = f"socketlab-test-fresh-{uuid.uuid4().hex[:8]}"
    env = {"SOCKETLAB_IMAGE_NAMESPACE": namespace}
    host_side = Lab(project=project)
    try:
        code, out = bare_host.sh(f"make lab-up PROJECT={project} 2>&1", timeout=900, env=env)
        text = " ".join(out.split())
        assert code != 0, out
        assert "Base images: missing: mmdebstrap is not installed" in text, out[-2000:]
        assert "(fix: sudo apt-get install mmdebstrap)" in text
        assert "Error 1" in text, "make reports lab's own exit code 1"
        assert "Traceback" not in out

        code, out = bare_host.sh(f".venv/bin/lab -p {project} up", timeout=300, env=env)
        assert code == 1, out
        assert "mmdebstrap is not installed" in " ".join(out.split())

        # It stopped before building or starting anything.
        assert host_side.status() == []
        assert not [
            t
            for i in host_side.docker.images.list()
            for t in i.tags
            if t.startswith(f"{namespace}/")
        ]
    finally:
        host_side.down()
        _remove_namespace(host_side.docker, namespace)
