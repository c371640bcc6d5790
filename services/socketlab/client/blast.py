"""``client blast``: blocking vs non-blocking sends at the server's sink.

``blocking`` and ``nonblocking`` deliver every byte; ``nonblocking-naive`` is the
seed's mistake on purpose (one ``send()`` per chunk, whatever the kernel did not
take is gone) and the server's count shows the loss.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from socketlab.client.connection import Endpoint, LabConnection
from socketlab.client.errors import CommandFailed
from socketlab.client.output import Output
from socketlab.errors import SendTimeout, peer_errors
from socketlab.protocol import encode_request
from socketlab.protocol.messages import response_result

BLAST_CHUNK: Final = 64 * 1024
DEFAULT_BLAST: Final = 128 * 1024 * 1024
MODES: Final = ("blocking", "nonblocking-naive", "nonblocking")


@dataclass
class BlastStats:
    mode: str
    attempted: int
    accepted_by_kernel: int = 0
    send_calls: int = 0
    partial_sends: int = 0
    would_block: int = 0
    work_slices: int = 0
    seconds: float = 0.0


def _chunks(size: int) -> Iterator[memoryview]:
    block = memoryview(os.urandom(BLAST_CHUNK))
    sent = 0
    while sent < size:
        piece = block[: min(BLAST_CHUNK, size - sent)]
        yield piece
        sent += len(piece)


def _blast_blocking(sock: socket.socket, stats: BlastStats) -> None:
    for chunk in _chunks(stats.attempted):
        sock.sendall(chunk)
        stats.send_calls += 1
        stats.accepted_by_kernel += len(chunk)


def _blast_naive(sock: socket.socket, stats: BlastStats) -> None:
    # The seed's mistake, on purpose: one send() per chunk and move on. Whatever
    # the kernel did not take (partial send, BlockingIOError) is simply gone.
    sock.setblocking(False)
    for chunk in _chunks(stats.attempted):
        stats.send_calls += 1
        try:
            sent = sock.send(chunk)
        except BlockingIOError:
            stats.would_block += 1
            continue
        stats.accepted_by_kernel += sent
        if sent < len(chunk):
            stats.partial_sends += 1


def _blast_nonblocking(sock: socket.socket, stats: BlastStats, *, stall: float) -> None:
    # Correct: keep the unsent tail, wait for writability with selectors, and
    # use the waits for other work (here: hashing what was sent so far).
    sock.setblocking(False)
    hasher = hashlib.sha256()
    backlog: list[memoryview] = []
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_WRITE)
        for chunk in _chunks(stats.attempted):
            view = chunk
            while view:
                if not selector.select(timeout=0 if backlog else stall):
                    if backlog:
                        hasher.update(backlog.pop(0))
                        stats.work_slices += 1
                        continue
                    raise SendTimeout(f"socket not writable for {stall:g} s (send timeout)")
                stats.send_calls += 1
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    stats.would_block += 1
                    continue
                if sent < len(view):
                    stats.partial_sends += 1
                backlog.append(view[:sent])
                stats.accepted_by_kernel += sent
                view = view[sent:]
        for piece in backlog:
            hasher.update(piece)


def cmd_blast(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    stats = BlastStats(mode=args.mode, attempted=args.size)
    with LabConnection.open(endpoint) as conn:
        conn.send(encode_request("sink", {"bytes": args.size, "mode": args.mode}))
        started = time.monotonic()
        with peer_errors(f"the sink at {endpoint}", "send", timeout=endpoint.read_timeout):
            if args.mode == "blocking":
                _blast_blocking(conn.sock, stats)
            elif args.mode == "nonblocking-naive":
                _blast_naive(conn.sock, stats)
            else:
                _blast_nonblocking(conn.sock, stats, stall=endpoint.read_timeout)
            stats.seconds = time.monotonic() - started
            conn.sock.settimeout(endpoint.read_timeout)  # back to blocking, with a timeout
            conn.sock.shutdown(socket.SHUT_WR)
        report = response_result(conn.read_message())
    received = int(report["bytes"])
    lost = stats.attempted - received
    out.say(
        f"blast {args.mode}: sent {stats.attempted} bytes in {stats.send_calls} send calls "
        f"({stats.seconds:.2f} s); server received {received} bytes in {report['batches']} "
        f"recv batches over {report['duration_s']:.2f} s; lost {lost}"
        + (
            f"; {stats.work_slices} slices of other work done while waiting"
            if args.mode == "nonblocking"
            else ""
        )
    )
    out.result(
        "blast",
        lost == 0 or args.mode == "nonblocking-naive",
        **stats.__dict__,
        received=received,
        lost=lost,
        lossy=lost > 0,
        server=report,
    )
    if lost and args.mode != "nonblocking-naive":
        raise CommandFailed(f"{args.mode} blast lost {lost} bytes")
