"""Running ``lab sweep`` in the lab.

``run_sweep`` runs the ``tcp-vs-udp`` scenario at every point of a grid,
shaping client -> udp-listener, measuring the RTT, and yields a SweepResult;
with ``congestion`` (``--congestion cubic,bbr``) the whole grid runs once per
algorithm, set on both ends, and the lab's own setting is put back after.
It refuses to start while the lab has shaping in force it did not make.
Ports and timeouts come from ``lab.config.bench`` (:class:`lab.config.BenchConfig`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Final

from lab.bench.errors import BenchError
from lab.bench.grid import Grid, GridPoint
from lab.bench.lab_state import (
    link_rtt,
    now_iso,
    refuse_foreign_shaping,
    require_services,
    versions,
)
from lab.bench.records import UNSHAPED, SweepPoint, SweepResult
from lab.bench.throughput import DEFAULT_MSS
from lab.bench.transfers import tcp_vs_udp
from lab.congestion import congestion_in_use, ensure_congestion
from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress, silent
from lab.shaping import shape, unshape

SWEEP_LINK: Final = ("client", "udp-listener")


SWEEP_SCENARIOS: Final = {"tcp-vs-udp": "the same payload over TCP and UDP, client -> udp-listener"}


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How much each grid point moves, how UDP is paced, and which TCP algorithms run."""

    bytes_per_point: int = 2_000_000
    datagram_size: int = 1200
    datagram_rate: float = 2000
    offer: int | None = None  # UDP's offered bit/s, instead of datagram_rate
    mss: int = DEFAULT_MSS
    point_timeout: float | None = None  # None: the configured step timeout
    check: bool = False  # run the shaping self-check at every shaped point
    congestion: tuple[str, ...] = ()  # the grid once per algorithm (none: as the lab has it)


def sweep_point(lab_: Lab, point: GridPoint, options: SweepOptions) -> SweepPoint:
    """Shape the sweep link for ``point`` (or unshape it), measure RTT, run tcp-vs-udp."""
    started = time.monotonic()
    source, dest = SWEEP_LINK
    if point.spec.is_empty:
        unshape(lab_, source, dest)
        engine = UNSHAPED
    else:
        engine = str(shape(lab_, source, dest, point.spec, check=options.check).engine)
    rtt = link_rtt(lab_, source, dest)
    rows = tcp_vs_udp(
        lab_,
        total=options.bytes_per_point,
        size=options.datagram_size,
        rate=options.datagram_rate,
        timeout=options.point_timeout,
        offer=options.offer,
    )
    tcp, udp_row = rows["tcp"], rows["udp"]
    offered = udp_row.get("offered_mbit_s")
    return SweepPoint(
        delay=point.delay,
        loss=point.loss,
        engine=engine,
        rtt=rtt,
        tcp_bits_per_second=float(tcp["goodput_mbit_s"]) * 1e6,
        tcp_delivered=1.0 - float(tcp["loss"]),
        udp_bits_per_second=float(udp_row["goodput_mbit_s"]) * 1e6,
        udp_delivered=1.0 - float(udp_row["loss"]),
        udp_kernel_drops=int(udp_row.get("kernel_drops", 0)),
        seconds=time.monotonic() - started,
        congestion=str(tcp.get("congestion") or ""),
        tcp_latency_p50_ms=tcp.get("latency_p50_ms"),
        tcp_latency_p99_ms=tcp.get("latency_p99_ms"),
        udp_latency_p50_ms=udp_row.get("latency_p50_ms"),
        udp_latency_p99_ms=udp_row.get("latency_p99_ms"),
        udp_offered_bits_per_second=None if offered is None else float(offered) * 1e6,
        meaning=rows["meaning"]["text"],
    )


def run_sweep(
    lab_: Lab,
    scenario: str,
    grid: Grid,
    options: SweepOptions,
    *,
    progress: Progress = silent,
) -> SweepResult:
    """``lab sweep``: every grid point, in delay-major order, once per TCP algorithm of
    ``options.congestion`` (set on both ends of the link, put back after), with progress."""
    if scenario not in SWEEP_SCENARIOS:
        raise BenchError(
            f"no sweep scenario {scenario!r} (known: {', '.join(sorted(SWEEP_SCENARIOS))})"
        )
    started = now_iso()
    require_services(lab_, SWEEP_LINK)
    refuse_foreign_shaping(lab_)
    points = grid.points()
    algorithms: tuple[str | None, ...] = options.congestion or (None,)
    total = len(points) * len(algorithms)
    measured: list[SweepPoint] = []
    try:
        for algorithm in algorithms:
            if algorithm is not None:
                ensure_congestion(lab_, overrides=dict.fromkeys(SWEEP_LINK, algorithm))
                progress(f"TCP congestion control {algorithm} on {' and '.join(SWEEP_LINK)}")
            ends = congestion_in_use(lab_, SWEEP_LINK)
            for point in points:
                index = len(measured) + 1
                label = f"[{index}/{total}] {point.describe()}" + (
                    f" {algorithm}" if algorithm else ""
                )
                progress(f"{label} ...")
                result = dataclasses.replace(
                    sweep_point(lab_, point, options), congestion_ends=ends
                )
                measured.append(result)
                rtt = "-" if result.rtt is None else f"{result.rtt * 1000:.1f} ms"
                progress(
                    f"{label}: rtt {rtt}, "
                    f"TCP ({result.congestion or '?'}) {result.tcp_bits_per_second / 1e6:.2f} Mbit/s, "
                    f"UDP {result.udp_bits_per_second / 1e6:.2f} Mbit/s "
                    f"delivered {result.udp_delivered * 100:.1f}% ({result.seconds:.1f} s)"
                )
    finally:
        with contextlib.suppress(LabError):
            unshape(lab_, *SWEEP_LINK)
        if options.congestion:
            with contextlib.suppress(LabError):
                ensure_congestion(lab_, names=SWEEP_LINK, reset=True)
    return SweepResult(
        scenario=scenario,
        link=" -> ".join(SWEEP_LINK),
        started=started,
        finished=now_iso(),
        bytes_per_point=options.bytes_per_point,
        datagram_size=options.datagram_size,
        datagram_rate=options.datagram_rate,
        mss=options.mss,
        versions=versions(lab_),
        points=tuple(measured),
    )
