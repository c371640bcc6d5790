"""``socketlab tcp-vs-udp``'s arithmetic and words: offers, batches of timed messages,
the ratios scenarios check, and the one sentence under each run's conditions."""

from __future__ import annotations

import pytest

from socketlab.errors import ConfigError
from socketlab.udp import compare
from socketlab.udp.compare import Outcome, comparison, meaning, parse_offer


def tcp(goodput: float, *, p99: float | None = 400.0, cc: str | None = "cubic") -> Outcome:
    size = 2_000_000
    return Outcome(
        protocol="tcp", bytes_sent=size, bytes_delivered=size, duration_s=size * 8 / goodput / 1e6,
        latency_p50_ms=150.0, latency_p99_ms=p99, congestion=cc,
    )  # fmt: skip


def udp(goodput: float, delivered: float, *, offered: float | None = 20.0) -> Outcome:
    sent = 1667
    got = round(sent * delivered)
    return Outcome(
        protocol="udp", bytes_sent=sent * 1200, bytes_delivered=got * 1200,
        duration_s=got * 1200 * 8 / goodput / 1e6, datagrams_sent=sent, datagrams_delivered=got,
        latency_p50_ms=20.3, latency_p99_ms=28.0, offered_mbit_s=offered,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "bits"),
    [("20mbit", 20_000_000), ("500kbit", 500_000), ("1.5gbit", 1_500_000_000), ("8000", 8000)],
)
def test_offers(text: str, bits: int) -> None:
    assert parse_offer(text) == bits


@pytest.mark.parametrize("text", ["20mbps", "fast", "-3mbit", "1bit", ""])
def test_bad_offers_are_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match="--offer"):
        parse_offer(text)


def test_batches_carry_whole_messages_and_the_rest_last() -> None:
    batches = compare._batches(200_005, 1200)
    assert sum(length for _, length in batches) == 200_005
    assert batches[0] == (54, 54 * 1200)  # as many whole messages as fit 64 KiB
    assert batches[-1] == (1, 200_005 % 1200)


def test_under_loss_udp_keeps_its_pace_and_tcp_is_late() -> None:
    t, u = tcp(2.2), udp(18.5, 0.95)
    ratios = comparison(t, u)
    assert ratios["goodput_udp_over_tcp"] == pytest.approx(18.5 / 2.2)
    assert ratios["p99_tcp_over_udp"] == pytest.approx(400 / 28)
    assert (ratios["delivered_tcp"], ratios["delivered_udp"]) == (
        1.0,
        pytest.approx(0.95, abs=1e-3),
    )
    sentence = meaning(t, u)
    assert sentence.endswith(".")
    assert ". " not in sentence  # one sentence
    assert "UDP was offered at 20 Mbit/s, paced, with no congestion control" in sentence
    assert "UDP delivered 95.0 % (what the link dropped is gone)" in sentence
    assert "UDP's goodput beats TCP's because cubic backs off at every loss" in sentence
    assert "head-of-line blocking" in sentence


def test_on_a_clean_link_the_sentence_says_udp_was_only_offered_less() -> None:
    sentence = meaning(tcp(6400.0, p99=2.0), udp(20.0, 1.0))
    assert (
        "TCP's goodput beats UDP's because UDP's is capped by the rate it was offered" in sentence
    )
    assert "both delivered what they sent" in sentence


def test_bbr_is_not_said_to_back_off() -> None:
    sentence = meaning(tcp(2.0, cc="bbr"), udp(18.0, 0.95))
    assert "bbr waits for its retransmissions" in sentence
    assert "backs off" not in sentence


def test_unpaced_udp_and_a_listener_without_latency_are_said_so() -> None:
    quiet = Outcome(protocol="udp", bytes_sent=1200, bytes_delivered=1200, duration_s=0.1,
                    datagrams_sent=1, datagrams_delivered=1)  # fmt: skip
    sentence = meaning(tcp(100.0), quiet)
    assert "UDP was sent unpaced" in sentence
    assert "per-message latency was not reported" in sentence
    assert comparison(tcp(100.0), quiet)["p99_tcp_over_udp"] is None
