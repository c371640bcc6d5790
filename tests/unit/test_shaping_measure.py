"""Self-check arithmetic and the ICMP prober's packets."""

from __future__ import annotations

import json
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.shaping.errors import ShapingError
from lab.shaping.measure import (
    GOODPUT_PER_WIRE,
    UDP_PAYLOAD_PER_WIRE,
    PingStats,
    binomial_interval,
    check_bufferbloat,
    check_burst_length,
    check_delay,
    check_delay_percentiles,
    check_duplicates,
    check_loss,
    check_rate,
    check_rate_udp,
    count_bursts,
    lost_share,
    median_one_way_delay,
    overtakers,
    parse_iperf3,
    parse_probe,
    probes_for_bursts,
    rate_is_checkable,
    round_trip_duplicates,
    round_trip_loss,
    sample_quantile,
    self_check_band,
    tcp_goodput_per_wire,
    udp_payload,
    udp_payload_per_wire,
)
from lab.shaping.spec import spec_from_options
from lab.topology import Family
from socketlab.shaper.icmp import checksum, echo_request, parse_echo_reply
from socketlab.shaper.probe import percentile


def test_parse_probe_report() -> None:
    line = json.dumps({"sent": 2000, "received": 1900, "duplicates": 0, "rtt_avg": 0.0505})
    stats = parse_probe("noise\n" + line + "\n")
    assert stats == PingStats(transmitted=2000, received=1900, rtt_avg=0.0505, duplicates=0)
    assert stats.lost == 100
    assert stats.loss == pytest.approx(0.05)


def test_parse_probe_reads_the_median_and_p99() -> None:
    line = json.dumps({"sent": 100, "received": 100, "rtt_avg": 0.0506, "rtt_median": 0.0504,
                       "rtt_p99": 0.0541})  # fmt: skip
    stats = parse_probe(line)
    assert (stats.rtt_median, stats.rtt_p99) == (0.0504, 0.0541)


def test_probe_p99_is_a_measured_rtt_by_nearest_rank() -> None:
    values = [float(n) for n in range(1, 201)]  # 1..200
    assert percentile(values, 0.99) == 198.0
    assert percentile(values, 0.5) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) is None


def test_parse_probe_with_no_replies() -> None:
    stats = parse_probe(json.dumps({"sent": 5, "received": 0, "rtt_avg": None}))
    assert stats.rtt_avg is None
    assert stats.loss == 1.0


def test_parse_probe_garbage() -> None:
    with pytest.raises(ShapingError, match="probe report"):
        parse_probe("Traceback ...")


def test_parse_iperf3() -> None:
    report = {"end": {"sum_received": {"bits_per_second": 19.1e6}}}
    assert parse_iperf3(json.dumps(report)) == pytest.approx(19.1e6)
    with pytest.raises(ShapingError, match="iperf3: unable to connect"):
        parse_iperf3(json.dumps({"error": "unable to connect"}))
    with pytest.raises(ShapingError, match="JSON"):
        parse_iperf3("iperf3: error")


@pytest.mark.parametrize(
    ("options", "median"),
    [
        pytest.param({"delay": "50ms", "jitter": "10ms"}, 0.050, id="symmetric-jitter"),
        pytest.param({"delay": "10ms", "jitter": "30ms"}, 0.010, id="clamping-keeps-median"),
        # a quarter leaves at once: the median is the 1/3 quantile of 100 +/- 30 ms
        pytest.param({"delay": "100ms", "jitter": "30ms", "reorder": "25%"}, 0.090, id="reorder"),
        pytest.param({"delay": "100ms", "reorder": "60%"}, 0.0, id="mostly-reordered"),
    ],
)
def test_median_one_way_delay(options: dict[str, str], median: float) -> None:
    assert median_one_way_delay(spec_from_options(options)) == pytest.approx(median)


def test_check_delay_prefers_the_median() -> None:
    stalled = PingStats(100, 100, rtt_avg=0.080, rtt_median=0.0503)
    assert check_delay(expected_added=0.050, baseline=0.0001, stats=stalled).ok


def test_round_trip_loss_combines_both_directions_and_corruption() -> None:
    forward = spec_from_options({"loss": "5%", "corrupt": "1%"})
    reverse = spec_from_options({"loss": "10%"})
    assert round_trip_loss(forward, None) == pytest.approx(1 - 0.95 * 0.99)
    assert round_trip_loss(forward, reverse) == pytest.approx(1 - 0.95 * 0.99 * 0.90)


def test_binomial_interval_for_the_integration_test_case() -> None:
    low, high = binomial_interval(2000, 0.05)
    # mean 100, sd 9.75: about 100 -/+ 26
    assert 72 < low < 76
    assert 124 < high < 128
    assert binomial_interval(100, 0.0) == (0.0, 1.0)


def test_binomial_interval_holds_about_99_percent_of_draws() -> None:
    rng = random.Random(7)
    low, high = binomial_interval(2000, 0.05)
    inside = sum(low <= sum(rng.random() < 0.05 for _ in range(2000)) <= high for _ in range(300))
    assert inside >= 290


@pytest.mark.parametrize(
    ("rtt", "ok"),
    [
        pytest.param(0.0502, True, id="close"),
        pytest.param(0.0580, True, id="edge"),
        pytest.param(0.0600, False, id="too-slow"),
        pytest.param(0.0010, False, id="not-shaped"),
    ],
)
def test_check_delay(rtt: float, ok: bool) -> None:
    row = check_delay(expected_added=0.050, baseline=0.0002, stats=PingStats(100, 100, rtt_avg=rtt))
    assert row.ok is ok
    assert row.as_row()["result"] == ("ok" if ok else "FAIL")


def test_check_delay_without_replies_fails() -> None:
    assert not check_delay(expected_added=0.01, baseline=0.0, stats=PingStats(10, 0, None)).ok


def test_check_loss() -> None:
    assert check_loss(expected=0.05, stats=PingStats(2000, 1900, 0.001)).ok
    assert not check_loss(expected=0.05, stats=PingStats(2000, 2000, 0.001)).ok
    assert not check_loss(expected=0.0, stats=PingStats(50, 45, 0.001)).ok


def test_check_duplicates() -> None:
    forward = spec_from_options({"duplicate": "10%"})
    expected = round_trip_duplicates(forward, spec_from_options({"duplicate": "10%"}))
    assert expected == pytest.approx(0.19)
    assert check_duplicates(expected=0.10, stats=PingStats(1000, 990, 0.01, duplicates=95)).ok
    assert not check_duplicates(expected=0.10, stats=PingStats(1000, 990, 0.01, duplicates=0)).ok


def test_duplicates_allow_a_busy_hosts_lost_copies_but_not_a_link_without_copies() -> None:
    # 20 % of 1,000: 200 expected, standard deviation 12.6. CI's loaded host saw 156, which
    # the 99 % low side (166) failed; 4 standard deviations (150) allow it.
    def row(duplicates: int) -> bool:
        return check_duplicates(
            expected=0.2, stats=PingStats(1000, 1000, 0.0, duplicates=duplicates)
        ).ok

    assert row(156)
    assert not row(140)
    assert not row(0)
    assert row(249)
    assert not row(252)


def test_check_rate_allows_for_header_overhead() -> None:
    assert GOODPUT_PER_WIRE == 1448 / 1514
    assert check_rate(requested=20_000_000, goodput=20e6 * GOODPUT_PER_WIRE).ok
    assert check_rate(requested=20_000_000, goodput=17.8e6).ok
    assert not check_rate(requested=20_000_000, goodput=14e6).ok
    assert not check_rate(requested=20_000_000, goodput=900e6).ok


@pytest.mark.parametrize(
    ("mtu", "family", "share"),
    [
        pytest.param(1500, 4, 1448 / 1514, id="ethernet"),
        pytest.param(None, 4, 1448 / 1514, id="unknown"),
        pytest.param(1450, 4, 1398 / 1464, id="vxlan"),
        pytest.param(1500, 6, 1428 / 1514, id="v6"),
        pytest.param(1280, 6, 1208 / 1294, id="v6-minimum"),
    ],
)
def test_tcp_goodput_per_wire_follows_the_path(
    mtu: int | None, family: Family, share: float
) -> None:
    assert tcp_goodput_per_wire(mtu, family) == pytest.approx(share)
    row = check_rate(requested=20_000_000, goodput=20e6 * share, mtu=mtu, family=family)
    assert row.measured == "20.00Mbit/s"


def test_a_path_too_small_for_tcp_is_refused() -> None:
    with pytest.raises(ShapingError, match="a path MTU of 60 bytes leaves no room"):
        tcp_goodput_per_wire(60, 6)


def test_check_rate_udp_expects_the_rate_less_the_loss() -> None:
    lossy = spec_from_options({"rate": "20mbit", "loss": "5%"})
    received = 20e6 * 0.95 * UDP_PAYLOAD_PER_WIRE
    assert check_rate_udp(requested=20_000_000, received=received, forward=lossy).ok
    assert not check_rate_udp(requested=20_000_000, received=30e6, forward=lossy).ok
    assert not check_rate_udp(requested=20_000_000, received=5e6, forward=lossy).ok


@pytest.mark.parametrize(
    ("mtu", "family", "payload"),
    [
        pytest.param(None, 4, 1400, id="unknown"),
        pytest.param(1500, 4, 1400, id="ethernet"),
        pytest.param(1500, 6, 1400, id="ethernet-v6"),
        pytest.param(1420, 4, 1392, id="wireguard"),
        pytest.param(1280, 4, 1252, id="small-v4"),
        pytest.param(1280, 6, 1232, id="ipv6-minimum"),
    ],
)
def test_a_rate_probe_fits_the_path_in_one_datagram(
    mtu: int | None, family: int, payload: int
) -> None:
    assert udp_payload(mtu, family) == payload  # type: ignore[arg-type]


def test_a_path_too_small_for_udp_is_one_clear_error() -> None:
    with pytest.raises(ShapingError, match="MTU of 20 bytes leaves no room"):
        udp_payload(20, 4)


def test_a_small_mtu_rate_check_counts_the_headers_of_its_own_datagrams() -> None:
    lossy = spec_from_options({"rate": "20mbit", "loss": "5%"})
    assert udp_payload_per_wire(1232, 6) == 1232 / (1232 + 8 + 40 + 14)
    received = 20e6 * 0.95 * udp_payload_per_wire(1232, 6)
    row = check_rate_udp(
        requested=20_000_000, received=received, forward=lossy, payload=1232, family=6
    )
    assert row.ok
    assert row.measured == "19.00Mbit/s"  # the rate less the 5 % lost
    assert "1232-byte datagrams: the path's MTU" in row.note


def test_rate_is_not_checked_with_tcp_through_loss() -> None:
    assert rate_is_checkable(spec_from_options({"rate": "1mbit", "delay": "5ms"}), None)
    assert not rate_is_checkable(spec_from_options({"rate": "1mbit", "loss": "1%"}), None)
    assert not rate_is_checkable(
        spec_from_options({"rate": "1mbit"}), spec_from_options({"loss": "1%"})
    )


# --------------------------------------------------------------------------- ICMP


def ipv4_around(icmp: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                       bytes(4), bytes(4)) + icmp  # fmt: skip


def as_reply(request: bytes) -> bytes:
    unsummed = b"\0\0\0\0" + request[4:]
    return b"\0\0" + struct.pack("!H", checksum(unsummed)) + request[4:]


def test_echo_request_has_a_valid_checksum() -> None:
    assert checksum(echo_request(0x1234, 7, b"payload")) == 0


@given(
    identifier=st.integers(0, 0xFFFF), sequence=st.integers(0, 0xFFFF), body=st.binary(max_size=64)
)
def test_reply_round_trip(identifier: int, sequence: int, body: bytes) -> None:
    reply = ipv4_around(as_reply(echo_request(identifier, sequence, body)))
    assert parse_echo_reply(reply, identifier) == sequence
    assert parse_echo_reply(reply, identifier ^ 1) is None


def test_corrupted_or_foreign_replies_are_ignored() -> None:
    reply = bytearray(ipv4_around(as_reply(echo_request(1, 2, b"abcdef"))))
    reply[-1] ^= 0x10
    assert parse_echo_reply(bytes(reply), 1) is None
    request = ipv4_around(echo_request(1, 2))
    assert parse_echo_reply(request, 1) is None  # our own request, seen on a raw socket


@given(st.binary(max_size=100))
def test_parse_echo_reply_never_crashes(data: bytes) -> None:
    parse_echo_reply(data, 1)


def test_self_check_tolerates_a_busy_host_but_not_an_unshaped_link() -> None:
    low, high = self_check_band(1000, 0.01)
    assert 0 < low < 10, "nothing lost when 1 % was asked must fail"
    assert high > binomial_interval(1000, 0.01)[1], "wider above than 99 %: a busy host adds loss"
    # the case that made a correctly shaped 1 % link fail once in CI
    assert check_loss(expected=0.01, stats=PingStats(1000, 980, 0.001)).ok
    # shaping that did not take effect still fails
    assert not check_loss(expected=0.01, stats=PingStats(1000, 1000, 0.001)).ok


# --------------------------------------------------------------------------- newer checks


def test_loss_band_widens_with_dispersion() -> None:
    narrow = self_check_band(2000, 0.05)
    wide = self_check_band(2000, 0.05, dispersion=4.7)
    assert wide[0] < narrow[0]
    assert wide[1] > narrow[1]
    assert self_check_band(2000, 0.05, dispersion=0.5) == narrow  # never narrower than binomial


def test_count_bursts() -> None:
    bursts = count_bursts([False, True, True, False, True, False, False, True, True, True])
    assert (bursts.lost, bursts.bursts, bursts.mean) == (6, 3, 2.0)
    assert count_bursts([False] * 5).mean is None


def test_probes_for_bursts() -> None:
    # 40 bursts of 3 at 5 % loss: 2400 probes
    assert probes_for_bursts(spec_from_options({"loss": "5%", "loss_burst": "3"}), None) == 2400
    assert probes_for_bursts(spec_from_options({"delay": "1ms"}), None) == 0


def test_burst_check_without_loss_asked() -> None:
    calm = spec_from_options({"delay": "1ms"})
    assert check_burst_length(lost=[False] * 100, forward=calm, reverse=None).ok
    assert not check_burst_length(lost=[True, False] * 50, forward=calm, reverse=None).ok


def test_sample_quantile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert sample_quantile(values, 0.5) == 50.0
    assert sample_quantile(values, 0.99) == 99.0
    assert sample_quantile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError, match="no samples"):
        sample_quantile([], 0.5)


def test_percentiles_without_replies_fail() -> None:
    link = spec_from_options({"delay": "10ms", "jitter": "1ms"})
    rows = check_delay_percentiles(added=[], forward=link, reverse=None)
    assert [row.ok for row in rows] == [False, False, False]


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        pytest.param([0, 1, 2, 3], (0, 4), id="in-order"),
        pytest.param([1, 0, 2, 3], (1, 4), id="one-overtakes"),
        pytest.param([3, 0, 1, 2], (1, 4), id="one-overtakes-three"),
        pytest.param([0, 2, 1, 1, 3], (1, 4), id="duplicate-counts-once"),
        pytest.param([0, 2, 4], (0, 3), id="losses-are-not-reordering"),
        pytest.param([], (0, 0), id="nothing"),
    ],
)
def test_overtakers(arrivals: list[int], expected: tuple[int, int]) -> None:
    assert overtakers(arrivals) == expected


def stats(rtt: float) -> PingStats:
    return PingStats(200, 200, rtt_avg=rtt, rtt_median=rtt)


@pytest.mark.parametrize(
    ("loaded", "ok"),
    [
        pytest.param(0.0010 + 0.2097, True, id="full-queue"),
        pytest.param(0.0010 + 0.1200, True, id="mostly-full"),
        pytest.param(0.0010 + 0.0300, False, id="queue-too-short"),
        pytest.param(0.0010 + 0.2600, False, id="queue-too-deep"),
        pytest.param(0.0012, False, id="no-bloat"),
    ],
)
def test_bufferbloat_check(loaded: float, ok: bool) -> None:
    # 256 kB at 10 Mbit/s drains in 209.7 ms
    link = spec_from_options({"rate": "10mbit", "queue_limit": "256kb"})
    row = check_bufferbloat(idle=stats(0.0010), loaded=stats(loaded), spec=link)
    assert row.ok is ok
    assert row.requested == "+209.7ms (queue 256kb at 10mbit)"


def test_bufferbloat_without_a_limit_only_needs_a_rise() -> None:
    link = spec_from_options({"rate": "10mbit"})
    assert check_bufferbloat(idle=stats(0.001), loaded=stats(0.5), spec=link).ok
    assert not check_bufferbloat(idle=stats(0.001), loaded=stats(0.0015), spec=link).ok
    silent = PingStats(10, 0, rtt_avg=None)
    assert not check_bufferbloat(idle=stats(0.001), loaded=silent, spec=link).ok


def test_median_follows_the_distribution() -> None:
    pareto = spec_from_options({"delay": "50ms", "jitter": "10ms", "delay_distribution": "pareto"})
    assert median_one_way_delay(pareto) == pytest.approx(
        0.050 + 0.010 * (0.5 ** (-1 / 3) - 1.5) * 4 / 3
    )


def test_lost_share_of_a_burst_model_is_its_mean() -> None:
    assert lost_share(spec_from_options({"loss": "5%", "loss_burst": "3"})) == pytest.approx(0.05)
    assert lost_share(spec_from_options({"loss_model": "gemodel:1%,10%,70%,0.1%"})) == (
        pytest.approx(0.0645454545)
    )


def test_a_loss_model_makes_the_rate_a_udp_check() -> None:
    bursty = spec_from_options({"rate": "1mbit", "loss_model": "gemodel:1%,30%"})
    assert not rate_is_checkable(bursty, None)


def test_a_host_measured_too_busy_leaves_only_the_lower_side_judged() -> None:
    spec = spec_from_options({"delay": "100ms", "jitter": "20ms"})
    rng = random.Random(11)
    added = [0.1 + rng.uniform(-0.02, 0.02) for _ in range(1000)]
    stalled = [a + (0.3 if rng.random() < 0.03 else 0.0) for a in added]
    late = [0.3 if rng.random() < 0.03 else 0.0 for _ in range(1000)]
    strict = {
        r.metric: r for r in check_delay_percentiles(added=stalled, forward=spec, reverse=None)
    }
    assert not strict["delay p99"].ok
    lenient = {
        r.metric: r
        for r in check_delay_percentiles(added=stalled, forward=spec, reverse=None, host_delay=late)
    }
    assert lenient["delay p99"].ok
    assert "host +300.00ms" in lenient["delay p99"].note  # allowed: it was measured
    # a host late by less than the stalls seen: above even that, the upper side is not judged
    milder = [0.1 if x else 0.0 for x in late]
    rows = {
        r.metric: r
        for r in check_delay_percentiles(
            added=stalled, forward=spec, reverse=None, host_delay=milder
        )
    }
    assert rows["delay p99"].ok
    assert "upper side not judged" in rows["delay p99"].note
    # the lower side is judged however busy the host: a link with half the delay fails
    low = check_delay_percentiles(added=[0.05] * 1000, forward=spec, reverse=None, host_delay=late)
    assert not any(r.ok for r in low)
