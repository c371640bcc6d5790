"""Result records of ``lab bench`` and ``lab sweep``, and their JSON.

Pure. Records are frozen dataclasses; ``to_json`` gives plain dicts (with
derived figures such as ratios added for readers of the file) and
``from_json`` reads them back, so a report can be rebuilt from a saved run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lab.bench.errors import BenchError
from lab.bench.throughput import mathis_bound, ratio, target_for

T = TypeVar("T")

UNSHAPED = "none"


def _build(cls: type[T], data: Any, where: str, **nested: Any) -> T:
    """``cls(**data)`` for a JSON object, with a clear error for missing or extra keys."""
    if not isinstance(data, Mapping):
        raise BenchError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    required = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise BenchError(f"{where}: missing {', '.join(missing)}")
    values = {key: value for key, value in data.items() if key in names}
    values.update(nested)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: {exc}") from exc


# --------------------------------------------------------------------------- bench


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One figure of a bench run: what moved, how fast, compared with what."""

    name: str  # fetch | naive | udp | iperf3-tcp | iperf3-udp
    label: str
    transport: str  # tcp | udp
    bytes: int
    seconds: float
    bits_per_second: float
    reference: str | None = None  # the iperf3 measurement this one is compared with
    loss: float | None = None  # UDP: share of the datagrams that did not arrive
    verified: bool | None = None  # arrived identical to the source (None: not applicable)
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Condition:
    """The link a run measured: shaping asked for, engine that did it, RTT measured."""

    spec: str  # LinkSpec.describe(); "none" when unshaped
    engine: str  # netem | nfqueue | none
    rtt: float | None = None  # seconds, measured client -> server
    # container -> the TCP congestion control its new connections used in this run
    congestion: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BenchRun:
    """Every measurement under one condition, same containers, one after the other."""

    condition: Condition
    measurements: tuple[Measurement, ...]

    def get(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)

    def ratio(self, measurement: Measurement) -> float | None:
        """``measurement`` against its iperf3 reference in this run (None without one)."""
        reference = self.get(measurement.reference) if measurement.reference else None
        if reference is None:
            return None
        return ratio(measurement.bits_per_second, reference.bits_per_second)

    @property
    def title(self) -> str:
        rtt = self.condition.rtt
        shown = "-" if rtt is None else f"{rtt * 1000:.2f} ms"
        congestion = ", ".join(f"{n} {a}" for n, a in self.condition.congestion.items())
        tcp = f", TCP {congestion}" if congestion else ""
        return f"link: {self.condition.spec} (engine {self.condition.engine}, RTT {shown}{tcp})"

    def rows(self) -> list[dict[str, str]]:
        """One row per measurement: absolute figures, ratio to iperf3, target."""
        rows = []
        for m in self.measurements:
            value = self.ratio(m)
            target = target_for(m.name, self.condition.spec)
            met = target.met(value) if target else None
            rows.append(
                {
                    "measurement": m.label,
                    "Mbit/s": f"{m.bits_per_second / 1e6:.1f}",
                    "MB": f"{m.bytes / 1e6:.1f}",
                    "s": f"{m.seconds:.2f}",
                    "loss%": "-" if m.loss is None else f"{m.loss * 100:.2f}",
                    "intact": {True: "yes", False: "NO", None: "-"}[m.verified],
                    "ratio": "-" if value is None else f"{value:.2f}",
                    "target": "-"
                    if target is None
                    else f">={target.minimum:g} {'met' if met else 'missed'}",
                }
            )
        return rows


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    """A whole ``lab bench``: when, with what, and one run per condition."""

    started: str
    finished: str
    quick: bool
    file_bytes: int
    versions: Mapping[str, str] = field(default_factory=dict)
    runs: tuple[BenchRun, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, each measurement with its ratio and target added."""
        runs = []
        for run in self.runs:
            measurements = []
            for m in run.measurements:
                value = run.ratio(m)
                target = target_for(m.name, run.condition.spec)
                measurements.append(
                    dataclasses.asdict(m)
                    | {
                        "ratio": value,
                        "target": target.minimum if target else None,
                        "target_met": target.met(value) if target else None,
                    }
                )
            runs.append(
                {"condition": dataclasses.asdict(run.condition), "measurements": measurements}
            )
        return {
            "kind": "bench",
            "started": self.started,
            "finished": self.finished,
            "quick": self.quick,
            "file_bytes": self.file_bytes,
            "versions": dict(self.versions),
            "runs": runs,
        }

    @classmethod
    def from_json(cls, data: Any) -> BenchReport:
        if not isinstance(data, Mapping) or data.get("kind") != "bench":
            raise BenchError('not a lab bench result (expected "kind": "bench")')
        runs = []
        for index, run in enumerate(data.get("runs", [])):
            where = f"runs[{index}]"
            condition = _build(Condition, run.get("condition"), f"{where}.condition")
            measurements = tuple(
                _build(Measurement, m, f"{where}.measurements[{j}]")
                for j, m in enumerate(run.get("measurements", []))
            )
            runs.append(BenchRun(condition=condition, measurements=measurements))
        return _build(cls, data, "bench result", runs=tuple(runs))

    def rows(self) -> list[dict[str, str]]:
        """The result table: one row per measurement, ratios to iperf3 in the same run."""
        return [{"condition": run.condition.spec} | row for run in self.runs for row in run.rows()]


# --------------------------------------------------------------------------- sweep


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One grid point of a TCP-vs-UDP sweep, as measured."""

    delay: float  # one-way, seconds, as shaped
    loss: float  # share, as shaped
    engine: str  # netem | nfqueue | none
    rtt: float | None  # measured, seconds
    tcp_bits_per_second: float
    tcp_delivered: float  # share of the bytes sent
    udp_bits_per_second: float
    udp_delivered: float
    udp_kernel_drops: int = 0
    seconds: float = 0.0  # wall time of the point, shaping included
    congestion: str = ""  # the TCP sender's algorithm (from its socket); "" if not reported
    congestion_ends: Mapping[str, str] = field(default_factory=dict)  # container -> algorithm
    tcp_latency_p50_ms: float | None = None  # per message, sender's app to receiver's app
    tcp_latency_p99_ms: float | None = None
    udp_latency_p50_ms: float | None = None  # per datagram, one way
    udp_latency_p99_ms: float | None = None
    udp_offered_bits_per_second: float | None = None  # None: unpaced
    meaning: str = ""  # tcp-vs-udp's sentence about this point's numbers

    def mathis(self, mss: int) -> float | None:
        """The Mathis bound at this point's measured RTT (None: no loss or no RTT)."""
        if self.rtt is None or self.rtt <= 0:
            return None
        return mathis_bound(rtt=self.rtt, loss=self.loss, mss=mss)


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """A whole sweep: what ran, under which conditions, and every point."""

    scenario: str
    link: str  # "client -> udp-listener"
    started: str
    finished: str
    bytes_per_point: int
    datagram_size: int
    datagram_rate: float  # datagrams per second
    mss: int
    versions: Mapping[str, str] = field(default_factory=dict)
    points: tuple[SweepPoint, ...] = ()

    @property
    def engines(self) -> list[str]:
        """Engines that shaped the points (``none`` only when nothing was shaped)."""
        used = sorted({p.engine for p in self.points if p.engine != UNSHAPED})
        return used or [UNSHAPED]

    @property
    def delays(self) -> list[float]:
        return sorted({p.delay for p in self.points})

    @property
    def algorithms(self) -> list[str]:
        """The TCP congestion controls the points ran with, in first-run order."""
        return list(dict.fromkeys(p.congestion for p in self.points))

    def at_delay(self, delay: float, congestion: str | None = None) -> list[SweepPoint]:
        """The points at ``delay`` (and with ``congestion``, if given), by loss."""
        return sorted(
            (
                p
                for p in self.points
                if p.delay == delay and (congestion is None or p.congestion == congestion)
            ),
            key=lambda p: p.loss,
        )

    def to_json(self) -> dict[str, Any]:
        points = [
            dataclasses.asdict(p) | {"mathis_bits_per_second": p.mathis(self.mss)}
            for p in self.points
        ]
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": "sweep"} | plain | {"versions": dict(self.versions), "points": points}

    @classmethod
    def from_json(cls, data: Any) -> SweepResult:
        if not isinstance(data, Mapping) or data.get("kind") != "sweep":
            raise BenchError('not a lab sweep result (expected "kind": "sweep")')
        raw: Sequence[Any] = data.get("points", [])
        points = tuple(_build(SweepPoint, p, f"points[{i}]") for i, p in enumerate(raw))
        return _build(cls, data, "sweep result", points=points)

    def rows(self) -> list[dict[str, str]]:
        """The result table, one row per point: by algorithm, then delay-major."""
        rows = []
        for algorithm in self.algorithms:
            for delay in self.delays:
                for p in self.at_delay(delay, algorithm):
                    bound = p.mathis(self.mss)
                    rows.append(
                        {
                            "TCP cc": p.congestion or "-",
                            "delay ms": f"{p.delay * 1000:g}",
                            "loss %": f"{p.loss * 100:g}",
                            "rtt ms": "-" if p.rtt is None else f"{p.rtt * 1000:.1f}",
                            "engine": p.engine,
                            "TCP Mbit/s": f"{p.tcp_bits_per_second / 1e6:.2f}",
                            "Mathis Mbit/s": "-" if bound is None else f"{bound / 1e6:.2f}",
                            "TCP delivered %": f"{p.tcp_delivered * 100:.1f}",
                            "TCP p50/p99 ms": _pair(p.tcp_latency_p50_ms, p.tcp_latency_p99_ms),
                            "UDP Mbit/s": f"{p.udp_bits_per_second / 1e6:.2f}",
                            "UDP delivered %": f"{p.udp_delivered * 100:.1f}",
                            "UDP p50/p99 ms": _pair(p.udp_latency_p50_ms, p.udp_latency_p99_ms),
                            "UDP kernel drops": str(p.udp_kernel_drops),
                            "seconds": f"{p.seconds:.1f}",
                        }
                    )
        return rows


def _pair(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"{low:.1f}/{high:.1f}"
