"""The UDP listener against hostile peers: reset needs the token, idle clients cost no thread,
forged datagrams cost O(1) and leave a normal sender's accounting right."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socketlab.__main__ import main as socketlab_main
from socketlab.errors import PeerUnavailable
from socketlab.udp import status
from socketlab.udp.datagram import encode
from socketlab.udp.listener import Listener, ListenerConfig, run
from socketlab.udp.sender import SendOptions, open_socket, send_stream
from socketlab.udp.status import ResetRefused
from socketlab.udp.tcp_sink import TcpSinkConfig

TOKEN = "udp-hardening-token"  # noqa: S105 - a test token
POLL = 0.01  # how soon the loops notice stop (keeps teardown short)


@pytest.fixture
def listener(
    tmp_path: Path, free_port: Callable[..., int], serve: Callable[..., Any]
) -> Iterator[ListenerConfig]:
    options = ListenerConfig(
        port=free_port(socket.SOCK_DGRAM),
        status_port=free_port(socket.SOCK_STREAM),
        tcp_sink=TcpSinkConfig(
            port=free_port(socket.SOCK_STREAM), accept_poll=POLL, idle_timeout=1.0
        ),
        rcvbuf=1 << 20,
        snmp_path=str(tmp_path / "no-snmp"),
        recv_poll=POLL,
        status_timeout=0.5,
        admin_token=TOKEN,
    )
    failed: list[str] = []
    running = Listener(options)
    thread = serve(
        lambda stop: failed.extend(run(options, stop, listener=running)),
        name="udp-listener",
        stop_within=5,
    )
    assert running.wait_ready(timeout=5), f"listener not ready: {failed}"
    yield options
    thread.close()
    assert failed == []


def _send_ten(options: ListenerConfig, wait_until: Callable[..., Any]) -> None:
    with open_socket("127.0.0.1", options.port) as sock:
        send_stream(sock, SendOptions(count=10, rate=0, size=64, sender_id=3))
    wait_until(
        lambda: status.fetch_stats("127.0.0.1", options.status_port)["valid"] == 10,
        what="ten datagrams counted",
        ignoring=(PeerUnavailable,),
    )


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_reset_refuses_without_the_token(
    listener: ListenerConfig, wait_until: Callable[..., Any], token: str | None
) -> None:
    _send_ten(listener, wait_until)
    with pytest.raises(ResetRefused, match="401"):
        status.reset_stats("127.0.0.1", listener.status_port, token=token)
    assert status.fetch_stats("127.0.0.1", listener.status_port)["valid"] == 10, "not cleared"
    assert status.reset_stats("127.0.0.1", listener.status_port, token=TOKEN)["valid"] == 10
    assert status.fetch_stats("127.0.0.1", listener.status_port)["valid"] == 0


def test_udp_stats_reset_reads_the_token_file(
    listener: ListenerConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    wait_until: Callable[..., Any],
) -> None:
    _send_ten(listener, wait_until)
    argv = ["udp-stats", "--host", "127.0.0.1", "--status-port", str(listener.status_port)]
    assert socketlab_main([*argv, "--reset", "--token-file", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("socketlab udp-stats: listener refused POST")
    assert err.count("\n") == 1
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    assert socketlab_main([*argv, "--reset", "--token-file", str(token_file)]) == 0
    assert socketlab_main(argv) == 0, "reading needs no token"


def test_an_idle_status_client_is_dropped_and_holds_no_thread(listener: ListenerConfig) -> None:
    threads = set(threading.enumerate())
    idle = [socket.create_connection(("127.0.0.1", listener.status_port)) for _ in range(60)]
    assert not set(threading.enumerate()) - threads, "no thread per connection"
    assert status.fetch_stats("127.0.0.1", listener.status_port)["datagrams"] == 0
    started = time.monotonic()
    for sock in idle:
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.0 408"), "dropped at the head deadline"
        sock.close()
    assert time.monotonic() - started < 3.0


def test_the_tcp_sink_serves_past_sixteen_idle_connections(listener: ListenerConfig) -> None:
    port = listener.tcp_sink.port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    with socket.create_connection(("127.0.0.1", port)) as transfer:
        transfer.sendall(b"x" * 100_000)
        transfer.shutdown(socket.SHUT_WR)
        transfer.settimeout(5)
        assert b'"bytes": 100000' in transfer.recv(200)
    started = time.monotonic()
    for sock in idle:
        sock.settimeout(5)
        assert sock.recv(10) == b"", "closed after the idle timeout"
        sock.close()
    assert time.monotonic() - started < 4.0


def _counted(listener: ListenerConfig) -> int:
    return int(status.fetch_stats("127.0.0.1", listener.status_port)["datagrams"])


def test_forged_datagrams_leave_a_normal_sender_counted_right(
    listener: ListenerConfig, wait_until: Callable[..., Any]
) -> None:
    forged = []
    for sender_id in range(1000):  # new sessions, jumps by a window, the last sequence number
        forged.append(encode(sender_id=sender_id, seq=1, sent_ns=1))
        forged.append(encode(sender_id=sender_id, seq=65537, sent_ns=2))
    forged += [encode(sender_id=7, seq=1 + k * 65536, sent_ns=k) for k in range(1, 402)]
    forged.append(encode(sender_id=8, seq=2**64 - 1, sent_ns=5))
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker,
        open_socket("127.0.0.1", listener.port) as honest,
    ):
        attacker.connect(("127.0.0.1", listener.port))
        # The honest sender keeps sending (one datagram per five forged) throughout.
        sent = 0
        for number, data in enumerate(forged):
            attacker.send(data)
            if number % 5 == 0 and sent < 500:
                sent += 1
                honest.send(encode(sender_id=42, seq=sent, sent_ns=time.time_ns(), size=64))
            if number % 200 == 199:  # let the listener keep up: loopback drops are not the point
                wait_until(
                    lambda n=number + 1 + sent: _counted(listener) >= n,
                    what="the listener to keep up",
                    ignoring=(PeerUnavailable,),
                )
        while sent < 500:
            sent += 1
            honest.send(encode(sender_id=42, seq=sent, sent_ns=time.time_ns(), size=64))

    def settled() -> dict[str, Any] | None:
        stats = status.fetch_stats("127.0.0.1", listener.status_port)
        return stats if stats["datagrams"] >= len(forged) + 500 else None

    stats = wait_until(settled, what="every datagram counted", ignoring=(PeerUnavailable,))
    session = status.find_session(stats, 42)
    assert sent == 500
    assert session is not None
    # The attacker also used id 42 from its own socket: counted late, never followed.
    assert (session["received"], session["late"]) == (502, 2)
    assert (session["first_seq"], session["highest_seq"], session["lost"]) == (1, 500, 0)
    assert (session["number"], session["duplicates"]) == (1, 0)
    assert stats["lost"] <= len(forged) * (1 << 20), "bounded per datagram"
    assert stats["missed_at_start"] <= stats["session_count"] * (1 << 20)
    assert stats["implausible_starts"] == 1, "the session at 2^64-1"
    assert len(stats["sessions"]) <= 256
