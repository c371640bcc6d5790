"""``lab watch``'s model: parsers of what the lab reports, rates, the rich view, the plain line."""

from __future__ import annotations

import io

from rich.console import Console

from lab.report.watch import (
    ChatState,
    LinkCounters,
    RuleCounters,
    ServiceState,
    ShapedLink,
    TcCounters,
    UdpCounters,
    WatchSnapshot,
    link_counters,
    link_rates,
    parse_iptables_counters,
    parse_shaper_stats,
    parse_tc_stats,
    plain_line,
    render,
    udp_counters,
)

# As `tc -s class show dev eth0` and `tc -s qdisc show dev eth0` print them (iproute2 6.x).
TC_OUTPUT = """\
class htb 1:3 root leaf 4: prio 0 rate 10Mbit ceil 10Mbit burst 1600b cburst 1600b
 Sent 123456 bytes 789 pkt (dropped 4, overlimits 17 requeues 0)
 backlog 0b 0p requeues 0
 lended: 789 borrowed: 0 giants: 0
 tokens: 20000 ctokens: 20000

qdisc htb 1: root refcnt 2 r2q 10 default 0 direct_packets_stat 12 direct_qlen 1000
 Sent 200000 bytes 1000 pkt (dropped 4, overlimits 17 requeues 0)
 backlog 0b 0p requeues 0
qdisc netem 4: parent 1:3 limit 1000 delay 5ms loss 2%
 Sent 120000 bytes 770 pkt (dropped 15, overlimits 0 requeues 0)
 backlog 0b 0p requeues 0
"""
IPTABLES_OUTPUT = """\
-N SOCKETLAB
-A SOCKETLAB -m mark --mark 0x50c1 -c 3 180 -j RETURN
-A SOCKETLAB -s 172.18.0.3/32 -c 5120 7340032 -j NFQUEUE --queue-num 3 --queue-bypass
"""
SHAPER_LOG = """\
event=shaper_started queue=3 impairment=Impairment(delay=0.005, loss=0.02)
event=shaper_stats queue=3 held=2 received=100 dropped=2 duplicated=0 corrupted=0 \
reordered=1 released=97 injected=0 untouchable=0
event=shaper_stats queue=3 held=5 received=5120 dropped=101 duplicated=3 corrupted=0 \
reordered=7 released=5014 injected=3 untouchable=0
event=shaper_stats queue=9 held=0 received=1 dropped=0 duplicated=0 corrupted=0 \
reordered=0 released=1 injected=0 untouchable=0
"""


def test_tc_statistics_by_class_and_qdisc() -> None:
    stats = parse_tc_stats(TC_OUTPUT)
    assert stats["class 1:3"] == TcCounters(bytes=123456, packets=789, dropped=4, overlimits=17)
    assert stats["qdisc 4:"].dropped == 15
    assert stats["qdisc 1:"].packets == 1000
    assert parse_tc_stats("garbage\n Sent 1 bytes 1 pkt (dropped 0, overlimits 0)") == {}


def test_nfqueue_rule_counters_by_source() -> None:
    assert parse_iptables_counters(IPTABLES_OUTPUT) == {
        "172.18.0.3": RuleCounters(packets=5120, bytes=7340032, queue=3)
    }


def test_the_last_shaper_stats_line_per_queue_wins() -> None:
    stats = parse_shaper_stats(SHAPER_LOG)
    assert stats[3]["dropped"] == 101
    assert stats[3]["held"] == 5
    assert stats[9]["received"] == 1
    assert parse_shaper_stats("event=shaper_stats held=1") == {}


def test_link_counters_per_engine() -> None:
    stats = parse_tc_stats(TC_OUTPUT)
    netem = link_counters(tc_class=stats["class 1:3"], netem=stats["qdisc 4:"])
    assert (netem.packets, netem.bytes, netem.dropped) == (789, 123456, 19)
    assert netem.sources == ("tc htb class", "netem qdisc")
    loop = parse_shaper_stats(SHAPER_LOG)[3]
    rule = parse_iptables_counters(IPTABLES_OUTPUT)["172.18.0.3"]
    nfqueue = link_counters(rule=rule, loop=loop)
    assert (nfqueue.packets, nfqueue.bytes, nfqueue.dropped) == (5120, 7340032, 101)
    assert (nfqueue.duplicated, nfqueue.reordered, nfqueue.held) == (3, 7, 5)
    assert link_counters() == LinkCounters()


def test_udp_counters_from_the_listener_stats() -> None:
    stats = {
        "datagrams": 1000,
        "valid": 990,
        "lost": 12,
        "reordered": 2,
        "duplicates": 1,
        "kernel_drops": 3,
        "session_count": 2,
        "foreign": "x",
        "sessions": [],
    }
    assert udp_counters(stats) == UdpCounters(
        datagrams=1000, valid=990, lost=12, reordered=2, duplicates=1, kernel_drops=3, sessions=2
    )
    assert udp_counters({"valid": True}).valid == 0  # a boolean is not a count


def snapshot(
    at: float, packets: int, *, name: str = "client -> server", **extra: object
) -> WatchSnapshot:
    values: dict[str, object] = {
        "services": (
            ServiceState(service="server", state="running", health="healthy", ip="172.18.0.2"),
            ServiceState(service="client", state="running", health="healthy", ip="172.18.0.3"),
        ),
        "links": (
            ShapedLink(
                link=name,
                shaping="delay=5ms loss=2%",
                engine="nfqueue",
                state="active",
                counters=LinkCounters(packets=packets, bytes=packets * 1000, dropped=packets // 50),
            ),
        ),
        "udp": UdpCounters(datagrams=packets, valid=packets, lost=packets // 50),
    }
    return WatchSnapshot(at=at, **(values | extra))  # type: ignore[arg-type]


def test_rates_from_two_snapshots_and_none_after_a_reset() -> None:
    rates = link_rates(snapshot(11.0, 1100), snapshot(10.0, 100))
    rate = rates["client -> server"]
    assert rate.packets_per_second == 1000
    assert rate.bits_per_second == 8_000_000
    assert rate.drops_per_second == 20
    reset = link_rates(snapshot(11.0, 5), snapshot(10.0, 100))["client -> server"]
    assert reset.packets_per_second is None
    assert link_rates(snapshot(11.0, 5), None) == {}


def shown(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_the_live_view_shows_counters_and_rates() -> None:
    screen = shown(
        render(
            snapshot(11.0, 1100, chat=ChatState(participants=("alice", "bob"))), snapshot(10.0, 100)
        )
    )
    assert "client -> server" in screen
    assert "1,100" in screen
    assert "1.1 MB" in screen
    assert "1,000 pkt/s 8.0 Mbit/s" in screen
    assert "chat: 2 participant(s): alice, bob" in screen
    assert "healthy" in screen


def test_names_from_the_lab_are_not_markup() -> None:
    hostile = "[bold red]mallory[/] \x1b[2J"
    screen = shown(
        render(
            snapshot(
                1.0, 1, name=hostile, chat=ChatState(participants=(hostile,)), problems=(hostile,)
            )
        )
    )
    assert "[bold red]mallory[/]" in screen
    assert "\x1b" not in screen


def test_plain_line_is_one_line_with_what_changed() -> None:
    line = plain_line(snapshot(11.0, 1100), snapshot(10.0, 100))
    assert "\n" not in line
    assert "services 2/2 ok" in line
    assert "client -> server [nfqueue] pkts=1,100 bytes=1,100,000 dropped=22 (1,000 pkt/s)" in line
    assert "udp valid=1,100 lost=22" in line
    down = snapshot(
        12.0,
        1,
        name="a\nb",
        services=(ServiceState(service="server", state="exited", health="unhealthy"),),
        problems=("udp-listener stats: timed out\nsecond line",),
    )
    text = plain_line(down)
    assert "\n" not in text
    assert "services 0/1 ok (not ok: server)" in text
    assert "! udp-listener stats: timed out second line" in text
