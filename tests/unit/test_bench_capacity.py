"""The UDP capacity search (lab.bench.capacity): plan, verdicts, a fake sender and listener."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.bench.capacity import (
    IPERF3,
    OURS,
    Capacity,
    CapacityPlan,
    CapacityReport,
    KernelDrops,
    Trial,
    Verdict,
    next_rate,
    search,
)
from lab.bench.capacity_runner import iperf3_trial_figures
from lab.bench.errors import BenchError

SNMP = """\
Ip: Forwarding DefaultTTL
Ip: 1 64
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors
Udp: {received} 0 {errors} 10 {rcvbuf} 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors
UdpLite: 0 0 99 0 99 0 0
"""


def snmp(*, received: int, errors: int, rcvbuf: int) -> str:
    return SNMP.format(received=received, errors=errors, rcvbuf=rcvbuf)


def trial(rate: float, *, sent: int = 1000, received: int = 1000, seconds: float = 1.0) -> Trial:
    return Trial(rate=rate, sent=sent, received=received, seconds=seconds)


@dataclass
class FakePath:
    """A sender that can offer up to ``sender_max``/s and a listener that keeps up to
    ``capacity``/s; above it the excess is lost (and counted as kernel drops)."""

    capacity: float
    sender_max: float = 10e6
    seconds: float = 1.0
    flaky: set[float] = field(default_factory=set)  # rates whose first try loses a few
    asked: list[float] = field(default_factory=list)

    def measure(self, rate: float) -> Trial:
        self.asked.append(rate)
        offered = min(rate, self.sender_max)
        sent = round(offered * self.seconds)
        received = round(min(offered, self.capacity) * self.seconds)
        if rate in self.flaky:
            self.flaky.discard(rate)
            received -= sent // 100
        drops = sent - received
        return Trial(
            rate=rate,
            sent=sent,
            received=received,
            seconds=self.seconds,
            kernel=KernelDrops(in_errors=drops, rcvbuf_errors=drops, in_datagrams=received),
            gaps=drops,
            missed_at_start=0,
            tail=0,
            duplicates=0,
        )


# --- verdicts -----------------------------------------------------------------------------


def test_a_trial_passes_below_the_loss_limit_and_fails_at_it() -> None:
    plan = CapacityPlan()
    assert trial(1000, sent=100_000, received=99_901).verdict(plan) is Verdict.PASSED
    assert trial(1000, sent=100_000, received=99_900).verdict(plan) is Verdict.LOSS  # 0.1 %
    lossy = trial(1000, sent=100_000, received=90_000)
    assert (lossy.lost, lossy.loss) == (10_000, 0.1)


def test_a_sender_that_fell_short_of_the_rate_never_offered_it() -> None:
    plan = CapacityPlan()
    # asked 1000/s, sent 900 in a second: no loss, but the rate was not offered
    assert trial(1000, sent=900, received=900).verdict(plan) is Verdict.SHORT
    assert trial(1000, sent=950, received=950).verdict(plan) is Verdict.PASSED
    assert trial(1000, sent=0, received=0).verdict(plan) is Verdict.SHORT


BAD_PLANS = [{"start": 0}, {"growth": 1.0}, {"trials": 0}, {"attempts": 0}, {"seconds": 0}, {"segments": 0},
             {"loss_limit": 0}, {"shortfall": 1.5}, {"start": 10, "ceiling": 5}]  # fmt: skip


@pytest.mark.parametrize("changes", BAD_PLANS)
def test_a_plan_that_cannot_search_is_refused(changes: dict[str, float]) -> None:
    with pytest.raises(BenchError, match="capacity plan"):
        CapacityPlan(**changes)  # type: ignore[arg-type]


def test_a_trial_sends_rate_times_seconds() -> None:
    assert CapacityPlan(seconds=3).count(200_000) == 600_000
    assert CapacityPlan(seconds=0.001).count(10) == 1


# --- the plan -----------------------------------------------------------------------------


def test_the_search_grows_then_bisects_between_pass_and_fail() -> None:
    plan = CapacityPlan(start=25_000, trials=8, precision=0.05)
    tried: list[tuple[float, bool]] = []
    rates = []
    while (rate := next_rate(plan, tried)) is not None:
        rates.append(rate)
        tried.append((rate, rate <= 130_000))
    assert rates == [25_000, 50_000, 100_000, 200_000, 150_000, 125_000, 138_000, 132_000]


def test_bisection_stops_once_pass_and_fail_are_close() -> None:
    plan = CapacityPlan(precision=0.05, trials=20)
    assert next_rate(plan, [(100_000, True), (104_000, False)]) is None
    assert next_rate(plan, [(100_000, True), (110_000, False)]) == 105_000


def test_growth_stops_at_the_ceiling_and_the_budget() -> None:
    plan = CapacityPlan(start=400_000, ceiling=1_000_000, trials=10)
    assert next_rate(plan, [(400_000, True)]) == 800_000
    assert next_rate(plan, [(400_000, True), (800_000, True)]) == 1_000_000
    assert next_rate(plan, [(400_000, True), (800_000, True), (1_000_000, True)]) is None
    assert next_rate(CapacityPlan(trials=2), [(25_000, True), (50_000, True)]) is None


def test_when_nothing_passes_the_search_steps_down() -> None:
    plan = CapacityPlan(start=25_000)
    assert next_rate(plan, [(25_000, False)]) == 12_500
    assert next_rate(plan, [(25_000, False), (12_500, False)]) == 6_250


@given(
    capacity=st.floats(min_value=1_000, max_value=2_000_000),
    trials=st.integers(min_value=1, max_value=12),
)
def test_the_rates_tried_are_new_and_the_answer_never_overstates(
    capacity: float, trials: int
) -> None:
    plan = CapacityPlan(trials=trials, attempts=1)
    path = FakePath(capacity=capacity)
    found = search(plan, path.measure, tool=OURS, size=64)
    assert len(path.asked) == len(set(path.asked)) <= trials
    # less than the loss limit lost still passes: a rate just above the capacity may
    assert found.rate < capacity / (1 - plan.loss_limit)
    assert all(0 < rate <= plan.ceiling for rate in path.asked)


# --- the search on a fake sender and listener -----------------------------------------------


def test_the_search_finds_the_listener_capacity_within_its_precision() -> None:
    plan = CapacityPlan(trials=12, attempts=1, precision=0.05)
    found = search(plan, FakePath(capacity=130_000).measure, tool=OURS, size=64)
    assert 130_000 / 1.05 <= found.rate <= 130_000
    assert found.bounded
    assert found.limit == "loss"
    best = found.best
    assert best is not None
    assert best.loss == 0.0


def test_a_slow_sender_is_the_limit_it_reports() -> None:
    plan = CapacityPlan(trials=12, attempts=1)
    found = search(plan, FakePath(capacity=1e9, sender_max=90_000).measure, tool=OURS, size=64)
    # a sender within the shortfall of the rate asked did offer it
    assert 90_000 / 1.05 <= found.rate <= 90_000 / plan.shortfall
    assert found.limit == "short"


def test_a_failing_rate_is_tried_again_best_of_n() -> None:
    plan = CapacityPlan(trials=3, attempts=2)
    path = FakePath(capacity=1e9, flaky={50_000})
    found = search(plan, path.measure, tool=OURS, size=64)
    assert path.asked == [25_000, 50_000, 50_000, 100_000]
    assert [t.verdict(plan) for t in found.trials] == [
        Verdict.PASSED,
        Verdict.LOSS,
        Verdict.PASSED,
        Verdict.PASSED,
    ]
    assert found.rate == 100_000
    assert not found.bounded  # nothing above it failed: a lower bound
    assert found.limit == "none"


def test_progress_sees_every_trial_with_its_verdict() -> None:
    seen: list[tuple[float, Verdict]] = []
    search(
        CapacityPlan(trials=2, attempts=1),
        FakePath(capacity=30_000).measure,
        tool=OURS,
        size=64,
        progress=lambda t, v: seen.append((t.rate, v)),
    )
    assert seen == [(25_000, Verdict.PASSED), (50_000, Verdict.LOSS)]


# --- kernel counters ----------------------------------------------------------------------


def test_kernel_drops_are_the_udp_counters_increase() -> None:
    before = snmp(received=1000, errors=30, rcvbuf=25)
    after = snmp(received=5000, errors=130, rcvbuf=120)
    assert KernelDrops.between(before, after) == KernelDrops(
        in_errors=100, rcvbuf_errors=95, in_datagrams=4000
    )


@pytest.mark.parametrize("text", ["", "Ip: a b\nIp: 1 2\n", "Udp: InDatagrams\nUdp: 1\n"])
def test_kernel_drops_without_udp_counters_is_a_bench_error(text: str) -> None:
    with pytest.raises(BenchError, match="Udp"):
        KernelDrops.between(text, snmp(received=1, errors=0, rcvbuf=0))


# --- iperf3 -----------------------------------------------------------------------------------

IPERF3_END = {
    "sum": {"seconds": 2.009, "packets": 249_235, "lost_packets": 97_403},
    "sum_sent": {"seconds": 2.0026, "packets": 249_235, "lost_packets": 0},
    "sum_received": {"seconds": 2.009, "packets": 249_235, "lost_packets": 97_403},
}


def test_iperf3_sent_is_the_clients_count_and_received_the_servers() -> None:
    sent, received, seconds = iperf3_trial_figures({"end": IPERF3_END}, rate=1)
    assert (sent, received, seconds) == (249_235, 249_235 - 97_403, 2.0026)


def test_iperf3_without_packet_counts_is_a_bench_error() -> None:
    end = {"sum_sent": {"seconds": 1.0}, "sum_received": {"bytes": 10}}
    with pytest.raises(BenchError, match="no packet counts"):
        iperf3_trial_figures({"end": end}, rate=5)


# --- the report ---------------------------------------------------------------------------


def capacity(tool: str, size: int, rates: dict[float, bool]) -> Capacity:
    plan = CapacityPlan()
    trials = tuple(
        trial(rate, sent=int(rate), received=int(rate) if ok else int(rate) // 2)
        for rate, ok in rates.items()
    )
    return Capacity(tool=tool, size=size, trials=trials, plan=plan)


def report(*searches: Capacity) -> CapacityReport:
    return CapacityReport(
        started="s", finished="f", plan=CapacityPlan(), searches=searches, load=(1.5, 2.0, 3.25)
    )


def test_the_targets_are_reported_met_or_missed() -> None:
    done = report(
        capacity(OURS, 64, {200_000: True, 400_000: False}),
        capacity(IPERF3, 64, {400_000: True}),
        capacity(OURS, 1200, {70_000: True, 80_000: False}),
        capacity(IPERF3, 1200, {100_000: True, 120_000: False}),
    )
    assert done.target(64) == (">= 200,000/s", True)
    assert done.ratio(1200) == pytest.approx(0.7)
    assert done.target(1200) == (">= 0.8x iperf3", False)
    rows = done.rows()
    assert [row["size B"] for row in rows] == ["64", "1200"]
    assert rows[0]["ours dgram/s"] == "200,000"
    assert rows[0]["iperf3 dgram/s"] == ">= 400,000"  # nothing above it failed
    assert rows[0]["target"].endswith("met")
    assert rows[1]["target"].endswith("missed")
    line = done.summary()
    assert "64 B: ours 200,000 dgram/s" in line
    assert "missed" in line
    assert "load average 1.50 before, 2.00 after, 3.25 peak" in line


def test_no_iperf3_figure_gives_no_ratio_and_no_verdict() -> None:
    done = report(capacity(OURS, 1200, {50_000: True}))
    assert done.ratio(1200) is None
    assert done.target(1200)[1] is None
    assert "no figure" in done.summary()


def test_the_json_carries_every_trial_and_reads_back() -> None:
    plan = CapacityPlan(trials=3, attempts=1)
    found = search(plan, FakePath(capacity=60_000).measure, tool=OURS, size=64)
    done = CapacityReport(started="s", finished="f", plan=plan, searches=(found,))
    document = json.loads(json.dumps(done.to_json()))
    assert document["kind"] == "bench-udp-capacity"
    assert document["targets"]["64"]["met"] is False
    (only,) = document["searches"]
    assert only["rate"] == found.rate == 50_000
    assert only["bits_per_second"] == 50_000 * 64 * 8
    rows = only["trials"]
    assert [row["verdict"] for row in rows] == ["pass", "pass", "loss"]
    for row in rows:
        assert row["sent"] == row["received"] + row["lost"]
        assert Trial.from_json(row) == next(t for t in found.trials if t.rate == row["rate"])
    assert len(done.trial_rows()) == 3
