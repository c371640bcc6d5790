"""``socketlab client ...``: the client side of the TCP demos (``client`` container).

Commands (all take ``--host``, ``--port``, ``--timeout`` (connect),
``--read-timeout`` and ``--json``, which prints one final JSON line)::

    hello                      the server's greeting
    echo [TEXT] [--size N]     a message (optionally larger than any recv) comes back whole;
         [--trickle]           ... even when sent one byte per send()
    request ACTION [JSON]      any JSON action (time, lookup, ...)
    objects [--pickle]         a dict and a Product cross the wire and arrive equal
    ls                         files under the server's data root
    fetch NAME [--dest DIR]    download with .part, fsync, SHA-256 check, rename, resume
    blast --mode M --size N    blocking | nonblocking-naive | nonblocking at the server's sink
    timeout read|accept        the read-timeout and accept-timeout demos
    misbehave KIND             oversize-header | bad-json | slowloris: how the server copes
    swarm [--clients N] [--requests M]
                               N concurrent connections each echo M unique payloads;
                               a summary (failures, p50/p99 latency); exit 0 iff none failed

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
import pickle
import secrets
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from socketlab import objects
from socketlab.config import LAB_PROTOCOL_PORT, SERVER_HOST, env_float, env_str
from socketlab.errors import PeerUnavailable, SocketlabError
from socketlab.files import PartialDownload, TransferError
from socketlab.protocol import (
    BINARY_TYPE,
    JSON_TYPE,
    NEED_DATA,
    ConnectionClosed,
    Content,
    Event,
    FrameDecoder,
    Header,
    Limits,
    Message,
    MessageCollector,
    MessageEnd,
    RemoteProtocolError,
    encode_message,
    encode_request,
)
from socketlab.protocol.framing import PROTO_HEADER
from socketlab.protocol.messages import response_result

RECV_SIZE: Final = 1024 * 1024
WRITER_DEPTH: Final = 16  # chunks (<= RECV_SIZE each) waiting for the disk
DEFAULT_DEST: Final = "/tmp/socketlab-downloads"  # noqa: S108 - the documented default
BLAST_CHUNK: Final = 64 * 1024
DEFAULT_BLAST: Final = 128 * 1024 * 1024
# Responses are bounded; file content may be as large as files get.
CLIENT_LIMITS: Final = Limits(
    max_header=0xFFFF, default_max_content=64 * 1024 * 1024, max_content={BINARY_TYPE: 1 << 50}
)


class CommandFailed(SocketlabError):
    """A demo ran but did not show what it should (bytes lost, objects differ, ...)."""


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    host: str
    port: int
    timeout: float  # connect
    read_timeout: float

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class LabConnection:
    """A blocking connection speaking the lab protocol; every call has a timeout."""

    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.decoder = FrameDecoder(limits=CLIENT_LIMITS)
        sock.settimeout(endpoint.read_timeout)

    @classmethod
    def open(cls, endpoint: Endpoint) -> LabConnection:
        """Connect within ``endpoint.timeout``; PeerUnavailable with the reason otherwise."""
        try:
            sock = socket.create_connection(
                (endpoint.host, endpoint.port), timeout=endpoint.timeout
            )
        except TimeoutError as exc:
            raise PeerUnavailable(
                f"cannot reach {endpoint}: no connection within {endpoint.timeout:g} s (connect timeout)"
            ) from exc
        except OSError as exc:
            raise PeerUnavailable(f"cannot reach {endpoint}: {exc.strerror or exc}") from exc
        return cls(sock, endpoint)

    def __enter__(self) -> LabConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise PeerUnavailable(
                f"{self.endpoint} took nothing for {self.endpoint.read_timeout:g} s (send timeout)"
            ) from exc
        except OSError as exc:
            raise PeerUnavailable(f"sending to {self.endpoint} failed: {exc}") from exc

    def next_event(self) -> Event:
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError as exc:
                raise PeerUnavailable(
                    f"no answer from {self.endpoint} within {self.endpoint.read_timeout:g} s (read timeout)"
                ) from exc
            except OSError as exc:
                raise PeerUnavailable(f"connection to {self.endpoint} failed: {exc}") from exc
            self.decoder.receive_data(data)

    def read_message(self) -> Message:
        collector = MessageCollector()
        while True:
            event = self.next_event()
            if isinstance(event, ConnectionClosed):
                raise PeerUnavailable(f"{self.endpoint} closed the connection without an answer")
            message = collector.feed(event)
            if message is not None:
                return message

    def request(self, action: str, value: Any = None) -> Any:
        """Send a JSON request and return its result (ServerRefused on an error answer)."""
        self.send(encode_request(action, value))
        return response_result(self.read_message())


# --- output ------------------------------------------------------------------------------


@dataclass
class Output:
    """Human lines on stdout, the final JSON line with ``--json``, progress on stderr."""

    as_json: bool
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    printed: bool = False

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def result(self, command: str, ok: bool, **fields: Any) -> None:
        self.printed = True
        if self.as_json:
            line = json.dumps({"command": command, "ok": ok, **fields}, default=str)
            print(line, file=self.stream, flush=True)


class Progress:
    """A progress bar (tty) or periodic progress lines (logs) on stderr."""

    def __init__(
        self, name: str, total: int, initial: int, *, stream: TextIO | None = None
    ) -> None:
        self.name, self.total, self.initial = name, total, initial
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._interval = 0.2 if self.tty else 2.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < self._interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = (done - self.initial) / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / self.total if self.total else 100.0
        eta_text = f"{eta:5.1f}s" if eta != float("inf") else "   ?s"
        if self.tty:
            filled = int(pct / 100 * 30)
            bar = "#" * filled + "-" * (30 - filled)
            self.stream.write(
                f"\r{self.name} [{bar}] {pct:5.1f}% {_human(done)}/{_human(self.total)} "
                f"{_human(rate)}/s ETA {eta_text}"
            )
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(
                f"event=progress name={self.name} bytes={done} total={self.total} "
                f"pct={pct:.1f} rate_mb_s={rate / 1e6:.1f} eta_s={eta:.1f}\n"
            )
        self.stream.flush()


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.1f}{unit}"
        size /= 1000
    return f"{size:.1f}TB"


# --- the demos ---------------------------------------------------------------------------


def cmd_hello(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    del args
    with LabConnection.open(endpoint) as conn:
        greeting = conn.request("hello")
    out.say(str(greeting))
    out.result("hello", True, result=greeting)


def _echo_payload(args: argparse.Namespace) -> str:
    size: int = args.size
    if size:
        # Larger than any single recv: the framing has to put it back together.
        words = "framing keeps messages whole across many recv calls "
        return (words * (size // len(words) + 1))[:size]
    return str(args.text)


def cmd_echo(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    payload = _echo_payload(args)
    wire = encode_request("echo", payload)
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        if args.trickle:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for index in range(len(wire)):
                conn.send(wire[index : index + 1])
        else:
            conn.send(wire)
        result = response_result(conn.read_message())
    if result != payload:
        raise CommandFailed(
            f"echo came back different ({len(str(result))} vs {len(payload)} chars)"
        )
    shown = payload if len(payload) <= 80 else f"{len(payload.encode())} bytes, identical"
    out.say(f"echo: {shown}")
    out.result(
        "echo",
        True,
        bytes=len(payload.encode()),
        wire_bytes=len(wire),
        sends=len(wire) if args.trickle else 1,
        seconds=round(time.monotonic() - started, 4),
    )


def cmd_request(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    try:
        value = json.loads(args.value) if args.value is not None else None
    except ValueError:
        value = args.value  # a bare word is a string value
    with LabConnection.open(endpoint) as conn:
        result = conn.request(args.action, value)
    out.say(json.dumps(result, ensure_ascii=False) if not isinstance(result, str) else result)
    out.result("request", True, action=args.action, result=result)


class _SentinelPayload:
    """For the refusal demo: unpickling this would create ``path`` (harmless, but visible)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return (open, (self.path, "w"))


def cmd_objects(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    if args.pickle:
        _objects_pickle(endpoint, out, args)
        return
    registry = objects.default_registry()
    sample = objects.sample_objects()
    with LabConnection.open(endpoint) as conn:
        result = conn.request("objects", json.loads(registry.dumps(sample)))
    echoed = registry.loads(json.dumps(result["echo"]))
    theirs = registry.loads(json.dumps(result["sample"]))
    equal = echoed == sample and theirs == sample and bool(result["equal_to_sample"])
    for name, value in sample.items():
        out.say(f"{name}: {value!r}")
    out.say(f"server rebuilt {', '.join(result['types'])}; equal after the round trip: {equal}")
    out.result("objects", equal, types=result["types"], equal=equal, encoding="json")
    if not equal:
        raise CommandFailed("objects differ after the round trip")


def _objects_pickle(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    key = (args.pickle_key or env_str("SOCKETLAB_PICKLE_KEY", "")).encode()
    obj: Any = _SentinelPayload(args.sentinel) if args.sentinel else objects.sample_objects()
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if args.unsigned:
        sig = None
    elif not key:
        raise CommandFailed(
            "no pickle key: set SOCKETLAB_PICKLE_KEY or --pickle-key, or --unsigned"
        )
    else:
        sig = objects.signature(payload, key)
        if args.tamper:
            payload = payload[:-2] + bytes([payload[-2] ^ 0x01]) + payload[-1:]
    extra = {"action": "pickle"} | ({"signature": sig} if sig else {})
    with LabConnection.open(endpoint) as conn:
        conn.send(encode_message(objects.PICKLE_TYPE, payload, extra=extra))
        try:
            result = response_result(conn.read_message())
        except RemoteProtocolError as exc:
            out.result("objects", False, encoding="pickle", refused=str(exc))
            raise CommandFailed(f"server refused the pickle: {exc}") from exc
    out.say(f"server loaded a signed pickle of {', '.join(result['types'])}")
    out.result("objects", True, encoding="pickle", **result)


def cmd_ls(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    del args
    with LabConnection.open(endpoint) as conn:
        entries = conn.request("ls")
    for entry in entries:
        out.say(f"{entry['size']:>14}  {entry['name']}")
    out.result("ls", True, files=entries)


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: str
    size: int
    sha256: str
    resumed_from: int
    seconds: float  # the whole command: connect, server's hashing, transfer, verify
    transfer_seconds: float  # first content byte to verified file on disk


def fetch(
    endpoint: Endpoint, name: str, dest: Path, *, progress: bool = True, max_rate: float = 0.0
) -> FetchResult:
    """Download ``name`` into ``dest`` (resuming a ``.part``), verified, then renamed."""
    download = PartialDownload(dest, name, writer_depth=WRITER_DEPTH)
    offset, prefix = download.prefix_state()
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        conn.send(
            encode_request("fetch", {"name": name, "offset": offset, "prefix_sha256": prefix})
        )
        header = conn.next_event()
        if not isinstance(header, Header):
            raise RemoteProtocolError(f"expected a header, got {type(header).__name__}")
        if header.content_type == JSON_TYPE:
            response_result(_finish_message(conn, header))  # raises ServerRefused
            raise RemoteProtocolError("server answered a fetch with JSON but no error")
        size, digest, start = _fetch_fields(header)
        transfer_started = time.monotonic()
        download.open(offset=start)
        bar = Progress(name, size, start) if progress else None
        try:
            _receive_file(conn, download, bar, Pacer(max_rate))
        except (PeerUnavailable, RemoteProtocolError) as exc:
            download.close()  # keep (and fsync) what we have: the next run resumes from it
            raise TransferError(
                f"fetch of {name} interrupted at {download.offset} of {size} bytes "
                f"({exc}); run it again to resume"
            ) from exc
        if bar:
            bar.update(download.offset, final=True)
    path = download.finish(size=size, sha256=digest)
    now = time.monotonic()
    return FetchResult(name, str(path), size, digest, start, now - started, now - transfer_started)


class Pacer:
    """Caps a reader's average rate (a slow reader; TCP flow control slows the sender)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.done = 0

    def account(self, size: int) -> None:
        if self.rate <= 0:
            return
        self.done += size
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)  # pacing, not waiting for readiness


def _receive_file(
    conn: LabConnection, download: PartialDownload, bar: Progress | None, pacer: Pacer
) -> None:
    while not isinstance(event := conn.next_event(), MessageEnd):
        if not isinstance(event, Content):
            raise RemoteProtocolError(f"unexpected {type(event).__name__} in a file")
        download.write(event.data)
        pacer.account(len(event.data))
        if bar:
            bar.update(download.offset)


def _finish_message(conn: LabConnection, header: Header) -> Message:
    collector = MessageCollector()
    collector.feed(header)
    while True:
        message = collector.feed(conn.next_event())
        if message is not None:
            return message


def _fetch_fields(header: Header) -> tuple[int, str, int]:
    size, digest, start = header.get("size"), header.get("sha256"), header.get("offset")
    if not (isinstance(size, int) and isinstance(digest, str) and isinstance(start, int)):
        raise RemoteProtocolError("file header lacks size, sha256 or offset")
    if header.content_length != size - start:
        raise RemoteProtocolError("file header's content-length disagrees with size - offset")
    return size, digest, start


def cmd_fetch(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    result = fetch(
        endpoint, args.name, Path(args.dest), progress=not args.quiet, max_rate=args.max_rate
    )
    moved = result.size - result.resumed_from
    rate = moved / result.transfer_seconds / 1e6 if result.transfer_seconds > 0 else 0.0
    resumed = f", resumed at {result.resumed_from}" if result.resumed_from else ""
    out.say(
        f"fetched {result.name} -> {result.path}: {result.size} bytes, sha256 {result.sha256} "
        f"verified ({result.seconds:.2f} s, {rate:.1f} MB/s{resumed})"
    )
    out.result("fetch", True, **result.__dict__, mb_s=round(rate, 2))


# --- blast: blocking vs non-blocking -------------------------------------------------------


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
                    raise PeerUnavailable(f"socket not writable for {stall:g} s")
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
        try:
            if args.mode == "blocking":
                _blast_blocking(conn.sock, stats)
            elif args.mode == "nonblocking-naive":
                _blast_naive(conn.sock, stats)
            else:
                _blast_nonblocking(conn.sock, stats, stall=endpoint.read_timeout)
        except TimeoutError as exc:
            raise PeerUnavailable(
                f"sink stopped taking data for {endpoint.read_timeout:g} s"
            ) from exc
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


# --- timeouts and misbehaviour ---------------------------------------------------------


def cmd_timeout(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    started = time.monotonic()
    if args.kind == "read":
        with LabConnection.open(endpoint) as conn:
            conn.send(encode_request("stall", endpoint.read_timeout + 2))
            try:
                conn.read_message()
            except PeerUnavailable as exc:
                elapsed = time.monotonic() - started
                out.say(f"read timeout: {exc} (gave up after {elapsed:.1f} s)")
                out.result("timeout", True, kind="read", seconds=round(elapsed, 3))
                return
        raise CommandFailed("expected a read timeout, but the server answered in time")
    with socket.create_server(("0.0.0.0", args.listen_port)) as listener:
        listener.settimeout(args.accept_timeout)
        port = listener.getsockname()[1]
        try:
            accepted, peer = listener.accept()
        except TimeoutError:
            elapsed = time.monotonic() - started
            out.say(
                f"accept timeout: no client connected to port {port} within {args.accept_timeout:g} s"
            )
            out.result("timeout", True, kind="accept", port=port, seconds=round(elapsed, 3))
            return
        accepted.close()
    out.say(f"accept: a client connected from {peer[0]}:{peer[1]} before the timeout")
    out.result("timeout", True, kind="accept", port=port, accepted=f"{peer[0]}:{peer[1]}")


def cmd_misbehave(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    """Break the protocol on purpose and report how the server reacted."""
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        if args.kind == "oversize-header":
            conn.send(PROTO_HEADER.pack(0xFFFF) + b"{" * 1024)
        elif args.kind == "bad-json":
            conn.send(PROTO_HEADER.pack(5) + b"{nope")
        else:  # slowloris: a valid request, one byte every --interval seconds
            wire = encode_request("hello")
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for index in range(len(wire)):
                try:
                    conn.sock.sendall(wire[index : index + 1])
                except OSError:
                    break  # the server hung up on us: the point of the demo
                time.sleep(args.interval)  # the attack itself is slow sending
        reaction = _server_reaction(conn)
    elapsed = time.monotonic() - started
    out.say(f"misbehave {args.kind}: {reaction} after {elapsed:.1f} s")
    out.result("misbehave", True, kind=args.kind, reaction=reaction, seconds=round(elapsed, 3))


def _server_reaction(conn: LabConnection) -> str:
    try:
        message = conn.read_message()
    except PeerUnavailable as exc:
        return f"connection ended ({exc})"
    if message.is_json:
        body = message.json()
        if isinstance(body, dict) and body.get("error"):
            return f"server said: {body['error']}"
    return "server answered normally"


# --- swarm: many concurrent clients -------------------------------------------------------


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
                raise PeerUnavailable(f"cannot reach {self.endpoint}: {os.strerror(code)}")
            self.connected = True
            self._next_request(now)
        sent = self.sock.send(self.outbox)
        self.outbox = self.outbox[sent:]
        self.deadline = now + self.endpoint.read_timeout

    def on_readable(self, now: float) -> None:
        data = self.sock.recv(RECV_SIZE)
        self.decoder.receive_data(data)
        self.deadline = now + self.endpoint.read_timeout
        while not self.finished:
            event = self.decoder.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                raise PeerUnavailable(
                    f"{self.endpoint} closed the connection after {self.done} answers"
                )
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
        except (SocketlabError, OSError) as exc:
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
    try:
        address = socket.getaddrinfo(
            endpoint.host, endpoint.port, socket.AF_INET, socket.SOCK_STREAM
        )[0][4]
    except OSError as exc:
        raise PeerUnavailable(f"cannot resolve {endpoint.host}: {exc}") from exc
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


# --- CLI ---------------------------------------------------------------------------------

Command = Callable[[Endpoint, Output, argparse.Namespace], None]
COMMANDS: Final[dict[str, Command]] = {
    "hello": cmd_hello,
    "echo": cmd_echo,
    "request": cmd_request,
    "objects": cmd_objects,
    "ls": cmd_ls,
    "fetch": cmd_fetch,
    "blast": cmd_blast,
    "timeout": cmd_timeout,
    "misbehave": cmd_misbehave,
    "swarm": cmd_swarm,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    # Connection options work before or after the command; SUPPRESS keeps a
    # subcommand's unset option from overwriting the top-level value.
    def connection_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
        default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
        parser.add_argument("--host", default=default(env_str("SOCKETLAB_SERVER", SERVER_HOST)))
        parser.add_argument("--port", type=int, default=default(LAB_PROTOCOL_PORT))
        parser.add_argument(
            "--timeout",
            type=float,
            default=default(env_float("SOCKETLAB_TIMEOUT", 5.0)),
            help="connect timeout, seconds",
        )
        parser.add_argument(
            "--read-timeout",
            type=float,
            default=default(env_float("SOCKETLAB_READ_TIMEOUT", 30.0)),
            help="seconds to wait for the server to send or take data",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            default=default(False),
            help="print a final JSON line with the results",
        )

    parser = argparse.ArgumentParser(
        prog="socketlab client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    connection_options(common, top=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hello", parents=[common], help="print the server's greeting")
    echo = sub.add_parser("echo", parents=[common], help="send a message, get it back whole")
    echo.add_argument("text", nargs="?", default="Hello, socketlab!")
    echo.add_argument("--size", type=int, default=0, help="send SIZE characters instead")
    echo.add_argument("--trickle", action="store_true", help="one byte per send()")
    request = sub.add_parser("request", parents=[common], help="any JSON action")
    request.add_argument("action")
    request.add_argument("value", nargs="?")
    objs = sub.add_parser("objects", parents=[common], help="a dict and a Product round trip")
    objs.add_argument("--pickle", action="store_true", help="signed pickle (needs the key)")
    objs.add_argument("--pickle-key", default=None)
    objs.add_argument("--unsigned", action="store_true", help="send the pickle unsigned")
    objs.add_argument("--tamper", action="store_true", help="change the pickle after signing")
    objs.add_argument(
        "--sentinel", default=None, help="pickle a payload that would create this file if loaded"
    )
    sub.add_parser("ls", parents=[common], help="list the server's files")
    fetch_p = sub.add_parser("fetch", parents=[common], help="download a file, verified")
    fetch_p.add_argument("name")
    fetch_p.add_argument("--dest", default=env_str("SOCKETLAB_DEST", DEFAULT_DEST))
    fetch_p.add_argument("--quiet", action="store_true", help="no progress output")
    fetch_p.add_argument(
        "--max-rate", type=float, default=0.0, help="read at most this many bytes/s (0: no cap)"
    )
    blast = sub.add_parser("blast", parents=[common], help="send bytes at the server's sink")
    blast.add_argument(
        "--mode", choices=["blocking", "nonblocking-naive", "nonblocking"], default="blocking"
    )
    blast.add_argument("--size", type=int, default=DEFAULT_BLAST)
    timeout = sub.add_parser("timeout", parents=[common], help="read / accept timeout demos")
    timeout.add_argument("kind", choices=["read", "accept"])
    timeout.add_argument("--accept-timeout", type=float, default=2.0)
    timeout.add_argument("--listen-port", type=int, default=0)
    misbehave = sub.add_parser("misbehave", parents=[common], help="break the protocol on purpose")
    misbehave.add_argument("kind", choices=["oversize-header", "bad-json", "slowloris"])
    misbehave.add_argument("--interval", type=float, default=2.0)
    swarm = sub.add_parser("swarm", parents=[common], help="many concurrent clients echoing")
    swarm.add_argument("--clients", type=_positive, default=100, help="concurrent connections")
    swarm.add_argument("--requests", type=_positive, default=5, help="echo requests per client")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    endpoint = Endpoint(
        host=args.host, port=args.port, timeout=args.timeout, read_timeout=args.read_timeout
    )
    out = Output(as_json=args.json)
    try:
        COMMANDS[args.command](endpoint, out, args)
    except SocketlabError as exc:
        print(f"client {args.command}: {exc}", file=sys.stderr)
        if not out.printed:
            out.result(args.command, False, error=str(exc))
        return 1
    except OSError as exc:
        print(f"client {args.command}: {exc}", file=sys.stderr)
        out.result(args.command, False, error=str(exc))
        return 1
    except KeyboardInterrupt:
        print(f"client {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
