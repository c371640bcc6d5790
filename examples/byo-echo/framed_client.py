"""An echo client that frames its messages: a 4-byte length, then the bytes, and reads the
reply back until it has all of it, however many pieces it comes in. Plain Python."""

import argparse
import json
import socket
import struct
import sys

HEADER = struct.Struct("!I")


def receive_exactly(conn: socket.socket, size: int) -> bytes:
    """Read exactly ``size`` bytes (recv returns whatever has arrived, maybe less)."""
    chunks = []
    while size:
        chunk = conn.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError(f"the server closed with {size} bytes still to come")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--size", type=int, default=600)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as conn:
        for number in range(args.messages):
            message = f"message {number} ".encode().ljust(args.size, b".")
            conn.sendall(HEADER.pack(len(message)) + message)
            (length,) = HEADER.unpack(receive_exactly(conn, HEADER.size))
            reply = receive_exactly(conn, length)
            if reply != message:
                print(
                    json.dumps(
                        {"ok": False, "error": "reply differs from request", "message": number}
                    )
                )
                return 1
    print(json.dumps({"ok": True, "messages": args.messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
