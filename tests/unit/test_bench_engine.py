"""The engine bench's arithmetic and tables: best of N, ratios, CPU, latency targets, JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lab.bench.engine import (
    ENGINE_TARGET_BITS,
    EngineOptions,
    EngineReport,
    LatencyRow,
    LoopFigures,
    ThroughputRow,
)
from lab.report.watch import parse_shaper_stats

STOPPED = (
    "event=shaper_stopped queue=3 received=120000 dropped=0 duplicated=0 corrupted=0 "
    "reordered=0 released=120000 injected=0 untouchable=0 reads=120000 verdicts=15000 "
    "batches=14990 sends=14000 enobufs=0 kernel_errors=0 cpu_ms=4500 queue_dropped=2 "
    "user_dropped=1"
)


def loop_figures() -> LoopFigures:
    figures = LoopFigures.from_stats(parse_shaper_stats(STOPPED)[3])
    assert figures is not None
    return figures


def report() -> EngineReport:
    def row(label: str, spec: str, runs: tuple[float, ...], tcp: str, **extra: object) -> Any:
        return ThroughputRow(
            label=label, spec=spec, bits_per_second=runs, seconds=6, congestion=tcp, **extra
        )

    unshaped = row("unshaped", "none", (8e9, 9e9), "bbr")
    fast = row("nfqueue 0 ms", "delay=1us", (4.5e9, 2e9), "bbr", loop=loop_figures())
    slow = row("nfqueue 20 ms", "delay=20ms", (1e9,), "bbr")
    cubic = row("unshaped", "none", (20e9,), "cubic")
    cubic_fast = row("nfqueue 0 ms", "delay=1us", (10e9,), "cubic")
    idle = LatencyRow(label="50 ms", delay=0.05, baseline=0.0001, p50=0.0515, p99=0.0549,
                      sent=500, received=500, baseline_p99=0.0004)  # fmt: skip
    late = LatencyRow(label="50 ms loaded", delay=0.05, baseline=0.0001, p50=0.0519, p99=0.0601,
                      sent=500, received=499, loaded=True)  # fmt: skip
    return EngineReport(
        options=EngineOptions(repeats=2),
        throughput=(unshaped, fast, slow, cubic, cubic_fast),
        latency=(idle, late),
        load_before=(3.0, 2.0, 1.0),
        load_after=(4.0, 2.5, 1.2),
    )


def test_loop_figures_come_from_the_loops_stopped_line() -> None:
    figures = loop_figures()
    assert (figures.packets, figures.verdicts, figures.batches) == (120000, 15000, 14990)
    assert figures.cpu_seconds == pytest.approx(4.5)
    assert (figures.queue_dropped, figures.user_dropped) == (2, 1)
    assert figures.packets_per_verdict == pytest.approx(8.0)


def test_an_older_loops_line_gives_no_figures() -> None:
    older = "event=shaper_stopped queue=3 received=10 dropped=0 released=10"
    assert LoopFigures.from_stats(parse_shaper_stats(older)[3]) is None


def test_best_of_n_ratio_to_unshaped_and_cpu_share() -> None:
    result = report()
    unshaped, fast, slow, _, cubic_fast = result.throughput
    assert fast.best == 4.5e9
    assert result.ratio(fast) == pytest.approx(0.5)
    assert result.ratio(unshaped) == pytest.approx(1.0)
    # each against the unshaped run with the same congestion control
    assert result.ratio(cubic_fast) == pytest.approx(0.5)
    # 4.5 s of CPU over two 6-second runs
    assert fast.cpu_share == pytest.approx(4.5 / 12)
    assert slow.cpu_share is None


def test_throughput_table_reports_targets_without_enforcing_them() -> None:
    rows = report().throughput_rows()
    assert [(row["link"], row["TCP"]) for row in rows] == [
        ("unshaped", "bbr"), ("nfqueue 0 ms", "bbr"), ("nfqueue 20 ms", "bbr"),
        ("unshaped", "cubic"), ("nfqueue 0 ms", "cubic"),
    ]  # fmt: skip
    assert rows[0]["target"] == "-"
    assert rows[1] | {} == {
        "link": "nfqueue 0 ms",
        "TCP": "bbr",
        "Gbit/s": "4.50",
        "runs": "4.50 2.00",
        "ratio": "0.50",
        "target": f">={ENGINE_TARGET_BITS / 1e9:g} met",
        "loop CPU": "38%",
        "pkt/verdict": "8.0",
        "queue drops": "2 full, 1 socket",
    }
    assert rows[2]["target"].endswith("missed")
    assert rows[2]["queue drops"] == "-"


def test_latency_targets_are_p50_within_2ms_and_p99_within_5ms() -> None:
    idle, late = report().latency
    assert idle.added_p50 == pytest.approx(0.0514)
    assert idle.p50_met is True
    assert idle.p99_met is True  # 54.8 ms <= 55 ms
    assert late.p50_met is True  # 51.8 ms: within 2 ms
    assert late.p99_met is False  # 60.0 ms
    rows = report().latency_rows()
    assert rows[0]["added p50"] == "51.40ms"
    assert rows[0]["unshaped p99"] == "0.40ms"
    assert rows[1]["unshaped p99"] == "-"
    assert rows[1]["p99 target"] == "+5ms missed"
    assert rows[1]["replies"] == "499/500"


def test_no_replies_leaves_the_latency_targets_undecided() -> None:
    row = LatencyRow(label="x", delay=0.05, baseline=None, p50=None, p99=None, sent=5, received=0)
    assert (row.added_p50, row.p50_met, row.p99_met) == (None, None, None)


def test_json_carries_the_derived_figures_and_the_load() -> None:
    data = json.loads(json.dumps(report().to_json()))
    assert data["kind"] == "bench-engine"
    assert data["load_before"] == [3.0, 2.0, 1.0]
    fast = data["throughput"][1]
    assert fast["best"] == 4.5e9
    assert fast["ratio"] == pytest.approx(0.5)
    assert fast["loop"]["verdicts"] == 15000
    assert data["throughput"][0]["target"] is None
    assert data["latency"][1]["p99_met"] is False
    assert "load average 3.0 -> 4.0" in report().title
