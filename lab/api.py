"""The lab controller's Python API: one :class:`Lab` per Compose project.

``Lab`` brings the lab up and down through the Compose CLI, and inspects and
drives its containers through the Docker SDK::

    lab = Lab(project="socketlab")
    lab.up()                                   # build images if needed, start, wait healthy
    lab.exec("client", ["socketlab", "client", "hello"], timeout=30)
    lab.down()                                 # remove everything labelled with the project

The project is any Compose project: its files are ``-f`` files (``compose_files``),
else ``SOCKETLAB_COMPOSE_FILE``, else the project folder's ``compose.lab.yml``
(made by ``lab init``) or the checkout's ``docker-compose.yml`` (and its
override); :mod:`lab.project` says which folder that is. What it declares
comes from Compose's normalised config and its containers' labels
(:meth:`Lab.topology`, :mod:`lab.topology`); names such as ``client.2`` are
resolved by :mod:`lab.addressing`.

Every container, network and volume the lab creates carries the label
``io.socketlab.project=<project>`` (``lab up`` adds it through its own
override, :mod:`lab.overlay`); ``down`` removes by that label, so helper
containers started outside Compose are cleaned up too.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from docker import DockerClient

from lab import engine
from lab.addressing import UnknownTarget
from lab.compose import Compose, ProjectFiles, detect_compose_command, project_files
from lab.config import LabConfig
from lab.credentials import SECRET_VOLUMES, secret_files, secrets_tar, volume_labels
from lab.doctor import require_prerequisites
from lab.engine import docker_errors
from lab.errors import (
    CommandTimeout,
    DockerNotFound,
    LabError,
    NotReady,
    ServiceBlocked,
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
from lab.images import ImageNames, ImageSet, ensure_images, find_inputs, tag_stable_names
from lab.interface import TIMEOUT_EXIT_CODE, ExecResult, ServiceStatus, VolumeAccess
from lab.orchestrator import Action, Orchestrator, orchestrator_for
from lab.overlay import NETKIT_LABEL
from lab.progress import Progress
from lab.project import Project, find_project, project_at, project_secret
from lab.topology import (
    Family,
    Instance,
    ProjectModel,
    Topology,
    build_topology,
    model_from_config,
)
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
    "UnknownTarget",
    "admin_token",
    "find_repo_root",
    "pickle_key",
    "single_file",
    "wrap_with_timeout",
]

log = logging.getLogger("lab")

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
DEFAULT_PROJECT = "socketlab"
HEALTH_POLL = 0.5
NETKIT_RUN_ROLE = "netkit-run"
SECRETS_ROLE = "secrets"
# How much longer than its command's own timeout we wait for a netkit helper to end.
NETKIT_WAIT_GRACE = 30.0
# Compose turns project names into resource names: keep them to what it accepts.
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _quiet(message: str) -> None:
    log.info("event=progress %s", message)


def find_repo_root(start: Path | None = None, *, configured: Path | None = None) -> Path:
    """The project folder ``lab`` acts on (:func:`lab.project.find_project`)."""
    return find_project(start, configured=configured).root


def _project(project: Project | Path) -> Project:
    # A plain folder is taken as a checkout (its ``build/``).
    return project if isinstance(project, Project) else Project(root=project, checkout=True)


def pickle_key(project: Project | Path, *, configured: str | None = None) -> str:
    """The HMAC key the signed-pickle demo's two ends share.

    ``configured`` (``SOCKETLAB_PICKLE_KEY``) wins; empty disables pickle
    altogether. Otherwise a random key made once per project in its state
    folder (``build/pickle-key`` of the checkout, ``.socketlab/pickle-key``
    elsewhere; mode 0600, :func:`lab.project.project_secret`), so the demo works
    in any lab started from there while the key never appears in the repository
    and stays the same across ``lab up`` runs. It reaches only ``server`` and
    ``client``, as a read-only file (:mod:`lab.credentials`), never through the
    environment.
    """
    if configured is not None:
        return configured
    return project_secret(_project(project), "pickle-key")


def admin_token(project: Project | Path, *, configured: str | None = None) -> str:
    """The lab's admin token: feed writes, schedules and faults, and the UDP reset need it.

    ``configured`` (``SOCKETLAB_ADMIN_TOKEN``) wins; otherwise a random token
    made once per project in its state folder (``admin-token``, mode 0600),
    like the pickle key. It reaches ``server``, ``udp-listener`` and ``client``
    only, as a read-only file; ``lab feed`` and scenarios run the commands that
    read it there.
    """
    if configured:
        return configured
    return project_secret(_project(project), "admin-token")


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
        compose_files: Sequence[str | Path] = (),
    ) -> None:
        self.config = config if config is not None else LabConfig.from_env()
        self._compose_files = tuple(compose_files)
        self.project = project or self.config.project or DEFAULT_PROJECT
        if not PROJECT_NAME.match(self.project):
            raise LabError(
                f"project name {self.project!r} must be lowercase letters, digits, '-' or '_'"
            )
        if repo_root is not None:
            self.project_info = project_at(repo_root) or Project(root=repo_root, checkout=True)
        else:
            self.project_info = find_project(configured=self.config.root)
        # The project's folder (scenarios/, the state folder); a checkout or a `lab init` one.
        self.repo_root = self.project_info.root
        self.progress = progress
        self._images: ImageSet | None = None

    # ------------------------------------------------------------------ plumbing

    @cached_property
    def docker(self) -> DockerClient:
        return engine.connect(host=self.config.docker_host)

    @cached_property
    def exec_docker(self) -> DockerClient:
        # exec calls block for the whole command: their HTTP timeout must be long;
        # the command itself is bounded by coreutils `timeout` inside the container.
        return engine.connect(
            lambda: docker.from_env(timeout=24 * 3600), host=self.config.docker_host
        )

    @cached_property
    def orchestrator(self) -> Orchestrator:
        """What runs the services: Compose on one engine, or a stack on a Swarm
        (``SOCKETLAB_ORCHESTRATOR``, ``lab --swarm``; see :mod:`lab.orchestrator`)."""
        return orchestrator_for(self, self.config.orchestrator)

    @cached_property
    def project_files(self) -> ProjectFiles:
        """The project's Compose files (``-f``, ``SOCKETLAB_COMPOSE_FILE`` or the default)."""
        return project_files(
            self._compose_files,
            configured=self.config.compose_file,
            default_dir=self.repo_root,
            default_file=self.project_info.default_file,
        )

    @cached_property
    def compose_file(self) -> Path:
        return self.project_files.main

    @cached_property
    def _compose_command(self) -> tuple[str, ...]:
        return tuple(detect_compose_command(override=self.config.compose))

    @cached_property
    def compose_version(self) -> int:
        """Compose's major version: 2 reads the config as JSON, 1 as YAML."""
        return self.compose().major_version()

    @cached_property
    def model(self) -> ProjectModel:
        """What the project declares, from Compose's normalised config (read once)."""
        data = self.compose().config(major=self.compose_version)
        return model_from_config(data, project=self.project)

    @property
    def services(self) -> list[str]:
        """Service names, dependencies first (see :class:`lab.topology.ProjectModel`)."""
        return list(self.model.service_names)

    def compose(self, images: ImageSet | None = None, *, extra: Sequence[Path] = ()) -> Compose:
        env = {"COMPOSE_PROJECT_NAME": self.project}
        if images is not None:
            env |= {"SOCKETLAB_IMAGE": images.runtime, "SOCKETLAB_NETKIT_IMAGE": images.netkit}
        files = self.project_files.files
        return Compose(
            project=self.project,
            compose_file=files[0],
            extra_files=(*files[1:], *extra),
            command=self._compose_command,
            env=env,
        )

    # ------------------------------------------------------------------ lifecycle

    def build(self) -> ImageSet:
        """Build (or reuse) the images for the current sources; tag them
        ``socketlab/runtime:latest`` and ``socketlab/base:latest`` too, so a
        project's own Dockerfile can start ``FROM`` them and build offline."""
        builder = self.orchestrator.build_engine()
        self._images = ensure_images(
            builder,
            find_inputs(self.config.images),
            progress=self.progress,
            config=self.config.images,
        )
        tag_stable_names(builder, self._images, ImageNames(namespace=self.config.images.namespace))
        return self._images

    def up(
        self, *, timeout: float = 180.0, scale: Mapping[str, int] | None = None
    ) -> list[ServiceStatus]:
        """Build images if needed, start every service (``scale``: replicas per service,
        as ``compose up --scale``), install the routers' routes and each service's TCP
        congestion control (``x-socketlab.tcp_congestion``), wait until all are ready.

        The Compose files are read first: a file Compose rejects, or a ``scale``
        of an unknown service, changes nothing.
        """
        # a missing prerequisite stops here with lab doctor's row
        require_prerequisites(config=self.config)
        self.orchestrator.prepare()  # a Swarm that is none says so before any build
        model = self.model
        scale = dict(scale or {})
        for name, replicas in scale.items():
            model.service(name)
            if replicas < 0:
                raise LabError(f"--scale {name}={replicas}: replicas cannot be below 0")
        images = self.build()
        self._images = self.orchestrator.start(model, images=images, scale=scale, timeout=timeout)
        if model.routers:
            from lab.routing import ensure_routes  # noqa: PLC0415 - routing imports shaping

            for route in ensure_routes(self):
                self.progress(f"route in {route.instance}: {route.destination} via {route.via}")
        if any(service.tcp_congestion for service in model.services):
            # after the routes: the setting is per route (lab.congestion)
            from lab.congestion import ensure_congestion  # noqa: PLC0415 - imports shaping

            applied = ensure_congestion(self)
            shown = ", ".join(f"{name} {algorithm}" for name, algorithm in applied.items())
            self.progress(f"TCP congestion control: {shown}")
        self.wait_healthy(timeout=timeout)
        return self.status()

    def install_secrets(self, runtime_image: str, *, engine: Any | None = None) -> None:
        """Write the pickle key and admin token into the per-service secrets volumes.

        Done before the services start (Compose and stack deploy adopt the
        volumes by name), from a container that is created but never started
        (no network), so the files are owned by the service user whatever the
        host user is. ``engine``: a Swarm node's engine (default: this lab's).
        """
        client = engine if engine is not None else self.docker
        files = secret_files(
            pickle_key=pickle_key(self.project_info, configured=self.config.pickle_key),
            admin_token=admin_token(self.project_info, configured=self.config.admin_token),
        )
        mounts = {
            f"{self.project}_{volume}": {"bind": f"/secrets/{volume}", "mode": "rw"}
            for volume in SECRET_VOLUMES
        }
        with docker_errors(f"cannot install the secrets of lab {self.project!r}"):
            for volume in SECRET_VOLUMES:
                name = f"{self.project}_{volume}"
                if not client.volumes.list(filters={"name": f"^{name}$"}):
                    labels = volume_labels(
                        project=self.project, volume=volume, project_label=PROJECT_LABEL
                    )
                    client.volumes.create(name=name, labels=labels)
            writer = client.containers.create(
                runtime_image,
                ["true"],
                user="0:0",
                network_mode="none",
                volumes=mounts,
                labels={PROJECT_LABEL: self.project, ROLE_LABEL: SECRETS_ROLE},
            )
            try:
                for volume, content in files.items():
                    writer.put_archive(f"/secrets/{volume}", secrets_tar(content))
            finally:
                writer.remove(force=True)

    def down(self) -> dict[str, int]:
        """Remove the project's containers, networks and volumes; return counts removed."""
        removed = self.orchestrator.remove()
        left = self.remove_labelled()
        return {key: removed.get(key, 0) + left.get(key, 0) for key in {**removed, **left}}

    def remove_labelled(self) -> dict[str, int]:
        """Remove whatever still carries this project's label (helpers, strays)."""
        removed = {"containers": 0, "networks": 0, "volumes": 0}
        filters = {"label": f"{PROJECT_LABEL}={self.project}"}
        compose_filters = {"label": f"{COMPOSE_PROJECT_LABEL}={self.project}"}
        for client in self.orchestrator.engines():
            with docker_errors(f"cannot list what lab {self.project!r} left"):
                containers = {
                    c.id: c
                    for f in (filters, compose_filters)
                    for c in client.containers.list(all=True, filters=f)
                }
                networks = {
                    n.id: n
                    for f in (filters, compose_filters)
                    for n in client.networks.list(filters=f)
                }.values()
                volumes = client.volumes.list(filters=filters)
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
        """Names of anything still labelled with this project (empty after ``down``);
        networks by Compose's project label too."""
        filters = {"label": f"{PROJECT_LABEL}={self.project}"}
        compose_filters = {"label": f"{COMPOSE_PROJECT_LABEL}={self.project}"}
        left: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        for client in self.orchestrator.engines():
            with docker_errors(f"cannot list what lab {self.project!r} left"):
                left["containers"] += [
                    c.name for c in client.containers.list(all=True, filters=filters)
                ]
                left["networks"] += [
                    n.name
                    for f in (filters, compose_filters)
                    for n in client.networks.list(filters=f)
                ]
                left["volumes"] += [v.name for v in client.volumes.list(filters=filters)]
        return {kind: sorted(set(names)) for kind, names in left.items()}

    def has_files(self) -> bool:
        """Whether the project's main Compose file exists (``lab down`` works without)."""
        try:
            return self.project_files.main.is_file()
        except LabError:
            return False

    def wait_healthy(self, *, timeout: float, only: Collection[str] | None = None) -> None:
        """Poll until every container runs and is healthy (or, without a healthcheck,
        runs) and every service has one; NotReady at the deadline. ``only``: just
        these services (a Swarm deploys in waves)."""
        waiting: list[str] = []

        def all_ready() -> bool:
            topology = self.topology()
            instances = [i for i in topology.instances if only is None or i.service in only]
            present = {instance.service for instance in instances}
            waiting[:] = [
                f"{spec.name} (missing)"
                for spec in self.model.services
                if spec.replicas > 0
                and spec.name not in present
                and (only is None or spec.name in only)
            ]
            unready = [i for i in instances if not i.ready]
            waiting.extend(_waiting_for(i) for i in unready)
            blocked = [i for i in unready if i.problem]
            if blocked:
                # The orchestrator says why it cannot run (a task Swarm cannot place).
                raise ServiceBlocked(
                    "; ".join(f"{i.name}{_on_node(i)}: {i.problem}" for i in blocked)
                )
            dead = [i for i in unready if i.state in {"exited", "dead"}]
            if dead:
                # It will not get healthy by waiting: say why now.
                names = ", ".join(i.name for i in dead)
                code = dead[0].exit_code
                exited = f" (exit {code})" if code is not None else ""
                raise ServiceStopped(f"{names} stopped{exited}: {self._last_log_line(dead[0].key)}")
            return not waiting

        try:
            wait_for(all_ready, timeout=timeout, what="the lab", interval=HEALTH_POLL)
        except (ServiceStopped, ServiceBlocked):
            raise
        except NotReady as exc:
            raise NotReady(f"not healthy after {timeout:.0f} s: {', '.join(waiting)}") from exc

    def _last_log_line(self, service: str) -> str:
        try:
            lines = self.logs(service, tail=5).splitlines()
        except LabError:
            return "no logs"
        return lines[-1] if lines else "no logs"

    # ------------------------------------------------------------------ inspection

    def topology(self) -> Topology:
        """The lab now: the model from Compose and the project's containers."""
        # The engine first: when Docker is down, that is the error, said before Compose
        # is run (a second or so) only to be thrown away.
        facts = self.orchestrator.container_facts()
        return build_topology(self.model, facts)

    def instance(self, service: str) -> Instance:
        """The container ``service`` (``client``, ``client.2``) names; its first replica
        when a bare service has several."""
        return self.topology().one(service)

    def containers(self, service: str) -> list[Any]:
        """The Docker SDK containers ``service`` names (a bare service: every replica),
        by replica number, each bound to the engine that holds it (not part of the
        :class:`~lab.interface.Lab` protocol)."""
        return self.orchestrator.containers(service)

    def container(self, service: str) -> Any:
        """The Docker SDK container ``service`` names (a bare service: its first replica;
        not part of the :class:`~lab.interface.Lab` protocol: for callers that need Docker)."""
        return self.containers(service)[0]

    def ip(self, service: str, *, network: str | None = None, family: Family = 4) -> str:
        """The container's address (default: IPv4 on its first network)."""
        topology = self.topology()
        instance = topology.one(service)
        return topology.address(instance, network or topology.default_network(instance), family)

    def state(self, service: str) -> str:
        """Docker's state of the container now (running, paused, exited, ...)."""
        container = self.container(service)
        with docker_errors(f"cannot inspect {service}"):
            container.reload()
        return str(container.status)

    def started_at(self, service: str) -> str:
        """When the container last started, as Docker reports it."""
        return str(self.container(service).attrs["State"].get("StartedAt", ""))

    def status(self) -> list[ServiceStatus]:
        """One row per container of this project, services in order, replicas by number."""
        return [_status_row(instance) for instance in self.topology().instances]

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
        """The netkit image this lab was started with (recorded on its networks and
        containers by ``lab up``)."""
        if self._images is not None:
            return self._images.netkit
        filters = {"label": [f"{PROJECT_LABEL}={self.project}", NETKIT_LABEL]}
        with docker_errors(f"cannot list the networks of lab {self.project!r}"):
            containers = self.docker.containers.list(all=True, filters=filters)
            networks = self.docker.networks.list(filters=filters)
        # Compose recreates a container whose labels changed, never a network: the
        # newest container names the netkit image of the last `lab up`.
        containers.sort(key=lambda c: str(c.attrs.get("Created", "")), reverse=True)
        labelled = [c.labels for c in containers]
        labelled += [n.attrs.get("Labels") or {} for n in networks]
        for labels in labelled:
            image = labels.get(NETKIT_LABEL)
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
        cpu_shares: int | None = None,
    ) -> DockerHelper:
        """Start ``argv`` in a netkit helper joined to ``service``'s network namespace.

        The one place a helper container is started: the netkit image (only
        helpers get ``caps`` such as NET_ADMIN, the services never do), the
        project and ``role`` labels on top of ``labels`` (so ``lab down`` and
        :meth:`helpers` find it), and, with ``ready``, a wait until it runs and
        logs that text; a helper that does not get ready is removed before
        :class:`~lab.errors.HelperNotReady` is raised. With ``volumes`` (``"ro"``
        or ``"rw"``) the helper also mounts the service's volumes at their paths.
        ``cpu_shares``: the helper's CPU weight (Docker's default 1024), for
        timing-critical helpers.
        """
        target = self.container(service)
        options = helper_run_options(
            project=self.project,
            role=role,
            target_id=target.id,
            caps=caps,
            name=name,
            labels=labels,
            volumes=volumes,
            cpu_shares=cpu_shares,
        )
        # On the engine that holds the target: only it can join that namespace.
        with docker_errors(f"cannot start a {role} helper in {service}"):
            helper = DockerHelper(
                self.orchestrator.engine_of(target).containers.run(
                    self.netkit_image, list(argv), **options
                )
            )
        if ready is not None:
            with helper_removed_on_error(helper):
                wait_for_log(helper, ready, timeout=ready_timeout, stream=ready_stream)
        return helper

    def start_reaper(self, scope: str, *, run_id: str, what: str) -> interface.Reaper:
        """A reaper holding this process's connection (:func:`lab.reaper.start_reaper`)."""
        from lab.reaper import start_reaper  # noqa: PLC0415 - only runs and sessions need it

        return start_reaper(self, scope, run_id=run_id, what=what)

    def helpers(self, role: str) -> list[DockerHelper]:
        """This lab's helpers of ``role``, running or not."""
        labels = [f"{PROJECT_LABEL}={self.project}", f"{ROLE_LABEL}={role}"]
        found = []
        for client in self.orchestrator.engines():
            with docker_errors(f"cannot list the {role} helpers of lab {self.project!r}"):
                found += client.containers.list(all=True, filters={"label": labels})
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
        target = self.container(service)
        kwargs: dict[str, Any] = {"demux": True, "environment": dict(env or {})}
        if user is not None:
            kwargs["user"] = user
        with docker_errors(f"exec in {service} failed"):
            container = self.orchestrator.exec_engine(target).containers.get(target.id)
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

    def copy_to(self, source: Path, dest: str) -> str:
        """``lab cp SRC SERVICE[.N]:PATH`` (:func:`lab.access.copy_to`)."""
        from lab.access import copy_to  # noqa: PLC0415 - lab.access imports this module

        return copy_to(self, source, dest)

    def copy_from(self, source: str, dest: Path) -> list[Path]:
        """``lab cp SERVICE[.N]:PATH DEST`` (:func:`lab.access.copy_from`)."""
        from lab.access import copy_from  # noqa: PLC0415 - lab.access imports this module

        return copy_from(self, source, dest)

    def _act(self, service: str, action: Action) -> None:
        # A bare service with replicas: every one of them (a fault hits the service).
        self.orchestrator.act(service, action)

    def stop(self, service: str) -> None:
        self._act(service, "stop")

    def start(self, service: str) -> None:
        self._act(service, "start")
        self._restore_namespace(service)

    def restart(self, service: str) -> None:
        self._act(service, "restart")
        self._restore_namespace(service)

    def _restore_namespace(self, service: str) -> None:
        """A container that comes back has a fresh network namespace: put back its
        routes and TCP congestion control, as ``lab up`` put them."""
        model = self.model
        if model.routers:
            from lab.routing import ensure_routes  # noqa: PLC0415 - routing imports shaping

            ensure_routes(self)
        if any(spec.tcp_congestion for spec in model.services):
            from lab.congestion import ensure_congestion  # noqa: PLC0415 - imports shaping

            ensure_congestion(self, names=[service])

    def kill(self, service: str) -> None:
        self._act(service, "kill")

    def pause(self, service: str) -> None:
        self._act(service, "pause")

    def unpause(self, service: str) -> None:
        self._act(service, "unpause")


def _status_row(instance: Instance) -> ServiceStatus:
    ipv4 = next((a.ipv4 for a in instance.addresses if a.ipv4), None)
    return ServiceStatus(
        service=instance.name,
        state=instance.state,
        health=instance.health,
        ip=ipv4 or "-",
        container=instance.container_id[:12],
        image=instance.image,
        addresses=tuple(address.describe() for address in instance.addresses),
        restarts=instance.restarts,
        node=instance.node,
    )


def _on_node(instance: Instance) -> str:
    return f" on node {instance.node}" if instance.node else ""


def _waiting_for(instance: Instance) -> str:
    """``server (running/unhealthy: <what its healthcheck said>)``."""
    said = instance.health_output if instance.health == "unhealthy" else ""
    return f"{instance.name} ({instance.state}/{instance.health}{': ' + said if said else ''})"


if TYPE_CHECKING:
    # mypy proves the Docker implementation has the shape the runners depend on.
    def _is_a_lab(lab: Lab) -> interface.Lab:
        return lab

    def _is_a_helper(helper: DockerHelper) -> interface.HelperContainer:
        return helper
