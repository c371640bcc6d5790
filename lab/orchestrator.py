"""How a lab's services run: the :class:`Orchestrator` seam of :class:`lab.api.Lab`.

:class:`~lab.api.Lab` does everything a lab does (topology, health, exec,
helpers, faults, cleanup by label) through one orchestrator, chosen by
``SOCKETLAB_ORCHESTRATOR`` (``lab --swarm``):

* :class:`ComposeOrchestrator` (here): ``compose up`` / ``down`` on the one
  engine ``DOCKER_HOST`` names; every container is there.
* :class:`lab.swarm.orchestrator.SwarmOrchestrator`: the project as a stack on
  a Docker Swarm; each task's container lives on its node, behind that node's
  engine.

What the two differ in is small: where images are built, how services start
and go, where the project's containers are (as :class:`~lab.topology.ContainerFacts`
for the topology, and as Docker SDK containers bound to the engine that holds
them, so exec, logs, archives and helpers go to the right engine), which
engines to search for labelled leftovers, and how a fault is applied.
Everything else in ``Lab`` is shared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lab.addressing import REPLICA_NAME, parse_target, select_replicas
from lab.config import OrchestratorKind
from lab.engine import docker_errors
from lab.errors import LabError, ServiceNotFound
from lab.images import ImageSet
from lab.overlay import lab_override, override_file
from lab.topology import (
    COMPOSE_NUMBER_LABEL,
    COMPOSE_ONEOFF_LABEL,
    COMPOSE_PROJECT_LABEL,
    COMPOSE_SERVICE_LABEL,
    ContainerFacts,
    ProjectModel,
    container_facts,
)

if TYPE_CHECKING:
    from lab.api import Lab

Action = Literal["stop", "start", "restart", "kill", "pause", "unpause"]


class Orchestrator(Protocol):
    """What :class:`lab.api.Lab` needs from whatever runs its services."""

    @property
    def kind(self) -> OrchestratorKind: ...

    def prepare(self) -> None:
        """Refuse early, before anything is built (a Swarm: the engine must be a manager)."""
        ...

    def build_engine(self) -> Any:
        """The Docker client that builds (or holds) the lab's images."""
        ...

    def start(
        self,
        model: ProjectModel,
        *,
        images: ImageSet,
        scale: Mapping[str, int],
        timeout: float,
    ) -> ImageSet:
        """Start every service; return the images as the services run them."""
        ...

    def remove(self) -> dict[str, int]:
        """Remove the services and what they made; counts of what was removed."""
        ...

    def container_facts(self) -> list[ContainerFacts]:
        """Every container of the project now, wherever it runs."""
        ...

    def containers(self, service: str) -> list[Any]:
        """The SDK containers ``service`` (``client``, ``client.2``) names, by replica,
        each bound to the engine that holds it."""
        ...

    def engines(self) -> list[Any]:
        """Every engine that may hold something labelled with the project."""
        ...

    def engine_of(self, container: Any) -> Any:
        """The client of the engine that holds ``container`` (helpers start there)."""
        ...

    def exec_engine(self, container: Any) -> Any:
        """A client of ``container``'s engine with no HTTP timeout, for long execs."""
        ...

    def act(self, service: str, action: Action) -> None:
        """Apply a fault (stop, start, ...) to the containers ``service`` names."""
        ...


class ComposeOrchestrator:
    """The project as a Compose project on one engine (``DOCKER_HOST``)."""

    kind: OrchestratorKind = "compose"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def prepare(self) -> None:
        return None

    def build_engine(self) -> Any:
        return self.lab.docker

    def start(
        self,
        model: ProjectModel,
        *,
        images: ImageSet,
        scale: Mapping[str, int],
        timeout: float,
    ) -> ImageSet:
        lab = self.lab
        args = ["up", "-d", "--remove-orphans"]
        if model.has_builds:
            args.append("--build")  # a changed Dockerfile of the project is built again
        for name, replicas in sorted(scale.items()):
            args += ["--scale", f"{name}={replicas}"]
        lab.install_secrets(images.runtime)
        lab.progress(f"starting lab {lab.project!r} ({lab.project_files.describe()})")
        document = lab_override(model, project=lab.project, netkit_image=images.netkit)
        with override_file(document, project=lab.project) as extra:
            lab.compose(images, extra=(extra,)).run(*args)
        return images

    def remove(self) -> dict[str, int]:
        lab = self.lab
        if lab.has_files():
            args = ["down", "--volumes", "--remove-orphans", "--timeout", "5"]
            with contextlib.suppress(LabError):  # a file Compose rejects: remove by label
                if lab.model.has_builds:
                    args += ["--rmi", "local"]  # images Compose built for the project's services
            try:
                lab.compose().run(*args)
            except LabError as exc:
                lab.progress(f"compose down failed ({exc}); removing by label")
        return {}

    def container_facts(self) -> list[ContainerFacts]:
        lab = self.lab
        with docker_errors(f"cannot list the containers of lab {lab.project!r}"):
            containers = lab.docker.containers.list(
                all=True, filters={"label": f"{COMPOSE_PROJECT_LABEL}={lab.project}"}
            )
            return [container_facts(container.attrs) for container in containers]

    def containers(self, service: str) -> list[Any]:
        # The name as a service first: no need to ask Compose for the model then.
        found = self._labelled(service)
        if not found:
            match = REPLICA_NAME.match(service)
            if match:
                found = self._labelled(match["service"], int(match["number"]))
        if not found:
            # Say which names exist (this reads the model and the containers).
            topology = self.lab.topology()
            target = parse_target(service, self.lab.services)
            select_replicas(target, topology.running)
            raise ServiceNotFound(
                f"no container for service {service!r} in lab {self.lab.project!r}"
            )
        return sorted(found, key=lambda c: int(c.labels.get(COMPOSE_NUMBER_LABEL, "1") or 1))

    def _labelled(self, service: str, number: int | None = None) -> list[Any]:
        project = self.lab.project
        labels = [f"{COMPOSE_PROJECT_LABEL}={project}", f"{COMPOSE_SERVICE_LABEL}={service}"]
        if number is not None:
            labels.append(f"{COMPOSE_NUMBER_LABEL}={number}")
        with docker_errors(f"cannot look up {service}"):
            found = self.lab.docker.containers.list(all=True, filters={"label": labels})
        return [c for c in found if (c.labels or {}).get(COMPOSE_ONEOFF_LABEL, "False") != "True"]

    def engines(self) -> list[Any]:
        return [self.lab.docker]

    def engine_of(self, container: Any) -> Any:
        return self.lab.docker

    def exec_engine(self, container: Any) -> Any:
        return self.lab.exec_docker

    def act(self, service: str, action: Action) -> None:
        # A bare service with replicas: every one of them (a fault hits the service).
        for container in self.containers(service):
            with docker_errors(f"cannot {action} {service}"):
                getattr(container, action)()


def orchestrator_for(lab: Lab, kind: OrchestratorKind) -> Orchestrator:
    """The orchestrator ``kind`` names, for ``lab``."""
    if kind == "swarm":
        from lab.swarm.orchestrator import SwarmOrchestrator  # noqa: PLC0415 - only when asked

        return SwarmOrchestrator(lab)
    return ComposeOrchestrator(lab)


def unique(items: Sequence[Any]) -> list[Any]:
    """``items`` without repeats (by identity), in order."""
    seen: set[int] = set()
    kept = []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            kept.append(item)
    return kept
