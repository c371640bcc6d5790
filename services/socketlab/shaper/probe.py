"""``socketlab probe``: the shaping self-check's measurements, as one JSON line each.

* ``socketlab probe HOST``: ICMP echo probes. Unlike ``ping -c``, it waits for
  every outstanding reply (up to ``--linger`` after the last send), so packets
  still in flight on a slow link are not counted as lost. The report carries,
  in send order, which probes were lost (``lost``: ``"0010..."``) and each
  one's round-trip time (``rtts``, null when lost), for burst lengths and
  delay percentiles. With ``--load-rate BITS`` it also sends UDP filler to
  HOST at that rate (of wire frames, ``--load-size`` payload bytes each),
  starting ``--load-warmup`` seconds before the first probe, so the probes
  measure the RTT of a loaded link (bufferbloat).
* ``socketlab probe HOST --stream PORT``: ``--count`` numbered UDP datagrams
  ``--interval`` apart to HOST:PORT (one way, no replies), for reordering.
* ``socketlab probe --listen PORT``: receive such a stream and print the order
  its datagrams arrived in (:mod:`socketlab.shaper.stream`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from socketlab.commandline import add_setting, command_parser
from socketlab.config import EnvConfig, env_config, env_field
from socketlab.shaper import stream
from socketlab.shaper.icmp import echo6_request, echo_request, parse_echo6_reply, parse_echo_reply
from socketlab.udp.pacing import Pacing

PAYLOAD = b"socketlab-probe!" * 3  # 48 bytes: a ping-sized datagram
RECV_SIZE = 65535
# Replies can come in bursts (jitter, a busy host descheduling us): a small
# receive buffer would drop them and report loss the link did not cause.
RECV_BUFFER = 4 * 1024 * 1024
SO_RCVBUFFORCE = 33  # Linux; the socket module does not export it
# Bounds of one run: the report lists every probe, so it stays a few MB at most.
MAX_PROBES = 200_000
MAX_SECONDS = 600.0
MAX_LOAD_RATE = 10**9  # bit/s of filler a Python sender can at least try
LOAD_PAYLOAD = 1400  # filler datagrams: full-size frames fill a queue fastest
MAX_LOAD_PAYLOAD = 65_000  # below IPv4's and IPv6's UDP limits
LOAD_PORT = 9  # discard: nobody needs to listen, the filler only has to cross the link
STREAM_SIZE = 64
LISTENING = "event=probe_listening"


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
    lost: str = ""  # one character per probe in send order: "1" lost, "0" answered
    rtts: list[float | None] = field(default_factory=list)  # seconds, in send order
    load_sent: int = 0  # filler datagrams sent alongside (--load-rate)
    load_dropped: int = 0  # filler the local socket had no room for


@dataclass(frozen=True, kw_only=True)
class Load:
    """UDP filler sent to the probed host while probing: ``rate`` bit/s of
    ``payload``-byte datagrams, from ``warmup`` seconds before the first probe."""

    rate: int
    warmup: float = 1.0
    payload: int = LOAD_PAYLOAD
    port: int = LOAD_PORT

    def datagrams_per_second(self, family: socket.AddressFamily = socket.AF_INET) -> float:
        # what the rate counts: the frame on the wire (UDP, IP and Ethernet headers)
        ip_header = 40 if family == socket.AF_INET6 else 20
        return self.rate / ((self.payload + 8 + ip_header + 14) * 8)


def _grow_receive_buffer(sock: socket.socket) -> None:
    try:
        # FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECV_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)


def _resolve(
    host: str, kind: socket.SocketKind = socket.SOCK_RAW
) -> tuple[socket.AddressFamily, str]:
    """The host's address and family: an IPv6 literal or name is probed with ICMPv6."""
    found = socket.getaddrinfo(host, None, type=kind)
    if not found:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, sockaddr = found[0]
    return family, str(sockaddr[0])


class _Filler:
    """The load: paced UDP datagrams to the host, dropped (and counted) when the socket is full."""

    def __init__(self, load: Load, family: socket.AddressFamily, address: str) -> None:
        self.load = load
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        # not connected: ICMP errors for the discard port are not reported to us
        self.sock.setblocking(False)
        self.target = (address, load.port)
        self.pacing = Pacing(rate=load.datagrams_per_second(family), count=0)
        self.data = b"\0" * load.payload
        self.sent = 0
        self.dropped = 0

    def send_due(self, elapsed: float) -> float:
        """Send what is due ``elapsed`` seconds after the load began; when the next is due."""
        for _ in range(self.pacing.burst(sent=self.sent + self.dropped, elapsed=elapsed)):
            try:
                self.sock.sendto(self.data, self.target)
                self.sent += 1
            except (BlockingIOError, OSError):
                self.dropped += 1  # a full socket or device queue: the queue is full, as wanted
        return self.pacing.deadline(self.sent + self.dropped)

    def close(self) -> None:
        self.sock.close()


def probe(
    host: str,
    *,
    count: int,
    interval: float,
    linger: float,
    socket_timeout: float = 1.0,
    load: Load | None = None,
) -> ProbeReport:
    """Send ``count`` echo requests ``interval`` apart; collect replies until ``linger``.

    With ``load``, filler goes to the host from ``load.warmup`` seconds before the
    first request until the last one is sent.
    """
    family, address = _resolve(host)
    v6 = family == socket.AF_INET6
    request = echo6_request if v6 else echo_request
    parse_reply = parse_echo6_reply if v6 else parse_echo_reply
    protocol = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    identifier = os.getpid() & 0xFFFF
    sent_at: dict[int, float] = {}
    rtts: dict[int, float] = {}
    duplicates = 0
    filler = _Filler(load, family, address) if load is not None else None
    warmup = load.warmup if load is not None else 0.0
    try:
        with socket.socket(family, socket.SOCK_RAW, protocol) as sock:
            sock.settimeout(socket_timeout)
            _grow_receive_buffer(sock)
            began = time.monotonic()
            start = began + warmup
            deadline: float | None = None
            next_load = 0.0
            sequence = 0
            while True:
                now = time.monotonic()
                if filler is not None and sequence < count:
                    next_load = began + filler.send_due(now - began)
                if sequence < count and now >= start + sequence * interval:
                    sent_at[sequence] = now
                    # 16-bit on the wire; sequence numbers past 65535 wrap (see below)
                    sock.sendto(request(identifier, sequence, PAYLOAD), (address, 0))
                    sequence += 1
                    if sequence == count:
                        deadline = now + linger
                    continue
                if deadline is not None and (len(rtts) == count or now >= deadline):
                    break
                next_event = start + sequence * interval if sequence < count else deadline
                assert next_event is not None  # noqa: S101 - set once everything is sent
                if filler is not None and sequence < count:
                    next_event = min(next_event, next_load)
                readable, _, _ = select.select([sock], [], [], max(0.0, next_event - now))
                if readable:
                    duplicates += _receive(sock, parse_reply, identifier, sent_at, rtts)
    finally:
        if filler is not None:
            filler.close()
    values = list(rtts.values())
    return ProbeReport(
        sent=count,
        received=len(rtts),
        duplicates=duplicates,
        rtt_avg=statistics.fmean(values) if values else None,
        rtt_min=min(values) if values else None,
        rtt_max=max(values) if values else None,
        rtt_median=statistics.median(values) if values else None,
        lost="".join("0" if n in rtts else "1" for n in range(count)),
        rtts=[round(rtts[n], 7) if n in rtts else None for n in range(count)],
        load_sent=filler.sent if filler is not None else 0,
        load_dropped=filler.dropped if filler is not None else 0,
        rtt_p99=percentile(values, 0.99),
    )


def _receive(
    sock: socket.socket,
    parse_reply: Callable[[bytes, int], int | None],
    identifier: int,
    sent_at: dict[int, float],
    rtts: dict[int, float],
) -> int:
    """Read one datagram; record the RTT of a reply to one of ours. 1 if it was a duplicate."""
    datagram = sock.recv(RECV_SIZE)
    arrived = time.monotonic()
    wire_seq = parse_reply(datagram, identifier)
    seq = _unwrap(wire_seq, len(sent_at)) if wire_seq is not None else None
    if seq is None or seq not in sent_at:
        return 0
    if seq in rtts:
        return 1
    rtts[seq] = arrived - sent_at[seq]
    return 0


def _unwrap(wire_seq: int, sent: int) -> int:
    """The probe number a 16-bit echo sequence stands for: the latest sent with those bits."""
    candidate = (sent - 1) - ((sent - 1 - wire_seq) % 0x10000)
    return candidate if candidate >= 0 else wire_seq


def send_stream(host: str, port: int, *, count: int, interval: float, run: int) -> int:
    """``count`` numbered datagrams of stream ``run`` to ``host:port``, ``interval`` apart."""
    family, address = _resolve(host, socket.SOCK_DGRAM)
    pacing = Pacing(rate=1.0 / interval if interval > 0 else 0.0, count=count)
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        start = time.monotonic()
        while not pacing.finished(sent):
            burst = pacing.burst(sent=sent, elapsed=time.monotonic() - start)
            if burst == 0:
                # pacing a schedule, not waiting for readiness
                time.sleep(max(0.0, start + pacing.deadline(sent) - time.monotonic()))
                continue
            for _ in range(burst):
                sock.sendto(stream.encode(run, sent, STREAM_SIZE), (address, port))
                sent += 1
    return sent


def listen_stream(
    port: int,
    *,
    count: int,
    run: int,
    wait: float,
    linger: float,
    socket_timeout: float = 1.0,
    on_listening: Callable[[], object] | None = None,
) -> stream.ArrivalLog:
    """Record stream ``run`` arriving at ``port`` until all ``count`` came, ``linger``
    seconds passed without one after the first, or ``wait`` seconds in all.

    ``on_listening`` is called once the port is bound: an in-process caller's readiness
    signal (the controller reads the ``LISTENING`` line on stderr instead)."""
    log = stream.ArrivalLog(count=count)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both families
        sock.settimeout(socket_timeout)
        _grow_receive_buffer(sock)
        sock.bind(("::", port))
        print(f"{LISTENING} port={port} run={run}", file=sys.stderr, flush=True)
        if on_listening is not None:
            on_listening()
        end = time.monotonic() + wait
        last: float | None = None
        while not log.complete:
            now = time.monotonic()
            until = end if last is None else min(end, last + linger)
            if now >= until:
                break
            readable, _, _ = select.select([sock], [], [], until - now)
            if readable:
                log.add(stream.decode(sock.recv(RECV_SIZE), run))
                last = time.monotonic()
    return log


def _problem(args: argparse.Namespace) -> str | None:
    """The first option out of its range, as one line (None: all fine)."""
    checks = (
        (1 <= args.count <= MAX_PROBES, f"--count must be between 1 and {MAX_PROBES}"),
        (0 < args.linger <= MAX_SECONDS, f"--linger must be above 0 and at most {MAX_SECONDS:g} s"),
        (0 < args.wait <= MAX_SECONDS, f"--wait must be above 0 and at most {MAX_SECONDS:g} s"),
        (0 <= args.interval <= 10, "--interval must be between 0 and 10 s"),
        (0 <= args.load_warmup <= 60, "--load-warmup must be between 0 and 60 s"),
        (
            0 <= args.load_rate <= MAX_LOAD_RATE,
            f"--load-rate must be between 0 and {MAX_LOAD_RATE} bit/s",
        ),
        (
            1 <= args.load_size <= MAX_LOAD_PAYLOAD,
            f"--load-size must be between 1 and {MAX_LOAD_PAYLOAD} bytes",
        ),
        (args.run is None or 0 <= args.run <= stream.MAX_RUN, "--run must fit in 32 bits"),
        (
            (args.host is None) != (args.listen is None),
            "give a HOST to probe, or --listen PORT (not both)",
        ),
    )
    return next((message for fine, message in checks if not fine), None)


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
    parser = command_parser("probe", __doc__, raw=True)
    parser.add_argument("host", nargs="?", help="the host to probe (not with --listen)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between probes")
    parser.add_argument("--linger", type=float, default=2.0, help="seconds to wait after the last")
    parser.add_argument("--load-rate", type=int, default=0, help="UDP filler, bit/s (0: none)")
    parser.add_argument(
        "--load-warmup", type=float, default=1.0, help="seconds of filler before the first probe"
    )
    parser.add_argument(
        "--load-size",
        type=int,
        default=LOAD_PAYLOAD,
        help="payload bytes of each filler datagram (the path's MTU less its headers)",
    )
    parser.add_argument("--stream", type=int, metavar="PORT", help="send a numbered UDP stream")
    parser.add_argument("--listen", type=int, metavar="PORT", help="receive a numbered stream")
    parser.add_argument("--run", type=int, default=None, help="stream number (default: random)")
    parser.add_argument("--wait", type=float, default=60.0, help="--listen: seconds at most")
    add_setting(parser, "--socket-timeout", config=config, name="socket_timeout")
    args = parser.parse_args(argv)
    problem = _problem(args)
    if problem is not None:
        parser.error(problem)
    run = secrets.randbits(32) if args.run is None else args.run
    result: object
    try:
        if args.listen is not None:
            result = listen_stream(
                args.listen,
                count=args.count,
                run=run,
                wait=args.wait,
                linger=args.linger,
                socket_timeout=args.socket_timeout,
            ).report()
        elif args.stream is not None:
            sent = send_stream(
                args.host, args.stream, count=args.count, interval=args.interval, run=run
            )
            result = {"sent": sent, "run": run}
        else:
            load = None
            if args.load_rate:
                load = Load(rate=args.load_rate, warmup=args.load_warmup, payload=args.load_size)
            report = probe(
                args.host,
                count=args.count,
                interval=args.interval,
                linger=args.linger,
                socket_timeout=args.socket_timeout,
                load=load,
            )
            result = asdict(report)
    except OSError as exc:
        print(f"event=probe_failed host={args.host} error={exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, separators=(",", ":")))
    return 0
