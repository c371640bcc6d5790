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

from lab.bench.ceiling import Ceiling, Ratio, ceiling, ratios
from lab.bench.errors import BenchError
from lab.bench.idle import TARGET_PERCENT, IdleCpu
from lab.bench.throughput import mathis_bound

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
    """One figure of a bench run: what moved (or was hashed, or written), how fast.

    With several tries (``lab bench --repeat N``) the figures are the best try's
    and ``samples`` holds every try's rate, in order.
    """

    name: str  # lab.bench.ceiling's names: iperf3-tcp, sha256, write-fsync, peer, fetch, ...
    label: str
    transport: str  # tcp | udp | local (no network: hashing, the disk)
    bytes: int
    seconds: float
    bits_per_second: float
    loss: float | None = None  # UDP: share of the datagrams that did not arrive
    verified: bool | None = None  # arrived identical to the source (None: not applicable)
    note: str = ""
    samples: tuple[float, ...] = ()  # bit/s of every try


def best_of(tries: Sequence[Measurement]) -> Measurement:
    """The fastest of ``tries`` (same measurement), carrying every try's rate.

    ``verified`` is True only if every try arrived intact: one corrupt try
    makes the figure suspect, however fast the best one was.
    """
    if not tries:
        raise BenchError("best_of needs at least one try")
    names = {m.name for m in tries}
    if len(names) != 1:
        raise BenchError(f"best_of mixes measurements: {sorted(names)}")
    best = max(tries, key=lambda m: m.bits_per_second)
    checks = [m.verified for m in tries]
    verified = None if all(v is None for v in checks) else all(v is True for v in checks)
    samples = tuple(rate for m in tries for rate in (m.samples or (m.bits_per_second,)))
    return dataclasses.replace(best, verified=verified, samples=samples)


@dataclass(frozen=True, kw_only=True)
class Condition:
    """What a run measured under: the link, the engine, RTT, where the client wrote, load."""

    spec: str  # LinkSpec.describe(); "none" when unshaped
    engine: str  # netem | nfqueue | none
    rtt: float | None = None  # seconds, measured client -> server
    dest: str = "disk"  # lab bench --dest: disk | tmpfs
    dest_path: str = ""  # where that is in the client
    dest_fs: str = ""  # its file system type, as the client's mount table says
    load_average: tuple[float, ...] = ()  # 1-minute load before and after the run
    # container -> the TCP congestion control its new connections used in this run
    congestion: Mapping[str, str] = field(default_factory=dict)


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True, kw_only=True)
class BenchRun:
    """Every measurement under one condition, same containers, one after the other."""

    condition: Condition
    measurements: tuple[Measurement, ...]

    def get(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)

    def rates(self) -> dict[str, float]:
        """Measurement name -> bit/s."""
        return {m.name: m.bits_per_second for m in self.measurements}

    def ceiling(self) -> Ceiling | None:
        """min(iperf3, SHA-256, the best write+fsync) in this run; None if one is missing."""
        return ceiling(self.rates())

    def ratios(self) -> list[Ratio]:
        """Every ratio of this run, with its target and verdict."""
        return ratios(self.rates(), dest=self.condition.dest, condition=self.condition.spec)

    @property
    def title(self) -> str:
        c = self.condition
        shown = "-" if c.rtt is None else f"{c.rtt * 1000:.2f} ms"
        load = "/".join(f"{v:.2f}" for v in c.load_average) or "-"
        where = f"{c.dest} ({c.dest_path}, {c.dest_fs})" if c.dest_path else c.dest
        congestion = ", ".join(f"{n} {a}" for n, a in c.congestion.items())
        tcp = f", TCP {congestion}" if congestion else ""
        return (
            f"link: {c.spec} (engine {c.engine}, RTT {shown}{tcp}), dest {where}, "
            f"load average {load}"
        )

    def rows(self) -> list[dict[str, str]]:
        """One row per measurement, then the ceiling: absolute figures."""
        rows = []
        for m in self.measurements:
            tries = "/".join(f"{rate / 1e6:.0f}" for rate in m.samples) if m.samples else "-"
            rows.append(
                {
                    "measurement": m.label,
                    "Mbit/s": f"{m.bits_per_second / 1e6:.1f}",
                    "MB": f"{m.bytes / 1e6:.1f}",
                    "s": f"{m.seconds:.2f}",
                    "loss%": "-" if m.loss is None else f"{m.loss * 100:.2f}",
                    "intact": {True: "yes", False: "NO", None: "-"}[m.verified],
                    "tries Mbit/s": tries,
                }
            )
        found = self.ceiling()
        if found is not None:
            bound = self.get(found.bound_by)
            rows.append(
                {
                    "measurement": f"ceiling: {bound.label if bound else found.bound_by}",
                    "Mbit/s": f"{found.bits_per_second / 1e6:.1f}",
                    "MB": "-",
                    "s": "-",
                    "loss%": "-",
                    "intact": "-",
                    "tries Mbit/s": "-",
                }
            )
        return rows

    def ratio_rows(self) -> list[dict[str, str]]:
        """One row per ratio: its value, the target and whether it is met."""
        return [
            {
                "ratio": r.label,
                "value": _figure(r.value),
                "target": "-" if r.target is None else f">={r.target:g}",
                "verdict": {True: "met", False: "missed", None: "-"}[r.met],
            }
            for r in self.ratios()
        ]


@dataclass(frozen=True, kw_only=True)
class BenchReport:
    """A whole ``lab bench``: when, with what, and one run per condition."""

    started: str
    finished: str
    quick: bool
    file_bytes: int
    repeat: int = 1
    versions: Mapping[str, str] = field(default_factory=dict)
    runs: tuple[BenchRun, ...] = ()
    idle_cpu: IdleCpu | None = None  # the lab's, before the measurements
    warnings: tuple[str, ...] = ()  # what may have skewed the figures, said beside them

    def idle_cpu_rows(self) -> list[dict[str, str]]:
        """The idle lab's CPU, % of one core, per service and in total, with its target."""
        if self.idle_cpu is None:
            return []
        return [row | {"target": "-", "verdict": "-"} for row in self.idle_cpu.rows()[:-1]] + [
            {
                "service": "lab (total)",
                "idle CPU": f"{self.idle_cpu.total:.2f} %",
                "target": f"<={TARGET_PERCENT:g} %",
                "verdict": "met" if self.idle_cpu.within_target else "missed",
            }
        ]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: every measurement, and per run the ceiling and every ratio."""
        runs = []
        for run in self.runs:
            found = run.ceiling()
            runs.append(
                {
                    "condition": dataclasses.asdict(run.condition),
                    "measurements": [dataclasses.asdict(m) for m in run.measurements],
                    "ceiling": dataclasses.asdict(found) if found else None,
                    "ratios": [dataclasses.asdict(r) for r in run.ratios()],
                }
            )
        return {
            "kind": "bench",
            "started": self.started,
            "finished": self.finished,
            "quick": self.quick,
            "file_bytes": self.file_bytes,
            "repeat": self.repeat,
            "versions": dict(self.versions),
            "idle_cpu": None if self.idle_cpu is None else self.idle_cpu.as_json(),
            "warnings": list(self.warnings),
            "runs": runs,
        }

    @classmethod
    def from_json(cls, data: Any) -> BenchReport:
        """A report from its JSON; the ceiling and ratios are derived again, not read."""
        if not isinstance(data, Mapping) or data.get("kind") != "bench":
            raise BenchError('not a lab bench result (expected "kind": "bench")')
        runs = []
        for index, run in enumerate(data.get("runs", [])):
            where = f"runs[{index}]"
            raw = run.get("condition")
            load = raw.get("load_average", ()) if isinstance(raw, Mapping) else ()
            condition = _build(Condition, raw, f"{where}.condition", load_average=tuple(load))
            measurements = tuple(
                _build(
                    Measurement,
                    m,
                    f"{where}.measurements[{j}]",
                    samples=tuple(m.get("samples", ()) if isinstance(m, Mapping) else ()),
                )
                for j, m in enumerate(run.get("measurements", []))
            )
            runs.append(BenchRun(condition=condition, measurements=measurements))
        idle = _idle_from_json(data.get("idle_cpu"))
        warnings = data.get("warnings", [])
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            raise BenchError("warnings: expected a list of strings")
        return _build(
            cls, data, "bench result", runs=tuple(runs), idle_cpu=idle, warnings=tuple(warnings)
        )

    def rows(self) -> list[dict[str, str]]:
        """Every figure of every run, one table (the condition in the first column)."""
        return [{"condition": run.condition.spec} | row for run in self.runs for row in run.rows()]

    def ratio_rows(self) -> list[dict[str, str]]:
        """Every ratio of every run, one table."""
        return [
            {"condition": run.condition.spec, "dest": run.condition.dest} | row
            for run in self.runs
            for row in run.ratio_rows()
        ]


def _idle_from_json(data: Any) -> IdleCpu | None:
    """:class:`IdleCpu` from its ``as_json``; None when the report has none."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise BenchError(f"idle_cpu: expected an object, got {type(data).__name__}")
    try:
        seconds = float(data["seconds"])
        per_service = {str(k): float(v) for k, v in data["percent_of_one_core"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BenchError(f"idle_cpu: {exc!r}") from exc
    return IdleCpu(seconds=seconds, per_service=per_service)


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
