"""Ports, addresses and timeouts shared by every container.

Values are configuration, not literals scattered in code: each has a default
here and can be overridden through an environment variable (set in
docker-compose.yml or by a scenario) or a command-line option.
"""

from __future__ import annotations

import os

from socketlab.errors import ConfigError

LAB_PROTOCOL_PORT = 4571
CHAT_PORT = 4572
FEED_HTTP_PORT = 8080
UDP_PORT = 37020
UDP_STATUS_PORT = 37021

SERVER_HOST = "server"
UDP_LISTENER_HOST = "udp-listener"


def env_str(name: str, default: str) -> str:
    """Return environment variable ``name`` or ``default`` when unset or empty."""
    value = os.environ.get(name, "")
    return value if value else default


def env_int(name: str, default: int) -> int:
    """Return environment variable ``name`` as an int; a bad value is a ConfigError."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    """Return environment variable ``name`` as a float; a bad value is a ConfigError."""
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
