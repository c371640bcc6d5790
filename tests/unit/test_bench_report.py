"""Result records, their JSON, and the sweep report assembled from fixed JSON."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from lab.bench.errors import BenchError
from lab.bench.records import (
    BenchReport,
    BenchRun,
    Condition,
    Measurement,
    SweepResult,
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
    assert data.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def test_plots_are_valid_pngs() -> None:
    plots = sweep_plots(SweepResult.from_json(SWEEP_JSON))
    assert set(plots) == {GOODPUT_PLOT, DELIVERY_PLOT}
    for data in plots.values():
        image = _decode_png(data)
        assert image.shape[0] > 100
        assert image.shape[1] > 100


def test_report_html_from_fixed_json() -> None:
    result = SweepResult.from_json(SWEEP_JSON)
    page = render_html(result, sweep_plots(result))
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


def measurement(name: str, bps: float, reference: str | None = None, **extra: Any) -> Measurement:
    transport = "udp" if "udp" in name else "tcp"
    return Measurement(
        name=name,
        label=name,
        transport=transport,
        bytes=16_000_000,
        seconds=1.0,
        bits_per_second=bps,
        reference=reference,
        **extra,
    )


BENCH = BenchReport(
    started="2026-11-21T10:00:00+00:00",
    finished="2026-11-21T10:01:00+00:00",
    quick=True,
    file_bytes=16_000_000,
    versions={"iperf3": "iperf 3.12"},
    runs=(
        BenchRun(
            condition=Condition(spec="none", engine="none", rtt=0.0001),
            measurements=(
                measurement("iperf3-tcp", 10e9),
                measurement("fetch", 5e9, "iperf3-tcp", verified=True),
                measurement("naive", 0.5e9, "iperf3-tcp", verified=True),
                measurement("iperf3-udp", 100e6, loss=0.01),
                measurement("udp", 95e6, "iperf3-udp", loss=0.02),
            ),
        ),
        BenchRun(
            condition=Condition(spec="delay=20ms loss=1%", engine="nfqueue", rtt=0.0202),
            measurements=(
                measurement("iperf3-tcp", 100e6),
                measurement("fetch", 95e6, "iperf3-tcp", verified=True),
            ),
        ),
    ),
)


def test_bench_ratios_and_targets() -> None:
    data = BENCH.to_json()
    first = {m["name"]: m for m in data["runs"][0]["measurements"]}
    assert first["fetch"]["ratio"] == pytest.approx(0.5)
    assert first["fetch"]["target"] == 0.6
    assert first["fetch"]["target_met"] is False
    assert first["naive"]["ratio"] == pytest.approx(0.05)
    assert first["udp"]["ratio"] == pytest.approx(0.95)
    assert first["iperf3-tcp"]["ratio"] is None
    shaped = {m["name"]: m for m in data["runs"][1]["measurements"]}
    assert shaped["fetch"]["target"] == 0.9
    assert shaped["fetch"]["target_met"] is True


def test_bench_json_round_trip() -> None:
    again = BenchReport.from_json(json.loads(json.dumps(BENCH.to_json())))
    assert again == BENCH


def test_bench_rows() -> None:
    rows = BENCH.rows()
    assert len(rows) == 7
    fetch = next(r for r in rows if r["measurement"] == "fetch")
    assert fetch["ratio"] == "0.50"
    assert fetch["target"] == ">=0.6 missed"
    assert fetch["condition"] == "none"
    assert fetch["Mbit/s"] == "5000.0"


def test_bench_run_title() -> None:
    assert BENCH.runs[1].title == "link: delay=20ms loss=1% (engine nfqueue, RTT 20.20 ms)"


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


def test_one_algorithm_gets_no_overlay_sentence(tmp_path: Path) -> None:
    result = SweepResult.from_json(with_algorithms("cubic"))
    write_sweep(result, tmp_path)
    page = (tmp_path / REPORT_FILE).read_text()
    assert "every loss as congestion" not in page
    # a sweep saved before latency was measured still renders, without that plot
    old = SweepResult.from_json(SWEEP_JSON)
    assert LATENCY_PLOT not in sweep_plots(old)
