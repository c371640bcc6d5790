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
import time
from dataclasses import asdict, dataclass

from socketlab.commandline import add_setting, command_parser
from socketlab.config import UDP_LISTENER_HOST, UDP_PORT, EnvConfig, env_config, env_field
from socketlab.errors import ConfigError, PeerUnavailable, SendTimeout, peer_errors
from socketlab.udp.datagram import MAX_DATAGRAM, Encoder, minimum_size
from socketlab.udp.pacing import Pacing

log = logging.getLogger("socketlab.udp")

SEND_TIMEOUT = 5.0
DEFAULT_INTERVAL = 5.0
# Below this rate a human is watching: log every datagram like the seed does.
CHATTY_RATE = 10.0
RESOLVE_INTERVAL = 1.0
UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux: segmentation offload (GSO)
MAX_SEGMENTS = 64  # datagrams per GSO call (the kernel takes up to 64 or 128)
MAX_GSO_BYTES = 65000  # one call's payload stays under UDP's 65,507


@env_config
@dataclass(frozen=True, kw_only=True)
class SenderConfig(EnvConfig):
    """Settings of ``socketlab udp-send`` (each is also an option)."""

    host: str = env_field(
        "SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST, "host name of the UDP listener"
    )
    send_timeout: float = env_field(
        "SOCKETLAB_UDP_SEND_TIMEOUT",
        SEND_TIMEOUT,
        "seconds a UDP sender waits for room in a full send buffer",
    )
    resolve_interval: float = env_field(
        "SOCKETLAB_UDP_RESOLVE_INTERVAL",
        RESOLVE_INTERVAL,
        "least seconds between two lookups of a moved UDP listener",
    )


@dataclass(frozen=True, kw_only=True)
class SendOptions:
    """What to send: ``count`` datagrams (0: until interrupted) of ``size`` bytes."""

    count: int
    rate: float
    size: int
    sender_id: int
    verbose: bool = False
    timeout: float = SEND_TIMEOUT
    resolve_interval: float = RESOLVE_INTERVAL  # after an ICMP error, look the name up again
    # Datagrams per send call: above 1, equal-size datagrams go to the kernel in one
    # call (UDP GSO) where it can; they still leave as separate datagrams. On a shaped
    # link an impairment may then treat a batch as one packet: scenarios keep 1.
    segments: int = 1


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
    segments: int = 1  # datagrams per send call used (1: no GSO)


def resolve(host: str, port: int) -> tuple[str, int]:
    """The IPv4 address of ``host:port``; ConnectFailed when the name does not resolve."""
    with peer_errors(f"{host}:{port}", "connect"):
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    address = info[0][4]
    return str(address[0]), int(address[1])


def open_socket(host: str, port: int) -> socket.socket:
    """A UDP socket connected to ``host:port`` (one name lookup, not one per datagram)."""
    address = resolve(host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with peer_errors(f"{host}:{port}", "connect"):
            sock.connect(address)
    except PeerUnavailable:
        sock.close()
        raise
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


def _send(
    sock: socket.socket, data: bytes | bytearray | memoryview, poller: select.poll, timeout: float
) -> None:
    while True:
        try:
            sock.send(data)
        except BlockingIOError:
            if not poller.poll(timeout * 1000):
                raise SendTimeout(
                    f"send buffer still full after {timeout:g} s (send timeout)"
                ) from None
        else:
            return


def gso_segments(sock: socket.socket, options: SendOptions) -> int:
    """Datagrams per call for ``options`` on ``sock``: turns UDP GSO on and returns
    how many fit a call, or 1 when it cannot be used (sizes vary, option refused)."""
    length = options.size
    last = options.count or 2**63
    if options.segments <= 1 or options.verbose or length < minimum_size(last):
        return 1  # datagrams of one run differ in length: GSO needs them equal
    segments = min(options.segments, MAX_SEGMENTS, MAX_GSO_BYTES // length)
    if segments <= 1:
        return 1
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, length)
    except OSError:
        return 1
    return segments


class _Stream:
    """One run of :func:`send_stream`: the numbering, the counters, the GSO batch."""

    def __init__(self, sock: socket.socket, options: SendOptions, host: str | None) -> None:
        self.sock, self.options, self.host = sock, options, host
        self.segments = gso_segments(sock, options)
        self.sent = self.unreachable = self.buffer_full = self.bytes = self.seq = 0
        self.last_ns = 0
        self.next_resolve = 0.0
        self.build = Encoder(sender_id=options.sender_id, size=options.size).encode
        self.batch = bytearray(options.size * self.segments)
        self.batch_view = memoryview(self.batch)

    def datagrams(self, many: int) -> bytearray | memoryview:
        """The next ``many`` datagrams, numbered and stamped, back to back."""
        build, clock, last_ns, seq = self.build, time.time_ns, self.last_ns, self.seq
        if many == 1:
            seq += 1
            # Strictly increasing send times let the listener tell a restart
            # (sent later, seq not higher) from reordering and duplicates.
            now_ns = clock()
            last_ns = now_ns if now_ns > last_ns else last_ns + 1
            data: bytearray | memoryview = build(seq, last_ns)
        else:
            batch, length = self.batch, self.options.size
            for offset in range(0, many * length, length):
                seq += 1
                now_ns = clock()
                last_ns = now_ns if now_ns > last_ns else last_ns + 1
                batch[offset : offset + length] = build(seq, last_ns)
            data = self.batch_view[: many * length]
        self.seq, self.last_ns = seq, last_ns
        return data

    def lost(self, exc: OSError, many: int) -> None:
        """An ICMP error about an earlier datagram (nobody listening, host gone) or a full
        device queue: these ``many`` are lost, go on. Any other error ends the stream."""
        if exc.errno in UNREACHABLE:
            self.unreachable += many
            if self.host is not None and time.monotonic() >= self.next_resolve:
                self.next_resolve = time.monotonic() + self.options.resolve_interval
                follow(self.sock, self.host)
        elif exc.errno == errno.ENOBUFS:
            self.buffer_full += many
        else:
            raise exc

    def run(self) -> None:
        options, segments = self.options, self.segments
        pacing = Pacing(rate=options.rate, count=options.count, batch=segments)
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        # Local names: this loop runs up to ~10^5 times a second.
        send, monotonic, datagrams = self.sock.send, time.monotonic, self.datagrams
        start = monotonic()
        while not pacing.finished(self.seq):
            elapsed = monotonic() - start
            burst = pacing.burst(sent=self.seq, elapsed=elapsed)
            if burst == 0:
                time.sleep(max(0.0, pacing.deadline(self.seq) - elapsed))  # pacing, not readiness
                continue
            while burst > 0:
                many = min(burst, segments)
                burst -= many
                data = datagrams(many)
                try:
                    try:
                        send(data)
                    except BlockingIOError:
                        _send(self.sock, data, poller, options.timeout)
                except OSError as exc:
                    self.lost(exc, many)
                    continue
                self.sent += many
                self.bytes += len(data)
                if options.verbose:
                    log.info("event=sent seq=%d bytes=%d", self.seq, len(data))


def send_stream(
    sock: socket.socket, options: SendOptions, *, host: str | None = None
) -> SendReport:
    """Send the datagrams described by ``options`` on connected ``sock``.

    With ``host``, ICMP errors make the sender look the name up again (at most
    every ``options.resolve_interval`` seconds) and follow the listener to a new address.
    Other socket errors end the stream as a :class:`~socketlab.errors.PeerUnavailable`.
    With ``options.segments`` above 1, equal-size datagrams go out in GSO batches.
    """
    stream = _Stream(sock, options, host)
    interrupted = False
    start = time.monotonic()
    target = "{}:{}".format(*sock.getpeername()[:2])
    try:
        with peer_errors(target, "send", timeout=options.timeout):
            stream.run()
    except KeyboardInterrupt:
        interrupted = True
    duration = time.monotonic() - start
    peer = sock.getpeername()
    return SendReport(
        target=f"{peer[0]}:{peer[1]}",
        sender_id=options.sender_id,
        count=options.count,
        sent=stream.sent,
        unreachable=stream.unreachable,
        buffer_full=stream.buffer_full,
        bytes=stream.bytes,
        size=options.size,
        rate_target=options.rate,
        rate_achieved=stream.sent / duration if duration > 0 else 0.0,
        duration_s=duration,
        first_seq=1 if stream.seq else 0,
        last_seq=stream.seq,
        interrupted=interrupted,
        segments=stream.segments,
    )


def build_parser(config: SenderConfig | None = None) -> argparse.ArgumentParser:
    config = config or SenderConfig()
    parser = command_parser("udp-send", __doc__)
    add_setting(parser, "--host", config=config, name="host")
    parser.add_argument("--port", type=int, default=UDP_PORT)
    parser.add_argument("--count", type=int, default=10, help="datagrams to send (0: forever)")
    parser.add_argument("--rate", type=float, help="datagrams per second (overrides --interval)")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between datagrams"
    )
    parser.add_argument("--size", type=int, default=0, help="datagram size in bytes (min ~40)")
    parser.add_argument("--sender-id", type=lambda v: int(v, 0), help="uint32 (default: random)")
    add_setting(parser, "--timeout", config=config, name="send_timeout", dest="timeout")
    parser.add_argument("--verbose", action="store_true", help="log every datagram")
    return parser


def options_from_args(args: argparse.Namespace, config: SenderConfig | None = None) -> SendOptions:
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
        resolve_interval=(config or SenderConfig()).resolve_interval,
    )


def main(argv: list[str]) -> int:
    config = SenderConfig.from_env()
    args = build_parser(config).parse_args(argv)
    options = options_from_args(args, config)
    with open_socket(args.host, args.port) as sock:
        report = send_stream(sock, options, host=args.host)
    print(json.dumps(asdict(report)))
    return 130 if report.interrupted else 0
