"""``socketlab wait``: the bounded retry loop on a fake clock, and each probe on loopback."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from socketlab.readiness import http_try, main, tcp_try, udp_try, wait_until


class Clock:
    """A fake monotonic clock that moves only when paused on or when a try takes time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_the_loop_stops_at_the_first_answer() -> None:
    clock = Clock()
    answers = iter([(False, "refused"), (False, "refused"), (True, "connected")])
    result = wait_until(
        lambda timeout: next(answers),
        timeout=5,
        interval=0.5,
        try_timeout=1,
        clock=clock,
        pause=clock.pause,
    )
    assert (result.ok, result.tries, result.last) == (True, 3, "connected")
    assert clock.pauses == [0.5, 0.5]


def test_the_loop_gives_up_at_the_deadline_with_what_it_last_saw() -> None:
    clock = Clock()
    timeouts: list[float] = []

    def attempt(timeout: float) -> tuple[bool, str]:
        timeouts.append(timeout)
        clock.now += 0.3  # each try takes a while
        return False, f"HTTP 503 #{len(timeouts)}"

    result = wait_until(
        attempt, timeout=2, interval=0.5, try_timeout=1, clock=clock, pause=clock.pause
    )
    assert not result.ok
    assert result.last == f"HTTP 503 #{result.tries}"
    assert result.waited >= 2
    assert result.waited < 2 + 1  # never a whole try past the deadline
    assert all(t <= 1 for t in timeouts)
    assert timeouts[-1] < 1  # the last try only gets what is left
    assert json.loads(result.as_json())["ok"] is False


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_tcp_sees_a_listener_and_a_refusal(listener: int, free_port: Callable[..., int]) -> None:
    assert tcp_try("127.0.0.1", listener)(1.0) == (True, "connected")
    ok, seen = tcp_try("127.0.0.1", free_port())(1.0)
    assert not ok
    assert "refused" in seen


@pytest.fixture
def udp_echo() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(b"ok " + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    sock.close()


def test_udp_waits_for_a_reply_that_matches(udp_echo: int, free_port: Callable[..., int]) -> None:
    assert udp_try("127.0.0.1", udp_echo, send=b"hi", expect=None)(1.0) == (True, "reply 'ok hi'")
    ok, seen = udp_try("127.0.0.1", udp_echo, send=b"hi", expect=re.compile("^ready"))(1.0)
    assert (ok, seen) == (False, "reply 'ok hi' does not match '^ready'")
    ok, seen = udp_try("127.0.0.1", free_port(socket.SOCK_DGRAM), send=b"x", expect=None)(0.3)
    assert not ok
    assert seen in {"connection refused", "timed out"}


class _Status(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"hi")

    def log_message(self, *args: Any) -> None:
        pass


def test_http_waits_for_the_status_asked() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )  # a short poll: shutdown() waits for it
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        assert http_try(url, status=200)(1.0) == (False, "HTTP 503")
        _Status.status = 200
        assert http_try(url, status=200)(1.0) == (True, "HTTP 200")
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def test_the_command_prints_one_json_line_and_exits_1_at_the_deadline(
    capsys: pytest.CaptureFixture[str], free_port: Callable[..., int]
) -> None:
    code = main(["--timeout", "0.3", "--interval", "0.05", "tcp", "127.0.0.1", str(free_port())])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["ok"] is False
    assert report["tries"] >= 2
    assert main(["--timeout", "0", "tcp", "127.0.0.1", "1"]) == 2
    assert main(["--timeout", "1", "http", "ftp://x/"]) == 2
