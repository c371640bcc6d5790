"""4571 admission: one address cannot take every slot, and a full server evicts the idlest."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab.waiting import wait_for
from socketlab import client
from socketlab.protocol import ServerRefused
from socketlab.server import LabServer, ServerConfig
from socketlab.server.admission import Admit, Evict, Idle, Refuse, admit

CONFIG = ServerConfig(
    host="0.0.0.0",
    port=0,
    generate_samples=False,
    poll_interval=0.01,  # how soon a stopped server ends: at every test's teardown
    idle_timeout=30.0,
    max_connections=12,
    max_per_peer=4,
)


@pytest.mark.parametrize(
    ("from_peer", "total", "idle", "expected"),
    [
        pytest.param(0, 0, [], Admit(), id="empty"),
        pytest.param(3, 11, [], Admit(), id="just-below-both"),
        pytest.param(
            4,
            5,
            [Idle(key=1, last_active=0.0)],
            Refuse("too many connections from your address (limit 4)", False),
            id="per-peer",
        ),
        pytest.param(
            1,
            12,
            [
                Idle(key=7, last_active=5.0),
                Idle(key=3, last_active=2.0),
                Idle(key=9, last_active=8.0),
            ],
            Evict(3),
            id="full-evicts-idlest",
        ),
        pytest.param(
            1, 12, [], Refuse("server busy: too many connections", True), id="full-none-idle"
        ),
    ],
)
def test_admit(from_peer: int, total: int, idle: list[Idle], expected: object) -> None:
    decision = admit(
        from_peer=from_peer, total=total, idle=idle, max_per_peer=4, max_connections=12
    )
    assert decision == expected


def test_idle_candidates_are_only_consulted_when_full() -> None:
    def never() -> Any:
        raise AssertionError("looked for idle connections with room to spare")
        yield  # pragma: no cover

    assert admit(from_peer=0, total=3, idle=never(), max_per_peer=4, max_connections=12) == Admit()


def _serve(
    config: ServerConfig, tmp_path: Path, serve: Callable[..., Any]
) -> tuple[LabServer, int]:
    server = LabServer(replace(config, data_root=tmp_path))
    port = server.bind()
    serve(server.serve, name="lab-server", stop_within=3)
    return server, port


def _from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return sock


def _conn(sock: socket.socket) -> client.LabConnection:
    port = sock.getpeername()[1]
    return client.LabConnection(
        sock, client.Endpoint(host="127.0.0.1", port=port, timeout=2.0, read_timeout=5.0)
    )


def _hello(address: str, port: int) -> object:
    with _from(address, port) as sock:
        return _conn(sock).request("hello", None)


def test_one_address_flooding_idle_connections_locks_nobody_out(
    tmp_path: Path, serve: Callable[..., Any]
) -> None:
    server, port = _serve(CONFIG, tmp_path, serve)
    flood = [_from("127.0.0.3", port) for _ in range(12)]  # 4 served, 8 refused
    wait_for(
        lambda: server.stats["refused_per_peer"] == 8, timeout=5, what="8 refusals", interval=0.01
    )
    assert len(server._conns) == 4
    with pytest.raises(ServerRefused, match="too many connections from your address"):
        client.response_result(_conn(flood[-1]).read_message())
    assert "Hello" in str(_hello("127.0.0.2", port)), "another address is served"
    assert _conn(flood[0]).request("echo", "served") == "served"
    for sock in flood:
        sock.close()


def test_a_full_server_evicts_the_longest_idle_connection(
    tmp_path: Path, serve: Callable[..., Any]
) -> None:
    server, port = _serve(replace(CONFIG, max_per_peer=64), tmp_path, serve)
    idle = [_from("127.0.0.3", port) for _ in range(12)]
    wait_for(lambda: len(server._conns) == 12, timeout=5, what="12 connections", interval=0.01)
    # The first one talks now and then: it is the most recently active, never the victim.
    first = _conn(idle[0])
    assert first.request("echo", "still here") == "still here"
    assert "Hello" in str(_hello("127.0.0.2", port)), "admitted on a full server"
    assert server.stats["evicted_idle"] == 1
    with pytest.raises(ServerRefused, match="idle"):
        client.response_result(_conn(idle[1]).read_message())
    assert first.request("echo", "again") == "again"
    for sock in idle:
        sock.close()


def test_the_per_peer_limit_is_a_setting() -> None:
    assert ServerConfig.from_env({"SOCKETLAB_MAX_PER_PEER": "8"}).max_per_peer == 8
    assert ServerConfig().max_per_peer == 64
