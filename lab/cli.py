"""``lab`` (also ``python -m lab``): the socketlab controller CLI.

Lifecycle commands live here; other command groups (shaping, scenarios,
benchmarks, feeds) live next to their code and register themselves through
``COMMAND_MODULES`` (each module has ``register(subparsers) -> None``). They
print through :mod:`lab.console` and build their lab with
:func:`lab.commands.make_lab`; none imports this module.

The settings (:class:`lab.config.LabConfig`) are read once, here, before the
parser is built, so a bad ``SOCKETLAB_*`` value fails every command, ``--help``
included, with one line. Exit codes: 0 success, 1 a lab error or a failed
check (one line on stderr), 2 bad usage or a bad setting, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lab import __version__
from lab.api import Lab
from lab.commands import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, make_lab
from lab.config import LabConfig
from lab.console import (
    err_console,
    out_console,
    print_error,
    print_log_line,
    print_rows,
    progress_printer,
)
from lab.errors import LabError
from lab.images import ImageNames, prune_images
from lab.interface import ServiceStatus
from lab.routing import route_rows
from lab.shaping import link_status, status_tables
from socketlab.errors import ConfigError

# Modules adding subcommands: each defines register(subparsers) -> None.
COMMAND_MODULES: list[str] = [
    "lab.shaping.cli",
    "lab.scenario.cli",
    "lab.bench.cli",
    "lab.feeds",
    "lab.watch",
    "lab.doctor",
    "lab.access",
]


def status_rows(statuses: Sequence[ServiceStatus], *, networks: bool) -> list[dict[str, str]]:
    """The services table: one row per container; with ``networks``, every network's
    addresses (v4 and v6) instead of the one IP."""
    rows = []
    on_nodes = any(s.node for s in statuses)  # a Swarm: which node runs each task
    for s in statuses:
        row = {
            "service": s.service,
            "state": s.state,
            "health": s.health,
            "restarts": str(s.restarts),
        }
        if on_nodes:
            row["node"] = s.node or "-"
        if networks:
            row["networks"] = "; ".join(s.addresses) or "-"
        else:
            row["ip"] = s.ip
        rows.append(row | {"container": s.container, "image": s.image})
    return rows


def print_status(lab: Lab) -> None:
    topology = lab.topology()
    several = len(topology.networks) > 1 or any(n.families() != (4,) for n in topology.networks)
    print_rows(f"lab {lab.project}", status_rows(lab.status(), networks=several))
    tables = status_tables(lab)
    print_rows("links", tables["links"])
    if tables["partitions"]:
        print_rows("partitions", tables["partitions"])
    if topology.routes():
        print_rows("routes", route_rows(topology))


def parse_scale(values: Sequence[str]) -> dict[str, int]:
    """``["client=3"]`` -> {"client": 3}; a bad one is a LabError naming it."""
    scale = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not name or not count.isdigit():
            raise LabError(f"--scale {value!r}: use SERVICE=N, e.g. client=3")
        scale[name] = int(count)
    return scale


def cmd_up(args: argparse.Namespace) -> int:
    if getattr(args, "spread", False):
        args.swarm = True  # --spread places services on Swarm nodes
    lab = make_lab(args)
    lab.up(timeout=args.timeout, scale=parse_scale(args.scale))
    print_status(lab)
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    removed = make_lab(args).down()
    swarm = ""
    if "services" in removed:
        swarm = f"{removed['services']} services, {removed.get('images', 0)} loaded image tags, "
    out_console.print(
        f"removed {swarm}{removed.get('containers', 0)} containers, "
        f"{removed.get('networks', 0)} networks, {removed.get('volumes', 0)} volumes left by label"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    print_status(lab)
    services = lab.status()
    unhealthy = [s for s in services if not s.ready]
    # A link whose shaping is not what was asked (dead helper, orphan rules) is unhealthy too.
    broken_links = [link for link in link_status(lab) if not link.healthy]
    return EXIT_FAILURE if unhealthy or broken_links or not services else EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    topology = lab.topology()
    for name in args.services or lab.services:
        for instance in topology.select(name):
            text = lab.logs(instance.key, tail=args.tail)
            for line in text.splitlines():
                print_log_line(instance.name, line)
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    images = lab.build()
    out_console.print(f"runtime: {images.runtime}\nnetkit:  {images.netkit}")
    if args.prune:
        removed = prune_images(
            lab.docker,
            images,
            progress_printer,
            names=ImageNames(namespace=lab.config.images.namespace),
        )
        out_console.print(f"pruned {len(removed)} images of earlier sources")
    return EXIT_OK


def build_parser(config: LabConfig | None = None) -> argparse.ArgumentParser:
    """The ``lab`` parser; ``config`` (default: the built-in defaults, not the
    environment) gives ``-p`` its default and reaches every command as ``args.config``."""
    config = config if config is not None else LabConfig()
    parser = argparse.ArgumentParser(prog="lab", description="socketlab controller")
    parser.set_defaults(config=config)
    parser.add_argument("--version", action="version", version=f"lab {__version__}")
    parser.add_argument(
        "-p",
        "--project",
        default=config.project,
        help=f"Compose project name (env SOCKETLAB_PROJECT; default {config.project})",
    )
    parser.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="a Compose file of the project (repeat for several, as with compose -f; "
        "env SOCKETLAB_COMPOSE_FILE; default docker-compose.yml and its override)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log controller events")
    parser.add_argument(
        "--swarm",
        action="store_true",
        default=config.orchestrator == "swarm",
        help="the lab is a stack on the Swarm DOCKER_HOST manages (env "
        "SOCKETLAB_ORCHESTRATOR=swarm); also accepted after any command",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> Any:
        command = sub.add_parser(name, help=help_, description=help_)
        command.set_defaults(func=func)
        return command

    up = add("up", cmd_up, "build images if needed, start the lab, wait until healthy")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health")
    up.add_argument(
        "--scale",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N replicas of SERVICE (repeatable; default: its deploy.replicas)",
    )
    up.add_argument(
        "--spread",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on a Swarm (implies --swarm): each service on a different node when there are "
        "enough (env SOCKETLAB_SWARM_SPREAD)",
    )
    add("down", cmd_down, "remove the lab's containers, networks and volumes")
    add("status", cmd_status, "services, health, IPs (exit 1 unless all healthy)")
    logs = add("logs", cmd_logs, "print service logs")
    logs.add_argument("services", nargs="*", help="services or SERVICE.N (default: all)")
    logs.add_argument("--tail", type=int, default=None, help="last N lines only")
    build = add("build", cmd_build, "build (or reuse) the lab images")
    build.add_argument(
        "--prune", action="store_true", help="also remove lab images of earlier sources"
    )

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    add_swarm_flag(sub)
    return parser


def add_swarm_flag(sub: Any) -> None:
    """``--swarm`` after any command too (``lab up --swarm``), not only before it."""
    for command in dict.fromkeys(sub.choices.values()):
        # SUPPRESS: a command without the flag keeps what the root parser decided.
        command.add_argument(
            "--swarm",
            action="store_true",
            default=argparse.SUPPRESS,
            help="the lab is a stack on the Swarm DOCKER_HOST manages",
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = LabConfig.from_env()
    except ConfigError as exc:
        # One plain line (no console wrapping), before anything else runs.
        sys.stderr.write(f"lab: {exc}\n")
        return EXIT_USAGE
    args = build_parser(config).parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(name)s %(message)s",
    )
    try:
        result: int = args.func(args)
    except LabError as exc:
        print_error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        err_console.print("lab: interrupted")
        return EXIT_INTERRUPTED
    return result
