"""What a pair of names means on the lab's topology (pure).

A *link* is a pair of containers on a network they share
(:meth:`lab.topology.Topology.links`): a bare service with replicas stands for
each of them, ``--network`` picks among shared networks, and a link whose far
end is a router also carries what the router forwards. Both families are used
on a dual-stack network unless ``family`` picks one. Also the lab's addresses
by container and by network, and which containers run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from lab.shaping.builders import family_of
from lab.shaping.errors import ShapingError
from lab.topology import Family, Instance, Link, Topology


def family_ips(
    topology: Topology, instance: Instance, network: str, families: Sequence[Family]
) -> tuple[str, str]:
    """(IPv4, IPv6) of ``instance`` on ``network`` for the asked families ("" for the other)."""
    v4 = topology.address(instance, network, 4) if 4 in families else ""
    v6 = topology.address(instance, network, 6) if 6 in families else ""
    return v4, v6


def in_families(nets: Iterable[str], families: Sequence[Family]) -> tuple[str, ...]:
    return tuple(net for net in nets if family_of(net) in families)


def resolve_links(
    topology: Topology,
    source: str,
    dest: str,
    *,
    network: str | None = None,
    family: Family | None = None,
) -> list[tuple[Link, tuple[Family, ...]]]:
    """The links ``source -> dest`` names, each with the families it carries (pure)."""
    if source == dest:
        raise ShapingError(f"a link needs two different services, not {source!r} twice")
    return [
        (link, topology.families(link.network, family))
        for link in topology.links(source, dest, network=network)
    ]


def multi_network(topology: Topology) -> bool:
    return len(topology.networks) > 1


def address_names(topology: Topology) -> dict[str, str]:
    """Every address of every container (both families) -> the container's name."""
    return {ip: instance.name for instance in topology.instances for ip in instance.ips()}


def address_networks(topology: Topology) -> dict[str, str]:
    return {
        ip: address.network
        for instance in topology.instances
        for address in instance.addresses
        for ip in (address.ipv4, address.ipv6)
        if ip
    }


def running_instances(topology: Topology) -> list[Instance]:
    return [i for i in topology.instances if i.state == "running" and i.ips()]
