"""``lab scenarios`` and ``lab run``: registered by ``lab.cli``.

``lab run NAME... | --all`` validates every file first, makes the lab's network
the one the scenarios declare (undoing, with one warning line, what a dead run
or a hand left; ``--keep-network`` refuses instead), runs them against the lab
(which must be up) with a reaper recording the run, prints progress and a
result table, writes ``results/<run-id>/`` and exits 0 only when every check of
every scenario held.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lab.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, make_lab
from lab.console import err_console, out_console, print_rows, progress_printer
from lab.scenario.errors import ScenarioError

DEFAULT_RESULTS = Path("results")


def _folder(args: argparse.Namespace, repo_root: Path) -> Path:
    folder: Path = args.dir or repo_root / "scenarios"
    return folder


def cmd_scenarios(args: argparse.Namespace) -> int:
    from lab.scenario.plan import load_scenario  # noqa: PLC0415 - keep `lab --help` fast
    from lab.scenario.session import placeholder_variables, scenario_files  # noqa: PLC0415

    lab = make_lab(args)
    rows = []
    invalid = 0
    for path in scenario_files(_folder(args, lab.repo_root)):
        try:
            scenario = load_scenario(
                path, services=lab.services, variables=placeholder_variables(lab.services)
            )
        except ScenarioError as exc:
            invalid += 1
            rows.append({"scenario": path.stem, "description": f"INVALID: {exc.problems[0]}"})
            continue
        rows.append({"scenario": scenario.name, "description": scenario.description})
    print_rows("scenarios", rows)
    return EXIT_FAILURE if invalid else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from lab.scenario.session import resolve_names, run_files, scenario_files  # noqa: PLC0415

    if bool(args.names) == bool(args.all):
        err_console.print("lab run: give scenario names (or .yaml paths), or --all", markup=False)
        return EXIT_USAGE
    lab = make_lab(args)
    folder = _folder(args, lab.repo_root)
    paths = scenario_files(folder) if args.all else resolve_names(args.names, folder)
    if not paths:
        raise ScenarioError([f"no scenario files in {folder}"])
    if args.watch:
        report = _run_watched(args, lab, paths)
    else:
        report = run_files(
            lab,
            paths,
            results_root=args.results,
            progress=progress_printer,
            capture=args.capture,
            keep_network=args.keep_network,
            seed=args.seed,
        )

    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"run {report.run_id}", title_justify="left")
    for column in ("scenario", "result", "checks", "time", "why"):
        table.add_column(column, overflow="fold")
    for result in report.results:
        held = sum(1 for check in result.checks if check.passed)
        reason = result.reason().splitlines()
        table.add_row(
            result.name,
            "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]",
            f"{held}/{len(result.checks)}",
            f"{result.duration:.1f} s",
            reason[0] if reason else "",
            end_section=False,
        )
    out_console.print(table)
    out_console.print(f"results: {report.folder}", markup=False)
    return EXIT_OK if report.passed else EXIT_FAILURE


def _run_watched(args: argparse.Namespace, lab: Any, paths: list[Path]) -> Any:
    """``lab run --watch``: the run here, ``lab watch`` beside it in a thread (with a lab
    handle of its own), stopped and its helpers removed however the run ends."""
    import threading  # noqa: PLC0415

    from lab.scenario.session import run_files  # noqa: PLC0415
    from lab.watch import Watcher, run_watch  # noqa: PLC0415

    stop = threading.Event()
    with Watcher(make_lab(args)) as watcher:
        viewer = threading.Thread(
            target=run_watch,
            args=(watcher,),
            kwargs={"console": out_console, "stop": stop},
            name="lab-watch",
            daemon=True,
        )
        viewer.start()
        try:
            return run_files(
                lab,
                paths,
                results_root=args.results,
                progress=progress_printer,
                capture=args.capture,
                keep_network=args.keep_network,
                seed=args.seed,
            )
        finally:
            stop.set()
            viewer.join(timeout=watcher.config.read_timeout * 4 + watcher.config.interval)


def register(subparsers: Any) -> None:
    """Add ``scenarios`` and ``run`` to ``lab``'s subparsers."""
    listing = subparsers.add_parser(
        "scenarios",
        help="list scenarios with one-line descriptions",
        description="List the scenario files (validating each; exit 1 if one is invalid).",
    )
    listing.add_argument("--dir", type=Path, help="scenario folder (default: scenarios/)")
    listing.set_defaults(func=cmd_scenarios)

    run = subparsers.add_parser(
        "run",
        help="run scenarios: progress, result table, results/<run-id>/ (exit 0 iff all pass)",
        description="Run scenarios against the lab (start it with `lab up`). NAME is a "
        "scenario name from scenarios/ or a path to a .yaml file.",
    )
    run.add_argument("names", nargs="*", metavar="NAME")
    run.add_argument("--all", action="store_true", help="every scenario in the folder")
    run.add_argument("--dir", type=Path, help="scenario folder (default: scenarios/)")
    run.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="where run folders go (default: ./results)",
    )
    run.add_argument(
        "--capture",
        action="store_true",
        help="keep a pcap per shaped link (else of the client's traffic) under pcap/",
    )
    run.add_argument(
        "--keep-network",
        action="store_true",
        help="refuse to run, saying why, when shaping or partitions were left on the lab "
        "(by a dead run, or by hand) instead of undoing them with a warning",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="seed of every scenario (instead of its seed:); each link derives its own from it",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="show `lab watch` while the scenarios run (one line a second without a TTY)",
    )
    run.set_defaults(func=cmd_run)
