"""``socketlab client swarm``: many concurrent clients against the selectors server over
127.0.0.1 (no Docker), its failure reports, and the pure helpers."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab import client
from socketlab.server import LabServer, ServerConfig

CONFIG = ServerConfig(
    host="127.0.0.1",
    port=0,
    header_timeout=5.0,
    stall_timeout=5.0,
    idle_timeout=10.0,
    poll_interval=0.01,  # how soon a stopped server ends: at every test's teardown
    max_connections=128,
    max_per_peer=128,  # a hundred clients from one address, like the lab's multi-client demo
)


@pytest.fixture
def server_port(tmp_path: Path) -> Iterator[int]:
    server = LabServer(replace(CONFIG, data_root=tmp_path / "data"))
    port = server.bind()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(timeout=5)


def endpoint(port: int, *, read_timeout: float = 10.0) -> client.Endpoint:
    return client.Endpoint(host="127.0.0.1", port=port, timeout=5.0, read_timeout=read_timeout)


# --- pure helpers --------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0.1, 100))
def test_percentile_is_a_value_with_at_least_q_percent_at_or_below_it(
    values: list[float], q: float
) -> None:
    result = client.percentile(values, q)

    assert result in values
    at_or_below = sum(1 for value in values if value <= result)
    assert at_or_below >= q / 100 * len(values)
    # nearest rank: the next smaller value would not cover q percent
    below = sum(1 for value in values if value < result)
    assert below < q / 100 * len(values)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        pytest.param(50, 5.0, id="median-of-1-to-10"),
        pytest.param(99, 10.0, id="p99-is-the-max-for-10-values"),
        pytest.param(100, 10.0, id="p100-is-the-max"),
        pytest.param(10, 1.0, id="p10-is-the-min"),
    ],
)
def test_percentile_nearest_rank(q: float, expected: float) -> None:
    assert client.percentile([float(v) for v in range(10, 0, -1)], q) == expected


def test_percentile_of_nothing_is_none_and_q_must_be_in_range() -> None:
    assert client.percentile([], 50) is None
    with pytest.raises(ValueError, match="not in"):
        client.percentile([1.0], 0)


def test_every_client_and_request_has_its_own_payload() -> None:
    payloads = {client.swarm_payload("t0k3n", i, j) for i in range(50) for j in range(5)}
    assert len(payloads) == 250
    assert all("t0k3n" in payload for payload in payloads)


# --- against the real server on loopback ---------------------------------------------------


def test_100_concurrent_clients_all_get_their_own_echoes(server_port: int) -> None:
    report = client.run_swarm(endpoint(server_port), clients=100, requests=5, tag="loop")

    assert report.failures == ()
    assert report.ok
    assert report.answered == 500
    assert len(report.latencies) == 500
    summary = report.summary()
    assert summary["clients"] == 100
    assert summary["requests"] == 500
    assert summary["failures"] == 0
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]


def test_cli_prints_one_json_summary_and_exits_0(server_port: int) -> None:
    out = io.StringIO()
    argv = ["--host", "127.0.0.1", "--port", str(server_port), "swarm", "--clients", "20"]
    argv += ["--requests", "3", "--json"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        code = client.main(argv)

    assert code == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("swarm: 20 clients x 3 requests: 60 answered, 0 clients failed")
    summary = json.loads(lines[-1])
    assert summary["command"] == "swarm"
    assert summary["ok"] is True
    assert (summary["clients"], summary["requests"], summary["failures"]) == (20, 60, 0)


@pytest.mark.parametrize("bad", [pytest.param("0", id="zero"), pytest.param("-3", id="negative")])
def test_cli_refuses_a_non_positive_client_count(bad: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        client.main(["swarm", "--clients", bad])
    assert exit_info.value.code == 2


# --- failures are reported, per client -----------------------------------------------------


def test_nobody_listening_fails_every_client_with_the_reason(
    free_port: Callable[..., int],
) -> None:
    report = client.run_swarm(endpoint(free_port()), clients=5, requests=2, tag="x")

    assert not report.ok
    assert report.answered == 0
    assert len(report.failures) == 5
    assert all("Connection refused" in failure for failure in report.failures)
    assert report.summary()["latency_ms"] == {"p50": None, "p99": None, "max": None}


def test_a_server_that_never_answers_hits_the_read_timeout() -> None:
    # The kernel completes the connections from the backlog; nobody ever reads them.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        report = client.run_swarm(endpoint(port, read_timeout=0.3), clients=3, requests=1, tag="x")

    assert not report.ok
    assert sorted(report.failures) == [
        f"client {i}: request 0: no progress within 0.3 s (read timeout)" for i in range(3)
    ]


def test_cli_exits_1_and_says_how_many_clients_failed(free_port: Callable[..., int]) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        patch.setattr("sys.stderr", err)
        code = client.main(["--port", str(free_port()), "--host", "127.0.0.1", "swarm"])

    assert code == 1
    assert "100 of 100 clients failed; first: client 0: cannot reach" in err.getvalue()
