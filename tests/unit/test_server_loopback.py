"""The selectors server and the client, in-process over 127.0.0.1 (no Docker)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import select
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lab.waiting import wait_for
from socketlab import client, sampledata
from socketlab.errors import PeerUnavailable
from socketlab.files import TransferError
from socketlab.protocol import (
    BINARY_TYPE,
    FrameDecoder,
    MessageCollector,
    ServerRefused,
    encode_header,
    encode_request,
)
from socketlab.protocol.framing import NEED_DATA
from socketlab.server import HashCache, LabServer, ServerConfig

KEY = "loopback-key"


@dataclass(frozen=True)
class RunningServer:
    """A LabServer serving on a loopback port (its loop runs in a ``serve`` thread)."""

    port: int
    data_root: Path
    server: LabServer

    def endpoint(self, *, read_timeout: float = 5.0) -> client.Endpoint:
        return client.Endpoint(
            host="127.0.0.1", port=self.port, timeout=2.0, read_timeout=read_timeout
        )

    def argv(self, *args: str) -> list[str]:
        return ["--host", "127.0.0.1", "--port", str(self.port), *args]


BASE_CONFIG = ServerConfig(
    host="127.0.0.1",
    port=0,
    pickle_key=KEY.encode(),
    header_timeout=0.5,
    stall_timeout=1.0,
    idle_timeout=1.5,
    min_rate=1024.0,
    poll_interval=0.01,  # how soon a stopped server ends: at every test's teardown
    max_connections=8,
)


def start(config: ServerConfig, serve: Callable[..., Any]) -> RunningServer:
    """Serve ``config`` until the test ends; the loop must notice stop within 3 s."""
    server = LabServer(config)
    port = server.bind()
    serve(server.serve, name="lab-server", stop_within=3)
    return RunningServer(port, config.data_root, server)


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample files, generated once per session (the text alone takes ~0.1 s)."""
    root = tmp_path_factory.mktemp("samples")
    sampledata.ensure_sample_data(root)
    return root


@pytest.fixture
def data_root(sample_root: Path, tmp_path: Path) -> Path:
    """A per-test copy of the samples, so a test may add files (symlinks) to its own."""
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    return root


@pytest.fixture
def running(data_root: Path, serve: Callable[..., Any]) -> RunningServer:
    return start(replace(BASE_CONFIG, data_root=data_root), serve)


def run_client(
    capsys: pytest.CaptureFixture[str], running: RunningServer, *args: str
) -> tuple[int, dict[str, object], str]:
    code = client.main(running.argv(*args, "--json"))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("{")]
    return code, (json.loads(lines[-1]) if lines else {}), captured.err


def read_raw_message(sock: socket.socket) -> tuple[dict[str, object], bytes]:
    """Read one response the way the tutorial's client does: 2 bytes, header, content."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("peer closed")
            data += chunk
        return data

    (length,) = struct.unpack(">H", exactly(2))
    header = json.loads(exactly(length).decode("utf-8"))
    return header, exactly(header["content-length"])


# --- plain requests -------------------------------------------------------------------


def test_hello_command(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "hello")
    assert code == 0
    assert result["ok"] is True
    assert str(result["result"]).startswith("Hello, 127.0.0.1!")


@pytest.mark.parametrize(
    ("action", "value", "check"),
    [
        pytest.param(
            "echo", [1, "two", {"3": None}], lambda r: r == [1, "two", {"3": None}], id="echo"
        ),
        pytest.param("time", None, lambda r: abs(r["epoch"] - time.time()) < 60, id="time"),
        pytest.param(
            "lookup", "morpheus", lambda r: r.startswith("Follow the white rabbit"), id="lookup"
        ),
    ],
)
def test_json_actions(running: RunningServer, action: str, value: object, check: object) -> None:
    with client.LabConnection.open(running.endpoint()) as conn:
        assert check(conn.request(action, value))  # type: ignore[operator]


def test_unknown_action_is_refused_but_connection_survives(running: RunningServer) -> None:
    with client.LabConnection.open(running.endpoint()) as conn:
        with pytest.raises(ServerRefused, match="invalid action 'nope'"):
            conn.request("nope")
        assert conn.request("echo", "still here") == "still here"


def test_tutorial_style_client_works_unchanged(running: RunningServer) -> None:
    # Built the way the Real Python libclient builds requests: sys.byteorder,
    # ensure_ascii=False JSON, "text/json" + "utf-8", action "search".
    def tutorial_message(content: bytes, content_type: str, encoding: str) -> bytes:
        header = {
            "byteorder": sys.byteorder,
            "content-type": content_type,
            "content-encoding": encoding,
            "content-length": len(content),
        }
        raw = json.dumps(header, ensure_ascii=False).encode("utf-8")
        return struct.pack(">H", len(raw)) + raw + content

    request = json.dumps({"action": "search", "value": "\U0001f436"}, ensure_ascii=False).encode()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(tutorial_message(request, "text/json", "utf-8"))
        header, content = read_raw_message(sock)
    assert header["content-type"] == "text/json"
    assert json.loads(content.decode(str(header["content-encoding"]))) == {
        "result": "\U0001f43e Playing ball! \U0001f3d0"
    }
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(
            tutorial_message(b"\x00binary\xffrequest", "binary/custom-client-binary-type", "binary")
        )
        header, content = read_raw_message(sock)
    assert header["content-type"] == "binary/custom-server-binary-type"
    assert content == b"First 10 bytes of request: \x00binary\xffre"


def test_pipelined_requests_are_answered_in_order(running: RunningServer) -> None:
    wire = b"".join(encode_request("echo", n) for n in range(50))
    with client.LabConnection.open(running.endpoint()) as conn:
        conn.send(wire)
        results = [json.loads(conn.read_message().content)["result"] for _ in range(50)]
    assert results == list(range(50))


@pytest.mark.parametrize(
    "extra", [pytest.param([], id="whole"), pytest.param(["--trickle"], id="one-byte-per-send")]
)
def test_echo_demo_framing(
    capsys: pytest.CaptureFixture[str], running: RunningServer, extra: list[str]
) -> None:
    size = "300000" if not extra else "2000"
    code, result, _ = run_client(capsys, running, "echo", "--size", size, *extra)
    assert code == 0
    assert result["bytes"] == int(size)


# --- objects --------------------------------------------------------------------------


def test_objects_json(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "objects")
    assert code == 0
    assert result["equal"] is True
    assert result["types"] == ["Product", "dict"]


def test_objects_signed_pickle(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "objects", "--pickle", "--pickle-key", KEY)
    assert code == 0
    assert result["equal_to_sample"] is True


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        pytest.param(["--unsigned"], "unsigned", id="unsigned"),
        pytest.param(["--pickle-key", "wrong"], "does not match", id="wrong-key"),
        pytest.param(["--pickle-key", KEY, "--tamper"], "does not match", id="tampered"),
        pytest.param(["--pickle-key", KEY], "not allowed", id="signed-but-forbidden-class"),
    ],
)
def test_malicious_pickles_refused_and_nothing_runs(
    capsys: pytest.CaptureFixture[str],
    running: RunningServer,
    tmp_path: Path,
    args: list[str],
    reason: str,
) -> None:
    sentinel = tmp_path / "sentinel"
    code, result, err = run_client(
        capsys, running, "objects", "--pickle", "--sentinel", str(sentinel), *args
    )
    assert code == 1
    assert reason in err
    assert result["ok"] is False
    assert not sentinel.exists()


def test_oversize_pickle_closes_connection_with_error(running: RunningServer) -> None:
    with client.LabConnection.open(running.endpoint()) as conn:
        conn.send(encode_header("application/x-python-pickle", 10**7, extra={"signature": "x"}))
        with pytest.raises(ServerRefused, match="exceeds the limit"):
            client.response_result(conn.read_message())


# --- files ----------------------------------------------------------------------------


def test_ls_lists_sample_files(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "ls")
    assert code == 0
    names = {entry["name"] for entry in result["files"]}  # type: ignore[attr-defined]
    assert {sampledata.TEXT_NAME, sampledata.IMAGE_NAME} <= names


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(sampledata.TEXT_NAME, id="text"),
        pytest.param(sampledata.IMAGE_NAME, id="image"),
    ],
)
def test_fetch_is_identical(
    capsys: pytest.CaptureFixture[str], running: RunningServer, tmp_path: Path, name: str
) -> None:
    dest = tmp_path / "downloads"
    code, result, err = run_client(capsys, running, "fetch", name, "--dest", str(dest))
    assert code == 0, err
    source = (running.data_root / name).read_bytes()
    assert (dest / name).read_bytes() == source
    assert result["sha256"] == hashlib.sha256(source).hexdigest()
    assert "event=progress" in err
    assert not list(dest.glob("*.part"))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../secret", id="dotdot"),
        pytest.param("/etc/passwd", id="absolute"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("..\\secret", id="backslash"),
        pytest.param("link-out", id="symlink-out"),
    ],
)
def test_fetch_refuses_escapes(running: RunningServer, tmp_path: Path, name: str) -> None:
    (tmp_path / "secret").write_text("secret")
    (running.data_root / "link-out").symlink_to(tmp_path / "secret")
    with pytest.raises(ServerRefused):
        client.fetch(running.endpoint(), name, tmp_path / "dl", progress=False)
    assert not (tmp_path / "dl" / "secret").exists()


def test_fetch_resumes_from_a_valid_part(running: RunningServer, tmp_path: Path) -> None:
    source = (running.data_root / sampledata.TEXT_NAME).read_bytes()
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{sampledata.TEXT_NAME}.part").write_bytes(source[:100_000])
    result = client.fetch(running.endpoint(), sampledata.TEXT_NAME, dest, progress=False)
    assert result.resumed_from == 100_000
    assert (dest / sampledata.TEXT_NAME).read_bytes() == source


def test_fetch_restarts_when_the_part_is_not_a_prefix(
    running: RunningServer, tmp_path: Path
) -> None:
    source = (running.data_root / sampledata.TEXT_NAME).read_bytes()
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / f"{sampledata.TEXT_NAME}.part").write_bytes(b"X" * 5000)
    result = client.fetch(running.endpoint(), sampledata.TEXT_NAME, dest, progress=False)
    assert result.resumed_from == 0
    assert (dest / sampledata.TEXT_NAME).read_bytes() == source


def test_interrupted_fetch_keeps_part_and_resumes(running: RunningServer, tmp_path: Path) -> None:
    source = (running.data_root / sampledata.TEXT_NAME).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    # A server that dies half way through the content.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = listener.getsockname()[1]

        def half_server() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                conn.recv(65536)
                header = encode_header(
                    BINARY_TYPE,
                    len(source),
                    extra={
                        "name": sampledata.TEXT_NAME,
                        "size": len(source),
                        "sha256": digest,
                        "offset": 0,
                    },
                )
                conn.sendall(header + source[:200_000])

        thread = threading.Thread(target=half_server)
        thread.start()
        dest = tmp_path / "dl"
        broken = client.Endpoint(host="127.0.0.1", port=port, timeout=2, read_timeout=5)
        with pytest.raises(TransferError, match="interrupted at 200000"):
            client.fetch(broken, sampledata.TEXT_NAME, dest, progress=False)
        thread.join()
    assert not (dest / sampledata.TEXT_NAME).exists()
    assert (dest / f"{sampledata.TEXT_NAME}.part").read_bytes() == source[:200_000]
    result = client.fetch(running.endpoint(), sampledata.TEXT_NAME, dest, progress=False)
    assert result.resumed_from == 200_000
    assert (dest / sampledata.TEXT_NAME).read_bytes() == source


def test_big_file_is_created_on_demand(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Callable[..., Any]
) -> None:
    monkeypatch.setenv("SOCKETLAB_BIG_SIZE", str(3 * 1024 * 1024 + 7))
    assert not (data_root / sampledata.BIG_NAME).exists()
    lab = start(replace(BASE_CONFIG, data_root=data_root), serve)
    result = client.fetch(lab.endpoint(), sampledata.BIG_NAME, tmp_path / "dl", progress=False)
    expected = b"".join(sampledata.big_blocks(size=3 * 1024 * 1024 + 7))
    assert result.sha256 == hashlib.sha256(expected).hexdigest()
    assert (tmp_path / "dl" / sampledata.BIG_NAME).read_bytes() == expected


# --- robustness -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reaction"),
    [
        pytest.param("oversize-header", "exceeds the limit", id="oversize-header"),
        pytest.param("bad-json", "not valid UTF-8 JSON", id="bad-json"),
    ],
)
def test_protocol_violation_closes_only_that_connection(
    capsys: pytest.CaptureFixture[str],
    running: RunningServer,
    tmp_path: Path,
    kind: str,
    reaction: str,
) -> None:
    with client.LabConnection.open(running.endpoint()) as bystander:
        assert bystander.request("echo", 1) == 1
        code, result, _ = run_client(capsys, running, "misbehave", kind)
        assert code == 0
        assert reaction in str(result["reaction"])
        assert bystander.request("echo", 2) == 2
    fetched = client.fetch(running.endpoint(), sampledata.IMAGE_NAME, tmp_path, progress=False)
    assert (
        Path(fetched.path).read_bytes() == (running.data_root / sampledata.IMAGE_NAME).read_bytes()
    )


def test_slowloris_is_dropped_while_others_are_served(running: RunningServer) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as slow:
        wire = encode_request("hello")
        slow.sendall(wire[:1])
        # Meanwhile a normal client is served at once.
        with client.LabConnection.open(running.endpoint()) as other:
            assert other.request("echo", "fine") == "fine"
        decoder, collector = FrameDecoder(), MessageCollector()
        message = None
        for index in range(1, len(wire)):
            try:
                slow.sendall(wire[index : index + 1])
                data = slow.recv(65536) if _readable(slow, 0.2) else None
            except OSError:
                break
            if data is not None:
                decoder.receive_data(data)
                while message is None and (event := decoder.next_event()) is not NEED_DATA:
                    message = collector.feed(event)  # type: ignore[arg-type]
                if message is not None or not data:
                    break
    assert time.monotonic() - started < 5
    assert message is not None
    assert "header not complete" in message.json()["error"]


def _readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def test_idle_connection_is_closed(data_root: Path, serve: Callable[..., Any]) -> None:
    idle = 0.3  # shorter than BASE_CONFIG's, which leaves room for slow steps elsewhere
    lab = start(replace(BASE_CONFIG, data_root=data_root, idle_timeout=idle), serve)
    started = time.monotonic()  # before the connect: the server's idle clock starts at accept
    with client.LabConnection.open(lab.endpoint(read_timeout=5)) as conn:
        with pytest.raises(ServerRefused, match="idle"):
            client.response_result(conn.read_message())
        assert idle * 0.9 < time.monotonic() - started < 4


def test_too_many_connections_are_refused_politely_when_none_is_idle(
    data_root: Path, serve: Callable[..., Any]
) -> None:
    lab = start(replace(BASE_CONFIG, data_root=data_root, max_connections=2), serve)
    partial = encode_request("echo", "x")[:5]  # mid-message: neither connection is idle
    with (
        socket.create_connection(("127.0.0.1", lab.port), timeout=5) as a,
        socket.create_connection(("127.0.0.1", lab.port), timeout=5) as b,
    ):
        a.sendall(partial)
        b.sendall(partial)
        wait_for(
            lambda: (
                all(not c.state.idle for c in lab.server._conns.values())
                and len(lab.server._conns) == 2
            ),
            timeout=5,
            what="two busy connections",
            interval=0.01,
        )
        with (
            client.LabConnection.open(lab.endpoint()) as c,
            pytest.raises(ServerRefused, match="busy"),
        ):
            client.response_result(c.read_message())


class GatedHashes(HashCache):
    """Hashes that wait for the test before answering: a fetch stays prepared-but-unsent."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def sha256(self, path: Path, *, limit: int | None = None) -> str:
        self.entered.set()
        if not self.release.wait(5):
            raise TimeoutError("the test never released the hash")
        return super().sha256(path, limit=limit)


def open_descriptors(path: Path) -> int:
    """How many of this process's descriptors are open on ``path``."""
    count = 0
    for entry in os.scandir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(entry.path) == str(path.resolve())
    return count


def test_reset_right_after_a_fetch_closes_the_file(
    data_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The peer resets while the fetch is prepared, so sending the header is what fails.
    hashes = GatedHashes()
    config = replace(BASE_CONFIG, data_root=data_root, generate_samples=False)
    server = LabServer(config, hashes=hashes)
    port = server.bind()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    caplog.set_level(logging.INFO, logger="socketlab.server")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(encode_request("fetch", {"name": sampledata.TEXT_NAME}))
            assert hashes.entered.wait(5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        hashes.release.set()  # closing with linger 0 sent an RST
        wait_for(
            lambda: server.stats["closed"] == 1, timeout=5, what="the reset to close", interval=0.01
        )
        assert any("reason=send_failed" in record.getMessage() for record in caplog.records)
        assert open_descriptors(data_root / sampledata.TEXT_NAME) == 0
        with client.LabConnection.open(RunningServer(port, data_root, server).endpoint()) as conn:
            assert conn.request("echo", "after") == "after"
    finally:
        hashes.release.set()
        stop.set()
        thread.join(timeout=3)


# --- blast and timeouts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "mode", [pytest.param(m, id=m) for m in ["blocking", "nonblocking-naive", "nonblocking"]]
)
def test_blast_modes(capsys: pytest.CaptureFixture[str], running: RunningServer, mode: str) -> None:
    size = 32 * 1024 * 1024
    code, result, _ = run_client(capsys, running, "blast", "--mode", mode, "--size", str(size))
    assert code == 0
    server = result["server"]
    assert isinstance(server, dict)
    assert server["bytes"] == result["received"]
    assert server["batches"] >= 1
    # What the server counted is exactly what the kernel accepted from us.
    assert result["received"] == result["accepted_by_kernel"]
    assert result["lossy"] is (result["lost"] != 0)
    if mode != "nonblocking-naive":
        assert result["lost"] == 0


def test_timeout_read_demo(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "timeout", "read", "--read-timeout", "0.3")
    assert code == 0
    assert 0.3 <= float(result["seconds"]) < 2  # type: ignore[arg-type]


def test_timeout_accept_demo(capsys: pytest.CaptureFixture[str], running: RunningServer) -> None:
    code, result, _ = run_client(capsys, running, "timeout", "accept", "--accept-timeout", "0.2")
    assert code == 0
    assert result["kind"] == "accept"
    assert "accepted" not in result


def test_unreachable_server_is_a_one_line_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    code = client.main(["--host", "127.0.0.1", "--port", str(port), "hello"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "cannot reach" in err


def test_connection_error_type() -> None:
    with pytest.raises(PeerUnavailable, match="cannot reach"):
        client.LabConnection.open(
            client.Endpoint(host="127.0.0.1", port=1, timeout=1, read_timeout=1)
        )


# --- pure pieces ----------------------------------------------------------------------


def test_hash_cache_hashes_once_and_notices_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 1000)
    cache = HashCache()
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.sha256(path))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(results) == {hashlib.sha256(b"a" * 1000).hexdigest()}
    assert cache.sha256(path, limit=10) == hashlib.sha256(b"a" * 10).hexdigest()
    path.write_bytes(b"b" * 1001)
    assert cache.sha256(path) == hashlib.sha256(b"b" * 1001).hexdigest()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(_Tty(), ["\r", "ETA", "%", "/s"], id="tty-bar"),
        pytest.param(io.StringIO(), ["event=progress", "rate_mb_s=", "eta_s="], id="log-lines"),
    ],
)
def test_progress_shows_rate_and_eta(stream: io.StringIO, expected: list[str]) -> None:
    bar = client.Progress("f.bin", 1000, 0, stream=stream)
    bar.update(500)
    bar.update(1000, final=True)
    text = stream.getvalue()
    for fragment in expected:
        assert fragment in text
