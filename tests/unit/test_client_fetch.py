"""``client fetch``'s receive path against scripted servers on loopback: content that
comes with the header, content read straight into the download's buffers, a peer
that stops mid-file, a paced reader, and an empty file."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from socketlab import client
from socketlab.client.fetch import PACED_READ, Pacer
from socketlab.files import TransferError
from socketlab.protocol import BINARY_TYPE, RemoteProtocolError, encode_header

TIMEOUT = 5.0
Script = Callable[[socket.socket, bytes], None]


def file_header(content: bytes, *, length: int | None = None) -> bytes:
    return encode_header(
        BINARY_TYPE,
        len(content) if length is None else length,
        extra={
            "name": "f.bin",
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "offset": 0,
        },
    )


@pytest.fixture
def one_shot() -> Iterator[Callable[[bytes, Script], client.Endpoint]]:
    """``one_shot(content, script)``: a server that answers one fetch by ``script``."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(content: bytes, script: Script) -> client.Endpoint:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(TIMEOUT)
        listeners.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                conn.recv(65536)  # the request
                # A client that gives up (as on a failing disk) resets the connection.
                with contextlib.suppress(ConnectionError):
                    script(conn, content)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        port = listener.getsockname()[1]
        return client.Endpoint(host="127.0.0.1", port=port, timeout=TIMEOUT, read_timeout=TIMEOUT)

    yield start
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    for listener in listeners:
        listener.close()


def in_pieces(size: int, *, with_header: int) -> Script:
    def script(conn: socket.socket, content: bytes) -> None:
        conn.sendall(file_header(content) + content[:with_header])
        for start in range(with_header, len(content), size):
            conn.sendall(content[start : start + size])

    return script


@pytest.mark.parametrize(
    ("size", "with_header"),
    [
        pytest.param(10 * 2**20, 0, id="header-alone-then-everything"),
        pytest.param(1000, 123_457, id="some-content-with-the-header"),
        pytest.param(7, 5, id="tiny-pieces"),
    ],
)
def test_fetch_arrives_whole_however_the_bytes_come(
    one_shot: Callable[[bytes, Script], client.Endpoint],
    tmp_path: Path,
    size: int,
    with_header: int,
) -> None:
    content = os.urandom(9 * 2**20 + 13 if size > 1000 else 200_003)
    endpoint = one_shot(content, in_pieces(size, with_header=with_header))
    result = client.fetch(endpoint, "f.bin", tmp_path, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == content
    assert result.sha256 == hashlib.sha256(content).hexdigest()
    assert not (tmp_path / "f.bin.part").exists()


def test_an_empty_file(
    one_shot: Callable[[bytes, Script], client.Endpoint], tmp_path: Path
) -> None:
    endpoint = one_shot(b"", in_pieces(10, with_header=0))
    assert client.fetch(endpoint, "f.bin", tmp_path, progress=False).size == 0
    assert (tmp_path / "f.bin").read_bytes() == b""


def test_a_peer_that_stops_mid_file_leaves_the_part_for_a_resume(
    one_shot: Callable[[bytes, Script], client.Endpoint], tmp_path: Path
) -> None:
    content = os.urandom(6 * 2**20)

    def stops(conn: socket.socket, data: bytes) -> None:
        conn.sendall(file_header(data) + data[:1000])
        conn.sendall(data[1000 : 5 * 2**20 + 17])

    with pytest.raises(TransferError, match=f"interrupted at {5 * 2**20 + 17} of") as caught:
        client.fetch(one_shot(content, stops), "f.bin", tmp_path, progress=False)
    assert isinstance(caught.value.__cause__, RemoteProtocolError)
    assert (tmp_path / "f.bin.part").read_bytes() == content[: 5 * 2**20 + 17]
    assert not (tmp_path / "f.bin").exists()


def test_a_lying_peer_never_reaches_the_final_name(
    one_shot: Callable[[bytes, Script], client.Endpoint], tmp_path: Path
) -> None:
    content = os.urandom(5 * 2**20)

    def corrupts(conn: socket.socket, data: bytes) -> None:
        # the last byte flipped (setting it to a constant left it unchanged 1 time in 256)
        conn.sendall(file_header(data) + data[:-1] + bytes([data[-1] ^ 0xFF]))

    with pytest.raises(TransferError, match="SHA-256 mismatch"):
        client.fetch(one_shot(content, corrupts), "f.bin", tmp_path, progress=False)
    assert not (tmp_path / "f.bin").exists()
    assert not (tmp_path / "f.bin.part").exists()


def test_a_paced_fetch_reads_a_little_at_a_time(
    one_shot: Callable[[bytes, Script], client.Endpoint], tmp_path: Path
) -> None:
    content = os.urandom(300_000)
    endpoint = one_shot(content, in_pieces(50_000, with_header=0))
    result = client.fetch(endpoint, "f.bin", tmp_path, progress=False, max_rate=3e6)
    assert (tmp_path / "f.bin").read_bytes() == content
    assert result.transfer_seconds >= 0.05  # 300 kB at 3 MB/s: paced, not at memory speed


@pytest.mark.parametrize(
    ("rate", "largest", "expected"),
    [
        pytest.param(0.0, 4 * 2**20, 4 * 2**20, id="unpaced"),
        pytest.param(4e6, 4 * 2**20, 200_000, id="paced"),
        pytest.param(1e3, 4 * 2**20, PACED_READ, id="very-slow"),
        pytest.param(1e9, 4 * 2**20, 4 * 2**20, id="fast-cap"),
    ],
)
def test_pacer_read_size(rate: float, largest: int, expected: int) -> None:
    assert Pacer(rate).read_size(largest) == expected


def test_a_failing_disk_stops_the_pipeline_with_a_clear_error(
    one_shot: Callable[[bytes, Script], client.Endpoint],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = os.urandom(48 * 2**20)  # more than the writer's buffers: the receiver sees it

    def full_disk(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    endpoint = one_shot(content, in_pieces(2**20, with_header=0))
    with pytest.raises(TransferError, match="No space left on device"):
        client.fetch(endpoint, "f.bin", tmp_path, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "f.bin").exists()
    pipeline = {"part-hasher", "part-writer"}
    assert [t.name for t in threading.enumerate() if t.name in pipeline] == []
