"""Where each service runs on the Swarm (pure).

A service's own ``deploy.placement`` in the Compose file is kept as it is. With
``--spread`` the others are placed by :func:`spread`: in the model's order
(dependencies first), each single-replica service is pinned to the next
usable node (``node.id == ...``), round robin, so with at least as many nodes
as services every service has a node of its own; a service with several
replicas is not pinned but spreads its replicas over the nodes (Swarm's
``spread: node.id`` preference). Without ``--spread`` Swarm's scheduler
decides, which may put two services on one node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.swarm.errors import StackPlanError
from lab.swarm.nodes import Node, sorted_nodes


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Swarm placement of one service: constraints and spread preferences."""

    constraints: tuple[str, ...] = ()
    spread_over: tuple[str, ...] = ()  # spread descriptors, e.g. "node.id"
    node: str = ""  # the node's hostname when pinned to one (for messages)
    node_id: str = ""  # and its ID

    def deploy_entry(self) -> dict[str, Any]:
        """The ``deploy.placement`` mapping of a stack file."""
        entry: dict[str, Any] = {}
        if self.constraints:
            entry["constraints"] = list(self.constraints)
        if self.spread_over:
            entry["preferences"] = [{"spread": item} for item in self.spread_over]
        return entry


@dataclass(frozen=True, kw_only=True)
class SpreadResult:
    """What :func:`spread` decided: a placement per service, and whether nodes are shared."""

    placements: Mapping[str, Placement]
    shared: bool  # fewer usable nodes than pinned services: some share a node
    pinned_all: bool = False  # every service that runs is pinned to one node

    @property
    def nodes(self) -> frozenset[str] | None:
        """The IDs of the only nodes that will run tasks, when every task is pinned
        (images go there only); None when Swarm may use any node."""
        if not self.pinned_all:
            return None
        return frozenset(p.node_id for p in self.placements.values() if p.node_id)

    def describe(self) -> str:
        parts = [
            f"{name} -> {placement.node or 'spread over nodes'}"
            for name, placement in self.placements.items()
        ]
        return ", ".join(parts)


def spread(
    services: Sequence[tuple[str, int]],
    nodes: Sequence[Node],
    *,
    fixed: frozenset[str] = frozenset(),
) -> SpreadResult:
    """Place ``services`` (name, replicas; in deployment order) over the usable ``nodes``;
    services in ``fixed`` keep the placement their Compose file gives."""
    usable = sorted_nodes([node for node in nodes if node.usable])
    if not usable:
        described = "; ".join(node.describe() for node in nodes) or "no nodes"
        raise StackPlanError(
            f"no Swarm node is ready and active to place services on ({described})"
        )
    placements: dict[str, Placement] = {}
    pinned = 0
    pinned_all = True
    for name, replicas in services:
        if replicas < 1:
            continue
        if name in fixed:
            pinned_all = False
            continue
        if replicas > 1:
            placements[name] = Placement(spread_over=("node.id",))
            pinned_all = False
            continue
        node = usable[pinned % len(usable)]
        placements[name] = Placement(
            constraints=(f"node.id == {node.id}",), node=node.hostname, node_id=node.id
        )
        pinned += 1
    return SpreadResult(placements=placements, shared=pinned > len(usable), pinned_all=pinned_all)
