"""``socketlab udp-listener``: receive datagrams on 37020/udp and report counts.

Foundation version: counts datagrams and serves ``GET /stats`` (JSON) on the
status port. Per-sender accounting (loss, reorder, duplicates, jitter)
replaces this.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from socketlab.config import UDP_PORT, UDP_STATUS_PORT, env_float

log = logging.getLogger("socketlab.udp")

RECV_POLL = 0.5
MAX_DATAGRAM = 65535


class Counter:
    """Datagram and byte counts, shared between the receive loop and the status server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.datagrams = 0
        self.bytes = 0

    def add(self, size: int) -> None:
        with self._lock:
            self.datagrams += 1
            self.bytes += size

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"datagrams": self.datagrams, "bytes": self.bytes}


def status_server(counter: Counter, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") not in {"/stats", "/health"}:
                self.send_error(404)
                return
            body = json.dumps(counter.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.timeout = env_float("SOCKETLAB_STATUS_TIMEOUT", 5.0)
    return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="socketlab udp-listener")
    parser.add_argument("--port", type=int, default=UDP_PORT)
    parser.add_argument("--status-port", type=int, default=UDP_STATUS_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    counter = Counter()
    status = status_server(counter, args.status_port)
    threading.Thread(target=status.serve_forever, name="status", daemon=True).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", args.port))
        sock.settimeout(RECV_POLL)
        log.info("event=listening port=%d status_port=%d", args.port, args.status_port)
        try:
            while True:
                try:
                    data = sock.recv(MAX_DATAGRAM)
                except TimeoutError:
                    continue
                counter.add(len(data))
        except KeyboardInterrupt:
            return 0
        finally:
            status.shutdown()
