"""Running benchmarks and sweeps in the lab: the I/O half of lab.bench.

``run_bench`` measures, per condition and in one run on the same containers
(figures named as in :mod:`lab.bench.ceiling`):

* **iperf3 TCP**: ``iperf3 -s -1`` in a netkit helper joined to the server's
  namespace, ``iperf3 -c SERVER -R -J`` in one joined to the client's, so the
  data flows server -> client like our file transfer;
* **SHA-256** and **write+fsync**: hashlib on one core, and writing the file's
  size at the destination then fsyncing it (plainly, and with write-behind as
  fetch's writer does it), all in the client container;
* **the peer**: ``socat`` from the server's data root into ``tee FILE | openssl
  dgst -sha256`` and ``sync FILE``, in netkit helpers joined to the server's and
  the client's namespaces and mounting their volumes (the same file, the same
  destination);
* **fetch**: ``socketlab client fetch`` (framed, SHA-256 verified, fsynced);
* **naive**: ``socketlab naive-transfer`` (the tutorials' ``recv(1024)`` loop,
  a labelled teaching baseline) of a smaller file;
* **iperf3 UDP** and **udp**: the same payload, datagram size and rate from
  the client to the udp-listener (ours through ``socketlab tcp-vs-udp``).

The first six run ``repeat`` times round-robin and keep their best try. The
destination (``--dest``) is one of the client's volumes in ``docker-compose.yml``:
``disk`` (``/var/tmp``, on the Docker host's disk) or ``tmpfs`` (``/mnt/tmpfs``).
Shaped conditions shape both links the measurements cross (server -> client
and client -> udp-listener) and remove that shaping afterwards. Each condition
records the TCP congestion control each end's connections used.

``run_sweep`` runs the ``tcp-vs-udp`` scenario at every point of a grid,
shaping client -> udp-listener, measuring the RTT, and yields a SweepResult;
with ``congestion`` (``--congestion cubic,bbr``) the whole grid runs once per
algorithm, set on both ends, and the lab's own setting is put back after.
Both refuse to start while the lab has shaping in force they did not make.
Ports and timeouts come from ``lab.config.bench`` (:class:`lab.config.BenchConfig`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import lab
import socketlab
from lab import iperf3 as iperf3_tool
from lab.bench import ceiling
from lab.bench.errors import BenchError
from lab.bench.grid import Grid, GridPoint
from lab.bench.idle import IdleCpu
from lab.bench.records import (
    UNSHAPED,
    BenchReport,
    BenchRun,
    Condition,
    Measurement,
    SweepPoint,
    SweepResult,
    best_of,
)
from lab.bench.throughput import DEFAULT_MSS
from lab.congestion import congestion_in_use, ensure_congestion
from lab.errors import LabError
from lab.interface import ExecResult, Lab
from lab.shaping import LinkSpec, link_status, measure_rtt, shape, unshape
from socketlab.naive import NAIVE_PORT

Progress = Callable[[str], None]

DATA_ROOT: Final = "/srv/socketlab/data"

# A file made of socketlab.sampledata's deterministic blocks, written atomically.
_MAKE_FILE: Final = """
import os, sys
from socketlab.sampledata import big_blocks, data_root
size, path = int(sys.argv[1]), data_root() / sys.argv[2]
if not path.exists() or path.stat().st_size != size:
    tmp = path.with_name("." + path.name + ".tmp")
    with tmp.open("wb") as handle:
        for block in big_blocks(size=size):
            handle.write(block)
    os.replace(tmp, path)
"""


def _quiet(message: str) -> None:
    del message


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions(lab_: Lab, *, iperf3: str | None = None) -> dict[str, str]:
    """What produced the figures: our versions, Python, kernel, Docker, tools."""
    found = {
        "lab": lab.__version__,
        "socketlab": socketlab.__version__,
        "python": platform.python_version(),
        "matplotlib": importlib.metadata.version("matplotlib"),
        "kernel": platform.release(),
    }
    with contextlib.suppress(LabError):
        found["docker engine"] = lab_.engine_version()
    if iperf3:
        found["iperf3"] = iperf3
    return found


def require_services(lab_: Lab, services: Sequence[str]) -> None:
    """BenchError unless every one of ``services`` runs and is healthy."""
    rows = {row.service: row for row in lab_.status()}
    missing = [
        name
        for name in services
        if name not in rows or (rows[name].state, rows[name].health) != ("running", "healthy")
    ]
    if missing:
        raise BenchError(
            f"lab {lab_.project!r} is not ready ({', '.join(missing)} not running and healthy): "
            f"run `lab -p {lab_.project} up` first"
        )


def refuse_foreign_shaping(lab_: Lab) -> None:
    """BenchError when links are shaped or partitioned: the figures would lie."""
    links = link_status(lab_)
    if links:
        shown = ", ".join(f"{state.link} ({state.shaping})" for state in links)
        raise BenchError(
            f"the lab has shaping or partitions in force: {shown}; "
            "run `lab unshape` / `lab heal` first (bench and sweep shape links themselves)"
        )


def figure(report: dict[str, Any], key: str, *, what: str) -> float:
    """A finite, non-negative number from a tool's JSON; BenchError naming it otherwise."""
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BenchError(f"{what} reported no number {key!r}: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise BenchError(f"{what} reported {key} = {value!r}")
    return float(value)


def last_json(text: str, *, what: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object (our commands end with one)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    return parsed
    raise BenchError(f"{what} printed no JSON result: {text.strip()[-300:]!r}")


# --------------------------------------------------------------------------- iperf3


def parse_iperf3_json(text: str) -> dict[str, Any]:
    """The ``iperf3 -J`` document; BenchError with iperf3's own message on failure."""
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"iperf3 printed no JSON: {text.strip()[:300]!r}") from exc
    if not isinstance(report, dict):
        raise BenchError("iperf3 JSON is not an object")
    if report.get("error"):
        raise BenchError(f"iperf3: {report['error']}")
    received = report.get("end", {}).get("sum_received")
    if not isinstance(received, dict) or "bits_per_second" not in received:
        raise BenchError("iperf3 JSON has no end.sum_received (iperf3 older than 3.x?)")
    return report


def iperf3(
    lab_: Lab, *, server: str, client: str, args: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Run an iperf3 client in ``client``'s namespace against ``server``; the JSON report.

    The port is the configured ``SOCKETLAB_BENCH_IPERF_PORT``: not the shaping
    self-check's, so a bench may run while someone checks a link.
    """
    config = lab_.config.bench
    result = iperf3_tool.run_iperf3(
        lab_,
        server=server,
        client=client,
        port=config.iperf_port,
        args=args,
        timeout=timeout,
        ready_timeout=config.ready_timeout,
    )
    report = parse_iperf3_json(result.stdout)
    if not result.ok:
        raise BenchError(f"iperf3 exited with {result.exit_code}: {result.stderr.strip()[-300:]}")
    return report


def iperf3_tcp(
    lab_: Lab, *, server: str = "server", client: str = "client", seconds: int = 5
) -> Measurement:
    """iperf3 TCP goodput server -> client (``-R``), ``-O 1`` omitting slow start's first second."""
    report = iperf3(
        lab_,
        server=server,
        client=client,
        args=["-R", "-t", str(seconds), "-O", "1"],
        timeout=seconds + 60,
    )
    received = report["end"]["sum_received"]
    return Measurement(
        name="iperf3-tcp",
        label="iperf3 TCP",
        transport="tcp",
        bytes=int(received["bytes"]),
        seconds=float(received["seconds"]),
        bits_per_second=float(received["bits_per_second"]),
        note=str(report.get("start", {}).get("version", "")),
    )


def iperf3_udp(
    lab_: Lab,
    *,
    server: str = "udp-listener",
    client: str = "client",
    total: int,
    size: int,
    rate: float,
) -> Measurement:
    """iperf3 UDP client -> server: ``total`` bytes as ``size``-byte datagrams at ``rate``/s."""
    bitrate = round(rate * size * 8)
    report = iperf3(
        lab_,
        server=server,
        client=client,
        args=["-u", "-b", str(bitrate), "-l", str(size), "-n", str(total)],
        timeout=total / (rate * size) + 60,
    )
    received = report["end"]["sum_received"]
    return Measurement(
        name="iperf3-udp",
        label="iperf3 UDP",
        transport="udp",
        bytes=int(received["bytes"]),
        seconds=float(received["seconds"]),
        bits_per_second=float(received["bits_per_second"]),
        loss=float(received.get("lost_percent", 0.0)) / 100,
        note=f"{size}-byte datagrams at {rate:g}/s",
    )


# --------------------------------------------------------------------------- the client's limits

# hashlib SHA-256 on one core, over a block already in memory: the hash's own speed,
# timed by the thread's CPU clock too (on a busy machine the wall clock times the queue).
_SHA_PROBE: Final = """
import hashlib, json, os, sys, time
size = int(sys.argv[1])
block = memoryview(os.urandom(1 << 20))
hasher = hashlib.sha256()
started, cpu = time.perf_counter(), time.thread_time()
for _ in range(size // len(block)):
    hasher.update(block)
hasher.update(block[: size % len(block)])
print(json.dumps({"bytes": size, "seconds": time.perf_counter() - started,
                  "cpu_seconds": time.thread_time() - cpu}))
"""

# Write ``size`` bytes in 1 MiB blocks, then fsync: what the disk at the destination takes.
# "behind": after every 4 MiB, ask the kernel to write them out now and to drop the
# 4 MiB before (posix_fadvise DONTNEED), as fetch's writer does.
_WRITE_PROBE: Final = """
import json, os, sys, time
size, path, behind = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "behind"
block, chunk = memoryview(os.urandom(1 << 20)), 4 << 20
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
try:
    started = time.perf_counter()
    done = kicked = 0
    while done < size:
        done += os.write(fd, block[: min(size - done, len(block))])
        if behind and (done - kicked >= chunk or done == size):
            os.posix_fadvise(fd, kicked, done - kicked, os.POSIX_FADV_DONTNEED)
            if kicked:
                os.posix_fadvise(fd, max(0, kicked - chunk), chunk, os.POSIX_FADV_DONTNEED)
            kicked = done
    os.fsync(fd)
    seconds = time.perf_counter() - started
finally:
    os.close(fd)
    os.unlink(path)
print(json.dumps({"bytes": size, "seconds": seconds}))
"""

# What is mounted at the destination, and how much room it has.
_DEST_PROBE: Final = """
import json, os, sys
path = sys.argv[1]
fs = ""
with open("/proc/self/mountinfo") as mounts:
    for line in mounts:
        fields = line.split()
        if fields[4] == path:
            fs = fields[fields.index("-") + 1]
st = os.statvfs(path)
memory = None  # the container's memory limit (cgroup v2, then v1); tmpfs pages count against it
for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
        text = open(limit_file).read().strip()
    except OSError:
        continue
    memory = None if text == "max" or int(text) >= 1 << 60 else int(text)
    break
print(json.dumps({"fs": fs, "free": st.f_bavail * st.f_frsize, "writable": os.access(path, os.W_OK),
                  "memory_limit": memory}))
"""


@dataclass(frozen=True, kw_only=True)
class Dest:
    """Where the client writes in a bench: a volume of the client (``docker-compose.yml``),
    which the peer's helper mounts too."""

    name: str  # disk | tmpfs
    path: str
    fs: str = ""  # the file system type found there


DEST_PATHS: Final = {"disk": "/var/tmp", "tmpfs": "/mnt/tmpfs"}  # noqa: S108 - in the client
DEST_ROOM: Final = 64 * 2**20  # spare bytes beyond the file the destination must have
# What the client needs in memory beside a tmpfs file: fetch's buffers, Python, the probes.
TMPFS_HEADROOM: Final = 384 * 2**20


def check_dest(lab_: Lab, name: str, *, size: int) -> Dest:
    """The destination ``name``, mounted in the client with room for ``size`` bytes."""
    if name not in DEST_PATHS:
        raise BenchError(f"no bench destination {name!r} (known: {', '.join(DEST_PATHS)})")
    path = DEST_PATHS[name]
    result = lab_.exec(
        "client", ["python3", "-c", _DEST_PROBE, path], timeout=lab_.config.bench.ready_timeout
    )
    info = last_json(result.check(f"inspecting {path} in the client").stdout, what="dest probe")
    if not info.get("fs"):
        raise BenchError(
            f"the client has no volume at {path} (--dest {name}): the lab was started from an "
            f"older docker-compose.yml; run `lab -p {lab_.project} down` and `up` again"
        )
    if not info.get("writable"):
        raise BenchError(f"the client cannot write to {path} (--dest {name})")
    free = int(info.get("free", 0))
    if free < size + DEST_ROOM:
        raise BenchError(
            f"--dest {name} ({path}) has {free / 2**20:.0f} MiB free; the bench file needs "
            f"{(size + DEST_ROOM) / 2**20:.0f} MiB: choose a smaller --file-size"
        )
    limit = info.get("memory_limit")
    if info["fs"] == "tmpfs" and isinstance(limit, int) and limit < size + TMPFS_HEADROOM:
        raise BenchError(
            f"--dest {name} ({path}) is RAM, charged to the client's memory limit of "
            f"{limit / 2**20:.0f} MiB; a {size / 2**20:.0f} MiB file needs "
            f"{(size + TMPFS_HEADROOM) / 2**20:.0f} MiB: start the lab with "
            f"SOCKETLAB_CLIENT_MEM_LIMIT={_gib_up(size + TMPFS_HEADROOM)}g, or choose a smaller "
            "--file-size"
        )
    return Dest(name=name, path=path, fs=str(info["fs"]))


def _gib_up(size: int) -> int:
    return -(-size // 2**30)


def load_average(lab_: Lab) -> float | None:
    """The 1-minute load average of the kernel the containers run on."""
    with contextlib.suppress(LabError, ValueError, IndexError):
        result = lab_.exec("client", ["cat", "/proc/loadavg"], timeout=30).check("loadavg")
        return float(result.stdout.split()[0])
    return None


def _rate(moved: int, seconds: float) -> float:
    return moved * 8 / seconds if seconds > 0 else 0.0


def sha256_rate(lab_: Lab, size: int) -> Measurement:
    """hashlib SHA-256 of ``size`` bytes on one core of the client.

    The rate is per second of the core's time (the thread's CPU clock), not of
    the wall clock: it is the capacity of one core, which a busy machine would
    otherwise understate by however long the probe waited for a core.
    """
    argv = ["python3", "-c", _SHA_PROBE, str(size)]
    result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout).check("sha256")
    report = last_json(result.stdout, what="sha256 probe")
    moved = int(figure(report, "bytes", what="sha256 probe"))
    wall = figure(report, "seconds", what="sha256 probe")
    cpu = figure(report, "cpu_seconds", what="sha256 probe")
    seconds = cpu if cpu > 0 else wall
    return Measurement(
        name=ceiling.HASH,
        label="SHA-256 (client, 1 core)",
        transport="local",
        bytes=moved,
        seconds=seconds,
        bits_per_second=_rate(moved, seconds),
        note=f"hashlib over an in-memory block; {cpu:.2f} s of CPU in {wall:.2f} s",
    )


def write_fsync_rate(lab_: Lab, dest: Dest, size: int, *, behind: bool = False) -> Measurement:
    """Writing ``size`` bytes at ``dest`` in the client and fsyncing them; with ``behind``,
    asking the kernel to write each 4 MiB out at once."""
    mode = "behind" if behind else "plain"
    with scratch_dir(lab_, "client", dest.path) as folder:
        argv = ["python3", "-c", _WRITE_PROBE, str(size), f"{folder}/write-probe.bin", mode]
        result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout)
    report = last_json(result.check("write+fsync").stdout, what="write+fsync probe")
    moved = int(figure(report, "bytes", what="write+fsync probe"))
    seconds = figure(report, "seconds", what="write+fsync probe")
    how = (
        "1 MiB writes, each 4 MiB written out at once, then fsync"
        if behind
        else ("1 MiB writes then fsync")
    )
    return Measurement(
        name=ceiling.WRITE_BEHIND if behind else ceiling.WRITE,
        label=f"write+fsync{', write-behind' if behind else ''} ({dest.name})",
        transport="local",
        bytes=moved,
        seconds=seconds,
        bits_per_second=_rate(moved, seconds),
        note=f"{how} at {dest.path} ({dest.fs})",
    )


# --------------------------------------------------------------------------- the peer

PEER_ROLE: Final = "bench-peer"

# The receiving half: connect, tee into the file, hash, then make the file durable
# (our fetch fsyncs too). Times itself, so container start-up is not counted.
_PEER_RECEIVE: Final = r"""
set -euo pipefail
host=$1 port=$2 out=$3 idle=$4 connect=$5
started=$(date +%s.%N)
digest=$(socat -u -T "$idle" "TCP:$host:$port,connect-timeout=$connect" STDOUT \
  | tee "$out" | openssl dgst -sha256 -r)
sync "$out"
ended=$(date +%s.%N)
size=$(stat -c %s "$out")
rm -f "$out"
printf '{"bytes": %s, "started": %s, "ended": %s, "sha256": "%s"}\n' \
  "$size" "$started" "$ended" "${digest%% *}"
"""


def peer_send_argv(path: str, *, port: int, idle: float) -> list[str]:
    """socat serving one connection with ``path``; ``-d -d`` logs "listening on" when ready."""
    return ["socat", "-d", "-d", "-u", "-T", f"{idle:g}",
            f"OPEN:{path},rdonly", f"TCP-LISTEN:{port},reuseaddr"]  # fmt: skip


def peer_receive_argv(host: str, *, port: int, out: str, idle: float, connect: float) -> list[str]:
    """The receiving pipeline: ``socat | tee out | openssl dgst -sha256``, then ``sync out``."""
    return ["bash", "-c", _PEER_RECEIVE, "peer", host, str(port), out, f"{idle:g}", f"{connect:g}"]


def peer(lab_: Lab, dest: Dest, name: str, sha256: str, size: int) -> Measurement:
    """The transfer a user would pick: socat -> tee FILE -> openssl dgst -sha256, sync FILE.

    Both halves run in netkit helpers joined to the server's and the client's
    namespaces and mounting their volumes (the server's read-only), so the
    peer reads the same file and writes to the same destination as our fetch.
    """
    config = lab_.config.bench
    send = peer_send_argv(f"{DATA_ROOT}/{name}", port=config.peer_port, idle=config.step_timeout)
    with (
        scratch_dir(lab_, "client", dest.path) as folder,
        lab_.start_helper(
            "server",
            send,
            role=PEER_ROLE,
            volumes="ro",
            ready="listening on",
            ready_timeout=config.ready_timeout,
        ),
        lab_.start_helper(
            "client",
            peer_receive_argv(
                lab_.ip("server"),
                port=config.peer_port,
                out=f"{folder}/peer.bin",
                idle=config.step_timeout,
                connect=config.ready_timeout,
            ),
            role=PEER_ROLE,
            volumes="rw",
        ) as receiver,
    ):
        code = receiver.wait(timeout=config.step_timeout)
        output = receiver.logs(stdout=True, stderr=False)
        if code != 0:
            errors = receiver.logs(stdout=False, stderr=True).strip()
            raise BenchError(f"the peer's receiver exited with {code}: {errors[-300:]!r}")
    report = last_json(output, what="peer")
    moved = int(figure(report, "bytes", what="peer"))
    seconds = figure(report, "ended", what="peer") - figure(report, "started", what="peer")
    return Measurement(
        name=ceiling.PEER,
        label="peer: socat | tee | openssl",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=_rate(moved, seconds),
        verified=moved == size and report.get("sha256") == sha256,
        note=f"socat -> tee FILE -> openssl dgst -sha256, then sync FILE, at {dest.path}",
    )


# --------------------------------------------------------------------------- ours


def ensure_bench_file(lab_: Lab, size: int, *, progress: Progress = _quiet) -> tuple[str, str]:
    """A ``size``-byte file in the server's data root; returns (name, sha256)."""
    name = f"bench-{size}.bin"
    progress(f"preparing {name} on the server")
    argv = ["python3", "-c", _MAKE_FILE, str(size), name]
    lab_.exec("server", argv, timeout=lab_.config.bench.step_timeout).check(f"creating {name}")
    return name, lab_.file_sha256("server", f"{DATA_ROOT}/{name}")


@contextlib.contextmanager
def scratch_dir(lab_: Lab, service: str, base: str = "/tmp") -> Iterator[str]:  # noqa: S108
    """A fresh folder under ``base`` in ``service`` (so nothing resumes from an old
    ``.part``), removed after."""
    path = f"{base}/socketlab-bench-{uuid.uuid4().hex[:8]}"
    lab_.exec(service, ["mkdir", "-p", path], timeout=30).check(f"mkdir {path}")
    try:
        yield path
    finally:
        with contextlib.suppress(LabError):
            lab_.exec(service, ["rm", "-rf", path], timeout=60)


def fetch(lab_: Lab, name: str, sha256: str, dest: Dest | None = None) -> Measurement:
    """Our verified transfer: ``socketlab client fetch``, first content byte to verified file."""
    base = dest.path if dest else "/tmp"  # noqa: S108 - inside the client container
    with scratch_dir(lab_, "client", base) as folder:
        argv = ["socketlab", "client", "fetch", name, "--dest", folder, "--quiet", "--json"]
        result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout).check("fetch")
    report = last_json(result.stdout, what="fetch")
    moved = int(figure(report, "size", what="fetch") - figure(report, "resumed_from", what="fetch"))
    seconds = figure(report, "transfer_seconds", what="fetch")
    return Measurement(
        name=ceiling.OURS,
        label="fetch (verified)",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=_rate(moved, seconds),
        verified=report.get("sha256") == sha256,
        note=f"framed, SHA-256 checked, fsynced, renamed, at {base}",
    )


def naive(lab_: Lab, name: str, sha256: str, size: int, dest: Dest | None = None) -> Measurement:
    """The teaching baseline: ``naive-transfer send`` on the server, ``receive`` on the client."""
    config = lab_.config.bench
    outcome: dict[str, ExecResult | BaseException] = {}

    def serve() -> None:
        argv = ["socketlab", "naive-transfer", "send", f"{DATA_ROOT}/{name}",
                "--port", str(NAIVE_PORT), "--accept-timeout", f"{config.ready_timeout + 30:g}"]  # fmt: skip
        try:
            outcome["send"] = lab_.exec("server", argv, timeout=config.step_timeout)
        except LabError as exc:  # reported by the caller's thread below
            outcome["send"] = exc

    sender = threading.Thread(target=serve, name="naive-send")
    sender.start()
    try:
        base = dest.path if dest else "/tmp"  # noqa: S108 - inside the client container
        with scratch_dir(lab_, "client", base) as folder:
            argv = ["socketlab", "naive-transfer", "receive", f"{folder}/{name}",
                    "--host", "server", "--port", str(NAIVE_PORT),
                    "--connect-deadline", f"{config.ready_timeout:g}", "--json"]  # fmt: skip
            received = lab_.exec("client", argv, timeout=config.step_timeout)
    finally:
        sender.join(timeout=config.step_timeout + 30)
    sent = outcome.get("send")
    if isinstance(sent, BaseException):
        raise BenchError(f"naive sender failed: {sent}") from sent
    received.check("naive receive")
    report = last_json(received.stdout, what="naive receive")
    moved, seconds = int(report["bytes"]), float(report["seconds"])
    return Measurement(
        name=ceiling.NAIVE,
        label="naive recv(1024)",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=_rate(moved, seconds),
        verified=moved == size and report["sha256"] == sha256,
        note="teaching baseline: no framing, no size, no checksum",
    )


def tcp_vs_udp(
    lab_: Lab,
    *,
    total: int,
    size: int,
    rate: float,
    timeout: float | None = None,
    offer: int | None = None,
) -> dict[str, dict[str, Any]]:
    """``socketlab tcp-vs-udp --json`` in the client: protocol -> its row, and ``meaning``
    -> ``{"text": its sentence}`` (``timeout`` defaults to the configured step timeout;
    ``offer``: UDP's offered bit/s instead of ``rate`` datagrams per second)."""
    timeout = lab_.config.bench.step_timeout if timeout is None else timeout
    argv = ["socketlab", "tcp-vs-udp", "--json", "--bytes", str(total),
            "--size", str(size), "--rate", f"{rate:g}"]  # fmt: skip
    if offer is not None:
        argv += ["--offer", str(offer)]
    env = {"SOCKETLAB_TRANSFER_TIMEOUT": f"{timeout:g}"}
    result = lab_.exec("client", argv, timeout=timeout + 30, env=env).check("tcp-vs-udp")
    document = last_json(result.stdout, what="tcp-vs-udp")
    rows = document.get("rows", [])
    found = {row["protocol"]: row for row in rows if isinstance(row, dict)}
    if set(found) != {"tcp", "udp"}:
        raise BenchError(f"tcp-vs-udp gave rows for {sorted(found)}, expected tcp and udp")
    found["meaning"] = {"text": str(document.get("meaning", ""))}
    return found


def udp(lab_: Lab, *, total: int, size: int, rate: float) -> Measurement:
    """Our UDP sender to the listener, counted by the listener (through tcp-vs-udp)."""
    row = tcp_vs_udp(lab_, total=total, size=size, rate=rate)["udp"]
    return Measurement(
        name=ceiling.UDP,
        label="udp-send",
        transport="udp",
        bytes=int(row["bytes_delivered"]),
        seconds=float(row["duration_s"]),
        bits_per_second=float(row["goodput_mbit_s"]) * 1e6,
        loss=float(row["loss"]),
        note=f"{size}-byte datagrams at {rate:g}/s; listener kernel drops {row['kernel_drops']}",
    )


# --------------------------------------------------------------------------- bench


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """How much to move, where the client writes, how often, under which conditions."""

    file_bytes: int
    naive_bytes: int  # the recv(1024) loop is slow: its own, smaller file
    iperf_seconds: int
    udp_bytes: int
    datagram_size: int = 1200
    datagram_rate: float = 10_000
    quick: bool = False
    check: bool = False  # run the shaping self-check on shaped links
    dest: str = "disk"
    repeat: int = 1  # tries of each ceiling figure, the peer and fetch; the best is kept
    idle_seconds: float = 10.0  # how long the idle lab's CPU is measured, first (0: not)
    shaped_bytes: int = 32 * 2**20  # the file (and at most the naive file) on shaped links
    conditions: tuple[LinkSpec, ...] = field(default_factory=lambda: (LinkSpec(),))

    @classmethod
    def short(cls) -> BenchOptions:
        """Seconds, not minutes: the unshaped link, small transfers."""
        return cls(
            file_bytes=32 * 2**20,
            naive_bytes=8 * 2**20,
            iperf_seconds=2,
            udp_bytes=2_400_000,
            datagram_rate=5000,
            quick=True,
            idle_seconds=3.0,
        )

    @classmethod
    def full(cls) -> BenchOptions:
        """The issue's two conditions, unshaped and 20 ms / 1 % loss, with a 2 GiB file."""
        return cls(
            file_bytes=2 * 2**30,
            naive_bytes=128 * 2**20,
            iperf_seconds=5,
            udp_bytes=24_000_000,
            conditions=(LinkSpec(), LinkSpec(delay=0.02, loss=0.01)),
        )


BENCH_LINKS: Final = (("server", "client"), ("client", "udp-listener"))
BENCH_SERVICES: Final = ("server", "client", "udp-listener")


@contextlib.contextmanager
def shaped(
    lab_: Lab,
    links: Sequence[tuple[str, str]],
    spec: LinkSpec,
    *,
    progress: Progress,
    check: bool = False,
) -> Iterator[str]:
    """Shape ``links`` with ``spec`` (none: leave them alone); yields the engine; unshapes after.

    With ``check`` the shaping self-check runs on each link (ShapingError if it fails).
    """
    if spec.is_empty:
        yield UNSHAPED
        return
    engines = set()
    try:
        for source, dest in links:
            progress(f"shaping {source} -> {dest}: {spec.describe()}")
            engines.add(str(shape(lab_, source, dest, spec, check=check).engine))
        yield ",".join(sorted(engines))
    finally:
        for source, dest in links:
            with contextlib.suppress(LabError):
                unshape(lab_, source, dest)


def _rtt(lab_: Lab, source: str, dest: str) -> float | None:
    return measure_rtt(lab_, source, dest, count=lab_.config.bench.rtt_pings).rtt_avg


Step = tuple[str, Callable[[], Measurement]]
IdleProbe = Callable[[float], IdleCpu]  # seconds -> the lab's idle CPU over them


def run_steps(
    steps: Sequence[Step], *, repeat: int, progress: Progress, where: str
) -> list[Measurement]:
    """Every step ``repeat`` times, round-robin (so drift hits all alike); best of each."""
    tries: dict[str, list[Measurement]] = {}
    for attempt in range(1, repeat + 1):
        for label, step in steps:
            shown = f"[{where}] {label}" + (f" ({attempt}/{repeat})" if repeat > 1 else "")
            progress(f"{shown} ...")
            measurement = step()
            progress(f"{shown}: {measurement.bits_per_second / 1e6:.1f} Mbit/s")
            tries.setdefault(measurement.name, []).append(measurement)
    return [best_of(found) for found in tries.values()]


@dataclass(frozen=True, kw_only=True)
class BenchFiles:
    """The server's files a condition moves: (name, sha256) of the big one and the naive
    one, and their sizes."""

    big: tuple[str, str]
    naive: tuple[str, str]
    big_bytes: int
    naive_bytes: int


def bench_sizes(options: BenchOptions, spec: LinkSpec) -> tuple[int, int]:
    """(file, naive file) bytes under ``spec``: a shaped link gets the smaller
    ``shaped_bytes`` (cubic at 20 ms and 1 % loss moves a few Mbit/s: 2 GiB would take
    most of an hour), the unshaped one the full size (pure)."""
    if spec.is_empty:
        return options.file_bytes, options.naive_bytes
    shaped = min(options.shaped_bytes, options.file_bytes)
    return shaped, min(options.naive_bytes, shaped)


def bench_files(
    lab_: Lab, options: BenchOptions, spec: LinkSpec, *, progress: Progress
) -> BenchFiles:
    """The server's files for ``spec`` (made once per size: :func:`ensure_bench_file`)."""
    big_bytes, naive_bytes = bench_sizes(options, spec)
    return BenchFiles(
        big=ensure_bench_file(lab_, big_bytes, progress=progress),
        naive=ensure_bench_file(lab_, naive_bytes, progress=progress),
        big_bytes=big_bytes,
        naive_bytes=naive_bytes,
    )


def bench_condition(
    lab_: Lab,
    spec: LinkSpec,
    options: BenchOptions,
    *,
    dest: Dest,
    files: BenchFiles,
    progress: Progress,
) -> BenchRun:
    """Every measurement under one condition, one after the other."""
    (name, sha256), (naive_name, naive_sha) = files.big, files.naive
    size = files.big_bytes
    before = load_average(lab_)
    with shaped(lab_, BENCH_LINKS, spec, progress=progress, check=options.check) as engine:
        rtt = _rtt(lab_, "client", "server")
        congestion = congestion_in_use(lab_, BENCH_SERVICES)
        ceiling_and_peers: list[Step] = [
            ("iperf3 TCP", lambda: iperf3_tcp(lab_, seconds=options.iperf_seconds)),
            ("SHA-256 in the client", lambda: sha256_rate(lab_, size)),
            (f"write+fsync at {dest.path}", lambda: write_fsync_rate(lab_, dest, size)),
            (
                f"write+fsync, write-behind, at {dest.path}",
                lambda: write_fsync_rate(lab_, dest, size, behind=True),
            ),
            ("peer: socat | tee | openssl", lambda: peer(lab_, dest, name, sha256, size)),
            ("socketlab fetch", lambda: fetch(lab_, name, sha256, dest)),
        ]
        once: list[Step] = [
            (
                "naive recv(1024) loop",
                lambda: naive(lab_, naive_name, naive_sha, files.naive_bytes, dest),
            ),
            (
                "iperf3 UDP",
                lambda: iperf3_udp(
                    lab_,
                    total=options.udp_bytes,
                    size=options.datagram_size,
                    rate=options.datagram_rate,
                ),
            ),
            (
                "socketlab UDP",
                lambda: udp(
                    lab_,
                    total=options.udp_bytes,
                    size=options.datagram_size,
                    rate=options.datagram_rate,
                ),
            ),
        ]
        where = spec.describe()
        measurements = run_steps(
            ceiling_and_peers, repeat=options.repeat, progress=progress, where=where
        )
        measurements += run_steps(once, repeat=1, progress=progress, where=where)
    after = load_average(lab_)
    return BenchRun(
        condition=Condition(
            spec=spec.describe(),
            engine=engine,
            rtt=rtt,
            dest=dest.name,
            dest_path=dest.path,
            dest_fs=dest.fs,
            load_average=tuple(v for v in (before, after) if v is not None),
            congestion=congestion,
        ),
        measurements=tuple(measurements),
    )


def run_bench(
    lab_: Lab,
    options: BenchOptions,
    *,
    progress: Progress = _quiet,
    idle: IdleProbe | None = None,
) -> BenchReport:
    """``lab bench``: every condition in ``options``, same containers, one run.

    ``idle`` measures the lab's idle CPU over ``options.idle_seconds`` first,
    before anything of the bench runs in it (``lab.bench.idle.measure_idle_cpu``).
    """
    if options.repeat < 1:
        raise BenchError(f"repeat must be at least 1, not {options.repeat}")
    started = now_iso()
    require_services(lab_, BENCH_SERVICES)
    refuse_foreign_shaping(lab_)
    idle_cpu = None
    if idle is not None and options.idle_seconds > 0:
        progress(f"the idle lab's CPU over {options.idle_seconds:g} s ...")
        idle_cpu = idle(options.idle_seconds)
        progress(f"the idle lab's CPU: {idle_cpu.total:.2f} % of one core")
    dest = check_dest(lab_, options.dest, size=options.file_bytes)
    runs = [
        bench_condition(
            lab_,
            spec,
            options,
            dest=dest,
            files=bench_files(lab_, options, spec, progress=progress),
            progress=progress,
        )
        for spec in options.conditions
    ]
    iperf_version = next(
        (m.note for run in runs for m in run.measurements if m.name == "iperf3-tcp"), None
    )
    return BenchReport(
        started=started,
        finished=now_iso(),
        quick=options.quick,
        file_bytes=options.file_bytes,
        repeat=options.repeat,
        versions=versions(lab_, iperf3=iperf_version),
        runs=tuple(runs),
        idle_cpu=idle_cpu,
    )


# --------------------------------------------------------------------------- sweep

SWEEP_LINK: Final = ("client", "udp-listener")
SWEEP_SCENARIOS: Final = {"tcp-vs-udp": "the same payload over TCP and UDP, client -> udp-listener"}


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How much each grid point moves, how UDP is paced, and which TCP algorithms run."""

    bytes_per_point: int = 2_000_000
    datagram_size: int = 1200
    datagram_rate: float = 2000
    offer: int | None = None  # UDP's offered bit/s, instead of datagram_rate
    mss: int = DEFAULT_MSS
    point_timeout: float | None = None  # None: the configured step timeout
    check: bool = False  # run the shaping self-check at every shaped point
    congestion: tuple[str, ...] = ()  # the grid once per algorithm (none: as the lab has it)


def sweep_point(lab_: Lab, point: GridPoint, options: SweepOptions) -> SweepPoint:
    """Shape the sweep link for ``point`` (or unshape it), measure RTT, run tcp-vs-udp."""
    started = time.monotonic()
    source, dest = SWEEP_LINK
    if point.spec.is_empty:
        unshape(lab_, source, dest)
        engine = UNSHAPED
    else:
        engine = str(shape(lab_, source, dest, point.spec, check=options.check).engine)
    rtt = _rtt(lab_, source, dest)
    rows = tcp_vs_udp(
        lab_,
        total=options.bytes_per_point,
        size=options.datagram_size,
        rate=options.datagram_rate,
        timeout=options.point_timeout,
        offer=options.offer,
    )
    tcp, udp_row = rows["tcp"], rows["udp"]
    offered = udp_row.get("offered_mbit_s")
    return SweepPoint(
        delay=point.delay,
        loss=point.loss,
        engine=engine,
        rtt=rtt,
        tcp_bits_per_second=float(tcp["goodput_mbit_s"]) * 1e6,
        tcp_delivered=1.0 - float(tcp["loss"]),
        udp_bits_per_second=float(udp_row["goodput_mbit_s"]) * 1e6,
        udp_delivered=1.0 - float(udp_row["loss"]),
        udp_kernel_drops=int(udp_row.get("kernel_drops", 0)),
        seconds=time.monotonic() - started,
        congestion=str(tcp.get("congestion") or ""),
        tcp_latency_p50_ms=tcp.get("latency_p50_ms"),
        tcp_latency_p99_ms=tcp.get("latency_p99_ms"),
        udp_latency_p50_ms=udp_row.get("latency_p50_ms"),
        udp_latency_p99_ms=udp_row.get("latency_p99_ms"),
        udp_offered_bits_per_second=None if offered is None else float(offered) * 1e6,
        meaning=rows["meaning"]["text"],
    )


def run_sweep(
    lab_: Lab,
    scenario: str,
    grid: Grid,
    options: SweepOptions,
    *,
    progress: Progress = _quiet,
) -> SweepResult:
    """``lab sweep``: every grid point, in delay-major order, once per TCP algorithm of
    ``options.congestion`` (set on both ends of the link, put back after), with progress."""
    if scenario not in SWEEP_SCENARIOS:
        raise BenchError(
            f"no sweep scenario {scenario!r} (known: {', '.join(sorted(SWEEP_SCENARIOS))})"
        )
    started = now_iso()
    require_services(lab_, SWEEP_LINK)
    refuse_foreign_shaping(lab_)
    points = grid.points()
    algorithms: tuple[str | None, ...] = options.congestion or (None,)
    total = len(points) * len(algorithms)
    measured: list[SweepPoint] = []
    try:
        for algorithm in algorithms:
            if algorithm is not None:
                ensure_congestion(lab_, overrides=dict.fromkeys(SWEEP_LINK, algorithm))
                progress(f"TCP congestion control {algorithm} on {' and '.join(SWEEP_LINK)}")
            ends = congestion_in_use(lab_, SWEEP_LINK)
            for point in points:
                index = len(measured) + 1
                label = f"[{index}/{total}] {point.describe()}" + (
                    f" {algorithm}" if algorithm else ""
                )
                progress(f"{label} ...")
                result = dataclasses.replace(
                    sweep_point(lab_, point, options), congestion_ends=ends
                )
                measured.append(result)
                rtt = "-" if result.rtt is None else f"{result.rtt * 1000:.1f} ms"
                progress(
                    f"{label}: rtt {rtt}, "
                    f"TCP ({result.congestion or '?'}) {result.tcp_bits_per_second / 1e6:.2f} Mbit/s, "
                    f"UDP {result.udp_bits_per_second / 1e6:.2f} Mbit/s "
                    f"delivered {result.udp_delivered * 100:.1f}% ({result.seconds:.1f} s)"
                )
    finally:
        with contextlib.suppress(LabError):
            unshape(lab_, *SWEEP_LINK)
        if options.congestion:
            with contextlib.suppress(LabError):
                ensure_congestion(lab_, names=SWEEP_LINK, reset=True)
    return SweepResult(
        scenario=scenario,
        link=" -> ".join(SWEEP_LINK),
        started=started,
        finished=now_iso(),
        bytes_per_point=options.bytes_per_point,
        datagram_size=options.datagram_size,
        datagram_rate=options.datagram_rate,
        mss=options.mss,
        versions=versions(lab_),
        points=tuple(measured),
    )
