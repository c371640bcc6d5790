"""The Mathis bound and ratios (the ceiling and targets: test_bench_ceiling.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.bench.throughput import DEFAULT_MSS, MATHIS_C, mathis_bound, ratio


def test_constant_is_sqrt_three_halves() -> None:
    assert pytest.approx(1.2247, abs=1e-4) == MATHIS_C


@pytest.mark.parametrize(
    ("rtt", "loss", "expected"),
    [
        # 1448 B * 8 / 0.1 s * 1.2247 / sqrt(0.01) = 1.4187 Mbit/s
        pytest.param(0.1, 0.01, 1448 * 8 / 0.1 * MATHIS_C / 0.1, id="100ms-1pct"),
        pytest.param(0.02, 0.01, 1448 * 8 / 0.02 * MATHIS_C / 0.1, id="20ms-1pct"),
        pytest.param(0.08, 0.10, 1448 * 8 / 0.08 * MATHIS_C / math.sqrt(0.1), id="80ms-10pct"),
    ],
)
def test_mathis_bound_values(rtt: float, loss: float, expected: float) -> None:
    assert mathis_bound(rtt=rtt, loss=loss) == pytest.approx(expected)


def test_mathis_bound_known_figure() -> None:
    bound = mathis_bound(rtt=0.1, loss=0.01)
    assert bound is not None
    assert bound / 1e6 == pytest.approx(1.4187, abs=1e-3)


def test_no_loss_means_no_bound() -> None:
    assert mathis_bound(rtt=0.05, loss=0.0) is None


def test_mss_and_constant_are_parameters() -> None:
    base = mathis_bound(rtt=0.05, loss=0.02)
    assert base is not None
    assert mathis_bound(rtt=0.05, loss=0.02, mss=2 * DEFAULT_MSS) == pytest.approx(2 * base)
    assert mathis_bound(rtt=0.05, loss=0.02, constant=1.0) == pytest.approx(base / MATHIS_C)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"rtt": 0.0, "loss": 0.01}, "RTT must be positive", id="zero-rtt"),
        pytest.param({"rtt": -1.0, "loss": 0.01}, "RTT must be positive", id="negative-rtt"),
        pytest.param({"rtt": math.nan, "loss": 0.01}, "RTT must be positive", id="nan-rtt"),
        pytest.param({"rtt": 0.1, "loss": 1.5}, "loss must be a share", id="loss-above-one"),
        pytest.param({"rtt": 0.1, "loss": -0.1}, "loss must be a share", id="negative-loss"),
        pytest.param({"rtt": 0.1, "loss": 0.01, "mss": 0}, "MSS must be", id="zero-mss"),
    ],
)
def test_mathis_bound_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mathis_bound(**kwargs)  # type: ignore[arg-type]


@given(
    rtt=st.floats(min_value=1e-4, max_value=2.0),
    low=st.floats(min_value=1e-4, max_value=0.5),
    factor=st.floats(min_value=1.01, max_value=1.9),
)
def test_more_loss_or_more_rtt_never_raises_the_bound(
    rtt: float, low: float, factor: float
) -> None:
    base = mathis_bound(rtt=rtt, loss=low)
    more_loss = mathis_bound(rtt=rtt, loss=low * factor)
    more_rtt = mathis_bound(rtt=rtt * factor, loss=low)
    assert base is not None
    assert more_loss is not None
    assert more_rtt is not None
    assert more_loss < base
    assert more_rtt < base


@pytest.mark.parametrize(
    ("ours", "reference", "expected"),
    [
        pytest.param(6.0, 10.0, 0.6, id="plain"),
        pytest.param(12.0, 10.0, 1.2, id="faster-than-reference"),
        pytest.param(5.0, 0.0, None, id="reference-measured-nothing"),
    ],
)
def test_ratio(ours: float, reference: float, expected: float | None) -> None:
    assert ratio(ours, reference) == (pytest.approx(expected) if expected is not None else None)
