"""``client swarm``: many concurrent connections from one selectors loop.

Each of N clients echoes M unique payloads in turn (an answer delivered to the
wrong connection is caught); a client that fails is closed and reported with
its reason, the others carry on. The summary gives failures and p50/p99 latency.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import secrets
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from socketlab.client.connection import CLIENT_LIMITS, RECV_SIZE, Endpoint
from socketlab.client.errors import CommandFailed
from socketlab.client.output import Output
from socketlab.errors import ConnectFailed, PeerClosed, SocketlabError, peer_errors
from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    FrameDecoder,
    MessageCollector,
    encode_request,
)
from socketlab.protocol.messages import response_result


def swarm_payload(tag: str, client_index: int, request_index: int) -> str:
    """What client ``client_index`` echoes in its ``request_index``-th request: unique per
    client and request, so an answer delivered to the wrong connection is caught."""
    return f"swarm {tag} client {client_index} request {request_index}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None when empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, kw_only=True)
class SwarmReport:
    """What ``client swarm`` saw: answers, failed clients (with reasons), latencies."""

    clients: int
    requests_per_client: int
    answered: int
    failures: tuple[str, ...]  # one reason per failed client
    latencies: tuple[float, ...]  # seconds, request sent -> answer complete
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures and self.answered == self.clients * self.requests_per_client

    def summary(self) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            value = percentile(self.latencies, q)
            return None if value is None else round(value * 1000, 3)

        return {
            "clients": self.clients,
            "requests_per_client": self.requests_per_client,
            "requests": self.answered,
            "failures": len(self.failures),
            "errors": list(self.failures[:5]),
            "latency_ms": {"p50": ms(50), "p99": ms(99), "max": ms(100)},
            "seconds": round(self.seconds, 3),
        }


class _SwarmClient:
    """One connection of the swarm: connect, then echo ``requests`` payloads one at a time.

    The socket is non-blocking under the selector, so its timeout is a deadline kept
    here: ``endpoint.timeout`` to connect, ``endpoint.read_timeout`` for each request
    to make progress (any byte sent or received moves it on).
    """

    def __init__(self, index: int, tag: str, requests: int, endpoint: Endpoint) -> None:
        self.index, self.tag, self.requests, self.endpoint = index, tag, requests, endpoint
        self.peer = str(endpoint)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.decoder = FrameDecoder(limits=CLIENT_LIMITS)
        self.collector = MessageCollector()
        self.connected = False
        self.outbox = b""
        self.done = 0
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.error: str | None = None
        self.deadline = time.monotonic() + endpoint.timeout

    @property
    def finished(self) -> bool:
        return self.error is not None or self.done == self.requests

    def expected(self) -> str:
        return swarm_payload(self.tag, self.index, self.done)

    def _next_request(self, now: float) -> None:
        self.outbox = encode_request("echo", self.expected())
        self.sent_at = now
        self.deadline = now + self.endpoint.read_timeout

    def on_writable(self, now: float) -> None:
        if not self.connected:
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise ConnectFailed(f"cannot reach {self.peer}: {os.strerror(code)}")
            self.connected = True
            self._next_request(now)
        with peer_errors(self.peer, "send"):
            sent = self.sock.send(self.outbox)
        self.outbox = self.outbox[sent:]
        self.deadline = now + self.endpoint.read_timeout

    def on_readable(self, now: float) -> None:
        with peer_errors(self.peer, "read"):
            data = self.sock.recv(RECV_SIZE)
        self.decoder.receive_data(data)
        self.deadline = now + self.endpoint.read_timeout
        while not self.finished:
            event = self.decoder.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                raise PeerClosed(f"{self.peer} closed the connection after {self.done} answers")
            message = self.collector.feed(event)
            if message is None:
                continue
            result = response_result(message)
            if result != self.expected():
                raise CommandFailed(f"request {self.done}: the echo came back as {result!r}")
            self.latencies.append(now - self.sent_at)
            self.done += 1
            if not self.finished:
                self._next_request(now)

    def timed_out(self, now: float) -> str | None:
        if now < self.deadline:
            return None
        if not self.connected:
            return f"no connection within {self.endpoint.timeout:g} s (connect timeout)"
        return (
            f"request {self.done}: no progress within "
            f"{self.endpoint.read_timeout:g} s (read timeout)"
        )


class _Swarm:
    """The selector loop of :func:`run_swarm`: members in flight, and what the done ones got."""

    def __init__(self, endpoint: Endpoint, selector: selectors.BaseSelector) -> None:
        self.endpoint, self.selector = endpoint, selector
        self.active: dict[int, _SwarmClient] = {}
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.answered = 0

    def launch(self, member: _SwarmClient, address: Any) -> None:
        code = member.sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            member.sock.close()
            self.failures.append(
                f"client {member.index}: cannot reach {self.endpoint}: {os.strerror(code)}"
            )
            return
        self.active[member.index] = member
        self.selector.register(member.sock, selectors.EVENT_WRITE, member)

    def finish(self, member: _SwarmClient) -> None:
        self.selector.unregister(member.sock)
        member.sock.close()
        del self.active[member.index]
        self.answered += member.done
        self.latencies.extend(member.latencies)
        if member.error is not None:
            self.failures.append(f"client {member.index}: {member.error}")

    def handle(self, key: selectors.SelectorKey, mask: int) -> None:
        member: _SwarmClient = key.data
        now = time.monotonic()
        try:
            if mask & selectors.EVENT_READ:
                member.on_readable(now)
            elif mask & selectors.EVENT_WRITE:
                member.on_writable(now)
        except SocketlabError as exc:
            member.error = str(exc)
        if member.finished:
            self.finish(member)
        elif member.connected:
            # Write while a request is going out, else wait for the answer.
            events = selectors.EVENT_WRITE if member.outbox else selectors.EVENT_READ
            if key.events != events:
                self.selector.modify(member.sock, events, member)

    def run(self) -> None:
        while self.active:
            wait = min(member.deadline for member in self.active.values()) - time.monotonic()
            for key, mask in self.selector.select(timeout=max(0.0, min(wait, 1.0))):
                self.handle(key, mask)
            now = time.monotonic()
            for member in list(self.active.values()):
                reason = member.timed_out(now)
                if reason is not None:
                    member.error = reason
                    self.finish(member)


def run_swarm(endpoint: Endpoint, *, clients: int, requests: int, tag: str) -> SwarmReport:
    """Open ``clients`` concurrent connections to the lab server; each echoes ``requests``
    unique payloads (marked with ``tag``) in turn. One selector drives them all; a client that fails is
    closed and reported, the others carry on."""
    if clients < 1 or requests < 1:
        raise ValueError("need at least one client and one request")
    with peer_errors(str(endpoint), "connect", timeout=endpoint.timeout):
        address = socket.getaddrinfo(
            endpoint.host, endpoint.port, socket.AF_INET, socket.SOCK_STREAM
        )[0][4]
    started = time.monotonic()
    with selectors.DefaultSelector() as selector:
        swarm = _Swarm(endpoint, selector)
        for index in range(clients):
            swarm.launch(_SwarmClient(index, tag, requests, endpoint), address)
        swarm.run()
    return SwarmReport(
        clients=clients,
        requests_per_client=requests,
        answered=swarm.answered,
        failures=tuple(swarm.failures),
        latencies=tuple(swarm.latencies),
        seconds=time.monotonic() - started,
    )


def cmd_swarm(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    report = run_swarm(
        endpoint, clients=args.clients, requests=args.requests, tag=secrets.token_hex(4)
    )
    summary = report.summary()
    latency = summary["latency_ms"]
    out.say(
        f"swarm: {report.clients} clients x {report.requests_per_client} requests: "
        f"{report.answered} answered, {len(report.failures)} clients failed, "
        f"p50 {latency['p50']} ms, p99 {latency['p99']} ms, {summary['seconds']} s"
    )
    out.result("swarm", report.ok, **summary)
    if not report.ok:
        raise CommandFailed(
            f"{len(report.failures)} of {report.clients} clients failed; first: "
            f"{report.failures[0] if report.failures else 'answers missing'}"
        )
