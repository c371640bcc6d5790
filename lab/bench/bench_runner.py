"""Running ``lab bench`` in the lab: every condition in one run, on the same containers.

``run_bench`` measures, per condition (figures named as in :mod:`lab.bench.ceiling`):

* **iperf3 TCP** (:mod:`lab.bench.iperf3_runs`), server -> client;
* **SHA-256** and **write+fsync** (:mod:`lab.bench.client_probes`), in the client;
* **the peer** (:mod:`lab.bench.peer`): socat | tee | openssl, then sync;
* **fetch** (:mod:`lab.bench.transfers`): ours, verified;
* **naive** (:mod:`lab.bench.transfers`) of a smaller file;
* **iperf3 UDP** and **udp** (:mod:`lab.bench.iperf3_runs`, :mod:`lab.bench.transfers`):
  the same payload, datagram size and rate from the client to the udp-listener.

The first six (iperf3 TCP to fetch; write+fsync counts twice, plain and write-behind)
run ``repeat`` times round-robin and keep their best try; the rest run once. The
destination (``--dest``, :mod:`lab.bench.storage`) is checked once, before the first,
and so is the server's memory: a warning in the report when its limit cannot keep the
bench file in its page cache.
Shaped conditions shape both links the measurements cross (server -> client
and client -> udp-listener) and remove that shaping afterwards. Each condition
records the TCP congestion control each end's connections used.
It refuses to start while the lab has shaping in force it did not make.
Ports and timeouts come from ``lab.config.bench`` (:class:`lab.config.BenchConfig`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from lab.bench.client_probes import sha256_rate, write_fsync_rate
from lab.bench.errors import BenchError
from lab.bench.idle import IdleCpu
from lab.bench.iperf3_runs import iperf3_tcp, iperf3_udp
from lab.bench.lab_state import (
    link_rtt,
    load_average,
    now_iso,
    refuse_foreign_shaping,
    require_services,
    versions,
)
from lab.bench.peer import peer
from lab.bench.records import UNSHAPED, BenchReport, BenchRun, Condition, Measurement, best_of
from lab.bench.storage import DATA_ROOT, Dest, check_dest, server_cache_warning
from lab.bench.transfers import fetch, naive, udp
from lab.congestion import congestion_in_use
from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress, silent
from lab.shaping import LinkSpec, shape, unshape

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


def ensure_bench_file(lab_: Lab, size: int, *, progress: Progress = silent) -> tuple[str, str]:
    """A ``size``-byte file in the server's data root; returns (name, sha256)."""
    name = f"bench-{size}.bin"
    progress(f"preparing {name} on the server")
    argv = ["python3", "-c", _MAKE_FILE, str(size), name]
    lab_.exec("server", argv, timeout=lab_.config.bench.step_timeout).check(f"creating {name}")
    return name, lab_.file_sha256("server", f"{DATA_ROOT}/{name}")


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
        rtt = link_rtt(lab_, "client", "server")
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
    progress: Progress = silent,
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
    warnings = tuple(w for w in [server_cache_warning(lab_, size=options.file_bytes)] if w)
    for warning in warnings:
        progress(f"warning: {warning}")
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
        warnings=warnings,
    )
