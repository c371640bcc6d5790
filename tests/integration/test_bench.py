"""``lab bench --quick`` and a small ``lab sweep`` against the real lab.

Figures are checked for presence and sanity only: performance is reported
(see ``lab bench``), never asserted against wall-clock targets here.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from lab.api import Lab
from lab.bench.records import BenchReport, SweepResult
from lab.bench.report import (
    DELIVERY_PLOT,
    GOODPUT_PLOT,
    LATENCY_PLOT,
    REPORT_FILE,
    RESULT_FILE,
)
from lab.cli import main as lab_main
from lab.shaping import link_status

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_TIMEOUT = 120
BENCH_NAMES = {"iperf3-tcp", "fetch", "naive", "iperf3-udp", "udp"}


def decode_png(path: Path) -> Any:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    assert image.shape[0] > 0
    assert image.shape[1] > 0
    return image


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "headless Chromium is needed to check the HTML report (apt-get install chromium)"
        )
    return found


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,900",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False
    )


def assert_no_console_errors(result: subprocess.CompletedProcess[str]) -> None:
    bad = [
        line
        for line in result.stderr.splitlines()
        if "Uncaught" in line or "CONSOLE" in line or "Failed to load resource" in line
    ]
    assert not bad, "\n".join(bad)


# --- bench ------------------------------------------------------------------------------


def test_bench_quick_writes_every_figure(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert lab_main(["-p", lab.project, "bench", "--quick", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    report = BenchReport.from_json(data)
    assert report.quick is True
    assert len(data["runs"]) == 1
    run = data["runs"][0]
    assert run["condition"]["spec"] == "none"
    assert run["condition"]["rtt"] > 0
    measurements = {m["name"]: m for m in run["measurements"]}
    assert set(measurements) == BENCH_NAMES
    for name, m in measurements.items():
        for key in ("bits_per_second", "bytes", "seconds"):
            assert m[key] > 0, f"{name}: {key} = {m[key]!r}"
        if m["reference"] is not None:
            assert m["ratio"] is not None, name
            assert m["ratio"] > 0, name
    assert measurements["fetch"]["verified"] is True
    assert measurements["fetch"]["bytes"] == report.file_bytes
    assert measurements["naive"]["bytes"] == report.file_bytes
    assert measurements["fetch"]["target"] == 0.6  # reported with its verdict, not asserted
    assert "iperf3" in data["versions"]
    print(f"\nBENCHMARK lab-bench-quick {json.dumps(report.rows())}")


def test_bench_engine_only_quick_reports_the_engine_rows(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "engine.json"
    argv = ["-p", lab.project, "bench", "--engine-only", "--quick", "--json", str(out)]
    assert lab_main(argv) == 0
    engine = json.loads(out.read_text())["engine"]
    assert engine["kind"] == "bench-engine"
    rows = engine["throughput"]
    links = [(row["label"], row["spec"]) for row in rows]
    assert links == [("unshaped", "none"), ("nfqueue 0 ms", "delay=1us"),
                     ("nfqueue 20 ms", "delay=20ms")] * 2  # fmt: skip
    assert {row["congestion"] for row in rows[3:]} == {"cubic"}
    for row in rows:
        assert row["best"] > 0, row
        assert row["ratio"] > 0, row
        if row["spec"] != "none":
            loop = row["loop"]
            # the loop queued the transfer, and batching sent fewer verdicts than packets
            assert loop["packets"] > 1000, loop
            assert 0 < loop["verdicts"] < loop["packets"], loop
            assert loop["queue_dropped"] == 0
            assert loop["cpu_seconds"] > 0
    idle, loaded = engine["latency"]
    assert not idle["loaded"]
    assert loaded["loaded"]
    for row in (idle, loaded):
        assert row["received"] == row["sent"] > 0
        # the engine never releases a packet before its delay, even on a busy host
        assert row["added_p50"] >= 0.050 - 0.001, row
    assert link_status(lab) == []
    print(f"\nBENCHMARK lab-bench-engine-quick {json.dumps(engine)}")


# --- sweep ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_dir(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "out"
    argv = ["-p", lab.project, "sweep", "tcp-vs-udp", "--loss", "0,5", "--delay", "0",
            "--bytes", "1000000", "--out", str(out)]  # fmt: skip
    assert lab_main(argv) == 0
    return out


def test_sweep_writes_results_and_leaves_no_shaping(lab: Lab, sweep_dir: Path) -> None:
    result = SweepResult.from_json(json.loads((sweep_dir / RESULT_FILE).read_text()))
    assert [(p.delay, p.loss) for p in result.points] == [(0.0, 0.0), (0.0, 0.05)]
    unshaped, lossy = result.points
    assert unshaped.engine == "none"
    assert lossy.engine in {"netem", "nfqueue"}
    for point in result.points:
        assert point.tcp_delivered == 1.0  # TCP delivers everything
        assert point.tcp_bits_per_second > 0
        assert point.udp_bits_per_second > 0
        assert point.rtt is not None
    assert lossy.udp_delivered < 1.0  # 5 % loss on 833 datagrams: some are gone
    assert lossy.mathis(result.mss) is not None
    assert link_status(lab) == []


def test_sweep_plots_are_valid_pngs(sweep_dir: Path) -> None:
    for name in (GOODPUT_PLOT, DELIVERY_PLOT, LATENCY_PLOT):
        image = decode_png(sweep_dir / name)
        assert image.shape[1] >= 400, name


def test_sweep_report_renders_in_chromium(sweep_dir: Path, tmp_path: Path) -> None:
    page = sweep_dir / REPORT_FILE
    shot = tmp_path / "report.png"
    rendered = run_chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert_no_console_errors(rendered)
    assert shot.stat().st_size > 0
    decode_png(shot)
    dumped = run_chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert_no_console_errors(dumped)
    dom = dumped.stdout
    assert '<table id="results">' in dom
    assert dom.count('src="data:image/png;base64,') == 3  # goodput, delivery, latency
    assert "nfqueue" in dom or "netem" in dom
