"""healthcheck.sh, the compose healthchecks, run with bash against real servers on loopback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import socketlab
from socketlab.protocol import encode_request
from socketlab.rss.feed_server import FeedServer, ServerOptions
from socketlab.server import LabServer, ServerConfig

SCRIPT = Path(socketlab.__file__).with_name("healthcheck.sh")
CONFIG = ServerConfig(host="127.0.0.1", port=0, generate_samples=False, poll_interval=0.01)


def probe(*args: str, timeout: str = "2") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "SOCKETLAB_HEALTH_TIMEOUT": timeout},
        check=False,
    )


@pytest.fixture
def lab_port(tmp_path: Path, serve: Callable[..., Any]) -> int:
    server = LabServer(replace(CONFIG, data_root=tmp_path))
    port = server.bind()
    serve(server.serve, name="lab-server", stop_within=3)
    return port


@pytest.fixture
def feed_port() -> Iterator[int]:
    server = FeedServer(ServerOptions(host="127.0.0.1", port=0))
    server.start()
    try:
        yield server.port
    finally:
        server.close()


def test_the_hello_bytes_are_the_protocols() -> None:
    literal = re.search(r"^HELLO='(.*)'$", SCRIPT.read_text(), re.MULTILINE)
    assert literal is not None
    assert literal.group(1).replace("\\000", "\x00").encode() == encode_request("hello", "health")


def test_hello_passes_on_a_lab_server(lab_port: int) -> None:
    result = probe("hello", "127.0.0.1", str(lab_port))
    assert (result.returncode, result.stderr) == (0, "")


def test_hello_fails_when_the_server_refuses(tmp_path: Path, serve: Callable[..., Any]) -> None:
    server = LabServer(replace(CONFIG, data_root=tmp_path, max_per_peer=0))
    port = server.bind()
    serve(server.serve, name="lab-server", stop_within=3)
    result = probe("hello", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"unhealthy: hello refused by 127.0.0.1:{port}: ")
    assert "too many connections from your address" in result.stderr


def test_hello_fails_on_a_port_that_accepts_but_does_not_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        # nothing will come: a short read deadline shows the same failure sooner
        result = probe("hello", "127.0.0.1", str(port), timeout="0.3")
    assert result.returncode == 1
    assert result.stderr == f"unhealthy: no answer to hello from 127.0.0.1:{port}\n"
    assert time.monotonic() - started < 10


def test_nothing_listening_fails_every_kind() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])  # bound, not listening: connections are refused
        for check in (["hello", "127.0.0.1", port], ["tcp", "127.0.0.1", port]):
            result = probe(*check)
            assert result.returncode == 1
            assert result.stderr == f"unhealthy: no connection to 127.0.0.1:{port}\n"


def test_http_and_tcp_and_several_checks_at_once(lab_port: int, feed_port: int) -> None:
    ok = probe(
        "hello", "127.0.0.1", str(lab_port),
        "tcp", "127.0.0.1", str(feed_port),
        "http", "127.0.0.1", str(feed_port), "/health",
    )  # fmt: skip
    assert (ok.returncode, ok.stderr) == (0, "")
    missing = probe("tcp", "127.0.0.1", str(lab_port), "http", "127.0.0.1", str(feed_port), "/nope")
    assert missing.returncode == 1
    assert missing.stderr == (
        f"unhealthy: http://127.0.0.1:{feed_port}/nope answered HTTP/1.0 404 Not Found\n"
    )


def test_fresh_heartbeat(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"
    assert probe("fresh", str(beat), "30").stderr == f"unhealthy: no heartbeat at {beat}\n"
    beat.touch()
    assert probe("fresh", str(beat), "30").returncode == 0
    old = time.time() - 120
    os.utime(beat, (old, old))
    stale = probe("fresh", str(beat), "30")
    assert stale.returncode == 1
    assert re.fullmatch(
        rf"unhealthy: heartbeat {beat} is 1[12]\d s old \(limit 30 s\)\n", stale.stderr
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="none"),
        pytest.param(["nope"], id="unknown"),
        pytest.param(["hello", "127.0.0.1"], id="short"),
        pytest.param(["http", "h", "1"], id="http-short"),
    ],
)
def test_bad_usage_fails(args: list[str]) -> None:
    result = probe(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: ")
