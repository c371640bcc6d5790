"""``lab`` (also ``python -m lab``): the socketlab controller CLI.

Lifecycle commands live here; other command groups (shaping, scenarios,
benchmarks) live next to their code and register themselves through
``COMMAND_MODULES`` (each module has ``register(subparsers) -> None``).

Exit codes: 0 success, 1 a lab error (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from lab import __version__
from lab.api import Lab
from lab.errors import LabError
from lab.images import prune_images
from lab.shaping import link_rows, link_status

# Modules adding subcommands: each defines register(subparsers) -> None.
COMMAND_MODULES: list[str] = ["lab.shaping.cli", "lab.scenario.cli", "lab.bench.cli", "lab.feeds"]
COMMAND_MODULES += ["lab.doctor"]


# emoji off: ":x:" in /etc/passwd lines must not become a cross mark
err_console = Console(stderr=True, emoji=False, highlight=False)
# Piped output (CI logs, tests) gets a wide fixed width so IPs are never cut.
out_console = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def progress_printer(message: str) -> None:
    err_console.print(f"• {message}", markup=False)


def make_lab(args: argparse.Namespace) -> Lab:
    return Lab(project=args.project, progress=progress_printer)


def print_rows(title: str, rows: Sequence[dict[str, str]]) -> None:
    """Print rows (dicts with the same keys) as a table."""
    if not rows:
        out_console.print(f"{title}: none")
        return
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(value) for value in row.values()))
    out_console.print(table)


def print_status(lab: Lab) -> None:
    rows = [
        {
            "service": s.service,
            "state": s.state,
            "health": s.health,
            "ip": s.ip,
            "container": s.container,
            "image": s.image,
        }
        for s in lab.status()
    ]
    print_rows(f"lab {lab.project}", rows)
    print_rows("links", link_rows(lab))


def cmd_up(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    lab.up(timeout=args.timeout)
    print_status(lab)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    removed = make_lab(args).down()
    out_console.print(
        f"removed {removed['containers']} containers, {removed['networks']} networks, "
        f"{removed['volumes']} volumes left by label"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    print_status(lab)
    services = lab.status()
    unhealthy = [s for s in services if (s.state, s.health) != ("running", "healthy")]
    # A link whose shaping is not what was asked (dead helper, orphan rules) is unhealthy too.
    broken_links = [link for link in link_status(lab) if not link.healthy]
    return 1 if unhealthy or broken_links or not services else 0


def cmd_logs(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    for service in args.services or lab.services:
        text = lab.logs(service, tail=args.tail)
        for line in text.splitlines():
            sys.stdout.write(f"{service:>12} | {line}\n")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    images = lab.build()
    out_console.print(f"runtime: {images.runtime}\nnetkit:  {images.netkit}")
    if args.prune:
        removed = prune_images(lab.docker, images, progress_printer)
        out_console.print(f"pruned {len(removed)} images of earlier sources")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab", description="socketlab controller")
    parser.add_argument("--version", action="version", version=f"lab {__version__}")
    parser.add_argument(
        "-p",
        "--project",
        default=os.environ.get("SOCKETLAB_PROJECT", "socketlab"),
        help="Compose project name (env SOCKETLAB_PROJECT; default socketlab)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log controller events")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        command = sub.add_parser(name, help=help_, description=help_)
        command.set_defaults(func=func)
        return command

    up = add("up", cmd_up, "build images if needed, start the lab, wait until healthy")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
    add("down", cmd_down, "remove the lab's containers, networks and volumes")
    add("status", cmd_status, "services, health, IPs (exit 1 unless all healthy)")
    logs = add("logs", cmd_logs, "print service logs")
    logs.add_argument("services", nargs="*", help="services (default: all)")
    logs.add_argument("--tail", type=int, default=None, help="last N lines only")
    build = add("build", cmd_build, "build (or reuse) the lab images")
    build.add_argument(
        "--prune", action="store_true", help="also remove lab images of earlier sources"
    )

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(name)s %(message)s",
    )
    try:
        result: int = args.func(args)
    except LabError as exc:
        err_console.print(f"lab: error: {exc}", markup=False, style="bold red")
        return 1
    except KeyboardInterrupt:
        err_console.print("lab: interrupted")
        return 130
    return result
