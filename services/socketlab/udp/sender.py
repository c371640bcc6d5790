"""``socketlab udp-send``: send ``Message #n`` datagrams to the listener.

Foundation version: plain text datagrams at a fixed interval.
"""

from __future__ import annotations

import argparse
import socket
import time

from socketlab.config import UDP_LISTENER_HOST, UDP_PORT, env_str


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="socketlab udp-send")
    parser.add_argument("--host", default=env_str("SOCKETLAB_UDP_LISTENER", UDP_LISTENER_HOST))
    parser.add_argument("--port", type=int, default=UDP_PORT)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between datagrams")
    args = parser.parse_args(argv)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((args.host, args.port))
        next_send = time.monotonic()
        for number in range(1, args.count + 1):
            sock.send(f"Message #{number}".encode())
            next_send += args.interval
            delay = next_send - time.monotonic()
            if delay > 0 and number < args.count:
                time.sleep(delay)  # pacing between sends, not waiting for readiness
    print(f"sent {args.count} datagrams to {args.host}:{args.port}")
    return 0
