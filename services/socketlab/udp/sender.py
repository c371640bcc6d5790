"""``socketlab udp-send``: stream ``Message #n`` datagrams to the listener.

Each datagram carries the sender id, sequence number and send time
(:mod:`socketlab.udp.datagram`). The seed's pace is the default (one every
5 s); ``--rate`` sets datagrams per second for scenarios, paced in batches
against a monotonic deadline (:mod:`socketlab.udp.pacing`). Sending does not
need anyone to listen: datagrams sent while the listener is down are simply
lost (an ICMP "port unreachable" may surface as ``unreachable`` in the summary).
Prints a JSON summary on stdout when done.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import secrets
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass

from socketlab.config import UDP_LISTENER_HOST, UDP_PORT, env_float, env_str
from socketlab.errors import ConfigError, PeerUnavailable, SocketlabError
from socketlab.udp.datagram import MAX_DATAGRAM, encode, minimum_size
from socketlab.udp.pacing import Pacing

log = logging.getLogger("socketlab.udp")

SEND_TIMEOUT = env_float("SOCKETLAB_UDP_SEND_TIMEOUT", 5.0)
DEFAULT_INTERVAL = 5.0
# Below this rate a human is watching: log every datagram like the seed does.
CHATTY_RATE = 10.0
RESOLVE_INTERVAL = env_float("SOCKETLAB_UDP_RESOLVE_INTERVAL", 1.0)
UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


@dataclass(frozen=True, kw_only=True)
class SendOptions:
    """What to send: ``count`` datagrams (0: until interrupted) of ``size`` bytes."""

    count: int
    rate: float
    size: int
    sender_id: int
    verbose: bool = False
    timeout: float = SEND_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class SendReport:
    """The sender's JSON summary."""

    target: str
    sender_id: int
    count: int
    sent: int
    unreachable: int
    buffer_full: int
    bytes: int
    size: int
    rate_target: float
    rate_achieved: float
    duration_s: float
    first_seq: int
    last_seq: int
    interrupted: bool


def resolve(host: str, port: int) -> tuple[str, int]:
    """The IPv4 address of ``host:port``; PeerUnavailable when the name does not resolve."""
    try:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise PeerUnavailable(f"cannot resolve {host}: {exc}") from exc
    address = info[0][4]
    return str(address[0]), int(address[1])


def open_socket(host: str, port: int) -> socket.socket:
    """A UDP socket connected to ``host:port`` (one name lookup, not one per datagram)."""
    address = resolve(host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(address)
    # Non-blocking; a full send buffer is waited for with poll() and a timeout.
    sock.setblocking(False)
    return sock


def follow(sock: socket.socket, host: str) -> None:
    """Reconnect ``sock`` when ``host`` now resolves to another address.

    A listener container that is stopped and started again may come back on
    a new address under the same name; while it is down the name may not
    resolve at all, and then the old address is kept.
    """
    current = sock.getpeername()
    try:
        address = resolve(host, current[1])
    except PeerUnavailable:
        return
    if address != (current[0], current[1]):
        sock.connect(address)
        log.info("event=target_moved host=%s old=%s new=%s", host, current[0], address[0])


def _send(sock: socket.socket, data: bytes, poller: select.poll, timeout: float) -> None:
    while True:
        try:
            sock.send(data)
        except BlockingIOError:
            if not poller.poll(timeout * 1000):
                raise PeerUnavailable(f"send buffer still full after {timeout}s") from None
        else:
            return


def send_stream(
    sock: socket.socket, options: SendOptions, *, host: str | None = None
) -> SendReport:
    """Send the datagrams described by ``options`` on connected ``sock``.

    With ``host``, ICMP errors make the sender look the name up again (at most
    every :data:`RESOLVE_INTERVAL` seconds) and follow the listener to a new address.
    """
    pacing = Pacing(rate=options.rate, count=options.count)
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    next_resolve = 0.0
    sent = unreachable = buffer_full = total_bytes = seq = 0
    last_ns = 0
    interrupted = False
    # Local names: this loop runs up to ~10^5 times a second.
    send, clock = sock.send, time.time_ns
    sender_id, size = options.sender_id, options.size
    start = time.monotonic()
    try:
        while not pacing.finished(seq):
            elapsed = time.monotonic() - start
            burst = pacing.burst(sent=seq, elapsed=elapsed)
            if burst == 0:
                time.sleep(max(0.0, pacing.deadline(seq) - elapsed))  # pacing, not readiness
                continue
            for _ in range(burst):
                seq += 1
                # Strictly increasing send times let the listener tell a restart
                # (sent later, seq not higher) from reordering and duplicates.
                now_ns = clock()
                last_ns = now_ns if now_ns > last_ns else last_ns + 1
                data = encode(sender_id=sender_id, seq=seq, sent_ns=last_ns, size=size)
                try:
                    try:
                        send(data)
                    except BlockingIOError:
                        _send(sock, data, poller, options.timeout)
                except OSError as exc:
                    # An ICMP error about an earlier datagram (nobody listening, host
                    # gone) or a full device queue: this datagram is lost, go on.
                    if exc.errno in UNREACHABLE:
                        unreachable += 1
                        if host is not None and time.monotonic() >= next_resolve:
                            next_resolve = time.monotonic() + RESOLVE_INTERVAL
                            follow(sock, host)
                    elif exc.errno == errno.ENOBUFS:
                        buffer_full += 1
                    else:
                        raise
                    continue
                sent += 1
                total_bytes += len(data)
                if options.verbose:
                    log.info("event=sent seq=%d bytes=%d", seq, len(data))
    except KeyboardInterrupt:
        interrupted = True
    duration = time.monotonic() - start
    peer = sock.getpeername()
    return SendReport(
        target=f"{peer[0]}:{peer[1]}",
        sender_id=options.sender_id,
        count=options.count,
        sent=sent,
        unreachable=unreachable,
        buffer_full=buffer_full,
        bytes=total_bytes,
        size=options.size,
        rate_target=options.rate,
        rate_achieved=sent / duration if duration > 0 else 0.0,
        duration_s=duration,
        first_seq=1 if seq else 0,
        last_seq=seq,
        interrupted=interrupted,
    )


def build_parser(prog: str = "socketlab udp-send") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default=env_str("SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST))
    parser.add_argument("--port", type=int, default=UDP_PORT)
    parser.add_argument("--count", type=int, default=10, help="datagrams to send (0: forever)")
    parser.add_argument("--rate", type=float, help="datagrams per second (overrides --interval)")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between datagrams"
    )
    parser.add_argument("--size", type=int, default=0, help="datagram size in bytes (min ~40)")
    parser.add_argument("--sender-id", type=lambda v: int(v, 0), help="uint32 (default: random)")
    parser.add_argument("--timeout", type=float, default=SEND_TIMEOUT)
    parser.add_argument("--verbose", action="store_true", help="log every datagram")
    return parser


def options_from_args(args: argparse.Namespace) -> SendOptions:
    """Validate parsed arguments; raises ConfigError with a one-line reason."""
    if args.count < 0:
        raise ConfigError("--count must be 0 or more")
    if args.rate is not None:
        if args.rate < 0:
            raise ConfigError("--rate must be 0 (unpaced) or more")
        rate = args.rate
    elif args.interval <= 0:
        raise ConfigError("--interval must be above 0")
    else:
        rate = 1.0 / args.interval
    if not 0 <= args.size <= MAX_DATAGRAM:
        raise ConfigError(f"--size must be at most {MAX_DATAGRAM}")
    sender_id = secrets.randbits(32) if args.sender_id is None else args.sender_id
    if not 0 <= sender_id <= 0xFFFFFFFF:
        raise ConfigError("--sender-id must fit in 32 bits")
    return SendOptions(
        count=args.count,
        rate=rate,
        size=max(args.size, minimum_size(1)),
        sender_id=sender_id,
        verbose=args.verbose or 0 < rate <= CHATTY_RATE,
        timeout=args.timeout,
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        options = options_from_args(args)
        with open_socket(args.host, args.port) as sock:
            report = send_stream(sock, options, host=args.host)
    except SocketlabError as exc:
        print(f"socketlab udp-send: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"socketlab udp-send: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(report)))
    return 130 if report.interrupted else 0
