"""lab.bench's I/O side against the fake lab: tool output parsing (tool_output),
readiness (lab_state), the destination (storage), the client's SHA-256 and write+fsync
probes (client_probes, run for real on the host), the peer's helpers (peer), and
best-of-N round-robin (bench_runner)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.bench import bench_runner, client_probes, storage
from lab.bench.bench_runner import BenchOptions, run_steps
from lab.bench.ceiling import DESTS
from lab.bench.client_probes import sha256_rate, write_fsync_rate
from lab.bench.errors import BenchError
from lab.bench.lab_state import require_services
from lab.bench.peer import PEER_ROLE, peer, peer_receive_argv, peer_send_argv
from lab.bench.records import Measurement
from lab.bench.storage import DATA_ROOT, DEST_PATHS, Dest, check_dest, server_cache_warning
from lab.bench.tool_output import last_json, parse_iperf3_json
from lab.interface import ExecResult
from lab.shaping.spec import LinkSpec
from socketlab import files

IPERF_OK = {
    "start": {"version": "iperf 3.12"},
    "end": {"sum_received": {"bytes": 1000, "seconds": 1.0, "bits_per_second": 8000.0}},
}


def test_parse_iperf3_json_ok() -> None:
    report = parse_iperf3_json(json.dumps(IPERF_OK))
    assert report["end"]["sum_received"]["bits_per_second"] == 8000.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("iperf3: error", "iperf3 printed no JSON", id="not-json"),
        pytest.param("[1]", "not an object", id="array"),
        pytest.param(
            json.dumps({"error": "unable to connect to server: Connection refused"}),
            "iperf3: unable to connect to server",
            id="iperf3-error",
        ),
        pytest.param(json.dumps({"end": {}}), "no end.sum_received", id="no-summary"),
    ],
)
def test_parse_iperf3_json_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        parse_iperf3_json(text)


def test_last_json_takes_the_final_object() -> None:
    text = 'progress\n{"a": 1}\nnot json {\n{"command": "fetch", "ok": true}\n'
    assert last_json(text, what="fetch") == {"command": "fetch", "ok": True}


def test_last_json_skips_broken_lines() -> None:
    assert last_json('{"a": 1}\n{broken\n', what="x") == {"a": 1}


def test_last_json_without_any() -> None:
    with pytest.raises(BenchError, match="fetch printed no JSON result"):
        last_json("Traceback ...\n", what="fetch")


def test_require_services_ok(fake_lab: Any) -> None:
    require_services(fake_lab, ("server", "client"))


def test_require_services_names_what_is_missing(fake_lab: Any) -> None:
    fake_lab.health["server"] = "starting"
    fake_lab.states["client"] = "exited"
    with pytest.raises(
        BenchError, match=r"\(server, client, nobody not running and healthy\).*lab -p fake up"
    ):
        require_services(fake_lab, ("server", "client", "udp-listener", "nobody"))


def test_bench_options_presets() -> None:
    quick, full = BenchOptions.short(), BenchOptions.full()
    assert quick.quick is True
    assert [c.describe() for c in quick.conditions] == ["none"]
    assert [c.describe() for c in full.conditions] == ["none", "delay=20ms loss=1%"]
    assert quick.file_bytes < full.file_bytes
    assert full.file_bytes >= 2 * 2**30  # the issue: at least 2 GiB at 28 Gbit/s
    assert full.naive_bytes < full.file_bytes  # the recv(1024) loop gets a smaller file
    assert (quick.dest, full.dest, full.repeat) == ("disk", "disk", 1)


def test_shaped_links_move_the_smaller_file() -> None:
    full = BenchOptions.full()
    unshaped, shaped = full.conditions
    assert bench_runner.bench_sizes(full, unshaped) == (2 * 2**30, 128 * 2**20)
    # cubic at 20 ms / 1 % loss moves a few Mbit/s: 32 MiB, and the naive loop no more
    assert bench_runner.bench_sizes(full, shaped) == (32 * 2**20, 32 * 2**20)
    small = BenchOptions.short()  # --file-size below shaped_bytes: that size everywhere
    small = dataclasses.replace(small, file_bytes=4 * 2**20, naive_bytes=2 * 2**20)
    assert bench_runner.bench_sizes(small, shaped) == (4 * 2**20, 2 * 2**20)
    assert bench_runner.bench_sizes(small, LinkSpec()) == (4 * 2**20, 2 * 2**20)


def test_every_destination_has_a_path_in_the_client() -> None:
    assert set(DEST_PATHS) == set(DESTS)


# --- the probes, run on this host as they run in the client ---------------------------------


def run_probe(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True
    )
    return last_json(done.stdout, what="probe")


def test_sha_probe_hashes_the_size_asked_for() -> None:
    report = run_probe(client_probes._SHA_PROBE, str(3 * 2**20 + 5))
    assert report["bytes"] == 3 * 2**20 + 5
    assert report["seconds"] > 0
    assert 0 < report["cpu_seconds"] <= report["seconds"] * 1.05


@pytest.mark.parametrize("mode", ["plain", "behind"])
def test_write_probe_writes_fsyncs_and_removes_its_file(tmp_path: Path, mode: str) -> None:
    target = tmp_path / "probe.bin"
    report = run_probe(client_probes._WRITE_PROBE, str(9 * 2**20 + 7), str(target), mode, "4096")
    assert report["bytes"] == 9 * 2**20 + 7
    assert report["seconds"] > 0
    assert not target.exists()


def test_the_write_behind_probe_does_what_fetchs_writer_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe and fetch's writer ask the kernel for the same ranges, with the same
    flags, at the same points, so the disk figure is the writer's own."""
    chunk = files.CHUNK_SIZE
    size = 2 * chunk + 2**20 + 7
    calls: list[tuple[str, int, int, int]] = []

    def sync(fd: int, offset: int, length: int, flags: int) -> None:
        calls.append(("sync", offset, length, flags))

    def fadvise(fd: int, offset: int, length: int, what: int) -> None:
        calls.append(("fadvise", offset, length, what))

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    monkeypatch.setattr(files, "sync_file_range", lambda: sync)
    target = str(tmp_path / "probe.bin")
    monkeypatch.setattr(sys, "argv", ["probe", str(size), target, "behind", str(chunk)])
    exec(compile(client_probes._WRITE_PROBE, "probe", "exec"), {"__name__": "__main__"})  # noqa: S102
    assert json.loads(capsys.readouterr().out)["bytes"] == size
    probe, calls[:] = list(calls), []

    download = files.PartialDownload(tmp_path, "f.bin", writer_depth=2, write_behind=True)
    download.open(offset=0)
    source = io.BytesIO(bytes(size))
    while download.offset < size:
        download.receive(source.readinto, size - download.offset)
    download.close()
    assert calls == probe
    assert [c[1:] for c in probe if c[0] == "sync"] == [
        (0, chunk, 2),
        (chunk, chunk, 2),
        (0, chunk, 7),
        (2 * chunk, size - 2 * chunk, 2),
        (chunk, chunk, 7),
    ]


def test_the_write_probe_on_an_older_client_image_says_to_rebuild_it(tmp_path: Path) -> None:
    old = tmp_path / "old-image" / "socketlab"  # a socketlab without write_behind
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("")
    (old / "files.py").write_text("def _write_behind(*args): pass\n")
    argv = [str(9 * 2**20), str(tmp_path / "probe.bin"), "behind", "4096"]
    done = subprocess.run(
        [sys.executable, "-c", client_probes._WRITE_PROBE, *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(old.parent)},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "the client's image predates this controller (no socketlab.files.write_behind): "
        "run lab down, then lab up, to rebuild it"
    ]
    assert not (tmp_path / "probe.bin").exists()


def test_write_probe_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "probe.bin"
    target.write_bytes(b"keep")
    with pytest.raises(subprocess.CalledProcessError):
        run_probe(client_probes._WRITE_PROBE, "10", str(target), "plain", "4096")
    assert target.read_bytes() == b"keep"


def test_dest_probe_finds_the_mount_of_a_mount_point(tmp_path: Path) -> None:
    root = run_probe(storage._DEST_PROBE, "/")
    assert root["fs"]  # / is always a mount point
    assert root["free"] > 0
    plain = run_probe(storage._DEST_PROBE, str(tmp_path))
    assert plain["writable"] is True
    mount_points = {
        line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
    }
    if str(tmp_path) not in mount_points:
        assert plain["fs"] == ""


# --- the destination ---------------------------------------------------------------------


def dest_answer(info: dict[str, Any]) -> Any:
    def answer(lab: Any, service: str, argv: list[str]) -> ExecResult:
        assert service == "client"
        assert argv[:2] == ["python3", "-c"]
        return ExecResult(exit_code=0, stdout=json.dumps(info) + "\n", stderr="")

    return answer


def test_check_dest_reports_the_volume(fake_lab: Any) -> None:
    fake_lab.commands = dest_answer({"fs": "tmpfs", "free": 6 * 2**30, "writable": True})
    assert check_dest(fake_lab, "tmpfs", size=2 * 2**30) == Dest(
        name="tmpfs", path="/mnt/tmpfs", fs="tmpfs"
    )
    assert fake_lab.execs[0][1][-1] == "/mnt/tmpfs"


@pytest.mark.parametrize(
    ("name", "info", "message"),
    [
        pytest.param("floppy", {}, "no bench destination 'floppy'", id="unknown"),
        pytest.param(
            "tmpfs",
            {"fs": "", "free": 1 << 40, "writable": True},
            r"no volume at /mnt/tmpfs .*older docker-compose.yml.*lab -p fake down",
            id="not-mounted",
        ),
        pytest.param(
            "disk", {"fs": "ext4", "free": 1 << 40, "writable": False}, "cannot write", id="ro"
        ),
        pytest.param(
            "tmpfs",
            {"fs": "tmpfs", "free": 2**30, "writable": True},
            r"has 1024 MiB free; the bench file needs 2112 MiB: choose a smaller --file-size",
            id="too-small",
        ),
        pytest.param(
            "tmpfs",
            {"fs": "tmpfs", "free": 6 * 2**30, "writable": True, "memory_limit": 2**30},
            r"charged to the client's memory limit of 1024 MiB; a 2048 MiB file needs 2432 MiB: "
            r"start the lab with SOCKETLAB_CLIENT_MEM_LIMIT=3g",
            id="tmpfs-over-the-memory-limit",
        ),
    ],
)
def test_check_dest_refuses_what_cannot_hold_the_file(
    fake_lab: Any, name: str, info: dict[str, Any], message: str
) -> None:
    fake_lab.commands = dest_answer(info)
    with pytest.raises(BenchError, match=message):
        check_dest(fake_lab, name, size=2 * 2**30)


@pytest.mark.parametrize(
    ("name", "fs", "limit"),
    [
        pytest.param("tmpfs", "tmpfs", 3 * 2**30, id="tmpfs-within-the-limit"),
        pytest.param("tmpfs", "tmpfs", None, id="tmpfs-no-limit"),
        pytest.param("disk", "ext4", 2**30, id="disk-page-cache-is-reclaimable"),
    ],
)
def test_check_dest_accepts_a_memory_limit_that_holds_the_file(
    fake_lab: Any, name: str, fs: str, limit: int | None
) -> None:
    info = {"fs": fs, "free": 6 * 2**30, "writable": True, "memory_limit": limit}
    fake_lab.commands = dest_answer(info)
    assert check_dest(fake_lab, name, size=2 * 2**30).fs == fs


@pytest.mark.parametrize(
    ("limit", "warned"),
    [
        pytest.param(512 * 2**20, True, id="default-512m"),
        pytest.param(3 * 2**30, False, id="holds-the-file"),
        pytest.param(None, False, id="no-limit"),
    ],
)
def test_the_server_is_warned_about_when_it_cannot_cache_the_file(
    fake_lab: Any, limit: int | None, warned: bool
) -> None:
    asked: list[tuple[str, list[str]]] = []

    def answer(lab: Any, service: str, argv: list[str]) -> ExecResult:
        asked.append((service, argv))
        info = {"fs": "ext4", "free": 1 << 40, "writable": True, "memory_limit": limit}
        return ExecResult(exit_code=0, stdout=json.dumps(info) + "\n", stderr="")

    fake_lab.commands = answer
    warning = server_cache_warning(fake_lab, size=2 * 2**30)
    assert [(service, argv[-1]) for service, argv in asked] == [("server", DATA_ROOT)]
    if warned:
        assert warning == (
            "the server's memory limit of 512 MiB cannot keep the 2048 MiB bench file in its "
            "page cache: fetch and the peer may read it from the server's disk, which no "
            "ceiling row measures; start the lab with SOCKETLAB_SERVER_MEM_LIMIT=3g "
            "(make bench does)"
        )
    else:
        assert warning is None


def test_a_server_that_cannot_cache_the_file_is_a_warning_in_the_report(
    fake_lab: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(lab: Any, service: str, argv: list[str]) -> ExecResult:
        limit = 512 * 2**20 if service == "server" else None
        info = {"fs": "ext4", "free": 1 << 40, "writable": True, "memory_limit": limit}
        return ExecResult(exit_code=0, stdout=json.dumps(info) + "\n", stderr="")

    fake_lab.commands = answer
    monkeypatch.setattr(bench_runner, "refuse_foreign_shaping", lambda lab: None)
    monkeypatch.setattr(bench_runner, "bench_files", lambda *args, **kwargs: None)
    monkeypatch.setattr(bench_runner, "versions", lambda *args, **kwargs: {})
    ran: list[str] = []

    def condition(lab: Any, spec: LinkSpec, options: Any, **kwargs: Any) -> Any:
        ran.append(spec.describe())
        return bench_runner.BenchRun(
            condition=bench_runner.Condition(
                spec=spec.describe(), dest=options.dest, engine="none"
            ),
            measurements=(),
        )

    monkeypatch.setattr(bench_runner, "bench_condition", condition)
    said: list[str] = []
    options = dataclasses.replace(BenchOptions.full(), conditions=(LinkSpec(),))
    report = bench_runner.run_bench(fake_lab, options, progress=said.append)
    (warning,) = report.warnings
    assert warning.startswith("the server's memory limit of 512 MiB cannot keep the 2048 MiB")
    assert f"warning: {warning}" in said
    assert ran  # the bench went on: a warning, not a refusal
    assert [service for service, _ in fake_lab.execs] == ["client", "server"]


def test_the_idle_lab_is_measured_before_anything_of_the_bench_runs(fake_lab: Any) -> None:
    asked: list[tuple[float, int]] = []

    class Measured(Exception):
        pass

    def idle(seconds: float) -> Any:
        asked.append((seconds, len(fake_lab.execs) + len(fake_lab.started)))
        raise Measured

    # every link unshaped (link_status finds no rules), and nothing else answered
    fake_lab.commands = lambda lab, service, argv: ExecResult(exit_code=0, stdout="", stderr="")
    with pytest.raises(Measured):
        bench_runner.run_bench(fake_lab, BenchOptions.short(), idle=idle)
    # the quick preset's few seconds, before any exec or helper of the bench itself
    assert asked == [(3.0, 0)]
    assert fake_lab.netkit_runs  # after the check that nothing is shaped


# --- the client's limits and the peer ----------------------------------------------------


def scripted(replies: dict[str, str]) -> Any:
    """Answer mkdir/rm, and each python probe by a word of its script."""

    def answer(lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[0] in {"mkdir", "rm"}:
            return ExecResult(exit_code=0, stdout="", stderr="")
        for word, reply in replies.items():
            if word in argv[2]:
                return ExecResult(exit_code=0, stdout=reply, stderr="")
        raise AssertionError(f"unexpected {argv}")

    return answer


DISK = Dest(name="disk", path="/var/tmp", fs="ext4")


def test_sha256_and_write_rates(fake_lab: Any) -> None:
    fake_lab.commands = scripted(
        {
            "hashlib": '{"bytes": 1000000000, "seconds": 2.5, "cpu_seconds": 0.5}\n',
            "fsync": 'noise\n{"bytes": 1000000000, "seconds": 2.0}\n',
        }
    )
    sha = sha256_rate(fake_lab, 10**9)
    # one core's capacity: 0.5 s of CPU, though 2.5 s passed on a busy machine
    assert (sha.name, sha.bits_per_second, sha.transport) == ("sha256", 16e9, "local")
    assert "0.50 s of CPU in 2.50 s" in sha.note
    write = write_fsync_rate(fake_lab, DISK, 10**9)
    assert (write.name, write.bits_per_second) == ("write-fsync", 4e9)
    behind = write_fsync_rate(fake_lab, DISK, 10**9, behind=True)
    assert (behind.name, behind.label) == ("write-fsync-behind", "write+fsync, write-behind (disk)")
    probes = [argv for _, argv in fake_lab.execs if "fsync" in " ".join(argv)]
    assert [list(argv[-2:]) for argv in probes] == [
        ["plain", str(files.CHUNK_SIZE)],
        ["behind", str(files.CHUNK_SIZE)],
    ]
    for argv in probes:
        assert argv[-3].startswith("/var/tmp/socketlab-bench-")
        assert argv[-3].endswith("/write-probe.bin")
    # each scratch folder is made before and removed after
    made = [argv[0] for _, argv in fake_lab.execs if argv[0] in {"mkdir", "rm"}]
    assert made == ["mkdir", "rm", "mkdir", "rm"]


PEER_OUT = '{"bytes": 4000, "started": 100.25, "ended": 100.75, "sha256": "ab12"}\n'


def test_the_peer_serves_from_the_server_and_receives_in_the_client(fake_lab: Any) -> None:
    fake_lab.commands = scripted({})
    fake_lab.queue_helper(name="send", stderr="2026/01/01 N listening on AF=2 0.0.0.0:5203\n")
    receiver = fake_lab.queue_helper(name="receive", stdout=PEER_OUT)
    found = peer(fake_lab, DISK, "bench-4000.bin", "ab12", 4000)
    assert (found.name, found.bytes, found.seconds) == ("peer", 4000, 0.5)
    assert found.bits_per_second == pytest.approx(4000 * 8 / 0.5)
    assert found.verified is True
    send, receive = fake_lab.started
    assert (send["service"], send["role"], send["volumes"]) == ("server", PEER_ROLE, "ro")
    assert send["caps"] == ()
    assert send["argv"] == peer_send_argv(
        "/srv/socketlab/data/bench-4000.bin", port=5203, idle=10.0
    )
    assert (receive["service"], receive["volumes"], receive["caps"]) == ("client", "rw", ())
    out = receive["argv"][6]
    assert out.startswith("/var/tmp/socketlab-bench-")
    assert receive["argv"] == peer_receive_argv(
        fake_lab.ip("server"), port=5203, out=out, idle=10.0, connect=2.0
    )
    assert all(helper.removed for helper in fake_lab.started_helpers)
    assert receiver.calls[0] == "wait"


@pytest.mark.parametrize(
    ("out", "verified"),
    [
        pytest.param(PEER_OUT.replace("ab12", "ffff"), False, id="wrong-hash"),
        pytest.param(PEER_OUT.replace("4000", "3999"), False, id="short"),
    ],
)
def test_a_peer_copy_that_differs_is_not_verified(fake_lab: Any, out: str, verified: bool) -> None:
    fake_lab.commands = scripted({})
    fake_lab.queue_helper(name="send", stderr="listening on\n")
    fake_lab.queue_helper(name="receive", stdout=out)
    assert peer(fake_lab, DISK, "f", "ab12", 4000).verified is verified


def test_a_failing_peer_is_a_bench_error_and_leaves_no_helper(fake_lab: Any) -> None:
    fake_lab.commands = scripted({})
    fake_lab.queue_helper(name="send", stderr="listening on\n")
    fake_lab.queue_helper(name="receive", exit_code=1, stderr="socat: Connection refused\n")
    with pytest.raises(BenchError, match=r"exited with 1: .*Connection refused"):
        peer(fake_lab, DISK, "f", "ab12", 4000)
    assert all(helper.removed for helper in fake_lab.started_helpers)
    assert fake_lab.execs[-1][1][:2] == ("rm", "-rf")


def test_the_peer_pipeline_is_the_issues() -> None:
    argv = peer_receive_argv(
        "10.0.0.2", port=5203, out="/mnt/tmpfs/x/peer.bin", idle=300, connect=20
    )
    script = argv[2]
    assert argv[:2] == ["bash", "-c"]
    assert "set -euo pipefail" in script  # a failing socat fails the measurement
    assert '| tee "$out" | openssl dgst -sha256' in script
    assert 'sync "$out"' in script  # durable, as our fetch's fsync
    assert argv[3:] == ["peer", "10.0.0.2", "5203", "/mnt/tmpfs/x/peer.bin", "300", "20"]
    send = peer_send_argv("/srv/socketlab/data/f", port=5203, idle=300)
    assert send[-2:] == ["OPEN:/srv/socketlab/data/f,rdonly", "TCP-LISTEN:5203,reuseaddr"]
    assert send[4:6] == ["-T", "300"]  # every socket has a timeout


# --- best of N, round-robin ---------------------------------------------------------------


def test_run_steps_round_robin_keeps_the_best_of_each() -> None:
    order: list[str] = []
    rates = {"a": iter([1.0, 3.0, 2.0]), "b": iter([5.0, 4.0, 6.0])}

    def step(name: str) -> Measurement:
        order.append(name)
        return Measurement(
            name=name, label=name, transport="tcp", bytes=1, seconds=1.0,
            bits_per_second=next(rates[name]),
        )  # fmt: skip

    found = run_steps(
        [("a", lambda: step("a")), ("b", lambda: step("b"))],
        repeat=3,
        progress=lambda message: None,
        where="none",
    )
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert [(m.name, m.bits_per_second, m.samples) for m in found] == [
        ("a", 3.0, (1.0, 3.0, 2.0)),
        ("b", 6.0, (5.0, 4.0, 6.0)),
    ]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        pytest.param(
            '{"started": 1, "ended": 2, "sha256": "x"}', "no number 'bytes'", id="missing"
        ),
        pytest.param(
            '{"bytes": "4000", "started": 1, "ended": 2}', "no number 'bytes'", id="a-string"
        ),
        pytest.param('{"bytes": -1, "started": 1, "ended": 2}', "bytes = -1", id="negative"),
        pytest.param('{"bytes": true, "started": 1, "ended": 2}', "no number", id="a-bool"),
        pytest.param("garbage", "peer printed no JSON", id="no-json"),
    ],
)
def test_a_peer_reporting_nonsense_is_a_bench_error(fake_lab: Any, out: str, message: str) -> None:
    fake_lab.commands = scripted({})
    fake_lab.queue_helper(name="send", stderr="listening on\n")
    fake_lab.queue_helper(name="receive", stdout=out + "\n")
    with pytest.raises(BenchError, match=message):
        peer(fake_lab, DISK, "f", "ab12", 4000)
