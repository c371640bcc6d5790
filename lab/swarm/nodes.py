"""Swarm nodes and the Docker endpoint of each (pure).

A helper must start *on the node that runs its target task* (it joins that
task's network namespace, which only that node's engine can do), and image
loads and ``lab exec`` go to a node's engine too. The manager's node list
(``docker node ls``) says which nodes exist; :func:`node_endpoint` says how to
reach each one:

1. ``SOCKETLAB_SWARM_NODES`` names it (by hostname or node ID);
2. it is the manager the controller already talks to (``DOCKER_HOST``);
3. ``SOCKETLAB_SWARM_NODE_HOST``, a template (``ssh://admin@{addr}``), gives one;
4. otherwise it has none: :class:`~lab.swarm.errors.NodeUnreachable` says what to set.

An engine reached that way must be the node it was asked for (:func:`check_identity`):
a swapped pair of endpoints would otherwise shape the wrong namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab.swarm.errors import NodeUnreachable


@dataclass(frozen=True, kw_only=True)
class Node:
    """One node of the Swarm, as the manager's node list describes it."""

    id: str
    hostname: str
    addr: str = ""
    role: str = "worker"  # manager | worker
    state: str = "unknown"  # ready | down | disconnected | unknown
    availability: str = "active"  # active | pause | drain
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Ready and accepting tasks: the nodes placement and image loads consider."""
        return self.state == "ready" and self.availability == "active"

    def describe(self) -> str:
        return f"{self.hostname} ({self.role}, {self.state}, {self.availability})"


def node_from_attrs(attrs: Mapping[str, Any]) -> Node:
    """One entry of the Engine API's ``GET /nodes`` -> :class:`Node`."""
    spec = attrs.get("Spec") or {}
    status = attrs.get("Status") or {}
    description = attrs.get("Description") or {}
    manager = attrs.get("ManagerStatus") or {}
    addr = str(status.get("Addr") or "")
    if addr in {"", "0.0.0.0"}:
        addr = str(manager.get("Addr") or "").rpartition(":")[0]
    return Node(
        id=str(attrs.get("ID", "")),
        hostname=str(description.get("Hostname") or attrs.get("ID", "")),
        addr=addr,
        role=str(spec.get("Role") or "worker"),
        state=str(status.get("State") or "unknown"),
        availability=str(spec.get("Availability") or "active"),
        labels={str(k): str(v) for k, v in (spec.get("Labels") or {}).items()},
    )


def sorted_nodes(nodes: Sequence[Node]) -> list[Node]:
    """Nodes in a stable order: by hostname, then ID."""
    return sorted(nodes, key=lambda node: (node.hostname, node.id))


def node_endpoint(
    node: Node,
    *,
    endpoints: Mapping[str, str],
    template: str | None,
    self_id: str,
    self_host: str,
) -> str | None:
    """The Docker endpoint of ``node`` (the precedence is the module docstring's), or None."""
    for key in (node.hostname, node.id):
        if key in endpoints:
            return endpoints[key]
    if node.id == self_id:
        return self_host
    if template is not None:
        return template.format(hostname=node.hostname, addr=node.addr, id=node.id)
    return None


def resolve_endpoint(
    node: Node,
    *,
    endpoints: Mapping[str, str],
    template: str | None,
    self_id: str,
    self_host: str,
    purpose: str,
) -> str:
    """As :func:`node_endpoint`, but a node without one is a NodeUnreachable saying
    what to set (``purpose``: what needed the node, e.g. "a shaper helper in client")."""
    found = node_endpoint(
        node, endpoints=endpoints, template=template, self_id=self_id, self_host=self_host
    )
    if found is None:
        raise NodeUnreachable(
            f"node {node.hostname} has no Docker endpoint for {purpose}: set "
            f"SOCKETLAB_SWARM_NODES={node.hostname}=tcp://HOST:PORT (or ssh://USER@HOST), "
            "or a template for every node in SOCKETLAB_SWARM_NODE_HOST"
        )
    return found


def unknown_endpoint_names(nodes: Sequence[Node], endpoints: Mapping[str, str]) -> list[str]:
    """Names in ``SOCKETLAB_SWARM_NODES`` that are no node's hostname or ID (a typo)."""
    known = {key for node in nodes for key in (node.hostname, node.id)}
    return sorted(name for name in endpoints if name not in known)


def check_identity(node: Node, url: str, info: Mapping[str, Any]) -> None:
    """The engine at ``url`` answered ``info``: it must be ``node`` itself."""
    swarm = info.get("Swarm") or {}
    answered = str(swarm.get("NodeID") or "")
    if answered != node.id:
        other = str(info.get("Name") or answered or "no Swarm node")
        raise NodeUnreachable(
            f"the engine at {url} is {other}, not node {node.hostname}: "
            "check SOCKETLAB_SWARM_NODES / SOCKETLAB_SWARM_NODE_HOST"
        )


def manager_problem(info: Mapping[str, Any], *, host: str) -> str | None:
    """Why the engine at ``host`` (its ``docker info``) cannot run a stack, or None."""
    swarm = info.get("Swarm") or {}
    state = str(swarm.get("LocalNodeState") or "inactive")
    if state != "active":
        return (
            f"the Docker engine at {host} is not a Swarm manager (Swarm: {state}): make it "
            "one with `docker swarm init` (others join with `docker swarm join`), or point "
            "DOCKER_HOST at a manager"
        )
    if not swarm.get("ControlAvailable"):
        return (
            f"the Docker engine at {host} is a Swarm worker, not a manager: point DOCKER_HOST "
            "at a manager (`docker node ls` answers there), or promote this node with "
            "`docker node promote`"
        )
    return None
