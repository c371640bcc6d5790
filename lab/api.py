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
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import yaml
from docker import DockerClient

from lab import engine
from lab.compose import Compose, detect_compose_command
from lab.config import LabConfig
from lab.engine import docker_errors
from lab.errors import (
    CommandTimeout,
    DockerNotFound,
    LabError,
    NotReady,
    ServiceNotFound,
    ServiceStopped,
)
from lab.helpers import (
    PROJECT_LABEL,
    ROLE_LABEL,
    DockerHelper,
    helper_removed_on_error,
    helper_run_options,
    single_file,
)
from lab.images import ImageSet, ensure_images
from lab.interface import TIMEOUT_EXIT_CODE, ExecResult, ServiceStatus, VolumeAccess
from lab.waiting import Stream, wait_for, wait_for_log

if TYPE_CHECKING:
    from lab import interface

__all__ = [
    "DEFAULT_PROJECT",
    "NETKIT_LABEL",
    "PROJECT_LABEL",
    "ROLE_LABEL",
    "TIMEOUT_EXIT_CODE",
    "DockerHelper",
    "ExecResult",
    "Lab",
    "ServiceStatus",
    "find_repo_root",
    "pickle_key",
    "single_file",
    "wrap_with_timeout",
]

log = logging.getLogger("lab")

NETKIT_LABEL = "io.socketlab.netkit-image"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
DEFAULT_PROJECT = "socketlab"
HEALTH_POLL = 0.5
NETKIT_RUN_ROLE = "netkit-run"
# How much longer than its command's own timeout we wait for a netkit helper to end.
NETKIT_WAIT_GRACE = 30.0
# Compose turns project names into resource names: keep them to what it accepts.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    log.info("event=progress %s", message)


def find_repo_root(start: Path | None = None, *, configured: Path | None = None) -> Path:
    """The folder holding docker-compose.yml and services/ (``configured``,
    from ``SOCKETLAB_ROOT``, wins)."""
    if configured is not None:
        return configured.resolve()
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent]
    for candidate in candidates:
        for folder in [candidate.resolve(), *candidate.resolve().parents]:
            if (folder / "docker-compose.yml").is_file() and (folder / "services").is_dir():
                return folder
    raise LabError(
        "cannot find the socketlab checkout (docker-compose.yml + services/): "
        "run from inside it or set SOCKETLAB_ROOT"
    )


def pickle_key(repo_root: Path, *, configured: str | None = None) -> str:
    """The HMAC key the signed-pickle demo's two ends share.

    ``configured`` (``SOCKETLAB_PICKLE_KEY``) wins; empty disables pickle
    altogether. Otherwise a random key made once per checkout in
    ``build/pickle-key`` (mode 0600), so the demo works in any lab started
    from here while the key never appears in the repository and stays the
    same across ``lab up`` runs (a changed key would recreate every container).
    """
    if configured is not None:
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
    """A socketlab lab: one Compose project and the containers it runs.

    Implements :class:`lab.interface.Lab`. ``config`` defaults to
    ``LabConfig.from_env()``, read here once; ``project`` and ``repo_root``
    win over it.
    """

    def __init__(
        self,
        *,
        project: str | None = None,
        repo_root: Path | None = None,
        progress: Progress = _quiet,
        config: LabConfig | None = None,
    ) -> None:
        self.config = config if config is not None else LabConfig.from_env()
        self.project = project or self.config.project or DEFAULT_PROJECT
        if not PROJECT_NAME.match(self.project):
            raise LabError(
                f"project name {self.project!r} must be lowercase letters, digits, '-' or '_'"
            )
        self.repo_root = repo_root or find_repo_root(configured=self.config.root)
        self.progress = progress
        self._images: ImageSet | None = None

    # ------------------------------------------------------------------ plumbing

    @cached_property
    def docker(self) -> DockerClient:
        return engine.connect(host=self.config.docker_host)

    @cached_property
    def _exec_docker(self) -> DockerClient:
        # exec calls block for the whole command: their HTTP timeout must be long;
        # the command itself is bounded by coreutils `timeout` inside the container.
        return engine.connect(
            lambda: docker.from_env(timeout=24 * 3600), host=self.config.docker_host
        )

    @cached_property
    def compose_file(self) -> Path:
        return self.repo_root / "docker-compose.yml"

    @cached_property
    def services(self) -> list[str]:
        """Service names declared in docker-compose.yml, in file order."""
        spec = yaml.safe_load(self.compose_file.read_text())
        return list(spec["services"])

    def compose(self, images: ImageSet | None = None) -> Compose:
        key = pickle_key(self.repo_root, configured=self.config.pickle_key)
        env = {"COMPOSE_PROJECT_NAME": self.project, "SOCKETLAB_PICKLE_KEY": key}
        if images is not None:
            env |= {"SOCKETLAB_IMAGE": images.runtime, "SOCKETLAB_NETKIT_IMAGE": images.netkit}
        override = self.compose_file.with_name("docker-compose.override.yml")
        return Compose(
            project=self.project,
            compose_file=self.compose_file,
            override_file=override if override.is_file() else None,
            command=tuple(detect_compose_command(override=self.config.compose)),
            env=env,
        )

    # ------------------------------------------------------------------ lifecycle

    def build(self) -> ImageSet:
        """Build (or reuse) the images for the current sources."""
        self._images = ensure_images(self.docker, self.repo_root, progress=self.progress)
        return self._images

    def up(self, *, timeout: float = 180.0) -> list[ServiceStatus]:
        """Build images if needed, start every service, wait until all are healthy."""
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
        with docker_errors(f"cannot list what lab {self.project!r} left"):
            containers = {
                c.id: c
                for f in (filters, compose_filters)
                for c in self.docker.containers.list(all=True, filters=f)
            }
            networks = self.docker.networks.list(filters=filters)
            volumes = self.docker.volumes.list(filters=filters)
        # Gone already is what we wanted.
        for container in containers.values():
            with contextlib.suppress(DockerNotFound), docker_errors("removing a container"):
                container.remove(force=True, v=True)
            removed["containers"] += 1
        for network in networks:
            with contextlib.suppress(DockerNotFound), docker_errors("removing a network"):
                network.remove()
            removed["networks"] += 1
        for volume in volumes:
            with contextlib.suppress(DockerNotFound), docker_errors("removing a volume"):
                volume.remove(force=True)
            removed["volumes"] += 1
        return removed

    def leftovers(self) -> dict[str, list[str]]:
        """Names of anything still labelled with this project (empty after ``down``)."""
        filters = {"label": f"{PROJECT_LABEL}={self.project}"}
        with docker_errors(f"cannot list what lab {self.project!r} left"):
            return {
                "containers": [
                    c.name for c in self.docker.containers.list(all=True, filters=filters)
                ],
                "networks": [n.name for n in self.docker.networks.list(filters=filters)],
                "volumes": [v.name for v in self.docker.volumes.list(filters=filters)],
            }

    def wait_healthy(self, *, timeout: float) -> None:
        """Poll until every service is running and healthy; NotReady at the deadline."""
        waiting: list[str] = []
        rows: dict[str, ServiceStatus] = {}

        def all_healthy() -> bool:
            rows.clear()
            rows.update((row.service, row) for row in self.status())
            waiting[:] = [
                name
                for name in self.services
                if name not in rows
                or (rows[name].state, rows[name].health) != ("running", "healthy")
            ]
            dead = [n for n in waiting if n in rows and rows[n].state in {"exited", "dead"}]
            if dead:
                # It will not get healthy by waiting: say why now.
                raise ServiceStopped(f"{', '.join(dead)} stopped: {self._last_log_line(dead[0])}")
            return not waiting

        try:
            wait_for(all_healthy, timeout=timeout, what="the lab", interval=HEALTH_POLL)
        except ServiceStopped:
            raise
        except NotReady as exc:
            detail = ", ".join(
                f"{n} ({rows[n].state}/{rows[n].health})" if n in rows else f"{n} (missing)"
                for n in waiting
            )
            raise NotReady(f"not healthy after {timeout:.0f} s: {detail}") from exc

    def _last_log_line(self, service: str) -> str:
        try:
            lines = self.logs(service, tail=5).splitlines()
        except LabError:
            return "no logs"
        return lines[-1] if lines else "no logs"

    # ------------------------------------------------------------------ inspection

    def container(self, service: str) -> Any:
        """The Docker SDK container of ``service`` in this project (not part of the
        :class:`~lab.interface.Lab` protocol: for callers that need Docker itself)."""
        with docker_errors(f"cannot look up {service}"):
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
        with docker_errors(f"cannot inspect {service}"):
            container.reload()
        networks: Mapping[str, Any] = container.attrs["NetworkSettings"]["Networks"]
        for name, settings in networks.items():
            if name.endswith("_lab") and settings.get("IPAddress"):
                return str(settings["IPAddress"])
        raise ServiceNotFound(f"{service} has no address on the lab network")

    def state(self, service: str) -> str:
        """Docker's state of the service's container now (running, paused, exited, ...)."""
        container = self.container(service)
        with docker_errors(f"cannot inspect {service}"):
            container.reload()
        return str(container.status)

    def started_at(self, service: str) -> str:
        """When the service's container last started, as Docker reports it."""
        return str(self.container(service).attrs["State"].get("StartedAt", ""))

    def status(self) -> list[ServiceStatus]:
        """One row per service container of this project."""
        rows = []
        with docker_errors(f"cannot read the status of lab {self.project!r}"):
            containers = self.docker.containers.list(
                all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={self.project}"}
            )
            for container in containers:
                state = container.attrs["State"]
                networks = container.attrs["NetworkSettings"]["Networks"]
                ip = next(
                    (s.get("IPAddress") for n, s in networks.items() if n.endswith("_lab")), ""
                )
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

    def logs(
        self,
        service: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        stream: Stream = "both",
    ) -> str:
        """The service's logs (``since``: a Unix time; ``stream``: stdout, stderr or both)."""
        kwargs: dict[str, Any] = {"stdout": stream != "stderr", "stderr": stream != "stdout"}
        if tail is not None:
            kwargs["tail"] = tail
        if since is not None:
            kwargs["since"] = since
        container = self.container(service)
        with docker_errors(f"cannot read logs of {service}"):
            raw = container.logs(**kwargs)
        return bytes(raw).decode(errors="replace")

    def engine_version(self) -> str:
        """The Docker engine's version."""
        with docker_errors("cannot ask Docker for its version"):
            return str(self.docker.version().get("Version", "?"))

    @property
    def netkit_image(self) -> str:
        """The netkit image this lab was started with (recorded on the lab network)."""
        if self._images is not None:
            return self._images.netkit
        with docker_errors(f"cannot list the networks of lab {self.project!r}"):
            networks = self.docker.networks.list(
                filters={"label": f"{PROJECT_LABEL}={self.project}"}
            )
        for network in networks:
            image = network.attrs.get("Labels", {}).get(NETKIT_LABEL)
            if image:
                return str(image)
        return self.build().netkit

    # ------------------------------------------------------------------ helpers

    def start_helper(
        self,
        service: str,
        argv: Sequence[str],
        *,
        role: str,
        caps: Sequence[str] = (),
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        ready: str | None = None,
        ready_stream: Stream = "both",
        ready_timeout: float = 30.0,
        volumes: VolumeAccess | None = None,
    ) -> DockerHelper:
        """Start ``argv`` in a netkit helper joined to ``service``'s network namespace.

        The one place a helper container is started: the netkit image (only
        helpers get ``caps`` such as NET_ADMIN, the services never do), the
        project and ``role`` labels on top of ``labels`` (so ``lab down`` and
        :meth:`helpers` find it), and, with ``ready``, a wait until it runs and
        logs that text; a helper that does not get ready is removed before
        :class:`~lab.errors.HelperNotReady` is raised. With ``volumes`` (``"ro"``
        or ``"rw"``) the helper also mounts the service's volumes at their paths.
        """
        options = helper_run_options(
            project=self.project,
            role=role,
            target_id=self.container(service).id,
            caps=caps,
            name=name,
            labels=labels,
            volumes=volumes,
        )
        with docker_errors(f"cannot start a {role} helper in {service}"):
            helper = DockerHelper(
                self.docker.containers.run(self.netkit_image, list(argv), **options)
            )
        if ready is not None:
            with helper_removed_on_error(helper):
                wait_for_log(helper, ready, timeout=ready_timeout, stream=ready_stream)
        return helper

    def helpers(self, role: str) -> list[DockerHelper]:
        """This lab's helpers of ``role``, running or not."""
        labels = [f"{PROJECT_LABEL}={self.project}", f"{ROLE_LABEL}={role}"]
        with docker_errors(f"cannot list the {role} helpers of lab {self.project!r}"):
            found = self.docker.containers.list(all=True, filters={"label": labels})
        return [DockerHelper(container) for container in found]

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
        target = self.container(service).id
        kwargs: dict[str, Any] = {"demux": True, "environment": dict(env or {})}
        if user is not None:
            kwargs["user"] = user
        with docker_errors(f"exec in {service} failed"):
            container = self._exec_docker.containers.get(target)
            exit_code, (out, err) = container.exec_run(wrap_with_timeout(argv, timeout), **kwargs)
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
        caps = ["NET_ADMIN", "NET_RAW"] if net_admin else ["NET_RAW"]
        argv = wrap_with_timeout(argv, timeout)
        with self.start_helper(service, argv, role=NETKIT_RUN_ROLE, caps=caps) as helper:
            try:
                exit_code = helper.wait(timeout=timeout + NETKIT_WAIT_GRACE)
            except CommandTimeout as exc:
                raise CommandTimeout(f"netkit command in {service} did not finish: {exc}") from exc
            out = helper.logs(stdout=True, stderr=False)
            err = helper.logs(stdout=False, stderr=True)
        return ExecResult(exit_code=exit_code, stdout=out, stderr=err)

    def read_file(self, service: str, path: str) -> bytes:
        """Read one (small) file out of a service container."""
        container = self.container(service)
        try:
            with docker_errors(f"cannot copy {service}:{path}"):
                chunks, _ = container.get_archive(path)
                data = b"".join(chunks)
        except DockerNotFound as exc:
            raise DockerNotFound(f"{service}:{path} does not exist") from exc
        return single_file(data, what=f"{service}:{path}")

    def file_sha256(self, service: str, path: str, *, timeout: float = 300.0) -> str:
        """SHA-256 of a file inside a service container, computed there (any size)."""
        result = self.exec(service, ["sha256sum", path], timeout=timeout).check(
            f"sha256sum {service}:{path}"
        )
        return result.stdout.split()[0]

    def _act(self, service: str, action: str) -> None:
        container = self.container(service)
        with docker_errors(f"cannot {action} {service}"):
            getattr(container, action)()

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


if TYPE_CHECKING:
    # mypy proves the Docker implementation has the shape the runners depend on.
    def _is_a_lab(lab: Lab) -> interface.Lab:
        return lab

    def _is_a_helper(helper: DockerHelper) -> interface.HelperContainer:
        return helper
