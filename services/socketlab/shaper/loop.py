"""``socketlab shaper``: the NFQUEUE verdict loop run by a netkit helper container.

The helper shares the destination service's network namespace (packets are
held on its ingress, see ``lab.shaping.builders``); IPv4 and IPv6 packets of a
link come to the same queue. ``lab.shaping``
installs an iptables rule sending the link's packets to queue ``--queue`` with
``--queue-bypass``, so when this process dies the link fails open (unshaped)
instead of going dark, and ``lab status`` reports the dead helper.

One verdict thread (the process's only component, under
:func:`~socketlab.supervisor.run_components`, which handles SIGTERM/SIGINT):
poll the queue's netlink socket with a timeout that ends at the next release
time, feed packets to the scheduling core, and hand out the verdicts and
injected copies it returns.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from socketlab.config import EnvConfig, env_config, env_field
from socketlab.errors import ServiceError
from socketlab.shaper.core import (
    INJECT_MARK,
    Accept,
    Impairment,
    ImpairmentScheduler,
    Inject,
    ip_version,
)
from socketlab.shaper.invocation import parse_invocation
from socketlab.supervisor import run_components

log = logging.getLogger("socketlab.shaper")


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


class ShaperError(ServiceError):
    """The verdict loop could not bind its queue or open its injector."""


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


def run(
    queue: int,
    impairment: Impairment,
    *,
    stop: threading.Event,
    seed: int | None = None,
    config: ShaperConfig | None = None,
) -> None:
    """Impair the packets of NFQUEUE ``queue`` until ``stop`` is set."""
    try:
        from netfilterqueue import NetfilterQueue  # noqa: PLC0415 - only in the netkit image
    except ImportError as exc:
        raise ShaperError("NetfilterQueue is not installed (run this in the netkit image)") from exc

    config = config or ShaperConfig()
    scheduler: ImpairmentScheduler[Any] = ImpairmentScheduler(
        impairment,
        rng=random.Random(seed),  # noqa: S311 - impairment, not crypto
    )
    injector = _Injectors(config.inject_timeout)

    def release(verdicts: list[Accept[Any] | Inject]) -> None:
        for verdict in verdicts:
            if isinstance(verdict, Inject):
                try:
                    injector.send(verdict.payload)
                except OSError as exc:
                    # A lost duplicate is still a faithful impairment; keep going.
                    log.warning("event=inject_failed error=%s", exc)
            else:
                verdict.packet.accept()

    def on_packet(packet: Any) -> None:
        now = time.monotonic()
        if not scheduler.admit(packet, now):
            packet.drop()
        # Release inside the callback too: a long burst must not starve due verdicts.
        release(scheduler.pop_due(now))

    nfq = NetfilterQueue()
    try:
        nfq.bind(queue, on_packet, max_len=config.queue_maxlen)
    except OSError as exc:
        injector.close()
        raise ShaperError(f"cannot bind NFQUEUE {queue}: {exc}") from exc
    poller = select.poll()
    poller.register(nfq.get_fd(), select.POLLIN)
    log.info("event=shaper_started queue=%d impairment=%s", queue, impairment)
    next_stats = time.monotonic() + config.stats_interval
    try:
        while not stop.is_set():
            now = time.monotonic()
            release(scheduler.pop_due(now))
            due = scheduler.next_release()
            wait = config.stop_poll if due is None else min(config.stop_poll, max(0.0, due - now))
            if poller.poll(wait * 1000.0):
                nfq.run(block=False)
            if now >= next_stats:
                log.info(
                    "event=shaper_stats queue=%d held=%d %s", queue, len(scheduler), _kv(scheduler)
                )
                next_stats = now + config.stats_interval
    finally:
        # Stopping releases what we hold rather than losing it.
        release(scheduler.drain())
        nfq.unbind()
        injector.close()
        log.info("event=shaper_stopped queue=%d %s", queue, _kv(scheduler))


def _kv(scheduler: ImpairmentScheduler[Any]) -> str:
    c = scheduler.counters
    return (
        f"received={c.received} dropped={c.dropped} duplicated={c.duplicated} "
        f"corrupted={c.corrupted} reordered={c.reordered} released={c.released} "
        f"injected={c.injected} untouchable={c.untouchable}"
    )


def parse_args(argv: list[str]) -> tuple[int, Impairment, int | None]:
    """Parse the helper's command line (plain numbers: the controller did the units):
    every flag :class:`~socketlab.shaper.invocation.ShaperInvocation` writes."""
    invocation = parse_invocation(argv)
    return invocation.queue, invocation.impairment, invocation.seed


def main(argv: list[str]) -> int:
    """Entry point of ``socketlab shaper``: run until SIGTERM or SIGINT."""
    config = ShaperConfig.from_env()
    queue, impairment, seed = parse_args(argv)

    def shaper(stop: threading.Event) -> None:
        run(queue, impairment, stop=stop, seed=seed, config=config)

    run_components({"shaper": shaper}).raise_for_failures()
    return 0
