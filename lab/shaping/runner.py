"""Running shaping: helper containers, rules in namespaces, status and self-check.

The thin I/O part of lab.shaping. Every command a namespace gets comes from
``lab.shaping.builders``; this module only decides where to run it:

* a throwaway netkit container in the namespace (``Lab.netkit_run``) for
  probes, rule changes and measurements (iperf3 through :mod:`lab.iperf3`);
* one long-lived **helper** per shaped link (``<project>-shaper-SRC-DST``,
  ``-on-NET`` added when the lab has several networks), joined to the
  source's namespace and labelled with the link (services, replicas,
  network, addresses of each family, subnets forwarded by a router), its
  spec, engine and queue. With the nfqueue engine it runs the verdict loop;
  with netem (or rate only) it just idles, as the record of the link.

A *link* is a pair of containers on a network they share
(:meth:`lab.topology.Topology.links`): a bare service with replicas stands
for each of them, ``--network`` picks among shared networks, and a link
whose far end is a router also carries what the router forwards. Both
families are shaped on a dual-stack network unless ``family`` picks one.

``lab down`` removes helpers with everything else carrying the project label.
``link_status`` compares the helpers with the rules really in force, so a dead
helper or a restarted service shows up instead of being papered over.

Timeouts and probe counts come from ``lab.config.shaping``
(:class:`lab.config.ShapingConfig`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lab.config import ShapingConfig
from lab.errors import DockerError, HelperNotReady, LabError, ServiceNotFound
from lab.interface import ExecResult, HelperContainer, Lab
from lab.iperf3 import run_iperf3
from lab.shaping import builders, expected, measure, partitions
from lab.shaping.builders import (
    LABEL_DEST,
    LABEL_DEST_IP,
    LABEL_DEST_IP6,
    LABEL_DEST_NETS,
    LABEL_DEST_REPLICA,
    LABEL_DEV,
    LABEL_ENGINE,
    LABEL_KIND,
    LABEL_NETNS,
    LABEL_NETWORK,
    LABEL_QUEUE,
    LABEL_SOURCE,
    LABEL_SOURCE_IP,
    LABEL_SOURCE_IP6,
    LABEL_SOURCE_NETS,
    LABEL_SOURCE_REPLICA,
    LABEL_SPEC,
    Engine,
    RulesInForce,
    family_of,
)
from lab.shaping.errors import SelfCheckFailed, ShapingError
from lab.shaping.measure import CheckRow
from lab.shaping.spec import LinkSpec, format_percent
from lab.topology import Family, Instance, Link, Topology
from socketlab.shaper.probe import LISTENING as SHAPER_PROBE_LISTENING

log = logging.getLogger("lab.shaping")

SHAPER_ROLE = "shaper"
SHAPER_CAPS = ("NET_ADMIN", "NET_RAW")
# What the verdict loop logs once it has bound its queue (socketlab.shaper.loop).
SHAPER_STARTED = "event=shaper_started"
# Offer UDP this much above the rate, so the limit (not the sender) sets the pace.
UDP_OVEROFFER = 1.3


@dataclass(frozen=True, kw_only=True)
class ShapeResult:
    """What ``shape`` did, including the engine and any self-check measurements.

    For a name with replicas the first link's result, with the rest in ``others``.
    """

    source: str
    dest: str
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    helper: str
    checks: tuple[CheckRow, ...] = ()
    network: str = ""
    families: tuple[Family, ...] = (4,)
    others: tuple[ShapeResult, ...] = ()
    notes: tuple[str, ...] = ()  # what to know about the shaping asked (loss notes, engine gaps)

    @property
    def shaped(self) -> tuple[ShapeResult, ...]:
        """Every link shaped, this one first."""
        return (self, *self.others)


def _plain_name(service: str, replica: int) -> str:
    return service if replica == 1 else f"{service}.{replica}"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


class _LinkEnds:
    """The keys of a link's two ends: each replica as ``service.N``, on its network."""

    source: str
    dest: str
    network: str
    source_service: str
    source_replica: int
    dest_service: str
    dest_replica: int

    @property
    def source_key(self) -> str:
        return f"{self.source_service or self.source}.{self.source_replica}"

    @property
    def dest_key(self) -> str:
        return f"{self.dest_service or self.dest}.{self.dest_replica}"

    @property
    def link_key(self) -> tuple[str, str, str]:
        return (self.source_key, self.dest_key, self.network)


@dataclass(frozen=True, kw_only=True)
class Helper(_LinkEnds):
    """A shaping helper container as read back from its labels.

    ``source``, ``dest`` and ``netns`` are the names the containers go by
    now (``client``, ``client.2``); ``*_service`` and ``*_replica`` are what
    the labels recorded.
    """

    name: str
    source: str
    dest: str
    source_ip: str
    dest_ip: str
    netns: str  # the container whose namespace the helper joined
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    state: str  # docker state: running, exited, ...
    started_at: str
    container: HelperContainer | None = None
    network: str = ""
    source_service: str = ""
    source_replica: int = 1
    dest_service: str = ""
    dest_replica: int = 1
    source_ip6: str = ""
    dest_ip6: str = ""
    source_nets: tuple[str, ...] = ()
    dest_nets: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def source_ips(self) -> tuple[str, ...]:
        """Where the link's packets come from, as DEST's ingress rules match them."""
        return tuple(ip for ip in (self.source_ip, self.source_ip6) if ip) + self.source_nets

    @property
    def dest_ips(self) -> tuple[str, ...]:
        return tuple(ip for ip in (self.dest_ip, self.dest_ip6) if ip)

    @classmethod
    def from_container(
        cls, container: HelperContainer, display: Callable[[str, int], str] = _plain_name
    ) -> Helper:
        labels = container.labels
        source, dest = labels[LABEL_SOURCE], labels[LABEL_DEST]
        source_replica = int(labels.get(LABEL_SOURCE_REPLICA) or 1)
        dest_replica = int(labels.get(LABEL_DEST_REPLICA) or 1)
        netns_label = labels[LABEL_NETNS]
        if netns_label in {dest, f"{dest}.{dest_replica}"}:
            netns = display(dest, dest_replica)
        else:
            netns = display(source, source_replica)
        return cls(
            name=container.name,
            source=display(source, source_replica),
            dest=display(dest, dest_replica),
            source_ip=labels[LABEL_SOURCE_IP],
            dest_ip=labels[LABEL_DEST_IP],
            netns=netns,
            spec=LinkSpec.parse(labels[LABEL_SPEC]),
            engine=Engine(labels[LABEL_ENGINE]),
            queue=int(labels[LABEL_QUEUE]),
            dev=labels[LABEL_DEV],
            state=container.status,
            started_at=container.started_at,
            container=container,
            network=labels.get(LABEL_NETWORK, ""),
            source_service=source,
            source_replica=source_replica,
            dest_service=dest,
            dest_replica=dest_replica,
            source_ip6=labels.get(LABEL_SOURCE_IP6, ""),
            dest_ip6=labels.get(LABEL_DEST_IP6, ""),
            source_nets=_csv(labels.get(LABEL_SOURCE_NETS, "")),
            dest_nets=_csv(labels.get(LABEL_DEST_NETS, "")),
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


# --------------------------------------------------------------------------- plumbing


def helper_name(project: str, source: str, dest: str, network: str | None = None) -> str:
    """``<project>-shaper-SRC-DST``; ``-on-NET`` when the lab has several networks."""
    return f"{project}-shaper-{source}-{dest}" + (f"-on-{network}" if network else "")


def _display(topology: Topology) -> Callable[[str, int], str]:
    def display(service: str, replica: int) -> str:
        for instance in topology.instances:
            if (instance.service, instance.number) == (service, replica):
                return instance.name
        return f"{service}.{replica}"

    return display


def _helpers(lab: Lab, topology: Topology | None = None) -> list[Helper]:
    display = _display(topology) if topology is not None else _plain_name
    helpers = []
    for container in lab.helpers(SHAPER_ROLE):
        try:
            helpers.append(Helper.from_container(container, display))
        except (KeyError, ValueError, LabError) as exc:
            log.warning("event=bad_helper_labels name=%s error=%s", container.name, exc)
    return sorted(helpers, key=lambda h: (h.source, h.dest, h.network))


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
class _Link(_LinkEnds):
    """Everything needed to put one link's shaping in place or take it away."""

    source: str  # the containers' names now (client, client.2)
    dest: str
    source_ip: str  # "" when the link shapes IPv6 only
    dest_ip: str
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    network: str = ""
    source_service: str = ""
    source_replica: int = 1
    dest_service: str = ""
    dest_replica: int = 1
    source_ip6: str = ""
    dest_ip6: str = ""
    source_nets: tuple[str, ...] = ()  # subnets DEST reaches through SOURCE (a router)
    dest_nets: tuple[str, ...] = ()  # subnets SOURCE reaches through DEST (a router)

    @property
    def needs_loop(self) -> bool:
        return builders.needs_verdict_loop(self.spec, self.engine)

    @property
    def netns(self) -> str:
        # The verdict loop sits on DEST's ingress (see builders); a helper that
        # only records the link stays with the source.
        return self.dest if self.needs_loop else self.source

    @property
    def netns_key(self) -> str:
        return self.dest_key if self.needs_loop else self.source_key

    @property
    def name(self) -> str:
        return f"{self.source} -> {self.dest}"

    @property
    def key(self) -> tuple[str, str, str]:
        return self.link_key


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
        network=helper.network,
        source_service=helper.source_service,
        source_replica=helper.source_replica,
        dest_service=helper.dest_service,
        dest_replica=helper.dest_replica,
        source_ip6=helper.source_ip6,
        dest_ip6=helper.dest_ip6,
        source_nets=helper.source_nets,
        dest_nets=helper.dest_nets,
    )


def _apply(lab: Lab, link: _Link) -> None:
    egress = builders.egress_steps(
        engine=link.engine,
        dev=link.dev,
        dest_ip=link.dest_ip,
        queue=link.queue,
        spec=link.spec,
        dest_ip6=link.dest_ip6 or None,
        dest_nets=link.dest_nets,
    )
    _run_steps(lab, link.source, egress, what=f"shaping {link.name} (egress)")
    ingress = builders.ingress_steps(
        engine=link.engine,
        source_ip=link.source_ip,
        queue=link.queue,
        spec=link.spec,
        source_ip6=link.source_ip6 or None,
        source_nets=link.source_nets,
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
        peers = [ip for ip in (link.dest_ip, link.dest_ip6) if ip] + list(link.dest_nets)
        steps = builders.unshape_egress_steps(
            dev=link.dev, queue=link.queue, mss_peers=peers, mss=link.spec.mss
        )
        _run_steps(lab, link.source, steps, what=f"unshaping {link.name} (egress)")
    with contextlib.suppress(LabError):
        steps = builders.unshape_ingress_steps(
            source_ip=link.source_ip,
            queue=link.queue,
            source_ip6=link.source_ip6 or None,
            source_nets=link.source_nets,
        )
        _run_steps(lab, link.dest, steps, what=f"unshaping {link.name} (ingress)")


def _cpu_shares(lab: Lab, link: _Link) -> int | None:
    # A verdict loop's wake-up latency is its link's delay error: on a busy host
    # it goes first (it needs little CPU, so it takes little from anyone).
    shares = lab.config.shaping.helper_cpu_shares
    return shares if link.needs_loop and shares > 0 else None


def _start_helper(lab: Lab, link: _Link, *, seed: int | None, name: str) -> str:
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
    labels = {
        LABEL_KIND: "shape",
        LABEL_SOURCE: link.source_service or link.source,
        LABEL_DEST: link.dest_service or link.dest,
        LABEL_SOURCE_REPLICA: str(link.source_replica),
        LABEL_DEST_REPLICA: str(link.dest_replica),
        LABEL_NETWORK: link.network,
        LABEL_SOURCE_IP: link.source_ip,
        LABEL_DEST_IP: link.dest_ip,
        LABEL_SOURCE_IP6: link.source_ip6,
        LABEL_DEST_IP6: link.dest_ip6,
        LABEL_SOURCE_NETS: ",".join(link.source_nets),
        LABEL_DEST_NETS: ",".join(link.dest_nets),
        LABEL_NETNS: link.netns_key,
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


# --------------------------------------------------------------------------- links


def _family_ips(
    topology: Topology, instance: Instance, network: str, families: Sequence[Family]
) -> tuple[str, str]:
    """(IPv4, IPv6) of ``instance`` on ``network`` for the asked families ("" for the other)."""
    v4 = topology.address(instance, network, 4) if 4 in families else ""
    v6 = topology.address(instance, network, 6) if 6 in families else ""
    return v4, v6


def _in_families(nets: Iterable[str], families: Sequence[Family]) -> tuple[str, ...]:
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


def _multi_network(topology: Topology) -> bool:
    return len(topology.networks) > 1


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
    network: str | None = None,
    family: Family | None = None,
) -> ShapeResult:
    """Shape the ``source -> dest`` direction (replacing earlier shaping of that link).

    ``source`` and ``dest`` are names as :mod:`lab.addressing` reads them: a bare
    service with replicas shapes the link of every replica. ``network`` picks
    the network when the two share several; ``family`` (4 or 6) shapes one
    family only (default: all the network has). ``engine`` forces ``netem``
    or ``nfqueue``; by default netem when the kernel has it and can do ``spec``.
    ``seed`` (else the spec's) seeds the engine's random decisions; with
    neither, one is picked and recorded in the result's spec (so ``lab
    status`` and reports can replay it).

    Every link is probed and the engine checked against ``spec`` before
    anything changes; if putting a link in place fails, every link this call
    touched is put back as it was, and ShapingError raised. With ``check``,
    each link is measured afterwards and SelfCheckFailed raised (shaping
    left in place) when the numbers do not match.
    """
    if source == dest:
        raise ShapingError(f"a link needs two different services, not {source!r} twice")
    if spec.is_empty:
        raise ShapingError(f"nothing to shape for {source} -> {dest}: give at least one option")
    if seed is not None:
        spec = dataclasses.replace(spec, seed=seed)
    requested = Engine(engine) if engine is not None else None
    topology = lab.topology()
    helpers = _helpers(lab, topology)
    used = {h.queue for h in helpers}
    plans = []
    for link, families in resolve_links(topology, source, dest, network=network, family=family):
        plan = _plan_link(lab, topology, link, families, spec, engine=requested, helpers=helpers)
        if plan.previous is None:
            # One number space for the whole lab: it names the queue and the htb class.
            plan = dataclasses.replace(
                plan, link=dataclasses.replace(plan.link, queue=builders.free_queue(used))
            )
        used.add(plan.link.queue)
        plans.append(plan)
    results: list[ShapeResult] = []
    baselines: list[_Before | None] = []
    done: list[_Plan] = []
    try:
        for plan in plans:
            baselines.append(_put_in_place(lab, topology, plan, check=check))
            done.append(plan)
            results.append(plan.result())
    except LabError as exc:
        problems = [_restore(lab, plan) for plan in reversed(done)]
        failed = "; ".join(problem for problem in problems if problem)
        if failed:
            raise ShapingError(f"{exc}; putting the links back failed too: {failed}") from exc
        raise
    for touched_source, dev in sorted({(p.link.source, p.link.dev) for p in plans}):
        _sync_offload(lab, touched_source, dev)
    if check:
        results = _check_all(lab, topology, plans, results, baselines)
    return dataclasses.replace(results[0], others=tuple(results[1:]))


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """One link as it will be shaped, checked against its engine before anything changes."""

    link: _Link
    name: str  # the helper's
    previous: Helper | None  # the shaping this replaces (and restores on failure)
    families: tuple[Family, ...]
    notes: tuple[str, ...] = ()
    check_family: Family = 4

    def result(self, checks: Sequence[CheckRow] = ()) -> ShapeResult:
        link = self.link
        return ShapeResult(
            source=link.source,
            dest=link.dest,
            spec=link.spec,
            engine=link.engine,
            queue=link.queue,
            dev=link.dev,
            helper=self.name,
            checks=tuple(checks),
            network=link.network,
            families=self.families,
            notes=self.notes,
        )


def pick_seed(spec: LinkSpec, engine: Engine, *, netem_seed: bool) -> LinkSpec:
    """``spec`` with a seed: its own, else a fresh one where the engine draws at random
    and can be seeded (netem only where the kernel reports its seed)."""
    if spec.seed is not None or spec.impairment.is_noop:
        return spec
    if engine is Engine.NETEM and not netem_seed:
        return spec
    return dataclasses.replace(spec, seed=secrets.randbits(32))


def _plan_link(
    lab: Lab,
    topology: Topology,
    resolved: Link,
    families: tuple[Family, ...],
    spec: LinkSpec,
    *,
    engine: Engine | None,
    helpers: Sequence[Helper],
) -> _Plan:
    src, dst = resolved.source.instance, resolved.dest.instance
    source, dest = src.name, dst.name
    source_ip, source_ip6 = _family_ips(topology, src, resolved.network, families)
    dest_ip, dest_ip6 = _family_ips(topology, dst, resolved.network, families)
    probe = builders.parse_probe(
        _netns_sh(lab, source, builders.probe_script(dest_ip or dest_ip6), what="probe").stdout
    )
    chosen = builders.choose_engine(engine, probe, spec)
    spec = pick_seed(spec, chosen, netem_seed=probe.netem_seed)
    warnings = builders.require_engine(spec, chosen, netem_seed=probe.netem_seed)
    link = _Link(
        source=source,
        dest=dest,
        source_ip=source_ip,
        dest_ip=dest_ip,
        spec=spec,
        engine=chosen,
        queue=0,
        dev=probe.dev,
        network=resolved.network,
        source_service=src.service,
        source_replica=src.number,
        dest_service=dst.service,
        dest_replica=dst.number,
        source_ip6=source_ip6,
        dest_ip6=dest_ip6,
        source_nets=_in_families(topology.routed_via(dst, src), families),
        dest_nets=_in_families(topology.routed_via(src, dst), families),
    )
    previous = next((h for h in helpers if h.link_key == link.key), None)
    if previous is not None:
        link = dataclasses.replace(link, queue=previous.queue)
    name = helper_name(
        lab.project, source, dest, resolved.network if _multi_network(topology) else None
    )
    return _Plan(
        link=link,
        name=name,
        previous=previous,
        families=families,
        notes=(*measure.loss_notes(spec), *warnings),
        check_family=4 if link.dest_ip else 6,
    )


@dataclass(frozen=True)
class _Before:
    """What a self-check measured before the link got its shaping."""

    baseline: measure.PingStats
    host_delay: tuple[float, ...] = ()  # the verdict loop's own lateness, per probe (seconds)


# A calibration of the verdict loop's lateness holds packets at least this long.
CALIBRATION_DELAY = 0.01


def needs_calibration(spec: LinkSpec, engine: Engine) -> bool:
    """Whether a self-check measures the host's own delay first: percentiles of a jittered
    link on the userspace engine, whose verdict loop waits for a CPU on a busy host."""
    return engine is Engine.NFQUEUE and bool(spec.jitter)


def _put_in_place(lab: Lab, topology: Topology, plan: _Plan, *, check: bool) -> _Before | None:
    """Replace the link's shaping with the plan's (the baseline first, with ``check``).

    On failure whatever this link had is put back before the error goes on.
    """
    link = plan.link
    if plan.previous is not None:
        # Off first: the self-check baseline must be this link unshaped.
        _remove(lab, _link_of(plan.previous))
        _remove_helper(lab, plan.previous)
    try:
        before = None
        if check:
            # The baseline includes whatever shapes the way back, so only this
            # link's own delay is expected on top of it.
            baseline = measure_loss(
                lab,
                link.source,
                link.dest,
                probes=lab.config.shaping.baseline_probes,
                network=link.network,
                family=plan.check_family,
            )
            host = (
                _host_delay(lab, plan, baseline)
                if needs_calibration(link.spec, link.engine)
                else ()
            )
            before = _Before(baseline=baseline, host_delay=host)
        _apply(lab, link)
        _start_helper(lab, link, seed=None, name=plan.name)
    except LabError as exc:
        problem = _restore(lab, plan)
        if problem:
            raise ShapingError(f"{exc}; putting {link.name} back failed too: {problem}") from exc
        raise
    log.info(
        "event=shaped link=%s network=%s engine=%s queue=%d spec=%r",
        link.name,
        link.network,
        link.engine,
        link.queue,
        link.spec.describe(),
    )
    return before


def _host_delay(lab: Lab, plan: _Plan, baseline: measure.PingStats) -> tuple[float, ...]:
    """How late the verdict loop releases packets on this host now: the link shaped with its
    delay fixed (no jitter) for a moment, measured, and taken away again (seconds late,
    per probe). Percentile bands allow that much on their upper side."""
    fixed = LinkSpec(delay=plan.link.spec.delay or CALIBRATION_DELAY)
    calibration = dataclasses.replace(plan.link, spec=fixed)
    _apply(lab, calibration)
    try:
        _start_helper(lab, calibration, seed=None, name=plan.name)
        stats = measure_loss(
            lab,
            calibration.source,
            calibration.dest,
            probes=lab.config.shaping.check_loss_probes,
            linger=2 * fixed.delay + 1.0,
            network=calibration.network,
            family=plan.check_family,
        )
    finally:
        for helper in _helpers(lab):
            if helper.link_key == calibration.key:
                _remove_helper(lab, helper)
        _remove(lab, calibration)
    base = baseline.rtt_median or baseline.rtt_avg or 0.0
    late = tuple(max(0.0, rtt - base - fixed.delay) for rtt in stats.answered_rtts)
    log.info("event=host_delay link=%s probes=%d", calibration.name, len(late))
    return late


def _restore(lab: Lab, plan: _Plan) -> str:
    """Take the plan's shaping away and put back what the link had; "" or what failed."""
    with contextlib.suppress(LabError):
        for helper in _helpers(lab):
            if helper.link_key == plan.link.key:
                _remove_helper(lab, helper)
    _remove(lab, plan.link)
    if plan.previous is None:
        return ""
    earlier = _link_of(plan.previous)
    try:
        _apply(lab, earlier)
        _start_helper(lab, earlier, seed=None, name=plan.previous.name)
    except LabError as exc:
        log.warning("event=restore_failed link=%s error=%s", earlier.name, exc)
        return f"{earlier.name}: {exc}"
    log.info("event=restored link=%s spec=%r", earlier.name, earlier.spec.describe())
    return ""


def _check_all(
    lab: Lab,
    topology: Topology,
    plans: Sequence[_Plan],
    results: Sequence[ShapeResult],
    baselines: Sequence[_Before | None],
) -> list[ShapeResult]:
    """Self-check every link shaped; SelfCheckFailed (all rows) when any figure is off."""
    checked = []
    failed: list[str] = []
    rows: list[dict[str, str]] = []
    helpers = _helpers(lab, topology)
    for plan, result, before in zip(plans, results, baselines, strict=True):
        assert before is not None  # noqa: S101 - measured for every plan when checking
        link = plan.link
        # The way back counts only if it shapes the family measured.
        reverse = next(
            (
                h.spec
                for h in helpers
                if h.link_key == (link.key[1], link.key[0], link.network)
                and (h.source_ip if plan.check_family == 4 else h.source_ip6)
            ),
            None,
        )
        checks = self_check(
            lab,
            link.source,
            link.dest,
            link.spec,
            baseline=before.baseline,
            reverse=reverse,
            network=link.network,
            family=plan.check_family,
            host_delay=before.host_delay,
        )
        checked.append(dataclasses.replace(result, checks=tuple(checks)))
        rows += [{"link": link.name} | row.as_row() for row in checks]
        bad = [row for row in checks if not row.ok]
        if bad:
            detail = "; ".join(
                f"{r.metric}: requested {r.requested}, measured {r.measured}" for r in bad
            )
            failed.append(f"{link.name} ({link.engine}) failed: {detail}")
    if failed:
        raise SelfCheckFailed(
            "self-check of " + "; ".join(failed) + " (shaping left in place)", rows=tuple(rows)
        )
    return checked


def _selected(helper: Helper, keys: set[tuple[str, str]] | None, network: str | None) -> bool:
    if keys is not None and (helper.source_key, helper.dest_key) not in keys:
        return False
    return network is None or helper.network == network


def _pair_keys(topology: Topology, source: str, dest: str) -> set[tuple[str, str]]:
    return {
        (a.key, b.key)
        for a in topology.select(source)
        for b in topology.select(dest)
        if a.key != b.key
    }


def unshape(
    lab: Lab,
    source: str | None = None,
    dest: str | None = None,
    *,
    network: str | None = None,
) -> list[str]:
    """Remove shaping from one link (every replica's, for a bare service; ``network``:
    only there), or every link when no pair is given; returns the links."""
    if (source is None) != (dest is None):
        raise ShapingError("give both services of a link, or neither (all links)")
    topology = lab.topology()
    if network is not None:
        topology.network(network)
    keys = None if source is None or dest is None else _pair_keys(topology, source, dest)
    removed = []
    touched: set[tuple[str, str]] = set()
    for helper in _helpers(lab, topology):
        if not _selected(helper, keys, network):
            continue
        _remove(lab, _link_of(helper))
        _remove_helper(lab, helper)
        removed.append(f"{helper.source} -> {helper.dest}")
        touched.add((helper.source, helper.dev))
    for touched_source, dev in sorted(touched):
        _sync_offload(lab, touched_source, dev)
    if source is None and network is None:
        # Rules whose helper is gone (removed by hand, say) would otherwise linger.
        names = _address_names(topology)
        for service, rules in _rules_by_service(lab, topology).items():
            if rules.queues or rules.classes or rules.mss:
                steps = builders.clear_shaping_steps(rules.queues)
                _run_steps(lab, service, steps, what=f"clearing shaping in {service}")
                orphans = [f"{names.get(ip, ip)} -> {service}" for ip in rules.queues]
                orphans += [
                    f"{service} -> {names.get(ip, ip)}" for ip in (*rules.classes, *rules.mss)
                ]
                removed += [f"{o} (orphan)" for o in dict.fromkeys(orphans) if o not in removed]
    return removed


def _cut_peers(topology: Topology, me: Instance, peer: Instance, network: str,
               families: Sequence[Family]) -> list[str]:  # fmt: skip
    """What ``me`` drops to be cut from ``peer`` on ``network``: the peer's addresses of
    ``families``, and the subnets ``me`` reaches through the peer when it is a router."""
    v4, v6 = _family_ips(topology, peer, network, families)
    return [ip for ip in (v4, v6) if ip] + list(
        _in_families(topology.routed_via(me, peer), families)
    )


def _sides(
    topology: Topology, a: Sequence[str], b: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two groups of names (``client``, ``client.2``) -> the running containers on each side,
    checked as :func:`lab.shaping.partitions.group_partition` checks groups."""
    running = {i.name: i.ips()[0] for i in _running(topology)}
    side_a = tuple(i.name for name in a for i in topology.select(name))
    side_b = tuple(i.name for name in b for i in topology.select(name))
    plan = partitions.group_partition(side_a, side_b, running)
    return plan.side_a, plan.side_b


def _isolation_sides(topology: Topology, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``target``'s containers, and every other running container."""
    mine = {i.name for i in topology.select(target)}
    others = tuple(i.name for i in _running(topology) if i.name not in mine)
    if not others:
        raise ShapingError(f"nothing to isolate {target!r} from: no other container runs")
    return _sides(topology, sorted(mine), others)


def partition(
    lab: Lab,
    a: str,
    b: str,
    *,
    network: str | None = None,
    family: Family | None = None,
) -> list[str]:
    """Block all traffic between ``a`` and ``b``, both directions; returns the pairs cut.

    Each side is a service, ``service.N`` or a comma-separated group of them
    (``client,rss-poller``): every container of one side is cut from every
    container of the other, while members of one side still reach each other.
    On the network each pair shares (or ``network``); both families unless
    ``family``. A router cut off also stops forwarding for the other side.
    """
    group_a, group_b = partitions.parse_group(a), partitions.parse_group(b)
    if group_a == group_b and len(group_a) == 1:
        raise ShapingError(f"cannot partition {a!r} from itself")
    topology = lab.topology()
    return _cut(lab, topology, *_sides(topology, group_a, group_b), network=network, family=family)


def isolate(
    lab: Lab, target: str, *, network: str | None = None, family: Family | None = None
) -> list[str]:
    """Cut ``target`` (every replica of a bare service) off from every other container."""
    topology = lab.topology()
    return _cut(lab, topology, *_isolation_sides(topology, target), network=network, family=family)


def _cut(
    lab: Lab,
    topology: Topology,
    side_a: Sequence[str],
    side_b: Sequence[str],
    *,
    network: str | None,
    family: Family | None,
) -> list[str]:
    """Every pair across the sides, the steps gathered into one script per namespace."""
    steps: dict[str, list[builders.Step]] = {}
    pairs = []
    for x in side_a:
        for y in side_b:
            for link, families in resolve_links(topology, x, y, network=network, family=family):
                me, peer = link.source.instance, link.dest.instance
                cut_peer = _cut_peers(topology, me, peer, link.network, families)
                cut_me = _cut_peers(topology, peer, me, link.network, families)
                steps.setdefault(me.name, []).extend(builders.partition_steps(*cut_peer))
                steps.setdefault(peer.name, []).extend(builders.partition_steps(*cut_me))
                pairs.append(f"{me.name} <-> {peer.name}")
    for name, own in steps.items():
        unique = list(dict.fromkeys(own))  # the chain steps repeat per peer
        _run_steps(lab, name, unique, what=f"partitioning {name}")
    return list(dict.fromkeys(pairs))


def heal(
    lab: Lab,
    a: str | None = None,
    b: str | None = None,
    *,
    network: str | None = None,
    isolated: str | None = None,
) -> list[str]:
    """Remove the partition between ``a`` and ``b`` (services or comma-separated groups,
    as :func:`partition` takes them; every network they share, unless ``network``), the
    isolation of ``isolated``, or every partition; returns pairs."""
    if (a is None) != (b is None):
        raise ShapingError("give both services of a pair, or neither (all partitions)")
    if isolated is not None and a is not None:
        raise ShapingError("heal either a pair of groups or an isolation, not both")
    topology = lab.topology()
    names = _address_names(topology)
    healed: set[str] = set()
    wanted: set[frozenset[str]] | None = None
    if a is not None and b is not None:
        group_a, group_b = partitions.parse_group(a), partitions.parse_group(b)
        if group_a == group_b and len(group_a) == 1:
            raise ShapingError(f"cannot heal {a!r} from itself")
        wanted = _cut_pairs(topology, group_a, group_b)
    elif isolated is not None:
        mine = {i.key for i in topology.select(isolated)}
        others = [i.key for i in topology.instances if i.key not in mine]
        wanted = _cut_pairs(topology, sorted(mine), others)
    for service, rules in _rules_by_service(lab, topology).items():
        me = topology.instance_named(service)
        steps: list[builders.Step] = []
        for dropped_ip in sorted(rules.drops):
            peer_name = names.get(dropped_ip, dropped_ip)
            if me is not None and dropped_ip not in names:
                peer_name = _router_for(topology, me, dropped_ip) or dropped_ip
            peer = topology.instance_named(peer_name)
            pair = None if me is None or peer is None else frozenset((me.key, peer.key))
            if wanted is not None and (pair is None or pair not in wanted):
                continue
            if network is not None and not _on_network(topology, peer, dropped_ip, network, me):
                continue
            steps += builders.heal_steps(dropped_ip)
            healed.add(" <-> ".join(sorted((service, peer_name))))
        if steps:
            _run_steps(lab, service, steps, what=f"healing {service}")
    return sorted(healed)


def _cut_pairs(
    topology: Topology, side_a: Sequence[str], side_b: Sequence[str]
) -> set[frozenset[str]]:
    """The container keys of every pair across two sides."""
    return {
        frozenset((x.key, y.key))
        for name_a in side_a
        for x in topology.select(name_a)
        for name_b in side_b
        for y in topology.select(name_b)
        if x.key != y.key
    }


def _router_for(topology: Topology, me: Instance, subnet: str) -> str | None:
    """The router ``me`` reaches ``subnet`` through (its name), if any."""
    for route in topology.routes():
        if route.instance == me.key and route.destination == subnet:
            return topology.by_key(route.router).name
    return None


def _on_network(
    topology: Topology, peer: Instance | None, ip: str, network: str, me: Instance | None
) -> bool:
    if peer is None:
        return False
    address = peer.address_on(network)
    if address is not None and ip in {address.ipv4, address.ipv6}:
        return True
    # a subnet behind a router: the network of the hop to the router
    return any(
        route.network == network
        for route in topology.routes()
        if me is not None and route.instance == me.key and route.destination == ip
    )


# --------------------------------------------------------------------------- status


def _address_names(topology: Topology) -> dict[str, str]:
    """Every address of every container (both families) -> the container's name."""
    return {ip: instance.name for instance in topology.instances for ip in instance.ips()}


def _address_networks(topology: Topology) -> dict[str, str]:
    return {
        ip: address.network
        for instance in topology.instances
        for address in instance.addresses
        for ip in (address.ipv4, address.ipv6)
        if ip
    }


def _running(topology: Topology) -> list[Instance]:
    return [i for i in topology.instances if i.state == "running" and i.ips()]


def _rules_by_service(lab: Lab, topology: Topology) -> dict[str, RulesInForce]:
    """The rules in force in each running container's namespace, by its name (read in
    parallel: one helper per namespace)."""
    names = [instance.name for instance in _running(topology)]

    def read(name: str) -> RulesInForce:
        result = _netns_sh(lab, name, builders.STATUS_SCRIPT, what="reading rules")
        return builders.parse_status(result.stdout)

    if len(names) <= 1:
        return {name: read(name) for name in names}
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(8, len(names)), thread_name_prefix="rules"
    ) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


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
    if not _running(topology):
        return [], []
    rules = _via_routers(topology, _rules_by_service(lab, topology))
    started = {}
    for instance in _running(topology):
        started[instance.name] = instance.started_at
    names = _address_names(topology)
    states = evaluate_links(
        _helpers(lab, topology),
        rules,
        names,
        source_started=started,
        networks=_address_networks(topology),
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
    several = _multi_network(topology)
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


def peer_address(
    topology: Topology,
    source: Instance,
    dest: Instance,
    *,
    network: str | None = None,
    family: Family = 4,
) -> str:
    """The address ``source`` reaches ``dest`` at: on the network they share (``network``
    picks), else ``dest``'s first network (through a router)."""
    if network is None and not topology.shared_networks(source, dest):
        return topology.address(dest, topology.default_network(dest), family)
    return topology.address(dest, topology.link_network(source, dest, network), family)


def _peer_ip(lab: Lab, source: str, dest: str, network: str | None, family: Family) -> str:
    if network is None and family == 4:
        return lab.ip(dest)  # the lab's own notion, as before several networks
    topology = lab.topology()
    return peer_address(
        topology, topology.one(source), topology.one(dest), network=network, family=family
    )


def measure_rtt(
    lab: Lab,
    source: str,
    dest: str,
    *,
    count: int | None = None,
    network: str | None = None,
    family: Family = 4,
) -> measure.PingStats:
    """ICMP echo ``source -> dest`` from source's namespace (through its shaping), 20 ms
    apart; ``count`` defaults to the configured ``check_pings``. ``family`` 6: ICMPv6."""
    count = lab.config.shaping.check_pings if count is None else count
    peer = _peer_ip(lab, source, dest, network, family)
    return _probe(lab, source, peer, count=count, interval=0.02, linger=2.0)


def measure_loss(
    lab: Lab,
    source: str,
    dest: str,
    *,
    probes: int,
    linger: float = 2.0,
    interval: float = 0.002,
    network: str | None = None,
    family: Family = 4,
) -> measure.PingStats:
    """Send ``probes`` echo requests ``interval`` apart; count answers, waiting for stragglers."""
    peer = _peer_ip(lab, source, dest, network, family)
    return _probe(lab, source, peer, count=probes, interval=interval, linger=linger)


def measure_rate(
    lab: Lab,
    source: str,
    dest: str,
    *,
    seconds: int | None = None,
    udp_offered: int | None = None,
    network: str | None = None,
    family: Family = 4,
) -> float:
    """Received payload bit/s ``source -> dest`` with iperf3 (server in dest's namespace).

    TCP by default; with ``udp_offered`` (bit/s) a UDP stream of 1,400-byte datagrams.
    ``seconds`` defaults to the configured ``check_rate_seconds``.
    """
    server_ip = _peer_ip(lab, source, dest, network, family)
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
        server_ip=server_ip,
    )
    return measure.parse_iperf3(result.stdout)


# Numbered datagrams of the reorder check go this far apart.
STREAM_INTERVAL = 0.002
STREAM_ROLE = "probe-listener"
# Echo probes under load go this far apart (a few per queue drain, little load of their own).
LOAD_PROBE_INTERVAL = 0.02
# The load fills a queue within about this long, and offers at most this many times the rate.
LOAD_FILL_SECONDS = 1.0
MAX_OVEROFFER = 4.0


def measure_reorder(
    lab: Lab,
    source: str,
    dest: str,
    *,
    count: int,
    interval: float = STREAM_INTERVAL,
    linger: float = 2.0,
    network: str | None = None,
    family: Family = 4,
) -> list[int]:
    """A numbered UDP stream ``source -> dest``, one way: the order its datagrams arrived in.

    A listener in a helper joined to ``dest``'s namespace records the arrivals;
    what shapes the way back does not enter.
    """
    config = lab.config.shaping
    peer = _peer_ip(lab, source, dest, network, family)
    run = secrets.randbits(32)
    port = config.check_stream_port
    sending = count * interval
    listen = ["socketlab", "probe", "--listen", str(port), "--count", str(count),
              "--run", str(run), "--linger", f"{linger:g}",
              "--wait", f"{config.helper_ready_timeout + sending + linger + 10:g}"]  # fmt: skip
    try:
        helper = lab.start_helper(
            dest,
            listen,
            role=STREAM_ROLE,
            ready=SHAPER_PROBE_LISTENING,
            ready_stream="stderr",
            ready_timeout=config.helper_ready_timeout,
        )
    except HelperNotReady as exc:
        raise ShapingError(f"the stream listener in {dest} did not start: {exc.last_line}") from exc
    with helper:
        argv = ["socketlab", "probe", peer, "--stream", str(port), "--count", str(count),
                "--interval", f"{interval:g}", "--run", str(run)]  # fmt: skip
        sent = lab.netkit_run(source, argv, timeout=sending + 30)
        if not sent.ok:
            raise ShapingError(f"streaming to {peer} from {source} failed: {sent.stderr.strip()}")
        code = helper.wait(timeout=config.helper_ready_timeout + sending + linger + 15)
        output = helper.logs(stdout=True, stderr=False)
        if code != 0:
            raise ShapingError(f"the stream listener in {dest} failed ({code}): {output[-200:]}")
    return measure.parse_arrivals(output)


def load_plan(spec: LinkSpec) -> tuple[int, float]:
    """(offered bit/s, seconds of load before probing) that fill ``spec``'s queue.

    At least 30 % over the rate, and enough more that a full queue is reached
    in about :data:`LOAD_FILL_SECONDS`; never above :data:`MAX_OVEROFFER` times it.
    """
    assert spec.rate is not None  # noqa: S101 - only links with a rate have a queue
    full = expected.queue_delay(spec, frame_bytes=measure.UDP_FRAME_BYTES) or 0.0
    queue_bits = full * spec.rate
    excess = max((UDP_OVEROFFER - 1.0) * spec.rate, queue_bits / LOAD_FILL_SECONDS)
    offered = min(spec.rate + excess, MAX_OVEROFFER * spec.rate)
    warmup = min(10.0, 1.5 * queue_bits / (offered - spec.rate) + 0.2)
    return int(offered), warmup


def measure_loaded_rtt(
    lab: Lab,
    source: str,
    dest: str,
    spec: LinkSpec,
    *,
    count: int,
    network: str | None = None,
    family: Family = 4,
) -> measure.PingStats:
    """Echo probes ``source -> dest`` while UDP over-offered at ``spec``'s rate fills the queue."""
    offered, warmup = load_plan(spec)
    peer = _peer_ip(lab, source, dest, network, family)
    argv = ["socketlab", "probe", peer, "--count", str(count),
            "--interval", f"{LOAD_PROBE_INTERVAL:g}", "--linger", "3",
            "--load-rate", str(offered), "--load-warmup", f"{warmup:.3f}"]  # fmt: skip
    timeout = warmup + count * LOAD_PROBE_INTERVAL + 3 + 15.0
    result = lab.netkit_run(source, argv, timeout=timeout, net_admin=True)
    if not result.ok:
        raise ShapingError(
            f"probing {peer} under load from {source} failed: {result.stderr.strip()}"
        )
    return measure.parse_probe(result.stdout)


def _probe_count(spec: LinkSpec, reverse: LinkSpec | None, config: ShapingConfig) -> int:
    """Echo probes the self-check sends: enough for loss counts, bursts and percentiles."""
    statistical = (
        measure.round_trip_loss(spec, reverse)
        or spec.duplicate
        or (reverse and reverse.duplicate)
        or spec.jitter
    )
    probes = config.check_loss_probes if statistical else config.check_pings
    if _bursty(spec, reverse):
        wanted = measure.probes_for_bursts(spec, reverse)
        probes = max(probes, min(config.check_max_probes, wanted))
    return probes


def _bursty(spec: LinkSpec, reverse: LinkSpec | None) -> bool:
    return any(
        side is not None and side.effective_loss_model is not None for side in (spec, reverse)
    )


def self_check(
    lab: Lab,
    source: str,
    dest: str,
    spec: LinkSpec,
    *,
    baseline: measure.PingStats,
    reverse: LinkSpec | None = None,
    network: str | None = None,
    family: Family = 4,
    host_delay: Sequence[float] = (),
) -> list[CheckRow]:
    """Measure the shaped link and compare with ``spec`` (and the reverse link's).

    ``host_delay``: how late the engine released packets on this host just before
    (seconds, per probe), allowed on top of the delay percentiles.

    Always delay and loss (its band widened for bursty loss); then what the
    spec asks: mean burst length for a loss model, p50/p90/p99 for jitter,
    duplicates, reordering on a one-way stream, the rate, and RTT under load
    for a queue limit.
    """
    rows = []
    base_rtt = baseline.rtt_median or baseline.rtt_avg or 0.0
    wait = 2 * (spec.delay + spec.jitter + (reverse.delay + reverse.jitter if reverse else 0.0))
    config = lab.config.shaping
    stats = measure_loss(
        lab,
        source,
        dest,
        probes=_probe_count(spec, reverse, config),
        linger=wait + 1.0,
        network=network,
        family=family,
    )
    # ``baseline`` was measured with the reverse link as it is: only ours adds.
    rows.append(
        measure.check_delay(
            expected_added=measure.median_one_way_delay(spec),
            baseline=base_rtt,
            stats=stats,
            jitter=spec.jitter + (reverse.jitter if reverse else 0.0),
        )
    )
    rows.append(
        measure.check_loss(
            expected=measure.round_trip_loss(spec, reverse),
            stats=stats,
            dispersion=measure.round_trip_dispersion(spec, reverse),
        )
    )
    if _bursty(spec, reverse) and stats.lost_flags:
        rows.append(
            measure.check_burst_length(lost=stats.lost_flags, forward=spec, reverse=reverse)
        )
    if spec.jitter:
        added = [rtt - base_rtt for rtt in stats.answered_rtts]
        rows += measure.check_delay_percentiles(
            added=added,
            forward=spec,
            reverse=reverse,
            host_slack=config.check_host_slack,
            host_delay=host_delay,
        )
    expected_duplicates = measure.round_trip_duplicates(spec, reverse)
    if expected_duplicates:
        rows.append(measure.check_duplicates(expected=expected_duplicates, stats=stats))
    if spec.reorder:
        rows.append(_reorder_row(lab, source, dest, spec, network=network, family=family))
    if spec.rate is not None:
        rows.append(_rate_row(lab, source, dest, spec, reverse, network=network, family=family))
    if spec.queue_limit is not None and spec.rate is not None:
        loaded = measure_loaded_rtt(
            lab, source, dest, spec, count=config.check_load_probes, network=network, family=family
        )
        rows.append(measure.check_bufferbloat(idle=stats, loaded=loaded, spec=spec))
    return rows


def _reorder_row(
    lab: Lab, source: str, dest: str, spec: LinkSpec, *, network: str | None, family: Family
) -> CheckRow:
    unclear = expected.reorder_unclear(spec, STREAM_INTERVAL)
    if unclear is not None:
        return CheckRow(
            "reordered", format_percent(spec.reorder), "not measured", ok=True, note=unclear
        )
    arrivals = measure_reorder(
        lab,
        source,
        dest,
        count=lab.config.shaping.check_reorder_probes,
        linger=2 * (spec.delay + spec.jitter) + 1.0,
        network=network,
        family=family,
    )
    return measure.check_reorder(arrivals=arrivals, spec=spec, interval=STREAM_INTERVAL)


def _rate_row(
    lab: Lab,
    source: str,
    dest: str,
    spec: LinkSpec,
    reverse: LinkSpec | None,
    *,
    network: str | None,
    family: Family,
) -> CheckRow:
    assert spec.rate is not None  # noqa: S101 - the caller checked
    if measure.rate_is_checkable(spec, reverse):
        goodput = measure_rate(lab, source, dest, network=network, family=family)
        return measure.check_rate(requested=spec.rate, goodput=goodput)
    offered = int(spec.rate * UDP_OVEROFFER)
    received = measure_rate(lab, source, dest, udp_offered=offered, network=network, family=family)
    return measure.check_rate_udp(requested=spec.rate, received=received, forward=spec)
