"""A stack's tasks as the lab's containers (pure): :func:`stack_facts`.

The manager alone answers for the whole stack: its services (``GET /services``),
their tasks (``GET /tasks``: node, slot, state, error, container, addresses
on each network) and the nodes' hostnames. One call each, however many nodes,
so ``lab status`` and the health waits never touch a worker; only helpers,
exec and logs go to the node that runs a task.

Each slot of a service (each node, for a global service) is one container of
the lab: its current task (desired state ``running``), else its latest one,
so a task that ended or was rejected stays visible with Swarm's reason, and a
service a ``stop`` fault scaled to 0 (:data:`STOPPED_LABEL`) shows its
shut-down tasks as exited containers, as Compose shows stopped ones.
Swarm keeps a task with a healthcheck in ``starting`` until its first passing
check, and ends it when it turns unhealthy: ``running`` is therefore healthy.
A slot's earlier tasks that ended on their own (an exit, 0 or not; a
healthcheck that turned unhealthy, which Swarm stops with SIGTERM; a
rejection) are its restarts, as Docker's ``RestartCount`` is a container's:
Swarm replaced each one. Tasks Swarm shut down itself (a service update, a
``stop`` fault, which scales the service to 0) are not. It counts the tasks
the manager still keeps (5 per slot unless ``docker swarm update
--task-history-limit`` says).

:func:`not_started` is what ``lab up`` waits for after the last wave, as
``compose up`` returns once every container runs: ``lab up`` sets routes and
congestion control in the namespaces of the tasks that run, next.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.swarm.plan import STACK_LABEL
from lab.topology import ContainerFacts, EndpointFacts, Instance, ProjectModel

# On a service ``lab`` stopped (scaled to 0, its tasks shut down, so no restart policy
# brings them back): how many replicas ``start`` scales it back to.
STOPPED_LABEL = "io.socketlab.stopped-replicas"
WAITING_STATES = frozenset({"new", "pending", "assigned", "accepted", "ready", "preparing"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})
ENDED_STATES = FAILED_STATES | {"complete"}  # ended on its own, not shut down by Swarm


@dataclass(frozen=True, kw_only=True)
class StackService:
    """One service of the stack (``GET /services``)."""

    id: str
    name: str  # the Compose service name, without the stack's prefix
    full_name: str  # Swarm's: "<stack>_<service>"
    replicas: int | None  # None for a global service
    stopped: int = 0  # the replicas it had before a lab stop scaled it to 0 (0: not stopped)

    @property
    def slots(self) -> int | None:
        """How many slots to show: its replicas, or those it had while stopped."""
        return self.stopped or self.replicas


def stack_services(services: Sequence[Mapping[str, Any]], *, project: str) -> list[StackService]:
    """The services of stack ``project`` among ``services`` (the API's documents)."""
    found = []
    prefix = f"{project}_"
    for attrs in services:
        spec = attrs.get("Spec") or {}
        labels = spec.get("Labels") or {}
        full = str(spec.get("Name") or "")
        if labels.get(STACK_LABEL) != project or not full.startswith(prefix):
            continue
        replicated = (spec.get("Mode") or {}).get("Replicated")
        replicas = int(replicated.get("Replicas", 1)) if isinstance(replicated, Mapping) else None
        stopped = str(labels.get(STOPPED_LABEL) or "")
        found.append(
            StackService(
                id=str(attrs.get("ID", "")),
                name=full.removeprefix(prefix),
                full_name=full,
                replicas=replicas,
                stopped=int(stopped) if stopped.isdigit() and replicas == 0 else 0,
            )
        )
    return found


def _order(task: Mapping[str, Any]) -> tuple[int, int, str]:
    index = int((task.get("Version") or {}).get("Index", 0))
    return (1 if task.get("DesiredState") == "running" else 0, index, str(task.get("CreatedAt")))


def _slot(task: Mapping[str, Any]) -> str:
    return str(task.get("Slot") or task.get("NodeID") or "")


def current_tasks(
    tasks: Sequence[Mapping[str, Any]], service: StackService
) -> list[tuple[int, Mapping[str, Any]]]:
    """(number, task) for each slot of ``service``: its current or latest task, by number."""
    mine = [t for t in tasks if t.get("ServiceID") == service.id]
    by_slot: dict[str, Mapping[str, Any]] = {}
    for task in mine:
        key = _slot(task)
        if service.slots is not None and int(task.get("Slot") or 0) > service.slots:
            continue  # a slot scaled away
        kept = by_slot.get(key)
        if kept is None or _order(task) > _order(kept):
            by_slot[key] = task
    if service.slots is not None:
        numbered = [(int(task.get("Slot") or 0), task) for task in by_slot.values()]
    else:  # global: one per node, numbered in node order
        ordered = sorted(by_slot.items())
        numbered = [(index + 1, task) for index, (_, task) in enumerate(ordered)]
    return sorted(numbered, key=lambda pair: pair[0])


def replaced_tasks(tasks: Sequence[Mapping[str, Any]], current: Mapping[str, Any]) -> int:
    """How many earlier tasks of ``current``'s slot ended on their own: the times Swarm
    replaced one (an unhealthy task Swarm stopped counts, whatever it exited with)."""
    return sum(
        1
        for task in tasks
        if task.get("ServiceID") == current.get("ServiceID")
        and _slot(task) == _slot(current)
        and task.get("ID") != current.get("ID")
        and str((task.get("Status") or {}).get("State") or "") in ENDED_STATES
        and _order(task) < _order(current)
    )


def _endpoints(task: Mapping[str, Any]) -> dict[str, EndpointFacts]:
    endpoints = {}
    for attachment in task.get("NetworksAttachments") or ():
        network = (attachment.get("Network") or {}).get("Spec") or {}
        name = str(network.get("Name") or "")
        ipv4 = prefix4 = ipv6 = prefix6 = None
        for cidr in attachment.get("Addresses") or ():
            address, _, prefix = str(cidr).partition("/")
            length = int(prefix) if prefix.isdigit() else None
            if ":" in address:
                ipv6, prefix6 = address, length
            else:
                ipv4, prefix4 = address, length
        if name:
            endpoints[name] = EndpointFacts(ipv4=ipv4, prefix4=prefix4, ipv6=ipv6, prefix6=prefix6)
    return endpoints


def task_state(state: str, *, healthcheck: bool) -> tuple[str, str | None]:
    """Swarm's task state -> (the container state the lab shows, its health)."""
    if state == "running":
        return "running", "healthy" if healthcheck else None
    if state == "starting":
        return "running", "starting" if healthcheck else None
    if state in WAITING_STATES:
        return state, None
    return "exited", None


def task_problem(task: Mapping[str, Any]) -> str:
    """Why a task cannot run, in Swarm's words ("" when nothing is wrong yet)."""
    status = task.get("Status") or {}
    state = str(status.get("State") or "")
    error = str(status.get("Err") or "").strip()
    if state in FAILED_STATES:
        return f"{state}: {error or status.get('Message') or 'no reason given'}"
    if state in WAITING_STATES and error:
        return f"cannot be placed: {error}" if state == "pending" else f"{state}: {error}"
    return ""


def task_facts(
    task: Mapping[str, Any],
    *,
    service: StackService,
    number: int,
    project: str,
    nodes: Mapping[str, str],
    healthcheck: bool,
    restarts: int = 0,
) -> ContainerFacts:
    """One task -> the :class:`~lab.topology.ContainerFacts` of its container
    (``restarts``: its slot's earlier tasks that ended, :func:`replaced_tasks`)."""
    status = task.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    state, health = task_state(str(status.get("State") or "?"), healthcheck=healthcheck)
    task_id = str(task.get("ID", ""))
    slot = task.get("Slot") or task.get("NodeID") or number
    node_id = str(task.get("NodeID") or "")
    return ContainerFacts(
        id=str(container.get("ContainerID") or ""),
        name=f"{service.full_name}.{slot}.{task_id}",
        project=project,
        service=service.name,
        number=number,
        state=state,
        health=health,
        image=str(spec.get("Image") or "").split("@", 1)[0],
        started_at=str(status.get("Timestamp") or "") if state == "running" else "",
        endpoints=_endpoints(task),
        node=nodes.get(node_id, node_id),
        problem=task_problem(task),
        restarts=restarts,
    )


def stack_facts(
    *,
    model: ProjectModel,
    services: Sequence[StackService],
    tasks: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, str],
) -> list[ContainerFacts]:
    """Every container of the stack (``nodes``: node ID -> hostname)."""
    declared = {spec.name: spec for spec in model.services}
    facts = []
    for service in services:
        spec = declared.get(service.name)
        if spec is None:
            continue
        shown = current_tasks(tasks, service)
        for number, task in shown:
            facts.append(
                task_facts(
                    task,
                    service=service,
                    number=number,
                    project=model.project,
                    nodes=nodes,
                    healthcheck=spec.healthcheck,
                    restarts=replaced_tasks(tasks, task),
                )
            )
        # Swarm deletes the tasks of slots scaled away once they end: a stopped
        # service's slots are shown still, as containers that exited.
        have = {number for number, _ in shown}
        for number in range(1, service.stopped + 1):
            if number not in have:
                facts.append(stopped_facts(service, number, project=model.project))
    return facts


def stopped_facts(service: StackService, number: int, *, project: str) -> ContainerFacts:
    """A slot of a service a ``stop`` scaled to 0 whose task Swarm has deleted."""
    return ContainerFacts(
        id="",
        name=f"{service.full_name}.{number}",
        project=project,
        service=service.name,
        number=number,
        state="exited",
        health=None,
        problem="stopped (scaled to 0 by lab; lab start brings it back)",
    )


def not_started(instances: Sequence[Instance], wanted: Mapping[str, int]) -> list[str]:
    """What is not running yet of ``wanted`` (service -> replicas), one phrase each (pure).

    A task whose container runs counts, healthy or not; so does one that ended or
    that Swarm cannot run (waiting cannot help: the health wait says why).
    """
    waiting = []
    for service, replicas in wanted.items():
        mine = [i for i in instances if i.service == service]
        if len(mine) < replicas:
            waiting.append(f"{service} ({len(mine)} of {replicas} tasks)")
        for instance in mine:
            settled = instance.state in {"exited", "dead"} or bool(instance.problem)
            if not settled and not (instance.state == "running" and instance.container_id):
                waiting.append(f"{instance.name} ({instance.state})")
    return waiting
