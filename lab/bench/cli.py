"""``lab bench`` and ``lab sweep``: registered by ``lab.cli``.

``lab bench [--quick] [--dest disk|tmpfs] [--repeat N] [--file-size SIZE] [--json FILE]
[--condition SPEC ...]`` prints the lab's idle CPU, then, per condition, a table of
absolute figures (iperf3, the client's SHA-256 and write+fsync rates, their minimum:
the ceiling, the peer, our fetch, ...) and a table of ratios with the issue's targets
(reported, never enforced), then the NFQUEUE engine's tables (``--no-engine`` leaves
them out, ``--engine-only`` measures only them; JSON key ``engine``). ``--udp-capacity``
measures only the UDP capacity search (:mod:`lab.bench.capacity`; JSON key
``udp_capacity``).
``lab sweep tcp-vs-udp --loss 0,1,2,5,10 --delay 0,20,80 [--congestion cubic,bbr]
[--offer 20mbit] [--out DIR]`` writes ``sweep.json``, PNG plots and ``report.html``
into DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.bench.ceiling import DESTS
from lab.bench.errors import GridError
from lab.commands import EXIT_OK, make_lab, positive_int
from lab.console import out_console, print_figures, progress_printer
from lab.interface import Lab

if TYPE_CHECKING:
    from lab.api import Lab as DockerLab
    from lab.bench.idle import IdleCpu

DEFAULT_RESULTS = Path("results")
_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>|k|kib|m|mib|g|gib)", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30}
MIN_FILE = 2**20


def file_size(text: str) -> int:
    """``--file-size``: bytes, or a number with K/M/G (KiB, MiB, GiB): ``2G``, ``512MiB``."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2G, 512M or 1048576)")
    size = int(match["number"]) * _UNITS[match["unit"].lower()]
    if size < MIN_FILE:
        raise argparse.ArgumentTypeError(f"{text!r} is below the smallest bench file, 1 MiB")
    return size


def cmd_bench(args: argparse.Namespace) -> int:
    from lab.bench.bench_runner import BenchOptions, run_bench  # noqa: PLC0415 - keep --help fast
    from lab.shaping.spec import LinkSpec  # noqa: PLC0415

    options = BenchOptions.short() if args.quick else BenchOptions.full()
    options = dataclasses.replace(options, check=args.check, dest=args.dest, repeat=args.repeat)
    if args.file_size is not None:
        options = dataclasses.replace(options, file_bytes=args.file_size)
    if args.condition:
        conditions = tuple(LinkSpec.parse(text) for text in args.condition)
        options = dataclasses.replace(options, conditions=conditions)
    lab = make_lab(args)
    document: dict[str, Any] = {}
    if args.udp_capacity:
        document["udp_capacity"] = _udp_capacity(lab, quick=args.quick)
    elif not args.engine_only:
        idle = functools.partial(_idle_cpu, lab)
        report = run_bench(lab, options, progress=progress_printer, idle=idle)
        if report.idle_cpu is not None:
            print_figures("the lab's idle CPU, before the measurements", report.idle_cpu_rows())
        for run in report.runs:
            print_figures(run.title, run.rows())
            print_figures(
                f"ratios ({run.condition.spec}, dest {run.condition.dest})", run.ratio_rows()
            )
        for warning in report.warnings:
            out_console.print(f"warning: {warning}", markup=False)
        best = f"best of {report.repeat} tries; " if report.repeat > 1 else ""
        out_console.print(
            f"{best}figures and ratios measured between the same containers in this run; "
            "targets are reported, not enforced",
            markup=False,
        )
        document = report.to_json()
    if not (args.no_engine or args.udp_capacity):
        document["engine"] = _engine_bench(lab, quick=args.quick)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        out_console.print(f"json: {args.json}", markup=False)
    return EXIT_OK


def _idle_cpu(lab: DockerLab, seconds: float) -> IdleCpu:
    """The lab's idle CPU over ``seconds``, from its containers' cgroup counters."""
    from lab.bench.idle import measure_idle_cpu  # noqa: PLC0415 - keep --help fast

    return measure_idle_cpu(lab, seconds=seconds)


def _engine_bench(lab: Lab, *, quick: bool) -> dict[str, Any]:
    """The NFQUEUE engine's tables (``lab.bench.engine``); returns its JSON."""
    from lab.bench.engine import EngineOptions  # noqa: PLC0415 - keep --help fast
    from lab.bench.engine_runner import run_engine_bench  # noqa: PLC0415

    options = EngineOptions.short() if quick else EngineOptions()
    engine = run_engine_bench(lab, options, progress=progress_printer)
    print_figures(engine.title, engine.throughput_rows())
    print_figures("NFQUEUE engine: added delay on a 50 ms link", engine.latency_rows())
    return engine.to_json()


def _udp_capacity(lab: Lab, *, quick: bool) -> dict[str, Any]:
    """The UDP capacity search, ours and iperf3's (``lab.bench.capacity``); returns its JSON."""
    from lab.bench.capacity import CapacityPlan  # noqa: PLC0415 - keep --help fast
    from lab.bench.capacity_runner import run_udp_capacity  # noqa: PLC0415

    plan = CapacityPlan.short() if quick else CapacityPlan()
    report = run_udp_capacity(lab, plan, progress=progress_printer)
    print_figures("UDP capacity trials, client -> udp-listener", report.trial_rows())
    print_figures("UDP capacity: highest offered rate with < 0.1 % loss", report.rows())
    out_console.print(report.summary(), markup=False)
    return report.to_json()


def cmd_sweep(args: argparse.Namespace) -> int:
    from lab.bench.grid import Grid  # noqa: PLC0415
    from lab.bench.report import write_sweep  # noqa: PLC0415
    from lab.bench.sweep_runner import SWEEP_SCENARIOS, SweepOptions, run_sweep  # noqa: PLC0415
    from lab.shaping.congestion import parse_congestion_list  # noqa: PLC0415
    from lab.shaping.errors import SpecError  # noqa: PLC0415
    from lab.shaping.spec import parse_rate  # noqa: PLC0415

    parser: argparse.ArgumentParser = args.sweep_parser
    if args.scenario not in SWEEP_SCENARIOS:
        parser.error(
            f"no sweep scenario {args.scenario!r} (known: {', '.join(sorted(SWEEP_SCENARIOS))})"
        )
    try:
        grid = Grid.parse(loss=args.loss, delay=args.delay)
    except GridError as exc:
        parser.error(str(exc))
    if args.bytes <= 0 or not 64 <= args.size <= 65507 or args.rate <= 0:
        parser.error("need --bytes > 0, 64 <= --size <= 65507 and --rate > 0")
    out = args.out or DEFAULT_RESULTS / (
        f"sweep-{args.scenario}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    )
    try:
        congestion = parse_congestion_list(args.congestion) if args.congestion is not None else ()
        offer = parse_rate("offer", args.offer) if args.offer is not None else None
    except SpecError as exc:
        parser.error(str(exc))
    options = SweepOptions(
        bytes_per_point=args.bytes,
        datagram_size=args.size,
        datagram_rate=args.rate,
        offer=offer,
        check=args.check,
        congestion=congestion,
    )
    result = run_sweep(make_lab(args), args.scenario, grid, options, progress=progress_printer)
    print_figures(f"lab sweep {args.scenario} ({result.link})", result.rows())
    for path in write_sweep(result, out):
        out_console.print(f"wrote {path}", markup=False)
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and ``sweep`` to the ``lab`` CLI."""
    bench_help = (
        "our verified transfer against its ceiling (min of iperf3, the client's SHA-256 "
        "and write+fsync) and a socat | tee | openssl peer, same run: tables and JSON"
    )
    bench = subparsers.add_parser("bench", help=bench_help, description=bench_help)
    bench.add_argument(
        "--quick", action="store_true", help="small transfers, unshaped link only (seconds)"
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    bench.add_argument(
        "--dest",
        choices=DESTS,
        default="disk",
        help="where the client (and the peer) write: disk, a volume on the Docker host's "
        "disk, or tmpfs, a RAM-backed volume (default: disk)",
    )
    bench.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        metavar="N",
        help="tries of iperf3, SHA-256, both write+fsync, the peer and fetch, round-robin; "
        "the best of each is reported (default: 1)",
    )
    bench.add_argument(
        "--file-size",
        type=file_size,
        metavar="SIZE",
        help="size of the transferred file, e.g. 2G or 512M (default: 2G, --quick: 32M)",
    )
    bench.add_argument(
        "--condition",
        action="append",
        metavar="SPEC",
        help='link condition, e.g. "delay=20ms loss=1%%" or none (repeatable; default: '
        "none and delay=20ms loss=1%%, --quick: none)",
    )
    bench.add_argument(
        "--check", action="store_true", help="self-check shaped links (measure delay and loss)"
    )
    engine = bench.add_mutually_exclusive_group()
    engine.add_argument(
        "--no-engine",
        action="store_true",
        help="leave out the NFQUEUE engine's figures (throughput at 0 and 20 ms, 50 ms delay)",
    )
    engine.add_argument(
        "--engine-only", action="store_true", help="measure only the NFQUEUE engine's figures"
    )
    engine.add_argument(
        "--udp-capacity",
        action="store_true",
        help="measure only UDP capacity: the highest rate with < 0.1%% loss, 64 and 1200-byte "
        "datagrams, ours and iperf3 -u (--quick: a small budget)",
    )
    bench.set_defaults(func=cmd_bench)

    sweep_help = "run a scenario over a loss x delay grid: PNG plots and an HTML report"
    sweep = subparsers.add_parser("sweep", help=sweep_help, description=sweep_help)
    sweep.add_argument("scenario", metavar="SCENARIO", help="sweep scenario (tcp-vs-udp)")
    sweep.add_argument("--loss", required=True, help="loss percentages, e.g. 0,1,2,5,10")
    sweep.add_argument("--delay", required=True, help="one-way delays in ms, e.g. 0,20,80")
    sweep.add_argument(
        "--out", type=Path, help="output folder (default: results/sweep-SCENARIO-TIME)"
    )
    sweep.add_argument(
        "--bytes", type=int, default=2_000_000, help="payload per protocol and point"
    )
    sweep.add_argument("--size", type=int, default=1200, help="UDP datagram size in bytes")
    sweep.add_argument("--rate", type=float, default=2000, help="UDP datagrams per second")
    sweep.add_argument(
        "--offer",
        metavar="RATE",
        help="offer UDP at this rate instead of --rate, e.g. 20mbit (the link's rate, say)",
    )
    sweep.add_argument(
        "--congestion",
        metavar="ALGS",
        help="run the grid once per TCP congestion control, e.g. cubic,bbr (set on both ends "
        "of the link; default: as the lab has it, cubic)",
    )
    sweep.add_argument(
        "--check", action="store_true", help="self-check the shaping at every shaped point"
    )
    sweep.set_defaults(func=cmd_sweep, sweep_parser=sweep)
