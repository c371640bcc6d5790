"""``socketlab client ...``: the client side of the TCP demos (``client`` container).

Commands (all take ``--host``, ``--port``, ``--timeout`` (connect),
``--read-timeout`` and ``--json``, which prints one final JSON line)::

    hello                      the server's greeting
    echo [TEXT] [--size N]     a message (optionally larger than any recv) comes back whole;
         [--trickle]           ... even when sent one byte per send()
    request ACTION [JSON]      any JSON action (time, lookup, ...)
    objects [--pickle]         a dict and a Product cross the wire and arrive equal
    ls                         files under the server's data root
    fetch NAME [--dest DIR]    download with .part, fsync, SHA-256 check, rename, resume
    blast --mode M --size N    blocking | nonblocking-naive | nonblocking at the server's sink
    timeout read|accept        the read-timeout and accept-timeout demos
    misbehave KIND             oversize-header | bad-json | slowloris: how the server copes
    swarm [--clients N] [--requests M]
                               N concurrent connections each echo M unique payloads;
                               a summary (failures, p50/p99 latency); exit 0 iff none failed

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr
(and, with ``--json``, a final line ``{"ok": false, "error": ..., "error_type": ...}``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from socketlab.__main__ import EXIT_INTERRUPTED, EXIT_OK, exit_code
from socketlab.client.blast import DEFAULT_BLAST, MODES, cmd_blast
from socketlab.client.connection import Endpoint
from socketlab.client.demos import cmd_echo, cmd_hello, cmd_ls, cmd_objects, cmd_request
from socketlab.client.fetch import cmd_fetch
from socketlab.client.output import Output
from socketlab.client.swarm import cmd_swarm
from socketlab.client.timeouts import cmd_misbehave, cmd_timeout
from socketlab.commandline import add_setting, command_parser
from socketlab.config import LAB_PROTOCOL_PORT, SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.credentials import PICKLE_KEY_FILE, read_secret
from socketlab.errors import SocketlabError

DEFAULT_DEST: Final = "/tmp/socketlab-downloads"  # noqa: S108 - the documented default


@env_config
@dataclass(frozen=True, kw_only=True)
class LabClientConfig(EnvConfig):
    """Settings of ``socketlab client``; each is also a command-line option."""

    host: str = env_field("SOCKETLAB_SERVER", SERVER_HOST, "host name of the server container")
    timeout: float = env_field(
        "SOCKETLAB_TIMEOUT", 5.0, "connect timeout of the TCP demo clients, seconds"
    )
    read_timeout: float = env_field(
        "SOCKETLAB_READ_TIMEOUT",
        30.0,
        "seconds a TCP demo client waits for the peer to send or take data",
    )
    dest: Path = env_field("SOCKETLAB_DEST", Path(DEFAULT_DEST), "where client fetch saves files")
    pickle_key: bytes | None = env_field(
        "SOCKETLAB_PICKLE_KEY",
        None,
        "shared HMAC key of the signed-pickle demo (server and client), outside the lab; "
        "unset: read from SOCKETLAB_PICKLE_KEY_FILE",
    )
    pickle_key_file: Path = env_field(
        "SOCKETLAB_PICKLE_KEY_FILE",
        Path(PICKLE_KEY_FILE),
        "file holding the signed-pickle demo's key (mounted by lab up in server and client); "
        "absent or empty: pickle disabled",
    )

    def resolved(self) -> LabClientConfig:
        """This config with the pickle key read from its file unless given (at the entry point)."""
        if self.pickle_key is not None:
            return self
        return replace(self, pickle_key=read_secret(self.pickle_key_file))


Command = Callable[[Endpoint, Output, argparse.Namespace], None]
COMMANDS: Final[dict[str, Command]] = {
    "hello": cmd_hello,
    "echo": cmd_echo,
    "request": cmd_request,
    "objects": cmd_objects,
    "ls": cmd_ls,
    "fetch": cmd_fetch,
    "blast": cmd_blast,
    "timeout": cmd_timeout,
    "misbehave": cmd_misbehave,
    "swarm": cmd_swarm,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _connection_options(
    parser: argparse.ArgumentParser, config: LabClientConfig, *, top: bool
) -> None:
    # Connection options work before or after the command; SUPPRESS keeps a
    # subcommand's unset option from overwriting the top-level value.
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    add_setting(parser, "--host", config=config, name="host", default=default(config.host))
    parser.add_argument("--port", type=int, default=default(LAB_PROTOCOL_PORT))
    add_setting(parser, "--timeout", config=config, name="timeout", default=default(config.timeout))
    add_setting(
        parser,
        "--read-timeout",
        config=config,
        name="read_timeout",
        default=default(config.read_timeout),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print a final JSON line with the results",
    )


def build_parser(config: LabClientConfig | None = None) -> argparse.ArgumentParser:
    """The parser; option defaults come from ``config`` (built-in defaults without one)."""
    config = config or LabClientConfig()
    parser = command_parser("client", __doc__, raw=True)
    _connection_options(parser, config, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, config, top=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hello", parents=[common], help="print the server's greeting")
    echo = sub.add_parser("echo", parents=[common], help="send a message, get it back whole")
    echo.add_argument("text", nargs="?", default="Hello, socketlab!")
    echo.add_argument("--size", type=int, default=0, help="send SIZE characters instead")
    echo.add_argument("--trickle", action="store_true", help="one byte per send()")
    request = sub.add_parser("request", parents=[common], help="any JSON action")
    request.add_argument("action")
    request.add_argument("value", nargs="?")
    objs = sub.add_parser("objects", parents=[common], help="a dict and a Product round trip")
    objs.add_argument("--pickle", action="store_true", help="signed pickle (needs the key)")
    add_setting(objs, "--pickle-key", config=config, name="pickle_key", type=str.encode)
    objs.add_argument("--unsigned", action="store_true", help="send the pickle unsigned")
    objs.add_argument("--tamper", action="store_true", help="change the pickle after signing")
    objs.add_argument(
        "--sentinel", default=None, help="pickle a payload that would create this file if loaded"
    )
    sub.add_parser("ls", parents=[common], help="list the server's files")
    fetch = sub.add_parser("fetch", parents=[common], help="download a file, verified")
    fetch.add_argument("name")
    add_setting(fetch, "--dest", config=config, name="dest")
    fetch.add_argument("--quiet", action="store_true", help="no progress output")
    fetch.add_argument(
        "--max-rate", type=float, default=0.0, help="read at most this many bytes/s (0: no cap)"
    )
    blast = sub.add_parser("blast", parents=[common], help="send bytes at the server's sink")
    blast.add_argument("--mode", choices=MODES, default="blocking")
    blast.add_argument("--size", type=int, default=DEFAULT_BLAST)
    timeout = sub.add_parser("timeout", parents=[common], help="read / accept timeout demos")
    timeout.add_argument("kind", choices=["read", "accept"])
    timeout.add_argument("--accept-timeout", type=float, default=2.0)
    timeout.add_argument("--listen-port", type=int, default=0)
    misbehave = sub.add_parser("misbehave", parents=[common], help="break the protocol on purpose")
    misbehave.add_argument("kind", choices=["oversize-header", "bad-json", "slowloris"])
    misbehave.add_argument("--interval", type=float, default=2.0)
    swarm = sub.add_parser("swarm", parents=[common], help="many concurrent clients echoing")
    swarm.add_argument("--clients", type=_positive, default=100, help="concurrent connections")
    swarm.add_argument("--requests", type=_positive, default=5, help="echo requests per client")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser(LabClientConfig.from_env().resolved()).parse_args(argv)
    endpoint = Endpoint(
        host=args.host, port=args.port, timeout=args.timeout, read_timeout=args.read_timeout
    )
    out = Output(as_json=args.json)
    try:
        COMMANDS[args.command](endpoint, out, args)
    except (SocketlabError, OSError) as exc:  # OSError: the local disk (fetch), not the peer
        print(f"client {args.command}: {exc}", file=sys.stderr)
        if not out.printed:
            out.result(args.command, False, error=str(exc), error_type=type(exc).__name__)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"client {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
