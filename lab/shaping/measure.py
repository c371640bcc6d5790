"""Self-check arithmetic: parse probe/iperf3 output, expected values, tolerances.

Pure. The runner measures a link after shaping it; this module turns the raw
tool output into numbers and decides whether they match what was requested.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lab.shaping.errors import ShapingError
from lab.shaping.spec import LinkSpec, format_duration, format_percent

# z for a two-sided 99 % interval
Z_99 = 2.576
# The self-check fails a user's `lab shape --check`. Its lower bound stays at
# 99 % so a link that was not shaped at all (0 lost when 1 % was asked) fails;
# its upper bound is 99.99 %, because a busy host only ever adds loss and a
# correctly shaped link must not fail one check in a hundred.
Z_SELF_CHECK_HIGH = 3.891
DELAY_TOLERANCE = 0.15
# Below this much requested delay, relative tolerance means nothing: allow this
# slack (a userspace verdict loop on a busy host adds about a millisecond).
DELAY_SLACK = 0.002
RATE_TOLERANCE = 0.15
# iperf3 reports TCP goodput; htb counts whole frames. With a 1500-byte MTU and
# TCP timestamps a full segment carries 1448 payload bytes in a 1514-byte frame.
GOODPUT_PER_WIRE = 1448 / 1514
# UDP probes of the rate carry this much payload; a frame adds UDP, IP and Ethernet headers.
UDP_PAYLOAD = 1400
UDP_PAYLOAD_PER_WIRE = UDP_PAYLOAD / (UDP_PAYLOAD + 8 + 20 + 14)


@dataclass(frozen=True)
class PingStats:
    transmitted: int
    received: int
    rtt_avg: float | None  # seconds; None when nothing came back
    duplicates: int = 0
    rtt_median: float | None = None

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    @property
    def loss(self) -> float:
        return self.lost / self.transmitted if self.transmitted else 0.0


def parse_probe(text: str) -> PingStats:
    """Read the JSON line ``socketlab probe`` prints."""
    try:
        report = json.loads(text.strip().splitlines()[-1])
        return PingStats(
            transmitted=int(report["sent"]),
            received=int(report["received"]),
            rtt_avg=None if report["rtt_avg"] is None else float(report["rtt_avg"]),
            duplicates=int(report.get("duplicates", 0)),
            rtt_median=None if report.get("rtt_median") is None else float(report["rtt_median"]),
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ShapingError(f"cannot read the probe report: {text.strip()[-200:]!r}") from exc


def parse_iperf3(text: str) -> float:
    """Received (payload) bits per second from ``iperf3 -J``, TCP or UDP."""
    try:
        report = json.loads(text)
        if "error" in report:
            raise ShapingError(f"iperf3: {report['error']}")
        return float(report["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ShapingError(f"cannot read iperf3 JSON output: {text.strip()[:200]!r}") from exc


def median_one_way_delay(spec: LinkSpec) -> float:
    """Median added delay of one direction (what the self-check compares: robust to stalls).

    A share ``reorder`` leaves at once; the rest is uniform in delay +/- jitter,
    clamped at 0. The median is the matching quantile of that mixture.
    """
    r, d, j = spec.reorder, spec.delay, spec.jitter
    if r >= 0.5:
        return 0.0
    quantile = (0.5 - r) / (1.0 - r)
    return max(0.0, d + j * (2.0 * quantile - 1.0))


def lost_share(spec: LinkSpec | None) -> float:
    """Share of probes one direction loses: dropped, or corrupted (checksum fails)."""
    if spec is None:
        return 0.0
    return 1.0 - (1.0 - spec.loss) * (1.0 - spec.corrupt)


def round_trip_loss(forward: LinkSpec, reverse: LinkSpec | None) -> float:
    return 1.0 - (1.0 - lost_share(forward)) * (1.0 - lost_share(reverse))


def binomial_interval(n: int, p: float, *, z: float = Z_99) -> tuple[float, float]:
    """Counts inside the two-sided interval of Binomial(n, p) (normal approximation)."""
    mean = n * p
    spread = z * math.sqrt(n * p * (1.0 - p)) + 1.0  # +1: continuity, and p = 0
    return max(0.0, mean - spread), min(float(n), mean + spread)


def self_check_band(n: int, p: float) -> tuple[float, float]:
    """The counts the self-check accepts: 99 % interval's low end, 99.99 % interval's high end."""
    low, _ = binomial_interval(n, p)
    _, high = binomial_interval(n, p, z=Z_SELF_CHECK_HIGH)
    return low, high


@dataclass(frozen=True)
class CheckRow:
    """One measured quantity beside what was requested."""

    metric: str
    requested: str
    measured: str
    ok: bool
    note: str = ""

    def as_row(self) -> dict[str, str]:
        return {
            "metric": self.metric,
            "requested": self.requested,
            "measured": self.measured,
            "result": "ok" if self.ok else "FAIL",
            "note": self.note,
        }


def check_delay(
    *, expected_added: float, baseline: float, stats: PingStats, jitter: float = 0.0
) -> CheckRow:
    """Added median RTT (measured minus the unshaped baseline) within 15 % (+2 ms).

    Medians, not means: a host too busy to schedule the verdict loop for a
    moment should not fail a link that is shaped right. ``jitter`` (both
    directions' together) widens the band, as samples wander by about that.
    """
    rtt = stats.rtt_median if stats.rtt_median is not None else stats.rtt_avg
    if rtt is None:
        return CheckRow("added RTT", format_duration(expected_added), "no reply", ok=False)
    added = rtt - baseline
    allowed = DELAY_TOLERANCE * expected_added + DELAY_SLACK + jitter
    return CheckRow(
        "added RTT",
        format_duration(expected_added),
        f"{added * 1000:.2f}ms",
        ok=abs(added - expected_added) <= allowed,
        note=f"baseline {baseline * 1000:.2f}ms, allowed ±{allowed * 1000:.2f}ms",
    )


def check_loss(*, expected: float, stats: PingStats) -> CheckRow:
    """Lost probes inside the binomial band of the expected share (99 % low, 99.99 % high)."""
    low, high = self_check_band(stats.transmitted, expected)
    return CheckRow(
        "round-trip loss",
        format_percent(expected),
        f"{stats.loss * 100:.2f}% ({stats.lost}/{stats.transmitted})",
        ok=low <= stats.lost <= high,
        note=f"allowed {low:.0f}..{high:.0f} lost",
    )


def round_trip_duplicates(forward: LinkSpec, reverse: LinkSpec | None) -> float:
    """Expected extra replies per answered probe: a copy on either way makes one more."""
    back = reverse.duplicate if reverse is not None else 0.0
    return 1.0 - (1.0 - forward.duplicate) * (1.0 - back)


def check_duplicates(*, expected: float, stats: PingStats) -> CheckRow:
    """Duplicate replies inside the binomial band (per answered probe; 99 % low, 99.99 % high)."""
    low, high = self_check_band(stats.received, expected)
    return CheckRow(
        "duplicates",
        format_percent(expected),
        f"{stats.duplicates / max(1, stats.received) * 100:.2f}% ({stats.duplicates})",
        ok=low <= stats.duplicates <= high,
        note=f"allowed {low:.0f}..{high:.0f}",
    )


def check_rate(*, requested: int, goodput: float) -> CheckRow:
    """Wire rate (goodput scaled by header overhead) within 15 % of the requested rate."""
    wire = goodput / GOODPUT_PER_WIRE
    return CheckRow(
        "rate",
        f"{requested / 1e6:g}Mbit/s",
        f"{wire / 1e6:.2f}Mbit/s",
        ok=abs(wire - requested) <= RATE_TOLERANCE * requested,
        note=f"TCP goodput {goodput / 1e6:.2f}Mbit/s",
    )


def check_rate_udp(*, requested: int, received: float, forward: LinkSpec) -> CheckRow:
    """Rate through loss: an over-offered UDP stream arrives at the rate, less what is lost.

    TCP would slow down at the first loss and say nothing about the limit.
    """
    share = (1.0 - lost_share(forward)) * (1.0 + forward.duplicate)
    expected = requested * share
    wire = received / UDP_PAYLOAD_PER_WIRE
    return CheckRow(
        "rate",
        f"{requested / 1e6:g}Mbit/s",
        f"{wire / 1e6:.2f}Mbit/s",
        ok=abs(wire - expected) <= RATE_TOLERANCE * expected,
        note=f"UDP received; expected {expected / 1e6:.2f} after loss/duplicates",
    )


def rate_is_checkable(spec: LinkSpec, reverse: LinkSpec | None) -> bool:
    """A TCP bulk transfer only shows the rate when nothing else throttles it (else: UDP)."""
    for side in (spec, reverse):
        if side is not None and (side.loss or side.corrupt or side.duplicate or side.reorder):
            return False
    return True
