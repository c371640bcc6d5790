"""``socketlab tcp-vs-udp``: the same payload over TCP and over UDP, side by side.

What each protocol really trades, measured on one link in one run:

* **goodput**: TCP sends as fast as its congestion control lets it (the
  algorithm its socket used is reported); UDP is offered at a stated rate
  (``--offer 20mbit``, e.g. the link's rate; or ``--rate`` datagrams per
  second), paced, with no congestion control, so its goodput is at most that
  offer: on a clean link TCP wins because UDP was offered less, under loss
  UDP wins because TCP backs off.
* **per-message latency** p50 and p99 for both: TCP's payload is ``--size``-byte
  messages, each stamped with its send time (:mod:`socketlab.udp.latency`),
  which the sink times when the message is complete, in order; so TCP's
  retransmissions and head-of-line waits show, and so does the wait in the
  sender's buffer (kept short with ``TCP_NOTSENT_LOWAT``). UDP's is each
  datagram's one-way transit as the listener saw it.
* **delivery**: TCP's bytes delivered, UDP's datagrams delivered.

Each output ends with one sentence saying what the numbers mean under this
run's conditions (:func:`meaning`). Durations: TCP connect to the sink's
answer; UDP first send to last arrival (sender and listener share the host
clock in the lab). The listener's kernel drop counters are shown too, so
buffer overflow is not mistaken for network loss.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import struct
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
from socketlab.udp.latency import HEADER_SIZE, MAX_MESSAGE, MIN_MESSAGE, stream_header
from socketlab.udp.status import STATUS_TIMEOUT, fetch_stats
from socketlab.udp.tcp_sink import TCP_SINK_PORT
from socketlab.udp.trial import await_session

CHUNK = 64 * 1024
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux's number
_OFFER = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>bit|kbit|mbit|gbit)?", re.IGNORECASE)
_OFFER_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
# Below this share lost, a run "lost nothing" in the sentence (a stray drop is not the link's).
NEGLIGIBLE_LOSS = 0.005
# Congestion controls that back off on loss (the Mathis bound describes these).
LOSS_BASED = frozenset({"reno", "cubic", "bic", "htcp", "highspeed", "scalable", "illinois"})


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
    notsent_lowat: int = env_field(
        "SOCKETLAB_TCP_NOTSENT_LOWAT",
        16384,
        "bytes of unsent data tcp-vs-udp's TCP sender lets queue in its socket (0: no limit); "
        "less keeps its message latency to the network's",
    )


def parse_offer(text: str) -> int:
    """``20mbit`` (or ``20000000``) -> 20_000_000 bit/s; ConfigError otherwise."""
    match = _OFFER.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"--offer: {text!r} is not a rate (use e.g. 20mbit, 500kbit)")
    bits = round(float(match["number"]) * _OFFER_UNITS[(match["unit"] or "bit").lower()])
    if bits < 8:
        raise ConfigError(f"--offer: {text!r} is below 8 bit/s")
    return bits


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
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    congestion: str | None = None  # TCP: the algorithm its socket used
    offered_mbit_s: float | None = None  # UDP: the paced offer (None: unpaced)

    @property
    def goodput_mbit_s(self) -> float:
        return self.bytes_delivered * 8 / self.duration_s / 1e6 if self.duration_s > 0 else 0.0

    @property
    def loss(self) -> float:
        if self.bytes_sent == 0:
            return 0.0
        return 1.0 - self.bytes_delivered / self.bytes_sent

    @property
    def delivered(self) -> float:
        """Share of the payload that arrived (UDP: of the datagrams sent)."""
        if self.protocol == "udp" and self.datagrams_sent:
            return self.datagrams_delivered / self.datagrams_sent
        return self.bytes_delivered / self.bytes_sent if self.bytes_sent else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "goodput_mbit_s": self.goodput_mbit_s,
            "loss": self.loss,
            "delivered": self.delivered,
        }


def socket_congestion(sock: socket.socket) -> str | None:
    """The TCP congestion control ``sock`` uses (None where the option is missing)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    except (OSError, AttributeError):
        return None
    return raw.split(b"\0", 1)[0].decode("ascii", "replace") or None


def _batches(total: int, size: int) -> list[tuple[int, int]]:
    """(messages, bytes) per send: whole messages up to CHUNK, the last one short if need be."""
    per_batch = max(1, CHUNK // size)
    full, rest = divmod(total, size)
    batches = [(per_batch, per_batch * size)] * (full // per_batch)
    if full % per_batch:
        batches.append((full % per_batch, (full % per_batch) * size))
    if rest:
        batches.append((1, rest))
    return batches


def run_tcp(
    host: str, port: int, total: int, *, size: int = 1200, config: CompareConfig | None = None
) -> Outcome:
    """Send ``total`` bytes to the TCP sink as ``size``-byte timed messages; read its answer."""
    config = config or CompareConfig()
    per_batch = max(1, CHUNK // size)
    buffer = bytearray(bytes(range(256)) * (per_batch * size // 256 + 1))[: per_batch * size]
    stamps = struct.Struct("!" + f"Q{size - 8}x" * per_batch)
    sink = f"the TCP sink at {host}:{port}"
    start = time.monotonic()
    with peer_errors(sink, "connect", timeout=config.connect_timeout):
        conn = socket.create_connection((host, port), timeout=config.connect_timeout)
    with conn:
        conn.settimeout(config.transfer_timeout)
        if config.notsent_lowat:
            conn.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, config.notsent_lowat)
        algorithm = socket_congestion(conn)
        with peer_errors(sink, "send", timeout=config.transfer_timeout):
            conn.sendall(stream_header(size))
            view = memoryview(buffer)
            for messages, length in _batches(total, size):
                # every message of a batch is handed to the socket now
                now = time.time_ns()
                if messages == per_batch:
                    stamps.pack_into(buffer, 0, *([now] * per_batch))
                else:
                    for k in range(messages):
                        if (k + 1) * size <= length:
                            struct.pack_into("!Q", buffer, k * size, now)
                conn.sendall(view[:length])
            conn.shutdown(socket.SHUT_WR)
        with (
            peer_errors(sink, "read", timeout=config.transfer_timeout),
            conn.makefile("rb") as reader,
        ):
            reply = reader.readline(4096)
    duration = time.monotonic() - start
    try:
        answer = json.loads(reply)
        delivered = int(answer["bytes"]) - HEADER_SIZE
        latency = answer.get("latency") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PeerUnavailable(f"TCP sink {host}:{port} answered {reply[:80]!r}") from exc
    return Outcome(
        protocol="tcp",
        bytes_sent=total,
        bytes_delivered=max(0, delivered),
        duration_s=duration,
        latency_p50_ms=latency.get("p50_ms"),
        latency_p99_ms=latency.get("p99_ms"),
        latency_max_ms=latency.get("max_ms"),
        congestion=algorithm,
    )


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
    session, stats = await_session(
        host,
        status_port,
        sender_id=options.sender_id,
        sent=report.sent,
        settle=config.settle,
        deadline=config.transfer_timeout,
        timeout=timeout,
    )
    delivered = session["bytes"] if session else 0
    duration = (
        (session["last_arrival_ns"] - session["first_sent_ns"]) / 1e9
        if session
        else report.duration_s
    )
    found = session or {}
    return Outcome(
        protocol="udp",
        bytes_sent=report.bytes,
        bytes_delivered=delivered,
        duration_s=duration,
        datagrams_sent=report.sent,
        datagrams_delivered=found.get("received", 0),
        kernel_drops=stats.get("kernel_drops", 0) - drops_before,
        latency_p50_ms=found.get("transit_ms_p50"),
        latency_p99_ms=found.get("transit_ms_p99"),
        latency_max_ms=found.get("transit_ms_max"),
        offered_mbit_s=rate * size * 8 / 1e6 if rate > 0 else None,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: list[Outcome]) -> str:
    """A plain-text table (the in-container image carries no table library)."""
    header = ("protocol", "bytes sent", "delivered", "delivered %", "duration s",
              "goodput Mbit/s", "latency p50 ms", "p99 ms", "congestion")  # fmt: skip
    lines = [
        (
            row.protocol,
            f"{row.bytes_sent:,}",
            f"{row.bytes_delivered:,}",
            f"{row.delivered * 100:.2f}",
            f"{row.duration_s:.3f}",
            f"{row.goodput_mbit_s:.1f}",
            _ms(row.latency_p50_ms),
            _ms(row.latency_p99_ms),
            row.congestion
            or (
                "-" if row.offered_mbit_s is None else f"none, paced {row.offered_mbit_s:g} Mbit/s"
            ),
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


def comparison(tcp: Outcome, udp: Outcome) -> dict[str, float | None]:
    """The ratios a reader (or a scenario check) compares: UDP's goodput over TCP's, TCP's
    p99 message latency over UDP's, and each one's delivery."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else a / b

    return {
        "goodput_udp_over_tcp": ratio(udp.goodput_mbit_s, tcp.goodput_mbit_s),
        "p99_tcp_over_udp": ratio(tcp.latency_p99_ms, udp.latency_p99_ms),
        "p50_tcp_over_udp": ratio(tcp.latency_p50_ms, udp.latency_p50_ms),
        "delivered_tcp": tcp.delivered,
        "delivered_udp": udp.delivered,
    }


def meaning(tcp: Outcome, udp: Outcome) -> str:
    """One sentence: what this run's numbers say, given its pacing and congestion control."""
    algorithm = tcp.congestion or "its congestion control"
    udp_lost = 1.0 - udp.delivered
    if udp.offered_mbit_s is None:
        pace = "UDP was sent unpaced (as fast as this host could write datagrams)"
    else:
        pace = (
            f"UDP was offered at {udp.offered_mbit_s:.3g} Mbit/s, paced, with no congestion control"
        )
    if udp_lost > NEGLIGIBLE_LOSS:
        delivery = (
            f"UDP delivered {udp.delivered * 100:.1f} % (what the link dropped is gone) "
            f"while TCP delivered {tcp.delivered * 100:.1f} % by retransmitting"
        )
    else:
        delivery = (
            f"both delivered what they sent (UDP {udp.delivered * 100:.1f} %, "
            f"TCP {tcp.delivered * 100:.1f} %)"
        )
    if udp.goodput_mbit_s > tcp.goodput_mbit_s:
        backoff = (
            f"{algorithm} backs off at every loss"
            if tcp.congestion in LOSS_BASED
            else f"{algorithm} waits for its retransmissions"
        )
        speed = f"UDP's goodput beats TCP's because {backoff} while UDP keeps its pace"
    else:
        capped = "the rate it was offered" if udp.offered_mbit_s is not None else "this host"
        speed = f"TCP's goodput beats UDP's because UDP's is capped by {capped}, not by the link"
    if tcp.latency_p99_ms is not None and udp.latency_p99_ms is not None:
        late = (
            f"TCP's p99 message latency is {tcp.latency_p99_ms:.1f} ms against UDP's "
            f"{udp.latency_p99_ms:.1f} ms, for a TCP message waits in order behind any "
            "earlier one still being retransmitted (head-of-line blocking) and behind the "
            "sender's queued bytes"
        )
    else:
        late = "per-message latency was not reported by this listener"
    return f"TCP ({algorithm}) sent as fast as it could and {pace}; {delivery}; {speed}; {late}."


def main(argv: list[str]) -> int:
    config = CompareConfig.from_env()
    parser = command_parser("tcp-vs-udp", __doc__, raw=True)
    add_setting(parser, "--host", config=config, name="host")
    parser.add_argument("--udp-port", type=int, default=UDP_PORT)
    add_setting(parser, "--tcp-port", config=config, name="tcp_port")
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    parser.add_argument("--bytes", type=int, default=10_000_000, help="payload per protocol")
    parser.add_argument(
        "--size", type=int, default=1200, help="UDP datagram and TCP message size, bytes"
    )
    parser.add_argument("--rate", type=float, default=20_000, help="UDP datagrams/s (0: unpaced)")
    parser.add_argument(
        "--offer", default=None, help="UDP offered rate instead of --rate, e.g. 20mbit (payload)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.bytes <= 0 or not max(64, MIN_MESSAGE) <= args.size <= min(65507, MAX_MESSAGE):
        raise ConfigError("need --bytes > 0 and 64 <= --size <= 65507")
    if args.rate < 0:
        raise ConfigError("need --rate >= 0")
    rate = args.rate if args.offer is None else parse_offer(args.offer) / (args.size * 8)
    # Whole datagrams: both protocols carry exactly the same number of bytes.
    total = math.ceil(args.bytes / args.size) * args.size
    tcp = run_tcp(args.host, args.tcp_port, total, size=args.size, config=config)
    udp = run_udp(
        args.host,
        args.udp_port,
        args.status_port,
        total,
        size=args.size,
        rate=rate,
        config=config,
    )
    sentence = meaning(tcp, udp)
    if args.json:
        document = {
            "rows": [tcp.as_dict(), udp.as_dict()],
            "comparison": comparison(tcp, udp),
            "meaning": sentence,
        }
        print(json.dumps(document))
    else:
        print(format_table([tcp, udp]))
        if udp.kernel_drops:
            print(f"(the listener's kernel dropped {udp.kernel_drops} of them: full buffer)")
        print(sentence)
    return 0
