"""Shaper helper containers, and the commands run in a link's namespaces.

One long-lived helper per shaped link (``<project>-shaper-SRC-DST``, ``-on-NET``
when the lab has several networks), labelled with the link, its spec, engine and
queue: with nfqueue it runs the verdict loop, otherwise it idles as the record of
the link. Rules go in and come out through throwaway netkit containers
(``Lab.netkit_run``) running what :mod:`lab.shaping.builders` renders.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.errors import DockerError, HelperNotReady, LabError, ServiceNotFound
from lab.interface import ExecResult, HelperContainer, Lab
from lab.shaping import builders
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
)
from lab.shaping.errors import ShapingError
from lab.shaping.links import running_instances
from lab.shaping.spec import LinkSpec
from lab.topology import Topology

log = logging.getLogger("lab.shaping")


SHAPER_ROLE = "shaper"
SHAPER_CAPS = ("NET_ADMIN", "NET_RAW")
# What the verdict loop logs once it has bound its queue (socketlab.shaper.loop).
SHAPER_STARTED = "event=shaper_started"


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


def list_helpers(lab: Lab, topology: Topology | None = None) -> list[Helper]:
    display = _display(topology) if topology is not None else _plain_name
    helpers = []
    for container in lab.helpers(SHAPER_ROLE):
        try:
            helpers.append(Helper.from_container(container, display))
        except (KeyError, ValueError, LabError) as exc:
            log.warning("event=bad_helper_labels name=%s error=%s", container.name, exc)
    return sorted(helpers, key=lambda h: (h.source, h.dest, h.network))


def netns_sh(lab: Lab, service: str, script: str, *, what: str) -> ExecResult:
    """Run a shell script with NET_ADMIN in ``service``'s network namespace."""
    timeout = lab.config.shaping.netns_timeout
    result = lab.netkit_run(service, ["sh", "-c", script], timeout=timeout, net_admin=True)
    if not result.ok:
        detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        raise ShapingError(f"{what} in {service}'s namespace failed ({result.exit_code}): {detail}")
    return result


def run_steps(lab: Lab, service: str, steps: Sequence[builders.Step], *, what: str) -> None:
    log.info("event=netns_steps service=%s what=%r steps=%d", service, what, len(steps))
    netns_sh(lab, service, builders.render_script(steps), what=what)


def remove_helper(lab: Lab, helper: Helper) -> None:
    """Stop the helper (a verdict loop takes its queue down cleanly), then remove it."""
    if helper.container is None:
        return
    if helper.running:
        with contextlib.suppress(LabError):  # it may have ended meanwhile; remove() follows
            helper.container.stop(timeout=lab.config.shaping.helper_stop_timeout)
    helper.container.remove()


@dataclass(frozen=True, kw_only=True)
class ShapedLink(_LinkEnds):
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


def link_of(helper: Helper) -> ShapedLink:
    return ShapedLink(
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


def apply_link(lab: Lab, link: ShapedLink) -> None:
    egress = builders.egress_steps(
        engine=link.engine,
        dev=link.dev,
        dest_ip=link.dest_ip,
        queue=link.queue,
        spec=link.spec,
        dest_ip6=link.dest_ip6 or None,
        dest_nets=link.dest_nets,
    )
    run_steps(lab, link.source, egress, what=f"shaping {link.name} (egress)")
    ingress = builders.ingress_steps(
        engine=link.engine,
        source_ip=link.source_ip,
        queue=link.queue,
        spec=link.spec,
        source_ip6=link.source_ip6 or None,
        source_nets=link.source_nets,
    )
    run_steps(lab, link.dest, ingress, what=f"shaping {link.name} (ingress)")


def sync_offload(lab: Lab, source: str, dev: str) -> None:
    """Segmentation offload off while any link from ``source`` impairs per packet, else on."""
    wire_size = any(
        builders.needs_wire_size_packets(h.spec)
        for h in list_helpers(lab)
        if h.source == source and h.dev == dev and h.running
    )
    steps = builders.segmentation_offload_steps(dev=dev, enabled=not wire_size)
    with contextlib.suppress(ServiceNotFound):  # a stopped service took its namespace along
        run_steps(lab, source, steps, what=f"segmentation offload in {source}")


def remove_link(lab: Lab, link: ShapedLink) -> None:
    # A service that is gone took its namespace, and the rules in it, along.
    with contextlib.suppress(LabError):
        peers = [ip for ip in (link.dest_ip, link.dest_ip6) if ip] + list(link.dest_nets)
        steps = builders.unshape_egress_steps(
            dev=link.dev, queue=link.queue, mss_peers=peers, mss=link.spec.mss
        )
        run_steps(lab, link.source, steps, what=f"unshaping {link.name} (egress)")
    with contextlib.suppress(LabError):
        steps = builders.unshape_ingress_steps(
            source_ip=link.source_ip,
            queue=link.queue,
            source_ip6=link.source_ip6 or None,
            source_nets=link.source_nets,
        )
        run_steps(lab, link.dest, steps, what=f"unshaping {link.name} (ingress)")


def _cpu_shares(lab: Lab, link: ShapedLink) -> int | None:
    # A verdict loop's wake-up latency is its link's delay error: on a busy host
    # it goes first (it needs little CPU, so it takes little from anyone).
    shares = lab.config.shaping.helper_cpu_shares
    return shares if link.needs_loop and shares > 0 else None


def start_shaper(lab: Lab, link: ShapedLink, *, seed: int | None, name: str) -> str:
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


def rules_by_service(lab: Lab, topology: Topology) -> dict[str, RulesInForce]:
    """The rules in force in each running container's namespace, by its name (read in
    parallel: one helper per namespace)."""
    names = [instance.name for instance in running_instances(topology)]

    def read(name: str) -> RulesInForce:
        result = netns_sh(lab, name, builders.STATUS_SCRIPT, what="reading rules")
        return builders.parse_status(result.stdout)

    if len(names) <= 1:
        return {name: read(name) for name in names}
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=min(8, len(names)), thread_name_prefix="rules"
    ) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))
