"""``socketlab udp-stats``: read (or reset) the listener's counters from any container.

Prints the JSON of ``GET /stats`` (``--reset``: ``POST /reset``, which answers
the stats as they were just before clearing them).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import Any

from socketlab.config import UDP_LISTENER_HOST, UDP_STATUS_PORT, env_float, env_str
from socketlab.errors import PeerUnavailable

STATUS_TIMEOUT = env_float("SOCKETLAB_STATUS_TIMEOUT", 5.0)


def _request(url: str, *, method: str) -> dict[str, Any]:
    request = urllib.request.Request(url, method=method)  # noqa: S310 - lab URL
    try:
        with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT) as response:  # noqa: S310
            payload: dict[str, Any] = json.load(response)
    except (OSError, ValueError) as exc:
        raise PeerUnavailable(f"listener status {url}: {exc}") from exc
    return payload


def fetch_stats(host: str, port: int = UDP_STATUS_PORT) -> dict[str, Any]:
    """The listener's ``GET /stats`` answer."""
    return _request(f"http://{host}:{port}/stats", method="GET")


def reset_stats(host: str, port: int = UDP_STATUS_PORT) -> dict[str, Any]:
    """Clear the listener's counters; returns the stats from just before."""
    return _request(f"http://{host}:{port}/reset", method="POST")


def find_session(stats: dict[str, Any], sender_id: int) -> dict[str, Any] | None:
    """The newest session of ``sender_id`` in a ``/stats`` answer."""
    for session in reversed(stats.get("sessions", [])):
        if session.get("sender_id") == sender_id:
            found: dict[str, Any] = session
            return found
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="socketlab udp-stats", description=__doc__)
    parser.add_argument("--host", default=env_str("SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST))
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    parser.add_argument("--reset", action="store_true", help="clear the counters")
    args = parser.parse_args(argv)
    try:
        if args.reset:
            stats = reset_stats(args.host, args.status_port)
        else:
            stats = fetch_stats(args.host, args.status_port)
    except PeerUnavailable as exc:
        print(f"socketlab udp-stats: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2))
    return 0
