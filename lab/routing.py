"""Routes through the lab's routers, installed in each container's namespace by a helper.

:meth:`lab.topology.Topology.routes` decides which container needs which route
(pure); :func:`route_steps` turns them into ``ip route replace`` commands
(pure, idempotent); :func:`ensure_routes` runs them with a NET_ADMIN netkit
helper in each namespace, so the services themselves keep no capabilities.
A container that restarts gets a fresh namespace without the routes:
``lab up`` and the scenario runner's recovery call :func:`ensure_routes` again.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence

from lab.interface import Lab
from lab.shaping.builders import Step, render_script
from lab.shaping.errors import ShapingError
from lab.topology import Route, Topology

log = logging.getLogger("lab.routing")


def route_steps(routes: Iterable[Route]) -> list[Step]:
    """``ip [-6] route replace DEST via GW`` for each route (replace: safe to repeat)."""
    steps = []
    for route in routes:
        destination = ipaddress.ip_network(route.destination, strict=False)
        via = ipaddress.ip_address(route.via)
        if destination.version != via.version:
            raise ShapingError(f"route to {destination} via {via}: the families differ")
        family = ("-6",) if destination.version == 6 else ()
        steps.append(Step(("ip", *family, "route", "replace", str(destination), "via", str(via))))
    return steps


def routes_by_instance(topology: Topology) -> dict[str, list[Route]]:
    """Each container's routes (by key, ``service.N``), in the topology's order."""
    grouped: dict[str, list[Route]] = {}
    for route in topology.routes():
        grouped.setdefault(route.instance, []).append(route)
    return grouped


def ensure_routes(lab: Lab, topology: Topology | None = None) -> list[Route]:
    """Install every route the routers give (nothing without routers); returns them."""
    topology = topology or lab.topology()
    installed: list[Route] = []
    timeout = lab.config.shaping.netns_timeout
    for key, routes in routes_by_instance(topology).items():
        instance = topology.by_key(key)
        if instance.state != "running":
            continue
        script = render_script(route_steps(routes))
        result = lab.netkit_run(
            instance.name, ["sh", "-c", script], timeout=timeout, net_admin=True
        )
        if not result.ok:
            detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise ShapingError(f"installing routes in {instance.name} failed: {detail}")
        log.info("event=routes instance=%s count=%d", instance.name, len(routes))
        installed += routes
    return installed


def route_rows(topology: Topology, routes: Sequence[Route] | None = None) -> list[dict[str, str]]:
    """Rows for the "routes" table of ``lab status``."""
    rows = []
    for route in routes if routes is not None else topology.routes():
        instance = topology.by_key(route.instance)
        router = topology.by_key(route.router)
        rows.append(
            {
                "service": instance.name,
                "to": route.destination,
                "via": f"{router.name} ({route.via})",
                "network": route.network,
            }
        )
    return rows
