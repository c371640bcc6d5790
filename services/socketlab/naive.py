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
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from socketlab.commandline import add_setting, command_parser
from socketlab.config import SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.errors import ConfigError, ConnectFailed, ServiceError, peer_errors

NAIVE_PORT: Final = 4590
CONNECT_RETRY: Final = 0.05
NAIVE_RECV_SIZE: Final = 1024  # the tutorials' number; the point of the baseline
HASH_BLOCK: Final = 1 << 20


@env_config
@dataclass(frozen=True, kw_only=True)
class NaiveConfig(EnvConfig):
    """Settings of ``socketlab naive-transfer`` (each is also an option)."""

    host: str = env_field("SOCKETLAB_SERVER", SERVER_HOST, "host name of the server container")
    port: int = env_field("SOCKETLAB_NAIVE_PORT", NAIVE_PORT, "TCP port of the naive baseline")
    accept_timeout: float = env_field(
        "SOCKETLAB_NAIVE_ACCEPT_TIMEOUT", 60.0, "seconds the naive sender waits for its receiver"
    )
    connect_timeout: float = env_field(
        "SOCKETLAB_TIMEOUT", 5.0, "connect timeout of the TCP demo clients, seconds"
    )
    read_timeout: float = env_field(
        "SOCKETLAB_READ_TIMEOUT",
        30.0,
        "seconds a TCP demo client waits for the peer to send or take data",
    )
    # The sender is started separately: the receiver retries refused connects until then.
    connect_deadline: float = env_field(
        "SOCKETLAB_NAIVE_CONNECT_DEADLINE",
        30.0,
        "seconds the naive receiver retries refused connects (the sender starts separately)",
    )


def send_once(path: Path, *, port: int, accept_timeout: float, send_timeout: float) -> int:
    """Serve ``path`` to the first client on ``port``, then close (EOF = end of file)."""
    try:
        server = socket.create_server(("0.0.0.0", port))
    except OSError as exc:
        raise ServiceError(f"cannot listen on port {port}: {exc.strerror or exc}") from exc
    with server as listener:
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
            raise ConnectFailed(f"no receiver connected within {accept_timeout:g} s") from exc
        with conn, peer_errors(f"the receiver of {path}", "send", timeout=send_timeout):
            conn.settimeout(send_timeout)
            return conn.sendfile(handle)


def connect_with_retry(
    host: str, port: int, *, deadline: float, timeout: float = 5.0
) -> socket.socket:
    """Connect, retrying while refused (the sender may not listen yet) until ``deadline``."""
    peer = f"{host}:{port}"
    while True:
        try:
            with peer_errors(peer, "connect", timeout=timeout):
                return socket.create_connection((host, port), timeout=timeout)
        except ConnectFailed as exc:
            if not isinstance(exc.__cause__, ConnectionRefusedError):
                raise
            if time.monotonic() >= deadline:
                raise ConnectFailed(f"{peer} refused connections until the deadline") from exc
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


def build_parser(config: NaiveConfig | None = None) -> argparse.ArgumentParser:
    config = config or NaiveConfig()
    parser = command_parser("naive-transfer", __doc__, raw=True)
    sub = parser.add_subparsers(dest="side", required=True)
    send = sub.add_parser("send", help="serve one file to one receiver, then exit")
    send.add_argument("path", type=Path)
    add_setting(send, "--port", config=config, name="port")
    add_setting(send, "--accept-timeout", config=config, name="accept_timeout")
    add_setting(send, "--send-timeout", config=config, name="read_timeout", dest="send_timeout")
    receive = sub.add_parser("receive", help="the recv(1024) loop into DEST")
    receive.add_argument("dest", type=Path)
    add_setting(receive, "--host", config=config, name="host")
    add_setting(receive, "--port", config=config, name="port")
    add_setting(receive, "--read-timeout", config=config, name="read_timeout")
    add_setting(receive, "--connect-timeout", config=config, name="connect_timeout")
    add_setting(receive, "--connect-deadline", config=config, name="connect_deadline")
    receive.add_argument("--json", action="store_true", help="print one JSON line")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser(NaiveConfig.from_env()).parse_args(argv)
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
    peer = f"{args.host}:{args.port}"
    with connect_with_retry(
        args.host, args.port, deadline=deadline, timeout=args.connect_timeout
    ) as sock:
        sock.settimeout(args.read_timeout)
        with peer_errors(peer, "read", timeout=args.read_timeout):
            size, calls, seconds = naive_receive(sock, args.dest)
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
