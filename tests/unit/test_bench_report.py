"""Result records, their JSON, and the sweep report assembled from fixed JSON."""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from lab.bench.errors import BenchError
from lab.bench.idle import CpuSample, idle_cpu
from lab.bench.records import (
    BenchReport,
    BenchRun,
    Condition,
    Measurement,
    SweepResult,
    best_of,
)
from lab.bench.report import (
    DELIVERY_PLOT,
    GOODPUT_PLOT,
    LATENCY_PLOT,
    REPORT_FILE,
    RESULT_FILE,
    render_html,
    sweep_plots,
    write_sweep,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def point(delay: float, loss: float, tcp: float, udp_delivered: float) -> dict[str, Any]:
    return {
        "delay": delay,
        "loss": loss,
        "engine": "nfqueue" if delay or loss else "none",
        "rtt": 0.0002 + delay,
        "tcp_bits_per_second": tcp,
        "tcp_delivered": 1.0,
        "udp_bits_per_second": 19e6 * udp_delivered,
        "udp_delivered": udp_delivered,
        "udp_kernel_drops": 0,
        "seconds": 3.5,
    }


SWEEP_JSON: dict[str, Any] = {
    "kind": "sweep",
    "scenario": "tcp-vs-udp",
    "link": "client -> udp-listener",
    "started": "2026-11-21T10:00:00+00:00",
    "finished": "2026-11-21T10:05:00+00:00",
    "bytes_per_point": 2_000_000,
    "datagram_size": 1200,
    "datagram_rate": 2000.0,
    "mss": 1448,
    "versions": {"lab": "0.1.0", "python": "3.11.2", "matplotlib": "3.9.0"},
    "points": [
        point(0.0, 0.0, 900e6, 1.0),
        point(0.0, 0.05, 60e6, 0.95),
        point(0.02, 0.0, 300e6, 1.0),
        point(0.02, 0.05, 3e6, 0.949),
    ],
}


def test_sweep_json_round_trip() -> None:
    result = SweepResult.from_json(SWEEP_JSON)
    assert len(result.points) == 4
    again = SweepResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    assert result.engines == ["nfqueue"]
    assert result.delays == [0.0, 0.02]


def test_sweep_json_carries_the_mathis_bound() -> None:
    data = SweepResult.from_json(SWEEP_JSON).to_json()
    bounds = {(p["delay"], p["loss"]): p["mathis_bits_per_second"] for p in data["points"]}
    assert bounds[(0.0, 0.0)] is None
    assert bounds[(0.02, 0.05)] == pytest.approx(1448 * 8 / 0.0202 * 1.2247 / 0.05**0.5, rel=1e-3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({"kind": "bench"}, "not a lab sweep result", id="wrong-kind"),
        pytest.param([], "not a lab sweep result", id="not-an-object"),
        pytest.param(
            {**SWEEP_JSON, "points": [{"delay": 0}]},
            "points[0]: missing engine, loss, rtt",
            id="point-missing-keys",
        ),
        pytest.param(
            {k: v for k, v in SWEEP_JSON.items() if k != "mss"},
            "sweep result: missing mss",
            id="missing-mss",
        ),
    ],
)
def test_sweep_json_errors(data: Any, message: str) -> None:
    with pytest.raises(BenchError) as caught:
        SweepResult.from_json(data)
    assert message in str(caught.value)


def test_sweep_rows() -> None:
    rows = SweepResult.from_json(SWEEP_JSON).rows()
    assert [(r["delay ms"], r["loss %"]) for r in rows] == [
        ("0", "0"),
        ("0", "5"),
        ("20", "0"),
        ("20", "5"),
    ]
    assert rows[0]["Mathis Mbit/s"] == "-"
    assert rows[3]["UDP delivered %"] == "94.9"


def _decode_png(data: bytes) -> Any:
    # Imported here, not at the top: every xdist worker imports every test module,
    # and matplotlib costs each of them ~0.2 s although one of them draws the plots.
    import matplotlib.image  # noqa: PLC0415

    assert data.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(data), format="png")


@functools.cache
def fixed_sweep_plots() -> dict[str, bytes]:
    """The fixed sweep's plots, drawn once for the tests that look at them (each costs
    about 0.2 s of matplotlib)."""
    return sweep_plots(SweepResult.from_json(SWEEP_JSON))


def test_plots_are_valid_pngs() -> None:
    plots = fixed_sweep_plots()
    assert set(plots) == {GOODPUT_PLOT, DELIVERY_PLOT}
    for data in plots.values():
        image = _decode_png(data)
        assert image.shape[0] > 100
        assert image.shape[1] > 100


def test_report_html_from_fixed_json() -> None:
    result = SweepResult.from_json(SWEEP_JSON)
    page = render_html(result, fixed_sweep_plots())
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page  # nothing to run, nothing to fail in a browser
    # the table: header and one row per point
    assert '<table id="results">' in page
    assert "<th>TCP Mbit/s</th>" in page
    assert "<th>Mathis Mbit/s</th>" in page
    assert page.count("<tr><td>") == 4
    # conditions, engine, versions
    for text in ("client -&gt; udp-listener", "nfqueue", "2,000,000 bytes", "3.11.2", "1448"):
        assert text in page
    # the images are embedded, and decode
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 2
    for data in embedded:
        _decode_png(base64.b64decode(data))


def test_report_escapes_what_it_shows() -> None:
    data = {**SWEEP_JSON, "scenario": "<b>x</b>", "versions": {"lab": "<script>"}}
    page = render_html(SweepResult.from_json(data), {})
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>" not in page


def test_write_sweep(tmp_path: Path) -> None:
    written = write_sweep(SweepResult.from_json(SWEEP_JSON), tmp_path / "out")
    names = {path.name for path in written}
    assert names == {RESULT_FILE, GOODPUT_PLOT, DELIVERY_PLOT, REPORT_FILE}
    saved = json.loads((tmp_path / "out" / RESULT_FILE).read_text())
    assert SweepResult.from_json(saved) == SweepResult.from_json(SWEEP_JSON)


# --- bench records --------------------------------------------------------------------


def measurement(name: str, bps: float, **extra: Any) -> Measurement:
    transport = "udp" if "udp" in name else "local" if name in {"sha256", "write-fsync"} else "tcp"
    return Measurement(
        name=name,
        label=name,
        transport=transport,
        bytes=16_000_000,
        seconds=1.0,
        bits_per_second=bps,
        **extra,
    )


BENCH = BenchReport(
    started="2026-11-21T10:00:00+00:00",
    finished="2026-11-21T10:01:00+00:00",
    quick=True,
    file_bytes=16_000_000,
    repeat=2,
    versions={"iperf3": "iperf 3.12"},
    runs=(
        BenchRun(
            condition=Condition(
                spec="none",
                engine="none",
                rtt=0.0001,
                dest="disk",
                dest_path="/var/tmp",
                dest_fs="ext4",
                load_average=(1.5, 2.25),
            ),
            measurements=(
                measurement("iperf3-tcp", 10e9, samples=(9e9, 10e9)),
                measurement("sha256", 12e9, samples=(12e9, 11e9)),
                measurement("write-fsync", 4e9, samples=(4e9, 3e9)),
                measurement("write-fsync-behind", 3.5e9, samples=(3.5e9, 3.4e9)),
                measurement("peer", 2e9, verified=True, samples=(2e9, 1.9e9)),
                measurement("fetch", 3.8e9, verified=True, samples=(3.7e9, 3.8e9)),
                measurement("naive", 0.5e9, verified=True),
                measurement("iperf3-udp", 100e6, loss=0.01),
                measurement("udp", 95e6, loss=0.02),
            ),
        ),
        BenchRun(
            condition=Condition(spec="delay=20ms loss=1%", engine="nfqueue", rtt=0.0202),
            measurements=(
                measurement("iperf3-tcp", 100e6),
                measurement("sha256", 12e9),
                measurement("write-fsync", 4e9),
                measurement("peer", 90e6, verified=True),
                measurement("fetch", 95e6, verified=True),
            ),
        ),
    ),
)


def test_bench_json_has_the_ceiling_and_every_ratio_with_its_verdict() -> None:
    data = json.loads(json.dumps(BENCH.to_json()))
    first = data["runs"][0]
    assert first["ceiling"] == {"bits_per_second": 4e9, "bound_by": "write-fsync"}
    found = {r["name"]: r for r in first["ratios"]}
    assert found["fetch/ceiling"]["value"] == pytest.approx(0.95)
    assert (found["fetch/ceiling"]["target"], found["fetch/ceiling"]["met"]) == (0.9, True)
    assert found["fetch/peer"]["value"] == pytest.approx(1.9)
    assert (found["fetch/peer"]["target"], found["fetch/peer"]["met"]) == (1.5, True)
    assert found["fetch/network-or-hash"]["value"] == pytest.approx(0.38)
    assert found["fetch/network-or-hash"]["target"] is None  # a tmpfs target
    assert found["naive/iperf3"]["value"] == pytest.approx(0.05)
    assert found["udp/iperf3-udp"]["value"] == pytest.approx(0.95)
    shaped = data["runs"][1]
    assert shaped["ceiling"]["bound_by"] == "iperf3-tcp"
    found = {r["name"]: r for r in shaped["ratios"]}
    assert found["fetch/ceiling"]["met"] is True
    assert found["fetch/peer"]["met"] is None  # no peer target on a shaped link
    measured = {m["name"]: m for m in first["measurements"]}
    assert measured["fetch"]["samples"] == [3.7e9, 3.8e9]
    assert first["condition"]["load_average"] == [1.5, 2.25]
    assert data["repeat"] == 2


def test_bench_json_round_trip() -> None:
    again = BenchReport.from_json(json.loads(json.dumps(BENCH.to_json())))
    assert again == BENCH


def test_bench_warnings_round_trip_and_are_checked() -> None:
    warned = dataclasses.replace(BENCH, warnings=("the server may read from its disk",))
    data = json.loads(json.dumps(warned.to_json()))
    assert data["warnings"] == ["the server may read from its disk"]
    assert BenchReport.from_json(data) == warned
    del data["warnings"]  # a result saved before warnings existed
    assert BenchReport.from_json(data).warnings == ()
    with pytest.raises(BenchError, match="warnings: expected a list of strings"):
        BenchReport.from_json(data | {"warnings": "not a list"})


def test_bench_rows_hold_every_figure_and_the_ceiling() -> None:
    rows = BENCH.rows()
    assert len(rows) == 9 + 1 + 5 + 1  # measurements and a ceiling row per run
    fetch = next(r for r in rows if r["measurement"] == "fetch")
    assert fetch["Mbit/s"] == "3800.0"
    assert fetch["tries Mbit/s"] == "3700/3800"
    assert fetch["intact"] == "yes"
    ceilings = [r for r in rows if r["measurement"].startswith("ceiling")]
    assert [r["Mbit/s"] for r in ceilings] == ["4000.0", "100.0"]
    assert "write-fsync" in ceilings[0]["measurement"]


def test_bench_ratio_rows() -> None:
    rows = BENCH.ratio_rows()
    first = next(r for r in rows if r["ratio"] == "fetch / ceiling")
    assert first == {
        "condition": "none",
        "dest": "disk",
        "ratio": "fetch / ceiling",
        "value": "0.95",
        "target": ">=0.9",
        "verdict": "met",
    }
    naive = next(r for r in rows if r["ratio"] == "naive / iperf3")
    assert (naive["target"], naive["verdict"]) == ("-", "-")


def test_a_run_without_its_limits_has_no_ceiling() -> None:
    run = BenchRun(
        condition=Condition(spec="none", engine="none"),
        measurements=(measurement("fetch", 1e9), measurement("iperf3-tcp", 2e9)),
    )
    assert run.ceiling() is None
    assert not any(r["measurement"].startswith("ceiling") for r in run.rows())
    assert {r.name: r.value for r in run.ratios()}["fetch/ceiling"] is None


def test_bench_run_title() -> None:
    assert BENCH.runs[0].title == (
        "link: none (engine none, RTT 0.10 ms), dest disk (/var/tmp, ext4), load average 1.50/2.25"
    )
    assert BENCH.runs[1].title == (
        "link: delay=20ms loss=1% (engine nfqueue, RTT 20.20 ms), dest disk, load average -"
    )


def test_best_of_keeps_the_fastest_try_and_every_sample() -> None:
    tries = [
        measurement("fetch", 2e9, verified=True),
        measurement("fetch", 3e9, verified=True),
        measurement("fetch", 1e9, verified=True),
    ]
    best = best_of(tries)
    assert best.bits_per_second == 3e9
    assert best.samples == (2e9, 3e9, 1e9)
    assert best.verified is True


def test_best_of_one_corrupt_try_marks_the_figure() -> None:
    tries = [measurement("peer", 3e9, verified=True), measurement("peer", 1e9, verified=False)]
    assert best_of(tries).verified is False
    assert best_of([measurement("sha256", 1e9)]).verified is None


def test_best_of_refuses_nothing_and_mixtures() -> None:
    with pytest.raises(BenchError, match="at least one"):
        best_of([])
    with pytest.raises(BenchError, match="mixes"):
        best_of([measurement("fetch", 1.0), measurement("peer", 1.0)])


# 4 idle services over 5 s: 50 + 25 + 0 + 25 ms of CPU -> 1, 0.5, 0 and 0.5 % of one core.
IDLE = idle_cpu(
    CpuSample(at=10.0, usage_ns={"server": 0, "udp-listener": 7, "client": 0, "rss-poller": 0}),
    CpuSample(
        at=15.0,
        usage_ns={
            "server": 50_000_000,
            "udp-listener": 7,
            "client": 25_000_000,
            "rss-poller": 25_000_000,
        },
    ),
)


def test_the_idle_lab_is_the_first_table_of_a_bench_with_its_target() -> None:
    report = dataclasses.replace(BENCH, idle_cpu=IDLE)
    assert report.idle_cpu_rows() == [
        {"service": "server", "idle CPU": "1.00 %", "target": "-", "verdict": "-"},
        {"service": "udp-listener", "idle CPU": "0.00 %", "target": "-", "verdict": "-"},
        {"service": "client", "idle CPU": "0.50 %", "target": "-", "verdict": "-"},
        {"service": "rss-poller", "idle CPU": "0.50 %", "target": "-", "verdict": "-"},
        {"service": "lab (total)", "idle CPU": "2.00 %", "target": "<=2 %", "verdict": "met"},
    ]
    busy = dataclasses.replace(IDLE, per_service={**IDLE.per_service, "server": 1.01})  # 2.01 %
    assert dataclasses.replace(BENCH, idle_cpu=busy).idle_cpu_rows()[-1]["verdict"] == "missed"
    assert BENCH.idle_cpu_rows() == []  # not measured (--engine-only, or idle_seconds 0)


def test_the_idle_lab_in_the_json_and_back() -> None:
    report = dataclasses.replace(BENCH, idle_cpu=IDLE)
    data = json.loads(json.dumps(report.to_json()))
    assert data["idle_cpu"]["seconds"] == 5.0
    assert data["idle_cpu"]["total_percent_of_one_core"] == 2.0
    assert data["idle_cpu"]["percent_of_one_core"]["server"] == 1.0
    again = BenchReport.from_json(data)
    assert again.idle_cpu is not None
    assert again.idle_cpu.total == pytest.approx(2.0)
    assert again.idle_cpu.per_service == pytest.approx(IDLE.per_service)
    assert BENCH.to_json()["idle_cpu"] is None
    assert BenchReport.from_json(BENCH.to_json()).idle_cpu is None
    with pytest.raises(BenchError, match="idle_cpu"):
        BenchReport.from_json(data | {"idle_cpu": {"seconds": 5.0}})


def test_bench_json_errors() -> None:
    with pytest.raises(BenchError, match="not a lab bench result"):
        BenchReport.from_json({"kind": "sweep"})
    broken = BENCH.to_json()
    del broken["runs"][0]["measurements"][1]["bits_per_second"]
    with pytest.raises(BenchError, match=r"runs\[0\]\.measurements\[1\]: missing bits_per_second"):
        BenchReport.from_json(broken)


def with_algorithms(*algorithms: str) -> dict[str, object]:
    points = []
    for algorithm in algorithms:
        for raw in SWEEP_JSON["points"]:
            slow = 5.0 if algorithm == "bbr" else 1.0
            points.append(
                raw
                | {
                    "tcp_bits_per_second": raw["tcp_bits_per_second"] * slow,
                    "congestion": algorithm,
                    "congestion_ends": {"client": algorithm, "udp-listener": algorithm},
                    "tcp_latency_p50_ms": 50.0,
                    "tcp_latency_p99_ms": 400.0,
                    "udp_latency_p50_ms": 20.0,
                    "udp_latency_p99_ms": 25.0,
                    "udp_offered_bits_per_second": 20e6,
                    "meaning": f"TCP ({algorithm}) sent as fast as it could.",
                }
            )
    return SWEEP_JSON | {"points": points}


def test_a_cubic_vs_bbr_sweep_overlays_both_with_one_sentence(tmp_path: Path) -> None:
    result = SweepResult.from_json(with_algorithms("cubic", "bbr"))
    assert result.algorithms == ["cubic", "bbr"]
    assert SweepResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    rows = result.rows()
    assert [r["TCP cc"] for r in rows] == ["cubic"] * 4 + ["bbr"] * 4
    assert rows[3]["TCP p50/p99 ms"] == "50.0/400.0"
    paths = write_sweep(result, tmp_path)
    names = {path.name for path in paths}
    assert {GOODPUT_PLOT, DELIVERY_PLOT, LATENCY_PLOT} <= names
    page = (tmp_path / REPORT_FILE).read_text()
    assert "cubic treats every loss as congestion and halves the window" in page
    assert "bbr paces at its estimate of the bottleneck" in page
    assert "TCP congestion control</dt><dd>cubic, bbr" in page
    assert "UDP offered (paced)</dt><dd>20 Mbit/s" in page
    assert "TCP (bbr) sent as fast as it could." in page


def test_one_algorithm_gets_no_overlay_sentence() -> None:
    page = render_html(SweepResult.from_json(with_algorithms("cubic")), {})
    assert "every loss as congestion" not in page
    # a sweep saved before latency was measured still renders, without that plot
    assert LATENCY_PLOT not in fixed_sweep_plots()
