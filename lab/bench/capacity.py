"""UDP capacity search of ``lab bench --udp-capacity``: plan, verdicts, records; pure.

The capacity of a UDP path is the highest **offered** rate (datagrams per
second) at which the receiver lost less than 0.1 % of what was sent. It is
found by a fixed budget of trials, each a few seconds at one rate:

1. grow exponentially from ``start`` (x ``growth``) while trials pass;
2. once a rate fails, bisect between the highest rate that passed and the
   lowest above it that failed, until the two are within ``precision`` or the
   budget is spent. A rate that fails is tried again up to ``attempts`` times
   (best of N: a shared machine's hiccup is not the path's capacity).

A trial fails on **loss** (sent - received >= ``loss_limit`` of sent) or when
the sender fell **short** of the rate it was asked for (it sent at less than
``shortfall`` of it): then the sender, not the path, was the limit, and that
rate was never offered. The same plan drives our sender/listener and iperf3
``-u``, so both visit the same rates while their verdicts agree.

The kernel's drops in the listener's namespace (``/proc/net/snmp`` Udp
``InErrors``, ``RcvbufErrors``) are read before and after every trial and
reported beside the application's loss: a datagram the kernel dropped for a
full socket buffer is lost to the application too, but it says the receiver
was too slow, not that the network lost it. The kernel counts packets: when
the listener takes coalesced reads (UDP GRO) of a GSO sender's batches, one
drop may be a batch of up to 64 datagrams.

The search is :func:`search` over a ``measure(rate) -> Trial`` function, so
it is unit-tested with a fake sender and listener; :mod:`lab.bench.capacity_runner`
supplies the real one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from lab.bench.errors import BenchError
from socketlab.udp.accounting import parse_udp_snmp

LOSS_LIMIT: Final = 0.001  # issue 18: < 0.1 % loss
SHORTFALL: Final = 0.95
OURS: Final = "socketlab"
IPERF3: Final = "iperf3"
# issue 18 section 4: 64 B at >= 200,000 dgram/s; 1,200 B at >= 0.8x iperf3's rate.
TARGET_64_RATE: Final = 200_000.0
TARGET_1200_RATIO: Final = 0.8


class Verdict(Enum):
    """What one trial says about its rate."""

    PASSED = "pass"
    LOSS = "loss"  # lost at least the loss limit
    SHORT = "short"  # the sender could not offer the rate


@dataclass(frozen=True, kw_only=True)
class CapacityPlan:
    """How the search spends its budget."""

    start: float = 25_000.0  # datagrams/s of the first trial
    growth: float = 2.0
    ceiling: float = 1_600_000.0  # never offered more than this
    trials: int = 8  # rates tried, at most
    attempts: int = 2  # tries of a rate before it fails (best of N)
    seconds: float = 3.0  # length of one trial
    precision: float = 0.05  # bisection stops when failed / passed <= 1 + precision
    loss_limit: float = LOSS_LIMIT
    shortfall: float = SHORTFALL
    segments: int = 64  # our sender's datagrams per send call (UDP GSO; 1: one call each)

    def __post_init__(self) -> None:
        if not (0 < self.start <= self.ceiling and self.growth > 1):
            raise BenchError("capacity plan: need 0 < start <= ceiling and growth > 1")
        counts = (self.trials, self.attempts, self.segments)
        if min(counts) < 1 or self.seconds <= 0 or self.precision <= 0:
            raise BenchError(
                "capacity plan: trials, attempts, segments, seconds, precision must be > 0"
            )
        if not (0 < self.loss_limit < 1 and 0 < self.shortfall <= 1):
            raise BenchError("capacity plan: loss_limit in (0, 1), shortfall in (0, 1]")

    @classmethod
    def short(cls) -> CapacityPlan:
        """A small budget (``--quick``): a few one-second trials."""
        return cls(start=5_000.0, trials=4, attempts=1, seconds=1.0)

    def count(self, rate: float) -> int:
        """Datagrams one trial at ``rate`` sends."""
        return max(1, round(rate * self.seconds))


@dataclass(frozen=True, kw_only=True)
class KernelDrops:
    """Increases of the kernel's Udp counters in the listener's namespace over a trial."""

    in_errors: int = 0  # every datagram the kernel dropped on receive (incl. the next two)
    rcvbuf_errors: int = 0  # dropped because the socket's receive buffer was full
    in_datagrams: int = 0  # delivered to some socket of the namespace

    @classmethod
    def between(cls, before: str, after: str) -> KernelDrops:
        """The counters' increase from one ``/proc/net/snmp`` text to the next."""
        first, last = parse_udp_snmp(before), parse_udp_snmp(after)
        names = ("InErrors", "RcvbufErrors", "InDatagrams")
        missing = [name for name in names if name not in first or name not in last]
        if missing:
            raise BenchError(f"/proc/net/snmp has no Udp {', '.join(missing)} counters")
        return cls(
            in_errors=last["InErrors"] - first["InErrors"],
            rcvbuf_errors=last["RcvbufErrors"] - first["RcvbufErrors"],
            in_datagrams=last["InDatagrams"] - first["InDatagrams"],
        )


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial: ``rate`` asked for, what the sender sent and the receiver counted."""

    rate: float  # offered datagrams/s, as asked
    sent: int  # by the sender's own count
    received: int  # by the receiver's own count (ours: the listener's session)
    seconds: float  # the sender's time from first to last datagram
    kernel: KernelDrops = field(default_factory=KernelDrops)
    # Ours only, the listener's own view of the lost ones (None for iperf3):
    gaps: int | None = None  # sequence numbers missing between its first and highest
    missed_at_start: int | None = None  # before its first
    tail: int | None = None  # sent after its highest (sent - highest_seq)
    duplicates: int | None = None
    send_errors: int | None = None  # numbered but refused by the sender's kernel (ENOBUFS, ICMP)
    segments: int | None = None  # datagrams per send call (UDP GSO; 1: one call each)

    @property
    def lost(self) -> int:
        return self.sent - self.received

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 1.0

    @property
    def achieved(self) -> float:
        """The rate the sender really offered, datagrams/s."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def verdict(self, plan: CapacityPlan) -> Verdict:
        if self.sent == 0 or self.achieved < plan.shortfall * self.rate:
            return Verdict.SHORT
        return Verdict.LOSS if self.loss >= plan.loss_limit else Verdict.PASSED

    def to_json(self, plan: CapacityPlan) -> dict[str, Any]:
        return dataclasses.asdict(self) | {
            "lost": self.lost,
            "loss": self.loss,
            "achieved": self.achieved,
            "verdict": self.verdict(plan).value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values["kernel"] = KernelDrops(**data.get("kernel", {}))
        try:
            return cls(**values)
        except TypeError as exc:
            raise BenchError(f"capacity trial: {exc}") from exc


def _legible(rate: float) -> float:
    """``rate`` to three significant figures, so the rates tried read well."""
    if rate <= 0:
        return rate
    digits = 2 - math.floor(math.log10(rate))
    return float(round(rate, digits))


def next_rate(plan: CapacityPlan, tried: Sequence[tuple[float, bool]]) -> float | None:
    """The next rate to try after ``tried`` (rate, passed) in order; None: the search is over."""
    if not tried:
        return _legible(plan.start)
    passed = max((rate for rate, ok in tried if ok), default=0.0)
    failed = min((rate for rate, ok in tried if not ok and rate > passed), default=None)
    if failed is None:  # growing
        rate = None if passed >= plan.ceiling else min(_legible(passed * plan.growth), plan.ceiling)
    elif passed == 0:  # nothing passed yet: step down
        rate = _legible(failed / plan.growth)
    elif failed / passed <= 1 + plan.precision:
        rate = None
    else:  # bisecting; a middle that rounds onto an end is no new rate
        middle = _legible((passed + failed) / 2)
        rate = middle if passed < middle < failed else None
    return rate if len(tried) < plan.trials else None


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """One tool's search at one datagram size: every trial, and the capacity found."""

    tool: str  # OURS | IPERF3
    size: int  # datagram payload, bytes
    trials: tuple[Trial, ...]
    plan: CapacityPlan

    @property
    def best(self) -> Trial | None:
        """The passing trial at the highest rate (None: no rate passed)."""
        passing = [t for t in self.trials if t.verdict(self.plan) is Verdict.PASSED]
        return max(passing, key=lambda t: t.rate, default=None)

    @property
    def rate(self) -> float:
        """The capacity: the highest offered rate that passed, datagrams/s (0: none)."""
        best = self.best
        return best.rate if best else 0.0

    @property
    def bounded(self) -> bool:
        """A rate above the capacity failed (else it is a lower bound: budget or ceiling)."""
        return any(
            t.rate > self.rate and t.verdict(self.plan) is not Verdict.PASSED for t in self.trials
        )

    @property
    def limit(self) -> str:
        """What stopped the search above the capacity: loss, short (sender), or none."""
        above = [t for t in self.trials if t.rate > self.rate]
        if not above:
            return "none"
        lowest = min(above, key=lambda t: t.rate)
        verdicts = {t.verdict(self.plan) for t in above if t.rate == lowest.rate}
        return Verdict.LOSS.value if Verdict.LOSS in verdicts else Verdict.SHORT.value

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "size": self.size,
            "rate": self.rate,
            "bits_per_second": self.rate * self.size * 8,
            "bounded": self.bounded,
            "limit": self.limit,
            "trials": [t.to_json(self.plan) for t in self.trials],
        }


def search(
    plan: CapacityPlan,
    measure: Callable[[float], Trial],
    *,
    tool: str,
    size: int,
    progress: Callable[[Trial, Verdict], None] | None = None,
) -> Capacity:
    """Run the plan: ``measure(rate)`` for each rate :func:`next_rate` gives, best of
    ``plan.attempts`` for a rate that fails."""
    trials: list[Trial] = []
    tried: list[tuple[float, bool]] = []
    while (rate := next_rate(plan, tried)) is not None:
        ok = False
        for _ in range(plan.attempts):
            trial = measure(rate)
            trials.append(trial)
            verdict = trial.verdict(plan)
            if progress is not None:
                progress(trial, verdict)
            if verdict is Verdict.PASSED:
                ok = True
                break
        tried.append((rate, ok))
    return Capacity(tool=tool, size=size, trials=tuple(trials), plan=plan)


@dataclass(frozen=True, kw_only=True)
class CapacityReport:
    """``lab bench --udp-capacity``: ours and iperf3's per size, one run, with the load."""

    started: str
    finished: str
    plan: CapacityPlan
    searches: tuple[Capacity, ...]
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # 1-minute load: before, after, peak
    rcvbuf: int = 0  # receive buffer the listener's kernel granted, bytes
    versions: Mapping[str, str] = field(default_factory=dict)

    def get(self, tool: str, size: int) -> Capacity | None:
        return next((s for s in self.searches if (s.tool, s.size) == (tool, size)), None)

    def ratio(self, size: int) -> float | None:
        """Our capacity over iperf3's at ``size`` (None without an iperf3 figure)."""
        ours, theirs = self.get(OURS, size), self.get(IPERF3, size)
        if ours is None or theirs is None or theirs.rate <= 0:
            return None
        return ours.rate / theirs.rate

    def target(self, size: int) -> tuple[str, bool | None]:
        """The issue's target at ``size`` and whether it was met (None: no target or figure)."""
        ours = self.get(OURS, size)
        if size == 64:
            met = None if ours is None else ours.rate >= TARGET_64_RATE
            return f">= {TARGET_64_RATE:,.0f}/s", met
        if size == 1200:
            value = self.ratio(size)
            return f">= {TARGET_1200_RATIO:g}x iperf3", (
                None if value is None else value >= TARGET_1200_RATIO
            )
        return "-", None

    def sizes(self) -> list[int]:
        return list(dict.fromkeys(s.size for s in self.searches))

    def rows(self) -> list[dict[str, str]]:
        """One row per size: both capacities, loss and kernel drops at ours, ratio, target."""
        rows = []
        for size in self.sizes():
            ours, theirs = self.get(OURS, size), self.get(IPERF3, size)
            best = ours.best if ours else None
            value = self.ratio(size)
            target, met = self.target(size)
            rows.append(
                {
                    "size B": str(size),
                    "ours dgram/s": _rate(ours),
                    "loss %": "-" if best is None else f"{best.loss * 100:.3f}",
                    "kernel drops": "-" if best is None else _drops(best.kernel),
                    "iperf3 dgram/s": _rate(theirs),
                    "ratio": "-" if value is None else f"{value:.2f}",
                    "ours limit": ours.limit if ours else "-",
                    "target": f"{target} {'-' if met is None else 'met' if met else 'missed'}",
                }
            )
        return rows

    def trial_rows(self) -> list[dict[str, str]]:
        """Every trial, in order: rate asked and achieved, loss, kernel drops, verdict."""
        return [
            {
                "tool": search_.tool,
                "size B": str(search_.size),
                "asked/s": f"{trial.rate:,.0f}",
                "sent/s": f"{trial.achieved:,.0f}",
                "sent": f"{trial.sent:,}",
                "received": f"{trial.received:,}",
                "loss %": f"{trial.loss * 100:.3f}",
                "kernel drops": _drops(trial.kernel),
                "verdict": trial.verdict(self.plan).value,
            }
            for search_ in self.searches
            for trial in search_.trials
        ]

    def summary(self) -> str:
        """The report's line: both targets, met or missed, and the load they ran under."""
        parts = []
        for size in self.sizes():
            target, met = self.target(size)
            ours = self.get(OURS, size)
            shown = "-" if ours is None else f"{ours.rate:,.0f} dgram/s"
            verdict = "no figure" if met is None else "met" if met else "missed"
            parts.append(f"{size} B: ours {shown}, target {target} {verdict}")
        before, after, peak = self.load
        return (
            "UDP capacity (< 0.1 % loss at the listener): "
            + "; ".join(parts)
            + f" (load average {before:.2f} before, {after:.2f} after, {peak:.2f} peak)"
        )

    def to_json(self) -> dict[str, Any]:
        targets = {}
        for size in self.sizes():
            target, met = self.target(size)
            targets[str(size)] = {"target": target, "met": met, "ratio": self.ratio(size)}
        return {
            "kind": "bench-udp-capacity",
            "started": self.started,
            "finished": self.finished,
            "plan": dataclasses.asdict(self.plan),
            "load": list(self.load),
            "rcvbuf": self.rcvbuf,
            "versions": dict(self.versions),
            "targets": targets,
            "searches": [s.to_json() for s in self.searches],
        }


def _rate(found: Capacity | None) -> str:
    if found is None:
        return "-"
    return f"{'' if found.bounded else '>= '}{found.rate:,.0f}"


def _drops(kernel: KernelDrops) -> str:
    return f"{kernel.in_errors:,} ({kernel.rcvbuf_errors:,} rcvbuf)"
