"""Healthcheck probes for docker-compose.yml, and the ``idle`` keep-alive command.

``socketlab health tcp HOST PORT``  -> exit 0 when a TCP connect succeeds
``socketlab health http URL``       -> exit 0 on an HTTP 2xx answer
"""

from __future__ import annotations

import signal
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

from socketlab.commandline import add_setting, command_parser
from socketlab.config import EnvConfig, env_config, env_field


@env_config
@dataclass(frozen=True, kw_only=True)
class HealthConfig(EnvConfig):
    timeout: float = env_field(
        "SOCKETLAB_HEALTH_TIMEOUT", 2.0, "timeout of one healthcheck probe, seconds"
    )


def probe_tcp(host: str, port: int, *, timeout: float) -> None:
    """Connect to ``host:port`` and close; raises OSError when nothing answers."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


def probe_http(url: str, *, timeout: float) -> None:
    """GET ``url``; raises OSError (incl. URLError) unless the answer is 2xx."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - lab URLs only
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def main(argv: list[str]) -> int:
    config = HealthConfig.from_env()
    parser = command_parser("health", __doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    tcp = sub.add_parser("tcp")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    http = sub.add_parser("http")
    http.add_argument("url")
    add_setting(parser, "--timeout", config=config, name="timeout")
    args = parser.parse_args(argv)
    try:
        if args.kind == "tcp":
            probe_tcp(args.host, args.port, timeout=args.timeout)
        else:
            probe_http(args.url, timeout=args.timeout)
    except (OSError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


def idle_main(argv: list[str]) -> int:
    """Block until SIGTERM or SIGINT: the client container's main process.

    The client container runs demos through ``docker exec``; its main process
    only has to stay up and stop promptly when Compose asks.
    """
    del argv
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)
    return 0
