"""The tutorials' echo client: it sends a message, then takes one recv(1024) as the reply.

That works on a quiet LAN, where a small message arrives in one piece. It is wrong:
TCP is a byte stream, and a reply can arrive in several pieces. Plain Python.
"""

import argparse
import json
import socket
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--size", type=int, default=600, help="bytes per message (< 1024)")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    with socket.create_connection((args.host, args.port), timeout=args.timeout) as conn:
        for number in range(args.messages):
            message = f"message {number} ".encode().ljust(args.size, b".")
            conn.sendall(message)
            reply = conn.recv(1024)  # the bug: one recv is not one message
            if reply != message:
                print(
                    json.dumps(
                        {
                            "ok": False,
                            "error": "reply differs from request",
                            "message": number,
                            "sent": len(message),
                            "got": len(reply),
                        }
                    )
                )
                return 1
    print(json.dumps({"ok": True, "messages": args.messages}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
