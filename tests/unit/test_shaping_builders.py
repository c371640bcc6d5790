"""Pure builders: tc/iptables argument lists for both engines, probes, status parsing."""

from __future__ import annotations

import subprocess

import pytest

from lab.shaping.builders import (
    CHAIN,
    IPTABLES,
    MAX_QUEUE,
    STATUS_SCRIPT,
    TBF_FIFO_MAJOR_BASE,
    TBF_MAJOR_BASE,
    Engine,
    Probe,
    Step,
    choose_engine,
    classid,
    egress_steps,
    free_queue,
    heal_steps,
    ingress_steps,
    needs_wire_size_packets,
    netem_args,
    netem_delay_line_limit,
    nfqueue_rule,
    parse_probe,
    parse_status,
    partition_steps,
    probe_script,
    render_script,
    require_engine,
    segmentation_offload_steps,
    shaper_command,
    teardown_steps,
    unshape_egress_steps,
    unshape_ingress_steps,
)
from lab.shaping.errors import ShapingError
from lab.shaping.spec import LinkSpec, spec_from_options
from socketlab.shaper.core import INJECT_MARK
from socketlab.shaper.invocation import ShaperInvocation, parse_invocation

PEER = "172.20.0.3"
SOURCE = "172.20.0.2"
FILTER = (*IPTABLES, "-t", "filter")
RAW = (*IPTABLES, "-t", "raw")


def spec(**options: str) -> LinkSpec:
    return spec_from_options(options)


def argvs(steps: list[Step]) -> list[tuple[str, ...]]:
    return [step.argv for step in steps]


def test_nfqueue_rule_matches_the_source_and_fails_open() -> None:
    assert nfqueue_rule(SOURCE, 3) == (
        "-s", "172.20.0.2/32", "-j", "NFQUEUE", "--queue-num", "3", "--queue-bypass",
    )  # fmt: skip


def both_sides(engine: Engine, queue: int, **options: str) -> tuple[list[tuple[str, ...]], ...]:
    link = spec(**options)
    egress = egress_steps(engine=engine, dev="eth0", dest_ip=PEER, queue=queue, spec=link)
    ingress = ingress_steps(engine=engine, source_ip=SOURCE, queue=queue, spec=link)
    return argvs(egress), argvs(ingress)


def test_nfqueue_engine_queues_on_the_destination_and_limits_rate_at_the_source() -> None:
    egress, ingress = both_sides(Engine.NFQUEUE, 2, delay="40ms", loss="2%", rate="20mbit")
    assert (*RAW, "-A", CHAIN, *nfqueue_rule(SOURCE, 2)) in ingress
    assert (*RAW, "-I", "PREROUTING", "1", "-j", CHAIN) in ingress
    assert ("tc", "class", "replace", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb",
            "rate", "20000000bit", "ceil", "20000000bit") in egress  # fmt: skip
    assert ("tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "2",
            "u32", "match", "ip", "dst", "172.20.0.3/32", "flowid", "1:2") in egress  # fmt: skip
    assert not any("netem" in command for command in egress)
    assert not any("NFQUEUE" in command for command in egress)


def test_injected_copies_return_before_the_queue_rule() -> None:
    _, ingress = both_sides(Engine.NFQUEUE, 2, duplicate="1%")
    returns = ingress.index(
        (*RAW, "-I", CHAIN, "1", "-m", "mark", "--mark", f"{INJECT_MARK:#x}", "-j", "RETURN")
    )
    assert returns < ingress.index((*RAW, "-A", CHAIN, *nfqueue_rule(SOURCE, 2)))


def test_nfqueue_engine_rate_only_needs_no_queue() -> None:
    egress, ingress = both_sides(Engine.NFQUEUE, 1, rate="1mbit")
    assert not any("-A" in command and "NFQUEUE" in command for command in ingress)
    assert any(command[:3] == ("tc", "class", "replace") for command in egress)


def test_netem_engine_does_everything_at_the_source() -> None:
    egress, ingress = both_sides(Engine.NETEM, 10, delay="40ms", jitter="5ms", loss="2%")
    assert ("tc", "qdisc", "replace", "dev", "eth0", "parent", "1:a", "handle", "b:", "netem",
            "delay", "40ms", "5ms", "loss", "random", "2%") in egress  # fmt: skip
    # no rate asked: the class must not limit anything
    assert any("10000000000bit" in command for command in egress)
    assert not any("-A" in command and "NFQUEUE" in command for command in ingress)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"delay": "40ms"}, ["delay", "40ms"], id="delay"),
        pytest.param({"jitter": "5ms"}, ["delay", "0s", "5ms"], id="jitter-only"),
        pytest.param(
            {"delay": "100ms", "reorder": "25%", "duplicate": "1%", "corrupt": "0.1%"},
            ["delay", "100ms", "duplicate", "1%", "reorder", "25%", "corrupt", "0.1%"],
            id="all-shares",
        ),
        pytest.param({"rate": "1mbit"}, [], id="rate-is-not-netem"),
    ],
)
def test_netem_args(options: dict[str, str], expected: list[str]) -> None:
    assert netem_args(spec(**options)) == expected


def test_shaping_starts_by_removing_the_links_old_rules() -> None:
    egress, ingress = both_sides(Engine.NFQUEUE, 4, delay="1ms", rate="1mbit")
    old_egress = argvs(unshape_egress_steps(dev="eth0", queue=4))
    old_ingress = argvs(unshape_ingress_steps(source_ip=SOURCE, queue=4))
    assert egress[: len(old_egress)] == old_egress
    assert ingress[: len(old_ingress)] == old_ingress
    assert all(s.may_fail for s in unshape_egress_steps(dev="eth0", queue=4))
    assert all(s.may_fail for s in unshape_ingress_steps(source_ip=SOURCE, queue=4))


def test_partition_drops_inbound_from_the_peer_and_heal_removes_it() -> None:
    commands = argvs(partition_steps(PEER))
    assert (*FILTER, "-I", "INPUT", "1", "-j", CHAIN) in commands
    assert (*FILTER, "-A", CHAIN, "-s", "172.20.0.3/32", "-j", "DROP") in commands
    assert argvs(heal_steps(PEER)) == [(*FILTER, "-D", CHAIN, "-s", "172.20.0.3/32", "-j", "DROP")]
    # the queue (raw table, PREROUTING) comes before filter INPUT: a partition
    # still drops packets the verdict loop has accepted
    assert not any("raw" in command for command in commands)


def test_teardown_is_one_flush_and_one_qdisc_delete_per_device() -> None:
    commands = argvs(teardown_steps(["eth0"]))
    assert (*FILTER, "-F", CHAIN) in commands
    assert (*RAW, "-F", CHAIN) in commands
    assert ("tc", "qdisc", "del", "dev", "eth0", "root") in commands


@pytest.mark.parametrize(
    "bad",
    [pytest.param("server", id="hostname"), pytest.param("10.0.0.300", id="octet")],
)
def test_peer_must_be_an_ipv4_address(bad: str) -> None:
    with pytest.raises(ShapingError, match="not an IPv4 address"):
        nfqueue_rule(bad, 1)


def test_queue_numbers() -> None:
    assert classid(255) == "1:ff"
    assert free_queue([]) == 1
    assert free_queue([1, 2, 4]) == 3
    with pytest.raises(ShapingError):
        classid(0)
    with pytest.raises(ShapingError):
        classid(0xFFFF)  # its leaf handle would overflow


def test_render_script_runs_in_sh() -> None:
    script = render_script(
        [
            Step(("true",)),
            Step(("false",), may_fail=True),
            Step(("echo", "skipped"), unless=("true",)),
            Step(("echo", "it's", "run"), unless=("false",)),
        ]
    )
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout == "it's run\n"


def test_render_script_stops_at_a_real_failure() -> None:
    script = render_script([Step(("false",)), Step(("echo", "not reached"))])
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert result.stdout == ""


def test_shaper_command_round_trips_through_the_helpers_parser() -> None:
    link = spec(delay="40ms", jitter="5ms", loss="2%", duplicate="1%", rate="1mbit")
    argv = shaper_command(queue=7, spec=link, seed=42)
    assert argv[:2] == ["socketlab", "shaper"]
    invocation = parse_invocation(argv[2:])
    assert (invocation.queue, invocation.seed) == (7, 42)
    assert invocation.impairment == link.impairment


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(
            "route=172.20.0.3 dev eth0 src 172.20.0.2 uid 0 \nnetem=ok\n",
            Probe(dev="eth0", netem=True, netem_error=""),
            id="netem",
        ),
        pytest.param(
            "route=172.20.0.3 dev eth1 src 172.20.0.2 uid 0\n"
            "netem=Error: Specified qdisc kind is unknown.\n",
            Probe(dev="eth1", netem=False, netem_error="Error: Specified qdisc kind is unknown."),
            id="no-netem",
        ),
    ],
)
def test_parse_probe(output: str, expected: Probe) -> None:
    assert parse_probe(output) == expected


def test_parse_probe_garbage() -> None:
    with pytest.raises(ShapingError, match="could not read"):
        parse_probe("sh: ip: not found\n")


def test_engine_choice() -> None:
    with_netem = Probe(dev="eth0", netem=True, netem_error="")
    without = Probe(dev="eth0", netem=False, netem_error="unknown qdisc")
    assert choose_engine(None, with_netem) is Engine.NETEM
    assert choose_engine(None, without) is Engine.NFQUEUE
    assert choose_engine(Engine.NFQUEUE, with_netem) is Engine.NFQUEUE
    with pytest.raises(ShapingError, match="no sch_netem"):
        choose_engine(Engine.NETEM, without)


STATUS_OUTPUT = """\
%%iptables
-N SOCKETLAB
-A SOCKETLAB -s 172.20.0.5/32 -j DROP
%%raw
-N SOCKETLAB
-A SOCKETLAB -m mark --mark 0x50c1ab -j RETURN
-A SOCKETLAB -s 172.20.0.3/32 -j NFQUEUE --queue-num 1 --queue-bypass
%%tc
filter parent 1: protocol ip pref 2 u32 chain 0
filter parent 1: protocol ip pref 2 u32 chain 0 fh 800: ht divisor 1
filter parent 1: protocol ip pref 2 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 flowid 1:2 not_in_hw
  match ac140004/ffffffff at 16
%%nfqueue
    1  41236     0 1     0    17     3   807564  1
"""


def test_parse_status_reads_queues_drops_and_classes() -> None:
    rules = parse_status(STATUS_OUTPUT)
    assert rules.queues == {"172.20.0.3": 1}
    assert rules.drops == {"172.20.0.5"}
    assert rules.classes == {"172.20.0.4": 2}
    assert rules.injected_return
    assert not rules.empty
    assert (rules.queue_stats[1].queue_dropped, rules.queue_stats[1].user_dropped) == (17, 3)


def test_the_status_script_reads_the_kernels_queue_counters() -> None:
    assert "%%nfqueue" in STATUS_SCRIPT
    assert "/proc/net/netfilter/nfnetlink_queue" in STATUS_SCRIPT


def test_parse_status_of_a_clean_namespace() -> None:
    assert parse_status("%%iptables\n%%raw\n%%tc\n").empty


@pytest.mark.parametrize(
    ("options", "wire_size"),
    [
        pytest.param({"loss": "1%"}, True, id="loss"),
        pytest.param({"delay": "20ms"}, False, id="fixed-delay"),
        pytest.param({"delay": "20ms", "rate": "20mbit"}, False, id="fixed-delay-and-rate"),
        pytest.param({"delay": "20ms", "jitter": "1ms"}, True, id="jitter"),
        pytest.param({"delay": "20ms", "reorder": "5%"}, True, id="reorder"),
        pytest.param({"delay": "20ms", "loss": "1%"}, True, id="delay-and-loss"),
        pytest.param({"duplicate": "1%"}, True, id="duplicate"),
        pytest.param({"corrupt": "1%"}, True, id="corrupt"),
        pytest.param({"delay": "20ms", "rate": "1mbit", "queue_limit": "10p"}, True, id="queue"),
        pytest.param({"rate": "20mbit"}, False, id="rate-only"),
    ],
)
def test_per_packet_impairments_need_wire_size_packets(
    options: dict[str, str], wire_size: bool
) -> None:
    assert needs_wire_size_packets(spec(**options)) is wire_size


def test_segmentation_offload_is_switched_with_ethtool() -> None:
    off = segmentation_offload_steps(dev="eth0", enabled=False)
    assert [s.argv for s in off] == [("ethtool", "-K", "eth0", "tso", "off", "gso", "off")]
    assert not off[0].may_fail, "a link that cannot be made per-packet must not pass silently"
    on = segmentation_offload_steps(dev="eth0", enabled=True)
    assert [s.argv for s in on] == [("ethtool", "-K", "eth0", "tso", "on", "gso", "on")]


# --------------------------------------------------------------------------- netem models


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            {"loss": "5%", "loss_burst": "3"},
            # r = 1/3, p = 0.05 * r / 0.95; every Bad packet lost, no Good one
            ["loss", "gemodel", "1.754385965%", "33.33333333%", "100%", "0%"],
            id="loss-burst-is-simple-gilbert",
        ),
        pytest.param(
            {"loss_model": "gemodel:1%,10%,70%,0.1%"},
            ["loss", "gemodel", "1%", "10%", "70%", "0.1%"],
            id="gemodel-explicit",
        ),
        pytest.param(
            {"loss_model": "gemodel:2%"},
            # netem's defaults for the omitted values: r = 1 - p, 1-h = 100 %, 1-k = 0 %
            ["loss", "gemodel", "2%", "98%", "100%", "0%"],
            id="gemodel-defaults",
        ),
        pytest.param(
            {"loss_model": "state:1%,30%,10%,20%,0.5%"},
            ["loss", "state", "1%", "30%", "10%", "20%", "0.5%"],
            id="four-state",
        ),
        pytest.param(
            {"loss": "0.3%", "loss_correlation": "25%"},
            ["loss", "random", "0.3%", "25%"],
            id="random-with-correlation",
        ),
        pytest.param(
            {"delay": "100ms", "jitter": "20ms", "delay_distribution": "normal"},
            ["delay", "100ms", "20ms", "distribution", "normal"],
            id="distribution",
        ),
        pytest.param(
            {"delay": "100ms", "jitter": "20ms", "delay_distribution": "uniform"},
            # netem's default; iproute2 ships no uniform.dist, so it is never named
            ["delay", "100ms", "20ms"],
            id="uniform-is-the-default",
        ),
        pytest.param(
            {"delay": "100ms", "jitter": "10ms", "delay_correlation": "25%"},
            ["delay", "100ms", "10ms", "25%"],
            id="delay-correlation-after-jitter",
        ),
        pytest.param(
            {"delay": "10ms", "reorder": "25%", "reorder_gap": "5"},
            ["delay", "10ms", "reorder", "25%", "gap", "5"],
            id="reorder-gap",
        ),
        pytest.param(
            {"delay": "10ms", "reorder": "25%", "reorder_gap": "1"},
            ["delay", "10ms", "reorder", "25%"],
            id="gap-1-is-plain-reorder",
        ),
        pytest.param(
            {"delay": "10ms", "loss": "1%", "seed": "42"},
            ["delay", "10ms", "loss", "random", "1%", "seed", "42"],
            id="seed-last",
        ),
        pytest.param({"seed": "42", "rate": "1mbit"}, [], id="seed-alone-is-no-netem"),
    ],
)
def test_netem_args_for_every_model(options: dict[str, str], expected: list[str]) -> None:
    assert netem_args(spec(**options)) == expected


def test_netem_limit_comes_first() -> None:
    assert netem_args(spec(delay="1ms"), limit=5000)[:2] == ["limit", "5000"]


@pytest.mark.parametrize(
    ("options", "leaf"),
    [
        pytest.param({"queue_limit": "64kb"}, ("bfifo", "limit", "65536"), id="bytes"),
        pytest.param({"queue_limit": "100p"}, ("pfifo", "limit", "100"), id="packets"),
    ],
)
@pytest.mark.parametrize("engine", [Engine.NFQUEUE, Engine.NETEM])
def test_queue_limit_is_a_fifo_leaf_under_the_rate_class(
    options: dict[str, str], leaf: tuple[str, ...], engine: Engine
) -> None:
    egress, _ = both_sides(engine, 3, rate="10mbit", **options)
    klass = ("tc", "class", "replace", "dev", "eth0", "parent", "1:", "classid", "1:3", "htb",
             "rate", "10000000bit", "ceil", "10000000bit")  # fmt: skip
    fifo = ("tc", "qdisc", "replace", "dev", "eth0", "parent", "1:3", "handle", "4:", *leaf)
    filter_add = next(c for c in egress if c[:3] == ("tc", "filter", "add"))
    assert egress.index(klass) < egress.index(fifo) < egress.index(filter_add)


def test_nfqueue_engine_queue_with_delay_keeps_the_fifo_at_the_source() -> None:
    egress, ingress = both_sides(Engine.NFQUEUE, 3, rate="10mbit", queue_limit="64kb", delay="20ms")
    assert any(c[-3:] == ("bfifo", "limit", "65536") for c in egress)
    assert (*RAW, "-A", CHAIN, *nfqueue_rule(SOURCE, 3)) in ingress


def test_netem_engine_queue_puts_a_tbf_under_netem() -> None:
    egress, _ = both_sides(
        Engine.NETEM, 3, rate="10mbit", queue_limit="64kb", delay="20ms", jitter="5ms"
    )
    # the class no longer limits; netem holds only its delay line and hands on to the tbf
    assert any("10000000000bit" in c for c in egress)
    netem = next(c for c in egress if "netem" in c)
    assert netem[:10] == ("tc", "qdisc", "replace", "dev", "eth0", "parent", "1:3", "handle", "4:",
                          "netem")  # fmt: skip
    assert netem[10:12] == ("limit", str(netem_delay_line_limit(spec(rate="10mbit", delay="20ms",
                                                                      jitter="5ms"))))  # fmt: skip
    assert ("tc", "qdisc", "add", "dev", "eth0", "parent", "4:1", "handle", "3003:", "tbf", "rate",
            "10000000bit", "burst", "3028", "limit", "65536") in egress  # fmt: skip
    assert not any(c[-3:-1] == ("pfifo", "limit") for c in egress)


def test_netem_engine_packet_queue_adds_a_pfifo_below_the_tbf() -> None:
    egress, _ = both_sides(Engine.NETEM, 3, rate="100mbit", queue_limit="50p", loss="1%")
    assert ("tc", "qdisc", "add", "dev", "eth0", "parent", "4:1", "handle", "3003:", "tbf", "rate",
            "100000000bit", "burst", "25000", "limit", str(50 * 1514)) in egress  # fmt: skip
    assert ("tc", "qdisc", "add", "dev", "eth0", "parent", "3003:1", "handle", "5803:", "pfifo",
            "limit", "50") in egress  # fmt: skip


def test_delay_line_limit_holds_the_rate_times_the_longest_delay() -> None:
    # 20 mbit for 100 ms + 4 x 10 ms of jitter, in 64-byte frames
    assert netem_delay_line_limit(spec(rate="20mbit", delay="100ms", jitter="10ms")) == 5469
    assert netem_delay_line_limit(spec(rate="1mbit", delay="1ms")) == 1000  # netem's default


def test_queue_handles_stay_apart_and_below_the_kernels_own() -> None:
    assert classid(MAX_QUEUE) == "1:2000"
    with pytest.raises(ShapingError):
        classid(MAX_QUEUE + 1)
    majors = [
        {queue + 1 for queue in range(1, MAX_QUEUE + 1)},
        {TBF_MAJOR_BASE + queue for queue in range(1, MAX_QUEUE + 1)},
        {TBF_FIFO_MAJOR_BASE + queue for queue in range(1, MAX_QUEUE + 1)},
    ]
    assert len(set().union(*majors)) == sum(map(len, majors))  # no two ranges overlap
    # 1: is the htb root; 8000: and up is where the kernel allocates handles itself
    assert min(map(min, majors)) > 1
    assert max(map(max, majors)) < 0x8000


def test_queue_limit_and_models_need_wire_size_packets() -> None:
    assert needs_wire_size_packets(spec(rate="10mbit", queue_limit="64kb"))
    assert needs_wire_size_packets(spec(loss_model="gemodel:1%"))
    assert not needs_wire_size_packets(spec(rate="10mbit", seed="3"))


# --------------------------------------------------------------------------- engines


def test_shaper_command_carries_every_model_and_the_seed() -> None:
    link = spec(delay="40ms", jitter="5ms", delay_distribution="pareto", delay_correlation="30%",
                loss="5%", loss_burst="3", reorder="10%", reorder_gap="4", seed="99")  # fmt: skip
    argv = shaper_command(queue=7, spec=link)
    assert argv[:2] == ["socketlab", "shaper"]
    invocation = parse_invocation(argv[2:])
    assert invocation == ShaperInvocation(queue=7, impairment=link.impairment, seed=99)
    assert shaper_command(queue=7, spec=link, seed=5)[-2:] == ["--seed", "5"]


def test_netem_probe_reads_seed_support() -> None:
    text = "route=172.20.0.3 dev eth0 src 172.20.0.2\nnetem=ok\nnetem-seed=ok\n"
    assert parse_probe(text) == Probe(dev="eth0", netem=True, netem_error="", netem_seed=True)
    old = "route=172.20.0.3 dev eth0 src 172.20.0.2\nnetem=ok\nnetem-seed=no\n"
    assert not parse_probe(old).netem_seed


def test_probe_script_tries_the_seed_then_plain_netem() -> None:
    script = probe_script(PEER)
    assert script.index("netem delay 0ms seed 7") < script.index("netem delay 0ms 2>&1")
    assert "grep -q ' seed 7'" in script


NETEM_SEED = Probe(dev="eth0", netem=True, netem_error="", netem_seed=True)
NETEM_OLD = Probe(dev="eth0", netem=True, netem_error="", netem_seed=False)


@pytest.mark.parametrize(
    ("options", "probe", "message"),
    [
        pytest.param(
            {"delay": "10ms", "jitter": "5ms", "delay_correlation": "25%"},
            NETEM_SEED,
            "--delay-correlation: netem applies it modulo the jitter range",
            id="delay-correlation",
        ),
        pytest.param(
            {"delay": "10ms", "seed": "1"},
            NETEM_OLD,
            "--seed: this kernel's netem has no seed",
            id="seed-without-support",
        ),
    ],
)
def test_netem_refuses_what_it_lacks_in_one_line(
    options: dict[str, str], probe: Probe, message: str
) -> None:
    link = spec(**options)
    with pytest.raises(ShapingError, match=f"^engine netem: {message}") as caught:
        require_engine(link, Engine.NETEM, netem_seed=probe.netem_seed)
    assert "\n" not in str(caught.value)
    assert require_engine(link, Engine.NFQUEUE, netem_seed=False) == []
    # left to choose, the lab takes the engine that can do it
    assert choose_engine(None, probe, link) is Engine.NFQUEUE
    assert choose_engine(Engine.NETEM, probe, link) is Engine.NETEM  # the runner then refuses


def test_netem_seed_warns_where_it_cannot_replay() -> None:
    link = spec(delay="10ms", corrupt="1%", seed="3")
    warnings = require_engine(link, Engine.NETEM, netem_seed=True)
    assert warnings == [
        "--seed: netem does not seed which bit it corrupts or where a correlation starts; "
        "use --engine nfqueue for an exact replay"
    ]
    assert choose_engine(None, NETEM_SEED, link) is Engine.NETEM
    assert require_engine(spec(delay="10ms", seed="3"), Engine.NETEM, netem_seed=True) == []


def test_shaper_command_sets_the_stats_interval_through_env() -> None:
    link = spec(loss="2%")
    plain = shaper_command(queue=7, spec=link)
    argv = shaper_command(queue=7, spec=link, stats_interval=0.5)
    assert argv == ["env", "SOCKETLAB_SHAPER_STATS_INTERVAL=0.5", *plain]
