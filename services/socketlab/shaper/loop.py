"""``socketlab shaper``: the NFQUEUE verdict loop run by a netkit helper container.

The helper shares the destination service's network namespace (packets are
held on its ingress, see ``lab.shaping.builders``); IPv4 and IPv6 packets of a
link come to the same queue. ``lab.shaping``
installs an iptables rule sending the link's packets to queue ``--queue`` with
``--queue-bypass``, so when this process dies the link fails open (unshaped)
instead of going dark, and ``lab status`` reports the dead helper.

The loop speaks the queue's netlink protocol itself
(:mod:`socketlab.shaper.nfnetlink`), which is what makes it fast:

* **GSO super-packets.** A link that only delays (no per-packet loss,
  duplication, reordering, corruption or jitter) keeps the sender's
  segmentation offload on (``lab.shaping.builders.needs_wire_size_packets``),
  and the queue takes GSO packets whole (``F_GSO``): one verdict moves up
  to 64 KB instead of one 1,500-byte segment. Such links copy no payload
  (metadata mode), so the kernel skips checksumming too. Links that must
  read or rewrite payloads (duplicate, corrupt) copy whole packets instead.
* **Batched verdicts.** Due packets that left in arrival order are accepted
  with one batch verdict (:class:`~socketlab.shaper.release.VerdictBatcher`),
  and all verdict messages of a turn go out in one ``send``.
* **O(1) release** for a fixed delay (:class:`~socketlab.shaper.release.ReleaseQueue`).

One verdict thread (the process's only component, under
:func:`~socketlab.supervisor.run_components`, which handles SIGTERM/SIGINT):
wait on the queue's socket (``select``, microseconds) until the next release time,
read up to ``burst`` packets, feed them to the scheduling core, and send the
verdicts and injected copies it returns. The socket is non-blocking: the
loop's select is its only wait, bounded by ``stop_poll``; sends go to the
kernel, which handles them as they are made. The kernel's own drop counters
for the queue (queue full, socket buffer full) are logged with the loop's.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ServiceError
from socketlab.shaper import nfnetlink as nl
from socketlab.shaper.core import (
    INJECT_MARK,
    Accept,
    Impairment,
    ImpairmentScheduler,
    Inject,
    ip_version,
)
from socketlab.shaper.invocation import (
    MAX_SEED,
    ShaperInvocation,
    ShaperUsageError,
    parse_invocation,
)
from socketlab.shaper.release import VerdictBatcher
from socketlab.supervisor import run_components

log = logging.getLogger("socketlab.shaper")

SO_RCVBUFFORCE = 33  # Linux; the socket module does not export these two
SO_SNDBUFFORCE = 32
SEND_BUFFER = 4 * 2**20
# One netlink message per recv; the largest is a full 64 KB copy plus headers.
RECEIVE_CHUNK = 128 * 1024
# Verdict messages are sent in chunks of at most this much (well below the send buffer).
SEND_CHUNK = 256 * 1024
QUEUE_STATS_FILE = Path("/proc/net/netfilter/nfnetlink_queue")
USAGE = (
    "usage: socketlab shaper --queue N [--delay S] [--jitter S] [--loss SHARE] "
    "[--duplicate SHARE] [--reorder SHARE] [--corrupt SHARE] [--loss-correlation SHARE] "
    "[--loss-model MODEL] [--delay-distribution NAME] [--delay-correlation SHARE] "
    "[--reorder-gap N] [--seed N]\n\n"
    "Plain numbers: seconds and shares 0..1 (lab shape does the units). "
    "Without --seed, a seed is drawn and logged."
)


@env_config
@dataclass(frozen=True, kw_only=True)
class ShaperConfig(EnvConfig):
    """Settings of the NFQUEUE verdict loop (``socketlab shaper``)."""

    stop_poll: float = env_field(
        "SOCKETLAB_SHAPER_STOP_POLL",
        0.2,
        "seconds between the shaper's looks at its stop flag when nothing is due",
    )
    queue_maxlen: int = env_field(
        "SOCKETLAB_SHAPER_QUEUE_MAXLEN",
        16384,
        "packets the kernel may queue for the shaper (delay x packet rate must stay below)",
    )
    inject_timeout: float = env_field(
        "SOCKETLAB_SHAPER_INJECT_TIMEOUT", 1.0, "send timeout of injected duplicates, seconds"
    )
    stats_interval: float = env_field(
        "SOCKETLAB_SHAPER_STATS_INTERVAL",
        1.0,
        "seconds between the shaper's stats log lines (lab watch reads them)",
    )
    receive_buffer: int = env_field(
        "SOCKETLAB_SHAPER_RECEIVE_BUFFER",
        64 * 2**20,
        "bytes the kernel may buffer for the shaper's queue socket (a full buffer drops "
        "packets: user_dropped)",
    )
    bind_timeout: float = env_field(
        "SOCKETLAB_SHAPER_BIND_TIMEOUT",
        2.0,
        "seconds the shaper waits for the kernel to confirm its queue settings",
    )
    burst: int = env_field(
        "SOCKETLAB_SHAPER_BURST",
        256,
        "queued packets the shaper reads before it sends the verdicts that fell due",
    )


class ShaperError(ServiceError):
    """The verdict loop could not bind its queue, open its injector or talk to the kernel."""


@dataclass(frozen=True, slots=True)
class QueueMode:
    """What the kernel copies of each packet, and whether GSO packets come whole."""

    copy_mode: int
    copy_range: int
    flags: int

    @property
    def name(self) -> str:
        copy = "packet" if self.copy_mode == nl.COPY_PACKET else "meta"
        return f"copy={copy} gso={'on' if self.flags & nl.FLAG_GSO else 'off'}"


def queue_mode(impairment: Impairment) -> QueueMode:
    """Whole packets when payloads are read or rewritten (duplicate, corrupt), else metadata.

    Metadata mode takes GSO packets whole. Payload mode leaves them to the
    kernel to segment, and to checksum (a copy with a partial checksum would
    make a bad duplicate); lab.shaping turns offload off for those links anyway.
    Queue-full drops stay drops (no ``F_FAIL_OPEN``): a full queue is an
    overflowing buffer, counted, not a silent pass-through.
    """
    if impairment.duplicate or impairment.corrupt:
        return QueueMode(copy_mode=nl.COPY_PACKET, copy_range=nl.MAX_COPY_RANGE, flags=0)
    return QueueMode(copy_mode=nl.COPY_META, copy_range=0, flags=nl.FLAG_GSO)


@dataclass(slots=True)
class LoopCounters:
    """The loop's own I/O totals, logged beside the scheduler's."""

    reads: int = 0  # netlink messages read
    verdicts: int = 0  # verdict messages sent (a batch counts once)
    batches: int = 0
    sends: int = 0  # send calls
    enobufs: int = 0  # the kernel told us it dropped messages (socket buffer full)
    kernel_errors: int = 0  # NLMSG_ERROR answers to our verdicts


def _injector(timeout: float, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    # IPPROTO_RAW implies IP_HDRINCL (IPv4) and IPV6_HDRINCL (IPv6, Linux 4.5+):
    # we send whole datagrams as queued.
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, INJECT_MARK)
    sock.settimeout(timeout)
    return sock


def _destination(datagram: bytes) -> str:
    if ip_version(datagram) == 6:
        return socket.inet_ntop(socket.AF_INET6, datagram[24:40])
    return socket.inet_ntoa(datagram[16:20])


class _Injectors:
    """One raw socket per family, the IPv6 one opened when its first copy is due."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._sockets = {4: _injector(timeout)}

    def send(self, datagram: bytes) -> None:
        version = ip_version(datagram)
        if version not in self._sockets:
            if version != 6:
                raise OSError(f"not an IP datagram (version {version})")
            self._sockets[6] = _injector(self._timeout, socket.AF_INET6)
        self._sockets[version].sendto(datagram, (_destination(datagram), 0))

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()


def _netlink_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_NETFILTER)


def open_queue(
    sock: socket.socket, queue: int, mode: QueueMode, config: ShaperConfig
) -> list[nl.NfqPacket]:
    """Bind ``queue`` on ``sock`` with ``mode`` in one request; returns packets read meanwhile.

    Leaves the socket non-blocking. :class:`ShaperError` when the kernel refuses.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, config.receive_buffer)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SEND_BUFFER)
        sock.bind((0, 0))
    except OSError as exc:
        raise ShaperError(f"cannot open the netlink socket for NFQUEUE {queue}: {exc}") from exc
    request = nl.configure(
        queue,
        sequence=1,
        copy_mode=mode.copy_mode,
        copy_range=mode.copy_range,
        maxlen=config.queue_maxlen,
        flags=mode.flags,
        mask=nl.FLAG_GSO | nl.FLAG_FAIL_OPEN,
    )
    early: list[nl.NfqPacket] = []
    sock.settimeout(config.bind_timeout)
    buffer = bytearray(RECEIVE_CHUNK)
    try:
        sock.send(request)
        deadline = time.monotonic() + config.bind_timeout
        while True:
            if time.monotonic() >= deadline:
                raise ShaperError(f"no answer from the kernel binding NFQUEUE {queue}")
            size = sock.recv_into(buffer)
            packets, acks = nl.parse_messages(buffer, size)
            early += packets
            ack = next((a for a in acks if a.sequence == 1), None)
            if ack is None:
                continue
            if ack.error:
                code = -ack.error
                name = errno.errorcode.get(code, str(code))
                raise ShaperError(f"cannot bind NFQUEUE {queue}: {name} ({os.strerror(code)})")
            break
    except TimeoutError as exc:
        raise ShaperError(f"no answer from the kernel binding NFQUEUE {queue}") from exc
    except OSError as exc:
        raise ShaperError(f"cannot bind NFQUEUE {queue}: {exc}") from exc
    except nl.NetlinkError as exc:
        raise ShaperError(f"binding NFQUEUE {queue}: {exc}") from exc
    sock.setblocking(False)
    return early


class VerdictLoop:
    """One queue's loop state: the scheduler, the batcher, the verdicts waiting to go out."""

    def __init__(
        self,
        sock: socket.socket,
        queue: int,
        scheduler: ImpairmentScheduler[nl.NfqPacket],
        *,
        injector: _Injectors | None,
        config: ShaperConfig,
    ) -> None:
        self.sock = sock
        self.queue = queue
        self.scheduler = scheduler
        self.injector = injector
        self.config = config
        self.batcher = VerdictBatcher()
        self.counters = LoopCounters()
        self._outgoing: list[bytes] = []
        self._buffer = bytearray(RECEIVE_CHUNK)

    def admit(self, packets: list[nl.NfqPacket], now: float) -> None:
        """Hold each packet or drop it now (its DROP goes out before any batch passes it)."""
        scheduler, batcher, outgoing = self.scheduler, self.batcher, self._outgoing
        for packet in packets:
            if scheduler.admit(packet, now):
                batcher.hold(packet.packet_id)
            else:
                outgoing.append(nl.verdict(self.queue, packet.packet_id, nl.NF_DROP))
                self.counters.verdicts += 1

    def release(self, due: list[Accept[nl.NfqPacket] | Inject]) -> None:
        """Queue the ACCEPTs for ``due`` (singles first, then one batch) and inject copies."""
        if not due:
            return
        ids: list[int] = []
        rewritten: dict[int, bytes] = {}
        for item in due:
            if isinstance(item, Inject):
                self._inject(item.payload)
                continue
            packet = item.packet
            ids.append(packet.packet_id)
            if packet.new_payload is not None:
                rewritten[packet.packet_id] = packet.new_payload
        plan = self.batcher.release(ids, individual=rewritten)
        queue, outgoing = self.queue, self._outgoing
        for packet_id in plan.singles:
            outgoing.append(nl.verdict(queue, packet_id, nl.NF_ACCEPT, rewritten.get(packet_id)))
        if plan.batch_upto is not None:
            outgoing.append(nl.batch_verdict(queue, plan.batch_upto, nl.NF_ACCEPT))
            self.counters.batches += 1
        self.counters.verdicts += plan.messages

    def _inject(self, payload: bytes) -> None:
        if self.injector is None:  # pragma: no cover - duplicates always come with an injector
            return
        try:
            self.injector.send(payload)
        except OSError as exc:
            # A lost duplicate is still a faithful impairment; keep going.
            log.warning("event=inject_failed error=%s", exc)

    def flush(self) -> None:
        """Send the waiting verdicts, in order, in as few sends as fit."""
        outgoing = self._outgoing
        if not outgoing:
            return
        chunk: list[bytes] = []
        size = 0
        for data in outgoing:
            if chunk and size + len(data) > SEND_CHUNK:
                self._send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        self._send(b"".join(chunk))
        outgoing.clear()

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError as exc:
            # Verdicts the kernel never got would hold those packets for good: stop
            # (the link fails open and lab status shows the dead helper).
            raise ShaperError(f"sending verdicts for NFQUEUE {self.queue}: {exc}") from exc
        self.counters.sends += 1

    def read(self) -> list[nl.NfqPacket]:
        """Up to ``burst`` queued packets, without waiting."""
        packets: list[nl.NfqPacket] = []
        buffer, counters = self._buffer, self.counters
        for _ in range(self.config.burst):
            try:
                size = self.sock.recv_into(buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    counters.enobufs += 1  # the kernel's user_dropped says how many
                    continue
                raise ShaperError(f"reading NFQUEUE {self.queue}: {exc}") from exc
            counters.reads += 1
            try:
                found, acks = nl.parse_messages(buffer, size)
            except nl.NetlinkError as exc:
                raise ShaperError(f"reading NFQUEUE {self.queue}: {exc}") from exc
            packets += found
            for ack in acks:
                if ack.error:
                    counters.kernel_errors += 1
                    if counters.kernel_errors <= 3:
                        log.warning(
                            "event=verdict_refused queue=%d errno=%d", self.queue, -ack.error
                        )
        return packets


def _queue_stats(queue: int) -> str:
    try:
        stats = nl.parse_queue_stats(QUEUE_STATS_FILE.read_text()).get(queue)
    except OSError:
        return ""
    if stats is None:
        return ""
    return f" queue_dropped={stats.queue_dropped} user_dropped={stats.user_dropped}"


def _kv(loop: VerdictLoop) -> str:
    c, io = loop.scheduler.counters, loop.counters
    return (
        f"received={c.received} dropped={c.dropped} duplicated={c.duplicated} "
        f"corrupted={c.corrupted} reordered={c.reordered} released={c.released} "
        f"injected={c.injected} untouchable={c.untouchable} "
        f"reads={io.reads} verdicts={io.verdicts} batches={io.batches} sends={io.sends} "
        f"enobufs={io.enobufs} kernel_errors={io.kernel_errors}"
    )


def run(
    invocation: ShaperInvocation,
    *,
    stop: threading.Event,
    config: ShaperConfig | None = None,
    netlink: Callable[[], socket.socket] = _netlink_socket,
) -> None:
    """Impair the packets of NFQUEUE ``invocation.queue`` until ``stop`` is set."""
    config = config or ShaperConfig()
    queue, impairment = invocation.queue, invocation.impairment
    scheduler: ImpairmentScheduler[nl.NfqPacket] = ImpairmentScheduler(
        impairment,
        rng=random.Random(invocation.seed),  # noqa: S311 - impairment, not crypto
    )
    mode = queue_mode(impairment)
    try:
        injector = _Injectors(config.inject_timeout) if impairment.duplicate else None
    except OSError as exc:
        raise ShaperError(f"cannot open the injector for duplicates: {exc}") from exc
    try:
        sock = netlink()
    except OSError as exc:
        if injector is not None:
            injector.close()
        raise ShaperError(f"cannot open a netlink socket: {exc}") from exc
    try:
        early = open_queue(sock, queue, mode, config)
        loop = VerdictLoop(sock, queue, scheduler, injector=injector, config=config)
        loop.admit(early, time.monotonic())
        _serve(loop, stop, invocation, mode)
    finally:
        sock.close()
        if injector is not None:
            injector.close()


def _serve(
    loop: VerdictLoop, stop: threading.Event, invocation: ShaperInvocation, mode: QueueMode
) -> None:
    config, scheduler, queue = loop.config, loop.scheduler, loop.queue
    # select, not poll: its timeout is in microseconds, poll's in whole milliseconds
    # (rounded up), which would make every release up to 1 ms late.
    readable = [loop.sock.fileno()]
    log.info(
        "event=shaper_started queue=%d seed=%s %s impairment=%s",
        queue,
        invocation.seed,
        mode.name,
        invocation.impairment,
    )
    started_cpu = time.process_time()
    next_stats = time.monotonic() + config.stats_interval
    try:
        while not stop.is_set():
            now = time.monotonic()
            loop.release(scheduler.pop_due(now))
            loop.flush()
            due = scheduler.next_release()
            wait = config.stop_poll if due is None else min(config.stop_poll, max(0.0, due - now))
            if select.select(readable, [], [], wait)[0]:
                packets = loop.read()
                now = time.monotonic()
                loop.admit(packets, now)
                # a zero delay (or a reordered packet) is due at once: no extra turn
                loop.release(scheduler.pop_due(now))
            if now >= next_stats:
                cpu_ms = round((time.process_time() - started_cpu) * 1000)
                log.info(
                    "event=shaper_stats queue=%d held=%d %s cpu_ms=%d%s",
                    queue,
                    len(scheduler),
                    _kv(loop),
                    cpu_ms,
                    _queue_stats(queue),
                )
                next_stats = now + config.stats_interval
    finally:
        # Stopping releases what we hold (and what is waiting to be read) rather than
        # losing it: closing the socket would make the kernel drop the queued packets.
        try:
            for _ in range(4):
                packets = loop.read()
                if not packets:
                    break
                loop.admit(packets, time.monotonic())
            loop.release(scheduler.drain())
            loop.flush()
        except ShaperError as exc:
            log.warning("event=shaper_drain_failed queue=%d error=%s", queue, exc)
        cpu_ms = round((time.process_time() - started_cpu) * 1000)
        log.info(
            "event=shaper_stopped queue=%d %s cpu_ms=%d%s",
            queue,
            _kv(loop),
            cpu_ms,
            _queue_stats(queue),
        )


def main(argv: list[str]) -> int:
    """Entry point of ``socketlab shaper``: run until SIGTERM or SIGINT."""
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    config = ShaperConfig.from_env()
    try:
        invocation = parse_invocation(argv)
    except ShaperUsageError as exc:
        raise ShaperUsageError(f"shaper: {exc}") from None
    if invocation.seed is None:
        # Drawn here and logged, so any run can be replayed with --seed.
        seed = random.SystemRandom().randrange(MAX_SEED + 1)
        invocation = dataclasses.replace(invocation, seed=seed)

    def shaper(stop: threading.Event) -> None:
        run(invocation, stop=stop, config=config)

    run_components({"shaper": shaper}).raise_for_failures()
    return 0
