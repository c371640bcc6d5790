"""Measuring links from their namespaces, and the self-check of a shaped link.

Echo probes, numbered UDP streams, iperf3 (:mod:`lab.iperf3`) and probes under
load run in netkit containers or helpers; :mod:`lab.shaping.measure` turns
their output into figures and the rows that compare them with the spec.
Timeouts and probe counts come from :class:`lab.config.ShapingConfig`.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence

from lab.config import ShapingConfig
from lab.errors import HelperNotReady
from lab.interface import Lab
from lab.iperf3 import run_iperf3
from lab.shaping import expected, measure
from lab.shaping.errors import ShapingError
from lab.shaping.measure import CheckRow
from lab.shaping.spec import LinkSpec, format_percent
from lab.topology import Family, Instance, Topology
from socketlab.shaper.probe import LISTENING as SHAPER_PROBE_LISTENING

# Offer UDP this much above the rate, so the limit (not the sender) sets the pace.
UDP_OVEROFFER = 1.3


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


# The path MTU towards an address, as the kernel has it for a connected UDP socket
# (the route's, else the device's): IP_MTU and IPV6_MTU of <linux/in.h>, <linux/in6.h>.
_PATH_MTU_PROBE = """
import socket, sys
address, family = sys.argv[1], int(sys.argv[2])
inet, level, option = (
    (socket.AF_INET, socket.IPPROTO_IP, 14) if family == 4 else (socket.AF_INET6, socket.IPPROTO_IPV6, 24)
)
with socket.socket(inet, socket.SOCK_DGRAM) as probe:
    probe.connect((address, 9))
    print(probe.getsockopt(level, option))
"""


PATH_MTU_SECONDS = 10.0  # the probe itself, once its helper runs: one socket, one syscall


def path_mtu(lab: Lab, source: str, address: str, *, family: Family = 4) -> int | None:
    """The MTU of ``source``'s path to ``address``, read in ``source``'s namespace; None
    when the probe ran but said nothing usable (a helper that cannot run raises, as
    ``netkit_run`` does)."""
    result = lab.netkit_run(
        source,
        ["python3", "-c", _PATH_MTU_PROBE, address, str(family)],
        timeout=lab.config.shaping.helper_ready_timeout + PATH_MTU_SECONDS,
    )
    text = result.stdout.strip()
    if result.exit_code != 0 or not text.isdigit():
        return None
    return int(text)


def measure_rate(
    lab: Lab,
    source: str,
    dest: str,
    *,
    seconds: int | None = None,
    udp_offered: int | None = None,
    udp_payload: int = measure.UDP_PAYLOAD,
    network: str | None = None,
    family: Family = 4,
) -> float:
    """Received payload bit/s ``source -> dest`` with iperf3 (server in dest's namespace).

    TCP by default; with ``udp_offered`` (bit/s) a UDP stream of ``udp_payload``-byte
    datagrams. ``seconds`` defaults to the configured ``check_rate_seconds``.
    """
    server_ip = _peer_ip(lab, source, dest, network, family)
    config = lab.config.shaping
    seconds = config.check_rate_seconds if seconds is None else seconds
    args = ["-t", str(seconds), "-O", "1"]
    if udp_offered is not None:
        args += ["-u", "-b", str(udp_offered), "-l", str(udp_payload)]
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


def load_plan(spec: LinkSpec, *, frame_bytes: int = measure.UDP_FRAME_BYTES) -> tuple[int, float]:
    """(offered bit/s, seconds of load before probing) that fill ``spec``'s queue with
    ``frame_bytes`` frames.

    At least 30 % over the rate, and enough more that a full queue is reached
    in about :data:`LOAD_FILL_SECONDS`; never above :data:`MAX_OVEROFFER` times it.
    """
    assert spec.rate is not None  # noqa: S101 - only links with a rate have a queue
    full = expected.queue_delay(spec, frame_bytes=frame_bytes) or 0.0
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
    payload: int = measure.UDP_PAYLOAD,
) -> measure.PingStats:
    """Echo probes ``source -> dest`` while UDP over-offered at ``spec``'s rate fills the
    queue, in ``payload``-byte datagrams (no more than one frame holds on the path)."""
    offered, warmup = load_plan(spec, frame_bytes=measure.udp_frame_bytes(payload, family))
    peer = _peer_ip(lab, source, dest, network, family)
    argv = ["socketlab", "probe", peer, "--count", str(count),
            "--interval", f"{LOAD_PROBE_INTERVAL:g}", "--linger", "3",
            "--load-rate", str(offered), "--load-warmup", f"{warmup:.3f}",
            "--load-size", str(payload)]  # fmt: skip
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
    if spec.rate is None:
        return rows
    # Rate probes and load are sized to the path: a fragmented datagram is lost
    # with any of its fragments, and a packet queue holds frames, not datagrams.
    mtu = path_mtu(lab, source, _peer_ip(lab, source, dest, network, family), family=family)
    rows.append(
        _rate_row(lab, source, dest, spec, reverse, network=network, family=family, mtu=mtu)
    )
    if spec.queue_limit is not None:
        payload = measure.udp_payload(mtu, family)
        loaded = measure_loaded_rtt(
            lab,
            source,
            dest,
            spec,
            count=config.check_load_probes,
            network=network,
            family=family,
            payload=payload,
        )
        frame = measure.udp_frame_bytes(payload, family)
        rows.append(
            measure.check_bufferbloat(idle=stats, loaded=loaded, spec=spec, frame_bytes=frame)
        )
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
    mtu: int | None,
) -> CheckRow:
    """The rate row: TCP goodput, or over-offered UDP through loss; ``mtu`` is the
    path's (:func:`path_mtu`, None: unknown), which sizes datagrams and headers."""
    assert spec.rate is not None  # noqa: S101 - the caller checked
    if measure.rate_is_checkable(spec, reverse):
        goodput = measure_rate(lab, source, dest, network=network, family=family)
        return measure.check_rate(requested=spec.rate, goodput=goodput, mtu=mtu, family=family)
    offered = int(spec.rate * UDP_OVEROFFER)
    payload = measure.udp_payload(mtu, family)
    received = measure_rate(
        lab,
        source,
        dest,
        udp_offered=offered,
        udp_payload=payload,
        network=network,
        family=family,
    )
    row = measure.check_rate_udp(
        requested=spec.rate, received=received, forward=spec, payload=payload, family=family
    )
    if mtu is None:  # said, since a fragmenting path would read the rate low
        return dataclasses.replace(
            row, note=f"{row.note}; path MTU unknown, sent {payload}-byte datagrams"
        )
    return row
