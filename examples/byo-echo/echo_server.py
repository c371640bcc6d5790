"""A TCP echo server: it stands for your own program (plain Python, nothing of socketlab).

Every byte a client sends comes back; one thread per connection.
"""

import socket
import sys
import threading

IDLE_TIMEOUT = 60.0  # seconds a connection may stay silent
CHUNK = 4096


def serve(conn: socket.socket, peer: tuple[str, int]) -> None:
    conn.settimeout(IDLE_TIMEOUT)
    with conn:
        while True:
            try:
                data = conn.recv(CHUNK)
            except OSError as exc:
                print(f"connection from {peer[0]} ended: {exc}", flush=True)
                return
            if not data:
                return
            conn.sendall(data)
            print(f"echoed {len(data)} bytes to {peer[0]}", flush=True)


def main() -> int:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7007
    with socket.create_server(("", port)) as server:
        print(f"listening on {port}", flush=True)
        while True:
            conn, peer = server.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
