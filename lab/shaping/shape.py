"""``shape`` and ``unshape``: put a link's shaping in place, checked, or take it away.

Every link is probed and planned (engine, seed, queue) before anything
changes; a failure puts back what each touched link had. With ``check`` the
shaped links are measured by :mod:`lab.shaping.selfcheck`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from lab.errors import LabError
from lab.interface import Lab
from lab.shaping import builders, measure
from lab.shaping.builders import Engine
from lab.shaping.errors import SelfCheckFailed, ShapingError
from lab.shaping.helpers import (
    Helper,
    ShapedLink,
    apply_link,
    helper_name,
    link_of,
    list_helpers,
    netns_sh,
    remove_helper,
    remove_link,
    rules_by_service,
    run_steps,
    start_shaper,
    sync_offload,
)
from lab.shaping.links import address_names, family_ips, in_families, multi_network, resolve_links
from lab.shaping.measure import CheckRow
from lab.shaping.selfcheck import measure_loss, self_check
from lab.shaping.spec import LinkSpec
from lab.topology import Family, Link, Topology

log = logging.getLogger("lab.shaping")


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
    helpers = list_helpers(lab, topology)
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
        sync_offload(lab, touched_source, dev)
    if check:
        results = _check_all(lab, topology, plans, results, baselines)
    return dataclasses.replace(results[0], others=tuple(results[1:]))


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """One link as it will be shaped, checked against its engine before anything changes."""

    link: ShapedLink
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
    source_ip, source_ip6 = family_ips(topology, src, resolved.network, families)
    dest_ip, dest_ip6 = family_ips(topology, dst, resolved.network, families)
    probe = builders.parse_probe(
        netns_sh(lab, source, builders.probe_script(dest_ip or dest_ip6), what="probe").stdout
    )
    chosen = builders.choose_engine(engine, probe, spec)
    spec = pick_seed(spec, chosen, netem_seed=probe.netem_seed)
    warnings = builders.require_engine(spec, chosen, netem_seed=probe.netem_seed)
    link = ShapedLink(
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
        source_nets=in_families(topology.routed_via(dst, src), families),
        dest_nets=in_families(topology.routed_via(src, dst), families),
    )
    previous = next((h for h in helpers if h.link_key == link.key), None)
    if previous is not None:
        link = dataclasses.replace(link, queue=previous.queue)
    name = helper_name(
        lab.project, source, dest, resolved.network if multi_network(topology) else None
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
        remove_link(lab, link_of(plan.previous))
        remove_helper(lab, plan.previous)
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
        apply_link(lab, link)
        start_shaper(lab, link, seed=None, name=plan.name)
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
    apply_link(lab, calibration)
    try:
        start_shaper(lab, calibration, seed=None, name=plan.name)
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
        for helper in list_helpers(lab):
            if helper.link_key == calibration.key:
                remove_helper(lab, helper)
        remove_link(lab, calibration)
    base = baseline.rtt_median or baseline.rtt_avg or 0.0
    late = tuple(max(0.0, rtt - base - fixed.delay) for rtt in stats.answered_rtts)
    log.info("event=host_delay link=%s probes=%d", calibration.name, len(late))
    return late


def _restore(lab: Lab, plan: _Plan) -> str:
    """Take the plan's shaping away and put back what the link had; "" or what failed."""
    with contextlib.suppress(LabError):
        for helper in list_helpers(lab):
            if helper.link_key == plan.link.key:
                remove_helper(lab, helper)
    remove_link(lab, plan.link)
    if plan.previous is None:
        return ""
    earlier = link_of(plan.previous)
    try:
        apply_link(lab, earlier)
        start_shaper(lab, earlier, seed=None, name=plan.previous.name)
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
    helpers = list_helpers(lab, topology)
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
    for helper in list_helpers(lab, topology):
        if not _selected(helper, keys, network):
            continue
        remove_link(lab, link_of(helper))
        remove_helper(lab, helper)
        removed.append(f"{helper.source} -> {helper.dest}")
        touched.add((helper.source, helper.dev))
    for touched_source, dev in sorted(touched):
        sync_offload(lab, touched_source, dev)
    if source is None and network is None:
        # Rules whose helper is gone (removed by hand, say) would otherwise linger.
        names = address_names(topology)
        for service, rules in rules_by_service(lab, topology).items():
            if rules.queues or rules.classes or rules.mss:
                steps = builders.clear_shaping_steps(rules.queues)
                run_steps(lab, service, steps, what=f"clearing shaping in {service}")
                orphans = [f"{names.get(ip, ip)} -> {service}" for ip in rules.queues]
                orphans += [
                    f"{service} -> {names.get(ip, ip)}" for ip in (*rules.classes, *rules.mss)
                ]
                removed += [f"{o} (orphan)" for o in dict.fromkeys(orphans) if o not in removed]
    return removed
