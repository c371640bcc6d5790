"""Measuring the NFQUEUE engine in the lab: the I/O half of :mod:`lab.bench.engine`.

Shapes ``client -> server`` with ``--engine nfqueue`` (forced: on a kernel
with netem this still measures the fallback engine), runs iperf3 client ->
server through it, and reads the verdict loop's totals from its helper's last
log line after stopping it. The client's congestion control is set per route
for each pass (``lab.shaping.congestion``) and put back to the namespace's
default at the end; every link is unshaped again afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Final

from lab.bench.engine import (
    LATENCY_DELAY,
    THROUGHPUT_LINKS,
    UNSHAPED_LABEL,
    EngineOptions,
    EngineReport,
    LatencyRow,
    LoopFigures,
    ThroughputRow,
)
from lab.bench.errors import BenchError
from lab.bench.iperf3_runs import iperf3
from lab.bench.lab_state import require_services
from lab.congestion import ensure_congestion, read_congestion
from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress, silent
from lab.report.watch import parse_shaper_stats
from lab.shaping import LinkSpec, measure_rtt, shape, unshape
from lab.shaping.helpers import SHAPER_ROLE
from lab.shaping.shape import ShapeResult
from lab.waiting import wait_for

SOURCE: Final = "client"
DEST: Final = "server"
# Under load, probing starts once the loop has queued this many packets of the transfer.
LOAD_STARTED_PACKETS: Final = 1000
PROBE_INTERVAL: Final = 0.02  # measure_rtt's spacing


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def _iperf3(lab_: Lab, options: EngineOptions, seconds: int) -> float:
    args = ["-t", str(seconds), "-O", "1", "-P", str(options.streams)]
    report = iperf3(lab_, server=DEST, client=SOURCE, args=args, timeout=seconds + 60)
    return float(report["end"]["sum_received"]["bits_per_second"])


def _helper(lab_: Lab, name: str) -> Any:
    found = [h for h in lab_.helpers(SHAPER_ROLE) if h.name == name]
    if not found:
        raise BenchError(f"the shaping helper {name} is gone")
    return found[0]


def _loop_stats(lab_: Lab, result: ShapeResult) -> dict[str, int]:
    text = _helper(lab_, result.helper).logs(tail=lab_.config.watch.log_tail)
    return parse_shaper_stats(text).get(result.queue, {})


def _stop_loop(lab_: Lab, result: ShapeResult) -> LoopFigures | None:
    """Stop the link's verdict loop and read its totals (``event=shaper_stopped``)."""
    helper = _helper(lab_, result.helper)
    helper.stop(timeout=lab_.config.shaping.helper_stop_timeout)
    return LoopFigures.from_stats(_loop_stats(lab_, result))


def _shape(lab_: Lab, text: str) -> ShapeResult:
    return shape(lab_, SOURCE, DEST, LinkSpec.parse(text), engine="nfqueue")


def _set_congestion(lab_: Lab, name: str | None) -> str:
    """New connections from SOURCE use ``name`` (None: what the Compose file asks, else the
    namespace's default); returns what they use."""
    if name is None:
        ensure_congestion(lab_, names=[SOURCE], reset=True)
    else:
        ensure_congestion(lab_, overrides={SOURCE: name}, names=[SOURCE])
    return read_congestion(lab_, SOURCE)


def throughput(
    lab_: Lab,
    label: str,
    spec: str | None,
    options: EngineOptions,
    *,
    congestion: str,
    progress: Progress,
) -> ThroughputRow:
    """iperf3 ``repeats`` times over the link, shaped with ``spec`` (None: unshaped)."""
    unshape(lab_, SOURCE, DEST)
    result = _shape(lab_, spec) if spec is not None else None
    runs = []
    try:
        for attempt in range(1, options.repeats + 1):
            runs.append(_iperf3(lab_, options, options.seconds))
            progress(f"[engine] {label} ({congestion}) run {attempt}: {runs[-1] / 1e9:.2f} Gbit/s")
        loop = _stop_loop(lab_, result) if result is not None else None
    finally:
        unshape(lab_, SOURCE, DEST)
    return ThroughputRow(
        label=label,
        spec=spec or "none",
        bits_per_second=tuple(runs),
        seconds=float(options.seconds + 1),  # iperf3 -O 1 runs one more second
        loop=loop,
        congestion=congestion,
    )


def _latency_row(label: str, stats: Any, baseline: Any, *, loaded: bool) -> LatencyRow:
    return LatencyRow(
        label=label,
        delay=LATENCY_DELAY,
        baseline=baseline.rtt_median,
        baseline_p99=baseline.rtt_p99,
        p50=stats.rtt_median,
        p99=stats.rtt_p99,
        sent=stats.transmitted,
        received=stats.received,
        loaded=loaded,
    )


def latency(lab_: Lab, options: EngineOptions, *, progress: Progress) -> list[LatencyRow]:
    """Probes over a 50 ms link: idle, then with iperf3 running through it."""
    unshape(lab_, SOURCE, DEST)
    baseline = measure_rtt(lab_, SOURCE, DEST, count=options.baseline_probes)
    result = _shape(lab_, f"delay={LATENCY_DELAY * 1000:g}ms")
    label = f"nfqueue {LATENCY_DELAY * 1000:g} ms"
    try:
        idle = measure_rtt(lab_, SOURCE, DEST, count=options.probes)
        rows = [_latency_row(label, idle, baseline, loaded=False)]
        progress(f"[engine] {label} idle: p50 {_ms(idle.rtt_median)}, p99 {_ms(idle.rtt_p99)}")
        loaded = _under_load(lab_, result, options)
        rows.append(_latency_row(f"{label}, iperf3 running", loaded, baseline, loaded=True))
        progress(
            f"[engine] {label} under load: p50 {_ms(loaded.rtt_median)}, p99 {_ms(loaded.rtt_p99)}"
        )
    finally:
        unshape(lab_, SOURCE, DEST)
    return rows


def _under_load(lab_: Lab, result: ShapeResult, options: EngineOptions) -> Any:
    """Probe while iperf3 runs through the link (probing starts once its packets flow)."""
    probing = options.probes * PROBE_INTERVAL + 2.0  # measure_rtt's linger
    outcome: dict[str, float | BaseException] = {}
    seconds = round(probing + 6)

    def transfer() -> None:
        try:
            outcome["bits"] = _iperf3(lab_, options, seconds)
        except (LabError, BenchError) as exc:  # raised in the caller's thread below
            outcome["error"] = exc

    before = _loop_stats(lab_, result).get("received", 0)
    worker = threading.Thread(target=transfer, name="engine-load")
    worker.start()
    try:
        wait_for(
            lambda: (
                "error" in outcome
                or _loop_stats(lab_, result).get("received", 0) - before >= LOAD_STARTED_PACKETS
            ),
            timeout=lab_.config.bench.ready_timeout + 10,
            what="iperf3 traffic through the verdict loop",
        )
        stats = measure_rtt(lab_, SOURCE, DEST, count=options.probes)
    finally:
        worker.join(timeout=seconds + 90)
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise BenchError(f"iperf3 under the latency probes failed: {error}") from error
    return stats


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f} ms"


def run_engine_bench(
    lab_: Lab, options: EngineOptions, *, progress: Progress = silent
) -> EngineReport:
    """The engine's rows of ``lab bench``: throughput and latency, in one run."""
    require_services(lab_, (SOURCE, DEST))
    load_before = _load()
    rows: list[ThroughputRow] = []
    try:
        for name in options.congestion:
            congestion = _set_congestion(lab_, name)
            for label, spec in ((UNSHAPED_LABEL, None), *THROUGHPUT_LINKS):
                row = throughput(
                    lab_, label, spec, options, congestion=congestion, progress=progress
                )
                rows.append(row)
        _set_congestion(lab_, None)
        latency_rows = latency(lab_, options, progress=progress)
    finally:
        with contextlib.suppress(LabError):
            unshape(lab_, SOURCE, DEST)
        with contextlib.suppress(LabError, BenchError):
            _set_congestion(lab_, None)
    return EngineReport(
        options=options,
        throughput=tuple(rows),
        latency=tuple(latency_rows),
        load_before=load_before,
        load_after=_load(),
    )
