"""``socketlab probe``'s one-way stream (codec, bounded arrival log, loopback send and
listen), its option checks, and the 16-bit echo sequence unwrapping."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.shaper import probe, stream


def test_a_stream_datagram_round_trips_and_strays_are_ignored() -> None:
    data = stream.encode(run=7, seq=41, size=64)
    assert len(data) == 64
    assert stream.decode(data, 7) == 41
    assert stream.decode(data, 8) is None  # another run's
    assert stream.decode(b"SLPS", 7) is None  # cut short
    assert stream.decode(b"XXXX" + data[4:], 7) is None  # not ours


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_never_raises(data: bytes) -> None:
    seq = stream.decode(data, 7)
    assert seq is None or 0 <= seq <= 0xFFFFFFFF


def test_the_arrival_log_keeps_first_arrivals_in_order_and_is_bounded() -> None:
    log = stream.ArrivalLog(count=4)
    for seq in (0, 2, 1, 2, None, 99, -1, 3):
        log.add(seq)
    assert log.order == [0, 2, 1, 3]
    assert (log.duplicates, log.strays, log.complete) == (1, 3, True)
    report = log.report()
    assert report["arrivals"] == [0, 2, 1, 3]
    # however much arrives, at most `count` numbers are kept
    flood = stream.ArrivalLog(count=3)
    for _ in range(10_000):
        flood.add(1)
    assert (flood.order, flood.duplicates) == ([1], 9_999)


def test_a_stream_over_loopback_arrives_in_order(
    free_port: Any, wait_until: Callable[..., Any]
) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    result: dict[str, Any] = {}
    listening = threading.Event()

    def listen() -> None:
        try:
            result["log"] = probe.listen_stream(
                port, count=200, run=5, wait=10, linger=1.0, on_listening=listening.set
            )
        except Exception as exc:  # shown by the test, not lost in the thread
            result["error"] = exc

    listener = threading.Thread(target=listen)
    listener.start()
    # readiness comes from the listener itself: probing the port by binding it would race
    # the listener's own bind (EADDRINUSE)
    wait_until(lambda: "error" in result or listening.is_set(), "the stream listener to bind")
    assert "error" not in result, f"the listener failed: {result['error']!r}"
    sent = probe.send_stream("127.0.0.1", port, count=200, interval=0.0005, run=5)
    listener.join(timeout=15)
    log = result["log"]
    assert sent == 200
    assert log.order == list(range(200))
    assert log.complete


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["h", "--count", "0"], "--count must be between 1", id="count"),
        pytest.param(["h", "--count", "999999999"], "--count must be between 1", id="huge"),
        pytest.param(["h", "--linger", "0"], "--linger must be above 0", id="linger"),
        pytest.param(["h", "--load-rate", "-5"], "--load-rate must be between", id="load"),
        pytest.param(["h", "--run", "-1"], "--run must fit in 32 bits", id="run"),
        pytest.param(["h", "--listen", "5299"], "not both", id="host-and-listen"),
        pytest.param([], "give a HOST to probe", id="nothing"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        probe.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_listener_prints_its_arrivals_as_json(
    free_port: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port(kind=socket.SOCK_DGRAM)
    # nothing is sent: the listener gives up after --wait and reports what it has
    code = probe.main(["--listen", str(port), "--count", "3", "--run", "1", "--wait", "0.3"])
    out, err = capsys.readouterr()
    assert code == 0
    assert probe.LISTENING in err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"expected": 3, "received": 0, "duplicates": 0, "strays": 0, "arrivals": []}


@pytest.mark.parametrize(
    ("wire", "sent", "number"),
    [
        pytest.param(5, 6, 5, id="recent"),
        pytest.param(5, 65536 + 10, 65536 + 5, id="wrapped-once"),
        pytest.param(65535, 65536 + 3, 65535, id="just-before-the-wrap"),
        pytest.param(9, 3, 9, id="never-sent"),
    ],
)
def test_echo_sequence_numbers_unwrap_to_the_latest_probe(
    wire: int, sent: int, number: int
) -> None:
    assert probe._unwrap(wire, sent) == number


def test_load_rate_counts_whole_frames() -> None:
    load = probe.Load(rate=1442 * 8 * 1000)  # a thousand full filler frames a second
    assert load.datagrams_per_second() == pytest.approx(1000)
    # IPv6's header is 20 bytes longer; a small path's filler is smaller
    assert probe.Load(rate=1462 * 8 * 1000).datagrams_per_second(socket.AF_INET6) == (
        pytest.approx(1000)
    )
    assert probe.Load(rate=1294 * 8 * 1000, payload=1252).datagrams_per_second() == (
        pytest.approx(1000)
    )


@pytest.mark.parametrize("size", ["0", "65001"])
def test_a_load_size_out_of_range_is_one_line(
    size: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        probe.main(["127.0.0.1", "--load-rate", "1000", "--load-size", size])
    assert "--load-size must be between 1 and 65000 bytes" in capsys.readouterr().err
