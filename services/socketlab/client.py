"""``socketlab client ...``: the client side of the TCP demos (``client`` container).

Foundation version: ``hello`` only.
"""

from __future__ import annotations

import argparse
import socket
import sys

from socketlab.config import LAB_PROTOCOL_PORT, SERVER_HOST, env_float, env_str

MAX_GREETING = 4096


def fetch_greeting(host: str, port: int, *, timeout: float) -> str:
    """Connect, read the greeting until the server closes, return it as text."""
    chunks: list[bytes] = []
    received = 0
    with socket.create_connection((host, port), timeout=timeout) as conn:
        while received < MAX_GREETING:
            chunk = conn.recv(MAX_GREETING - received)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace").strip()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="socketlab client")
    parser.add_argument("--host", default=env_str("SOCKETLAB_SERVER", SERVER_HOST))
    parser.add_argument("--port", type=int, default=LAB_PROTOCOL_PORT)
    parser.add_argument("--timeout", type=float, default=env_float("SOCKETLAB_TIMEOUT", 5.0))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hello", help="print the server's greeting")
    args = parser.parse_args(argv)
    try:
        print(fetch_greeting(args.host, args.port, timeout=args.timeout))
    except OSError as exc:
        print(f"client: cannot get a greeting from {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
