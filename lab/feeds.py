"""``lab feed ...``: drive the feed server in the ``server`` container.

The feed server's admin API listens inside the lab network; these commands
run ``socketlab feed ...`` in the server container, so they work the same
with Docker Desktop, remote engines and plain Linux hosts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lab.commands import make_lab
from lab.interface import Lab

FEED_COMMAND_TIMEOUT = 30.0


def run_feed_command(lab: Lab, argv: list[str]) -> int:
    """Run ``socketlab feed ARGV`` in the server container; echo its output."""
    result = lab.exec("server", ["socketlab", "feed", *argv], timeout=FEED_COMMAND_TIMEOUT)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code


def cmd_publish(args: argparse.Namespace) -> int:
    argv = ["publish", "--feed", args.feed, "--title", args.title, "--summary", args.summary]
    return run_feed_command(make_lab(args), argv)


def cmd_schedule(args: argparse.Namespace) -> int:
    return run_feed_command(
        make_lab(args), ["schedule", "--feed", args.feed, "--every", str(args.every)]
    )


def cmd_stats(args: argparse.Namespace) -> int:
    return run_feed_command(make_lab(args), ["stats"])


def register(subparsers: Any) -> None:
    """Add ``lab feed publish|schedule|stats``."""
    feed = subparsers.add_parser("feed", help="publish entries on the lab's feed server")
    actions = feed.add_subparsers(dest="feed_command", required=True, metavar="ACTION")
    publish = actions.add_parser("publish", help="add an entry to a feed")
    publish.add_argument("--feed", default="news", help="feed name (default news)")
    publish.add_argument("--title", required=True)
    publish.add_argument("--summary", default="")
    publish.set_defaults(func=cmd_publish)
    schedule = actions.add_parser("schedule", help="publish an entry every N seconds (0 stops)")
    schedule.add_argument("--feed", default="news")
    schedule.add_argument("--every", type=float, required=True, metavar="SECONDS")
    schedule.set_defaults(func=cmd_schedule)
    stats = actions.add_parser("stats", help="requests, 200s, 304s and bytes per feed")
    stats.set_defaults(func=cmd_stats)
