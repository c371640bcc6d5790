"""``socketlab tcp-vs-udp``: the same payload over TCP and over UDP, side by side.

TCP: the bytes go to the listener's TCP sink (:mod:`socketlab.udp.tcp_sink`),
which answers how many arrived; duration is connect to that answer.
UDP: the same number of bytes as ``--size``-byte datagrams at ``--rate`` to
the listener; delivered bytes and loss come from the listener's ``/stats``
for this sender's session, duration is first send to last arrival (sender
and listener share the host clock in the lab). The listener's kernel drop
counters are shown too, so buffer overflow is not mistaken for network loss.
"""

from __future__ import annotations

import json
import math
import secrets
import socket
import time
from dataclasses import asdict, dataclass
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
from socketlab.errors import ConfigError, PeerUnavailable, peer_errors
from socketlab.udp import sender
from socketlab.udp.status import STATUS_TIMEOUT, fetch_stats, find_session
from socketlab.udp.tcp_sink import TCP_SINK_PORT

SETTLE_POLL = 0.1
CHUNK = 64 * 1024


@env_config
@dataclass(frozen=True, kw_only=True)
class CompareConfig(EnvConfig):
    """Settings of ``socketlab tcp-vs-udp``."""

    host: str = env_field(
        "SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST, "host name of the UDP listener"
    )
    tcp_port: int = env_field(
        "SOCKETLAB_TCP_SINK_PORT", TCP_SINK_PORT, "TCP port of the sink behind tcp-vs-udp"
    )
    connect_timeout: float = env_field(
        "SOCKETLAB_CONNECT_TIMEOUT", 5.0, "connect timeout of chat and tcp-vs-udp, seconds"
    )
    transfer_timeout: float = env_field(
        "SOCKETLAB_TRANSFER_TIMEOUT", 120.0, "deadline of each tcp-vs-udp transfer, seconds"
    )
    # UDP is done when the listener's count for our session stops moving this long.
    settle: float = env_field(
        "SOCKETLAB_UDP_SETTLE",
        0.5,
        "seconds the listener's count must stay still before tcp-vs-udp reads it",
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


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One row of the comparison table."""

    protocol: str
    bytes_sent: int
    bytes_delivered: int
    duration_s: float
    datagrams_sent: int = 0
    datagrams_delivered: int = 0
    kernel_drops: int = 0

    @property
    def goodput_mbit_s(self) -> float:
        return self.bytes_delivered * 8 / self.duration_s / 1e6 if self.duration_s > 0 else 0.0

    @property
    def loss(self) -> float:
        if self.bytes_sent == 0:
            return 0.0
        return 1.0 - self.bytes_delivered / self.bytes_sent

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "goodput_mbit_s": self.goodput_mbit_s, "loss": self.loss}


def run_tcp(host: str, port: int, total: int, *, config: CompareConfig | None = None) -> Outcome:
    """Send ``total`` bytes to the TCP sink and read its count."""
    config = config or CompareConfig()
    chunk = memoryview(bytes(range(256)) * (CHUNK // 256))
    sink = f"the TCP sink at {host}:{port}"
    start = time.monotonic()
    with peer_errors(sink, "connect", timeout=config.connect_timeout):
        conn = socket.create_connection((host, port), timeout=config.connect_timeout)
    with conn:
        conn.settimeout(config.transfer_timeout)
        with peer_errors(sink, "send", timeout=config.transfer_timeout):
            remaining = total
            while remaining:
                piece = chunk[: min(remaining, CHUNK)]
                conn.sendall(piece)
                remaining -= len(piece)
            conn.shutdown(socket.SHUT_WR)
        with (
            peer_errors(sink, "read", timeout=config.transfer_timeout),
            conn.makefile("rb") as reader,
        ):
            reply = reader.readline(4096)
    duration = time.monotonic() - start
    try:
        delivered = int(json.loads(reply)["bytes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PeerUnavailable(f"TCP sink {host}:{port} answered {reply[:80]!r}") from exc
    return Outcome(protocol="tcp", bytes_sent=total, bytes_delivered=delivered, duration_s=duration)


def run_udp(
    host: str,
    port: int,
    status_port: int,
    total: int,
    *,
    size: int,
    rate: float,
    config: CompareConfig | None = None,
) -> Outcome:
    """Send ``total`` bytes as datagrams and read what the listener counted."""
    config = config or CompareConfig()
    count = max(1, math.ceil(total / size))
    options = sender.SendOptions(
        count=count,
        rate=rate,
        size=size,
        sender_id=secrets.randbits(32),
        timeout=config.send_timeout,
    )
    timeout = config.status_timeout
    drops_before = fetch_stats(host, status_port, timeout=timeout).get("kernel_drops", 0)
    with sender.open_socket(host, port) as sock:
        report = sender.send_stream(sock, options)
    # Wait, with a deadline, until the listener's count for us stops moving.
    deadline = time.monotonic() + config.transfer_timeout
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    session: dict[str, Any] | None = None
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = fetch_stats(host, status_port, timeout=timeout)
        session = find_session(stats, options.sender_id)
        received = session["received"] if session else 0
        current = (received, stats.get("kernel_drops", 0))
        if session and received >= report.sent:
            break
        if current != last:
            last, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since >= config.settle:
            break
        time.sleep(SETTLE_POLL)  # polling the listener's counters, with a deadline
    delivered = session["bytes"] if session else 0
    duration = (
        (session["last_arrival_ns"] - session["first_sent_ns"]) / 1e9
        if session
        else report.duration_s
    )
    return Outcome(
        protocol="udp",
        bytes_sent=report.bytes,
        bytes_delivered=delivered,
        duration_s=duration,
        datagrams_sent=report.sent,
        datagrams_delivered=session["received"] if session else 0,
        kernel_drops=stats.get("kernel_drops", 0) - drops_before,
    )


def format_table(rows: list[Outcome]) -> str:
    """A plain-text table (the in-container image carries no table library)."""
    header = ("protocol", "bytes sent", "delivered", "duration s", "goodput Mbit/s", "loss %")
    lines = [
        (
            row.protocol,
            f"{row.bytes_sent:,}",
            f"{row.bytes_delivered:,}",
            f"{row.duration_s:.3f}",
            f"{row.goodput_mbit_s:.1f}",
            f"{row.loss * 100:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    out = [
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def main(argv: list[str]) -> int:
    config = CompareConfig.from_env()
    parser = command_parser("tcp-vs-udp", __doc__, raw=True)
    add_setting(parser, "--host", config=config, name="host")
    parser.add_argument("--udp-port", type=int, default=UDP_PORT)
    add_setting(parser, "--tcp-port", config=config, name="tcp_port")
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    parser.add_argument("--bytes", type=int, default=10_000_000, help="payload per protocol")
    parser.add_argument("--size", type=int, default=1200, help="UDP datagram size")
    parser.add_argument("--rate", type=float, default=20_000, help="UDP datagrams/s (0: unpaced)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.bytes <= 0 or not 64 <= args.size <= 65507 or args.rate < 0:
        raise ConfigError("need --bytes > 0, 64 <= --size <= 65507, --rate >= 0")
    # Whole datagrams: both protocols carry exactly the same number of bytes.
    total = math.ceil(args.bytes / args.size) * args.size
    rows = [
        run_tcp(args.host, args.tcp_port, total, config=config),
        run_udp(
            args.host,
            args.udp_port,
            args.status_port,
            total,
            size=args.size,
            rate=args.rate,
            config=config,
        ),
    ]
    if args.json:
        print(json.dumps({"rows": [row.as_dict() for row in rows]}))
    else:
        print(format_table(rows))
        if rows[1].kernel_drops:
            print(f"(the listener's kernel dropped {rows[1].kernel_drops} of them: full buffer)")
    return 0
