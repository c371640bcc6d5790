"""The NFQUEUE engine's figures in ``lab bench``: records, arithmetic, tables; pure.

Measured by :mod:`lab.bench.engine_runner`, in one run on the same containers:

* **Throughput**: iperf3 TCP client -> server with several parallel streams,
  unshaped and through the engine at "0 ms" (a 1 us delay: a zero delay
  installs no queue at all) and at 20 ms, best of N. Several streams because
  one TCP socket's send buffer (4 MB here) caps a 20 ms path near 1.5 Gbit/s
  whatever carries it: the engine is measured, not one window. Once with the
  namespace's default congestion control and once with cubic (per route in
  the client's namespace): BBR sizes its window from the smallest RTT it
  saw, so on a near-zero path the verdict loop's wake-up jitter (which a
  busy host makes milliseconds) throttles it, while cubic fills the path.
* **Latency**: echo probes over a 50 ms link, idle and with that iperf3
  running through it: the added delay's median and p99, against the targets
  (median within 2 ms of the delay, p99 at most 5 ms above it).
* The verdict loop's own figures for each shaped row, from its last log line:
  packets it queued, verdict messages it sent (batches make them fewer than
  packets), its CPU, and the kernel's drops of its queue (queue full, socket full).

Figures are reported with their targets, never asserted; the load average of
the machine is recorded beside them, since a shared machine moves them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

ENGINE_TARGET_BITS: Final = 3e9  # issue 18: >= 3 Gbit/s for delay-only shaping
LATENCY_DELAY: Final = 0.050
LATENCY_P50_TOLERANCE: Final = 0.002
LATENCY_P99_SLACK: Final = 0.005
ZERO_DELAY_SPEC: Final = "delay=1us"  # "0 ms": the smallest delay that engages the loop
THROUGHPUT_LINKS: Final = (("nfqueue 0 ms", ZERO_DELAY_SPEC), ("nfqueue 20 ms", "delay=20ms"))
UNSHAPED_LABEL: Final = "unshaped"


@dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How long and how often: iperf3 seconds and streams, repeats, probes."""

    seconds: int = 5
    streams: int = 4
    repeats: int = 3
    probes: int = 500  # 20 ms apart
    baseline_probes: int = 100
    # TCP congestion controls of the sender; None: the namespace's default
    congestion: tuple[str | None, ...] = (None, "cubic")

    @classmethod
    def short(cls) -> EngineOptions:
        """``lab bench --quick``: one short run each."""
        return cls(seconds=2, repeats=1, probes=100, baseline_probes=50)


@dataclass(frozen=True, kw_only=True)
class LoopFigures:
    """A verdict loop's totals from its ``event=shaper_stopped`` line."""

    packets: int  # queued to it by the kernel (GSO packets count once)
    verdicts: int  # verdict messages it sent; a batch counts once
    batches: int
    cpu_seconds: float
    queue_dropped: int | None = None  # the kernel: the queue was full
    user_dropped: int | None = None  # the kernel: the loop's socket buffer was full

    @classmethod
    def from_stats(cls, stats: Mapping[str, int]) -> LoopFigures | None:
        """From :func:`lab.report.watch.parse_shaper_stats`'s fields (None if incomplete)."""
        try:
            return cls(
                packets=stats["received"],
                verdicts=stats["verdicts"],
                batches=stats["batches"],
                cpu_seconds=stats["cpu_ms"] / 1000,
                queue_dropped=stats.get("queue_dropped"),
                user_dropped=stats.get("user_dropped"),
            )
        except KeyError:
            return None

    @property
    def packets_per_verdict(self) -> float | None:
        return self.packets / self.verdicts if self.verdicts else None


@dataclass(frozen=True, kw_only=True)
class ThroughputRow:
    """iperf3 TCP over one link, every repeat; the loop's figures when it was shaped."""

    label: str
    spec: str  # LinkSpec.describe(), "none" unshaped
    bits_per_second: tuple[float, ...]
    seconds: float  # iperf3 seconds per repeat, the omitted first one included
    loop: LoopFigures | None = None
    congestion: str = ""  # the sender's TCP congestion control

    @property
    def best(self) -> float:
        return max(self.bits_per_second, default=0.0)

    @property
    def cpu_share(self) -> float | None:
        """The loop's CPU over the repeats, as a share of one core (its whole life: an upper bound)."""
        total = self.seconds * len(self.bits_per_second)
        if self.loop is None or total <= 0:
            return None
        return self.loop.cpu_seconds / total


@dataclass(frozen=True, kw_only=True)
class LatencyRow:
    """Echo RTTs over a shaped link against the unshaped baseline; seconds."""

    label: str
    delay: float  # asked, one way
    baseline: float | None  # median RTT unshaped
    p50: float | None  # RTT median, shaped
    p99: float | None
    sent: int
    received: int
    loaded: bool = False
    # p99 of the unshaped RTT: the measurement's own noise (a busy host delays the prober too)
    baseline_p99: float | None = None

    @property
    def added_p50(self) -> float | None:
        if self.p50 is None or self.baseline is None:
            return None
        return self.p50 - self.baseline

    @property
    def added_p99(self) -> float | None:
        if self.p99 is None or self.baseline is None:
            return None
        return self.p99 - self.baseline

    @property
    def p50_met(self) -> bool | None:
        added = self.added_p50
        return None if added is None else abs(added - self.delay) <= LATENCY_P50_TOLERANCE

    @property
    def p99_met(self) -> bool | None:
        added = self.added_p99
        return None if added is None else added <= self.delay + LATENCY_P99_SLACK


@dataclass(frozen=True, kw_only=True)
class EngineReport:
    """Everything the engine bench measured in one run, with the load it ran under."""

    options: EngineOptions
    throughput: tuple[ThroughputRow, ...]
    latency: tuple[LatencyRow, ...]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    def unshaped(self, congestion: str) -> ThroughputRow | None:
        """The unshaped row measured with ``congestion``."""
        return next(
            (r for r in self.throughput if r.spec == "none" and r.congestion == congestion), None
        )

    def ratio(self, row: ThroughputRow) -> float | None:
        """``row``'s best against the unshaped best of this run, same congestion control."""
        base = self.unshaped(row.congestion)
        if base is None or base.best <= 0:
            return None
        return row.best / base.best

    @property
    def title(self) -> str:
        o = self.options
        load = " -> ".join(f"{a:.1f}" for a in (self.load_before[0], self.load_after[0]))
        return (
            f"NFQUEUE engine: iperf3 TCP client -> server, {o.streams} streams, "
            f"{o.seconds} s, best of {o.repeats} (load average {load})"
        )

    def throughput_rows(self) -> list[dict[str, str]]:
        rows = []
        for row in self.throughput:
            value = self.ratio(row)
            loop = row.loop
            shaped = row.spec != "none"
            met = row.best >= ENGINE_TARGET_BITS
            share = row.cpu_share
            per = loop.packets_per_verdict if loop else None
            rows.append(
                {
                    "link": row.label,
                    "TCP": row.congestion or "-",
                    "Gbit/s": f"{row.best / 1e9:.2f}",
                    "runs": " ".join(f"{b / 1e9:.2f}" for b in row.bits_per_second),
                    "ratio": "-" if value is None else f"{value:.2f}",
                    "target": (
                        f">={ENGINE_TARGET_BITS / 1e9:g} {'met' if met else 'missed'}"
                        if shaped
                        else "-"
                    ),
                    "loop CPU": "-" if share is None else f"{share * 100:.0f}%",
                    "pkt/verdict": "-" if per is None else f"{per:.1f}",
                    "queue drops": _drops(loop),
                }
            )
        return rows

    def latency_rows(self) -> list[dict[str, str]]:
        return [
            {
                "link": row.label,
                "asked": f"{row.delay * 1000:g}ms",
                "added p50": _ms(row.added_p50),
                "added p99": _ms(row.added_p99),
                "unshaped p99": _ms(row.baseline_p99),
                "p50 target": _verdict(row.p50_met, f"±{LATENCY_P50_TOLERANCE * 1000:g}ms"),
                "p99 target": _verdict(row.p99_met, f"+{LATENCY_P99_SLACK * 1000:g}ms"),
                "replies": f"{row.received}/{row.sent}",
            }
            for row in self.latency
        ]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, with the derived figures (best, ratio, targets) for readers."""
        return {
            "kind": "bench-engine",
            "options": dataclasses.asdict(self.options),
            "load_before": list(self.load_before),
            "load_after": list(self.load_after),
            "throughput": [
                dataclasses.asdict(row)
                | {
                    "best": row.best,
                    "ratio": self.ratio(row),
                    "cpu_share": row.cpu_share,
                    "target": ENGINE_TARGET_BITS if row.spec != "none" else None,
                }
                for row in self.throughput
            ],
            "latency": [
                dataclasses.asdict(row)
                | {
                    "added_p50": row.added_p50,
                    "added_p99": row.added_p99,
                    "p50_met": row.p50_met,
                    "p99_met": row.p99_met,
                }
                for row in self.latency
            ],
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}ms"


def _verdict(met: bool | None, target: str) -> str:
    return "-" if met is None else f"{target} {'met' if met else 'missed'}"


def _drops(loop: LoopFigures | None) -> str:
    if loop is None or loop.queue_dropped is None or loop.user_dropped is None:
        return "-"
    return f"{loop.queue_dropped} full, {loop.user_dropped} socket"
