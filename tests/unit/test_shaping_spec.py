"""Shaping option parsing, LinkSpec and the profiles file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.shaping.errors import SpecError
from lab.shaping.spec import (
    LinkSpec,
    load_profiles,
    parse_duration,
    parse_percent,
    parse_rate,
    resolve_spec,
    spec_from_options,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("40ms", 0.040, id="ms"),
        pytest.param("5ms", 0.005, id="small-ms"),
        pytest.param("1.5s", 1.5, id="seconds"),
        pytest.param("250us", 0.000250, id="us"),
        pytest.param(" 0ms ", 0.0, id="zero-padded"),
        pytest.param(".5ms", 0.0005, id="leading-dot"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration("delay", text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "share"),
    [
        pytest.param("2%", 0.02, id="int"),
        pytest.param("0.5%", 0.005, id="fraction"),
        pytest.param("100%", 1.0, id="all"),
    ],
)
def test_parse_percent(text: str, share: float) -> None:
    assert parse_percent("loss", text) == pytest.approx(share)


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        pytest.param("20mbit", 20_000_000, id="mbit"),
        pytest.param("1.5gbit", 1_500_000_000, id="gbit"),
        pytest.param("512kbit", 512_000, id="kbit"),
        pytest.param("9600bit", 9600, id="bit"),
        pytest.param("20Mbit", 20_000_000, id="case-insensitive"),
    ],
)
def test_parse_rate(text: str, bits: int) -> None:
    assert parse_rate("rate", text) == bits


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        pytest.param("delay", "40", r"--delay: '40' is not a duration", id="delay-no-unit"),
        pytest.param("delay", "40xs", r"--delay: '40xs' is not a duration", id="delay-bad-unit"),
        pytest.param("jitter", "-5ms", r"--jitter: '-5ms'", id="negative"),
        pytest.param("loss", "2", r"--loss: '2' is not a percentage", id="loss-no-percent"),
        pytest.param("loss", "150%", r"--loss: '150%' is more than 100%", id="loss-too-big"),
        pytest.param("rate", "20mbps", r"--rate: '20mbps' is ambiguous", id="rate-bytes"),
        pytest.param("rate", "20furlongs", r"--rate: '20furlongs' is not a rate", id="rate-unit"),
        pytest.param("rate", "1bit", r"--rate: '1bit' is too slow", id="rate-tiny"),
    ],
)
def test_bad_values_name_the_option(option: str, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec_from_options({option: text})


def test_unknown_option_is_refused() -> None:
    with pytest.raises(SpecError, match="unknown shaping option 'latency'"):
        spec_from_options({"latency": "40ms"})


def test_reorder_needs_a_delay() -> None:
    with pytest.raises(SpecError, match="--reorder: needs a --delay"):
        spec_from_options({"reorder": "10%"})


def test_spec_is_frozen_and_describes_only_what_is_set() -> None:
    spec = spec_from_options({"delay": "40ms", "jitter": "5ms", "loss": "2%", "rate": "20mbit"})
    assert spec.describe() == "delay=40ms jitter=5ms loss=2% rate=20mbit"
    assert LinkSpec().describe() == "none"
    with pytest.raises(AttributeError):
        spec.delay = 1.0  # type: ignore[misc]


@given(
    delay=st.integers(0, 10_000_000),
    jitter=st.integers(0, 10_000_000),
    loss=st.integers(0, 10_000),
    duplicate=st.integers(0, 10_000),
    corrupt=st.integers(0, 10_000),
    rate=st.one_of(st.none(), st.integers(8, 10**11)),
)
def test_describe_parses_back_to_the_same_spec(
    *, delay: int, jitter: int, loss: int, duplicate: int, corrupt: int, rate: int | None
) -> None:
    spec = LinkSpec(
        delay=delay / 1e6,
        jitter=jitter / 1e6,
        loss=loss / 10_000,
        duplicate=duplicate / 10_000,
        corrupt=corrupt / 10_000,
        rate=rate,
    )
    again = LinkSpec.parse(spec.describe())
    assert again.rate == spec.rate
    for name in ("delay", "jitter", "loss", "duplicate", "corrupt"):
        assert getattr(again, name) == pytest.approx(getattr(spec, name), abs=1e-9)


def test_impairment_carries_the_per_packet_part() -> None:
    spec = spec_from_options({"delay": "10ms", "duplicate": "1%", "rate": "1mbit"})
    assert spec.impairment.delay == pytest.approx(0.010)
    assert spec.impairment.duplicate == pytest.approx(0.01)
    assert spec_from_options({"rate": "1mbit"}).impairment.is_noop


def test_shipped_profiles_load() -> None:
    profiles = load_profiles()
    assert {"lan", "lossy-wifi", "3g", "satellite"} <= set(profiles)
    assert profiles["satellite"].delay >= 0.25
    assert profiles["3g"].rate is not None


def test_flags_override_a_profile() -> None:
    spec = resolve_spec(profile="3g", options={"loss": "5%", "delay": None})
    assert spec.loss == pytest.approx(0.05)
    assert spec.delay == load_profiles()["3g"].delay


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"no profile 'moon'.*3g"):
        resolve_spec(profile="moon")


def test_bad_profile_file_names_file_and_profile(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles:\n  slow:\n    delay: 40 parsecs\n")
    with pytest.raises(SpecError, match=r"profiles.yaml: profile 'slow': --delay"):
        load_profiles(path)


def test_profile_file_without_profiles_key(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("lan: {delay: 1ms}\n")
    with pytest.raises(SpecError, match="top-level 'profiles:'"):
        load_profiles(path)
