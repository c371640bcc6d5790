"""``lab bench --quick`` and a small ``lab sweep`` against the real lab.

Figures are checked for presence and sanity only: performance is reported
(see ``lab bench``), never asserted against wall-clock targets here.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest

from lab.api import Lab
from lab.bench.bench_runner import ensure_bench_file
from lab.bench.records import BenchReport, SweepResult
from lab.bench.report import (
    DELIVERY_PLOT,
    GOODPUT_PLOT,
    LATENCY_PLOT,
    REPORT_FILE,
    RESULT_FILE,
)
from lab.bench.storage import DEST_PATHS
from lab.cli import main as lab_main
from lab.shaping import link_status

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_TIMEOUT = 120
BENCH_NAMES = {
    "iperf3-tcp",
    "sha256",
    "write-fsync",
    "write-fsync-behind",
    "peer",
    "fetch",
    "naive",
    "iperf3-udp",
    "udp",
}


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

RATIO_NAMES = {
    "fetch/ceiling",
    "fetch/peer",
    "fetch/network-or-hash",
    "fetch/iperf3",
    "peer/ceiling",
    "naive/iperf3",
    "udp/iperf3-udp",
}
TARGETS = {
    "disk": {"fetch/ceiling": 0.9, "fetch/peer": 1.5},
    "tmpfs": {"fetch/network-or-hash": 0.6},
}


def check_bench_json(data: dict[str, Any], *, dest: str) -> BenchReport:
    """Every row and ratio present, every figure positive, both copies verified."""
    report = BenchReport.from_json(data)
    assert len(data["runs"]) == 1
    run = data["runs"][0]
    condition = run["condition"]
    assert condition["spec"] == "none"
    assert condition["rtt"] > 0
    assert condition["dest"] == dest
    assert condition["dest_fs"]  # a volume is mounted there
    assert (condition["dest_fs"] == "tmpfs") is (dest == "tmpfs")
    assert len(condition["load_average"]) == 2
    measurements = {m["name"]: m for m in run["measurements"]}
    assert set(measurements) == BENCH_NAMES
    for name, m in measurements.items():
        for key in ("bits_per_second", "bytes", "seconds"):
            assert m[key] > 0, f"{name}: {key} = {m[key]!r}"
        assert len(m["samples"]) == 1, name
    for name in ("fetch", "peer", "naive"):
        assert measurements[name]["verified"] is True, name
    for name in ("fetch", "peer", "sha256", "write-fsync", "write-fsync-behind"):
        assert measurements[name]["bytes"] == report.file_bytes, name
    ceiling = run["ceiling"]
    assert ceiling["bound_by"] in {"iperf3-tcp", "sha256", "write-fsync", "write-fsync-behind"}
    rate = {name: m["bits_per_second"] for name, m in measurements.items()}
    disk = max(rate["write-fsync"], rate["write-fsync-behind"])
    assert ceiling["bits_per_second"] == min(rate["iperf3-tcp"], rate["sha256"], disk)
    ratios = {r["name"]: r for r in run["ratios"]}
    assert set(ratios) == RATIO_NAMES
    for name, r in ratios.items():
        assert r["value"] is not None, name
        assert r["value"] > 0, name
    # every target of this destination is reported with a verdict, never asserted
    judged = {name: r["target"] for name, r in ratios.items() if r["target"] is not None}
    assert judged == TARGETS[dest]
    assert all(isinstance(ratios[name]["met"], bool) for name in judged)
    assert "iperf3" in data["versions"]
    return report


@pytest.mark.parametrize("dest", ["disk", "tmpfs"])
def test_bench_quick_writes_every_figure(lab: Lab, tmp_path: Path, dest: str) -> None:
    out = tmp_path / "bench.json"
    # the engine's rows have their own test (--engine-only) below
    argv = ["-p", lab.project, "bench", "--quick", "--no-engine", "--dest", dest,
            "--json", str(out)]  # fmt: skip
    assert lab_main(argv) == 0
    data = json.loads(out.read_text())
    report = check_bench_json(data, dest=dest)
    assert report.quick is True
    assert "engine" not in data
    # the server's memory was probed: its 512 MiB limit keeps the 32 MiB quick file cached
    assert data["warnings"] == []
    # the idle lab's CPU, measured first: every service, in % of one core
    idle = data["idle_cpu"]
    assert set(idle["percent_of_one_core"]) == set(lab.services)
    assert all(v >= 0 for v in idle["percent_of_one_core"].values())
    assert idle["total_percent_of_one_core"] > 0
    assert idle["seconds"] >= 3.0
    assert lab.helpers("bench-peer") == []  # the peer's helpers are gone
    print(f"\nBENCHMARK lab-bench-quick-{dest} {json.dumps(report.ratio_rows())}")


@pytest.mark.parametrize("path", sorted(DEST_PATHS.values()))
def test_a_fetch_to_a_bench_dest_reads_back_identical(lab: Lab, path: str) -> None:
    """fetch's writer drops what it wrote from the page cache (write-behind): the file
    read back from the destination, not only the hash of what arrived, must match."""
    size = 48 * 2**20 + 5  # many of the writer's 2 MiB buffers, and a ragged end
    name, digest = ensure_bench_file(lab, size)
    folder = f"{path}/socketlab-readback-{uuid.uuid4().hex[:8]}"
    try:
        argv = ["socketlab", "client", "fetch", name, "--dest", folder, "--quiet", "--json"]
        fetched = lab.exec("client", argv, timeout=300).check("fetch")
        assert json.loads(fetched.stdout.strip().splitlines()[-1])["sha256"] == digest
        # Drop what the kernel may still cache for the file, then read it back.
        lab.exec("client", ["dd", f"if={folder}/{name}", "iflag=nocache", "count=0"], timeout=60)
        assert lab.file_sha256("client", f"{folder}/{name}") == digest
    finally:
        lab.exec("client", ["rm", "-rf", folder], timeout=60)


@pytest.mark.benchmark
@pytest.mark.parametrize("dest", ["disk", "tmpfs"])
def test_benchmark_bench_against_ceiling_and_peer(lab: Lab, tmp_path: Path, dest: str) -> None:
    """``make bench``: the 2 GiB unshaped bench, best of 3 (printed, never asserted)."""
    out = tmp_path / "bench.json"
    argv = ["-p", lab.project, "bench", "--condition", "none", "--repeat", "3",
            "--dest", dest, "--json", str(out)]  # fmt: skip
    assert lab_main(argv) == 0
    data = json.loads(out.read_text())
    report = BenchReport.from_json(data)
    assert report.file_bytes >= 2 * 2**30
    print(f"\nBENCHMARK lab-bench-{dest} figures {json.dumps(report.rows())}")
    print(f"BENCHMARK lab-bench-{dest} ratios {json.dumps(report.ratio_rows())}")


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


def test_bench_udp_capacity_quick_reports_both_tools_and_sizes(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    argv = ["-p", lab.project, "bench", "--udp-capacity", "--quick", "--json", str(out)]
    assert lab_main(argv) == 0
    document = json.loads(out.read_text())
    assert set(document) == {"udp_capacity"}  # only the capacity search ran
    data = document["udp_capacity"]
    assert data["kind"] == "bench-udp-capacity"
    assert data["rcvbuf"] > 0
    assert all(value >= 0 for value in data["load"])
    searches = {(found["tool"], found["size"]): found for found in data["searches"]}
    assert set(searches) == {
        (tool, size) for tool in ("socketlab", "iperf3") for size in (64, 1200)
    }
    for key, found in searches.items():
        trials = found["trials"]
        assert 1 <= len(trials) <= data["plan"]["trials"] * data["plan"]["attempts"], key
        for trial in trials:
            assert trial["rate"] > 0, key
            for figure in ("sent", "received", "seconds", "achieved"):
                assert trial[figure] > 0, (key, figure, trial)
            assert trial["sent"] == trial["received"] + trial["lost"], (key, trial)
            # the kernel counts what the receiving program read: one datagram per read, or
            # with our GSO sender and GRO listener a batch of up to 64 per read
            reads = trial["kernel"]["in_datagrams"]
            if key[0] == "socketlab" and trial["segments"] > 1:
                assert 0 < reads <= trial["received"], (key, trial)
            else:
                assert reads >= trial["received"], (key, trial)
            assert trial["kernel"]["in_errors"] >= trial["kernel"]["rcvbuf_errors"] >= 0
            if key[0] == "socketlab":
                # every datagram numbered is accounted for by the listener: arrived once,
                # a gap it saw, before its first, after its highest, or refused at the sender
                numbered = trial["sent"] + trial["send_errors"]
                unique = trial["received"] - trial["duplicates"]
                assert numbered == (
                    unique + trial["gaps"] + trial["missed_at_start"] + trial["tail"]
                ), trial
        passing = [t["rate"] for t in trials if t["verdict"] == "pass"]
        assert found["rate"] == max(passing, default=0.0), key
        assert found["bits_per_second"] == found["rate"] * key[1] * 8
    assert set(data["targets"]) == {"64", "1200"}
    assert link_status(lab) == []
    print(f"\nBENCHMARK lab-bench-udp-capacity-quick {json.dumps(data['targets'])}")


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
