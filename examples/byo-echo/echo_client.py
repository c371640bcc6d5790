"""Send one message to the echo server and print what came back, as `reply: TEXT`.

The end of the reply is the end of the connection: the client says it is done
sending (shutdown), then reads until the server closes. Plain Python.
"""

import argparse
import socket
import sys

CHUNK = 4096


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("text")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per socket call")
    args = parser.parse_args()
    try:
        with socket.create_connection((args.host, args.port), timeout=args.timeout) as conn:
            conn.sendall(args.text.encode())
            conn.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := conn.recv(CHUNK):
                chunks.append(chunk)
    except OSError as exc:
        print(f"no reply: {exc or 'timed out'}", file=sys.stderr)
        return 1
    print("reply:", b"".join(chunks).decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
