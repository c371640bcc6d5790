"""Partitions beyond pairs: group A from group B, one service from all the others, and heal.

Pure. A partition is, as for a pair (:func:`lab.shaping.builders.partition_steps`),
a DROP of everything arriving from each peer, in every member's own
namespace, so both sides wait for their timeouts as on a real cut. A plan
holds the steps per service; the runner runs each service's steps in its
namespace. :func:`partition_groups` reads the rules in force back into
groups for ``lab status``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lab.shaping.builders import Step, chain_steps, delete_rule, ensure_rule, partition_rule
from lab.shaping.errors import ShapingError


@dataclass(frozen=True)
class PartitionPlan:
    """Steps per service namespace, and the pairs they cut (or heal), each as (a, b) with a < b."""

    steps: Mapping[str, tuple[Step, ...]]
    pairs: tuple[tuple[str, str], ...]
    side_a: tuple[str, ...]
    side_b: tuple[str, ...]

    def describe(self) -> str:
        return f"{', '.join(self.side_a)} <-> {', '.join(self.side_b)}"


def parse_group(text: str) -> tuple[str, ...]:
    """``client,rss-poller`` -> ("client", "rss-poller"): a comma-separated group, in order."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ShapingError(f"{text!r}: a group names at least one service (a,b,...)")
    return names


def _check_groups(
    a: Sequence[str], b: Sequence[str], ips: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    side_a, side_b = tuple(dict.fromkeys(a)), tuple(dict.fromkeys(b))
    if not side_a or not side_b:
        raise ShapingError("a partition needs a service on each side")
    both = sorted(set(side_a) & set(side_b))
    if both:
        raise ShapingError(f"{', '.join(map(repr, both))} cannot be on both sides of a partition")
    unknown = [name for name in (*side_a, *side_b) if name not in ips]
    if unknown:
        running = ", ".join(sorted(ips)) or "none"
        raise ShapingError(f"no running service {unknown[0]!r} (running: {running})")
    return side_a, side_b


def _pairs(a: Iterable[str], b: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({(min(x, y), max(x, y)) for x in a for y in b}))


def group_partition(a: Sequence[str], b: Sequence[str], ips: Mapping[str, str]) -> PartitionPlan:
    """Cut every service of ``a`` off from every service of ``b`` (both directions).

    ``ips``: running service -> IPv4 address. Members of one side still
    reach each other and everyone outside both sides.
    """
    side_a, side_b = _check_groups(a, b, ips)
    steps = {}
    for members, peers in ((side_a, side_b), (side_b, side_a)):
        for member in members:
            rules = [ensure_rule(partition_rule(ips[peer])) for peer in peers]
            steps[member] = (*chain_steps(), *rules)
    return PartitionPlan(steps=steps, pairs=_pairs(side_a, side_b), side_a=side_a, side_b=side_b)


def group_heal(a: Sequence[str], b: Sequence[str], ips: Mapping[str, str]) -> PartitionPlan:
    """Undo :func:`group_partition` of the same groups (rules that are absent are skipped)."""
    side_a, side_b = _check_groups(a, b, ips)
    steps = {}
    for members, peers in ((side_a, side_b), (side_b, side_a)):
        for member in members:
            steps[member] = tuple(delete_rule(partition_rule(ips[peer])) for peer in peers)
    return PartitionPlan(steps=steps, pairs=_pairs(side_a, side_b), side_a=side_a, side_b=side_b)


def _others(target: str, ips: Mapping[str, str]) -> tuple[str, ...]:
    if target not in ips:
        raise ShapingError(f"no running service {target!r} (running: {', '.join(sorted(ips))})")
    others = tuple(sorted(name for name in ips if name != target))
    if not others:
        raise ShapingError(f"nothing to isolate {target!r} from: it is the only running service")
    return others


def isolate(target: str, ips: Mapping[str, str]) -> PartitionPlan:
    """``--isolate X``: X cut off from every other running service."""
    return group_partition([target], _others(target, ips), ips)


def heal_isolation(target: str, ips: Mapping[str, str]) -> PartitionPlan:
    return group_heal([target], _others(target, ips), ips)


@dataclass(frozen=True)
class PartitionGroup:
    """A cut in force as ``lab status`` shows it: ``a <-> b``, ``x isolated``, or one-way."""

    side_a: tuple[str, ...]
    side_b: tuple[str, ...]
    isolated: bool = False
    one_way: bool = False

    def describe(self) -> str:
        if self.isolated:
            return f"{self.side_a[0]} isolated"
        arrow = "drops" if self.one_way else "<->"
        return f"{', '.join(self.side_a)} {arrow} {', '.join(self.side_b)}"


def partition_groups(
    drops: Mapping[str, Collection[str]], services: Collection[str]
) -> list[PartitionGroup]:
    """Group the DROP rules in force (service -> peers it drops) into partitions.

    A service cut both ways from every other running one (of three or more)
    is "isolated";
    otherwise services cut from the same set of peers form one side and that
    set the other. A drop with no matching drop back is shown one-way.
    """
    running = set(services)
    cut = {s: {p for p in peers if p in running and p != s} for s, peers in drops.items()}
    both = {s: {p for p in peers if s in cut.get(p, set())} for s, peers in cut.items()}
    groups: list[PartitionGroup] = []
    # with two services a cut is a pair, not an isolation
    isolated = {s for s, peers in both.items() if len(running) > 2 and peers == running - {s}}
    groups += [
        PartitionGroup((s,), tuple(sorted(running - {s})), isolated=True) for s in sorted(isolated)
    ]
    rest = {s: peers - isolated for s, peers in both.items() if s not in isolated}
    seen: set[frozenset[frozenset[str]]] = set()
    by_peers: dict[frozenset[str], list[str]] = {}
    for service, peers in sorted(rest.items()):
        if peers:
            by_peers.setdefault(frozenset(peers), []).append(service)
    for peer_set, members in by_peers.items():
        key = frozenset({frozenset(members), peer_set})
        if key not in seen:
            seen.add(key)
            groups.append(PartitionGroup(tuple(sorted(members)), tuple(sorted(peer_set))))
    for service, peers in sorted(cut.items()):
        for peer in sorted(peers - both.get(service, set())):
            groups.append(PartitionGroup((service,), (peer,), one_way=True))
    return groups
