"""The verdict loop's command line as data: to argv and back, and what it refuses."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.errors import ConfigError
from socketlab.shaper.core import Impairment
from socketlab.shaper.invocation import ShaperInvocation, ShaperUsageError, parse_invocation
from socketlab.shaper.models import Distribution, FourState, GilbertElliott

shares = st.floats(0, 1, allow_nan=False)
seconds = st.floats(0, 10, allow_nan=False)


@st.composite
def impairments(draw: st.DrawFn) -> Impairment:
    model = draw(
        st.one_of(
            st.none(),
            st.builds(GilbertElliott, p=shares, r=shares, bad_loss=shares, good_loss=shares),
            st.builds(
                FourState,
                p13=st.floats(0, 0.5),
                p31=st.floats(0, 0.5),
                p32=st.floats(0, 0.5),
                p23=shares,
                p14=st.floats(0, 0.5),
            ),
        )
    )
    reorder = draw(shares)
    return Impairment(
        delay=draw(seconds),
        jitter=draw(seconds),
        loss=0.0 if model else draw(shares),
        duplicate=draw(shares),
        reorder=reorder,
        corrupt=draw(shares),
        loss_correlation=0.0 if model else draw(shares),
        loss_model=model,
        delay_distribution=draw(st.sampled_from(list(Distribution))),
        delay_correlation=draw(shares),
        reorder_gap=draw(st.integers(2, 1000)) if reorder else 0,
    )


@given(
    impairment=impairments(),
    queue=st.integers(0, 0xFFFF),
    seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_argv_round_trips_exactly(impairment: Impairment, queue: int, seed: int | None) -> None:
    invocation = ShaperInvocation(queue=queue, impairment=impairment, seed=seed)
    assert parse_invocation(invocation.argv()) == invocation


def test_older_impairments_give_the_older_flags() -> None:
    # today's loop reads them, so a link with only the older options runs on today's helpers
    imp = Impairment(
        delay=0.04, jitter=0.005, loss=0.02, duplicate=0.01, reorder=0.1, corrupt=0.001
    )
    argv = ShaperInvocation(queue=3, impairment=imp, seed=9).argv()
    assert argv == ["--queue", "3", "--delay", "0.04", "--jitter", "0.005", "--loss", "0.02",
                    "--duplicate", "0.01", "--reorder", "0.1", "--corrupt", "0.001",
                    "--seed", "9"]  # fmt: skip
    assert parse_invocation(argv) == ShaperInvocation(queue=3, impairment=imp, seed=9)


def test_newer_flags_are_spelled_with_hyphens() -> None:
    imp = Impairment(
        delay=0.01, jitter=0.002, loss_model=GilbertElliott(p=0.1, r=0.5),
        delay_distribution=Distribution.PARETO, delay_correlation=0.25, reorder=0.1, reorder_gap=5,
    )  # fmt: skip
    argv = ShaperInvocation(queue=1, impairment=imp).argv()
    assert argv[argv.index("--loss-model") + 1] == "gemodel:0.1,0.5,1.0,0.0"
    assert argv[argv.index("--delay-distribution") + 1] == "pareto"
    assert argv[argv.index("--reorder-gap") + 1] == "5"
    assert "--seed" not in argv


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([], r"^--queue: required", id="no-queue"),
        pytest.param(["--queue"], r"^--queue: expected a value", id="dangling"),
        pytest.param(["--queue", "1", "--loss", "2"], r"^--loss: '2' is not a share", id="share"),
        pytest.param(
            ["--queue", "1", "--delay", "-1"], r"^--delay: '-1' must not be negative", id="negative"
        ),
        pytest.param(
            ["--queue", "1", "--delay", "inf"], r"^--delay: 'inf' is not a finite", id="infinite"
        ),
        pytest.param(["--queue", "x"], r"^--queue: 'x' is not an integer", id="queue-word"),
        pytest.param(["--queue", "70000"], r"^--queue: '70000' is outside 0..65535", id="big"),
        pytest.param(["--queue", "1", "--queue", "2"], r"^--queue: given twice", id="twice"),
        pytest.param(
            ["--queue", "1", "--latency", "1"], r"^--latency: unknown flag \(known: ", id="unknown"
        ),
        pytest.param(["queue", "1"], r"^'queue': expected --FLAG VALUE", id="no-dashes"),
        pytest.param(
            ["--queue", "1", "--loss-model", "gemodel:1,2"],
            r"^--loss-model: 'gemodel:1,2': expected gemodel",
            id="model",
        ),
        pytest.param(
            ["--queue", "1", "--delay-distribution", "gauss"],
            r"^--delay-distribution: 'gauss' is not one of",
            id="distribution",
        ),
        pytest.param(
            ["--queue", "1", "--reorder-gap", "3"],
            r"^impairment: reorder_gap needs a reorder share",
            id="gap-alone",
        ),
        pytest.param(
            ["--queue", "1", "--loss", "0.1", "--loss-model", "gemodel:0.1,0.2,1,0"],
            r"^impairment: loss_model replaces loss",
            id="loss-and-model",
        ),
        pytest.param(["--queue", "1", "--seed", "-3"], r"^--seed: '-3' is outside", id="seed"),
    ],
)
def test_bad_argv_is_one_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(ShaperUsageError, match=message) as caught:
        parse_invocation(argv)
    assert isinstance(caught.value, ConfigError)
    assert "\n" not in str(caught.value)


@given(st.lists(st.text(max_size=12), max_size=8))
def test_arbitrary_argv_never_crashes(argv: list[str]) -> None:
    with contextlib.suppress(ShaperUsageError):
        parse_invocation(argv)
