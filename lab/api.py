"""The lab controller's Python API: one :class:`Lab` per Compose project.

``Lab`` brings the lab up and down through the Compose CLI, and inspects and
drives its containers through the Docker SDK::

    lab = Lab(project="socketlab")
    lab.up()                                   # build images if needed, start, wait healthy
    lab.exec("client", ["socketlab", "client", "hello"], timeout=30)
    lab.down()                                 # remove everything labelled with the project

Every container, network and volume the lab creates carries the label
``io.socketlab.project=<project>``; ``down`` removes by that label, so helper
containers started outside Compose are cleaned up too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import secrets
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import yaml
from docker import DockerClient

from lab import engine
from lab.compose import Compose, detect_compose_command
from lab.doctor import require_prerequisites
from lab.errors import CommandTimeout, LabError, NotReady, ServiceNotFound
from lab.images import ImageSet, ensure_images

log = logging.getLogger("lab")

PROJECT_LABEL = "io.socketlab.project"
ROLE_LABEL = "io.socketlab.role"
NETKIT_LABEL = "io.socketlab.netkit-image"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_PROJECT = "socketlab"
PICKLE_KEY_ENV = "SOCKETLAB_PICKLE_KEY"
TIMEOUT_EXIT_CODE = 124  # what coreutils `timeout` returns when it had to stop a command
HEALTH_POLL = 0.5
# Compose turns project names into resource names: keep them to what it accepts.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    log.info("event=progress %s", message)


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a command run in a container returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.exit_code == TIMEOUT_EXIT_CODE

    def check(self, what: str = "command") -> ExecResult:
        """Return self when the exit code is 0, else raise LabError with stderr."""
        if not self.ok:
            tail = " | ".join(self.stderr.strip().splitlines()[-5:])
            raise LabError(f"{what} failed with exit code {self.exit_code}: {tail}")
        return self


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    """One service's container as ``lab status`` shows it."""

    service: str
    state: str
    health: str
    ip: str
    container: str
    image: str


def find_repo_root(start: Path | None = None) -> Path:
    """The folder holding docker-compose.yml and services/ (env ``SOCKETLAB_ROOT`` wins)."""
    if root := os.environ.get("SOCKETLAB_ROOT"):
        return Path(root).resolve()
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent]
    for candidate in candidates:
        for folder in [candidate.resolve(), *candidate.resolve().parents]:
            if (folder / "docker-compose.yml").is_file() and (folder / "services").is_dir():
                return folder
    raise LabError(
        "cannot find the socketlab checkout (docker-compose.yml + services/): "
        "run from inside it or set SOCKETLAB_ROOT"
    )


def pickle_key(repo_root: Path) -> str:
    """The HMAC key the signed-pickle demo's two ends share.

    ``SOCKETLAB_PICKLE_KEY`` wins (set it empty to disable pickle altogether);
    otherwise a random key made once per checkout in ``build/pickle-key``
    (mode 0600), so the demo works in any lab started from here while the key
    never appears in the repository and stays the same across ``lab up``
    runs (a changed key would recreate every container).
    """
    if (configured := os.environ.get(PICKLE_KEY_ENV)) is not None:
        return configured
    path = repo_root / "build" / "pickle-key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


def wrap_with_timeout(argv: Sequence[str], timeout: float) -> list[str]:
    """Run ``argv`` under coreutils ``timeout`` so a hung command cannot hang us."""
    return ["timeout", "-k", "5", f"{timeout:g}", *argv]


class Lab:
    """A socketlab lab: one Compose project and the containers it runs."""

    def __init__(
        self,
        *,
        project: str | None = None,
        repo_root: Path | None = None,
        progress: Progress = _quiet,
    ) -> None:
        self.project = project or os.environ.get("SOCKETLAB_PROJECT") or DEFAULT_PROJECT
        if not PROJECT_NAME.match(self.project):
            raise LabError(
                f"project name {self.project!r} must be lowercase letters, digits, '-' or '_'"
            )
        self.repo_root = repo_root or find_repo_root()
        self.progress = progress
        self._images: ImageSet | None = None

    # ------------------------------------------------------------------ plumbing

    @cached_property
    def docker(self) -> DockerClient:
        return engine.connect()

    @cached_property
    def _exec_docker(self) -> DockerClient:
        # exec calls block for the whole command: their HTTP timeout must be long;
        # the command itself is bounded by coreutils `timeout` inside the container.
        return engine.connect(lambda: docker.from_env(timeout=24 * 3600))

    @cached_property
    def compose_file(self) -> Path:
        return self.repo_root / "docker-compose.yml"

    @cached_property
    def services(self) -> list[str]:
        """Service names declared in docker-compose.yml, in file order."""
        spec = yaml.safe_load(self.compose_file.read_text())
        return list(spec["services"])

    def compose(self, images: ImageSet | None = None) -> Compose:
        env = {"COMPOSE_PROJECT_NAME": self.project, PICKLE_KEY_ENV: pickle_key(self.repo_root)}
        if images is not None:
            env |= {"SOCKETLAB_IMAGE": images.runtime, "SOCKETLAB_NETKIT_IMAGE": images.netkit}
        override = self.compose_file.with_name("docker-compose.override.yml")
        return Compose(
            project=self.project,
            compose_file=self.compose_file,
            override_file=override if override.is_file() else None,
            command=tuple(detect_compose_command(override=os.environ.get("SOCKETLAB_COMPOSE"))),
            env=env,
        )

    # ------------------------------------------------------------------ lifecycle

    def build(self) -> ImageSet:
        """Build (or reuse) the images for the current sources."""
        self._images = ensure_images(self.docker, self.repo_root, progress=self.progress)
        return self._images

    def up(self, *, timeout: float = 180.0) -> list[ServiceStatus]:
        """Build images if needed, start every service, wait until all are healthy."""
        require_prerequisites()  # a missing prerequisite stops here with lab doctor's row
        images = self.build()
        self.progress(f"starting lab {self.project!r}")
        self.compose(images).run("up", "-d", "--remove-orphans")
        self.wait_healthy(timeout=timeout)
        return self.status()

    def down(self) -> dict[str, int]:
        """Remove the project's containers, networks and volumes; return counts removed."""
        if self.compose_file.is_file():
            try:
                self.compose().run("down", "--volumes", "--remove-orphans", "--timeout", "5")
            except LabError as exc:
                self.progress(f"compose down failed ({exc}); removing by label")
        return self.remove_labelled()

    def remove_labelled(self) -> dict[str, int]:
        """Remove whatever still carries this project's label (helpers, strays)."""
        removed = {"containers": 0, "networks": 0, "volumes": 0}
        filters = {"label": f"{PROJECT_LABEL}={self.project}"}
        compose_filters = {"label": f"{COMPOSE_PROJECT_LABEL}={self.project}"}
        containers = {
            c.id: c
            for f in (filters, compose_filters)
            for c in self.docker.containers.list(all=True, filters=f)
        }
        # NotFound means it is already gone, which is what we wanted.
        for container in containers.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed["containers"] += 1
        for network in self.docker.networks.list(filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
            removed["networks"] += 1
        for volume in self.docker.volumes.list(filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
            removed["volumes"] += 1
        return removed

    def leftovers(self) -> dict[str, list[str]]:
        """Names of anything still labelled with this project (empty after ``down``)."""
        filters = {"label": f"{PROJECT_LABEL}={self.project}"}
        return {
            "containers": [c.name for c in self.docker.containers.list(all=True, filters=filters)],
            "networks": [n.name for n in self.docker.networks.list(filters=filters)],
            "volumes": [v.name for v in self.docker.volumes.list(filters=filters)],
        }

    def wait_healthy(self, *, timeout: float) -> None:
        """Poll until every service is running and healthy; NotReady at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            rows = {row.service: row for row in self.status()}
            waiting = [
                name
                for name in self.services
                if name not in rows
                or (rows[name].state, rows[name].health) != ("running", "healthy")
            ]
            if not waiting:
                return
            dead = [n for n in waiting if n in rows and rows[n].state in {"exited", "dead"}]
            if dead:
                raise NotReady(f"{', '.join(dead)} stopped: {self._last_log_line(dead[0])}")
            if time.monotonic() >= deadline:
                detail = ", ".join(
                    f"{n} ({rows[n].state}/{rows[n].health})" if n in rows else f"{n} (missing)"
                    for n in waiting
                )
                raise NotReady(f"not healthy after {timeout:.0f} s: {detail}")
            time.sleep(HEALTH_POLL)  # polling interval of a deadline-bounded wait

    def _last_log_line(self, service: str) -> str:
        try:
            lines = self.container(service).logs(tail=5).decode(errors="replace").splitlines()
        except LabError:
            return "no logs"
        return lines[-1] if lines else "no logs"

    # ------------------------------------------------------------------ inspection

    def container(self, service: str) -> Any:
        """The Docker SDK container of ``service`` in this project."""
        found = self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"{COMPOSE_PROJECT_LABEL}={self.project}",
                    f"{COMPOSE_SERVICE_LABEL}={service}",
                ]
            },
        )
        if not found:
            raise ServiceNotFound(f"no container for service {service!r} in lab {self.project!r}")
        return found[0]

    def ip(self, service: str) -> str:
        """The service's IP address on the lab network."""
        container = self.container(service)
        container.reload()
        networks: Mapping[str, Any] = container.attrs["NetworkSettings"]["Networks"]
        for name, settings in networks.items():
            if name.endswith("_lab") and settings.get("IPAddress"):
                return str(settings["IPAddress"])
        raise ServiceNotFound(f"{service} has no address on the lab network")

    def status(self) -> list[ServiceStatus]:
        """One row per service container of this project."""
        rows = []
        containers = self.docker.containers.list(
            all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={self.project}"}
        )
        for container in containers:
            state = container.attrs["State"]
            networks = container.attrs["NetworkSettings"]["Networks"]
            ip = next((s.get("IPAddress") for n, s in networks.items() if n.endswith("_lab")), "")
            rows.append(
                ServiceStatus(
                    service=container.labels.get(COMPOSE_SERVICE_LABEL, container.name),
                    state=state.get("Status", "?"),
                    health=state.get("Health", {}).get("Status", "none"),
                    ip=ip or "-",
                    container=container.short_id,
                    image=(container.image.tags or [container.image.short_id])[0],
                )
            )
        order = {name: index for index, name in enumerate(self.services)}
        return sorted(rows, key=lambda row: order.get(row.service, len(order)))

    def logs(self, service: str, *, tail: int | None = None) -> str:
        kwargs: dict[str, Any] = {"tail": tail} if tail is not None else {}
        return str(self.container(service).logs(**kwargs).decode(errors="replace"))

    @property
    def netkit_image(self) -> str:
        """The netkit image this lab was started with (recorded on the lab network)."""
        if self._images is not None:
            return self._images.netkit
        networks = self.docker.networks.list(filters={"label": f"{PROJECT_LABEL}={self.project}"})
        for network in networks:
            image = network.attrs.get("Labels", {}).get(NETKIT_LABEL)
            if image:
                return str(image)
        return self.build().netkit

    # ------------------------------------------------------------------ actions

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        timeout: float,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the service's container; bounded by ``timeout`` seconds."""
        container = self._exec_docker.containers.get(self.container(service).id)
        kwargs: dict[str, Any] = {"demux": True, "environment": dict(env or {})}
        if user is not None:
            kwargs["user"] = user
        try:
            exit_code, (out, err) = container.exec_run(wrap_with_timeout(argv, timeout), **kwargs)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise LabError(f"exec in {service} failed: {exc}") from exc
        return ExecResult(
            exit_code=int(exit_code),
            stdout=(out or b"").decode(errors="replace"),
            stderr=(err or b"").decode(errors="replace"),
        )

    def netkit_run(
        self,
        service: str,
        argv: Sequence[str],
        *,
        timeout: float,
        net_admin: bool = False,
    ) -> ExecResult:
        """Run ``argv`` in a throwaway netkit container inside ``service``'s network namespace.

        That is how tools the service image lacks (iperf3, ping, socat, tc) see
        exactly the service's network. Only with ``net_admin`` does it get
        ``NET_ADMIN``; the service container itself never does.
        """
        target = self.container(service)
        caps = ["NET_ADMIN", "NET_RAW"] if net_admin else ["NET_RAW"]
        helper = self.docker.containers.run(
            self.netkit_image,
            wrap_with_timeout(argv, timeout),
            network_mode=f"container:{target.id}",
            cap_add=caps,
            labels={PROJECT_LABEL: self.project, ROLE_LABEL: "netkit-run"},
            detach=True,
        )
        try:
            result = helper.wait(timeout=timeout + 30)
            out = helper.logs(stdout=True, stderr=False).decode(errors="replace")
            err = helper.logs(stdout=False, stderr=True).decode(errors="replace")
        except requests.exceptions.RequestException as exc:
            raise CommandTimeout(f"netkit command in {service} did not finish: {exc}") from exc
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                helper.remove(force=True)
        return ExecResult(exit_code=int(result["StatusCode"]), stdout=out, stderr=err)

    def read_file(self, service: str, path: str) -> bytes:
        """Read one (small) file out of a service container."""
        try:
            chunks, _ = self.container(service).get_archive(path)
        except docker.errors.NotFound as exc:
            raise LabError(f"{service}:{path} does not exist") from exc
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
            member = archive.next()
            if member is None or not member.isfile():
                raise LabError(f"{service}:{path} is not a regular file")
            extracted = archive.extractfile(member)
            assert extracted is not None  # noqa: S101 - isfile() guarantees it
            return extracted.read()

    def file_sha256(self, service: str, path: str, *, timeout: float = 300.0) -> str:
        """SHA-256 of a file inside a service container, computed there (any size)."""
        result = self.exec(service, ["sha256sum", path], timeout=timeout).check(
            f"sha256sum {service}:{path}"
        )
        return result.stdout.split()[0]

    def _act(self, service: str, action: str) -> None:
        try:
            getattr(self.container(service), action)()
        except docker.errors.APIError as exc:
            raise LabError(f"cannot {action} {service}: {exc.explanation or exc}") from exc

    def stop(self, service: str) -> None:
        self._act(service, "stop")

    def start(self, service: str) -> None:
        self._act(service, "start")

    def restart(self, service: str) -> None:
        self._act(service, "restart")

    def kill(self, service: str) -> None:
        self._act(service, "kill")

    def pause(self, service: str) -> None:
        self._act(service, "pause")

    def unpause(self, service: str) -> None:
        self._act(service, "unpause")
