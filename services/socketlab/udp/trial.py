"""``socketlab udp-trial``: one capacity trial, ``--count`` datagrams at ``--rate``.

Sends like ``socketlab udp-send`` (one fresh sender id; equal-size datagrams
go to the kernel ``SOCKETLAB_UDP_TRIAL_SEGMENTS`` per call, UDP GSO, where it
can: they leave as separate datagrams, the sender just spends less per one), waits with a deadline
until the listener's count for that session stops moving, and prints one JSON
line: what the sender sent and at which rate, and what the listener counted
(its session's ``received``, and its own view of the rest: gaps between its
first and highest sequence number, ``missed_at_start``, the ``tail`` sent after
its highest, duplicates). ``lab bench --udp-capacity`` runs it for every trial.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from socketlab.commandline import add_setting, command_parser
from socketlab.config import (
    UDP_LISTENER_HOST,
    UDP_PORT,
    UDP_STATUS_PORT,
    EnvConfig,
    env_config,
    env_field,
)
from socketlab.errors import ConfigError
from socketlab.udp import sender
from socketlab.udp.datagram import MAX_DATAGRAM, minimum_size
from socketlab.udp.status import STATUS_TIMEOUT, fetch_stats, find_session

SETTLE_POLL = 0.1


@env_config
@dataclass(frozen=True, kw_only=True)
class TrialConfig(EnvConfig):
    """Settings of ``socketlab udp-trial``."""

    host: str = env_field(
        "SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST, "host name of the UDP listener"
    )
    status_timeout: float = env_field(
        "SOCKETLAB_STATUS_TIMEOUT",
        STATUS_TIMEOUT,
        "timeout of the UDP listener's status HTTP, seconds",
    )
    send_timeout: float = env_field(
        "SOCKETLAB_UDP_SEND_TIMEOUT",
        sender.SEND_TIMEOUT,
        "seconds a UDP sender waits for room in a full send buffer",
    )
    settle: float = env_field(
        "SOCKETLAB_UDP_SETTLE",
        0.5,
        "seconds the listener's count must stay still before tcp-vs-udp reads it",
    )
    segments: int = env_field(
        "SOCKETLAB_UDP_TRIAL_SEGMENTS",
        64,
        "datagrams udp-trial hands the kernel per call (UDP GSO; 1: one send per datagram)",
    )
    settle_deadline: float = env_field(
        "SOCKETLAB_UDP_TRIAL_DEADLINE",
        30.0,
        "longest wait of udp-trial for the listener's count after sending, seconds",
    )


def await_session(
    host: str,
    status_port: int,
    *,
    sender_id: int,
    sent: int,
    settle: float,
    deadline: float,
    timeout: float,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Poll the listener's stats until its session of ``sender_id`` has ``sent`` datagrams,
    or its count (and kernel drops) stood still ``settle`` seconds, or ``deadline`` passed.

    Returns the session (None if it never appeared) and the last stats.
    """
    until = time.monotonic() + deadline
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    session: dict[str, Any] | None = None
    stats: dict[str, Any] = {}
    while time.monotonic() < until:
        stats = fetch_stats(host, status_port, timeout=timeout)
        session = find_session(stats, sender_id)
        received = session["received"] if session else 0
        if session and received >= sent:
            break
        current = (received, stats.get("kernel_drops", 0))
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= settle:
            break
        time.sleep(SETTLE_POLL)  # polling the listener's counters, with a deadline
    return session, stats


def trial_result(report: sender.SendReport, session: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON line: the sender's figures and the listener's count of this session."""
    found = session or {}
    highest = int(found.get("highest_seq", 0))
    return {
        "sent": report.sent,
        "size": report.size,
        "rate_target": report.rate_target,
        "rate_achieved": report.rate_achieved,
        "duration_s": report.duration_s,
        "buffer_full": report.buffer_full,
        "unreachable": report.unreachable,
        "segments": report.segments,
        "received": int(found.get("received", 0)),
        "gaps": int(found.get("lost", 0)),
        "missed_at_start": int(found.get("missed_at_start", 0)) if session else 0,
        "tail": report.last_seq - highest if session else report.last_seq,
        "duplicates": int(found.get("duplicates", 0)),
        "late": int(found.get("late", 0)),
        "session": found.get("session"),
    }


def main(argv: list[str]) -> int:
    config = TrialConfig.from_env()
    parser = command_parser("udp-trial", __doc__, raw=True)
    add_setting(parser, "--host", config=config, name="host")
    parser.add_argument("--port", type=int, default=UDP_PORT)
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    parser.add_argument("--count", type=int, required=True, help="datagrams to send")
    parser.add_argument("--rate", type=float, required=True, help="datagrams per second")
    parser.add_argument("--size", type=int, default=1200, help="datagram size in bytes")
    add_setting(parser, "--segments", config=config, name="segments")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rate <= 0 or args.segments < 1:
        raise ConfigError("need --count >= 1, --rate > 0 and --segments >= 1")
    if not minimum_size(args.count) <= args.size <= MAX_DATAGRAM:
        raise ConfigError(
            f"--size must be {minimum_size(args.count)} to {MAX_DATAGRAM} for {args.count} datagrams"
        )
    options = sender.SendOptions(
        count=args.count,
        rate=args.rate,
        size=args.size,
        sender_id=secrets.randbits(32),
        timeout=config.send_timeout,
        segments=args.segments,
    )
    with sender.open_socket(args.host, args.port) as sock:
        report = sender.send_stream(sock, options)
    session, _ = await_session(
        args.host,
        args.status_port,
        sender_id=options.sender_id,
        sent=report.sent,
        settle=config.settle,
        deadline=config.settle_deadline,
        timeout=config.status_timeout,
    )
    print(json.dumps(trial_result(report, session)))
    return 0
