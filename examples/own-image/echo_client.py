"""The client side of the example: one exchange with the echo server, or exchanges until
the network cuts them off. Prints one JSON line; plain Python, nothing of socketlab."""

import argparse
import json
import socket
import sys
import time


def exchange(host: str, port: int, text: str, timeout: float) -> dict[str, object]:
    """Connect, send one line, read it back; the time of the exchange itself in ms."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.settimeout(timeout)
        started = time.monotonic()
        conn.sendall(text.encode() + b"\n")
        reply = conn.makefile("rb").readline(64 * 1024)
        elapsed = (time.monotonic() - started) * 1000
    return {"reply": reply.decode().rstrip("\n"), "rtt_ms": round(elapsed, 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("text")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per exchange")
    parser.add_argument(
        "--until-cut",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exchange every 0.2 s until one fails (at most this long)",
    )
    args = parser.parse_args()
    if args.until_cut is None:
        print(json.dumps(exchange(args.host, args.port, args.text, args.timeout)))
        return 0
    deadline = time.monotonic() + args.until_cut
    done = 0
    while time.monotonic() < deadline:
        try:
            exchange(args.host, args.port, args.text, args.timeout)
        except OSError as exc:
            print(json.dumps({"cut": True, "exchanges": done, "error": str(exc) or "timed out"}))
            return 0
        done += 1
        time.sleep(0.2)  # a pause between exchanges, not a wait for readiness
    print(json.dumps({"cut": False, "exchanges": done}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
