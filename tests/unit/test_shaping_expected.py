"""What a model should produce: chain figures against closed forms, quantiles, reorder, queues."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.shaping import expected, measure
from lab.shaping.spec import LinkSpec, spec_from_options
from socketlab.shaper.models import GilbertElliott


def spec(**options: str) -> LinkSpec:
    return spec_from_options(options)


@given(share=st.floats(0.001, 0.999))
def test_independent_loss_is_geometric_bursts_and_binomial_counts(share: float) -> None:
    profile = expected.chain_profile(expected.bernoulli_chain(share))
    assert profile.share == pytest.approx(share)
    assert profile.mean_burst == pytest.approx(1 / (1 - share))
    assert profile.burst_sd == pytest.approx(math.sqrt(share) / (1 - share))
    assert profile.dispersion == pytest.approx(1.0)


@given(p=st.floats(0.001, 0.5), r=st.floats(0.01, 0.99))
def test_simple_gilbert_closed_forms(p: float, r: float) -> None:
    profile = expected.chain_profile(expected.gilbert_elliott_chain(GilbertElliott(p=p, r=r)))
    assert profile.share == pytest.approx(p / (p + r))
    assert profile.mean_burst == pytest.approx(1 / r)  # one stay in Bad
    assert profile.burst_sd == pytest.approx(math.sqrt(1 - r) / r)
    decay = 1 - p - r
    assert profile.dispersion == pytest.approx((1 + decay) / (1 - decay), rel=1e-6)


@given(loss=st.floats(0.001, 0.6), burst=st.floats(1, 50))
def test_loss_burst_asks_what_the_chain_gives(loss: float, burst: float) -> None:
    burst = max(burst, loss / (1 - loss))
    profile = expected.loss_profile(LinkSpec(loss=loss, loss_burst=burst))
    assert profile.share == pytest.approx(loss)
    assert profile.mean_burst == pytest.approx(burst)


def test_mean_burst_is_losses_over_burst_starts() -> None:
    # a general GE chain: the run-length formula agrees with the ratio of long-run rates
    chain = expected.gilbert_elliott_chain(
        GilbertElliott(p=0.02, r=0.2, bad_loss=0.6, good_loss=0.01)
    )
    pi = chain.long_run()
    ell = chain.loss
    starts = sum(
        pi[u] * (1 - ell[u]) * chain.moves[u][s] * ell[s] for u in range(2) for s in range(2)
    )
    profile = expected.chain_profile(chain)
    assert profile.mean_burst == pytest.approx(profile.share / starts)


def test_round_trip_loss_combines_directions() -> None:
    there, back = spec(loss="5%", loss_burst="3"), spec(loss="2%", corrupt="1%")
    profile = expected.loss_profile(there, back)
    assert profile.share == pytest.approx(1 - 0.95 * 0.98 * 0.99)
    assert 1.0 < profile.mean_burst < 3.0  # independent reverse loss shortens the average run
    assert measure.round_trip_loss(there, back) == pytest.approx(profile.share)


def test_periodic_and_absorbing_chains() -> None:
    # 1 -> 4 -> 1 -> 4: every other packet lost, like clockwork
    alternating = expected.loss_profile(spec(loss_model="state:0%,100%,0%,100%,100%"))
    assert (alternating.share, alternating.mean_burst, alternating.dispersion) == (
        pytest.approx(0.5),
        pytest.approx(1.0),
        pytest.approx(0.0, abs=1e-9),
    )
    never = expected.loss_profile(spec(loss_model="gemodel:0%,0%"))
    assert never.share == 0.0
    assert never.mean_burst is None
    forever = expected.loss_profile(spec(loss_model="gemodel:100%,0%"))
    assert forever.share == pytest.approx(1.0)


def test_correlated_loss_figures_are_fixed_and_symmetric() -> None:
    half = expected.loss_profile(spec(loss="50%", loss_correlation="60%"))
    assert half.share == pytest.approx(0.5, abs=0.01)
    assert half.mean_burst > 2.5  # positively correlated: long runs
    low = [expected.loss_share(spec(loss="5%", loss_correlation=f"{c}%")) for c in (0, 10, 25, 50)]
    assert low[0] == pytest.approx(0.05)
    assert low == sorted(low, reverse=True)  # netem: more correlation, fewer losses below 50 %
    assert expected.loss_share(spec(loss="5%", loss_correlation="25%")) == low[2]  # cached, same


@pytest.mark.parametrize(
    ("options", "level", "seconds"),
    [
        pytest.param({"delay": "50ms", "jitter": "10ms"}, 0.9, 0.058, id="uniform"),
        pytest.param(
            {"delay": "50ms", "jitter": "10ms", "delay_distribution": "normal"},
            0.99,
            0.050 + 0.0232635,
            id="normal",
        ),
        pytest.param(
            {"delay": "5ms", "jitter": "10ms", "delay_distribution": "normal"},
            0.1,
            0.0,
            id="clamped-at-zero",
        ),
        # a quarter leaves at once: the median is the 1/3 quantile of the rest
        pytest.param(
            {"delay": "100ms", "jitter": "30ms", "reorder": "25%"},
            0.5,
            0.090,
            id="reorder-point-mass",
        ),
        pytest.param(
            {"delay": "100ms", "reorder": "25%", "reorder_gap": "3"},
            0.1,
            0.0,
            id="gap-share-at-once",
        ),
    ],
)
def test_one_way_quantiles(options: dict[str, str], level: float, seconds: float) -> None:
    assert expected.one_way_quantile(spec(**options), level) == pytest.approx(seconds, abs=1e-6)


def test_round_trip_quantiles_with_one_constant_side() -> None:
    there = spec(delay="50ms", jitter="10ms", delay_distribution="normal")
    back = spec(delay="5ms")
    assert expected.added_delay_quantiles(there, back, [0.5, 0.99]) == pytest.approx(
        [0.055, 0.055 + 0.0232635], abs=1e-6
    )
    assert expected.added_delay_quantiles(there, None, [0.5]) == pytest.approx([0.050])


@pytest.mark.parametrize(
    ("options", "share"),
    [
        pytest.param({"reorder": "25%"}, 0.25, id="plain"),
        pytest.param({"reorder": "25%", "reorder_gap": "3"}, 1 / 6, id="gap-3"),
        pytest.param({"reorder": "100%", "reorder_gap": "5"}, 0.2, id="every-fifth"),
    ],
)
def test_immediate_share(options: dict[str, str], share: float) -> None:
    assert expected.immediate_share(spec(delay="10ms", **options)) == pytest.approx(share)


def test_overtaking_share_and_when_it_can_be_checked() -> None:
    link = spec(delay="10ms", reorder="50%")
    # 9 earlier packets still held at 1 ms apart; all of them immediate too: 0.5**9
    assert expected.overtaking_share(link, 0.001) == pytest.approx(0.5 * (1 - 0.5**9))
    assert expected.reorder_unclear(link, 0.001) is None
    assert "outrun the delay" in (expected.reorder_unclear(link, 0.02) or "")
    jittery = spec(delay="10ms", jitter="2ms", reorder="10%")
    assert "jitter wider" in (expected.reorder_unclear(jittery, 0.001) or "")
    assert expected.reorder_unclear(spec(delay="10ms"), 0.001) == "no --reorder asked"


def test_queue_delay() -> None:
    assert expected.queue_delay(spec(rate="10mbit", queue_limit="125000b"), frame_bytes=1442) == (
        pytest.approx(0.1)
    )
    assert expected.queue_delay(spec(rate="1mbit", queue_limit="10p"), frame_bytes=1250) == (
        pytest.approx(0.1)
    )
    assert expected.queue_delay(spec(rate="1mbit"), frame_bytes=1500) is None
