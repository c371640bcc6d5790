"""Partitions: ``partition``, ``isolate`` and ``heal``, as DROP rules in each namespace.

Each side of a cut is a group of containers; every pair across the sides is
cut on the networks they share, routers included (a router cut off stops
forwarding for the other side). ``heal`` reads the rules in force back.
"""

from __future__ import annotations

from collections.abc import Sequence

from lab.interface import Lab
from lab.shaping import builders, partitions
from lab.shaping.errors import ShapingError
from lab.shaping.helpers import rules_by_service, run_steps
from lab.shaping.links import (
    address_names,
    family_ips,
    in_families,
    resolve_links,
    running_instances,
)
from lab.topology import Family, Instance, Topology


def _cut_peers(topology: Topology, me: Instance, peer: Instance, network: str,
               families: Sequence[Family]) -> list[str]:  # fmt: skip
    """What ``me`` drops to be cut from ``peer`` on ``network``: the peer's addresses of
    ``families``, and the subnets ``me`` reaches through the peer when it is a router."""
    v4, v6 = family_ips(topology, peer, network, families)
    return [ip for ip in (v4, v6) if ip] + list(
        in_families(topology.routed_via(me, peer), families)
    )


def _sides(
    topology: Topology, a: Sequence[str], b: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two groups of names (``client``, ``client.2``) -> the running containers on each side,
    checked as :func:`lab.shaping.partitions.group_partition` checks groups."""
    running = {i.name: i.ips()[0] for i in running_instances(topology)}
    side_a = tuple(i.name for name in a for i in topology.select(name))
    side_b = tuple(i.name for name in b for i in topology.select(name))
    plan = partitions.group_partition(side_a, side_b, running)
    return plan.side_a, plan.side_b


def _isolation_sides(topology: Topology, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``target``'s containers, and every other running container."""
    mine = {i.name for i in topology.select(target)}
    others = tuple(i.name for i in running_instances(topology) if i.name not in mine)
    if not others:
        raise ShapingError(f"nothing to isolate {target!r} from: no other container runs")
    return _sides(topology, sorted(mine), others)


def partition(
    lab: Lab,
    a: str,
    b: str,
    *,
    network: str | None = None,
    family: Family | None = None,
) -> list[str]:
    """Block all traffic between ``a`` and ``b``, both directions; returns the pairs cut.

    Each side is a service, ``service.N`` or a comma-separated group of them
    (``client,rss-poller``): every container of one side is cut from every
    container of the other, while members of one side still reach each other.
    On the network each pair shares (or ``network``); both families unless
    ``family``. A router cut off also stops forwarding for the other side.
    """
    group_a, group_b = partitions.parse_group(a), partitions.parse_group(b)
    if group_a == group_b and len(group_a) == 1:
        raise ShapingError(f"cannot partition {a!r} from itself")
    topology = lab.topology()
    return _cut(lab, topology, *_sides(topology, group_a, group_b), network=network, family=family)


def isolate(
    lab: Lab, target: str, *, network: str | None = None, family: Family | None = None
) -> list[str]:
    """Cut ``target`` (every replica of a bare service) off from every other container."""
    topology = lab.topology()
    return _cut(lab, topology, *_isolation_sides(topology, target), network=network, family=family)


def _cut(
    lab: Lab,
    topology: Topology,
    side_a: Sequence[str],
    side_b: Sequence[str],
    *,
    network: str | None,
    family: Family | None,
) -> list[str]:
    """Every pair across the sides, the steps gathered into one script per namespace."""
    steps: dict[str, list[builders.Step]] = {}
    pairs = []
    for x in side_a:
        for y in side_b:
            for link, families in resolve_links(topology, x, y, network=network, family=family):
                me, peer = link.source.instance, link.dest.instance
                cut_peer = _cut_peers(topology, me, peer, link.network, families)
                cut_me = _cut_peers(topology, peer, me, link.network, families)
                steps.setdefault(me.name, []).extend(builders.partition_steps(*cut_peer))
                steps.setdefault(peer.name, []).extend(builders.partition_steps(*cut_me))
                pairs.append(f"{me.name} <-> {peer.name}")
    for name, own in steps.items():
        unique = list(dict.fromkeys(own))  # the chain steps repeat per peer
        run_steps(lab, name, unique, what=f"partitioning {name}")
    return list(dict.fromkeys(pairs))


def heal(
    lab: Lab,
    a: str | None = None,
    b: str | None = None,
    *,
    network: str | None = None,
    isolated: str | None = None,
) -> list[str]:
    """Remove the partition between ``a`` and ``b`` (services or comma-separated groups,
    as :func:`partition` takes them; every network they share, unless ``network``), the
    isolation of ``isolated``, or every partition; returns pairs."""
    if (a is None) != (b is None):
        raise ShapingError("give both services of a pair, or neither (all partitions)")
    if isolated is not None and a is not None:
        raise ShapingError("heal either a pair of groups or an isolation, not both")
    topology = lab.topology()
    names = address_names(topology)
    healed: set[str] = set()
    wanted: set[frozenset[str]] | None = None
    if a is not None and b is not None:
        group_a, group_b = partitions.parse_group(a), partitions.parse_group(b)
        if group_a == group_b and len(group_a) == 1:
            raise ShapingError(f"cannot heal {a!r} from itself")
        wanted = _cut_pairs(topology, group_a, group_b)
    elif isolated is not None:
        mine = {i.key for i in topology.select(isolated)}
        others = [i.key for i in topology.instances if i.key not in mine]
        wanted = _cut_pairs(topology, sorted(mine), others)
    for service, rules in rules_by_service(lab, topology).items():
        me = topology.instance_named(service)
        steps: list[builders.Step] = []
        for dropped_ip in sorted(rules.drops):
            peer_name = names.get(dropped_ip, dropped_ip)
            if me is not None and dropped_ip not in names:
                peer_name = _router_for(topology, me, dropped_ip) or dropped_ip
            peer = topology.instance_named(peer_name)
            pair = None if me is None or peer is None else frozenset((me.key, peer.key))
            if wanted is not None and (pair is None or pair not in wanted):
                continue
            if network is not None and not _on_network(topology, peer, dropped_ip, network, me):
                continue
            steps += builders.heal_steps(dropped_ip)
            healed.add(" <-> ".join(sorted((service, peer_name))))
        if steps:
            run_steps(lab, service, steps, what=f"healing {service}")
    return sorted(healed)


def _cut_pairs(
    topology: Topology, side_a: Sequence[str], side_b: Sequence[str]
) -> set[frozenset[str]]:
    """The container keys of every pair across two sides."""
    return {
        frozenset((x.key, y.key))
        for name_a in side_a
        for x in topology.select(name_a)
        for name_b in side_b
        for y in topology.select(name_b)
        if x.key != y.key
    }


def _router_for(topology: Topology, me: Instance, subnet: str) -> str | None:
    """The router ``me`` reaches ``subnet`` through (its name), if any."""
    for route in topology.routes():
        if route.instance == me.key and route.destination == subnet:
            return topology.by_key(route.router).name
    return None


def _on_network(
    topology: Topology, peer: Instance | None, ip: str, network: str, me: Instance | None
) -> bool:
    if peer is None:
        return False
    address = peer.address_on(network)
    if address is not None and ip in {address.ipv4, address.ipv6}:
        return True
    # a subnet behind a router: the network of the hop to the router
    return any(
        route.network == network
        for route in topology.routes()
        if me is not None and route.instance == me.key and route.destination == ip
    )
