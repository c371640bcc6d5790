"""The engine's impairment models: netem's tables, loss chains, correlation, gap, seeds.

Statistical tests run the scheduling core on synthetic packets with fixed
seeds and check that the self-check's estimators land in their bands (and
that a link shaped otherwise does not).
"""

from __future__ import annotations

import itertools
import math
import random
import struct
from dataclasses import dataclass, field
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.shaping import expected, measure
from lab.shaping.spec import LinkSpec, spec_from_options
from socketlab.shaper.core import Impairment, ImpairmentScheduler, Inject
from socketlab.shaper.models import (
    TABLE_LIMIT,
    CorrelatedUniform,
    Distribution,
    FourState,
    GilbertElliott,
    ReorderGate,
    loss_model_from_text,
    standard_quantile,
)


def ipv4(number: int, body: bytes = b"x" * 32) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), number & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))  # fmt: skip
    return header + body


class FakePacket:
    def __init__(self, number: int) -> None:
        self.number = number
        self.payload = ipv4(number)

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload


@dataclass
class Run:
    """What came out of the core for packets sent ``interval`` apart."""

    lost: list[bool] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)  # Accept order (sequence numbers)
    delays: dict[int, float] = field(default_factory=dict)  # number -> release - send
    trace: list[tuple[str, float, bytes]] = field(default_factory=list)


def run_link(
    impairment: Impairment | LinkSpec, packets: int, *, interval: float = 0.001, seed: int = 1
) -> Run:
    imp = impairment.impairment if isinstance(impairment, LinkSpec) else impairment
    sched: ImpairmentScheduler[FakePacket] = ImpairmentScheduler(imp, rng=random.Random(seed))
    run = Run()
    sent: dict[int, float] = {}

    def release_until(t: float) -> None:
        while (due := sched.next_release()) is not None and due <= t:
            for verdict in sched.pop_due(due):
                if isinstance(verdict, Inject):
                    run.trace.append(("inject", due, verdict.payload))
                    continue
                number = verdict.packet.number
                run.arrivals.append(number)
                run.delays[number] = due - sent[number]
                run.trace.append(("accept", due, verdict.packet.payload))

    for number in range(packets):
        now = number * interval
        release_until(now)
        sent[number] = now
        kept = sched.admit(FakePacket(number), now)
        run.lost.append(not kept)
        if not kept:
            run.trace.append(("drop", now, b""))
    release_until(math.inf)
    return run


def spec(**options: str) -> LinkSpec:
    return spec_from_options(options)


def lag_correlation(values: list[float]) -> float:
    mean = sum(values) / len(values)
    top = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(values))
    return top / sum((v - mean) ** 2 for v in values)


# --------------------------------------------------------------------------- netem's tables


@pytest.mark.parametrize(
    ("distribution", "u", "x"),
    [
        pytest.param(Distribution.UNIFORM, 0.25, -0.5, id="uniform-is-plus-minus-jitter"),
        pytest.param(Distribution.NORMAL, 0.5, 0.0, id="normal-median"),
        pytest.param(Distribution.NORMAL, 0.99, 2.3263, id="normal-p99"),
        pytest.param(Distribution.NORMAL, 1e-9, -TABLE_LIMIT, id="normal-clipped-like-int16"),
        # netem/pareto.c: ((1-u)^(-1/3) - 1.5) * 4/3
        pytest.param(Distribution.PARETO, 0.0, -2 / 3, id="pareto-floor"),
        pytest.param(Distribution.PARETO, 0.5, (0.5 ** (-1 / 3) - 1.5) * 4 / 3, id="pareto-median"),
        pytest.param(Distribution.PARETO, 0.999, TABLE_LIMIT, id="pareto-clipped"),
        # netem/paretonormal.c: (normal + 3 * pareto) / 4 at the same u
        pytest.param(
            Distribution.PARETONORMAL,
            0.9,
            (NormalDist().inv_cdf(0.9) + 3 * (0.1 ** (-1 / 3) - 1.5) * 4 / 3) / 4,
            id="paretonormal",
        ),
    ],
)
def test_standard_quantiles_follow_netems_tables(
    distribution: Distribution, u: float, x: float
) -> None:
    assert standard_quantile(distribution, u) == pytest.approx(x, abs=1e-4)


@given(
    a=st.floats(0, 1, exclude_max=True),
    b=st.floats(0, 1, exclude_max=True),
    distribution=st.sampled_from(list(Distribution)),
)
def test_quantiles_are_monotonic_and_bounded(
    a: float, b: float, distribution: Distribution
) -> None:
    low, high = sorted((a, b))
    assert standard_quantile(distribution, low) <= standard_quantile(distribution, high)
    assert -TABLE_LIMIT <= standard_quantile(distribution, low) <= TABLE_LIMIT


def test_loss_models_text_round_trip() -> None:
    for model in (
        GilbertElliott(p=0.0175, r=1 / 3),
        GilbertElliott(p=0.01, r=0.1, bad_loss=0.7, good_loss=0.001),
        FourState(p13=0.01, p31=0.3, p32=0.1, p23=0.2, p14=0.005),
    ):
        assert loss_model_from_text(model.to_text()) == model
    with pytest.raises(ValueError, match="expected gemodel"):
        loss_model_from_text("gemodel:0.1,0.2")
    with pytest.raises(ValueError, match="share between 0 and 1"):
        loss_model_from_text("gemodel:0.1,0.2,1.5,0")
    with pytest.raises(ValueError, match="numbers"):
        loss_model_from_text("state:nan,0,0,0,0")


def test_gilbert_elliott_from_mean_is_bernoulli_at_the_shortest_memoryless_burst() -> None:
    # mean burst 1/(1-P) is what independent loss gives: p = P, r = 1 - P
    model = GilbertElliott.from_mean(0.2, 1 / 0.8)
    assert (model.p, model.r) == pytest.approx((0.2, 0.8))
    with pytest.raises(ValueError, match="at least 4"):
        GilbertElliott.from_mean(0.8, 2)


# --------------------------------------------------------------------------- loss, statistically


def test_loss_burst_gives_bursts_of_the_asked_mean() -> None:
    link = spec(loss="5%", loss_burst="3")
    run = run_link(link, 40_000, seed=11)
    row = measure.check_burst_length(lost=run.lost, forward=link, reverse=None)
    assert row.ok, row
    bursts = measure.count_bursts(run.lost)
    assert bursts.mean == pytest.approx(3.0, abs=0.35)
    stats = measure.PingStats(len(run.lost), len(run.lost) - sum(run.lost), 0.0)
    dispersion = measure.round_trip_dispersion(link, None)
    assert dispersion == pytest.approx(4.7)  # (1 + lambda) / (1 - lambda), lambda = 1 - p - r
    assert measure.check_loss(expected=0.05, stats=stats, dispersion=dispersion).ok


def test_independent_loss_fails_a_burst_check() -> None:
    bursty = spec(loss="5%", loss_burst="3")
    run = run_link(spec(loss="5%"), 40_000, seed=11)
    row = measure.check_burst_length(lost=run.lost, forward=bursty, reverse=None)
    assert not row.ok
    assert row.measured.startswith("1.0")


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("gemodel:1%,10%,70%,0.1%", id="gilbert-elliott"),
        pytest.param("state:1%,30%,10%,20%,0.5%", id="four-state"),
    ],
)
def test_explicit_loss_models_match_their_chains(model: str) -> None:
    link = spec(loss_model=model)
    run = run_link(link, 60_000, seed=5)
    profile = expected.loss_profile(link)
    stats = measure.PingStats(len(run.lost), len(run.lost) - sum(run.lost), 0.0)
    assert measure.check_loss(expected=profile.share, stats=stats, dispersion=profile.dispersion).ok
    assert measure.check_burst_length(lost=run.lost, forward=link, reverse=None).ok
    # the simulation's own estimate of the dispersion agrees with the chain's
    simulated = expected.sequence_profile(run.lost)
    assert simulated.dispersion == pytest.approx(profile.dispersion, rel=0.35)


def test_netems_correlation_generator_is_an_ar1_series() -> None:
    rng = random.Random(3)
    generator = CorrelatedUniform(0.6, rng)
    values = [generator.next(rng) for _ in range(50_000)]
    assert lag_correlation(values) == pytest.approx(0.6, abs=0.02)
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    # (1 - rho)^2 / (1 - rho^2) of a uniform's 1/12: pulled towards 0.5
    assert variance == pytest.approx((1 - 0.6) / (1 + 0.6) / 12, rel=0.05)


def test_correlated_loss_is_bursty_and_keeps_half_at_50_percent() -> None:
    link = spec(loss="50%", loss_correlation="60%")
    run = run_link(link, 40_000, seed=2)
    lost = [float(x) for x in run.lost]
    assert sum(lost) / len(lost) == pytest.approx(0.5, abs=0.02)  # symmetric about 0.5
    assert lag_correlation(lost) > 0.3
    independent = [float(x) for x in run_link(spec(loss="50%"), 40_000, seed=2).lost]
    assert abs(lag_correlation(independent)) < 0.03


def test_correlated_loss_below_half_loses_less_as_netem_does() -> None:
    link = spec(loss="5%", loss_correlation="25%")
    run = run_link(link, 60_000, seed=8)
    share = expected.loss_share(link)
    assert share < 0.01  # netem's draw is pulled towards 0.5, far from 5 %
    stats = measure.PingStats(len(run.lost), len(run.lost) - sum(run.lost), 0.0)
    profile = expected.loss_profile(link)
    assert measure.check_loss(expected=share, stats=stats, dispersion=profile.dispersion).ok
    assert not measure.check_loss(expected=0.05, stats=stats).ok
    assert "loses about 0.18%" in measure.loss_notes(link)[0]


# --------------------------------------------------------------------------- delay, statistically


@pytest.mark.parametrize("distribution", list(Distribution))
def test_delay_percentiles_follow_the_asked_distribution(distribution: Distribution) -> None:
    link = spec(delay="50ms", jitter="10ms", delay_distribution=str(distribution))
    run = run_link(link, 5000, seed=4)
    rows = measure.check_delay_percentiles(
        added=list(run.delays.values()), forward=link, reverse=None
    )
    assert [row.metric for row in rows] == ["delay p50", "delay p90", "delay p99"]
    assert all(row.ok for row in rows), rows


@pytest.mark.parametrize(
    ("shaped", "asked"),
    [
        pytest.param("uniform", "normal", id="uniform-is-not-normal"),
        pytest.param("normal", "uniform", id="normal-is-not-uniform"),
        pytest.param("pareto", "normal", id="pareto-is-not-normal"),
    ],
)
def test_a_different_distribution_fails_at_the_tail(shaped: str, asked: str) -> None:
    run = run_link(spec(delay="50ms", jitter="10ms", delay_distribution=shaped), 5000, seed=4)
    rows = measure.check_delay_percentiles(
        added=list(run.delays.values()),
        forward=spec(delay="50ms", jitter="10ms", delay_distribution=asked),
        reverse=None,
    )
    assert not rows[-1].ok


def test_delay_correlation_correlates_successive_delays_and_keeps_the_distribution() -> None:
    link = spec(delay="50ms", jitter="10ms", delay_distribution="normal", delay_correlation="80%")
    run = run_link(link, 20_000, seed=6)
    delays = [run.delays[n] for n in sorted(run.delays)]
    assert lag_correlation(delays) == pytest.approx(0.8, abs=0.03)
    assert all(row.ok for row in measure.check_delay_percentiles(
        added=delays, forward=link, reverse=None))  # fmt: skip
    plain = run_link(spec(delay="50ms", jitter="10ms", delay_distribution="normal"), 20_000)
    assert abs(lag_correlation([plain.delays[n] for n in sorted(plain.delays)])) < 0.03


def test_round_trip_percentiles_add_both_directions() -> None:
    there = spec(delay="20ms", jitter="5ms", delay_distribution="normal")
    back = spec(delay="10ms", jitter="5ms", delay_distribution="normal")
    forward = run_link(there, 4000, seed=1).delays
    reverse = run_link(back, 4000, seed=2).delays
    added = [forward[n] + reverse[n] for n in range(4000)]
    rows = measure.check_delay_percentiles(added=added, forward=there, reverse=back)
    assert all(row.ok for row in rows), rows
    # the sum of two normals: sigma sqrt(2) around 30 ms
    p99 = expected.added_delay_quantiles(there, back, [0.99])[0]
    assert p99 == pytest.approx(0.030 + 2.3263 * 0.005 * math.sqrt(2), abs=3e-4)


# --------------------------------------------------------------------------- reorder


def test_reorder_gap_sends_every_nth_packet_at_once() -> None:
    # netem's example: gap 5 with reorder 100 %: the 5th, 10th, 15th... go first
    gate = ReorderGate(1.0, 5)
    rng = random.Random(0)
    immediate = [n for n in range(1, 31) if gate.immediate(rng)]
    assert immediate == [5, 10, 15, 20, 25, 30]


def test_reorder_gap_share_and_spacing() -> None:
    link = spec(delay="10ms", reorder="25%", reorder_gap="3")
    run = run_link(link, 20_000, seed=3)
    early = sorted(n for n, d in run.delays.items() if d == 0.0)
    assert min(b - a for a, b in itertools.pairwise(early)) >= 3
    assert expected.immediate_share(link) == pytest.approx(1 / 6)  # 1 / (gap - 1 + 1/P)
    assert expected.reorder_unclear(link, 0.001) is None
    assert measure.check_reorder(arrivals=run.arrivals, spec=link, interval=0.001).ok
    # plain reorder at the same share would overtake more often: the check tells them apart
    plain = run_link(spec(delay="10ms", reorder="25%"), 20_000, seed=3)
    assert not measure.check_reorder(arrivals=plain.arrivals, spec=link, interval=0.001).ok


def test_plain_reorder_keeps_todays_meaning() -> None:
    link = spec(delay="10ms", reorder="25%")
    run = run_link(link, 20_000, seed=9)
    assert measure.check_reorder(arrivals=run.arrivals, spec=link, interval=0.001).ok


# --------------------------------------------------------------------------- seeds


RICH = spec(
    delay="20ms", jitter="8ms", delay_distribution="paretonormal", delay_correlation="30%",
    loss="3%", loss_burst="2", duplicate="5%", reorder="10%", reorder_gap="4", corrupt="5%",
)  # fmt: skip


def test_same_seed_and_packets_give_the_same_verdicts() -> None:
    first = run_link(RICH, 3000, seed=1234)
    again = run_link(RICH, 3000, seed=1234)
    assert first.trace == again.trace
    assert first.lost == again.lost
    assert any(kind == "inject" for kind, _, _ in first.trace)
    assert any(kind == "drop" for kind, _, _ in first.trace)


def test_another_seed_gives_other_verdicts() -> None:
    first = run_link(RICH, 3000, seed=1234)
    other = run_link(RICH, 3000, seed=1235)
    assert first.lost != other.lost
    assert first.trace != other.trace


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"loss": "5%", "loss_correlation": "40%"}, id="correlated-loss"),
        pytest.param({"loss_model": "state:1%,30%,10%,20%,0.5%"}, id="four-state"),
        pytest.param({"delay": "5ms", "jitter": "5ms", "delay_distribution": "normal"}, id="delay"),
    ],
)
def test_models_with_memory_replay_from_the_seed(options: dict[str, str]) -> None:
    link = spec(**options)
    assert run_link(link, 2000, seed=77).trace == run_link(link, 2000, seed=77).trace


def test_older_impairments_draw_as_before() -> None:
    # the uncorrelated uniform path must keep today's draws: same seed, same delays
    imp = Impairment(delay=0.05, jitter=0.01, loss=0.1, reorder=0.2)
    rng = random.Random(42)
    expected_delays = []
    for _ in range(200):
        if rng.random() < 0.1:
            expected_delays.append(None)
            continue
        if rng.random() < 0.2:
            expected_delays.append(0.0)
            continue
        expected_delays.append(max(0.0, 0.05 + rng.uniform(-0.01, 0.01)))
    run = run_link(imp, 200, seed=42)
    got = [None if run.lost[n] else run.delays[n] for n in range(200)]
    assert got == pytest.approx(expected_delays)
