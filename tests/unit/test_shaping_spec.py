"""Shaping option parsing, LinkSpec and the profiles file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.shaping.errors import SpecError
from lab.shaping.spec import (
    OPTION_HELP,
    OPTIONS,
    SPEC_OPTIONS,
    LinkSpec,
    QueueLimit,
    load_profiles,
    parse_duration,
    parse_percent,
    parse_rate,
    resolve_spec,
    spec_from_options,
)
from socketlab.shaper.models import Distribution, FourState, GilbertElliott


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


# --------------------------------------------------------------------------- newer options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"loss_burst": "3"}, r"^--loss-burst: needs --loss", id="burst-without-loss"),
        pytest.param(
            {"loss": "5%", "loss_burst": "0.5"},
            r"^--loss-burst: '0.5' must be between 1 and 1000000 packets",
            id="burst-below-one",
        ),
        pytest.param(
            {"loss": "80%", "loss_burst": "2"},
            r"^--loss-burst: with --loss 80% the mean burst must be at least 4 packets",
            id="burst-too-short-for-the-loss",
        ),
        pytest.param(
            {"loss": "100%", "loss_burst": "2"},
            r"^--loss-burst: --loss must be below 100%",
            id="burst-with-total-loss",
        ),
        pytest.param(
            {"loss": "2%", "loss_correlation": "150%"},
            r"^--loss-correlation: '150%' is more than 100%",
            id="correlation-above-100",
        ),
        pytest.param(
            {"loss_correlation": "25%"},
            r"^--loss-correlation: needs --loss",
            id="correlation-without-loss",
        ),
        pytest.param(
            {"loss": "2%", "loss_burst": "3", "loss_correlation": "25%"},
            r"^--loss-correlation: does not combine with --loss-burst",
            id="correlation-with-burst",
        ),
        pytest.param(
            {"loss": "2%", "loss_model": "gemodel:1%"},
            r"^--loss-model: replaces --loss \(give one way of losing packets\)",
            id="model-and-loss",
        ),
        pytest.param(
            {"loss_model": "gilbert:1%"},
            r"^--loss-model: 'gilbert:1%' is not a loss model \(use gemodel",
            id="model-unknown",
        ),
        pytest.param(
            {"loss_model": "gemodel:1%,2%,3%,4%,5%"},
            r"^--loss-model: gemodel takes at most 4 values",
            id="model-too-many-values",
        ),
        pytest.param(
            {"loss_model": "gemodel:1"},
            r"^--loss-model: '1' is not a percentage",
            id="model-value-without-percent",
        ),
        pytest.param(
            {"loss_model": "state:60%,10%,0%,100%,50%"},
            r"^--loss-model: p13 \+ p14 must be at most 1",
            id="model-four-state-sums",
        ),
        pytest.param(
            {"delay": "10ms", "delay_distribution": "normal"},
            r"^--delay-distribution: needs --jitter",
            id="distribution-without-jitter",
        ),
        pytest.param(
            {"jitter": "10ms", "delay_distribution": "normal"},
            r"^--delay-distribution: needs --delay",
            id="distribution-without-delay",
        ),
        pytest.param(
            {"delay": "10ms", "jitter": "1ms", "delay_distribution": "gauss"},
            r"^--delay-distribution: 'gauss' is not a distribution \(one of: uniform, normal, "
            r"pareto, paretonormal\)",
            id="distribution-unknown",
        ),
        pytest.param(
            {"delay": "10ms", "delay_correlation": "25%"},
            r"^--delay-correlation: needs --jitter",
            id="delay-correlation-without-jitter",
        ),
        pytest.param(
            {"delay": "10ms", "reorder_gap": "5"},
            r"^--reorder-gap: needs --reorder",
            id="gap-without-reorder",
        ),
        pytest.param(
            {"delay": "10ms", "reorder": "5%", "reorder_gap": "0"},
            r"^--reorder-gap: '0' must be between 1 and 1000000 packets",
            id="gap-zero",
        ),
        pytest.param(
            {"delay": "10ms", "reorder": "5%", "reorder_gap": "2.5"},
            r"^--reorder-gap: '2.5' is not a whole number of packets",
            id="gap-not-whole",
        ),
        pytest.param(
            {"queue_limit": "64kb"},
            r"^--queue-limit: needs --rate",
            id="queue-without-rate",
        ),
        pytest.param(
            {"rate": "1mbit", "queue_limit": "64"},
            r"^--queue-limit: '64' is not a queue size \(bytes: 1514b, 64kb, 1mb; packets: 100p\)",
            id="queue-no-unit",
        ),
        pytest.param(
            {"rate": "1mbit", "queue_limit": "1000b"},
            r"^--queue-limit: '1000b' must be between 1514b \(one full frame\) and 256mb",
            id="queue-below-one-frame",
        ),
        pytest.param(
            {"rate": "1mbit", "queue_limit": "0p"},
            r"^--queue-limit: '0p' must be between 1p and 1000000p",
            id="queue-zero-packets",
        ),
        pytest.param({"seed": "-1"}, r"^--seed: '-1' must be between 0 and", id="seed-negative"),
        pytest.param({"seed": "abc"}, r"^--seed: 'abc' is not a whole number", id="seed-word"),
        pytest.param(
            {"seed": str(2**64)}, r"^--seed: '18446744073709551616' must be between", id="seed-big"
        ),
    ],
)
def test_contradictions_are_one_line_naming_the_flag(options: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        spec_from_options(options)
    assert "\n" not in str(caught.value)


def test_loss_burst_derives_gilbert_elliott_with_that_mean() -> None:
    link = spec_from_options({"loss": "5%", "loss_burst": "3"})
    model = link.gilbert_elliott
    assert model is not None
    assert model.r == pytest.approx(1 / 3)
    assert model.p == pytest.approx(0.05 / 3 / 0.95)
    assert (model.bad_loss, model.good_loss) == (1.0, 0.0)
    # the verdict loop gets the chain, not a random loss on top of it
    assert link.impairment.loss == 0.0
    assert link.impairment.loss_model == model


def test_loss_model_defaults_are_netems() -> None:
    ge = spec_from_options({"loss_model": "gemodel:2%"}).loss_model
    assert ge == GilbertElliott(p=0.02, r=0.98, bad_loss=1.0, good_loss=0.0)
    gi = spec_from_options({"loss_model": "state:3%"}).loss_model
    assert gi == FourState(p13=0.03, p31=0.97, p32=0.0, p23=1.0, p14=0.0)


def test_hyphens_and_underscores_name_the_same_option() -> None:
    assert spec_from_options({"loss-burst": "3", "loss": "1%"}) == spec_from_options(
        {"loss_burst": "3", "loss": "1%"}
    )


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            {"loss": "5%", "loss_burst": "2.5", "rate": "10mbit", "queue_limit": "64kb"},
            id="burst-and-queue",
        ),
        pytest.param({"loss_model": "gemodel:1.5%,10%,70%,0.1%", "seed": "0"}, id="gemodel"),
        pytest.param({"loss_model": "state:1%,30%,10%,20%,0.5%"}, id="four-state"),
        pytest.param({"loss": "0.3%", "loss_correlation": "25%", "duplicate": "1%"}, id="corr"),
        pytest.param(
            {
                "delay": "50ms",
                "jitter": "10ms",
                "delay_distribution": "paretonormal",
                "delay_correlation": "40%",
                "reorder": "10%",
                "reorder_gap": "5",
            },
            id="delay-models",
        ),
        pytest.param({"rate": "1mbit", "queue_limit": "100p", "seed": str(2**64 - 1)}, id="big"),
        pytest.param({"rate": "1mbit", "queue_limit": "1514b"}, id="odd-bytes"),
    ],
)
def test_text_form_round_trips_with_the_newer_options(options: dict[str, str]) -> None:
    link = spec_from_options(options)
    text = link.describe()
    assert LinkSpec.parse(text) == link
    assert "_" not in text  # the text form uses the flags' spelling


def test_describe_reads_like_the_flags() -> None:
    link = spec_from_options(
        {"delay": "40ms", "jitter": "5ms", "delay_distribution": "normal", "loss": "2%",
         "loss_burst": "3", "rate": "20mbit", "queue_limit": "64kb", "seed": "7"}
    )  # fmt: skip
    assert link.describe() == (
        "delay=40ms jitter=5ms delay-distribution=normal loss=2% loss-burst=3 rate=20mbit "
        "queue-limit=64kb seed=7"
    )


@pytest.mark.parametrize(
    "label",
    [
        pytest.param("delay=40ms jitter=5ms loss=2% rate=20mbit", id="older"),
        pytest.param("delay=100ms duplicate=1% reorder=25% corrupt=0.1%", id="older-shares"),
        pytest.param("none", id="none"),
    ],
)
def test_labels_written_before_the_newer_options_still_parse(label: str) -> None:
    link = LinkSpec.parse(label)
    assert (link.loss_burst, link.loss_model, link.seed) == (None, None, None)
    assert link.describe() == label


@given(
    loss=st.integers(1, 9_000),
    burst=st.integers(100, 5_000),
    correlation=st.integers(0, 10_000),
    gap=st.integers(1, 50),
    queue=st.integers(1514, 10**6),
    seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_newer_options_round_trip_through_text(
    *, loss: int, burst: int, correlation: int, gap: int, queue: int, seed: int | None
) -> None:
    link = LinkSpec(
        delay=0.05,
        jitter=0.01,
        delay_distribution=Distribution.NORMAL,
        delay_correlation=correlation / 10_000,
        loss=loss / 10_000,
        loss_burst=max(burst / 100, loss / (10_000 - loss)),
        reorder=0.1,
        reorder_gap=gap,
        rate=10**7,
        queue_limit=QueueLimit(queue),
        seed=seed,
    )
    again = LinkSpec.parse(link.describe())
    assert (again.reorder_gap, again.queue_limit, again.seed) == (gap, QueueLimit(queue), seed)
    assert again.delay_distribution is Distribution.NORMAL
    for name in ("loss", "loss_burst", "delay_correlation"):
        assert getattr(again, name) == pytest.approx(getattr(link, name), rel=1e-9, abs=1e-12)


def test_an_explicit_loss_option_replaces_the_profiles_loss() -> None:
    profiles = {"bursty": spec_from_options({"loss": "2%", "loss_burst": "3", "delay": "5ms"})}
    link = resolve_spec(profile="bursty", options={"loss_model": "gemodel:1%"}, profiles=profiles)
    assert (link.loss, link.loss_burst, link.delay) == (0.0, None, 0.005)
    plain = resolve_spec(profile="bursty", options={"loss": "5%"}, profiles=profiles)
    assert (plain.loss, plain.loss_burst) == (0.05, 3.0)  # a new mean, same bursts


def test_an_explicit_zero_turns_off_what_qualified_it() -> None:
    profiles = {
        "rich": spec_from_options(
            {"delay": "5ms", "jitter": "2ms", "delay_distribution": "normal", "loss": "2%",
             "loss_burst": "3", "reorder": "5%", "reorder_gap": "4"}
        )
    }  # fmt: skip
    calm = resolve_spec(
        profile="rich", options={"loss": "0%", "jitter": "0ms", "reorder": "0%"}, profiles=profiles
    )
    assert calm == LinkSpec(delay=0.005)
    with pytest.raises(SpecError, match="--loss-burst: needs --loss"):
        resolve_spec(profile="rich", options={"loss": "0%", "loss_burst": "2"}, profiles=profiles)


def test_shipped_profiles_show_the_newer_options() -> None:
    profiles = load_profiles()
    assert profiles["bufferbloat"].queue_limit == QueueLimit(256 * 1024)
    assert profiles["bursty-wifi"].gilbert_elliott is not None
    # the older profiles keep only the older options: today's helpers can run them
    for name in ("lan", "lossy-wifi", "3g", "satellite"):
        assert set(profiles[name].describe().replace("=", " ").split()[::2]) <= set(OPTIONS)


def test_every_option_has_help() -> None:
    assert set(OPTION_HELP) == set(SPEC_OPTIONS)
    assert set(OPTIONS) < set(SPEC_OPTIONS)
