"""The peer error split: each OSError kind becomes the right PeerUnavailable subclass,
over a real loopback connection too, and the read-timeout demo needs a real timeout."""

from __future__ import annotations

import errno
import io
import json
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from socketlab import client
from socketlab.chat.swarm import Swarm, SwarmConfig
from socketlab.errors import (
    ConnectFailed,
    PeerClosed,
    PeerUnavailable,
    ReadTimeout,
    SendTimeout,
    SocketlabError,
    peer_errors,
    translate_os_error,
)
from socketlab.udp import sender

PEER = "server:4571"


@pytest.mark.parametrize(
    ("operation", "error", "expected"),
    [
        pytest.param("connect", ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ConnectFailed, id="connect-refused"),
        pytest.param("connect", TimeoutError("timed out"), ConnectFailed, id="connect-timeout"),
        pytest.param("connect", socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ConnectFailed, id="connect-unknown-name"),
        pytest.param("connect", OSError(errno.EHOSTUNREACH, "No route to host"), ConnectFailed, id="connect-unreachable"),
        pytest.param("connect", OSError(errno.ETIMEDOUT, "Connection timed out"), ConnectFailed, id="connect-kernel-timeout"),
        pytest.param("read", TimeoutError("timed out"), ReadTimeout, id="read-timeout"),
        pytest.param("read", ConnectionResetError(errno.ECONNRESET, "reset"), PeerClosed, id="read-reset"),
        pytest.param("read", ConnectionAbortedError(errno.ECONNABORTED, "aborted"), PeerClosed, id="read-aborted"),
        pytest.param("read", OSError(errno.ETIMEDOUT, "Connection timed out"), PeerClosed, id="read-kernel-gave-up"),
        pytest.param("read", OSError(errno.ENOTCONN, "not connected"), PeerClosed, id="read-not-connected"),
        pytest.param("send", TimeoutError("timed out"), SendTimeout, id="send-timeout"),
        pytest.param("send", BrokenPipeError(errno.EPIPE, "Broken pipe"), PeerClosed, id="send-broken-pipe"),
        pytest.param("send", ConnectionResetError(errno.ECONNRESET, "reset"), PeerClosed, id="send-reset"),
    ],
)  # fmt: skip
def test_each_os_error_becomes_its_peer_error(
    operation: str, error: OSError, expected: type[PeerUnavailable]
) -> None:
    translated = translate_os_error(error, peer=PEER, operation=operation, timeout=2.0)  # type: ignore[arg-type]
    assert type(translated) is expected
    assert isinstance(translated, PeerUnavailable)
    assert isinstance(translated, SocketlabError)
    assert PEER in str(translated)
    assert "\n" not in str(translated)


@pytest.mark.parametrize("operation", ["read", "send"])
def test_an_unclassified_socket_error_is_the_base_class(operation: str) -> None:
    translated = translate_os_error(
        OSError(errno.EBADF, "Bad file descriptor"),
        peer=PEER,
        operation=operation,  # type: ignore[arg-type]
    )
    assert type(translated) is PeerUnavailable


def test_timeouts_say_how_long_was_waited() -> None:
    assert "within 1.5 s (read timeout)" in str(
        translate_os_error(TimeoutError(), peer=PEER, operation="read", timeout=1.5)
    )
    assert "within 3 s (connect timeout)" in str(
        translate_os_error(TimeoutError(), peer=PEER, operation="connect", timeout=3)
    )


def test_the_context_manager_keeps_the_cause_and_lets_other_errors_through() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    with pytest.raises(PeerClosed) as caught, peer_errors(PEER, "read"):
        raise reset
    assert caught.value.__cause__ is reset
    with pytest.raises(ValueError, match="not a socket error"), peer_errors(PEER, "read"):
        raise ValueError("not a socket error")
    already = ReadTimeout("ours")
    with pytest.raises(ReadTimeout) as caught_ours, peer_errors(PEER, "send"):
        raise already
    assert caught_ours.value is already


# --- over real loopback connections ---------------------------------------------------


@contextmanager
def one_shot_server(behaviour: str) -> Iterator[int]:
    """A server that accepts one connection, reads the request, then ``behaviour``s:
    ``silent`` (keeps it open, says nothing), ``close`` (FIN) or ``reset`` (RST)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            select.select([conn], [], [], 10)
            conn.recv(65536)
            if behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif behaviour == "silent":
                done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()


def endpoint(port: int, *, read_timeout: float = 5.0) -> client.Endpoint:
    return client.Endpoint(host="127.0.0.1", port=port, timeout=2.0, read_timeout=read_timeout)


def test_nobody_listening_is_connect_failed(free_port: Callable[..., int]) -> None:
    with pytest.raises(ConnectFailed, match="cannot reach"):
        client.LabConnection.open(endpoint(free_port()))


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        pytest.param("silent", ReadTimeout, id="silent-is-a-read-timeout"),
        pytest.param("close", PeerClosed, id="close-is-peer-closed"),
        pytest.param("reset", PeerClosed, id="reset-is-peer-closed"),
    ],
)
def test_what_the_peer_does_decides_the_error(
    behaviour: str, expected: type[PeerUnavailable]
) -> None:
    # A short read timeout only where the timeout is the point: a closing or resetting
    # peer must be seen as that, however late the loaded machine runs its thread.
    read_timeout = 0.3 if expected is ReadTimeout else 5.0
    with one_shot_server(behaviour) as port:
        conn = client.LabConnection.open(endpoint(port, read_timeout=read_timeout))
        with conn, pytest.raises(PeerUnavailable) as caught:
            conn.request("hello")
    assert type(caught.value) is expected


def run_timeout_demo(port: int) -> tuple[int, dict[str, object], str]:
    out, err = io.StringIO(), io.StringIO()
    argv = ["--host", "127.0.0.1", "--port", str(port), "--read-timeout", "0.3"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        patch.setattr("sys.stderr", err)
        code = client.main([*argv, "timeout", "read", "--json"])
    return code, json.loads(out.getvalue().splitlines()[-1]), err.getvalue()


def test_the_read_timeout_demo_succeeds_on_a_real_read_timeout() -> None:
    with one_shot_server("silent") as port:
        code, result, _ = run_timeout_demo(port)
    assert (code, result["ok"], result["kind"]) == (0, True, "read")


@pytest.mark.parametrize("behaviour", ["reset", "close"])
def test_the_read_timeout_demo_fails_when_the_peer_goes_away(behaviour: str) -> None:
    with one_shot_server(behaviour) as port:
        code, result, err = run_timeout_demo(port)
    assert code == 1
    assert result["ok"] is False
    assert result["error_type"] == "PeerClosed"
    assert err.count("\n") == 1


def test_the_udp_sender_names_an_unknown_listener_as_connect_failed() -> None:
    with pytest.raises(ConnectFailed):
        sender.resolve("name-that-does-not-resolve.invalid", 9)


def test_a_full_send_buffer_past_the_timeout_is_a_send_timeout() -> None:
    class Full:
        def send(self, data: bytes) -> int:
            raise BlockingIOError(errno.EAGAIN, "would block")

    class NeverWritable:
        def poll(self, timeout: float) -> list[tuple[int, int]]:
            return []

    with pytest.raises(SendTimeout, match="send timeout"):
        sender._send(Full(), b"x", NeverWritable(), 0.1)  # type: ignore[arg-type]


def test_the_chat_swarm_names_an_absent_hub_as_connect_failed(
    free_port: Callable[..., int],
) -> None:
    swarm = Swarm(SwarmConfig(host="127.0.0.1", port=free_port(), participants=2))
    try:
        with pytest.raises(ConnectFailed, match="cannot reach"):
            swarm.connect()
    finally:
        swarm.selector.close()
