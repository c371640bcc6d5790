"""The TCP demos across real containers: client container -> server container.

Every demo runs through ``socketlab client ... --json`` in the client container
and is checked from its final JSON line, and where it matters, against the
server side (file hashes, a sentinel file that must never appear).
"""

from __future__ import annotations

import json
import shlex
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.api import ExecResult, Lab
from lab.bench.iperf3_runs import iperf3_tcp
from lab.waiting import wait_for

pytestmark = pytest.mark.integration

DATA_ROOT = "/srv/socketlab/data"
TEXT = "sample-text.txt"
IMAGE = "sample-image.png"
BIG = "large-1g.bin"


def run(lab: Lab, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> ExecResult:
    return lab.exec("client", ["socketlab", "client", *args], timeout=timeout, env=env)


def final_json(result: ExecResult) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in stdout={result.stdout!r} stderr={result.stderr!r}"
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def demo(lab: Lab, *args: str, timeout: float = 60) -> dict[str, Any]:
    result = run(lab, *args, "--json", timeout=timeout)
    assert result.ok, f"{args}: exit {result.exit_code}: {result.stderr.strip()}"
    return final_json(result)


def file_size(lab: Lab, service: str, path: str) -> int:
    result = lab.exec(
        service, ["sh", "-c", f"stat -c %s {shlex.quote(path)} 2>/dev/null"], timeout=10
    )
    return int(result.stdout.strip()) if result.ok and result.stdout.strip() else -1


@pytest.fixture
def dest(lab: Lab) -> Iterator[str]:
    path = f"/tmp/socketlab-test-{uuid.uuid4().hex[:8]}"
    yield path
    lab.exec("client", ["rm", "-rf", path], timeout=30)


@pytest.fixture(scope="module")
def big_file(lab: Lab) -> str:
    """The 1 GiB sample, created on demand in the server's data volume (once)."""
    lab.exec("server", ["socketlab", "sampledata", "--big"], timeout=300).check(
        "creating the big file"
    )
    return lab.file_sha256("server", f"{DATA_ROOT}/{BIG}")


# --- plain demos ------------------------------------------------------------------------


def test_hello_crosses_the_network(lab: Lab) -> None:
    result = demo(lab, "hello")
    assert result["result"].startswith(f"Hello, {lab.ip('client')}!")


@pytest.mark.parametrize(
    ("args", "check"),
    [
        pytest.param(["time"], lambda r: abs(r["epoch"] - time.time()) < 120, id="time"),
        pytest.param(["lookup", "ring"], lambda r: "Misty Mountains" in r, id="lookup"),
        pytest.param(["echo", '{"a": [1, 2]}'], lambda r: r == {"a": [1, 2]}, id="echo-json"),
    ],
)
def test_json_actions(lab: Lab, args: list[str], check: Callable[[Any], bool]) -> None:
    assert check(demo(lab, "request", *args)["result"])


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--size", "900000"], id="larger-than-any-recv"),
        pytest.param(["--trickle"], id="one-byte-per-send"),
    ],
)
def test_framing_demo(lab: Lab, args: list[str]) -> None:
    result = demo(lab, "echo", *args)
    assert result["ok"] is True
    if "--trickle" in args:
        assert result["sends"] == result["wire_bytes"]


def test_tutorial_style_client_works_unchanged(lab: Lab) -> None:
    # The request layout of the Real Python libclient, built by hand in the client container.
    script = r"""
import json, socket, struct, sys
content = json.dumps({"action": "search", "value": "morpheus"}, ensure_ascii=False).encode("utf-8")
header = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json",
                     "content-encoding": "utf-8", "content-length": len(content)},
                    ensure_ascii=False).encode("utf-8")
with socket.create_connection(("server", 4571), timeout=10) as sock:
    sock.sendall(struct.pack(">H", len(header)) + header + content)
    data = b""
    while True:
        if len(data) >= 2:
            n = struct.unpack(">H", data[:2])[0]
            if len(data) >= 2 + n:
                h = json.loads(data[2:2 + n])
                if len(data) >= 2 + n + h["content-length"]:
                    break
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("peer closed")
        data += chunk
body = data[2 + n: 2 + n + h["content-length"]]
print(json.loads(body.decode(h["content-encoding"]))["result"])
"""
    result = lab.exec("client", ["python3", "-c", script], timeout=30)
    assert result.ok, result.stderr
    assert "Follow the white rabbit" in result.stdout


def test_objects_as_json_arrive_equal(lab: Lab) -> None:
    result = demo(lab, "objects")
    assert result["equal"] is True
    assert result["types"] == ["Product", "dict"]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--unsigned"], id="unsigned"),
        pytest.param(["--pickle-key", "not-the-shared-key"], id="wrong-key"),
    ],
)
def test_bad_pickle_is_refused_and_never_runs(lab: Lab, args: list[str]) -> None:
    sentinel = f"/tmp/socketlab-sentinel-{uuid.uuid4().hex[:8]}"
    result = run(lab, "objects", "--pickle", "--sentinel", sentinel, *args, "--json")
    assert result.exit_code == 1
    assert "refused the pickle" in result.stderr
    assert final_json(result)["ok"] is False
    for service in ("server", "client"):
        assert lab.exec(service, ["test", "-e", sentinel], timeout=10).exit_code == 1, service


PICKLE_KEY_FILE = "/run/secrets/socketlab/pickle-key"


def test_signed_pickle_round_trip_with_the_key_from_its_file(lab: Lab) -> None:
    # lab up gave server and client the key as a read-only file; nothing to pass.
    result = demo(lab, "objects", "--pickle")
    assert result["equal_to_sample"] is True


def test_the_pickle_key_is_a_file_only_where_it_is_used(lab: Lab) -> None:
    key = lab.exec("client", ["cat", PICKLE_KEY_FILE], timeout=10).check("the key").stdout.strip()
    assert key
    assert key == lab.exec("server", ["cat", PICKLE_KEY_FILE], timeout=10).stdout.strip()
    for service in ("server", "client", "udp-listener", "rss-poller"):
        env = lab.container(service).attrs["Config"]["Env"]
        assert not [item for item in env if "PICKLE" in item or key in item], service
    for service in ("udp-listener", "rss-poller"):
        assert lab.exec(service, ["test", "-e", PICKLE_KEY_FILE], timeout=10).exit_code == 1
    writable = lab.exec("client", ["sh", "-c", f"echo x > {PICKLE_KEY_FILE}"], timeout=10)
    assert writable.exit_code != 0, "mounted read-only"


def test_a_signed_pickle_cannot_allocate_past_its_size_limit(lab: Lab) -> None:
    script = """
        import socket
        from socketlab.client.connection import Endpoint, LabConnection
        from socketlab.objects import PICKLE_TYPE, signature
        from socketlab.protocol import encode_message
        key = open("/run/secrets/socketlab/pickle-key", "rb").read().strip()
        payload = b"\\x80\\x02cbuiltins\\nbytearray\\nJ\\x00e\\xcd\\x1d\\x85R."  # bytearray(500000000)
        endpoint = Endpoint(host="server", port=4571, timeout=5, read_timeout=30)
        with LabConnection.open(endpoint) as conn:
            extra = {"action": "pickle", "signature": signature(payload, key)}
            conn.send(encode_message(PICKLE_TYPE, payload, extra=extra))
            print(conn.read_message().content.decode())
    """
    result = lab.exec("client", ["python3", "-c", textwrap.dedent(script)], timeout=60)
    assert "asks for 500000000 bytes" in result.stdout, result.stderr
    assert lab.state("server") == "running"
    assert demo(lab, "hello")["ok"] is True


# --- files ------------------------------------------------------------------------------


def test_ls_offers_the_samples(lab: Lab) -> None:
    names = {entry["name"] for entry in demo(lab, "ls")["files"]}
    assert {TEXT, IMAGE} <= names


@pytest.mark.parametrize("name", [pytest.param(TEXT, id="text"), pytest.param(IMAGE, id="image")])
def test_fetch_is_identical(lab: Lab, dest: str, name: str) -> None:
    result = demo(lab, "fetch", name, "--dest", dest)
    ours = lab.file_sha256("client", f"{dest}/{name}")
    theirs = lab.file_sha256("server", f"{DATA_ROOT}/{name}")
    assert ours == theirs == result["sha256"]
    # and byte for byte, like cmp
    assert lab.read_file("client", f"{dest}/{name}") == lab.read_file(
        "server", f"{DATA_ROOT}/{name}"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("../../../etc/passwd", "escapes the data root", id="dotdot"),
        pytest.param("/etc/passwd", "absolute path", id="absolute"),
        pytest.param("..\\..\\etc\\passwd", "backslash", id="backslash"),
    ],
)
def test_path_traversal_is_refused(lab: Lab, dest: str, name: str, reason: str) -> None:
    result = run(lab, "fetch", name, "--dest", dest)
    assert result.exit_code == 1
    assert reason in result.stderr
    listing = lab.exec("client", ["sh", "-c", f"ls -A {dest} 2>/dev/null"], timeout=10)
    assert listing.stdout.strip() == ""


def test_nul_in_a_name_is_refused(lab: Lab) -> None:
    # A command line cannot carry a NUL byte: send the request from Python instead.
    script = (
        "from socketlab.client import Endpoint, LabConnection\n"
        "endpoint = Endpoint(host='server', port=4571, timeout=5, read_timeout=30)\n"
        "with LabConnection.open(endpoint) as conn:\n"
        "    try:\n"
        "        conn.request('fetch', {'name': 'sample-text.txt\\x00.png'})\n"
        "    except Exception as exc:\n"
        "        print('refused:', exc)\n"
    )
    result = lab.exec("client", ["python3", "-c", script], timeout=30)
    assert result.ok, result.stderr
    assert "refused: file name contains a NUL byte" in result.stdout


def test_symlink_out_of_the_root_is_refused(lab: Lab, dest: str) -> None:
    link = f"{DATA_ROOT}/escape-{uuid.uuid4().hex[:6]}"
    lab.exec("server", ["ln", "-s", "/etc/passwd", link], timeout=10).check("making the symlink")
    try:
        result = run(lab, "fetch", link.rsplit("/", 1)[1], "--dest", dest)
        assert result.exit_code == 1
        assert "outside the data root" in result.stderr
    finally:
        lab.exec("server", ["rm", "-f", link], timeout=10)


def test_oversize_header_does_not_hurt_a_concurrent_fetch(
    lab: Lab, dest: str, big_file: str
) -> None:
    outcome: dict[str, ExecResult] = {}
    fetcher = threading.Thread(
        target=lambda: outcome.setdefault(
            "fetch",
            run(
                lab,
                "fetch",
                BIG,
                "--dest",
                dest,
                "--quiet",
                "--max-rate",
                "200e6",
                "--json",
                timeout=300,
            ),
        )
    )
    fetcher.start()
    try:
        wait_for(
            lambda: file_size(lab, "client", f"{dest}/{BIG}.part") > 0,
            timeout=60,
            what="the fetch to start",
        )
        reactions = [
            demo(lab, "misbehave", kind)["reaction"] for kind in ("oversize-header", "bad-json")
        ]
    finally:
        fetcher.join(timeout=320)
    assert "exceeds the limit" in reactions[0]
    assert "not valid UTF-8 JSON" in reactions[1]
    fetched = outcome["fetch"]
    assert fetched.ok, fetched.stderr
    assert final_json(fetched)["sha256"] == big_file
    assert lab.file_sha256("client", f"{dest}/{BIG}") == big_file


def test_server_killed_mid_fetch_then_resume(lab: Lab, dest: str, big_file: str) -> None:
    part, final = f"{dest}/{BIG}.part", f"{dest}/{BIG}"
    outcome: dict[str, ExecResult] = {}
    fetcher = threading.Thread(
        target=lambda: outcome.setdefault(
            "first",
            run(
                lab,
                "fetch",
                BIG,
                "--dest",
                dest,
                "--quiet",
                "--max-rate",
                "100e6",
                "--json",
                timeout=300,
            ),
        )
    )
    fetcher.start()
    try:
        wait_for(
            lambda: file_size(lab, "client", part) > 100_000_000,
            timeout=120,
            what="100 MB in .part",
        )
        lab.kill("server")
    finally:
        fetcher.join(timeout=320)
    first = outcome["first"]
    assert first.exit_code == 1, first.stdout
    assert "interrupted" in first.stderr
    assert file_size(lab, "client", final) == -1, "a partial file appeared under the final name"
    kept = file_size(lab, "client", part)
    assert kept > 0
    lab.start("server")
    lab.wait_healthy(timeout=120)
    second = demo(lab, "fetch", BIG, "--dest", dest, "--quiet", timeout=300)
    assert 0 < second["resumed_from"] <= kept
    assert second["sha256"] == big_file
    assert lab.file_sha256("client", final) == big_file
    assert file_size(lab, "client", part) == -1


# --- deadlines, blast, timeouts --------------------------------------------------------


def test_slowloris_is_dropped_and_others_are_served(lab: Lab) -> None:
    outcome: dict[str, dict[str, Any]] = {}
    slow = threading.Thread(
        target=lambda: outcome.setdefault(
            "slow", demo(lab, "misbehave", "slowloris", "--interval", "3", timeout=120)
        )
    )
    slow.start()
    try:
        assert demo(lab, "hello")["ok"] is True  # served while the slow client holds its slot
    finally:
        slow.join(timeout=130)
    reaction = outcome["slow"]
    assert (
        "header not complete" in reaction["reaction"] or "connection ended" in reaction["reaction"]
    )
    assert reaction["seconds"] < 60


@pytest.mark.parametrize("mode", [pytest.param(m, id=m) for m in ("blocking", "nonblocking")])
def test_blast_delivers_every_byte(lab: Lab, mode: str) -> None:
    result = demo(lab, "blast", "--mode", mode, "--size", str(128 * 1024 * 1024), timeout=180)
    assert result["lost"] == 0
    assert result["received"] == result["attempted"] == result["server"]["bytes"]
    assert result["server"]["batches"] > 0
    if mode == "nonblocking":
        assert result["work_slices"] >= 0


def test_naive_nonblocking_blast_reports_its_loss(lab: Lab) -> None:
    result = demo(
        lab, "blast", "--mode", "nonblocking-naive", "--size", str(128 * 1024 * 1024), timeout=180
    )
    # The server counted exactly what the kernel took; the rest was dropped by the
    # naive sender, and the report says so.
    assert result["received"] == result["accepted_by_kernel"] == result["server"]["bytes"]
    assert result["lost"] == result["attempted"] - result["received"]
    assert result["lossy"] is (result["lost"] > 0)
    assert result["lossy"] is (result["would_block"] + result["partial_sends"] > 0)


def test_read_timeout_demo(lab: Lab) -> None:
    result = demo(lab, "timeout", "read", "--read-timeout", "1.5")
    assert 1.5 <= result["seconds"] < 5


def test_hung_server_gives_a_clear_read_timeout_not_a_hang(lab: Lab) -> None:
    # A paused server's kernel still completes the handshake, but nothing answers.
    lab.pause("server")
    try:
        started = time.monotonic()
        result = run(lab, "hello", "--read-timeout", "2", "--json", timeout=30)
        elapsed = time.monotonic() - started
    finally:
        lab.unpause("server")
        # Docker marks a paused container unhealthy at once, and healthy again at its
        # next probe (every 5 s): leave the lab as healthy as it was found.
        lab.wait_healthy(timeout=60)
    assert result.exit_code == 1
    assert final_json(result)["error_type"] == "ReadTimeout"
    assert result.stderr.strip().count("\n") == 0, "one line"
    assert elapsed < 20
    assert demo(lab, "hello")["ok"] is True  # and it answers again once resumed


def test_accept_timeout_demo(lab: Lab) -> None:
    result = demo(lab, "timeout", "accept", "--accept-timeout", "1")
    assert result["kind"] == "accept"
    assert "accepted" not in result
    assert 1 <= result["seconds"] < 5


# --- benchmark (reported, not asserted against wall-clock targets) ----------------------

RSS_SCRIPT = r"""
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        status = open(f"/proc/{pid}/status").read()
    except OSError:
        continue
    if b"socketlab" in cmd and b"server" in cmd:
        print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
"""


def server_rss_kib(lab: Lab) -> int:
    result = lab.exec("server", ["python3", "-c", RSS_SCRIPT], timeout=20)
    values = [int(v) for v in result.stdout.split() if v.isdigit()]
    return max(values, default=0)


def iperf3_bits_per_second(lab: Lab, seconds: int = 5) -> float:
    """iperf3 goodput server -> client on the same link as the fetch (lab.bench measures it)."""
    return iperf3_tcp(lab, seconds=seconds).bits_per_second


@pytest.mark.benchmark
def test_benchmark_1g_fetch_against_iperf3(lab: Lab, dest: str, big_file: str) -> None:
    iperf = iperf3_bits_per_second(lab)
    samples: list[int] = []
    done = threading.Event()

    def sample_rss() -> None:
        while not done.is_set():
            samples.append(server_rss_kib(lab))
            done.wait(0.5)

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    try:
        result = demo(lab, "fetch", BIG, "--dest", dest, "--quiet", timeout=600)
    finally:
        done.set()
        sampler.join(timeout=30)
    assert result["sha256"] == big_file
    ours = result["size"] * 8 / result["transfer_seconds"]
    report = {
        "iperf3_gbit_s": round(iperf / 1e9, 3),
        "fetch_gbit_s": round(ours / 1e9, 3),
        "ratio": round(ours / iperf, 3),
        "fetch_transfer_s": round(result["transfer_seconds"], 3),
        "fetch_total_s": round(result["seconds"], 3),
        "server_rss_max_mib": round(max(samples, default=0) / 1024, 1),
        "rss_samples": len(samples),
    }
    print(f"\nBENCHMARK tcp-fetch-1g {json.dumps(report)}")
    assert samples, "no server RSS samples were taken"
