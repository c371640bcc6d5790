"""``socketlab udp-stats``: read (or reset) the listener's counters from any container.

Prints the JSON of ``GET /stats`` (``--reset``: ``POST /reset``, which answers
the stats as they were just before clearing them).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from socketlab.commandline import add_setting, command_parser
from socketlab.config import UDP_LISTENER_HOST, UDP_STATUS_PORT, EnvConfig, env_config, env_field
from socketlab.errors import PeerUnavailable

STATUS_TIMEOUT = 5.0


@env_config
@dataclass(frozen=True, kw_only=True)
class StatusConfig(EnvConfig):
    """Settings of ``socketlab udp-stats`` (the status client)."""

    host: str = env_field(
        "SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST, "host name of the UDP listener"
    )
    timeout: float = env_field(
        "SOCKETLAB_STATUS_TIMEOUT",
        STATUS_TIMEOUT,
        "timeout of the UDP listener's status HTTP, seconds",
    )


def _request(url: str, *, method: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - lab URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload: dict[str, Any] = json.load(response)
    except (OSError, ValueError) as exc:
        raise PeerUnavailable(f"listener status {url}: {exc}") from exc
    return payload


def fetch_stats(
    host: str, port: int = UDP_STATUS_PORT, *, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any]:
    """The listener's ``GET /stats`` answer."""
    return _request(f"http://{host}:{port}/stats", method="GET", timeout=timeout)


def reset_stats(
    host: str, port: int = UDP_STATUS_PORT, *, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any]:
    """Clear the listener's counters; returns the stats from just before."""
    return _request(f"http://{host}:{port}/reset", method="POST", timeout=timeout)


def find_session(stats: dict[str, Any], sender_id: int) -> dict[str, Any] | None:
    """The newest session of ``sender_id`` in a ``/stats`` answer."""
    for session in reversed(stats.get("sessions", [])):
        if session.get("sender_id") == sender_id:
            found: dict[str, Any] = session
            return found
    return None


def main(argv: list[str]) -> int:
    config = StatusConfig.from_env()
    parser = command_parser("udp-stats", __doc__, raw=True)
    add_setting(parser, "--host", config=config, name="host")
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    add_setting(parser, "--timeout", config=config, name="timeout")
    parser.add_argument("--reset", action="store_true", help="clear the counters")
    args = parser.parse_args(argv)
    query = reset_stats if args.reset else fetch_stats
    stats = query(args.host, args.status_port, timeout=args.timeout)
    print(json.dumps(stats, indent=2))
    return 0
