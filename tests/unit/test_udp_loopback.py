"""Listener, sender, status and TCP sink together over loopback (no Docker, ~1 s)."""

from __future__ import annotations

import json
import select
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from socketlab.errors import PeerUnavailable
from socketlab.udp import compare, status, trial
from socketlab.udp.datagram import encode
from socketlab.udp.latency import HEADER_SIZE
from socketlab.udp.listener import Listener, ListenerConfig, enable_gro, gro_segment, run
from socketlab.udp.sender import SendOptions, follow, gso_segments, open_socket, send_stream
from socketlab.udp.tcp_sink import TcpSinkConfig

SNMP = """\
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors
Udp: 10 0 {drops} 10 {drops} 0 0
"""
POLL = 0.01  # how soon the listener's loops notice stop (keeps teardown short)
TOKEN = "udp-admin-token"  # noqa: S105 - a test token


@pytest.fixture
def listener(
    tmp_path: Path, free_port: Callable[..., int], serve: Callable[..., Any]
) -> Iterator[ListenerConfig]:
    snmp = tmp_path / "snmp"
    snmp.write_text(SNMP.format(drops=5))
    options = ListenerConfig(
        port=free_port(socket.SOCK_DGRAM),
        status_port=free_port(socket.SOCK_STREAM),
        tcp_sink=TcpSinkConfig(port=free_port(socket.SOCK_STREAM), accept_poll=POLL),
        rcvbuf=1 << 20,
        log_interval=0.1,
        snmp_path=str(snmp),
        recv_poll=POLL,
        admin_token=TOKEN,
    )
    failed: list[str] = []
    listener = Listener(options)
    # every component notices stop within about a second
    thread = serve(
        lambda stop: failed.extend(run(options, stop, listener=listener)),
        name="udp-listener",
        stop_within=5,
    )
    assert listener.wait_ready(timeout=5), f"listener not ready: {failed}"
    yield options
    thread.close()
    assert failed == []


@pytest.fixture
def settled(wait_until: Callable[..., Any]) -> Callable[..., Any]:
    """Wait for the listener's stats to satisfy a probe (status errors: not yet)."""

    def wait(probe: Callable[[], Any]) -> Any:
        return wait_until(
            probe, what="the listener's stats", timeout=5.0, ignoring=(PeerUnavailable,)
        )

    return wait


def test_sender_to_listener_counts_everything(
    listener: ListenerConfig, settled: Callable[..., Any]
) -> None:
    with open_socket("127.0.0.1", listener.port) as sock:
        # Paced: unpaced, 2,000 datagrams outrun a stock receive buffer (about 500 of them).
        report = send_stream(sock, SendOptions(count=2000, rate=2000, size=100, sender_id=42))
        sock.send(b"plain text\n")
    assert (report.sent, report.bytes, report.last_seq) == (2000, 200_000, 2000)

    def counted() -> dict[str, Any] | None:
        stats = status.fetch_stats("127.0.0.1", listener.status_port)
        return stats if stats["datagrams"] == 2001 else None

    stats = settled(counted)
    session = status.find_session(stats, 42)
    assert session is not None
    assert (session["received"], session["lost"], session["first_seq"]) == (2000, 0, 1)
    assert (stats["valid"], stats["foreign"]) == (2000, 1)
    assert stats["kernel"]["RcvbufErrors"] == 0  # the fake /proc file did not move
    assert stats["rcvbuf"] > 0


def test_reset_clears_counters_and_moves_the_kernel_baseline(
    listener: ListenerConfig, tmp_path: Path, settled: Callable[..., Any]
) -> None:
    with open_socket("127.0.0.1", listener.port) as sock:
        send_stream(sock, SendOptions(count=10, rate=0, size=64, sender_id=1))
    settled(lambda: status.fetch_stats("127.0.0.1", listener.status_port)["datagrams"] == 10)
    (tmp_path / "snmp").write_text(SNMP.format(drops=12))
    before = status.reset_stats("127.0.0.1", listener.status_port, token=TOKEN)
    assert before["datagrams"] == 10
    assert before["kernel"]["RcvbufErrors"] == 7
    assert before["kernel_drops"] == 7
    after = status.fetch_stats("127.0.0.1", listener.status_port)
    assert (after["datagrams"], after["sessions"], after["kernel_drops"]) == (0, [], 0)


def test_tcp_sink_counts_the_bytes_and_times_every_whole_message(
    listener: ListenerConfig,
) -> None:
    outcome = compare.run_tcp("127.0.0.1", listener.tcp_sink.port, 3_000_001, size=1200)
    assert (outcome.bytes_sent, outcome.bytes_delivered, outcome.loss) == (
        3_000_001,
        3_000_001,
        0.0,
    )
    stats = status.fetch_stats("127.0.0.1", listener.status_port)
    # the stream's 8-byte header is counted by the sink, not as payload
    assert stats["tcp_sink"] == {"connections": 1, "bytes": 3_000_001 + HEADER_SIZE}
    # 2500 whole messages (the last 1 byte is no message); loopback: well under a second
    assert outcome.latency_p50_ms is not None
    assert outcome.latency_p99_ms is not None
    assert 0 <= outcome.latency_p50_ms <= outcome.latency_p99_ms < 1000
    assert outcome.congestion  # the kernel named the socket's algorithm


def test_udp_side_of_the_comparison(listener: ListenerConfig) -> None:
    outcome = compare.run_udp(
        "127.0.0.1", listener.port, listener.status_port, 120_000, size=1200, rate=0
    )
    assert (outcome.datagrams_sent, outcome.bytes_sent) == (100, 120_000)
    assert outcome.bytes_delivered == 120_000
    assert outcome.delivered == 1.0
    # the listener's transit percentiles: one way, on loopback well under a second
    assert outcome.latency_p50_ms is not None
    assert outcome.latency_p99_ms is not None
    assert 0 <= outcome.latency_p50_ms <= outcome.latency_p99_ms < 1000
    assert "udp" in compare.format_table([outcome])


def test_account_reports_session_start_with_missed_count() -> None:
    listener = Listener(ListenerConfig(snmp_path="/nonexistent"))
    events = listener.account(
        [(encode(sender_id=5, seq=17, sent_ns=1), ("10.0.0.9", 999), 2)],
    )
    assert [getattr(e, "first_seq", None) for e in events] == [17]
    assert listener.stats()["missed_at_start"] == 16
    assert listener.stats()["kernel"] == {}


def test_sender_follows_a_name_to_its_new_address() -> None:
    with open_socket("127.0.0.2", 9) as sock:
        follow(sock, "localhost")  # "the listener came back elsewhere"
        assert sock.getpeername() == ("127.0.0.1", 9)
        follow(sock, "name-that-does-not-resolve.invalid")  # down: keep the old address
        assert sock.getpeername() == ("127.0.0.1", 9)


def test_a_capacity_trial_counts_what_the_listener_received(
    listener: ListenerConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(listener.port),
            "--status-port", str(listener.status_port),
            "--count", "2000", "--rate", "2000", "--size", "64"]  # fmt: skip
    assert trial.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["sent"], result["size"]) == (2000, 64)
    assert result["received"] == 2000
    assert (result["gaps"], result["missed_at_start"], result["tail"]) == (0, 0, 0)
    assert result["duplicates"] == 0
    assert result["rate_achieved"] > 0
    assert result["session"].startswith("127.0.0.1/")


def test_a_capacity_trial_with_nobody_listening_counts_everything_lost(
    free_port: Callable[..., int], listener: ListenerConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(free_port(socket.SOCK_DGRAM)),
            "--status-port", str(listener.status_port),
            "--count", "50", "--rate", "10000", "--size", "64"]  # fmt: skip
    assert trial.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["received"] == 0
    assert result["tail"] == 50  # the listener never saw the session
    assert result["sent"] + result["unreachable"] == 50


def test_a_gso_sender_batches_and_the_listener_counts_every_datagram(
    listener: ListenerConfig, settled: Callable[..., Any]
) -> None:
    options = SendOptions(count=3000, rate=0, size=64, sender_id=0x5E6, segments=16)
    with open_socket("127.0.0.1", listener.port) as sock:
        report = send_stream(sock, options)
    assert report.segments == 16  # GSO was used
    assert (report.sent, report.bytes, report.last_seq) == (3000, 3000 * 64, 3000)

    def counted() -> dict[str, Any] | None:
        session = status.find_session(status.fetch_stats("127.0.0.1", listener.status_port), 0x5E6)
        return session if session and session["received"] >= 3000 else None

    session = settled(counted)
    assert (session["received"], session["lost"], session["duplicates"]) == (3000, 0, 0)
    assert (session["first_seq"], session["highest_seq"]) == (1, 3000)


def test_gso_is_not_used_when_the_datagrams_differ_in_length() -> None:
    with open_socket("127.0.0.1", 9) as sock:
        # 40 bytes is below the minimum from seq 10 on: lengths grow with the digits
        varying = SendOptions(count=20_000, rate=0, size=40, sender_id=1, segments=16)
        assert gso_segments(sock, varying) == 1
        chatty = SendOptions(count=5, rate=1, size=64, sender_id=1, segments=16, verbose=True)
        assert gso_segments(sock, chatty) == 1
        big = SendOptions(count=5, rate=0, size=9000, sender_id=1, segments=64)
        assert gso_segments(sock, big) == 65000 // 9000
        assert gso_segments(sock, SendOptions(count=5, rate=0, size=64, sender_id=1)) == 1


def test_a_coalesced_read_is_split_and_every_datagram_accounted() -> None:
    listener = Listener(ListenerConfig(snmp_path="/nonexistent"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        assert enable_gro(receiver)
        receiver.setblocking(False)
        options = SendOptions(count=40, rate=0, size=100, sender_id=9, segments=40)
        with open_socket(*receiver.getsockname()) as sock:
            assert send_stream(sock, options).segments == 40
        # and one foreign datagram of another size, alone in its read
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(b"hello", receiver.getsockname())
        select.select([receiver], [], [], 5)  # a timeout, not a sleep: ready at once
        listener.receive_coalesced(receiver)
    stats = listener.stats()
    assert (stats["datagrams"], stats["valid"], stats["foreign"], stats["lost"]) == (41, 40, 1, 0)


@pytest.mark.parametrize(
    ("ancillary", "segment"),
    [
        ([], 1200),
        ([(socket.SOL_UDP, 104, (100).to_bytes(4, sys.byteorder))], 100),
        ([(socket.SOL_UDP, 104, (100).to_bytes(2, sys.byteorder))], 100),
        ([(socket.SOL_UDP, 104, (0).to_bytes(4, sys.byteorder))], 1200),  # nonsense: whole
        ([(socket.SOL_UDP, 104, (5000).to_bytes(4, sys.byteorder))], 1200),  # above the read
        ([(socket.SOL_UDP, 104, b"\x01\x02\x03")], 1200),  # not an int
        ([(socket.SOL_IP, 104, (100).to_bytes(4, sys.byteorder))], 1200),  # someone else's
    ],
)
def test_the_gro_segment_size_is_read_defensively(
    ancillary: list[tuple[int, int, bytes]], segment: int
) -> None:
    assert gro_segment(ancillary, 1200) == segment
