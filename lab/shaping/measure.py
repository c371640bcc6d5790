"""Self-check arithmetic: parse probe/iperf3 output, estimators, statistical bands.

Pure. The runner measures a link after shaping it; this module turns the raw
tool output into numbers and decides whether they match what was requested
(the expected figures come from :mod:`lab.shaping.expected`). Every check
gives a :class:`CheckRow`. The bands are statistical: a count or a sample
quantile must fall where the model puts it 99 % of the time on the low side
and 99.99 % on the high side (a busy host only ever adds loss and delay), so
a correct link fails rarely and an unshaped one fails.

* loss: binomial band, widened by the model's dispersion (bursty loss makes
  counts vary more);
* mean burst length of a loss sequence: the model's mean run, plus or minus
  z times its standard deviation over the square root of the bursts expected
  (99.99 % both sides);
* delay percentiles p50/p90/p99: the sample quantile's level lies within
  ``q +/- z sqrt(q(1-q)/n)`` (99.99 % both sides), mapped through the asked
  distribution, plus 2 ms and 5 % for the host;
* duplicates: binomial band, 99.99 % on both sides (a busy host loses copies);
* reorder: share of probes that arrive before an earlier one, binomial band;
* bufferbloat: RTT under load above idle by at least half a full queue (and
  2 ms), at most a full queue plus the usual tolerance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lab.shaping import expected
from lab.shaping.errors import ShapingError
from lab.shaping.spec import LinkSpec, format_duration, format_percent, format_rate
from lab.topology import Family

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
DEFAULT_MTU = 1500
TCP_HEADER = 20
TCP_TIMESTAMPS = 12
# UDP probes of the rate carry this much payload, or less where the path's MTU is smaller:
# a fragmented datagram is lost whenever any one of its fragments is, so on a lossy link
# it would read the rate low. A frame adds UDP, IP and Ethernet headers.
UDP_PAYLOAD = 1400
UDP_HEADER = 8
IP_HEADER: dict[Family, int] = {4: 20, 6: 40}
ETHERNET_HEADER = 14


def tcp_goodput_per_wire(mtu: int | None = None, family: Family = 4) -> float:
    """Share of a full TCP segment's frame that is payload, on a path of ``mtu`` bytes
    (None: unknown, :data:`DEFAULT_MTU`) over IPv``family``, timestamps on (Linux's default)."""
    path = DEFAULT_MTU if mtu is None else mtu
    segment = path - IP_HEADER[family] - TCP_HEADER - TCP_TIMESTAMPS
    if segment < 1:
        raise ShapingError(f"a path MTU of {path} bytes leaves no room for a TCP segment")
    return segment / (path + ETHERNET_HEADER)


def udp_frame_bytes(payload: int = UDP_PAYLOAD, family: Family = 4) -> int:
    """The frame one ``payload``-byte datagram makes on the wire (what a packet queue holds)."""
    return payload + UDP_HEADER + IP_HEADER[family] + ETHERNET_HEADER


GOODPUT_PER_WIRE = tcp_goodput_per_wire()
UDP_FRAME_BYTES = udp_frame_bytes()


def udp_payload(mtu: int | None, family: Family = 4) -> int:
    """A rate probe's payload: :data:`UDP_PAYLOAD`, or what one unfragmented datagram
    holds on a path of ``mtu`` bytes (None: unknown, the default)."""
    if mtu is None:
        return UDP_PAYLOAD
    fits = mtu - IP_HEADER[family] - UDP_HEADER
    if fits < 1:
        raise ShapingError(f"a path MTU of {mtu} bytes leaves no room for a UDP payload")
    return min(UDP_PAYLOAD, fits)


def udp_payload_per_wire(payload: int = UDP_PAYLOAD, family: Family = 4) -> float:
    """Share of a probe's frame that is payload (what iperf3 counts of what htb counts)."""
    return payload / udp_frame_bytes(payload, family)


UDP_PAYLOAD_PER_WIRE = udp_payload_per_wire()
# Percentile bands: the host's share on top of the sampling band.
PERCENTILE_TOLERANCE = 0.05
PERCENTILES = (0.5, 0.9, 0.99)
# Bufferbloat: RTT under load must rise by at least this share of a full queue, and this much.
BLOAT_MIN_SHARE = 0.5
BLOAT_MIN_RISE = 0.002


@dataclass(frozen=True)
class PingStats:
    transmitted: int
    received: int
    rtt_avg: float | None  # seconds; None when nothing came back
    duplicates: int = 0
    rtt_median: float | None = None
    # per probe, in send order (empty from a prober that did not report them)
    lost_flags: tuple[bool, ...] = ()
    rtts: tuple[float | None, ...] = ()
    rtt_p99: float | None = None

    @property
    def lost(self) -> int:
        return self.transmitted - self.received

    @property
    def loss(self) -> float:
        return self.lost / self.transmitted if self.transmitted else 0.0

    @property
    def answered_rtts(self) -> list[float]:
        return [rtt for rtt in self.rtts if rtt is not None]


def _flags(text: object, sent: int) -> tuple[bool, ...]:
    if not isinstance(text, str) or (text and len(text) != sent) or set(text) - {"0", "1"}:
        raise ValueError(f"'lost' is not one 0/1 flag per probe: {str(text)[:40]!r}")
    return tuple(char == "1" for char in text)


def _rtt_list(values: object, sent: int) -> tuple[float | None, ...]:
    if not isinstance(values, list) or (values and len(values) != sent):
        raise ValueError("'rtts' is not one value per probe")
    return tuple(None if value is None else float(value) for value in values)


def parse_probe(text: str) -> PingStats:
    """Read the JSON line ``socketlab probe`` prints."""
    try:
        report = json.loads(text.strip().splitlines()[-1])
        sent = int(report["sent"])
        return PingStats(
            transmitted=sent,
            received=int(report["received"]),
            rtt_avg=None if report["rtt_avg"] is None else float(report["rtt_avg"]),
            duplicates=int(report.get("duplicates", 0)),
            rtt_median=None if report.get("rtt_median") is None else float(report["rtt_median"]),
            lost_flags=_flags(report.get("lost", ""), sent),
            rtts=_rtt_list(report.get("rtts", []), sent),
            rtt_p99=None if report.get("rtt_p99") is None else float(report["rtt_p99"]),
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ShapingError(f"cannot read the probe report: {text.strip()[-200:]!r}") from exc


def parse_arrivals(text: str) -> list[int]:
    """The arrival order ``socketlab probe --listen`` prints (its last JSON line)."""
    try:
        report = json.loads(text.strip().splitlines()[-1])
        arrivals = [int(seq) for seq in report["arrivals"]]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ShapingError(f"cannot read the stream report: {text.strip()[-200:]!r}") from exc
    return arrivals


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

    A share ``reorder`` leaves at once; the rest follows the asked
    distribution around the delay, clamped at 0. The median is the matching
    quantile of that mixture.
    """
    return expected.one_way_quantile(spec, 0.5)


def lost_share(spec: LinkSpec | None) -> float:
    """Share of probes one direction loses in the long run: dropped, or corrupted.

    Gilbert-Elliott and four-state loss give their chain's stationary share;
    netem's correlated loss loses less than ``--loss`` (see
    :mod:`lab.shaping.expected`).
    """
    return expected.loss_share(spec)


def round_trip_loss(forward: LinkSpec, reverse: LinkSpec | None) -> float:
    return 1.0 - (1.0 - lost_share(forward)) * (1.0 - lost_share(reverse))


def round_trip_dispersion(forward: LinkSpec, reverse: LinkSpec | None) -> float:
    """How much more round-trip loss counts vary than independent loss would (1: not at all)."""
    return expected.loss_profile(forward, reverse).dispersion


def binomial_interval(
    n: int, p: float, *, z: float = Z_99, dispersion: float = 1.0
) -> tuple[float, float]:
    """Counts inside the two-sided interval of Binomial(n, p) (normal approximation).

    ``dispersion`` scales the variance, for counts of bursty events.
    """
    mean = n * p
    # +1: continuity, and p = 0
    spread = z * math.sqrt(n * p * (1.0 - p) * max(1.0, dispersion)) + 1.0
    return max(0.0, mean - spread), min(float(n), mean + spread)


def self_check_band(n: int, p: float, *, dispersion: float = 1.0) -> tuple[float, float]:
    """The counts the self-check accepts: 99 % interval's low end, 99.99 % interval's high end."""
    low, _ = binomial_interval(n, p, dispersion=dispersion)
    _, high = binomial_interval(n, p, z=Z_SELF_CHECK_HIGH, dispersion=dispersion)
    return low, high


def loss_notes(spec: LinkSpec) -> list[str]:
    """What a user should know about the loss asked (printed beside the shaping)."""
    notes = []
    if spec.loss_correlation and spec.loss and spec.effective_loss_model is None:
        share = expected.loss_share(
            spec.__class__(loss=spec.loss, loss_correlation=spec.loss_correlation)
        )
        notes.append(
            f"netem's --loss-correlation {format_percent(spec.loss_correlation)} pulls its "
            f"draws towards 50%: --loss {format_percent(spec.loss)} loses about "
            f"{format_percent(share, digits=2)} (for bursts at a given mean use --loss-burst)"
        )
    return notes


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


def check_loss(*, expected: float, stats: PingStats, dispersion: float = 1.0) -> CheckRow:
    """Lost probes inside the binomial band of the expected share (99 % low, 99.99 % high).

    ``dispersion`` (from :func:`round_trip_dispersion`) widens the band for bursty loss.
    """
    low, high = self_check_band(stats.transmitted, expected, dispersion=dispersion)
    note = f"allowed {low:.0f}..{high:.0f} lost"
    if dispersion > 1.0:
        note += f" (bursty: variance x{dispersion:.1f})"
    return CheckRow(
        "round-trip loss",
        format_percent(expected),
        f"{stats.loss * 100:.2f}% ({stats.lost}/{stats.transmitted})",
        ok=low <= stats.lost <= high,
        note=note,
    )


def round_trip_duplicates(forward: LinkSpec, reverse: LinkSpec | None) -> float:
    """Expected extra replies per answered probe: a copy on either way makes one more."""
    back = reverse.duplicate if reverse is not None else 0.0
    return 1.0 - (1.0 - forward.duplicate) * (1.0 - back)


def check_duplicates(*, expected: float, stats: PingStats) -> CheckRow:
    """Duplicate replies inside the binomial band (per answered probe, 99.99 % both sides).

    Unlike loss, a busy host moves duplicates down (a copy is one more packet to
    lose), so the wide side is the low one too; a link with no copies at all still
    fails once a few dozen are expected.
    """
    low, high = binomial_interval(stats.received, expected, z=Z_SELF_CHECK_HIGH)
    return CheckRow(
        "duplicates",
        format_percent(expected),
        f"{stats.duplicates / max(1, stats.received) * 100:.2f}% ({stats.duplicates})",
        ok=low <= stats.duplicates <= high,
        note=f"allowed {low:.0f}..{high:.0f}",
    )


def check_rate(
    *, requested: int, goodput: float, mtu: int | None = DEFAULT_MTU, family: Family = 4
) -> CheckRow:
    """Wire rate (goodput scaled by the headers of full segments on a path of ``mtu``
    bytes, None: unknown) within 15 % of the requested rate."""
    wire = goodput / tcp_goodput_per_wire(mtu, family)
    path = ""
    if mtu is None:
        path = f"; path MTU unknown, {DEFAULT_MTU} assumed"
    elif mtu != DEFAULT_MTU:
        path = f"; {mtu}-byte path MTU"
    return CheckRow(
        "rate",
        f"{requested / 1e6:g}Mbit/s",
        f"{wire / 1e6:.2f}Mbit/s",
        ok=abs(wire - requested) <= RATE_TOLERANCE * requested,
        note=f"TCP goodput {goodput / 1e6:.2f}Mbit/s{path}",
    )


def check_rate_udp(
    *,
    requested: int,
    received: float,
    forward: LinkSpec,
    payload: int = UDP_PAYLOAD,
    family: Family = 4,
) -> CheckRow:
    """Rate through loss: an over-offered UDP stream arrives at the rate, less what is lost.

    TCP would slow down at the first loss and say nothing about the limit.
    ``received`` is payload bit/s of ``payload``-byte datagrams over IPv``family``.
    """
    share = (1.0 - lost_share(forward)) * (1.0 + forward.duplicate)
    expected = requested * share
    wire = received / udp_payload_per_wire(payload, family)
    size = "" if payload == UDP_PAYLOAD else f" ({payload}-byte datagrams: the path's MTU)"
    return CheckRow(
        "rate",
        f"{requested / 1e6:g}Mbit/s",
        f"{wire / 1e6:.2f}Mbit/s",
        ok=abs(wire - expected) <= RATE_TOLERANCE * expected,
        note=f"UDP received{size}; expected {expected / 1e6:.2f} after loss/duplicates",
    )


def rate_is_checkable(spec: LinkSpec, reverse: LinkSpec | None) -> bool:
    """A TCP bulk transfer only shows the rate when nothing else throttles it (else: UDP)."""
    for side in (spec, reverse):
        if side is None:
            continue
        lossy = side.loss or side.effective_loss_model is not None or side.corrupt
        if lossy or side.duplicate or side.reorder:
            return False
    return True


# --------------------------------------------------------------------------- burst, delay, reorder


@dataclass(frozen=True)
class Bursts:
    """Runs of consecutive losses in a sequence of probes (in the order they were sent)."""

    probes: int
    lost: int
    bursts: int

    @property
    def mean(self) -> float | None:
        return self.lost / self.bursts if self.bursts else None


def count_bursts(lost: Sequence[bool]) -> Bursts:
    """Estimator of burst length: losses over runs of consecutive losses."""
    runs = expected.burst_lengths(lost)
    return Bursts(probes=len(lost), lost=sum(runs), bursts=len(runs))


def probes_for_bursts(forward: LinkSpec, reverse: LinkSpec | None, *, bursts: int = 40) -> int:
    """How many probes to send so that about ``bursts`` bursts of loss are expected."""
    profile = expected.loss_profile(forward, reverse)
    if not profile.share or not profile.mean_burst or math.isinf(profile.mean_burst):
        return 0
    return math.ceil(bursts * profile.mean_burst / profile.share)


def check_burst_length(
    *, lost: Sequence[bool], forward: LinkSpec, reverse: LinkSpec | None
) -> CheckRow:
    """Mean burst of the probes' loss sequence within the model's band.

    The band is the model's mean run plus or minus z times the run's standard
    deviation over the square root of the number of bursts the model expects
    in this many probes (not the number seen, which a wrong link would set),
    at 99.99 % on both sides: extra random loss on a busy host shortens
    bursts, and a correct link should fail one check in ten thousand.
    """
    profile = expected.loss_profile(forward, reverse)
    seen = count_bursts(lost)
    requested = "none" if profile.mean_burst is None else f"{profile.mean_burst:.2f} packets"
    measured = "no loss" if seen.mean is None else f"{seen.mean:.2f} ({seen.lost} in {seen.bursts})"
    if profile.mean_burst is None or profile.burst_sd is None or math.isinf(profile.mean_burst):
        return CheckRow("mean loss burst", requested, measured, ok=seen.bursts == 0)
    expected_bursts = max(1.0, seen.probes * profile.share / profile.mean_burst)
    error = profile.burst_sd / math.sqrt(expected_bursts)
    low = max(1.0, profile.mean_burst - Z_SELF_CHECK_HIGH * error)
    high = profile.mean_burst + Z_SELF_CHECK_HIGH * error
    return CheckRow(
        "mean loss burst",
        requested,
        measured,
        ok=seen.mean is not None and low <= seen.mean <= high,
        note=f"allowed {low:.2f}..{high:.2f} ({expected_bursts:.0f} bursts expected)",
    )


def sample_quantile(samples: Sequence[float], level: float) -> float:
    """Nearest-rank quantile: the smallest sample with at least ``level`` of them at or below."""
    ordered = sorted(samples)
    if not ordered:
        raise ValueError("no samples")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(level * len(ordered)) - 1))]


def quantile_band(
    *,
    n: int,
    level: float,
    forward: LinkSpec,
    reverse: LinkSpec | None,
    host_slack: float = DELAY_SLACK,
) -> tuple[float, float]:
    """Where the sample ``level`` quantile of ``n`` added delays may fall (seconds).

    ``host_slack`` widens the upper side only: a busy host adds delay (a verdict
    loop waiting for a CPU), never takes it away.
    """
    error = math.sqrt(level * (1.0 - level) / n)
    low_level = max(0.0, level - Z_SELF_CHECK_HIGH * error)
    high_level = min(1.0 - 1e-9, level + Z_SELF_CHECK_HIGH * error)
    low, high = expected.added_delay_quantiles(forward, reverse, [low_level, high_level])
    return (
        max(0.0, low * (1.0 - PERCENTILE_TOLERANCE) - DELAY_SLACK),
        high * (1.0 + PERCENTILE_TOLERANCE) + max(DELAY_SLACK, host_slack),
    )


def check_delay_percentiles(
    *,
    added: Sequence[float],
    forward: LinkSpec,
    reverse: LinkSpec | None,
    levels: Sequence[float] = PERCENTILES,
    host_slack: float = DELAY_SLACK,
    host_delay: Sequence[float] = (),
) -> list[CheckRow]:
    """p50/p90/p99 of the measured added delay (RTT minus idle baseline, seconds) vs the model.

    ``forward``'s (and ``reverse``'s) distribution decides the expected
    quantiles, so a normal link measured as uniform fails at p99. ``host_slack``
    (seconds) is what a busy host may add on top (see :func:`quantile_band`), and
    ``host_delay`` (seconds late, per packet, measured just before with the delay
    fixed) raises each level's allowance by that lateness at level ``(1 + q) / 2``:
    a measured figure, not a guess. When even that is exceeded and the host was
    measurably late at that level (beyond ``host_slack`` and 5 % of the figure),
    the upper side is not judged (the row says so); the lower side always is.
    """
    rows = []
    wanted = expected.added_delay_quantiles(forward, reverse, levels)
    for level, value in zip(levels, wanted, strict=True):
        name = f"delay p{level * 100:g}"
        if not added:
            rows.append(CheckRow(name, format_duration(value), "no reply", ok=False))
            continue
        measured = sample_quantile(added, level)
        # lateness at (1 + q) / 2: the sum passes its q-quantile plus that at most as often
        # as the two parts pass theirs together (1 - q), whatever the lateness's shape
        late = sample_quantile(host_delay, (1.0 + level) / 2) if host_delay else 0.0
        low, high = quantile_band(
            n=len(added),
            level=level,
            forward=forward,
            reverse=reverse,
            host_slack=max(host_slack, late),
        )
        note = (
            f"allowed {low * 1000:.2f}..{high * 1000:.2f}ms ({len(added)} samples, "
            f"{forward.delay_distribution or 'uniform'}"
            + (f"; host +{late * 1000:.2f}ms at this level" if host_delay else "")
            + ")"
        )
        ok = low <= measured <= high
        if measured > high and late > max(host_slack, PERCENTILE_TOLERANCE * value):
            # The host itself was measured this late at this level: above the band
            # says nothing about the link, so only the lower side is judged.
            ok = True
            note += "; upper side not judged: the host is too busy"
        elif measured > high:
            note += "; above: a busy host delays the verdict loop (SOCKETLAB_CHECK_HOST_SLACK)"
        rows.append(
            CheckRow(name, format_duration(value), f"{measured * 1000:.2f}ms", ok=ok, note=note)
        )
    return rows


def overtakers(arrivals: Sequence[int]) -> tuple[int, int]:
    """(packets that arrived before an earlier-sent one, packets received).

    ``arrivals``: sequence numbers in the order they arrived; repeats
    (duplicates) count once, at their first arrival.
    """
    seen: set[int] = set()
    order = []
    for number in arrivals:
        if number not in seen:
            seen.add(number)
            order.append(number)
    count = 0
    smallest_after = math.inf
    for number in reversed(order):
        if number > smallest_after:
            count += 1
        smallest_after = min(smallest_after, number)
    return count, len(order)


def check_reorder(*, arrivals: Sequence[int], spec: LinkSpec, interval: float) -> CheckRow:
    """Share of probes (sent ``interval`` apart over ``spec``) that overtook an earlier one.

    Binomial band around :func:`lab.shaping.expected.overtaking_share`; call
    it only when :func:`lab.shaping.expected.reorder_unclear` gives None.
    """
    share = expected.overtaking_share(spec, interval)
    count, received = overtakers(arrivals)
    low, high = self_check_band(received, share)
    gap = f" gap {spec.reorder_gap}" if spec.reorder_gap and spec.reorder_gap > 1 else ""
    return CheckRow(
        "reordered",
        f"{format_percent(share, digits=3)} (reorder {format_percent(spec.reorder)}{gap})",
        f"{count / max(1, received) * 100:.2f}% ({count}/{received})",
        ok=received > 0 and low <= count <= high,
        note=f"allowed {low:.0f}..{high:.0f} overtaking, probes {interval * 1000:g}ms apart",
    )


def check_bufferbloat(
    *, idle: PingStats, loaded: PingStats, spec: LinkSpec, frame_bytes: int = UDP_FRAME_BYTES
) -> CheckRow:
    """RTT under load (a full bottleneck queue) against idle RTT: the rise a full queue makes.

    The rise must be at least half the queue's drain time (and 2 ms); with a
    ``--queue-limit`` it must also stay below a full queue plus the delay
    tolerance. ``frame_bytes``: size of the load's frames, for packet limits.
    """
    idle_rtt = idle.rtt_median if idle.rtt_median is not None else idle.rtt_avg
    loaded_rtt = loaded.rtt_median if loaded.rtt_median is not None else loaded.rtt_avg
    full = expected.queue_delay(spec, frame_bytes=frame_bytes)
    requested = "above idle"
    if full is not None and spec.rate is not None:
        requested = f"+{full * 1000:.1f}ms (queue {spec.queue_limit} at {format_rate(spec.rate)})"
    if idle_rtt is None or loaded_rtt is None:
        return CheckRow("RTT under load", requested, "no reply", ok=False)
    rise = loaded_rtt - idle_rtt
    low = max(BLOAT_MIN_RISE, BLOAT_MIN_SHARE * (full or 0.0))
    high = math.inf if full is None else full * (1.0 + DELAY_TOLERANCE) + DELAY_SLACK
    allowed = f"+{low * 1000:.1f}ms" + ("" if math.isinf(high) else f"..+{high * 1000:.1f}ms")
    return CheckRow(
        "RTT under load",
        requested,
        f"{loaded_rtt * 1000:.2f}ms (idle {idle_rtt * 1000:.2f}ms, +{rise * 1000:.2f}ms)",
        ok=low <= rise <= high,
        note=f"allowed {allowed}",
    )
