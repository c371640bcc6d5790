"""``socketlab probe HOST``: ICMP echo probes for the shaping self-check.

Unlike ``ping -c``, it waits for every outstanding reply (up to ``--linger``
after the last send), so packets still in flight on a slow link are not
counted as lost; and it prints one JSON line for the controller to read.
"""

from __future__ import annotations

import json
import math
import os
import select
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass

from socketlab.commandline import add_setting, command_parser
from socketlab.config import EnvConfig, env_config, env_field
from socketlab.shaper.icmp import echo_request, parse_echo_reply

PAYLOAD = b"socketlab-probe!" * 3  # 48 bytes: a ping-sized datagram
RECV_SIZE = 65535
# Replies can come in bursts (jitter, a busy host descheduling us): a small
# receive buffer would drop them and report loss the link did not cause.
RECV_BUFFER = 4 * 1024 * 1024
SO_RCVBUFFORCE = 33  # Linux; the socket module does not export it


@env_config
@dataclass(frozen=True, kw_only=True)
class ProbeConfig(EnvConfig):
    socket_timeout: float = env_field(
        "SOCKETLAB_PROBE_SOCKET_TIMEOUT", 1.0, "timeout of the ICMP probe's socket, seconds"
    )


@dataclass(frozen=True)
class ProbeReport:
    sent: int
    received: int
    duplicates: int
    rtt_avg: float | None  # seconds
    rtt_min: float | None
    rtt_max: float | None
    rtt_median: float | None
    rtt_p99: float | None = None  # 99th percentile (the largest below 100 replies' worth)


def _grow_receive_buffer(sock: socket.socket) -> None:
    try:
        # FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)


def probe(
    host: str, *, count: int, interval: float, linger: float, socket_timeout: float = 1.0
) -> ProbeReport:
    """Send ``count`` echo requests ``interval`` apart; collect replies until ``linger``."""
    address = socket.gethostbyname(host)
    identifier = os.getpid() & 0xFFFF
    sent_at: dict[int, float] = {}
    rtts: dict[int, float] = {}
    duplicates = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(socket_timeout)
        _grow_receive_buffer(sock)
        start = time.monotonic()
        deadline: float | None = None
        sequence = 0
        while True:
            now = time.monotonic()
            if sequence < count and now >= start + sequence * interval:
                sent_at[sequence] = now
                sock.sendto(echo_request(identifier, sequence, PAYLOAD), (address, 0))
                sequence += 1
                if sequence == count:
                    deadline = now + linger
                continue
            if deadline is not None and (len(rtts) == count or now >= deadline):
                break
            next_event = start + sequence * interval if sequence < count else deadline
            assert next_event is not None  # noqa: S101 - set once everything is sent
            readable, _, _ = select.select([sock], [], [], max(0.0, next_event - now))
            if not readable:
                continue
            datagram = sock.recv(RECV_SIZE)
            arrived = time.monotonic()
            seq = parse_echo_reply(datagram, identifier)
            if seq is None or seq not in sent_at:
                continue
            if seq in rtts:
                duplicates += 1
            else:
                rtts[seq] = arrived - sent_at[seq]
    values = list(rtts.values())
    return ProbeReport(
        sent=count,
        received=len(rtts),
        duplicates=duplicates,
        rtt_avg=statistics.fmean(values) if values else None,
        rtt_min=min(values) if values else None,
        rtt_max=max(values) if values else None,
        rtt_median=statistics.median(values) if values else None,
        rtt_p99=percentile(values, 0.99),
    )


def percentile(values: list[float], share: float) -> float | None:
    """The ``share`` quantile of ``values`` (nearest rank: an RTT that was measured)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def main(argv: list[str]) -> int:
    """Entry point of ``socketlab probe``: prints one JSON object on stdout."""
    config = ProbeConfig.from_env()
    parser = command_parser("probe", __doc__)
    parser.add_argument("host")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between probes")
    parser.add_argument("--linger", type=float, default=2.0, help="seconds to wait after the last")
    add_setting(parser, "--socket-timeout", config=config, name="socket_timeout")
    args = parser.parse_args(argv)
    try:
        report = probe(
            args.host,
            count=args.count,
            interval=args.interval,
            linger=args.linger,
            socket_timeout=args.socket_timeout,
        )
    except OSError as exc:
        print(f"event=probe_failed host={args.host} error={exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report)))
    return 0
