"""What the reaper removes and resets, decided from the engine's listings (pure).

**What it can touch.** It has the Docker socket, so it could do anything the
engine can; it does only this, and only for the one project named on its
command line (``--project``), never one a connection names:

* ``session`` scope (the pytest plugin's lab, made for the session): every
  container, network and volume labelled ``io.socketlab.project=PROJECT`` or
  ``com.docker.compose.project=PROJECT`` - the lab and its helpers - and then
  itself (it runs with auto-remove). Images are never removed.
* ``run`` scope (``lab run`` on a lab that stays up): the network faults of a
  dead run. In every running container of the project's Compose services it
  starts a netkit helper joined to that container's network namespace, with
  NET_ADMIN, labelled with the project, that flushes socketlab's iptables
  chains and tc roots (the reset script the controller gave it) and ends;
  then it removes the project's shaping and other helper containers (labelled
  with the project and a helper role). The services themselves are left
  running; the reaper stays, exited, as the record of the dead run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

PROJECT_LABEL: Final = "io.socketlab.project"
ROLE_LABEL: Final = "io.socketlab.role"
COMPOSE_PROJECT_LABEL: Final = "com.docker.compose.project"
REAPER_ROLE: Final = "reaper"
RESET_ROLE: Final = "reaper-reset"
SCOPES: Final = ("session", "run")


@dataclass(frozen=True, kw_only=True)
class Container:
    """What the reaper needs of one container of the engine's listing."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: str

    @classmethod
    def from_listing(cls, item: Mapping[str, Any]) -> Container:
        names = item.get("Names") or ["?"]
        return cls(
            id=str(item.get("Id", "")),
            name=str(names[0]).lstrip("/"),
            labels=dict(item.get("Labels") or {}),
            state=str(item.get("State", "")),
        )

    def of(self, project: str) -> bool:
        labels = self.labels
        return labels.get(PROJECT_LABEL) == project or labels.get(COMPOSE_PROJECT_LABEL) == project

    @property
    def service(self) -> bool:
        """A container of one of the project's Compose services (not a helper)."""
        return COMPOSE_PROJECT_LABEL in self.labels

    @property
    def role(self) -> str:
        return self.labels.get(ROLE_LABEL, "")


def label_filters(project: str) -> list[dict[str, list[str]]]:
    """The engine filters that find the project's resources (one listing each)."""
    return [
        {"label": [f"{PROJECT_LABEL}={project}"]},
        {"label": [f"{COMPOSE_PROJECT_LABEL}={project}"]},
    ]


@dataclass(frozen=True, kw_only=True)
class RunReap:
    """The run scope's work: namespaces to reset, helpers to remove."""

    reset: tuple[Container, ...]
    remove: tuple[Container, ...]


def run_reap(project: str, containers: Sequence[Container], *, self_id: str) -> RunReap:
    """Reset every running service container's namespace; remove the project's helpers
    (not the services, not any reaper: another run's record is not ours to touch)."""
    ours = [c for c in containers if c.of(project) and not c.id.startswith(self_id)]
    reset = tuple(c for c in ours if c.service and c.state == "running")
    remove = tuple(
        c for c in ours if not c.service and c.role not in {"", "service", REAPER_ROLE, RESET_ROLE}
    )
    return RunReap(reset=_unique(reset), remove=_unique(remove))


def session_reap(
    project: str, containers: Sequence[Container], *, self_id: str
) -> tuple[Container, ...]:
    """Every container of the project but this reaper, helpers first (they stand in the
    services' namespaces)."""
    ours = _unique(tuple(c for c in containers if c.of(project) and not c.id.startswith(self_id)))
    return tuple(sorted(ours, key=lambda c: (c.service, c.name)))


def _unique(containers: tuple[Container, ...]) -> tuple[Container, ...]:
    seen: dict[str, Container] = {}
    for container in containers:
        seen.setdefault(container.id, container)
    return tuple(seen.values())


def reset_options(
    *, project: str, image: str, target_id: str, script: str, run_id: str
) -> dict[str, Any]:
    """The engine's create body of a reset helper in ``target_id``'s namespace."""
    return {
        "Image": image,
        "Cmd": ["sh", "-c", script],
        "Labels": {PROJECT_LABEL: project, ROLE_LABEL: RESET_ROLE, "io.socketlab.run": run_id},
        "HostConfig": {
            "NetworkMode": f"container:{target_id}",
            "CapAdd": ["NET_ADMIN", "NET_RAW"],
        },
    }
