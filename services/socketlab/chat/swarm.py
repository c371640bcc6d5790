"""``socketlab chat-swarm``: many chat participants in one process (load tests, benchmark).

N participants connect and join, wait until everyone is present, then each
sends M messages (as fast as possible, or ``--rate`` per second each,
staggered) and reads until it has every other participant's messages. Each
message's text is ``"<i> <send time>"`` so a receiver checks per-sender order
(``i`` must equal the hub's ``seq`` and grow by one) and measures delivery
latency (all participants share this process's clock).

``--slow K`` makes the first K participants deliberately slow readers
(``--slow-rate`` bytes/s, tiny receive buffer) that only listen; they are
reported apart, and the others' delivery is what the load test asserts on.

``--observers K`` (benchmarks at large N, where decoding every copy would
make this process the bottleneck): only K participants decode and check what
they receive; the others drain their sockets without decoding from their
``welcome`` on (so the join phase is not N² decodes either), and the K watch
everyone arrive. Throughput is then estimated as the observers' deliveries
scaled to N. While messages flow, those sinks are drained every
:data:`SINK_POLL` seconds, a slice of them per loop turn, rather than on
readiness: the hub's work is the same (the bytes wait in the sinks' receive
buffers, far below their size), but this process does one ``recv`` per sink
per poll instead of one per sink per hub flush, so its CPU stays off the hub's.
Sends follow one :class:`SendSchedule`, so a loop turn costs what is due, not N.

The report includes this process's own CPU time over the measured phase
(``generator_cpu``), so a reader can see whether the hub or the load
generator was the limit.

Prints one JSON object; exit 0 when every normal participant got all
``(N - 1) * M`` messages in per-sender order before the deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

from socketlab.chat import wire
from socketlab.commandline import add_setting, command_parser
from socketlab.config import CHAT_PORT, SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.errors import PeerUnavailable, peer_errors, translate_os_error
from socketlab.protocol import ProtocolError

log = logging.getLogger("socketlab.chat")

# 64 KiB, not more: recv(n) allocates n bytes first, and above glibc's mmap threshold
# (128 KiB) every call maps and unmaps them (~12 us a read, measured).
RECV_SIZE: Final = 64 * 1024
SINK_BUFFER: Final = 256 * 1024  # one buffer all sinks read into (recv_into)
SLOW_CHUNK: Final = 512
SLOW_RCVBUF: Final = 4096
LATENCY_SAMPLES: Final = 500_000  # reservoir size: memory stays bounded at N = 1000
# Our own pings keep us alive at the hub even when its pings wait behind a long
# backlog we are still reading; well under the hub's default peer timeout.
KEEPALIVE: Final = 2.0
CONNECTS_PER_TURN: Final = 20
# How often each sink (see --observers) is drained while messages flow. At
# N = 2,000 and 1 msg/s each, a sink gets ~0.3 MB/s: ~13 KB wait per poll.
SINK_POLL: Final = 0.05
MAX_TURN_WAIT: Final = 0.02  # the loop's longest select while messages flow
JOINS_IN_FLIGHT: Final = 64


@env_config
@dataclass(frozen=True, kw_only=True)
class SwarmConfig(EnvConfig):
    host: str = env_field("SOCKETLAB_SERVER", SERVER_HOST, "host name of the server container")
    port: int = CHAT_PORT
    participants: int = 200
    messages: int = 10
    rate: float = 0.0  # messages per second per participant; 0 = all at once
    prefix: str = "swarm"
    slow: int = 0
    slow_rate: float = 4096.0
    observers: int = 0  # 0: every participant decodes
    connect_timeout: float = 10.0
    join_deadline: float = 120.0
    deadline: float = 300.0


@dataclass(eq=False)
class _Peer:
    index: int
    name: str
    sock: socket.socket
    slow: bool
    stream: wire.ChatStream = field(default_factory=wire.ChatStream)
    out: bytearray = field(default_factory=bytearray)
    welcomed: bool = False
    present: int = 0
    sent: int = 0
    received: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    order_errors: int = 0
    next_read: float = 0.0
    complete_at: float | None = None
    ended: str | None = None
    writing: bool = False
    sink: bool = False  # drains without decoding (see --observers)
    sink_after_welcome: bool = False
    sink_bytes: int = 0
    last_sent: float = 0.0
    polled: bool = False  # read on a schedule (slow readers, sinks), not on readiness


class _Latencies:
    """A bounded uniform sample of delivery latencies (reservoir sampling)."""

    def __init__(self, size: int = LATENCY_SAMPLES) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self.worst = 0.0
        self._random = random.Random(4572)  # noqa: S311 - sampling, not security

    def add(self, value: float) -> None:
        self.seen += 1
        self.worst = max(self.worst, value)
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self._random.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value

    def summary(self) -> dict[str, float | int | None]:
        ordered = sorted(self.values)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return {
            "count": self.seen,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(self.worst * 1000, 3) if ordered else None,
        }


class SendSchedule:
    """Whose message is due: ``messages`` each, ``rate`` a second each, evenly spread.

    Participant ``i`` sends its ``k``-th message at ``(k * n + i) / (n * rate)``
    seconds (each offset by ``i / (n * rate)`` from the others), so every send
    has one place ``k * n + i`` in a single global order, and one pointer into
    it says what is due: a call costs the sends due, not a look at all ``n``.
    With ``rate == 0`` everything is due at once, participant by participant.
    """

    def __init__(self, participants: int, messages: int, rate: float) -> None:
        self.participants = participants
        self.messages = messages
        self.rate = rate
        self.total = participants * messages
        self._next = 0  # the next send's place in the global order

    def due(self, elapsed: float) -> list[int]:
        """The participants (indices, in order) with a send due ``elapsed`` s in,
        not returned before; a participant appears once per message."""
        n, start = self.participants, self._next
        if self.rate <= 0:
            self._next = self.total
            return [j // self.messages for j in range(start, self.total)] if n else []
        stop = min(self.total, int(elapsed * n * self.rate) + 1)
        if stop <= start:
            return []
        self._next = stop
        return [j % n for j in range(start, stop)]

    def next_at(self) -> float | None:
        """Seconds from the start when the next send is due; None when all are done."""
        if self._next >= self.total:
            return None
        if self.rate <= 0:
            return 0.0
        return self._next / (self.participants * self.rate)


class Swarm:
    """The participants and the one selectors loop that drives them."""

    def __init__(self, config: SwarmConfig) -> None:
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.peers: list[_Peer] = []
        self.names: set[str] = set()
        self.latency = _Latencies()
        self.slow_latency = _Latencies(size=50_000)
        self.start: float | None = None
        self._cpu_start = 0.0
        self.last_delivery = 0.0
        self._last_keepalive = 0.0
        self._welcomed = 0
        self._hub = f"the chat hub at {config.host}:{config.port}"
        self._schedule = SendSchedule(config.participants, config.messages, config.rate)
        self._slow: list[_Peer] = []
        self._sinks: list[_Peer] = []  # drained on a schedule while messages flow
        self._sink_next = 0  # the next sink to drain (round robin)
        self._sink_credit = 0.0  # sinks owed a drain by the time passed
        self._sink_polled = 0.0
        self._scratch = bytearray(SINK_BUFFER)

    @property
    def expected(self) -> int:
        """Messages each normal participant must receive (slow readers send none)."""
        senders = self.config.participants - self.config.slow
        return (senders - 1) * self.config.messages

    # ------------------------------------------------------------------ phases

    def connect(self) -> None:
        config = self.config
        self.names = {f"{config.prefix}-{i}" for i in range(config.participants)}
        # Resolved once: a name lookup per connection, through a busy container DNS,
        # can stall the connect loop longer than the hub's peer timeout.
        with peer_errors(f"{config.host}:{config.port}", "connect", timeout=config.connect_timeout):
            family, kind, proto, _, address = socket.getaddrinfo(
                config.host, config.port, type=socket.SOCK_STREAM
            )[0]
        join_deadline = time.monotonic() + config.join_deadline
        for index in range(config.participants):
            # At most a few joins in flight: connecting faster than the hub accepts
            # fills its listen queue, and a blocked connect() stops the keepalives of
            # everyone already in (the hub then times them out).
            while self._joins_in_flight() >= JOINS_IN_FLIGHT:
                if time.monotonic() > join_deadline:
                    raise PeerUnavailable(
                        f"{self._welcomed} of {len(self.peers)} welcomed "
                        f"within {config.join_deadline:g} s"
                    )
                self._turn(0.05)
            name = f"{config.prefix}-{index}"
            slow = index < config.slow
            hub = f"{config.host}:{config.port} (for {name})"
            with peer_errors(hub, "connect", timeout=config.connect_timeout):
                sock = socket.socket(family, kind, proto)
                sock.settimeout(config.connect_timeout)
                try:
                    sock.connect(address)
                except OSError:
                    sock.close()
                    raise
            if slow:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            peer = _Peer(index=index, name=name, sock=sock, slow=slow, polled=slow)
            if slow:
                self._slow.append(peer)
            peer.sink_after_welcome = (
                bool(config.observers) and index >= config.slow + config.observers
            )
            self.peers.append(peer)
            if not slow:  # slow readers are polled on their own schedule, not on readiness
                self.selector.register(sock, selectors.EVENT_READ, peer)
            self._queue(peer, wire.join(name))
            if index % CONNECTS_PER_TURN == CONNECTS_PER_TURN - 1:
                # Connecting 2,000 takes a while on a loaded machine: those already in
                # must keep reading and sending keepalives, or the hub times them out.
                self._turn(0)

    def _joins_in_flight(self) -> int:
        if len(self.peers) - self._welcomed < JOINS_IN_FLIGHT:
            return len(self.peers) - self._welcomed  # cheap, and an upper bound
        return sum(1 for p in self.peers if not p.welcomed and not p.ended)

    def run(self) -> dict[str, Any]:
        config = self.config
        t0 = time.monotonic()
        join_deadline = t0 + config.join_deadline
        watchers = [p for p in self.peers if not p.sink_after_welcome]
        while not (
            all(p.welcomed for p in self.peers)
            and all(p.present >= config.participants for p in watchers)
        ):
            if time.monotonic() > join_deadline:
                raise PeerUnavailable(
                    f"not everyone was present within {config.join_deadline:g} s "
                    f"({sum(p.welcomed for p in self.peers)} welcomed)"
                )
            self._turn(0.05)
        if config.observers:
            for peer in self.peers[config.slow + config.observers :]:
                peer.sink = True
                self._poll_instead(peer)
        self.start = self._sink_polled = time.monotonic()
        self._cpu_start = time.process_time()
        deadline = self.start + config.deadline
        normal = self._checked()
        while not all(p.complete_at is not None or p.ended for p in normal):
            now = time.monotonic()
            if now > deadline:
                break
            self._send_due(now)
            self._poll_sinks(now)
            next_at = self._schedule.next_at()
            wait = MAX_TURN_WAIT if next_at is None else self.start + next_at - time.monotonic()
            self._turn(min(MAX_TURN_WAIT, max(0.0, wait)))
        end, cpu = time.monotonic(), time.process_time() - self._cpu_start
        self._drain_sinks()
        self._leave()
        return self._report(end, cpu)

    # ------------------------------------------------------------------ loop

    def _send_due(self, now: float) -> None:
        assert self.start is not None  # noqa: S101 - set before sending starts
        for index in self._schedule.due(now - self.start):
            peer = self.peers[index]
            if peer.ended or peer.slow:
                continue
            peer.sent += 1
            self._queue(peer, wire.say(f"{peer.sent} {time.time():.6f}"))

    def _poll_sinks(self, now: float) -> None:
        """Drain the sinks owed a drain since the last call, round robin, so each
        is drained about every :data:`SINK_POLL` seconds."""
        sinks = self._sinks
        if not sinks:
            return
        credit = self._sink_credit + len(sinks) * (now - self._sink_polled) / SINK_POLL
        self._sink_polled = now
        count = min(len(sinks), int(credit))
        # After a stall every sink is drained once, with no burst of catch-up drains.
        self._sink_credit = credit - count if count < len(sinks) else 0.0
        for _ in range(count):
            peer = sinks[self._sink_next]
            self._sink_next = (self._sink_next + 1) % len(sinks)
            if not peer.ended:
                self._read(peer, RECV_SIZE)

    def _drain_sinks(self, *, max_reads: int = 64) -> None:
        """Count what already waits in every sink's receive buffer: a run can end
        before the round robin reached a sink (at most ``max_reads`` reads each, as
        the hub may still be sending)."""
        for peer in self._sinks:
            for _ in range(max_reads):
                before = peer.sink_bytes
                if peer.ended:
                    break
                self._read(peer, RECV_SIZE)
                if peer.sink_bytes == before:  # would block, or ended
                    break

    def _poll_instead(self, peer: _Peer) -> None:
        """Read ``peer`` on the sinks' schedule from now on, not on readiness."""
        if peer.ended or peer.polled:
            return
        peer.polled = True
        self._sinks.append(peer)
        registered = self._registered(peer)
        if peer.writing:
            self.selector.modify(peer.sock, selectors.EVENT_WRITE, peer)
        elif registered:
            self.selector.unregister(peer.sock)

    def _turn(self, timeout: float) -> None:
        now = time.monotonic()
        if now - self._last_keepalive >= KEEPALIVE / 4:
            self._last_keepalive = now
            for peer in self.peers:
                if now - peer.last_sent >= KEEPALIVE:
                    self._queue(peer, wire.ping())
        for peer in self._slow:  # slow readers: a little, now and then
            if not peer.ended and now >= peer.next_read:
                peer.next_read = now + SLOW_CHUNK / self.config.slow_rate
                self._read(peer, SLOW_CHUNK)
        for key, mask in self.selector.select(timeout=timeout):
            peer = key.data
            if mask & selectors.EVENT_READ:
                self._read(peer, RECV_SIZE)
            if mask & selectors.EVENT_WRITE:
                self._flush(peer)

    def _read(self, peer: _Peer, size: int) -> None:
        try:
            if peer.sink:  # counted, never decoded: no bytes object to allocate
                count = peer.sock.recv_into(self._scratch)
                if count:
                    peer.sink_bytes += count
                    return
                data = b""
            else:
                data = peer.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            failure = translate_os_error(exc, peer=self._hub, operation="read")
            self._end(peer, f"receive failed: {failure}")
            return
        try:
            events = peer.stream.receive_data(data)
        except ProtocolError as exc:
            self._end(peer, f"hub broke the protocol: {exc}")
            return
        now_wall = time.time()
        for event in events:
            self._on_event(peer, event, now_wall)
        if not data:
            self._end(peer, peer.ended or "hub closed the connection")

    def _on_event(self, peer: _Peer, event: dict[str, Any], now_wall: float) -> None:
        kind = event.get("type")
        if kind == "message":
            self._on_message(peer, event, now_wall)
        elif kind == "ping":
            self._queue(peer, wire.pong())
        elif kind == "welcome":
            if not peer.welcomed:
                self._welcomed += 1
            peer.welcomed = True
            peer.present = len(self.names.intersection(event.get("participants", [])))
            peer.sink = peer.sink_after_welcome
        elif kind == "joined" and event.get("name") in self.names:
            peer.present += 1
        elif kind == "left" and event.get("name") in self.names:
            peer.present -= 1
        elif kind == "error":
            peer.ended = peer.ended or f"error {event.get('code')}: {event.get('detail')}"

    def _on_message(self, peer: _Peer, event: dict[str, Any], now_wall: float) -> None:
        sender = str(event.get("from"))
        if sender not in self.names:
            return
        seq = int(event.get("seq", 0))
        number, _, sent_at = str(event.get("text", "")).partition(" ")
        previous = peer.last_seq.get(sender, 0)
        if seq != previous + 1 or number != str(seq):
            peer.order_errors += 1
        peer.last_seq[sender] = seq
        peer.received += 1
        with contextlib.suppress(ValueError):
            (self.slow_latency if peer.slow else self.latency).add(now_wall - float(sent_at))
        self.last_delivery = time.monotonic()
        if peer.received >= self.expected and peer.complete_at is None:
            peer.complete_at = self.last_delivery

    def _checked(self) -> list[_Peer]:
        """The participants whose delivery is checked: not slow, not sinks."""
        return [p for p in self.peers if not p.slow and not p.sink]

    def _queue(self, peer: _Peer, frame: bytes) -> None:
        if peer.ended:
            return
        peer.out += frame
        peer.last_sent = time.monotonic()
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        while peer.out:
            try:
                with peer_errors(self._hub, "send"):
                    try:
                        sent = peer.sock.send(peer.out)
                    except (BlockingIOError, InterruptedError):
                        break
            except PeerUnavailable as exc:
                self._end(peer, f"send failed: {exc}")
                return
            del peer.out[:sent]
        self._interest(peer, want_write=bool(peer.out))

    def _interest(self, peer: _Peer, *, want_write: bool) -> None:
        if want_write == peer.writing or peer.ended:
            return
        peer.writing = want_write
        events = (0 if peer.polled else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if want_write else 0
        )
        registered = self._registered(peer)
        if events == 0:
            if registered:
                self.selector.unregister(peer.sock)
        elif registered:
            self.selector.modify(peer.sock, events, peer)
        else:
            self.selector.register(peer.sock, events, peer)

    def _registered(self, peer: _Peer) -> bool:
        try:
            self.selector.get_key(peer.sock)
        except KeyError:
            return False
        return True

    def _end(self, peer: _Peer, why: str) -> None:
        if peer.ended is None:
            peer.ended = why
        if self._registered(peer):
            self.selector.unregister(peer.sock)
        peer.writing = False

    def _leave(self) -> None:
        for peer in self.peers:
            if not peer.ended:
                with contextlib.suppress(OSError):
                    peer.sock.setblocking(True)
                    peer.sock.settimeout(self.config.connect_timeout)
                    peer.sock.sendall(bytes(peer.out) + wire.bye())
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.sock.close()
        self.selector.close()

    # ------------------------------------------------------------------ report

    def _report(self, end: float, cpu_s: float) -> dict[str, Any]:
        assert self.start is not None  # noqa: S101 - run() sets it
        normal = self._checked()
        slow = [p for p in self.peers if p.slow]
        complete = [p for p in normal if p.received >= self.expected]
        span = max(self.last_delivery - self.start, 1e-9)
        delivered = sum(p.received for p in self.peers)
        if self.config.observers and normal:
            # Every participant receives the same stream: scale the observers' count.
            senders = self.config.participants - self.config.slow
            delivered = round(sum(p.received for p in normal) / len(normal) * senders)
        finished = [p.complete_at - self.start for p in complete if p.complete_at is not None]
        return {
            "participants": self.config.participants,
            "messages_each": self.config.messages,
            "rate_per_participant": self.config.rate,
            "expected_per_participant": self.expected,
            "complete": len(complete),
            "normal": len(normal),
            "missing": sum(max(0, self.expected - p.received) for p in normal),
            "order_errors": sum(p.order_errors for p in self.peers),
            "ended": {p.name: p.ended for p in normal if p.ended},
            "delivered": delivered,
            "delivered_estimated": bool(self.config.observers),
            "observers": len(normal),
            "sink_bytes": sum(p.sink_bytes for p in self.peers),
            "delivered_per_s": round(delivered / span, 1),
            "duration_s": round(end - self.start, 3),
            "last_complete_s": round(max(finished), 3) if finished else None,
            "latency": self.latency.summary(),
            "generator_cpu": {
                "cpu_s": round(cpu_s, 3),
                "percent_of_one_core": round(100 * cpu_s / max(end - self.start, 1e-9), 1),
            },
            "slow": {
                "count": len(slow),
                "received": [p.received for p in slow],
                "ended": [p.ended for p in slow],
                "latency": self.slow_latency.summary(),
            },
            "ok": len(complete) == len(normal) and not any(p.order_errors for p in self.peers),
        }


def main(argv: list[str]) -> int:
    defaults = SwarmConfig.from_env()
    parser = command_parser("chat-swarm", __doc__, raw=True)
    add_setting(parser, "--host", config=defaults, name="host")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--participants", "-n", type=int, default=defaults.participants)
    parser.add_argument("--messages", "-m", type=int, default=defaults.messages)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="messages/s per participant"
    )
    parser.add_argument("--prefix", default=defaults.prefix)
    parser.add_argument("--slow", type=int, default=defaults.slow, help="how many slow readers")
    parser.add_argument("--slow-rate", type=float, default=defaults.slow_rate, help="their bytes/s")
    parser.add_argument(
        "--observers", type=int, default=defaults.observers, help="decode on K only (bench)"
    )
    parser.add_argument("--join-deadline", type=float, default=defaults.join_deadline)
    parser.add_argument("--deadline", type=float, default=defaults.deadline)
    args = parser.parse_args(argv)
    swarm = Swarm(
        SwarmConfig(
            host=args.host,
            port=args.port,
            participants=args.participants,
            messages=args.messages,
            rate=args.rate,
            prefix=args.prefix,
            slow=args.slow,
            slow_rate=args.slow_rate,
            observers=args.observers,
            join_deadline=args.join_deadline,
            deadline=args.deadline,
        )
    )
    swarm.connect()
    report = swarm.run()
    print(json.dumps(report))
    return 0 if report["ok"] else 1
