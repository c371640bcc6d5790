"""The timeout and misbehaviour demos: ``timeout read|accept`` and ``misbehave KIND``.

``timeout read`` succeeds only on a real read timeout (:class:`ReadTimeout`):
a reset or a close is a failure of the demo, not a timeout.
"""

from __future__ import annotations

import argparse
import socket
import time

from socketlab.client.connection import Endpoint, LabConnection
from socketlab.client.errors import CommandFailed
from socketlab.client.output import Output
from socketlab.errors import PeerUnavailable, ReadTimeout, ServiceError
from socketlab.protocol import encode_request
from socketlab.protocol.framing import PROTO_HEADER


def cmd_timeout(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    if args.kind == "read":
        _read_timeout(endpoint, out)
    else:
        _accept_timeout(out, port=args.listen_port, timeout=args.accept_timeout)


def _read_timeout(endpoint: Endpoint, out: Output) -> None:
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        conn.send(encode_request("stall", endpoint.read_timeout + 2))
        try:
            conn.read_message()
        except ReadTimeout as exc:
            elapsed = time.monotonic() - started
            out.say(f"read timeout: {exc} (gave up after {elapsed:.1f} s)")
            out.result("timeout", True, kind="read", seconds=round(elapsed, 3))
            return
    raise CommandFailed("expected a read timeout, but the server answered in time")


def _accept_timeout(out: Output, *, port: int, timeout: float) -> None:
    started = time.monotonic()
    try:
        listener = socket.create_server(("0.0.0.0", port))
    except OSError as exc:
        raise ServiceError(f"cannot listen on port {port}: {exc.strerror or exc}") from exc
    with listener:
        listener.settimeout(timeout)
        port = listener.getsockname()[1]
        try:
            accepted, peer = listener.accept()
        except TimeoutError:
            elapsed = time.monotonic() - started
            out.say(f"accept timeout: no client connected to port {port} within {timeout:g} s")
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
