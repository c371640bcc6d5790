"""What every ``lab`` subcommand shares: exit codes and the lab it acts on.

The root CLI (``lab.cli``) reads :class:`~lab.config.LabConfig` once and puts
it on the parsed arguments as ``args.config``; :func:`make_lab` builds the
:class:`~lab.api.Lab` from that, ``-p`` and ``-f``. Subcommand modules import this
module and :mod:`lab.console`, never ``lab.cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Final

from lab.api import Lab
from lab.config import LabConfig
from lab.console import progress_printer

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # a lab error, a failed check or scenario
EXIT_USAGE: Final = 2  # bad arguments or a bad setting
EXIT_INTERRUPTED: Final = 130


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--repeat``, ``--count``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1")
    return value


def make_lab(args: argparse.Namespace) -> Lab:
    """The lab a command acts on: project ``-p``, Compose files ``-f``, ``--swarm`` and
    ``--spread``, settings read by the entry point."""
    config: LabConfig = args.config
    if getattr(args, "swarm", False) and config.orchestrator != "swarm":
        config = dataclasses.replace(config, orchestrator="swarm")
    if getattr(args, "spread", False) and not config.swarm.spread:
        config = dataclasses.replace(config, swarm=dataclasses.replace(config.swarm, spread=True))
    return Lab(
        project=args.project,
        progress=progress_printer,
        config=config,
        compose_files=getattr(args, "files", None) or (),
    )


def family_arguments(parser: argparse.ArgumentParser) -> None:
    """``--network NET`` and ``-4`` / ``-6`` for commands that act on a link."""
    parser.add_argument(
        "--network",
        metavar="NET",
        default=None,
        help="the network of the link, when the two share several",
    )
    family = parser.add_mutually_exclusive_group()
    family.add_argument(
        "-4", dest="family", action="store_const", const=4, help="IPv4 traffic only"
    )
    family.add_argument(
        "-6",
        dest="family",
        action="store_const",
        const=6,
        help="IPv6 traffic only (default: every family the network has)",
    )
