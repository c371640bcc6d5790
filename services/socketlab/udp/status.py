"""``socketlab udp-stats``: read (or reset) the listener's counters from any container.

Prints the JSON of ``GET /stats`` (``--reset``: ``POST /reset``, which answers
the stats as they were just before clearing them; it carries the lab's admin
token from ``SOCKETLAB_ADMIN_TOKEN_FILE``, mounted in the ``client`` container).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socketlab.commandline import add_setting, command_parser
from socketlab.config import UDP_LISTENER_HOST, UDP_STATUS_PORT, EnvConfig, env_config, env_field
from socketlab.credentials import ADMIN_TOKEN_FILE, bearer, read_token
from socketlab.errors import PeerUnavailable, SocketlabError

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
    admin_token_file: Path = env_field(
        "SOCKETLAB_ADMIN_TOKEN_FILE",
        Path(ADMIN_TOKEN_FILE),
        "file holding the lab's admin token (feed admin and faults, UDP reset); "
        "absent: those requests are refused",
    )


class ResetRefused(SocketlabError):
    """The listener refused ``POST /reset`` (no or a wrong admin token)."""


def _request(url: str, *, method: str, timeout: float, token: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(url, method=method, headers=bearer(token))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read(500).decode(errors="replace").strip()
        if exc.code == 401:
            raise ResetRefused(f"listener refused {method} {url}: HTTP 401: {detail}") from exc
        raise PeerUnavailable(f"listener status {url}: HTTP {exc.code}: {detail}") from exc
    except (OSError, ValueError) as exc:
        raise PeerUnavailable(f"listener status {url}: {exc}") from exc
    return payload


def fetch_stats(
    host: str, port: int = UDP_STATUS_PORT, *, timeout: float = STATUS_TIMEOUT
) -> dict[str, Any]:
    """The listener's ``GET /stats`` answer."""
    return _request(f"http://{host}:{port}/stats", method="GET", timeout=timeout)


def reset_stats(
    host: str,
    port: int = UDP_STATUS_PORT,
    *,
    timeout: float = STATUS_TIMEOUT,
    token: str | None = None,
) -> dict[str, Any]:
    """Clear the listener's counters (``token``: the lab's admin token); returns the stats before."""
    return _request(f"http://{host}:{port}/reset", method="POST", timeout=timeout, token=token)


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
    add_setting(parser, "--token-file", config=config, name="admin_token_file")
    parser.add_argument("--reset", action="store_true", help="clear the counters")
    args = parser.parse_args(argv)
    if args.reset:
        token = read_token(args.token_file)
        stats = reset_stats(args.host, args.status_port, timeout=args.timeout, token=token)
    else:
        stats = fetch_stats(args.host, args.status_port, timeout=args.timeout)
    print(json.dumps(stats, indent=2))
    return 0
