"""The teaching baseline of ``lab bench`` (``socketlab naive-transfer``) over loopback.

It moves a file, one 1 KiB ``recv`` at a time, and, the lesson: it cannot tell
a transfer cut short from a finished one.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from socketlab.__main__ import main
from socketlab.errors import ConfigError, ConnectFailed
from socketlab.naive import (
    NAIVE_RECV_SIZE,
    connect_with_retry,
    file_sha256,
    naive_receive,
    serve_file,
)

TIMEOUT = 10.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def test_file_arrives_whole(listener: socket.socket, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 4000 + b"tail")
    sent: list[int] = []
    server = threading.Thread(
        target=lambda: sent.append(
            serve_file(listener, source, accept_timeout=TIMEOUT, send_timeout=TIMEOUT)
        )
    )
    server.start()
    port = listener.getsockname()[1]
    with connect_with_retry("127.0.0.1", port, deadline=time.monotonic() + TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        size, calls, seconds = naive_receive(sock, tmp_path / "copy.bin")
    server.join(TIMEOUT)
    assert sent == [source.stat().st_size] == [size]
    assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert calls >= size // NAIVE_RECV_SIZE + 1  # at most 1 KiB per call, plus the EOF read
    assert seconds >= 0
    assert file_sha256(tmp_path / "copy.bin") == hashlib.sha256(source.read_bytes()).hexdigest()


def test_cut_short_looks_finished(listener: socket.socket, tmp_path: Path) -> None:
    # The sender dies half way: the naive loop sees EOF and "succeeds" with half a file.
    def half_then_close() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"x" * 5000)

    server = threading.Thread(target=half_then_close)
    server.start()
    port = listener.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        size, _, _ = naive_receive(sock, tmp_path / "copy.bin")
    server.join(TIMEOUT)
    assert size == 5000  # no error, no size to compare with: only our checksum would tell


def test_connect_gives_up_at_the_deadline() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    # Nobody listens there any more: refused until the (already passed) deadline.
    with pytest.raises(ConnectFailed, match="refused connections until the deadline"):
        connect_with_retry("127.0.0.1", port, deadline=time.monotonic())


def test_missing_file_is_a_config_error(listener: socket.socket, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        serve_file(listener, tmp_path / "absent", accept_timeout=0.1, send_timeout=0.1)


def test_nobody_connects(listener: socket.socket, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"data")
    with pytest.raises(ConnectFailed, match="no receiver connected"):
        serve_file(listener, source, accept_timeout=0.05, send_timeout=0.05)


def test_receive_cli_reports_unreachable_sender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    argv = ["naive-transfer", "receive", str(tmp_path / "copy.bin"), "--host", "127.0.0.1",
            "--port", str(port), "--connect-deadline", "0"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("socketlab naive-transfer: ")
    assert err.count("\n") == 1
