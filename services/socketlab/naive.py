"""``socketlab naive-transfer``: the tutorials' file transfer, kept as a TEACHING BASELINE.

This is **not** how to move a file; ``socketlab client fetch`` is. It exists so
``lab bench`` can show the tutorials' receive loop beside the real transfer,
on the same link in the same run::

    socketlab naive-transfer send PATH [--port P]     # server side: one connection, then exit
    socketlab naive-transfer receive [--host H] DEST  # client side: the recv(1024) loop

The receiver is the seeds' loop on purpose: ``recv(1024)`` until the peer
closes, writing each piece. No framing, no size, no checksum, so a connection
cut short looks exactly like a finished file, and 1 KiB reads cost one system
call (and one Python round trip) per KiB. Only the timeouts are added (every
socket here has one). The sender is efficient (``sendfile``) so what the
benchmark shows is the receiver's cost. ``receive --json`` prints one JSON
line; its ``sha256`` is computed afterwards, outside the timed loop, by us:
the naive loop itself has no way to know whether it got the whole file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import Final

from socketlab.config import SERVER_HOST, env_float, env_int, env_str
from socketlab.errors import ConfigError, PeerUnavailable, SocketlabError

NAIVE_PORT: Final = env_int("SOCKETLAB_NAIVE_PORT", 4590)
ACCEPT_TIMEOUT: Final = env_float("SOCKETLAB_NAIVE_ACCEPT_TIMEOUT", 60.0)
CONNECT_TIMEOUT: Final = env_float("SOCKETLAB_TIMEOUT", 5.0)
READ_TIMEOUT: Final = env_float("SOCKETLAB_READ_TIMEOUT", 30.0)
# The sender is started separately: the receiver retries refused connects until then.
CONNECT_DEADLINE: Final = env_float("SOCKETLAB_NAIVE_CONNECT_DEADLINE", 30.0)
CONNECT_RETRY: Final = 0.05
NAIVE_RECV_SIZE: Final = 1024  # the tutorials' number; the point of the baseline
HASH_BLOCK: Final = 1 << 20


def send_once(path: Path, *, port: int, accept_timeout: float, send_timeout: float) -> int:
    """Serve ``path`` to the first client on ``port``, then close (EOF = end of file)."""
    with socket.create_server(("0.0.0.0", port)) as listener:
        print(f"event=naive_listening port={port} path={path}", file=sys.stderr, flush=True)
        return serve_file(listener, path, accept_timeout=accept_timeout, send_timeout=send_timeout)


def serve_file(
    listener: socket.socket, path: Path, *, accept_timeout: float, send_timeout: float
) -> int:
    """Accept one client on ``listener``, ``sendfile`` it ``path``, close; bytes sent."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        listener.settimeout(accept_timeout)
        try:
            conn, _ = listener.accept()
        except TimeoutError as exc:
            raise PeerUnavailable(f"no receiver connected within {accept_timeout:g} s") from exc
        with conn:
            conn.settimeout(send_timeout)
            try:
                return conn.sendfile(handle)
            except OSError as exc:
                raise PeerUnavailable(f"sending {path} failed: {exc}") from exc


def connect_with_retry(host: str, port: int, *, deadline: float) -> socket.socket:
    """Connect, retrying while refused (the sender may not listen yet) until ``deadline``."""
    while True:
        try:
            return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except ConnectionRefusedError as exc:
            if time.monotonic() >= deadline:
                raise PeerUnavailable(
                    f"{host}:{port} refused connections until the deadline"
                ) from exc
        except OSError as exc:
            raise PeerUnavailable(f"cannot reach {host}:{port}: {exc}") from exc
        time.sleep(CONNECT_RETRY)  # polling interval of a deadline-bounded wait


def naive_receive(sock: socket.socket, dest: Path) -> tuple[int, int, float]:
    """The tutorials' loop. Returns (bytes, recv calls, seconds from connect to EOF)."""
    started = time.monotonic()
    total = calls = 0
    with dest.open("wb") as out:
        while True:
            data = sock.recv(NAIVE_RECV_SIZE)
            calls += 1
            if not data:
                break
            out.write(data)
            total += len(data)
    return total, calls, time.monotonic() - started


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="socketlab naive-transfer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="side", required=True)
    send = sub.add_parser("send", help="serve one file to one receiver, then exit")
    send.add_argument("path", type=Path)
    send.add_argument("--port", type=int, default=NAIVE_PORT)
    send.add_argument("--accept-timeout", type=float, default=ACCEPT_TIMEOUT)
    send.add_argument("--send-timeout", type=float, default=READ_TIMEOUT)
    receive = sub.add_parser("receive", help="the recv(1024) loop into DEST")
    receive.add_argument("dest", type=Path)
    receive.add_argument("--host", default=env_str("SOCKETLAB_SERVER", SERVER_HOST))
    receive.add_argument("--port", type=int, default=NAIVE_PORT)
    receive.add_argument("--read-timeout", type=float, default=READ_TIMEOUT)
    receive.add_argument("--connect-deadline", type=float, default=CONNECT_DEADLINE)
    receive.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.side == "send":
            sent = send_once(
                args.path,
                port=args.port,
                accept_timeout=args.accept_timeout,
                send_timeout=args.send_timeout,
            )
            print(json.dumps({"command": "naive-send", "ok": True, "bytes": sent}), flush=True)
            return 0
        deadline = time.monotonic() + args.connect_deadline
        with connect_with_retry(args.host, args.port, deadline=deadline) as sock:
            sock.settimeout(args.read_timeout)
            try:
                size, calls, seconds = naive_receive(sock, args.dest)
            except TimeoutError as exc:
                raise PeerUnavailable(f"nothing for {args.read_timeout:g} s") from exc
            except OSError as exc:
                raise PeerUnavailable(f"receiving failed: {exc}") from exc
    except SocketlabError as exc:
        print(f"naive-transfer {args.side}: {exc}", file=sys.stderr)
        return 1
    result = {
        "command": "naive-receive",
        "ok": True,
        "bytes": size,
        "recv_calls": calls,
        "seconds": seconds,
        "sha256": file_sha256(args.dest),
        "verified": False,  # the loop itself checks nothing; compare sha256 yourself
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(f"naive receive: {size} bytes in {calls} recv calls, {seconds:.2f} s (unverified)")
    return 0
