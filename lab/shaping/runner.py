"""Running shaping: helper containers, rules in namespaces, status and self-check.

The thin I/O part of lab.shaping. Every command a namespace gets comes from
``lab.shaping.builders``; this module only decides where to run it:

* a throwaway netkit container in the namespace (``Lab.netkit_run``) for
  probes, rule changes and measurements;
* one long-lived **helper** per shaped link (``<project>-shaper-SRC-DST``),
  joined to the source's namespace and labelled with the link, its spec,
  engine and queue. With the nfqueue engine it runs the verdict loop; with
  netem (or rate only) it just idles, as the record of the link.

``lab down`` removes helpers with everything else carrying the project label.
``link_status`` compares the helpers with the rules really in force, so a dead
helper or a restarted service shows up instead of being papered over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker.errors
import requests.exceptions

from lab.api import PROJECT_LABEL, ROLE_LABEL, ExecResult
from lab.errors import LabError
from lab.shaping import builders, measure
from lab.shaping.builders import (
    LABEL_DEST,
    LABEL_DEV,
    LABEL_ENGINE,
    LABEL_KIND,
    LABEL_PEER,
    LABEL_QUEUE,
    LABEL_SOURCE,
    LABEL_SPEC,
    Engine,
    RulesInForce,
)
from lab.shaping.errors import ShapingError
from lab.shaping.measure import CheckRow
from lab.shaping.spec import LinkSpec
from socketlab.config import env_float, env_int

if TYPE_CHECKING:
    from lab.api import Lab

log = logging.getLogger("lab.shaping")

SHAPER_ROLE = "shaper"
NETNS_TIMEOUT = env_float("SOCKETLAB_SHAPING_TIMEOUT", 30.0)
HELPER_READY_TIMEOUT = env_float("SOCKETLAB_SHAPER_READY_TIMEOUT", 20.0)
HELPER_STOP_TIMEOUT = env_int("SOCKETLAB_SHAPER_STOP_TIMEOUT", 3)
POLL = 0.1
CHECK_PINGS = env_int("SOCKETLAB_CHECK_PINGS", 50)
BASELINE_PROBES = env_int("SOCKETLAB_BASELINE_PROBES", 50)
CHECK_LOSS_PROBES = env_int("SOCKETLAB_CHECK_LOSS_PROBES", 1000)
CHECK_RATE_SECONDS = env_int("SOCKETLAB_CHECK_RATE_SECONDS", 4)
IPERF_PORT = env_int("SOCKETLAB_IPERF_PORT", 5201)


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
    peer_ip: str
    spec: LinkSpec
    engine: Engine
    queue: int
    dev: str
    state: str  # docker state: running, exited, ...
    started_at: str
    container: Any

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_container(cls, container: Any) -> Helper:
        labels = container.labels
        return cls(
            name=container.name,
            source=labels[LABEL_SOURCE],
            dest=labels[LABEL_DEST],
            peer_ip=labels[LABEL_PEER],
            spec=LinkSpec.parse(labels[LABEL_SPEC]),
            engine=Engine(labels[LABEL_ENGINE]),
            queue=int(labels[LABEL_QUEUE]),
            dev=labels[LABEL_DEV],
            state=container.status,
            started_at=container.attrs.get("State", {}).get("StartedAt", ""),
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

    def as_row(self) -> dict[str, str]:
        return {
            "link": self.link,
            "shaping": self.shaping,
            "engine": self.engine,
            "state": self.state,
            "helper": self.helper,
        }


# --------------------------------------------------------------------------- plumbing


def helper_name(project: str, source: str, dest: str) -> str:
    return f"{project}-shaper-{source}-{dest}"


def _helpers(lab: Lab) -> list[Helper]:
    containers = lab.docker.containers.list(
        all=True,
        filters={"label": [f"{PROJECT_LABEL}={lab.project}", f"{ROLE_LABEL}={SHAPER_ROLE}"]},
    )
    helpers = []
    for container in containers:
        try:
            helpers.append(Helper.from_container(container))
        except (KeyError, ValueError, LabError) as exc:
            log.warning("event=bad_helper_labels name=%s error=%s", container.name, exc)
    return sorted(helpers, key=lambda h: (h.source, h.dest))


def _netns_sh(lab: Lab, service: str, script: str, *, what: str) -> ExecResult:
    """Run a shell script with NET_ADMIN in ``service``'s network namespace."""
    result = lab.netkit_run(service, ["sh", "-c", script], timeout=NETNS_TIMEOUT, net_admin=True)
    if not result.ok:
        detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        raise ShapingError(f"{what} in {service}'s namespace failed ({result.exit_code}): {detail}")
    return result


def _run_steps(lab: Lab, service: str, steps: Sequence[builders.Step], *, what: str) -> None:
    log.info("event=netns_steps service=%s what=%r steps=%d", service, what, len(steps))
    _netns_sh(lab, service, builders.render_script(steps), what=what)


def _remove_container(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        if container.status == "running":
            container.stop(timeout=HELPER_STOP_TIMEOUT)
        container.remove(force=True)


def _wait_helper_ready(container: Any, *, needs_loop: bool) -> None:
    """Poll until the helper runs (and its loop has bound the queue); deadline-bound."""
    deadline = time.monotonic() + HELPER_READY_TIMEOUT
    while True:
        container.reload()
        if container.status in {"exited", "dead"}:
            logs = container.logs(tail=5).decode(errors="replace").strip()
            raise ShapingError(f"shaping helper {container.name} stopped: {logs}")
        if container.status == "running" and (
            not needs_loop or b"event=shaper_started" in container.logs(tail=50)
        ):
            return
        if time.monotonic() >= deadline:
            raise ShapingError(
                f"shaping helper {container.name} not ready after {HELPER_READY_TIMEOUT:.0f} s"
            )
        time.sleep(POLL)  # polling interval of a deadline-bounded wait


def _start_helper(
    lab: Lab,
    *,
    source: str,
    dest: str,
    peer_ip: str,
    spec: LinkSpec,
    engine: Engine,
    queue: int,
    dev: str,
    seed: int | None,
) -> str:
    needs_loop = builders.needs_verdict_loop(spec, engine)
    command = (
        builders.shaper_command(queue=queue, spec=spec, seed=seed)
        if needs_loop
        else ["socketlab", "idle"]
    )
    name = helper_name(lab.project, source, dest)
    labels = {
        PROJECT_LABEL: lab.project,
        ROLE_LABEL: SHAPER_ROLE,
        LABEL_KIND: "shape",
        LABEL_SOURCE: source,
        LABEL_DEST: dest,
        LABEL_PEER: peer_ip,
        LABEL_SPEC: spec.describe(),
        LABEL_ENGINE: str(engine),
        LABEL_QUEUE: str(queue),
        LABEL_DEV: dev,
    }
    try:
        container = lab.docker.containers.run(
            lab.netkit_image,
            command,
            name=name,
            network_mode=f"container:{lab.container(source).id}",
            cap_add=["NET_ADMIN", "NET_RAW"],
            labels=labels,
            detach=True,
        )
    except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
        raise ShapingError(f"cannot start shaping helper {name}: {exc}") from exc
    try:
        _wait_helper_ready(container, needs_loop=needs_loop)
    except ShapingError:
        _remove_container(container)
        raise
    return str(name)


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
    requested = Engine(engine) if engine is not None else None
    peer_ip = lab.ip(dest)
    if spec.is_empty:
        raise ShapingError(f"nothing to shape for {source} -> {dest}: give at least one option")
    probe = builders.parse_probe(
        _netns_sh(lab, source, builders.probe_script(peer_ip), what="probe").stdout
    )
    chosen = builders.choose_engine(requested, probe)
    existing = {h.dest: h for h in _helpers(lab) if h.source == source}
    previous = existing.pop(dest, None)
    queue = (
        previous.queue
        if previous is not None
        else builders.free_queue(h.queue for h in existing.values())
    )
    if previous is not None:
        # Off first: the self-check baseline must be this link unshaped.
        _run_steps(
            lab,
            source,
            builders.unshape_steps(dev=previous.dev, peer_ip=previous.peer_ip, queue=queue),
            what=f"unshaping {source} -> {dest}",
        )
        _remove_container(previous.container)
    # The baseline includes whatever shapes the way back, so only this link's
    # own delay is expected on top of it.
    baseline = measure_loss(lab, source, dest, probes=BASELINE_PROBES) if check else None
    steps = builders.shape_steps(
        engine=chosen, dev=probe.dev, peer_ip=peer_ip, queue=queue, spec=spec
    )
    _run_steps(lab, source, steps, what=f"shaping {source} -> {dest}")
    helper = _start_helper(
        lab,
        source=source,
        dest=dest,
        peer_ip=peer_ip,
        spec=spec,
        engine=chosen,
        queue=queue,
        dev=probe.dev,
        seed=seed,
    )
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
        raise ShapingError(
            f"self-check of {source} -> {dest} ({chosen}) failed: {detail} (shaping left in place)"
        )
    return result


def unshape(lab: Lab, source: str | None = None, dest: str | None = None) -> list[str]:
    """Remove shaping from one link, or every link when no pair is given; returns links."""
    if (source is None) != (dest is None):
        raise ShapingError("give both services of a link, or neither (all links)")
    removed = []
    for helper in _helpers(lab):
        if source is not None and (helper.source, helper.dest) != (source, dest):
            continue
        with contextlib.suppress(LabError):  # source gone: its namespace (and rules) with it
            steps = builders.unshape_steps(
                dev=helper.dev, peer_ip=helper.peer_ip, queue=helper.queue
            )
            _run_steps(
                lab, helper.source, steps, what=f"unshaping {helper.source} -> {helper.dest}"
            )
        _remove_container(helper.container)
        removed.append(f"{helper.source} -> {helper.dest}")
    if source is None:
        # Rules whose helper is gone (removed by hand, say) would otherwise linger.
        ips = _service_ips(lab)
        names = {ip: name for name, ip in ips.items()}
        for service, rules in _rules_by_service(lab, ips).items():
            if rules.queues or rules.classes:
                steps = builders.clear_shaping_steps(rules.queues)
                _run_steps(lab, service, steps, what=f"clearing shaping in {service}")
                removed += [
                    f"{service} -> {names.get(ip, ip)} (orphan)"
                    for ip in sorted({*rules.queues, *rules.classes})
                    if f"{service} -> {names.get(ip, ip)}" not in removed
                ]
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
            started[service] = lab.container(service).attrs["State"].get("StartedAt", "")
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
            )
        )
    for service, in_force in sorted(rules.items()):
        for ip, queue in sorted(in_force.queues.items()):
            if (service, "queue", ip) not in claimed:
                states.append(_orphan(service, names.get(ip, ip), f"NFQUEUE {queue}, no helper"))
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
    in_force = rules.get(helper.source, RulesInForce())
    problems = []
    if helper.source not in rules:
        problems.append(f"{helper.source} is not running")
    if builders.needs_verdict_loop(helper.spec, helper.engine):
        claimed.add((helper.source, "queue", helper.peer_ip))
        if in_force.queues.get(helper.peer_ip) != helper.queue:
            problems.append("NFQUEUE rule missing: not impaired")
        if not helper.running:
            problems.append("verdict loop down: link fails open (passes unimpaired)")
    if builders.uses_htb(helper.spec, helper.engine):
        claimed.add((helper.source, "class", helper.peer_ip))
        if in_force.classes.get(helper.peer_ip) != helper.queue:
            problems.append("tc class/filter missing: rate not limited")
    if helper.started_at and source_started.get(helper.source, "") > helper.started_at:
        problems.append(f"{helper.source} restarted after shaping: reshape it")
    return problems


def _orphan(service: str, peer: str, what: str) -> LinkState:
    return LinkState(
        link=f"{service} -> {peer}",
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
    result = lab.netkit_run(source, argv, timeout=timeout, net_admin=False)
    if not result.ok:
        raise ShapingError(f"probing {peer_ip} from {source} failed: {result.stderr.strip()}")
    return measure.parse_probe(result.stdout)


def measure_rtt(lab: Lab, source: str, dest: str, *, count: int = CHECK_PINGS) -> measure.PingStats:
    """ICMP echo ``source -> dest`` from source's namespace (through its shaping), 20 ms apart."""
    return _probe(lab, source, lab.ip(dest), count=count, interval=0.02, linger=2.0)


def measure_loss(
    lab: Lab, source: str, dest: str, *, probes: int, linger: float = 2.0, interval: float = 0.002
) -> measure.PingStats:
    """Send ``probes`` echo requests ``interval`` apart; count answers, waiting for stragglers."""
    return _probe(lab, source, lab.ip(dest), count=probes, interval=interval, linger=linger)


def measure_rate(lab: Lab, source: str, dest: str, *, seconds: int = CHECK_RATE_SECONDS) -> float:
    """TCP goodput ``source -> dest`` with iperf3 (server in dest's namespace), bit/s."""
    server = lab.docker.containers.run(
        lab.netkit_image,
        ["iperf3", "-s", "-1", "--forceflush", "-p", str(IPERF_PORT)],
        network_mode=f"container:{lab.container(dest).id}",
        labels={PROJECT_LABEL: lab.project, ROLE_LABEL: "netkit-run"},
        detach=True,
    )
    try:
        deadline = time.monotonic() + HELPER_READY_TIMEOUT
        while b"listening" not in server.logs():
            if time.monotonic() >= deadline:
                raise ShapingError("iperf3 server did not start listening")
            time.sleep(POLL)  # polling interval of a deadline-bounded wait
        argv = ["iperf3", "-c", lab.ip(dest), "-p", str(IPERF_PORT), "-t", str(seconds),
                "-O", "1", "-J"]  # fmt: skip
        result = lab.netkit_run(source, argv, timeout=seconds + 30, net_admin=False)
        return measure.parse_iperf3(result.stdout)
    finally:
        _remove_container(server)


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
    base_rtt = baseline.rtt_avg or 0.0
    expected_loss = measure.round_trip_loss(spec, reverse)
    wait = 2 * (spec.delay + spec.jitter + (reverse.delay + reverse.jitter if reverse else 0.0))
    statistical = expected_loss or spec.duplicate or (reverse and reverse.duplicate)
    probes = CHECK_LOSS_PROBES if statistical else CHECK_PINGS
    stats = measure_loss(lab, source, dest, probes=probes, linger=wait + 1.0)
    # ``baseline`` was measured with the reverse link as it is: only ours adds.
    expected_added = measure.mean_one_way_delay(spec)
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
            rows.append(
                CheckRow(
                    "rate",
                    f"{spec.rate / 1e6:g}Mbit/s",
                    "-",
                    ok=True,
                    note="not measured: loss/reorder would throttle TCP below the rate",
                )
            )
    return rows
