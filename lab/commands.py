"""What every ``lab`` subcommand shares: exit codes and the lab it acts on.

The root CLI (``lab.cli``) reads :class:`~lab.config.LabConfig` once and puts
it on the parsed arguments as ``args.config``; :func:`make_lab` builds the
:class:`~lab.api.Lab` from that and ``-p``. Subcommand modules import this
module and :mod:`lab.console`, never ``lab.cli``.
"""

from __future__ import annotations

import argparse
from typing import Final

from lab.api import Lab
from lab.config import LabConfig
from lab.console import progress_printer

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1  # a lab error, a failed check or scenario
EXIT_USAGE: Final = 2  # bad arguments or a bad setting
EXIT_INTERRUPTED: Final = 130


def make_lab(args: argparse.Namespace) -> Lab:
    """The lab a command acts on: project ``-p``, settings read by the entry point."""
    config: LabConfig = args.config
    return Lab(project=args.project, progress=progress_printer, config=config)
