"""``socketlab COMMAND ...`` (also ``python -m socketlab``): the in-container CLI.

Each command is a function ``(argv: list[str]) -> int`` in its own module;
modules are imported lazily so a container only loads what it runs.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line description)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "server": ("socketlab.server_container", "main", "run the server container's services"),
    "client": ("socketlab.client", "main", "client side of the TCP demos (hello, fetch, ...)"),
    "naive-transfer": ("socketlab.naive", "main", "TEACHING BASELINE: the recv(1024) file loop"),
    "sampledata": ("socketlab.sampledata", "main", "create the sample files (--big: 1 GiB)"),
    "udp-listener": ("socketlab.udp.listener", "main", "count datagrams on 37020/udp"),
    "udp-send": ("socketlab.udp.sender", "main", "send 'Message #n' datagrams"),
    "tcp-vs-udp": ("socketlab.udp.compare", "main", "same payload over TCP and UDP: table"),
    "udp-stats": ("socketlab.udp.status", "main", "print (or --reset) the UDP listener's stats"),
    "rss-poller": ("socketlab.rss.poller", "main", "poll feeds and print new entries once"),
    "feed": (
        "socketlab.rss.publish",
        "main",
        "publish entries / schedules / stats on the feed server",
    ),
    "chat": ("socketlab.chat.client", "main", "chat with --name (interactive, or --script)"),
    "chat-swarm": ("socketlab.chat.swarm", "main", "many chat participants in one process"),
    "health": ("socketlab.health", "main", "healthcheck probes used by docker-compose.yml"),
    "idle": ("socketlab.health", "idle_main", "wait for SIGTERM (keeps the client up)"),
    "shaper": ("socketlab.shaper.loop", "main", "NFQUEUE verdict loop impairing one link"),
    "probe": ("socketlab.shaper.probe", "main", "ICMP echo probes: loss and RTT as JSON"),
}


def usage() -> str:
    lines = ["usage: socketlab COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<14} {about}" for name, (_, _, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"socketlab: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    command = getattr(importlib.import_module(module_name), function_name)
    result: int = command(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
