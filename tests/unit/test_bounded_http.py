"""BoundedHttpServer: slow, idle, oversized and too many clients cost bounded threads and time."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from socketlab.bounded_http import BoundedHttpServer, BoundedRequestHandler, HttpLimits, head_end

RELEASE = threading.Event()
ENTERED = threading.Event()
BLOCKED: list[str] = []  # one entry per handler inside /block (list.append is atomic)


class _Handler(BoundedRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/block":
            BLOCKED.append(threading.current_thread().name)
            ENTERED.set()
            RELEASE.wait(10)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(**limits: Any) -> Iterator[BoundedHttpServer]:
    RELEASE.clear()
    ENTERED.clear()
    BLOCKED.clear()
    server = BoundedHttpServer(("127.0.0.1", 0), _Handler, limits=HttpLimits(**limits), name="test")
    server.start()
    try:
        yield server
    finally:
        RELEASE.set()
        server.close()


def get(server: BoundedHttpServer, path: str = "/", timeout: float = 5.0) -> int:
    url = f"http://127.0.0.1:{server.port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status)


def status_of(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_slow_clients_hold_no_worker_and_are_dropped_at_the_head_deadline() -> None:
    # Threads, not a count: an earlier test's pool may still be ending its threads.
    threads_before = set(threading.enumerate())
    with serving(workers=2, head_timeout=0.5) as server:
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
        for sock in slow:
            sock.send(b"G")
        # Every slow client is still sending its head: the two workers are free.
        assert get(server) == 200
        started_here = set(threading.enumerate()) - threads_before
        assert len(started_here) == 3, f"one loop and two workers: {started_here}"
        started = time.monotonic()
        for sock in slow:
            assert status_of(sock) == b"HTTP/1.0 408 Request Timeout"
        assert time.monotonic() - started < 5.0
        assert server.counters["head_timeout"] == 100
        for sock in slow:
            sock.close()


def test_a_head_that_trickles_in_meets_the_whole_head_deadline() -> None:
    with (
        serving(head_timeout=0.5) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        started = time.monotonic()
        sock.settimeout(0.05)  # the hostile client's pace: one byte per 50 ms
        answer = None
        for byte in itertools.chain(b"GET / HTTP/1.0\r\nX-Slow: ", itertools.repeat(ord("a"))):
            if time.monotonic() - started > 5:
                break
            try:
                sock.send(bytes([byte]))
                answer = sock.recv(4096)
                break
            except TimeoutError:
                continue
            except OSError:
                answer = b""
                break
        assert answer is not None, "the server never hung up on the trickle"
        assert answer.startswith(b"HTTP/1.0 408") or answer == b""
        assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"X-Big: " + b"a" * 20_000 + b"\r\n", id="one-big-header"),
        pytest.param(b"".join(b"X-%d: %s\r\n" % (i, b"a" * 60_000) for i in range(90)), id="5mb"),
    ],
)
def test_a_head_over_the_size_cap_is_431(headers: bytes) -> None:
    with (
        serving(max_head=16 * 1024) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        # The server may hang up while we are still sending: refused all the same.
        with contextlib.suppress(OSError):
            sock.sendall(b"GET / HTTP/1.0\r\n" + headers + b"\r\n")
        assert status_of(sock) in {b"HTTP/1.0 431 Request Header Fields Too Large", b""}
        assert server.counters["head_too_large"] == 1
        assert get(server) == 200


def test_a_full_queue_answers_503_at_once() -> None:
    with serving(workers=1, queue=1) as server:
        holders = []
        for _ in range(2):  # one handled (blocked), one waiting in the queue
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /block HTTP/1.0\r\n\r\n")
            holders.append(sock)
            assert ENTERED.wait(5), "the first request reached the worker"
        deadline = time.monotonic() + 5
        while server._work.qsize() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition with a deadline
        with socket.create_connection(("127.0.0.1", server.port)) as third:
            third.sendall(b"GET / HTTP/1.0\r\n\r\n")
            started = time.monotonic()
            assert status_of(third) == b"HTTP/1.0 503 Service Unavailable"
            assert time.monotonic() - started < 2.0
        RELEASE.set()
        for sock in holders:
            assert status_of(sock) == b"HTTP/1.0 200 OK"
            sock.close()


def test_a_body_that_stops_arriving_meets_the_body_deadline() -> None:
    with (
        serving(body_timeout=0.5) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.0\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(4096) == b"", "closed without an answer"
        assert time.monotonic() - started < 3.0
        assert get(server) == 200, "the worker is free again"


def test_many_connections_at_once_are_all_accepted_and_answered(
    wait_until: Callable[..., Any],
) -> None:
    with serving(workers=4) as server:
        assert server.limits.backlog >= 128
        socks = [
            socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(200)
        ]
        # every worker is held first, so how many fit is the queue's size and not how
        # soon the worker threads were scheduled
        for sock in socks[:4]:
            sock.sendall(b"GET /block HTTP/1.0\r\n\r\n")
        wait_until(lambda: len(BLOCKED) == 4, "all four workers to be busy")
        for sock in socks[4:]:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        wait_until(
            lambda: server.counters["busy"] == 200 - 4 - 64, "the overflow to be told it is busy"
        )
        RELEASE.set()
        answers = [status_of(sock) for sock in socks]
        for sock in socks:
            sock.close()
    ok, busy = b"HTTP/1.0 200 OK", b"HTTP/1.0 503 Service Unavailable"
    assert answers[:4] == [ok] * 4, "the held workers finish"
    assert (answers.count(ok), answers.count(busy)) == (4 + 64, 200 - 4 - 64), (
        "every worker and queue place was used, and only the overflow was busy"
    )


def test_past_max_pending_the_oldest_waiting_head_makes_room() -> None:
    with serving(max_pending=10) as server:
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(15)]
        deadline = time.monotonic() + 5
        while server.counters["accepted"] < 15 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition with a deadline
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answers = []
        for sock in socks:
            try:
                answers.append(status_of(sock))
            except OSError:
                answers.append(b"")
            sock.close()
    assert answers[:5] == [b""] * 5, "the five oldest were dropped"
    assert answers[5:] == [b"HTTP/1.0 200 OK"] * 10


def test_an_idle_server_sleeps() -> None:
    with serving() as server:
        assert server._next_deadline() is None, "no timer runs with nothing pending"


def test_head_end() -> None:
    assert head_end(b"GET / HTTP/1.0\r\n\r\nbody") == 18
    assert head_end(b"GET / HTTP/1.0\n\nbody") == 16
    assert head_end(b"GET / HTTP/1.0\r\nHost: x\r\n") is None


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(workers=0)
    with pytest.raises(ValueError, match="positive"):
        HttpLimits(head_timeout=0)
