"""The lab protocol server on 4571/tcp (``server`` container).

Foundation version: greets each client and closes. The full multi-client
server with the application-layer protocol replaces this.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading

from socketlab.config import LAB_PROTOCOL_PORT, env_float, env_int

log = logging.getLogger("socketlab.server")

ACCEPT_POLL = 0.5


def greeting(peer_host: str) -> bytes:
    return f"Hello, {peer_host}! This is the socketlab server on {socket.gethostname()}.\n".encode()


def serve(stop: threading.Event) -> None:
    port = env_int("SOCKETLAB_PORT", LAB_PROTOCOL_PORT)
    send_timeout = env_float("SOCKETLAB_SEND_TIMEOUT", 5.0)
    with socket.create_server(("0.0.0.0", port), reuse_port=False, backlog=128) as listener:
        listener.settimeout(ACCEPT_POLL)
        log.info("event=listening service=lab-protocol port=%d", port)
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                if not selector.select(timeout=ACCEPT_POLL):
                    continue
                try:
                    conn, (peer_host, peer_port) = listener.accept()
                except (TimeoutError, BlockingIOError):
                    continue
                with conn:
                    conn.settimeout(send_timeout)
                    try:
                        conn.sendall(greeting(peer_host))
                    except OSError as exc:
                        log.warning(
                            "event=send_failed peer=%s:%d error=%s", peer_host, peer_port, exc
                        )
                        continue
                log.info("event=greeted peer=%s:%d", peer_host, peer_port)
