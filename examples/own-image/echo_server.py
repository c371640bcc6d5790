"""A tiny TCP echo server: a stand-in for your own program. Nothing of socketlab in it."""

import socket
import sys
import threading

PORT = 7007
IDLE_TIMEOUT = 30.0  # seconds a connection may stay silent
MAX_LINE = 64 * 1024


def serve(conn: socket.socket, peer: tuple[str, int]) -> None:
    conn.settimeout(IDLE_TIMEOUT)
    with conn, conn.makefile("rb") as reader:
        try:
            while line := reader.readline(MAX_LINE):
                conn.sendall(line)
                print(f"echoed {len(line)} bytes to {peer[0]}", flush=True)
        except OSError as exc:
            print(f"connection from {peer[0]} ended: {exc}", flush=True)


def main() -> int:
    with socket.create_server(("", PORT), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        print(f"echo server listening on port {PORT}", flush=True)
        while True:
            conn, peer = server.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
