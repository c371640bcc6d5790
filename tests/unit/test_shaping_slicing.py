"""Slicing: ``--mss`` clamps the TCP MSS on a link, ``--slice-delay`` spaces its segments.

The spec (units, bounds, the text form helper labels keep), the pure builders
(TCPMSS rules in SOURCE's mangle table for every DEST address and routed subnet,
their removal, netem's ``slot``), the verdict loop's spacing with a fake clock,
the helper's command line, and the runner against the fake lab (rules in the
right namespace, offload off, a missing clamp reported by ``lab status``).
"""

from __future__ import annotations

import itertools
import random
import struct
from typing import Any

import pytest

from lab.interface import ExecResult
from lab.shaping import shape, unshape
from lab.shaping.builders import (
    STATUS_SCRIPT,
    Engine,
    RulesInForce,
    egress_steps,
    needs_verdict_loop,
    needs_wire_size_packets,
    netem_args,
    parse_status,
    render_script,
    shaper_command,
    teardown_steps,
    unshape_egress_steps,
    uses_htb,
)
from lab.shaping.errors import SpecError
from lab.shaping.helpers import SHAPER_STARTED, Helper
from lab.shaping.spec import LinkSpec, spec_from_options
from lab.shaping.status import evaluate_links
from socketlab.shaper.core import Accept, Impairment, ImpairmentScheduler, Inject
from socketlab.shaper.invocation import ShaperInvocation, parse_invocation

PEER = "10.0.0.3"
PEER6 = "fd00::3"


def spec(**options: str) -> LinkSpec:
    return spec_from_options(options)


# --------------------------------------------------------------------------- spec


def test_mss_and_slice_delay_parse_and_round_trip_through_the_text_form() -> None:
    sliced = spec(mss="88", slice_delay="5ms", delay="10ms")
    assert (sliced.mss, sliced.slice_delay) == (88, 0.005)
    assert sliced.describe() == "delay=10ms mss=88 slice-delay=5ms"
    assert LinkSpec.parse(sliced.describe()) == sliced
    assert spec_from_options({"slice-delay": "250us"}).slice_delay == pytest.approx(0.00025)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"mss": "40"}, "--mss: '40' must be between 48 and 65535 bytes", id="small"),
        pytest.param({"mss": "70000"}, "between 48 and 65535", id="large"),
        pytest.param({"mss": "8x"}, "--mss: '8x' is not a whole number of bytes", id="word"),
        pytest.param({"slice_delay": "5"}, "--slice-delay: '5' is not a duration", id="unit"),
        pytest.param({"slice_delay": "11s"}, "--slice-delay: must be between 0 and 10s", id="long"),
    ],
)
def test_bad_slicing_values_are_one_line_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec(**options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_mss_alone_is_something_to_shape_but_no_per_packet_impairment() -> None:
    clamp = spec(mss="88")
    assert not clamp.is_empty
    assert clamp.impairment.is_noop
    assert not needs_verdict_loop(clamp, Engine.NFQUEUE)
    assert not uses_htb(clamp, Engine.NETEM)
    # the segments must be that small on the wire: offload goes off
    assert needs_wire_size_packets(clamp)


def test_a_slice_delay_is_a_per_packet_impairment_on_both_engines() -> None:
    sliced = spec(slice_delay="5ms")
    assert sliced.impairment.slice_delay == 0.005
    assert needs_verdict_loop(sliced, Engine.NFQUEUE)
    assert uses_htb(sliced, Engine.NETEM)
    assert needs_wire_size_packets(sliced)


# --------------------------------------------------------------------------- builders


def _argvs(steps: list[Any]) -> list[tuple[str, ...]]:
    return [step.argv for step in steps]


def test_the_mss_clamp_goes_on_syns_from_every_dest_address_in_source_mangle() -> None:
    steps = egress_steps(
        engine=Engine.NFQUEUE,
        dev="eth0",
        dest_ip=PEER,
        queue=3,
        spec=spec(mss="88"),
        dest_ip6=PEER6,
        dest_nets=("10.9.0.0/24",),
    )
    argvs = _argvs(steps)
    clamp = ("-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--set-mss", "88")
    for family, source in ((4, f"{PEER}/32"), (6, f"{PEER6}/128"), (4, "10.9.0.0/24")):
        tool = "ip6tables" if family == 6 else "iptables"
        assert (tool, "-w", "5", "-t", "mangle", "-A", "SOCKETLAB", "-s", source, *clamp) in argvs
    # the chain exists and PREROUTING jumps to it, in both families
    for tool in ("iptables", "ip6tables"):
        assert (tool, "-w", "5", "-t", "mangle", "-N", "SOCKETLAB") in argvs
        assert (tool, "-w", "5", "-t", "mangle", "-I", "PREROUTING", "1", "-j", "SOCKETLAB") in (
            argvs
        )
    # MSS only: no htb class, no verdict loop rule
    assert not any(argv[:3] == ("tc", "class", "replace") for argv in argvs)


def test_unshaping_removes_the_clamp_it_put() -> None:
    argvs = _argvs(unshape_egress_steps(dev="eth0", queue=3, mss_peers=[PEER, PEER6], mss=88))
    assert ("iptables", "-w", "5", "-t", "mangle", "-D", "SOCKETLAB", "-s", f"{PEER}/32",
            "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", "--set-mss", "88") in argvs  # fmt: skip
    assert any(argv[0] == "ip6tables" and "-D" in argv for argv in argvs)
    # no clamp asked: nothing of mangle touched
    plain = _argvs(unshape_egress_steps(dev="eth0", queue=3))
    assert not any("mangle" in argv for argv in plain)


def test_teardown_flushes_the_mangle_chain_too() -> None:
    script = render_script(teardown_steps(["eth0"]))
    assert "iptables -w 5 -t mangle -F SOCKETLAB" in script
    assert "ip6tables -w 5 -t mangle -X SOCKETLAB" in script


def test_netem_spaces_a_burst_with_one_packet_per_slot() -> None:
    args = netem_args(spec(delay="10ms", slice_delay="5ms"))
    assert args[:2] == ["delay", "10ms"]
    assert args[-5:] == ["slot", "5ms", "5ms", "packets", "1"]
    # the htb class carries it below the egress filter
    steps = egress_steps(
        engine=Engine.NETEM, dev="eth0", dest_ip=PEER, queue=2, spec=spec(slice_delay="5ms")
    )
    netem = next(argv for argv in _argvs(steps) if "netem" in argv)
    assert netem[-5:] == ("slot", "5ms", "5ms", "packets", "1")


def test_status_reads_the_clamps_in_force() -> None:
    assert "-t mangle -S SOCKETLAB" in STATUS_SCRIPT
    text = (
        "%%iptables\n%%raw\n%%ip6tables\n%%raw6\n%%mangle\n"
        "-N SOCKETLAB\n"
        "-A SOCKETLAB -s 10.0.0.3/32 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 88\n"
        "%%mangle6\n"
        "-A SOCKETLAB -s fd00::3/128 -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 88\n"
        "%%tc\n"
    )
    rules = parse_status(text)
    assert rules.mss == {PEER: 88, PEER6: 88}
    assert not rules.empty


# --------------------------------------------------------------------------- verdict loop


class Packet:
    def __init__(self, number: int) -> None:
        self.number = number
        body = b"x" * 32
        self.payload = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), number, 0, 64, 6,
                                   0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + body  # fmt: skip

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload


def _releases(sched: ImpairmentScheduler[Packet], until: float, step: float) -> list[float]:
    """Times (on a fake clock ticking by ``step``) at which each packet was released."""
    times: list[float] = []
    now = 0.0
    while now <= until:
        for verdict in sched.pop_due(now):
            assert isinstance(verdict, Accept | Inject)
            times.append(round(now, 6))
        now += step
    return times


def test_a_burst_leaves_one_packet_per_slice_delay() -> None:
    sched: ImpairmentScheduler[Packet] = ImpairmentScheduler(
        Impairment(slice_delay=0.005), rng=random.Random(1)
    )
    for n in range(10):  # one burst: ten segments at the same instant
        assert sched.admit(Packet(n), now=0.0)
    times = _releases(sched, until=0.1, step=0.0005)
    assert len(times) == 10
    assert times[0] == 0.0  # the first goes at once: nothing left before it
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap == pytest.approx(0.005, abs=1e-6) for gap in gaps), gaps


def test_slicing_adds_to_the_delay_and_a_quiet_link_is_not_held_back() -> None:
    sched: ImpairmentScheduler[Packet] = ImpairmentScheduler(
        Impairment(delay=0.020, slice_delay=0.005), rng=random.Random(1)
    )
    sched.admit(Packet(0), now=0.0)
    sched.admit(Packet(1), now=0.0)
    sched.admit(Packet(2), now=1.0)  # long after the burst: only its own delay
    assert [round(at, 6) for at, _ in sched.held()] == [0.020, 0.025, 1.020]


def test_the_helper_command_line_carries_the_slice_delay() -> None:
    link = spec(delay="10ms", slice_delay="5ms", mss="88")
    argv = shaper_command(queue=4, spec=link)
    assert "--slice-delay" in argv
    assert "--mss" not in argv  # the clamp is a rule, not the loop's business
    invocation = parse_invocation(argv[2:])
    assert invocation == ShaperInvocation(queue=4, impairment=link.impairment)
    assert (invocation.queue, invocation.impairment.slice_delay) == (4, 0.005)


# --------------------------------------------------------------------------- runner


def namespace_shell(lab: Any, service: str, argv: list[str]) -> ExecResult:
    script = argv[2]
    out = "route=10.0.0.3 dev eth0 src 10.0.0.2\nnetem=no\n" if "route get" in script else ""
    return ExecResult(exit_code=0, stdout=out, stderr="")


def test_shaping_puts_the_clamp_in_the_source_namespace_and_unshaping_takes_it(
    fake_lab: Any,
) -> None:
    fake_lab.commands = namespace_shell
    fake_lab.queue_helper(stdout=f"{SHAPER_STARTED} queue=1\n")
    shape(fake_lab, "server", "client", spec(mss="88", slice_delay="5ms"))

    source_scripts = [argv[2] for name, argv, _ in fake_lab.netkit_runs if name == "server"]
    assert any(
        "TCPMSS --set-mss 88" in script and " -A SOCKETLAB" in script for script in source_scripts
    )
    assert any("ethtool -K eth0 tso off gso off" in script for script in source_scripts)
    (started,) = fake_lab.started
    assert started["service"] == "client"  # the verdict loop spaces them at the reader's ingress
    assert "--slice-delay" in started["argv"]

    unshape(fake_lab, "server", "client")
    removals = [argv[2] for name, argv, _ in fake_lab.netkit_runs if name == "server"]
    assert any("-D SOCKETLAB" in script and "TCPMSS --set-mss 88" in script for script in removals)


def clamping_helper(
    source: str, dest: str, source_ip: str, dest_ip: str, *, mss: str, **extra: Any
) -> Helper:
    """A running helper of a link with ``--mss``, as ``lab status`` lists it."""
    return Helper(
        name=f"fake-shaper-{source}-{dest}",
        source=source,
        dest=dest,
        source_ip=source_ip,
        dest_ip=dest_ip,
        netns=source,
        spec=spec(mss=mss),
        engine=Engine.NFQUEUE,
        queue=1,
        dev="eth0",
        state="running",
        started_at="",
        **extra,
    )


def test_status_says_when_a_links_clamp_is_missing() -> None:
    helper = clamping_helper("server", "client", "10.0.0.2", PEER, mss="88")
    names = {"10.0.0.2": "server", PEER: "client"}
    clean = {"server": RulesInForce(mss={PEER: 88}), "client": RulesInForce()}
    (state,) = evaluate_links([helper], clean, names, source_started={})
    assert state.healthy, state
    (broken,) = evaluate_links(
        [helper], {"server": RulesInForce(), "client": RulesInForce()}, names, source_started={}
    )
    assert not broken.healthy
    assert "MSS clamp missing" in broken.state
    # a clamp nobody asked for is an orphan row
    orphans = evaluate_links([], clean, names, source_started={})
    assert [o.state for o in orphans] == ["orphan rule (MSS 88, no helper): run lab unshape"]


def test_a_clamp_on_a_routers_subnets_is_the_links_not_an_orphan() -> None:
    helper = clamping_helper(
        "client", "router", "10.0.0.2", "10.0.0.9", mss="100", dest_nets=("10.1.0.0/24",)
    )
    rules = {
        "client": RulesInForce(mss={"10.0.0.9": 100, "10.1.0.0/24": 100}),
        "router": RulesInForce(),
    }
    names = {"10.0.0.2": "client", "10.0.0.9": "router"}
    (state,) = evaluate_links([helper], rules, names, source_started={})
    assert state.healthy, state
