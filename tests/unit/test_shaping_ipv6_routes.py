"""IPv6 and router hops in the pure builders: ip6tables twins, u32 ``ip6 dst`` filters,
subnets forwarded by a router on both sides of a link, route steps, and the status
parser reading IPv6 rules back (from output recorded in a real namespace)."""

from __future__ import annotations

import pytest

from lab.routing import route_steps
from lab.shaping.builders import (
    CHAIN,
    IP6TABLES,
    IPTABLES,
    V6_PRIO_OFFSET,
    Engine,
    chain_steps,
    egress_steps,
    heal_steps,
    ingress_steps,
    parse_status,
    partition_steps,
    probe_script,
    remove_htb_steps,
    teardown_steps,
    unshape_ingress_steps,
)
from lab.shaping.errors import ShapingError
from lab.shaping.spec import LinkSpec
from lab.topology import Route

SOURCE6, DEST6 = "fd00:5c:200::4", "fd00:5c:200::3"
SOURCE4, DEST4 = "172.31.200.4", "172.31.200.3"


def argvs(steps):  # type: ignore[no-untyped-def]
    return [step.argv for step in steps]


def test_an_ipv6_partition_uses_ip6tables_with_a_128_bit_host() -> None:
    commands = argvs(partition_steps(DEST6))
    assert (*IP6TABLES, "-t", "filter", "-A", CHAIN, "-s", f"{DEST6}/128", "-j", "DROP") in commands
    assert not any(command[0] == "iptables" for command in commands)
    assert argvs(heal_steps(DEST6)) == [
        (*IP6TABLES, "-t", "filter", "-D", CHAIN, "-s", f"{DEST6}/128", "-j", "DROP")
    ]


def test_a_dual_stack_partition_of_a_router_drops_its_address_and_what_it_forwards() -> None:
    commands = argvs(partition_steps(DEST4, DEST6, "172.31.201.0/24", "fd00:5c:201::/64"))
    drops = [c for c in commands if "-A" in c]
    assert drops == [
        (*IPTABLES, "-t", "filter", "-A", CHAIN, "-s", f"{DEST4}/32", "-j", "DROP"),
        (*IP6TABLES, "-t", "filter", "-A", CHAIN, "-s", f"{DEST6}/128", "-j", "DROP"),
        (*IPTABLES, "-t", "filter", "-A", CHAIN, "-s", "172.31.201.0/24", "-j", "DROP"),
        (*IP6TABLES, "-t", "filter", "-A", CHAIN, "-s", "fd00:5c:201::/64", "-j", "DROP"),
    ]
    # a router cut off stops forwarding too: the chain is entered from FORWARD
    assert (*IPTABLES, "-t", "filter", "-I", "FORWARD", "1", "-j", CHAIN) in commands
    assert (*IP6TABLES, "-t", "filter", "-I", "FORWARD", "1", "-j", CHAIN) in commands


def test_the_raw_chain_of_ipv6_lets_injected_copies_through() -> None:
    commands = argvs(chain_steps("raw", 6))
    assert (*IP6TABLES, "-t", "raw", "-I", "PREROUTING", "1", "-j", CHAIN) in commands
    assert any(c[:6] == (*IP6TABLES, "-t", "raw", "-I") and "RETURN" in c for c in commands)


def test_dual_stack_nfqueue_ingress_feeds_one_queue_from_both_families_and_router_subnets() -> None:
    steps = ingress_steps(
        engine=Engine.NFQUEUE,
        source_ip=SOURCE4,
        source_ip6=SOURCE6,
        source_nets=("172.31.201.0/24",),
        queue=3,
        spec=LinkSpec(delay=0.04),
    )
    rules = [c for c in argvs(steps) if "-A" in c]
    tail = ("-j", "NFQUEUE", "--queue-num", "3", "--queue-bypass")
    assert rules == [
        (*IPTABLES, "-t", "raw", "-A", CHAIN, "-s", f"{SOURCE4}/32", *tail),
        (*IP6TABLES, "-t", "raw", "-A", CHAIN, "-s", f"{SOURCE6}/128", *tail),
        (*IPTABLES, "-t", "raw", "-A", CHAIN, "-s", "172.31.201.0/24", *tail),
    ]
    removals = argvs(
        unshape_ingress_steps(
            source_ip=SOURCE4, source_ip6=SOURCE6, source_nets=("172.31.201.0/24",), queue=3
        )
    )
    assert [c[5] for c in removals] == ["-D", "-D", "-D"]
    assert [c[0] for c in removals] == ["iptables", "ip6tables", "iptables"]


def test_an_ipv6_only_link_has_no_ipv4_rule() -> None:
    steps = ingress_steps(
        engine=Engine.NFQUEUE, source_ip="", source_ip6=SOURCE6, queue=2, spec=LinkSpec(loss=0.1)
    )
    assert all(c[0] != "iptables" for c in argvs(steps))


def test_egress_filters_match_ip6_dst_at_their_own_prio_and_router_subnets() -> None:
    steps = egress_steps(
        engine=Engine.NETEM,
        dev="eth0",
        dest_ip=DEST4,
        dest_ip6=DEST6,
        dest_nets=("172.31.201.0/24", "fd00:5c:201::/64"),
        queue=5,
        spec=LinkSpec(delay=0.04),
    )
    adds = [" ".join(c) for c in argvs(steps) if c[:3] == ("tc", "filter", "add")]
    prio6 = V6_PRIO_OFFSET + 5
    assert adds == [
        f"tc filter add dev eth0 parent 1: protocol ip prio 5 u32 match ip dst {DEST4}/32 flowid 1:5",
        f"tc filter add dev eth0 parent 1: protocol ipv6 prio {prio6} u32 match ip6 dst {DEST6}/128 flowid 1:5",
        "tc filter add dev eth0 parent 1: protocol ip prio 5 u32 match ip dst 172.31.201.0/24 flowid 1:5",
        f"tc filter add dev eth0 parent 1: protocol ipv6 prio {prio6} u32 match ip6 dst fd00:5c:201::/64 flowid 1:5",
    ]
    # netem carries the delay in the class the filters point to, as for IPv4
    assert any(c[:3] == ("tc", "qdisc", "replace") and "netem" in c for c in argvs(steps))


def test_unshaping_removes_both_families_filters() -> None:
    dels = [" ".join(c) for c in argvs(remove_htb_steps(dev="eth0", queue=5))]
    assert "tc filter del dev eth0 parent 1: protocol ip prio 5" in dels
    assert f"tc filter del dev eth0 parent 1: protocol ipv6 prio {V6_PRIO_OFFSET + 5}" in dels


def test_teardown_covers_ip6tables_too() -> None:
    commands = argvs(teardown_steps(["eth0"]))
    assert (*IP6TABLES, "-t", "filter", "-F", CHAIN) in commands
    assert (*IP6TABLES, "-t", "raw", "-F", CHAIN) in commands


def test_the_probe_finds_the_device_towards_an_ipv6_peer() -> None:
    assert f"ip -o route get {DEST6}" in probe_script(DEST6)
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        probe_script("server")


def test_a_host_name_is_still_refused() -> None:
    with pytest.raises(ShapingError, match="nor an IPv6 one"):
        partition_steps("server")


# Recorded in a container's namespace: tc filter show after one IPv4 and one IPv6 filter
# for class 1:3, and ip6tables -S of a partition and a queue (2026-12, kernel 6.18).
RECORDED_STATUS = """\
%%iptables
%%raw
%%ip6tables
-N SOCKETLAB
-A SOCKETLAB -s fd00:5c:200::3/128 -j DROP
%%raw6
-N SOCKETLAB
-A SOCKETLAB -s fd00:5c:200::3/128 -j NFQUEUE --queue-num 3 --queue-bypass
%%tc
filter parent 1: protocol ip pref 3 u32 chain 0
filter parent 1: protocol ip pref 3 u32 chain 0 fh 800: ht divisor 1
filter parent 1: protocol ip pref 3 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 *flowid 1:3 not_in_hw
  match ac1fc803/ffffffff at 16
filter parent 1: protocol ipv6 pref 8195 u32 chain 0
filter parent 1: protocol ipv6 pref 8195 u32 chain 0 fh 801: ht divisor 1
filter parent 1: protocol ipv6 pref 8195 u32 chain 0 fh 801::800 order 2048 key ht 801 bkt 0 *flowid 1:3 not_in_hw
  match fd00005c/ffffffff at 24
  match 02000000/ffffffff at 28
  match 00000000/ffffffff at 32
  match 00000003/ffffffff at 36
"""


def test_status_reads_ipv6_partitions_queues_and_filters_back() -> None:
    rules = parse_status(RECORDED_STATUS)
    assert rules.drops == {"fd00:5c:200::3"}
    assert rules.queues == {"fd00:5c:200::3": 3}
    assert rules.classes == {"172.31.200.3": 3, "fd00:5c:200::3": 3}


def test_routes_replace_in_each_family() -> None:
    routes = [
        Route(
            instance="client.1",
            destination="172.21.0.0/16",
            via="172.20.0.3",
            router="router.1",
            network="net-a",
            family=4,
        ),
        Route(
            instance="client.1",
            destination="fd00:5c:201::/64",
            via="fd00:5c:200::2",
            router="router.1",
            network="net-a",
            family=6,
        ),
    ]
    assert argvs(route_steps(routes)) == [
        ("ip", "route", "replace", "172.21.0.0/16", "via", "172.20.0.3"),
        ("ip", "-6", "route", "replace", "fd00:5c:201::/64", "via", "fd00:5c:200::2"),
    ]
    mixed = Route(
        instance="x.1", destination="10.0.0.0/8", via="fd00::1", router="r.1", network="n", family=4
    )
    with pytest.raises(ShapingError, match="families differ"):
        route_steps([mixed])
