"""Running shaping: helper containers, rules in namespaces, status and self-check.

The thin I/O part of lab.shaping. Every command a namespace gets comes from
``lab.shaping.builders``; this module only decides where to run it:

* a throwaway netkit container in the namespace (``Lab.netkit_run``) for
  probes, rule changes and measurements (iperf3 through :mod:`lab.iperf3`);
* one long-lived **helper** per shaped link (``<project>-shaper-SRC-DST``),
  joined to the source's namespace and labelled with the link, its spec,
  engine and queue. With the nfqueue engine it runs the verdict loop; with
  netem (or rate only) it just idles, as the record of the link.

``lab down`` removes helpers with everything else carrying the project label.
``link_status`` compares the helpers with the rules really in force, so a dead
helper or a restarted service shows up instead of being papered over.

Timeouts and probe counts come from ``lab.config.shaping``
(:class:`lab.config.ShapingConfig`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lab.errors import DockerError, HelperNotReady, LabError, ServiceNotFound
from lab.interface import ExecResult, HelperContainer, Lab
from lab.iperf3 import run_iperf3
from lab.shaping import builders, measure
from lab.shaping.builders import (
    LABEL_DEST,
    LABEL_DEST_IP,
    LABEL_DEV,
    LABEL_ENGINE,
    LABEL_KIND,
    LABEL_NETNS,
    LABEL_QUEUE,
    LABEL_SOURCE,
    LABEL_SOURCE_IP,
    LABEL_SPEC,
    Engine,
    RulesInForce,
)
from lab.shaping.errors import SelfCheckFailed, ShapingError
from lab.shaping.measure import CheckRow
from lab.shaping.spec import LinkSpec

log = logging.getLogger("lab.shaping")

SHAPER_ROLE = "shaper"
SHAPER_CAPS = ("NET_ADMIN", "NET_RAW")
# What the verdict loop logs once it has bound its queue (socketlab.shaper.loop).
SHAPER_STARTED = "event=shaper_started"
# Offer UDP this much above the rate, so the limit (not the sender) sets the pace.
UDP_OVEROFFER = 1.3


@dataclass(frozen=True, kw_only=True)
class ShapeResult:
    """What ``shape`` did, including the engine and any self-check measurements."""

    source: str
    dest: str
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    helper: str
    checks: tuple[CheckRow, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Helper:
    """A shaping helper container as read back from its labels."""

    name: str
    source: str
    dest: str
    source_ip: str
    dest_ip: str
    netns: str  # the service whose namespace the helper joined
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    state: str  # docker state: running, exited, ...
    started_at: str
    container: HelperContainer | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_container(cls, container: HelperContainer) -> Helper:
        labels = container.labels
        return cls(
            name=container.name,
            source=labels[LABEL_SOURCE],
            dest=labels[LABEL_DEST],
            source_ip=labels[LABEL_SOURCE_IP],
            dest_ip=labels[LABEL_DEST_IP],
            netns=labels[LABEL_NETNS],
            spec=LinkSpec.parse(labels[LABEL_SPEC]),
            engine=Engine(labels[LABEL_ENGINE]),
            queue=int(labels[LABEL_QUEUE]),
            dev=labels[LABEL_DEV],
            state=container.status,
            started_at=container.started_at,
            container=container,
        )


@dataclass(frozen=True, kw_only=True)
class LinkState:
    """One row of the truth about a link: what was asked and what is in force."""

    link: str
    shaping: str
    engine: str
    state: str
    helper: str
    healthy: bool
    # The kernel's drops of packets on their way to the verdict loop: the queue
    # was full, or the loop's socket buffer was ("-": no verdict loop, or none bound).
    queue_drops: str = "-"

    def as_row(self) -> dict[str, str]:
        return {
            "link": self.link,
            "shaping": self.shaping,
            "engine": self.engine,
            "state": self.state,
            "queue drops": self.queue_drops,
            "helper": self.helper,
        }


# --------------------------------------------------------------------------- plumbing


def helper_name(project: str, source: str, dest: str) -> str:
    return f"{project}-shaper-{source}-{dest}"


def _helpers(lab: Lab) -> list[Helper]:
    helpers = []
    for container in lab.helpers(SHAPER_ROLE):
        try:
            helpers.append(Helper.from_container(container))
        except (KeyError, ValueError, LabError) as exc:
            log.warning("event=bad_helper_labels name=%s error=%s", container.name, exc)
    return sorted(helpers, key=lambda h: (h.source, h.dest))


def _netns_sh(lab: Lab, service: str, script: str, *, what: str) -> ExecResult:
    """Run a shell script with NET_ADMIN in ``service``'s network namespace."""
    timeout = lab.config.shaping.netns_timeout
    result = lab.netkit_run(service, ["sh", "-c", script], timeout=timeout, net_admin=True)
    if not result.ok:
        detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        raise ShapingError(f"{what} in {service}'s namespace failed ({result.exit_code}): {detail}")
    return result


def _run_steps(lab: Lab, service: str, steps: Sequence[builders.Step], *, what: str) -> None:
    log.info("event=netns_steps service=%s what=%r steps=%d", service, what, len(steps))
    _netns_sh(lab, service, builders.render_script(steps), what=what)


def _remove_helper(lab: Lab, helper: Helper) -> None:
    """Stop the helper (a verdict loop takes its queue down cleanly), then remove it."""
    if helper.container is None:
        return
    if helper.running:
        with contextlib.suppress(LabError):  # it may have ended meanwhile; remove() follows
            helper.container.stop(timeout=lab.config.shaping.helper_stop_timeout)
    helper.container.remove()


@dataclass(frozen=True, kw_only=True)
class _Link:
    """Everything needed to put one link's shaping in place or take it away."""

    source: str
    dest: str
    source_ip: str
    dest_ip: str
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str

    @property
    def needs_loop(self) -> bool:
        return builders.needs_verdict_loop(self.spec, self.engine)

    @property
    def netns(self) -> str:
        # The verdict loop sits on DEST's ingress (see builders); a helper that
        # only records the link stays with the source.
        return self.dest if self.needs_loop else self.source

    @property
    def name(self) -> str:
        return f"{self.source} -> {self.dest}"


def _link_of(helper: Helper) -> _Link:
    return _Link(
        source=helper.source,
        dest=helper.dest,
        source_ip=helper.source_ip,
        dest_ip=helper.dest_ip,
        spec=helper.spec,
        engine=helper.engine,
        queue=helper.queue,
        dev=helper.dev,
    )


def _apply(lab: Lab, link: _Link) -> None:
    egress = builders.egress_steps(
        engine=link.engine, dev=link.dev, dest_ip=link.dest_ip, queue=link.queue, spec=link.spec
    )
    _run_steps(lab, link.source, egress, what=f"shaping {link.name} (egress)")
    ingress = builders.ingress_steps(
        engine=link.engine, source_ip=link.source_ip, queue=link.queue, spec=link.spec
    )
    _run_steps(lab, link.dest, ingress, what=f"shaping {link.name} (ingress)")


def _sync_offload(lab: Lab, source: str, dev: str) -> None:
    """Segmentation offload off while any link from ``source`` impairs per packet, else on."""
    wire_size = any(
        builders.needs_wire_size_packets(h.spec)
        for h in _helpers(lab)
        if h.source == source and h.dev == dev and h.running
    )
    steps = builders.segmentation_offload_steps(dev=dev, enabled=not wire_size)
    with contextlib.suppress(ServiceNotFound):  # a stopped service took its namespace along
        _run_steps(lab, source, steps, what=f"segmentation offload in {source}")


def _remove(lab: Lab, link: _Link) -> None:
    # A service that is gone took its namespace, and the rules in it, along.
    with contextlib.suppress(LabError):
        steps = builders.unshape_egress_steps(dev=link.dev, queue=link.queue)
        _run_steps(lab, link.source, steps, what=f"unshaping {link.name} (egress)")
    with contextlib.suppress(LabError):
        steps = builders.unshape_ingress_steps(source_ip=link.source_ip, queue=link.queue)
        _run_steps(lab, link.dest, steps, what=f"unshaping {link.name} (ingress)")


def _cpu_shares(lab: Lab, link: _Link) -> int | None:
    # A verdict loop's wake-up latency is its link's delay error: on a busy host
    # it goes first (it needs little CPU, so it takes little from anyone).
    shares = lab.config.shaping.helper_cpu_shares
    return shares if link.needs_loop and shares > 0 else None


def _start_helper(lab: Lab, link: _Link, *, seed: int | None) -> str:
    command = (
        builders.shaper_command(
            queue=link.queue,
            spec=link.spec,
            seed=seed,
            stats_interval=lab.config.shaping.stats_interval,
        )
        if link.needs_loop
        else ["socketlab", "idle"]
    )
    name = helper_name(lab.project, link.source, link.dest)
    labels = {
        LABEL_KIND: "shape",
        LABEL_SOURCE: link.source,
        LABEL_DEST: link.dest,
        LABEL_SOURCE_IP: link.source_ip,
        LABEL_DEST_IP: link.dest_ip,
        LABEL_NETNS: link.netns,
        LABEL_SPEC: link.spec.describe(),
        LABEL_ENGINE: str(link.engine),
        LABEL_QUEUE: str(link.queue),
        LABEL_DEV: link.dev,
    }
    timeout = lab.config.shaping.helper_ready_timeout
    try:
        lab.start_helper(
            link.netns,
            command,
            role=SHAPER_ROLE,
            caps=SHAPER_CAPS,
            name=name,
            labels=labels,
            # Ready once it runs; a verdict loop once it has bound the queue, too.
            ready=SHAPER_STARTED if link.needs_loop else "",
            ready_timeout=timeout,
            cpu_shares=_cpu_shares(lab, link),
        )
    except HelperNotReady as exc:
        if exc.exited:
            logs = "\n".join(exc.output.strip().splitlines()[-5:])
            raise ShapingError(f"shaping helper {name} stopped: {logs}") from exc
        raise ShapingError(f"shaping helper {name} not ready after {timeout:.0f} s") from exc
    except DockerError as exc:
        raise ShapingError(f"cannot start shaping helper {name}: {exc}") from exc
    return name


# --------------------------------------------------------------------------- shaping


def shape(
    lab: Lab,
    source: str,
    dest: str,
    spec: LinkSpec,
    *,
    engine: Engine | str | None = None,
    check: bool = False,
    seed: int | None = None,
) -> ShapeResult:
    """Shape the ``source -> dest`` direction (replacing earlier shaping of that link).

    ``engine`` forces ``netem`` or ``nfqueue``; by default netem when the kernel
    has it. With ``check``, the link is measured afterwards and ShapingError
    raised (shaping left in place) when the numbers do not match.
    """
    if source == dest:
        raise ShapingError(f"a link needs two different services, not {source!r} twice")
    if spec.is_empty:
        raise ShapingError(f"nothing to shape for {source} -> {dest}: give at least one option")
    requested = Engine(engine) if engine is not None else None
    source_ip, dest_ip = lab.ip(source), lab.ip(dest)
    probe = builders.parse_probe(
        _netns_sh(lab, source, builders.probe_script(dest_ip), what="probe").stdout
    )
    chosen = builders.choose_engine(requested, probe)
    helpers = _helpers(lab)
    previous = next((h for h in helpers if (h.source, h.dest) == (source, dest)), None)
    if previous is not None:
        # Off first: the self-check baseline must be this link unshaped.
        _remove(lab, _link_of(previous))
        _remove_helper(lab, previous)
        queue = previous.queue
    else:
        # One number space for the whole lab: it names the queue and the htb class.
        queue = builders.free_queue(h.queue for h in helpers)
    link = _Link(
        source=source,
        dest=dest,
        source_ip=source_ip,
        dest_ip=dest_ip,
        spec=spec,
        engine=chosen,
        queue=queue,
        dev=probe.dev,
    )
    # The baseline includes whatever shapes the way back, so only this link's
    # own delay is expected on top of it.
    probes = lab.config.shaping.baseline_probes
    baseline = measure_loss(lab, source, dest, probes=probes) if check else None
    _apply(lab, link)
    helper = _start_helper(lab, link, seed=seed)
    _sync_offload(lab, source, probe.dev)
    log.info(
        "event=shaped link=%s->%s engine=%s queue=%d spec=%r",
        source,
        dest,
        chosen,
        queue,
        spec.describe(),
    )
    result = ShapeResult(
        source=source,
        dest=dest,
        spec=spec,
        engine=chosen,
        queue=queue,
        dev=probe.dev,
        helper=helper,
    )
    if baseline is None:
        return result
    reverse = next((h.spec for h in _helpers(lab) if (h.source, h.dest) == (dest, source)), None)
    checks = self_check(lab, source, dest, spec, baseline=baseline, reverse=reverse)
    result = dataclasses.replace(result, checks=tuple(checks))
    failed = [row for row in checks if not row.ok]
    if failed:
        detail = "; ".join(
            f"{r.metric}: requested {r.requested}, measured {r.measured}" for r in failed
        )
        raise SelfCheckFailed(
            f"self-check of {source} -> {dest} ({chosen}) failed: {detail} (shaping left in place)",
            rows=tuple(row.as_row() for row in checks),
        )
    return result


def unshape(lab: Lab, source: str | None = None, dest: str | None = None) -> list[str]:
    """Remove shaping from one link, or every link when no pair is given; returns links."""
    if (source is None) != (dest is None):
        raise ShapingError("give both services of a link, or neither (all links)")
    removed = []
    touched: set[tuple[str, str]] = set()
    for helper in _helpers(lab):
        if source is not None and (helper.source, helper.dest) != (source, dest):
            continue
        _remove(lab, _link_of(helper))
        _remove_helper(lab, helper)
        removed.append(f"{helper.source} -> {helper.dest}")
        touched.add((helper.source, helper.dev))
    for touched_source, dev in sorted(touched):
        _sync_offload(lab, touched_source, dev)
    if source is None:
        # Rules whose helper is gone (removed by hand, say) would otherwise linger.
        ips = _service_ips(lab)
        names = {ip: name for name, ip in ips.items()}
        for service, rules in _rules_by_service(lab, ips).items():
            if rules.queues or rules.classes:
                steps = builders.clear_shaping_steps(rules.queues)
                _run_steps(lab, service, steps, what=f"clearing shaping in {service}")
                orphans = [f"{names.get(ip, ip)} -> {service}" for ip in rules.queues]
                orphans += [f"{service} -> {names.get(ip, ip)}" for ip in rules.classes]
                removed += [f"{o} (orphan)" for o in orphans if o not in removed]
    return removed


def partition(lab: Lab, a: str, b: str) -> None:
    """Block all traffic between services ``a`` and ``b``, both directions."""
    if a == b:
        raise ShapingError(f"cannot partition {a!r} from itself")
    ip_a, ip_b = lab.ip(a), lab.ip(b)
    _run_steps(lab, a, builders.partition_steps(ip_b), what=f"partitioning {a} from {b}")
    _run_steps(lab, b, builders.partition_steps(ip_a), what=f"partitioning {b} from {a}")


def heal(lab: Lab, a: str | None = None, b: str | None = None) -> list[str]:
    """Remove the partition between ``a`` and ``b``, or every partition; returns pairs."""
    if (a is None) != (b is None):
        raise ShapingError("give both services of a pair, or neither (all partitions)")
    ips = _service_ips(lab)
    names = {ip: name for name, ip in ips.items()}
    healed: set[str] = set()
    for service, rules in _rules_by_service(lab, ips).items():
        for dropped_ip in rules.drops:
            peer = names.get(dropped_ip, dropped_ip)
            if a is not None and {service, peer} != {a, b}:
                continue
            _run_steps(lab, service, builders.heal_steps(dropped_ip), what=f"healing {service}")
            healed.add(" <-> ".join(sorted((service, peer))))
    return sorted(healed)


# --------------------------------------------------------------------------- status


def _service_ips(lab: Lab) -> dict[str, str]:
    ips = {}
    for row in lab.status():
        if row.state == "running" and row.ip not in {"", "-"}:
            ips[row.service] = row.ip
    return ips


def _rules_by_service(lab: Lab, ips: dict[str, str]) -> dict[str, RulesInForce]:
    rules = {}
    for service in ips:
        result = _netns_sh(lab, service, builders.STATUS_SCRIPT, what="reading rules")
        rules[service] = builders.parse_status(result.stdout)
    return rules


def link_status(lab: Lab) -> list[LinkState]:
    """Every shaped or partitioned link, comparing helpers with the rules in force."""
    ips = _service_ips(lab)
    if not ips:
        return []
    names = {ip: name for name, ip in ips.items()}
    rules = _rules_by_service(lab, ips)
    started = {}
    for service in ips:
        with contextlib.suppress(LabError):
            started[service] = lab.started_at(service)
    return evaluate_links(_helpers(lab), rules, names, source_started=started)


def evaluate_links(
    helpers: Iterable[Helper],
    rules: dict[str, RulesInForce],
    names: dict[str, str],
    *,
    source_started: dict[str, str],
) -> list[LinkState]:
    """The truth table behind ``lab status``: pure, given helpers and rules."""
    states: list[LinkState] = []
    claimed: set[tuple[str, str, str]] = set()  # (service, kind, peer ip)
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
                queue_drops=_queue_drops(helper, rules),
            )
        )
    for service, in_force in sorted(rules.items()):
        for ip, queue in sorted(in_force.queues.items()):
            if (service, "queue", ip) not in claimed:
                states.append(_orphan(names.get(ip, ip), service, f"NFQUEUE {queue}, no helper"))
        for ip in sorted(in_force.classes):
            if (service, "class", ip) not in claimed:
                states.append(_orphan(service, names.get(ip, ip), "tc class, no helper"))
    states += _partition_states(rules, names)
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
        claimed.add((helper.dest, "queue", helper.source_ip))
        queues = rules.get(helper.dest, RulesInForce()).queues
        if queues.get(helper.source_ip) != helper.queue:
            problems.append("NFQUEUE rule missing: not impaired")
        if not helper.running:
            problems.append("verdict loop down: link fails open (passes unimpaired)")
    if builders.uses_htb(helper.spec, helper.engine):
        claimed.add((helper.source, "class", helper.dest_ip))
        classes = rules.get(helper.source, RulesInForce()).classes
        if classes.get(helper.dest_ip) != helper.queue:
            problems.append("tc class/filter missing: not shaped")
    if helper.started_at and source_started.get(helper.netns, "") > helper.started_at:
        problems.append(f"{helper.netns} restarted after shaping: shape again")
    return sorted(problems)


def _queue_drops(helper: Helper, rules: dict[str, RulesInForce]) -> str:
    """``queue full N, socket full M`` from the kernel's counters of the link's queue."""
    if not builders.needs_verdict_loop(helper.spec, helper.engine):
        return "-"
    stats = rules.get(helper.dest, RulesInForce()).queue_stats.get(helper.queue)
    if stats is None:
        return "-"
    return f"queue full {stats.queue_dropped}, socket full {stats.user_dropped}"


def _orphan(source: str, dest: str, what: str) -> LinkState:
    return LinkState(
        link=f"{source} -> {dest}",
        shaping="?",
        engine="?",
        state=f"orphan rule ({what}): run lab unshape",
        helper="-",
        healthy=False,
    )


def _partition_states(rules: dict[str, RulesInForce], names: dict[str, str]) -> list[LinkState]:
    blocked: set[tuple[str, str]] = set()  # (receiver, sender) whose packets are dropped
    for service, in_force in rules.items():
        blocked |= {(service, names.get(ip, ip)) for ip in in_force.drops}
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
            )
        )
    return states


def link_rows(lab: Lab) -> list[dict[str, str]]:
    """Rows for the "links" table of ``lab status``."""
    return [state.as_row() for state in link_status(lab)]


# --------------------------------------------------------------------------- measuring


def _probe(
    lab: Lab, source: str, peer_ip: str, *, count: int, interval: float, linger: float
) -> measure.PingStats:
    argv = ["socketlab", "probe", peer_ip, "--count", str(count),
            "--interval", f"{interval:g}", "--linger", f"{linger:g}"]  # fmt: skip
    timeout = count * interval + linger + 15.0
    # NET_ADMIN only lets the prober enlarge its receive buffer beyond rmem_max.
    result = lab.netkit_run(source, argv, timeout=timeout, net_admin=True)
    if not result.ok:
        raise ShapingError(f"probing {peer_ip} from {source} failed: {result.stderr.strip()}")
    return measure.parse_probe(result.stdout)


def measure_rtt(lab: Lab, source: str, dest: str, *, count: int | None = None) -> measure.PingStats:
    """ICMP echo ``source -> dest`` from source's namespace (through its shaping), 20 ms
    apart; ``count`` defaults to the configured ``check_pings``."""
    count = lab.config.shaping.check_pings if count is None else count
    return _probe(lab, source, lab.ip(dest), count=count, interval=0.02, linger=2.0)


def measure_loss(
    lab: Lab, source: str, dest: str, *, probes: int, linger: float = 2.0, interval: float = 0.002
) -> measure.PingStats:
    """Send ``probes`` echo requests ``interval`` apart; count answers, waiting for stragglers."""
    return _probe(lab, source, lab.ip(dest), count=probes, interval=interval, linger=linger)


def measure_rate(
    lab: Lab,
    source: str,
    dest: str,
    *,
    seconds: int | None = None,
    udp_offered: int | None = None,
) -> float:
    """Received payload bit/s ``source -> dest`` with iperf3 (server in dest's namespace).

    TCP by default; with ``udp_offered`` (bit/s) a UDP stream of 1,400-byte datagrams.
    ``seconds`` defaults to the configured ``check_rate_seconds``.
    """
    config = lab.config.shaping
    seconds = config.check_rate_seconds if seconds is None else seconds
    args = ["-t", str(seconds), "-O", "1"]
    if udp_offered is not None:
        args += ["-u", "-b", str(udp_offered), "-l", str(measure.UDP_PAYLOAD)]
    result = run_iperf3(
        lab,
        server=dest,
        client=source,
        port=config.iperf_port,
        args=args,
        timeout=seconds + 30,
        ready_timeout=config.helper_ready_timeout,
    )
    return measure.parse_iperf3(result.stdout)


def self_check(
    lab: Lab,
    source: str,
    dest: str,
    spec: LinkSpec,
    *,
    baseline: measure.PingStats,
    reverse: LinkSpec | None = None,
) -> list[CheckRow]:
    """Measure the shaped link and compare with ``spec`` (and the reverse link's)."""
    rows = []
    base_rtt = baseline.rtt_median or baseline.rtt_avg or 0.0
    expected_loss = measure.round_trip_loss(spec, reverse)
    wait = 2 * (spec.delay + spec.jitter + (reverse.delay + reverse.jitter if reverse else 0.0))
    statistical = expected_loss or spec.duplicate or (reverse and reverse.duplicate)
    config = lab.config.shaping
    probes = config.check_loss_probes if statistical else config.check_pings
    stats = measure_loss(lab, source, dest, probes=probes, linger=wait + 1.0)
    # ``baseline`` was measured with the reverse link as it is: only ours adds.
    expected_added = measure.median_one_way_delay(spec)
    rows.append(
        measure.check_delay(
            expected_added=expected_added,
            baseline=base_rtt,
            stats=stats,
            jitter=spec.jitter + (reverse.jitter if reverse else 0.0),
        )
    )
    rows.append(measure.check_loss(expected=expected_loss, stats=stats))
    expected_duplicates = measure.round_trip_duplicates(spec, reverse)
    if expected_duplicates:
        rows.append(measure.check_duplicates(expected=expected_duplicates, stats=stats))
    if spec.rate is not None:
        if measure.rate_is_checkable(spec, reverse):
            goodput = measure_rate(lab, source, dest)
            rows.append(measure.check_rate(requested=spec.rate, goodput=goodput))
        else:
            offered = int(spec.rate * UDP_OVEROFFER)
            received = measure_rate(lab, source, dest, udp_offered=offered)
            rows.append(
                measure.check_rate_udp(requested=spec.rate, received=received, forward=spec)
            )
    return rows
