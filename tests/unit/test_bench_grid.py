"""Sweep grid parsing: values, units, order and the error messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.bench.errors import GridError
from lab.bench.grid import MAX_POINTS, Grid, GridPoint, parse_delays, parse_losses


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        pytest.param("0,1,2,5,10", (0.0, 0.01, 0.02, 0.05, 0.10), id="issue-example"),
        pytest.param("5, 0", (0.0, 0.05), id="spaces-and-sorted"),
        pytest.param("0.5%,2%", (0.005, 0.02), id="percent-signs"),
        pytest.param("99.9", (0.999,), id="just-below-100"),
        pytest.param(".5", (0.005,), id="leading-dot"),
    ],
)
def test_parse_losses(text: str, shares: tuple[float, ...]) -> None:
    assert parse_losses(text) == pytest.approx(shares)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("0,20,80", (0.0, 0.02, 0.08), id="issue-example"),
        pytest.param("20ms,0.1s", (0.02, 0.1), id="units"),
        pytest.param("80,0", (0.0, 0.08), id="sorted"),
        pytest.param("1.5", (0.0015,), id="fractional-ms"),
    ],
)
def test_parse_delays(text: str, seconds: tuple[float, ...]) -> None:
    assert parse_delays(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "--loss: give at least one value, e.g. --loss 0,1,2,5,10", id="empty"),
        pytest.param("0,,2", "--loss: empty value at position 2 in '0,,2'", id="empty-item"),
        pytest.param("1,", "--loss: empty value at position 2", id="trailing-comma"),
        pytest.param("two", "--loss: 'two' is not a percentage (e.g. 2 or 2%)", id="word"),
        pytest.param("20ms", "--loss: '20ms' is not a percentage", id="duration-unit"),
        pytest.param("nan", "--loss: 'nan' is not a percentage", id="nan"),
        pytest.param("-1", "--loss: '-1' is negative", id="negative"),
        pytest.param("100", "--loss: '100': at 100% loss nothing gets through", id="hundred"),
        pytest.param("1,1%", "--loss: '1%' repeats '1'", id="repeat"),
    ],
)
def test_loss_errors(text: str, message: str) -> None:
    with pytest.raises(GridError) as caught:
        parse_losses(text)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(" ", "--delay: give at least one value, e.g. --delay 0,20,80", id="blank"),
        pytest.param("20%", "--delay: '20%' is not a delay in milliseconds", id="percent"),
        pytest.param("1h", "--delay: '1h' is not a delay", id="unknown-unit"),
        pytest.param("-20", "--delay: '-20' is negative", id="negative"),
        pytest.param("20,20ms", "--delay: '20ms' repeats '20'", id="repeat-across-units"),
    ],
)
def test_delay_errors(text: str, message: str) -> None:
    with pytest.raises(GridError) as caught:
        parse_delays(text)
    assert message in str(caught.value)


def test_grid_points_are_delay_major() -> None:
    grid = Grid.parse(loss="0,5", delay="0,20")
    assert grid.points() == [
        GridPoint(delay=0.0, loss=0.0),
        GridPoint(delay=0.0, loss=0.05),
        GridPoint(delay=0.02, loss=0.0),
        GridPoint(delay=0.02, loss=0.05),
    ]


def test_grid_point_spec() -> None:
    point = GridPoint(delay=0.02, loss=0.01)
    assert point.describe() == "delay=20ms loss=1%"
    assert GridPoint(delay=0.0, loss=0.0).spec.is_empty


def test_grid_too_big() -> None:
    losses = ",".join(str(i) for i in range(20))
    delays = ",".join(str(i) for i in range(MAX_POINTS // 20 + 1))
    with pytest.raises(GridError, match=rf"at most {MAX_POINTS}"):
        Grid.parse(loss=losses, delay=delays)


def test_grid_names_the_wrong_option() -> None:
    with pytest.raises(GridError, match=r"^--delay"):
        Grid.parse(loss="0,1", delay="x")


@given(
    st.lists(
        st.integers(min_value=0, max_value=9999).map(lambda n: n / 100),
        min_size=1,
        max_size=20,
        unique=True,
    )
)
def test_any_distinct_percentages_round_trip(percents: list[float]) -> None:
    text = ",".join(f"{p:g}" for p in percents)
    assert parse_losses(text) == pytest.approx(sorted(p / 100 for p in percents))


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    for parse in (parse_losses, parse_delays):
        try:
            values = parse(text)
        except GridError:
            continue
        assert list(values) == sorted(values)
        assert all(v >= 0 for v in values)
