"""``lab shape`` with the newer models, against the shared fake lab: seeds picked and
recorded, engines checked before any step, links put back when shaping fails, the
self-check's burst, percentile, reorder and bufferbloat rows, and group partitions."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.interface import ExecResult
from lab.shaping import (
    SelfCheckFailed,
    ShapingError,
    heal,
    isolate,
    partition,
    selfcheck,
    shape,
)
from lab.shaping.builders import LABEL_SPEC, Engine, RulesInForce
from lab.shaping.helpers import SHAPER_ROLE, SHAPER_STARTED
from lab.shaping.measure import parse_probe
from lab.shaping.selfcheck import STREAM_ROLE, load_plan
from lab.shaping.shape import pick_seed
from lab.shaping.spec import LinkSpec, QueueLimit, resolve_spec
from lab.shaping.status import partition_groups
from socketlab.shaper.probe import LISTENING

ROUTE = "route=10.0.0.3 dev eth0 src 10.0.0.2\n"


class Namespaces:
    """Every namespace's answers: the probe (netem or not), rule changes, and scripted
    ``socketlab probe`` reports (by what the probe asks)."""

    def __init__(self, *, netem: bool = False, netem_seed: bool = False) -> None:
        self.netem = netem
        self.netem_seed = netem_seed
        self.scripts: list[tuple[str, str]] = []
        self.probes: list[list[str]] = []
        self.fail_on: str | None = None  # a script containing this fails
        self.reports: dict[str, Any] = {}
        self.mtu = "1500\n"  # what the path MTU probe prints
        self.mtu_probes: list[tuple[str, list[str]]] = []

    def __call__(self, lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[:2] == ["sh", "-c"]:
            script = argv[2]
            self.scripts.append((service, script))
            if self.fail_on is not None and self.fail_on in script:
                return ExecResult(exit_code=2, stdout="", stderr="RTNETLINK answers: Invalid")
            if "route get" in script:
                netem = "netem=ok\n" if self.netem else "netem=Specified qdisc kind is unknown.\n"
                seed = "netem-seed=ok\n" if self.netem_seed else ""
                return ExecResult(exit_code=0, stdout=ROUTE + netem + seed, stderr="")
            return ExecResult(exit_code=0, stdout="", stderr="")
        if argv[:2] == ["socketlab", "probe"]:
            self.probes.append(argv)
            return ExecResult(exit_code=0, stdout=json.dumps(self.report(argv)), stderr="")
        if argv[:2] == ["python3", "-c"]:  # the path MTU probe
            self.mtu_probes.append((service, argv[-2:]))
            return ExecResult(exit_code=0, stdout=self.mtu, stderr="")
        raise AssertionError(f"unexpected command {argv}")

    def report(self, argv: list[str]) -> Any:
        count = int(argv[argv.index("--count") + 1])
        if "--stream" in argv:
            return {"sent": count, "run": 1}
        echoes = [a for a in self.probes if "--stream" not in a and "--load-rate" not in a]
        # the baseline comes first, then (jitter) the host's calibration, then the check's
        order = ["idle", *(["calibration"] if "calibration" in self.reports else []), "check"]
        kind = "load" if "--load-rate" in argv else order[min(len(echoes), len(order)) - 1]
        found = self.reports.get(kind)
        if found is not None:
            return found(count) if callable(found) else found
        return echo(count, [0.0001] * count)


def echo(count: int, rtts: list[float | None]) -> dict[str, Any]:
    answered = [r for r in rtts if r is not None]
    return {
        "sent": count,
        "received": len(answered),
        "duplicates": 0,
        "rtt_avg": sum(answered) / len(answered) if answered else None,
        "rtt_min": min(answered, default=None),
        "rtt_max": max(answered, default=None),
        "rtt_median": sorted(answered)[len(answered) // 2] if answered else None,
        "lost": "".join("1" if r is None else "0" for r in rtts),
        "rtts": rtts,
    }


@pytest.fixture
def spaces() -> Namespaces:
    return Namespaces()


@pytest.fixture
def lab(fake_lab: Any, spaces: Namespaces) -> Any:
    fake_lab.commands = spaces
    return fake_lab


def loop_ready(lab: Any, **kwargs: Any) -> Any:
    return lab.queue_helper(stdout=f"{SHAPER_STARTED} queue=1\n", **kwargs)


# --------------------------------------------------------------------------- seeds


def test_a_seed_is_picked_recorded_and_given_to_the_verdict_loop(lab: Any) -> None:
    loop_ready(lab)
    result = shape(lab, "client", "server", LinkSpec(loss=0.02))
    seed = result.spec.seed
    assert seed is not None
    (started,) = lab.started
    assert f"seed={seed}" in started["labels"][LABEL_SPEC]
    assert started["argv"][-2:] == ["--seed", str(seed)]


def test_a_given_seed_is_the_one_used(lab: Any) -> None:
    loop_ready(lab)
    result = shape(lab, "client", "server", LinkSpec(loss=0.02), seed=42)
    assert result.spec.seed == 42
    assert lab.started[0]["argv"][-2:] == ["--seed", "42"]


def test_no_seed_is_picked_where_nothing_is_random_or_netem_cannot_take_one() -> None:
    assert pick_seed(LinkSpec(rate=10**6), Engine.NFQUEUE, netem_seed=False).seed is None
    assert pick_seed(LinkSpec(loss=0.1), Engine.NETEM, netem_seed=False).seed is None
    assert pick_seed(LinkSpec(loss=0.1), Engine.NETEM, netem_seed=True).seed is not None
    assert pick_seed(LinkSpec(loss=0.1, seed=5), Engine.NFQUEUE, netem_seed=False).seed == 5


# --------------------------------------------------------------------------- before any step


def test_an_engine_that_cannot_do_the_spec_is_refused_before_any_step(
    lab: Any, spaces: Namespaces
) -> None:
    spaces.netem = True
    spec = LinkSpec(delay=0.03, jitter=0.005, delay_correlation=0.25)
    with pytest.raises(ShapingError, match="--delay-correlation: netem applies it modulo"):
        shape(lab, "client", "server", spec, engine="netem")
    # only the read-only probe ran; no helper was started
    assert [("route get" in script) for _, script in spaces.scripts] == [True]
    assert lab.started == []


def test_without_netem_a_seeded_link_goes_to_nfqueue(lab: Any, spaces: Namespaces) -> None:
    spaces.netem, spaces.netem_seed = True, False
    loop_ready(lab)
    result = shape(lab, "client", "server", LinkSpec(loss=0.02, seed=9))
    assert result.engine is Engine.NFQUEUE


# --------------------------------------------------------------------------- putting back


def test_a_failed_shape_puts_the_earlier_shaping_back(lab: Any) -> None:
    loop_ready(lab)
    first = shape(lab, "client", "server", LinkSpec(delay=0.04), seed=3)
    lab.queue_helper(stderr="socketlab shaper: error: bad flag\n", status="exited")
    loop_ready(lab)  # the earlier link's loop, started again
    with pytest.raises(ShapingError, match="stopped: socketlab shaper: error: bad flag"):
        shape(lab, "client", "server", LinkSpec(loss=0.5))
    (helper,) = lab.helpers(SHAPER_ROLE)
    assert helper.labels[LABEL_SPEC] == first.spec.describe() == "delay=40ms seed=3"
    # the same queue number, and the loop runs with the same seed again
    assert lab.started[-1]["argv"][-2:] == ["--seed", "3"]
    assert lab.started[-1]["labels"] == lab.started[0]["labels"]


def test_a_failed_rule_change_leaves_no_half_applied_link(lab: Any, spaces: Namespaces) -> None:
    spaces.fail_on = "NFQUEUE"
    with pytest.raises(ShapingError, match="RTNETLINK answers: Invalid"):
        shape(lab, "client", "server", LinkSpec(loss=0.1), engine="nfqueue")
    assert lab.helpers(SHAPER_ROLE) == []
    # what was put in place was taken away again: the egress class and the queue rule
    removals = [script for _, script in spaces.scripts if "-D SOCKETLAB" in script]
    assert removals


def test_a_failure_on_one_replica_puts_back_the_others(tmp_path: Path, fake_lab: Any) -> None:
    lab = type(fake_lab)(tmp_path, services=("server", "client"), replicas={"client": 2})
    lab.commands = Namespaces()
    loop_ready(lab)
    lab.queue_helper(stderr="boom\n", status="exited")
    with pytest.raises(ShapingError, match="boom"):
        shape(lab, "client", "server", LinkSpec(loss=0.1))
    assert lab.helpers(SHAPER_ROLE) == []
    assert [h.removed for h in lab.started_helpers] == [True, True]


# --------------------------------------------------------------------------- self-check


def gilbert_elliott_losses(count: int, spec: LinkSpec, seed: int) -> list[float | None]:
    """Probe RTTs with losses drawn from ``spec``'s Gilbert-Elliott chain."""
    model = spec.gilbert_elliott
    assert model is not None
    rng = random.Random(seed)
    bad, rtts = False, []
    for _ in range(count):
        lost = rng.random() < (model.bad_loss if bad else model.good_loss)
        rtts.append(None if lost else 0.0001)
        bad = (rng.random() >= model.r) if bad else (rng.random() < model.p)
    return rtts


def test_bursty_loss_is_checked_by_its_mean_burst_with_enough_probes(
    lab: Any, spaces: Namespaces
) -> None:
    spec = resolve_spec(options={"loss": "5%", "loss_burst": "3"})
    spaces.reports["check"] = lambda n: echo(n, gilbert_elliott_losses(n, spec, 1))
    loop_ready(lab)
    result = shape(lab, "client", "server", spec, check=True)
    rows = {row.metric: row for row in result.checks}
    assert rows["mean loss burst"].ok, rows["mean loss burst"]
    assert "bursty: variance" in rows["round-trip loss"].note
    # about 40 bursts: 40 x 3 / 5 % = 2400 probes
    (check,) = [p for p in spaces.probes if p[p.index("--count") + 1] == "2400"]
    assert check


def test_random_losses_fail_a_bursty_link(lab: Any, spaces: Namespaces) -> None:
    spec = resolve_spec(options={"loss": "5%", "loss_burst": "4"})
    rng = random.Random(2)
    spaces.reports["check"] = lambda n: echo(
        n, [None if rng.random() < 0.05 else 0.0001 for _ in range(n)]
    )
    loop_ready(lab)
    with pytest.raises(SelfCheckFailed) as failed:
        shape(lab, "client", "server", spec, check=True)
    assert "mean loss burst" in str(failed.value)


def test_jitter_is_checked_at_p50_p90_p99(lab: Any, spaces: Namespaces) -> None:
    spec = resolve_spec(options={"delay": "30ms", "jitter": "5ms"})
    rng = random.Random(4)
    spaces.reports["calibration"] = lambda n: echo(n, [0.0001 + 0.03] * n)  # on time
    spaces.reports["check"] = lambda n: echo(
        n, [0.0001 + 0.03 + rng.uniform(-0.005, 0.005) for _ in range(n)]
    )
    loop_ready(lab)  # the calibration's loop (delay fixed at 30 ms), then the link's
    loop_ready(lab)
    result = shape(lab, "client", "server", spec, check=True)
    rows = {row.metric: row for row in result.checks}
    assert [rows[f"delay p{q}"].ok for q in (50, 90, 99)] == [True, True, True]
    calibration, link = lab.started[0], lab.started[-1]
    assert "--delay" in calibration["argv"]
    assert "--jitter" not in calibration["argv"]
    assert "--jitter" in link["argv"]
    assert lab.started_helpers[0].removed  # the calibration is gone again


def test_a_busy_host_measured_before_is_allowed_above_the_percentiles(
    lab: Any, spaces: Namespaces
) -> None:
    spec = resolve_spec(options={"delay": "30ms", "jitter": "5ms"})
    rng = random.Random(8)
    # the verdict loop runs late: 10 % of packets 20..40 ms late, with the delay fixed ...
    late = [rng.uniform(0.02, 0.04) if rng.random() < 0.1 else 0.0 for _ in range(5000)]
    spaces.reports["calibration"] = lambda n: echo(n, [0.0001 + 0.03 + x for x in late[:n]])
    # ... and just as late with the jitter
    spaces.reports["check"] = lambda n: echo(
        n,
        [0.0001 + 0.03 + rng.uniform(-0.005, 0.005) + x for x in late[1000 : 1000 + n]],
    )
    loop_ready(lab)
    loop_ready(lab)
    rows = {r.metric: r for r in shape(lab, "client", "server", spec, check=True).checks}
    assert rows["delay p99"].ok, rows["delay p99"]
    assert "host +" in rows["delay p99"].note
    # without the calibration the same figures fail: the allowance is what was measured
    spaces.reports.pop("calibration")
    spaces.probes.clear()
    with pytest.raises(SelfCheckFailed, match="delay p99"):
        measure_only(lab, spec)


def test_reordering_is_read_from_a_one_way_stream(lab: Any, spaces: Namespaces) -> None:
    spec = resolve_spec(options={"delay": "40ms", "reorder": "10%"})
    rng = random.Random(5)
    # 1000 datagrams 2 ms apart: the reordered ones arrive at once, the rest 40 ms later
    times = sorted((n * 0.002 + (0.0 if rng.random() < 0.1 else 0.04), n) for n in range(1000))
    arrivals = [n for _, n in times]
    spaces.reports["check"] = lambda n: echo(n, [0.0001 + 0.04] * n)
    loop_ready(lab)
    lab.queue_helper(
        stdout=json.dumps({"arrivals": arrivals}) + "\n", stderr=f"{LISTENING} port=5299\n"
    )
    result = shape(lab, "client", "server", spec, check=True)
    rows = {row.metric: row for row in result.checks}
    assert rows["reordered"].ok, rows["reordered"]
    listener = next(s for s in lab.started if s["role"] == STREAM_ROLE)
    assert listener["service"] == "server"  # in the destination's namespace: one way
    (stream,) = [p for p in spaces.probes if "--stream" in p]
    assert (
        stream[stream.index("--run") + 1] == listener["argv"][listener["argv"].index("--run") + 1]
    )


def test_reordering_hidden_by_jitter_is_said_not_measured(lab: Any) -> None:
    spec = resolve_spec(options={"delay": "40ms", "jitter": "10ms", "reorder": "10%"})
    rng = random.Random(6)
    lab.commands.reports["calibration"] = lambda n: echo(n, [0.0001 + 0.04] * n)
    lab.commands.reports["check"] = lambda n: echo(
        n,
        [
            0.0001 + (0.0 if rng.random() < 0.1 else 0.04 + rng.uniform(-0.01, 0.01))
            for _ in range(n)
        ],
    )
    loop_ready(lab)
    loop_ready(lab)
    rows = {r.metric: r for r in shape(lab, "client", "server", spec, check=True).checks}
    assert rows["reordered"].measured == "not measured"
    assert "jitter wider than the probe interval" in rows["reordered"].note


def test_a_queue_limit_is_checked_under_load(lab: Any, spaces: Namespaces) -> None:
    spec = resolve_spec(options={"rate": "10mbit", "queue_limit": "64kb"})
    spaces.reports["load"] = lambda n: echo(n, [0.0001 + 0.05] * n)
    lab.queue_helper()  # rate only: a recording helper
    lab.queue_helper(stdout="Server listening on 5201\n")  # the rate check's iperf3 server
    lab.commands = _with_iperf(spaces)
    result = shape(lab, "client", "server", spec, check=True)
    rows = {row.metric: row for row in result.checks}
    assert rows["RTT under load"].ok, rows["RTT under load"]
    (load,) = [p for p in spaces.probes if "--load-rate" in p]
    offered, warmup = load_plan(spec)
    assert load[load.index("--load-rate") + 1] == str(offered)
    assert float(load[load.index("--load-warmup") + 1]) == pytest.approx(warmup, abs=1e-3)


@pytest.mark.parametrize(
    ("answer", "payload", "note"),
    [
        pytest.param("1280\n", 1252, "; 1280-byte path MTU", id="small-mtu"),
        pytest.param("1500\n", 1400, "", id="ethernet"),
        pytest.param("", 1400, "; path MTU unknown, 1500 assumed", id="unreadable"),
    ],
)
def test_rate_and_load_are_sized_to_the_path(
    lab: Any, spaces: Namespaces, answer: str, payload: int, note: str
) -> None:
    # a 100-packet queue: how long it takes to drain depends on the frames it holds
    spec = resolve_spec(options={"rate": "10mbit", "queue_limit": "100p"})
    spaces.mtu = answer
    frame = payload + 8 + 20 + 14
    full = 100 * frame * 8 / 10e6
    spaces.reports["load"] = lambda n: echo(n, [0.0001 + full] * n)
    lab.queue_helper()
    lab.queue_helper(stdout="Server listening on 5201\n")
    lab.commands = _with_iperf(spaces)
    result = shape(lab, "client", "server", spec, check=True)
    rows = {row.metric: row for row in result.checks}
    assert spaces.mtu_probes == [("client", [lab.ip("server"), "4"])]  # once, from the sender
    (load,) = [p for p in spaces.probes if "--load-rate" in p]
    assert load[load.index("--load-size") + 1] == str(payload)
    offered, _ = load_plan(spec, frame_bytes=frame)
    assert load[load.index("--load-rate") + 1] == str(offered)
    assert f"+{full * 1000:.1f}ms (queue 100p" in rows["RTT under load"].requested
    assert rows["RTT under load"].ok, rows["RTT under load"]
    assert rows["rate"].note == f"TCP goodput 9.50Mbit/s{note}"
    path = int(answer) if answer else 1500
    goodput_share = (path - 20 - 20 - 12) / (path + 14)  # IP, TCP and timestamps; Ethernet
    assert rows["rate"].measured == f"{9.5e6 / goodput_share / 1e6:.2f}Mbit/s"


def test_a_lossy_rate_check_gets_the_path_mtu_from_the_self_check(
    lab: Any, spaces: Namespaces
) -> None:
    from lab.shaping.selfcheck import self_check  # noqa: PLC0415

    spaces.mtu = "1280\n"
    iperfs: list[list[str]] = []

    def commands(lab_: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[0] == "iperf3":
            iperfs.append(argv)
            report = {"end": {"sum_received": {"bits_per_second": 18e6}}}
            return ExecResult(exit_code=0, stdout=json.dumps(report), stderr="")
        return spaces(lab_, service, argv)

    lab.commands = commands
    lab.queue_helper(stdout="Server listening on 5201\n")
    spec = resolve_spec(options={"rate": "20mbit", "loss": "5%"})  # UDP: TCP backs off
    baseline = parse_probe(json.dumps(echo(50, [0.0001] * 50)))
    rows = {row.metric: row for row in self_check(lab, "client", "server", spec, baseline=baseline)}
    (iperf,) = iperfs
    assert iperf[iperf.index("-l") + 1] == "1252"
    assert "1252-byte datagrams: the path's MTU" in rows["rate"].note
    assert spaces.mtu_probes == [("client", [lab.ip("server"), "4"])]


def measure_only(lab: Any, spec: LinkSpec) -> None:
    """The self-check's rows with no host calibration, SelfCheckFailed as the runner raises it."""
    from lab.shaping.selfcheck import self_check  # noqa: PLC0415

    baseline = parse_probe(json.dumps(echo(50, [0.0001] * 50)))
    rows = self_check(lab, "client", "server", spec, baseline=baseline)
    bad = [row for row in rows if not row.ok]
    if bad:
        raise SelfCheckFailed(", ".join(r.metric for r in bad), rows=())


def _with_iperf(spaces: Namespaces) -> Any:
    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[0] == "iperf3":
            report = {"end": {"sum_received": {"bits_per_second": 9.5e6}}}
            return ExecResult(exit_code=0, stdout=json.dumps(report), stderr="")
        return spaces(lab, service, argv)

    return commands


def test_the_load_fills_a_queue_in_about_a_second_and_stays_bounded() -> None:
    deep = LinkSpec(rate=10**6, queue_limit=QueueLimit(1024**2))  # 8.4 s to drain
    offered, warmup = load_plan(deep)
    assert offered == 4 * 10**6  # at most four times the rate
    assert warmup <= 10.0
    shallow = LinkSpec(rate=10**7, queue_limit=QueueLimit(65536))
    offered, warmup = load_plan(shallow)
    assert 1.3 * 10**7 <= offered <= 2 * 10**7
    assert 0.2 < warmup < 2.0


# --------------------------------------------------------------------------- groups


def test_a_group_partition_cuts_every_pair_across_and_no_pair_within(lab: Any) -> None:
    pairs = partition(lab, "client,rss-poller", "server")
    assert pairs == ["client <-> server", "rss-poller <-> server"]
    drops = {
        service: set(re.findall(r"-A SOCKETLAB -s (\S+)/32 -j DROP", script))
        for service, script in lab.commands.scripts
        if "-j DROP" in script
    }
    ips = {name: lab.ip(name) for name in ("server", "client", "rss-poller")}
    assert drops == {
        "client": {ips["server"]},
        "server": {ips["client"], ips["rss-poller"]},
        "rss-poller": {ips["server"]},
    }


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        pytest.param("client,server", "server", "'server' cannot be on both sides", id="both"),
        pytest.param("client,", ",", "a group names at least one service", id="empty"),
        pytest.param("client", "client", "cannot partition 'client' from itself", id="self"),
    ],
)
def test_bad_groups_are_one_line_before_any_step(lab: Any, a: str, b: str, message: str) -> None:
    with pytest.raises(ShapingError, match=re.escape(message)):
        partition(lab, a, b)
    assert lab.commands.scripts == []


def test_isolate_cuts_one_service_from_everyone(lab: Any) -> None:
    pairs = isolate(lab, "server")
    assert sorted(pairs) == [
        "server <-> client",
        "server <-> rss-poller",
        "server <-> udp-listener",
    ]
    # one script in each namespace: the server drops all three, each of them the server
    assert sorted(service for service, _ in lab.commands.scripts) == [
        "client", "rss-poller", "server", "udp-listener",
    ]  # fmt: skip


def test_heal_undoes_an_isolation_only(lab: Any, spaces: Namespaces) -> None:
    ips = {name: lab.ip(name) for name in lab.names}
    # server isolated, and a pair client <-> udp-listener cut besides
    peers = {
        "server": ["client", "udp-listener", "rss-poller"],
        "client": ["server", "udp-listener"],
        "udp-listener": ["server", "client"],
        "rss-poller": ["server"],
    }
    lab.rules = {
        lab.name(service): "%%iptables\n"
        + "".join(f"-A SOCKETLAB -s {ips[p]}/32 -j DROP\n" for p in cut)
        for service, cut in peers.items()
    }
    lab.commands = spaces
    healed = heal(lab, isolated="server")
    assert healed == ["client <-> server", "rss-poller <-> server", "server <-> udp-listener"]


def test_status_reads_the_rules_in_force_back_as_groups() -> None:
    names = {"10.0.0.2": "server", "10.0.0.3": "client", "10.0.0.5": "rss-poller",
             "10.0.0.4": "udp-listener"}  # fmt: skip
    rules = {
        "server": RulesInForce(drops=frozenset({"10.0.0.3", "10.0.0.5"})),
        "client": RulesInForce(drops=frozenset({"10.0.0.2"})),
        "rss-poller": RulesInForce(drops=frozenset({"10.0.0.2"})),
        "udp-listener": RulesInForce(),
    }
    groups = partition_groups(rules, names)
    assert [g.describe() for g in groups] == ["client, rss-poller <-> server"]


# --------------------------------------------------------------------------- rate probes


@pytest.mark.parametrize(
    ("answer", "payload"),
    [
        pytest.param("1280\n", "1252", id="small-mtu"),
        pytest.param("1500\n", "1400", id="ethernet"),
        pytest.param("", "1400", id="unreadable"),
    ],
)
def test_a_udp_rate_check_sends_datagrams_that_fit_the_path(
    fake_lab: Any, answer: str, payload: str
) -> None:
    runs: list[list[str]] = []

    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        runs.append(argv)
        if argv[:2] == ["python3", "-c"]:  # the path MTU probe, in the client's namespace
            assert argv[-2:] == [lab.ip("server"), "4"]
            return ExecResult(exit_code=0, stdout=answer, stderr="")
        report = {"end": {"sum_received": {"bits_per_second": 19e6 * 0.95}}}
        return ExecResult(exit_code=0, stdout=json.dumps(report), stderr="")

    fake_lab.commands = commands
    fake_lab.queue_helper(stdout="Server listening on 5201\n")
    spec = resolve_spec(options={"rate": "20mbit", "loss": "5%"})
    mtu = selfcheck.path_mtu(fake_lab, "client", fake_lab.ip("server"), family=4)
    row = selfcheck._rate_row(
        fake_lab, "client", "server", spec, None, network=None, family=4, mtu=mtu
    )
    (iperf,) = [argv for argv in runs if "iperf3" in argv]
    assert iperf[iperf.index("-l") + 1] == payload
    probes = [(service, argv[:2]) for service, argv, _ in fake_lab.netkit_runs if "-c" in argv]
    assert ("client", ("python3", "-c")) in probes  # the MTU as the sender's namespace has it
    assert row.metric == "rate"
    assert ("-byte datagrams: the path's MTU" in row.note) == (payload != "1400")
    assert ("path MTU unknown, sent 1400-byte datagrams" in row.note) == (answer == "")


@pytest.mark.parametrize(
    ("address", "family"), [pytest.param("127.0.0.1", 4, id="v4"), pytest.param("::1", 6, id="v6")]
)
def test_the_path_mtu_probe_reads_the_kernels_figure(address: str, family: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", selfcheck._PATH_MTU_PROBE, address, str(family)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    loopback = int(Path("/sys/class/net/lo/mtu").read_text())
    # IPv4's IP_MTU is capped at the largest IP packet; IPv6 reports the device's.
    assert int(done.stdout) == (min(loopback, 65535) if family == 4 else loopback)
