"""``lab status`` for shaping: helpers compared with the rules really in force.

Every namespace's rules are read once; a dead helper, a missing rule, an orphan
rule or a restarted service shows up instead of being papered over.
:func:`evaluate_links` is the pure truth table behind it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lab.interface import Lab
from lab.shaping import builders, partitions
from lab.shaping.builders import RulesInForce
from lab.shaping.helpers import Helper, list_helpers, rules_by_service
from lab.shaping.links import address_names, address_networks, multi_network, running_instances
from lab.topology import Topology


@dataclass(frozen=True, kw_only=True)
class LinkState:
    """One row of the truth about a link: what was asked and what is in force."""

    link: str
    shaping: str
    engine: str
    state: str
    helper: str
    healthy: bool
    network: str = ""
    # The kernel's drops of packets on their way to the verdict loop: the queue
    # was full, or the loop's socket buffer was ("-": no verdict loop, or none bound).
    queue_drops: str = "-"

    def as_row(self, *, with_network: bool = False) -> dict[str, str]:
        row = {"network": self.network or "-"} if with_network else {}
        return row | {
            "link": self.link,
            "shaping": self.shaping,
            "engine": self.engine,
            "state": self.state,
            "queue drops": self.queue_drops,
            "helper": self.helper,
        }


def _via_routers(topology: Topology, rules: dict[str, RulesInForce]) -> dict[str, RulesInForce]:
    """Rules on subnets behind a router, read as rules on the router's own address (so a
    cut of a router hop, or the queue of a link from it, reads as that pair)."""
    translated = {}
    for name, in_force in rules.items():
        me = topology.instance_named(name)
        hops: dict[str, str] = {}
        for route in topology.routes():
            if me is not None and route.instance == me.key:
                hops[route.destination] = route.via
        if not hops:
            translated[name] = in_force
            continue
        translated[name] = dataclasses.replace(
            in_force,
            drops=frozenset(hops.get(ip, ip) for ip in in_force.drops),
            queues={hops.get(ip, ip): queue for ip, queue in in_force.queues.items()},
        )
    return translated


def link_status(lab: Lab) -> list[LinkState]:
    """Every shaped or partitioned link, comparing helpers with the rules in force."""
    return _status(lab, lab.topology())[0]


def _status(
    lab: Lab, topology: Topology
) -> tuple[list[LinkState], list[partitions.PartitionGroup]]:
    """The links' truth table and the partitions in force, from one read of every namespace."""
    if not running_instances(topology):
        return [], []
    rules = _via_routers(topology, rules_by_service(lab, topology))
    started = {}
    for instance in running_instances(topology):
        started[instance.name] = instance.started_at
    names = address_names(topology)
    states = evaluate_links(
        list_helpers(lab, topology),
        rules,
        names,
        source_started=started,
        networks=address_networks(topology),
    )
    return states, partition_groups(rules, names)


def partition_groups(
    rules: Mapping[str, RulesInForce], names: Mapping[str, str]
) -> list[partitions.PartitionGroup]:
    """The DROP rules in force (by container) read back as groups: ``a, b <-> c``,
    ``x isolated`` (pure)."""
    drops = {
        service: {names.get(ip, ip) for ip in in_force.drops} for service, in_force in rules.items()
    }
    return partitions.partition_groups(drops, list(rules))


def evaluate_links(
    helpers: Iterable[Helper],
    rules: dict[str, RulesInForce],
    names: dict[str, str],
    *,
    source_started: dict[str, str],
    networks: Mapping[str, str] | None = None,
) -> list[LinkState]:
    """The truth table behind ``lab status``: pure, given helpers and rules.

    ``rules`` and ``source_started`` are by container name, ``names`` maps every
    address to its container's name, ``networks`` every address to its network.
    """
    states: list[LinkState] = []
    claimed: set[tuple[str, str, str]] = set()  # (service, kind, peer ip)
    networks = networks or {}
    for helper in helpers:
        problems = _helper_problems(helper, rules, source_started, claimed)
        helper_state = helper.state if helper.running else f"{helper.state} (helper dead)"
        states.append(
            LinkState(
                link=f"{helper.source} -> {helper.dest}",
                shaping=helper.spec.describe(),
                engine=str(helper.engine),
                state="; ".join(problems) if problems else "active",
                helper=f"{helper.name}: {helper_state}",
                healthy=not problems,
                network=helper.network,
                queue_drops=_queue_drops(helper, rules),
            )
        )
    for service, in_force in sorted(rules.items()):
        for ip, queue in sorted(in_force.queues.items()):
            if (service, "queue", ip) not in claimed:
                states.append(
                    _orphan(
                        names.get(ip, ip),
                        service,
                        f"NFQUEUE {queue}, no helper",
                        networks.get(ip, ""),
                    )
                )
        for ip in sorted(in_force.classes):
            if (service, "class", ip) not in claimed:
                states.append(
                    _orphan(service, names.get(ip, ip), "tc class, no helper", networks.get(ip, ""))
                )
        for ip, mss in sorted(in_force.mss.items()):
            if (service, "mss", ip) not in claimed:
                states.append(
                    _orphan(
                        service, names.get(ip, ip), f"MSS {mss}, no helper", networks.get(ip, "")
                    )
                )
    states += _partition_states(rules, names, networks)
    return states


def _helper_problems(
    helper: Helper,
    rules: dict[str, RulesInForce],
    source_started: dict[str, str],
    claimed: set[tuple[str, str, str]],
) -> list[str]:
    """What is wrong with one shaped link (empty: it is in force as asked)."""
    problems = []
    for service in {helper.source, helper.dest}:
        if service not in rules:
            problems.append(f"{service} is not running")
    if builders.needs_verdict_loop(helper.spec, helper.engine):
        queues = rules.get(helper.dest, RulesInForce()).queues
        for ip in helper.source_ips:
            claimed.add((helper.dest, "queue", ip))
        # a router's subnets read as its own address (see _via_routers)
        addresses = [ip for ip in (helper.source_ip, helper.source_ip6) if ip]
        if any(queues.get(ip) != helper.queue for ip in addresses):
            problems.append("NFQUEUE rule missing: not impaired")
        if not helper.running:
            problems.append("verdict loop down: link fails open (passes unimpaired)")
    if builders.uses_htb(helper.spec, helper.engine):
        classes = rules.get(helper.source, RulesInForce()).classes
        for ip in helper.dest_ips:
            claimed.add((helper.source, "class", ip))
        if any(classes.get(ip) != helper.queue for ip in helper.dest_ips):
            problems.append("tc class/filter missing: not shaped")
    problems += _mss_problems(helper, rules, claimed)
    if helper.started_at and source_started.get(helper.netns, "") > helper.started_at:
        problems.append(f"{helper.netns} restarted after shaping: shape again")
    return sorted(problems)


def _mss_problems(
    helper: Helper, rules: dict[str, RulesInForce], claimed: set[tuple[str, str, str]]
) -> list[str]:
    """A link with ``--mss``: its clamp in SOURCE's namespace, on every DEST address."""
    if helper.spec.mss is None:
        return []
    clamps = rules.get(helper.source, RulesInForce()).mss
    # a router's subnets carry the clamp too (they are never read as the router's address)
    for ip in (*helper.dest_ips, *helper.dest_nets):
        claimed.add((helper.source, "mss", ip))
    if any(clamps.get(ip) != helper.spec.mss for ip in helper.dest_ips):
        return ["MSS clamp missing: segments not cut"]
    return []


def _queue_drops(helper: Helper, rules: dict[str, RulesInForce]) -> str:
    """``queue full N, socket full M`` from the kernel's counters of the link's queue."""
    if not builders.needs_verdict_loop(helper.spec, helper.engine):
        return "-"
    stats = rules.get(helper.dest, RulesInForce()).queue_stats.get(helper.queue)
    if stats is None:
        return "-"
    return f"queue full {stats.queue_dropped}, socket full {stats.user_dropped}"


def _orphan(source: str, dest: str, what: str, network: str = "") -> LinkState:
    return LinkState(
        link=f"{source} -> {dest}",
        shaping="?",
        engine="?",
        state=f"orphan rule ({what}): run lab unshape",
        helper="-",
        healthy=False,
        network=network,
    )


def _partition_states(
    rules: dict[str, RulesInForce], names: dict[str, str], networks: Mapping[str, str]
) -> list[LinkState]:
    blocked: set[tuple[str, str]] = set()  # (receiver, sender) whose packets are dropped
    on: dict[frozenset[str], set[str]] = {}
    for service, in_force in rules.items():
        for ip in in_force.drops:
            peer = names.get(ip, ip)
            blocked.add((service, peer))
            if ip in networks:
                on.setdefault(frozenset((service, peer)), set()).add(networks[ip])
    states = []
    for pair in sorted({tuple(sorted(p)) for p in blocked}):
        a, b = pair
        both = (a, b) in blocked and (b, a) in blocked
        one_way = f"{b} -> {a}" if (a, b) in blocked else f"{a} -> {b}"
        states.append(
            LinkState(
                link=f"{a} <-> {b}",
                shaping="partition",
                engine="iptables",
                state="blocked both ways" if both else f"half: only {one_way} blocked",
                helper="-",
                healthy=both,
                network=", ".join(sorted(on.get(frozenset(pair), set()))),
            )
        )
    return states


def link_rows(lab: Lab) -> list[dict[str, str]]:
    """Rows for the "links" table of ``lab status`` (by network when there are several)."""
    return status_tables(lab)["links"]


def status_tables(lab: Lab) -> dict[str, list[dict[str, str]]]:
    """``lab status``'s shaping tables: "links" (by network when there are several) and
    "partitions" (groups cut from each other, isolated containers)."""
    topology = lab.topology()
    several = multi_network(topology)
    states, groups = _status(lab, topology)
    if several:
        states = sorted(states, key=lambda s: s.network)
    return {
        "links": [state.as_row(with_network=several) for state in states],
        "partitions": [
            {
                "partition": group.describe(),
                "kind": "isolated" if group.isolated else "one way" if group.one_way else "groups",
            }
            for group in groups
        ],
    }
