"""Partitions beyond pairs: group builders, isolate, heal, and groups read back for status."""

from __future__ import annotations

import pytest

from lab.shaping.builders import CHAIN, IPTABLES, Step, heal_steps, partition_steps
from lab.shaping.errors import ShapingError
from lab.shaping.partitions import (
    PartitionGroup,
    group_heal,
    group_partition,
    heal_isolation,
    isolate,
    parse_group,
    partition_groups,
)

IPS = {
    "client": "172.20.0.2",
    "rss-poller": "172.20.0.3",
    "server": "172.20.0.4",
    "udp-listener": "172.20.0.5",
}
FILTER = (*IPTABLES, "-t", "filter")


def drops(plan_steps: tuple[Step, ...]) -> set[str]:
    """The peers a namespace's steps DROP (iptables -A SOCKETLAB -s IP/32 -j DROP)."""
    found = set()
    for step in plan_steps:
        argv = step.argv
        if argv[len(FILTER) : len(FILTER) + 2] == ("-A", CHAIN):
            found.add(argv[argv.index("-s") + 1].removesuffix("/32"))
    return found


def test_group_a_is_cut_from_group_b_both_ways() -> None:
    plan = group_partition(["client", "rss-poller"], ["server"], IPS)
    assert set(plan.steps) == {"client", "rss-poller", "server"}
    assert drops(plan.steps["client"]) == {IPS["server"]}
    assert drops(plan.steps["rss-poller"]) == {IPS["server"]}
    assert drops(plan.steps["server"]) == {IPS["client"], IPS["rss-poller"]}
    assert plan.pairs == (("client", "server"), ("rss-poller", "server"))
    assert plan.describe() == "client, rss-poller <-> server"
    # members of one side still talk to each other; outsiders are untouched
    assert IPS["rss-poller"] not in drops(plan.steps["client"])
    assert "udp-listener" not in plan.steps


def test_a_pair_is_the_same_as_todays_partition() -> None:
    plan = group_partition(["client"], ["server"], IPS)
    assert list(plan.steps["client"]) == partition_steps(IPS["server"])
    assert list(plan.steps["server"]) == partition_steps(IPS["client"])


def test_isolate_cuts_one_service_from_everyone() -> None:
    plan = isolate("server", IPS)
    assert drops(plan.steps["server"]) == {IPS["client"], IPS["rss-poller"], IPS["udp-listener"]}
    for other in ("client", "rss-poller", "udp-listener"):
        assert drops(plan.steps[other]) == {IPS["server"]}
    assert plan.side_a == ("server",)


def test_heal_removes_exactly_the_rules_a_partition_added() -> None:
    heal = group_heal(["client", "rss-poller"], ["server"], IPS)
    assert list(heal.steps["server"]) == [
        *heal_steps(IPS["client"]),
        *heal_steps(IPS["rss-poller"]),
    ]
    assert all(step.may_fail for steps in heal.steps.values() for step in steps)
    undo = heal_isolation("server", IPS)
    assert set(undo.steps) == set(IPS)
    assert undo.pairs == isolate("server", IPS).pairs


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        pytest.param(["client"], ["client", "server"], r"^'client' cannot be on both sides",
                     id="overlap"),
        pytest.param([], ["server"], r"^a partition needs a service on each side", id="empty"),
        pytest.param(["client"], ["sever"], r"^no running service 'sever' \(running: client, ",
                     id="unknown"),
    ],
)  # fmt: skip
def test_bad_groups_are_one_line(a: list[str], b: list[str], message: str) -> None:
    with pytest.raises(ShapingError, match=message):
        group_partition(a, b, IPS)


def test_isolate_needs_someone_else() -> None:
    with pytest.raises(ShapingError, match="it is the only running service"):
        isolate("server", {"server": IPS["server"]})
    with pytest.raises(ShapingError, match="no running service 'db'"):
        isolate("db", IPS)


def test_parse_group() -> None:
    assert parse_group("client, rss-poller,client") == ("client", "rss-poller")
    with pytest.raises(ShapingError, match="at least one service"):
        parse_group(" , ")


SERVICES = tuple(IPS)


def cuts_of(plan_steps: dict[str, tuple[Step, ...]]) -> dict[str, set[str]]:
    names = {ip: name for name, ip in IPS.items()}
    return {service: {names[ip] for ip in drops(steps)} for service, steps in plan_steps.items()}


def test_status_reads_a_group_partition_back() -> None:
    plan = group_partition(["client", "rss-poller"], ["server"], IPS)
    assert partition_groups(cuts_of(dict(plan.steps)), SERVICES) == [
        PartitionGroup(("client", "rss-poller"), ("server",))
    ]


def test_status_reads_an_isolation_back() -> None:
    groups = partition_groups(cuts_of(dict(isolate("udp-listener", IPS).steps)), SERVICES)
    assert [group.describe() for group in groups] == ["udp-listener isolated"]


def test_status_shows_pairs_one_way_drops_and_two_services() -> None:
    cuts = {"client": {"server"}, "server": {"client"}, "rss-poller": {"udp-listener"}}
    assert [g.describe() for g in partition_groups(cuts, SERVICES)] == [
        "client <-> server",
        "rss-poller drops udp-listener",
    ]
    # with two services running, a cut is a pair, not two isolations
    assert [g.describe() for g in partition_groups(cuts, ("client", "server"))] == [
        "client <-> server"
    ]
    assert partition_groups({}, SERVICES) == []
