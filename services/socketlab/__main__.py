"""``socketlab COMMAND ...`` (also ``python -m socketlab``): the in-container CLI.

Each command is a function ``(argv: list[str]) -> int`` in its own module;
modules are imported lazily so a container only loads what it runs. This
module is the one place that sets up logging and maps errors to exit codes::

    0   ok
    1   failure: the command ran and did not succeed (peer gone, refused, ...)
    2   usage or configuration: a bad option or environment value
    130 interrupted (Ctrl-C)

A command reports a failure by raising a :class:`~socketlab.errors.SocketlabError`
(or by returning 1); :func:`main` prints it as one line on stderr.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from typing import Final

from socketlab.errors import ConfigError, SocketlabError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

# Services log their events; one-shot tools only show warnings and errors.
SERVICE: Final = logging.INFO
TOOL: Final = logging.WARNING


@dataclass(frozen=True)
class Command:
    module: str
    function: str
    about: str
    log_level: int = TOOL


COMMANDS: Final[dict[str, Command]] = {
    "server": Command(
        "socketlab.server_container", "main", "run the server container's services", SERVICE
    ),
    "client": Command(
        "socketlab.client", "main", "client side of the TCP demos (hello, fetch, ...)"
    ),
    "naive-transfer": Command(
        "socketlab.naive", "main", "TEACHING BASELINE: the recv(1024) file loop"
    ),
    "sampledata": Command("socketlab.sampledata", "main", "create the sample files (--big: 1 GiB)"),
    "udp-listener": Command(
        "socketlab.udp.listener", "main", "count datagrams on 37020/udp", SERVICE
    ),
    "udp-send": Command("socketlab.udp.sender", "main", "send 'Message #n' datagrams", SERVICE),
    "tcp-vs-udp": Command("socketlab.udp.compare", "main", "same payload over TCP and UDP: table"),
    "udp-trial": Command(
        "socketlab.udp.trial", "main", "one UDP capacity trial: send at a rate, read the count"
    ),
    "udp-stats": Command(
        "socketlab.udp.status", "main", "print (or --reset) the UDP listener's stats"
    ),
    "rss-poller": Command(
        "socketlab.rss.poller", "main", "poll feeds and print new entries once", SERVICE
    ),
    "feed": Command(
        "socketlab.rss.publish", "main", "publish entries / schedules / stats on the feed server"
    ),
    "chat": Command("socketlab.chat.client", "main", "chat with --name (interactive, or --script)"),
    "chat-swarm": Command("socketlab.chat.swarm", "main", "many chat participants in one process"),
    "health": Command("socketlab.health", "main", "healthcheck probes used by docker-compose.yml"),
    "idle": Command("socketlab.health", "idle_main", "wait for SIGTERM (keeps the client up)"),
    "shaper": Command(
        "socketlab.shaper.loop", "main", "NFQUEUE verdict loop impairing one link", SERVICE
    ),
    "probe": Command("socketlab.shaper.probe", "main", "ICMP echo probes: loss and RTT as JSON"),
    "reaper": Command(
        "socketlab.reaper.main",
        "main",
        "remove a dead controller's lab or undo its faults",
        SERVICE,
    ),
    "wait": Command(
        "socketlab.readiness", "main", "wait until a TCP port, UDP peer or URL answers (deadline)"
    ),
}


def exit_code(exc: BaseException) -> int:
    """The exit status for a command that ended with ``exc``."""
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE


def error_line(command: str, exc: BaseException) -> str:
    """The one line printed for ``exc``: config errors name the setting, not the command."""
    if isinstance(exc, ConfigError):
        return f"socketlab: {exc}"
    return f"socketlab {command}: {exc}"


def setup_logging(level: int) -> None:
    """Structured ``event=...`` lines on stderr, message only (Docker adds timestamps)."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")


def usage() -> str:
    lines = ["usage: socketlab COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14} {command.about}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return EXIT_OK if args else EXIT_USAGE
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"socketlab: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(command.log_level)
    function = getattr(importlib.import_module(command.module), command.function)
    try:
        result: int = function(rest)
    except SocketlabError as exc:
        print(error_line(name, exc), file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"socketlab {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


if __name__ == "__main__":
    sys.exit(main())
