"""``socketlab wait tcp|udp|http ...``: wait, with a deadline, until a peer answers.

Run by the controller in a netkit helper joined to a service's network
namespace, for a scenario's ``wait_for`` step (``lab.scenario.steps``): one
helper does every try, so a wait costs one container however long it takes.

* ``tcp HOST PORT`` - a TCP connect succeeds;
* ``udp HOST PORT --send TEXT [--expect REGEX]`` - a datagram gets a reply
  (matching REGEX when given);
* ``http URL [--status N]`` - an HTTP GET gets status N (default 200).

Each try is bounded by ``--try-timeout``, tries are ``--interval`` apart, and
the whole wait by ``--timeout``. One JSON line tells what happened: ``ok``,
``tries``, ``waited`` (seconds) and ``last`` (what the last try saw: "connection
refused", "HTTP 503", a reply that did not match), so a wait that times out says
why. Exit 0 when the peer answered, 1 at the deadline, 2 for bad usage.

:func:`wait_until` is the loop, with the clock and the pause injected for tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from socketlab.commandline import command_parser

MAX_REPLY = 65535  # one datagram; also what is read of an HTTP body (then dropped)
MAX_SEEN = 200  # characters of the last answer kept in the report

Try = Callable[[float], tuple[bool, str]]  # (answered as wanted, what was seen) within a timeout


@dataclass(frozen=True, kw_only=True)
class WaitResult:
    """How a wait ended."""

    ok: bool
    tries: int
    waited: float
    last: str

    def as_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "tries": self.tries, "waited": round(self.waited, 3), "last": self.last}
        )


def wait_until(
    attempt: Try,
    *,
    timeout: float,
    interval: float,
    try_timeout: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Call ``attempt`` until it answers or ``timeout`` seconds have passed (one last try
    at the deadline at most ``try_timeout`` long, never past it)."""
    started = clock()
    deadline = started + timeout
    tries = 0
    last = "not tried"
    while True:
        remaining = deadline - clock()
        tries += 1
        ok, last = attempt(max(0.05, min(try_timeout, remaining)))
        if ok:
            return WaitResult(ok=True, tries=tries, waited=clock() - started, last=last)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(ok=False, tries=tries, waited=clock() - started, last=last)
        pause(min(interval, remaining))  # the gap between two tries of a bounded wait


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SEEN else text[: MAX_SEEN - 3] + "..."


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown name ({exc.strerror or exc})"
    return _short(exc.strerror or str(exc) or type(exc).__name__)


def tcp_try(host: str, port: int) -> Try:
    def attempt(timeout: float) -> tuple[bool, str]:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True, "connected"
        except OSError as exc:
            return False, _reason(exc).lower()

    return attempt


def udp_try(host: str, port: int, *, send: bytes, expect: re.Pattern[str] | None) -> Try:
    def attempt(timeout: float) -> tuple[bool, str]:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.send(send)
                reply = sock.recv(MAX_REPLY).decode("utf-8", "replace")
        except OSError as exc:
            return False, _reason(exc).lower()
        if expect is not None and not expect.search(reply):
            return False, f"reply {_short(reply)!r} does not match {expect.pattern!r}"
        return True, f"reply {_short(reply)!r}"

    return attempt


def http_try(url: str, *, status: int) -> Try:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection

    def attempt(timeout: float) -> tuple[bool, str]:
        connection = kind(parts.hostname or "", parts.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            answer = connection.getresponse()
            answer.read(MAX_REPLY)
        except (OSError, http.client.HTTPException) as exc:
            reason = _reason(exc) if isinstance(exc, OSError) else _short(str(exc) or "bad answer")
            return False, reason.lower()
        finally:
            connection.close()
        seen = f"HTTP {answer.status}"
        return answer.status == status, seen

    return attempt


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("wait", __doc__, raw=True)
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait in all")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between tries")
    parser.add_argument("--try-timeout", type=float, default=1.0, help="seconds one try may take")
    sub = parser.add_subparsers(dest="kind", required=True)
    for name in ("tcp", "udp"):
        one = sub.add_parser(name)
        one.add_argument("host")
        one.add_argument("port", type=int)
        if name == "udp":
            one.add_argument("--send", default="ping", help="the datagram's text")
            one.add_argument("--expect", default=None, help="a regex the reply must match")
    web = sub.add_parser("http")
    web.add_argument("url")
    web.add_argument("--status", type=int, default=200, help="the status to wait for")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if min(args.timeout, args.interval, args.try_timeout) <= 0:
        print(
            "socketlab wait: --timeout, --interval and --try-timeout must be > 0", file=sys.stderr
        )
        return 2
    try:
        if args.kind == "tcp":
            attempt = tcp_try(args.host, args.port)
        elif args.kind == "udp":
            expect = re.compile(args.expect) if args.expect is not None else None
            attempt = udp_try(args.host, args.port, send=args.send.encode(), expect=expect)
        else:
            attempt = http_try(args.url, status=args.status)
    except (ValueError, re.error) as exc:
        print(f"socketlab wait: {exc}", file=sys.stderr)
        return 2
    result = wait_until(
        attempt, timeout=args.timeout, interval=args.interval, try_timeout=args.try_timeout
    )
    print(result.as_json(), flush=True)
    return 0 if result.ok else 1
