"""The reaper: its sans-IO core (hello, notes, when to reap, hostile input), what it may touch
(plans from listings), its engine client against a fake engine on a unix socket, and the
whole ``socketlab reaper`` process: a controller's connection dropped -> the project's
containers, networks and volumes deleted through that fake engine, nobody else's."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from socketlab.reaper.core import (
    HELLO_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_LINE,
    Close,
    Journal,
    Reap,
    ReaperCore,
    Release,
    Reply,
)
from socketlab.reaper.engine import Engine, EngineError, request_path
from socketlab.reaper.plan import Container, label_filters, reset_options, run_reap, session_reap

TOKEN = "t" * 32
DEADLINE = 15.0


def core(**options: float) -> ReaperCore:
    settings = {"connect_timeout": 60.0, "linger": 1.0} | options
    return ReaperCore(token=TOKEN, started=0.0, **settings)


def hello(reaper: ReaperCore, conn: int = 1, now: float = 0.0) -> list[Any]:
    reaper.connected(conn, now)
    return reaper.received(conn, f"hello {TOKEN}\n".encode(), now)


# --------------------------------------------------------------------------- core


def test_a_controller_says_hello_journals_and_leaves_cleanly() -> None:
    reaper = core()
    assert hello(reaper) == [Reply(1, "ok")]
    actions = reaper.received(1, b'note {"did": "partition client server"}\nping\n', 1.0)
    assert actions == [
        Journal('{"did":"partition client server"}'),
        Reply(1, "ok"),
        Reply(1, "pong"),
    ]
    assert reaper.received(1, b"done\n", 2.0) == [Reply(1, "bye"), Release()]
    reaper.received(1, b"", 2.1)
    assert reaper.tick(100.0) == []  # released: never reaps


def test_a_dropped_controller_is_reaped_after_the_linger() -> None:
    reaper = core(linger=1.0)
    hello(reaper)
    reaper.received(1, b"", 5.0)  # the kernel closed a killed process's socket
    assert reaper.tick(5.5) == []
    assert reaper.tick(6.0) == [Reap("the controller's connection dropped")]
    assert reaper.tick(7.0) == []  # once


def test_a_controller_that_comes_back_in_time_is_not_reaped() -> None:
    reaper = core(linger=1.0)
    hello(reaper)
    reaper.received(1, b"", 5.0)
    hello(reaper, conn=2, now=5.5)
    assert reaper.tick(9.0) == []


def test_no_controller_at_all_is_reaped_after_the_connect_timeout() -> None:
    reaper = core(connect_timeout=30.0)
    assert reaper.tick(29.0) == []
    assert reaper.tick(31.0) == [Reap("no controller connected within 30 s")]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param(b"hello wrong\n", "no hello with the right token", id="wrong-token"),
        pytest.param(b"done\n", "no hello with the right token", id="done-before-hello"),
        pytest.param(b"\xff\xfe\n", "not UTF-8", id="bytes"),
        pytest.param(b"x" * (MAX_LINE + 10), f"a line longer than {MAX_LINE} bytes", id="flood"),
    ],
)
def test_hostile_first_lines_close_the_connection_and_never_reap_or_release(
    data: bytes, why: str
) -> None:
    reaper = core()
    reaper.connected(1, 0.0)
    actions = reaper.received(1, data, 0.0)
    assert Close(1, why) in actions
    assert not any(isinstance(a, Reap | Release) for a in actions)
    assert not reaper.ever_authed


def test_a_stranger_cannot_make_it_reap_by_connecting_and_leaving() -> None:
    reaper = core(linger=1.0)
    hello(reaper)  # the controller, still connected
    reaper.connected(2, 1.0)
    reaper.received(2, b"", 1.1)  # a local stranger comes and goes
    assert reaper.tick(10.0) == []


def test_slow_hellos_and_too_many_connections_are_closed() -> None:
    reaper = core()
    reaper.connected(1, 0.0)
    assert reaper.tick(HELLO_TIMEOUT + 0.1) == [Close(1, "no hello in time")]
    for conn in range(2, 2 + MAX_CONNECTIONS - 1):
        assert reaper.connected(conn, 0.0) == []
    assert reaper.connected(99, 0.0) == [Close(99, "too many connections")]


def test_notes_must_be_json_objects_and_lines_may_arrive_in_pieces() -> None:
    reaper = core()
    hello(reaper)
    assert reaper.received(1, b"note [1]\n", 1.0) == [Reply(1, "not a json object")]
    assert reaper.received(1, b"note {nope\n", 1.0) == [Reply(1, "not json")]
    assert reaper.received(1, b'note {"a"', 1.0) == []
    assert reaper.received(1, b": 1}\n", 1.0) == [Journal('{"a":1}'), Reply(1, "ok")]


# --------------------------------------------------------------------------- plans


def listing(name: str, labels: dict[str, str], state: str = "running", cid: str = "") -> Any:
    return Container.from_listing(
        {"Id": cid or f"id-{name}", "Names": [f"/{name}"], "Labels": labels, "State": state}
    )


SERVICE = {"com.docker.compose.project": "p", "io.socketlab.project": "p"}
CONTAINERS = [
    listing("p_server_1", SERVICE),
    listing("p_client_1", SERVICE),
    listing("p_old_1", SERVICE, state="exited"),
    listing("p-shaper-client-server", {"io.socketlab.project": "p", "io.socketlab.role": "shaper"}),
    listing("p-capture", {"io.socketlab.project": "p", "io.socketlab.role": "capture"}),
    listing("p-reaper-other", {"io.socketlab.project": "p", "io.socketlab.role": "reaper"}),
    listing("me", {"io.socketlab.project": "p", "io.socketlab.role": "reaper"}, cid="abc123def"),
    listing("q_server_1", {"com.docker.compose.project": "q"}),
    listing("unrelated", {}),
]


def test_a_run_reap_resets_running_services_and_removes_helpers_only() -> None:
    work = run_reap("p", CONTAINERS, self_id="abc123")
    assert [c.name for c in work.reset] == ["p_server_1", "p_client_1"]
    assert [c.name for c in work.remove] == ["p-shaper-client-server", "p-capture"]


def test_a_session_reap_removes_the_whole_project_but_itself_and_never_another() -> None:
    names = [c.name for c in session_reap("p", CONTAINERS, self_id="abc123")]
    assert set(names) == {"p_server_1", "p_client_1", "p_old_1", "p-shaper-client-server",
                          "p-capture", "p-reaper-other"}  # fmt: skip
    assert names.index("p-shaper-client-server") < names.index("p_server_1")  # helpers first


def test_a_reset_helper_joins_the_namespace_with_net_admin_and_the_project_label() -> None:
    options = reset_options(project="p", image="n:1", target_id="id-x", script="true", run_id="r")
    assert options["HostConfig"] == {
        "NetworkMode": "container:id-x",
        "CapAdd": ["NET_ADMIN", "NET_RAW"],
    }
    assert options["Labels"]["io.socketlab.project"] == "p"
    assert label_filters("p") == [
        {"label": ["io.socketlab.project=p"]},
        {"label": ["com.docker.compose.project=p"]},
    ]


# --------------------------------------------------------------------------- fake engine


class FakeEngine:
    """A Docker engine API on a unix socket: listings from ``containers`` and friends,
    every call recorded."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.containers: list[dict[str, Any]] = []
        self.networks = [
            {"Id": "n1", "Name": "p_default", "Labels": {"com.docker.compose.project": "p"}}
        ]
        self.volumes = [{"Name": "p_data", "Labels": {"io.socketlab.project": "p"}}]
        self.lock = threading.Lock()
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                query = {key: values[0] for key, values in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with engine.lock:
                    engine.calls.append((self.command, parts.path, query | {"body": body}))
                status, payload = engine.route(self.command, parts.path, query)
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # a short poll: shutdown() waits for it
        self.thread.start()

    def _matching(self, items: list[dict[str, Any]], filters: str) -> list[dict[str, Any]]:
        wanted = json.loads(filters).get("label", []) if filters else []
        found = []
        for item in items:
            labels = item.get("Labels") or {}
            if all(labels.get(k) == v for k, _, v in (w.partition("=") for w in wanted)):
                found.append(item)
        return found

    def route(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:  # noqa: PLR0911 - a return per route
        path = path.removeprefix("/v1.41")
        if (method, path) == ("GET", "/containers/json"):
            return 200, self._matching(self.containers, query.get("filters", ""))
        if (method, path) == ("GET", "/networks"):
            return 200, self._matching(self.networks, query.get("filters", ""))
        if (method, path) == ("GET", "/volumes"):
            return 200, {"Volumes": self._matching(self.volumes, query.get("filters", ""))}
        if method == "DELETE":
            return 204, None
        if (method, path) == ("POST", "/containers/create"):
            return 201, {"Id": "reset-1"}
        if method == "POST" and path.endswith("/wait"):
            return 200, {"StatusCode": 0}
        if method == "POST":
            return 204, None
        return 404, {"message": "no such thing"}

    def deleted(self) -> list[str]:
        return [path.removeprefix("/v1.41") for method, path, _ in self.calls if method == "DELETE"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[FakeEngine]:
    fake = FakeEngine(str(tmp_path / "docker.sock"))
    yield fake
    fake.close()


def test_the_engine_client_speaks_the_api_with_filters(engine: FakeEngine) -> None:
    engine.containers = [{"Id": "a", "Names": ["/a"], "Labels": {"io.socketlab.project": "p"}}]
    client = Engine(engine.path, timeout=5)
    assert client.containers({"label": ["io.socketlab.project=p"]})[0]["Id"] == "a"
    assert client.containers({"label": ["io.socketlab.project=q"]}) == []
    client.remove_container("a")
    assert engine.calls[-1][:2] == ("DELETE", "/v1.41/containers/a")
    assert engine.calls[-1][2]["force"] == "1"
    assert client.run_to_end({"Image": "x"}, timeout=5) == 0
    assert [call[1] for call in engine.calls[-4:]] == [
        "/v1.41/containers/create",
        "/v1.41/containers/reset-1/start",
        "/v1.41/containers/reset-1/wait",
        "/v1.41/containers/reset-1",
    ]
    with pytest.raises(EngineError, match="HTTP 404"):
        client.call("GET", "/nope")
    assert request_path("/x", {"filters": {"label": ["a=b"]}}) == (
        "/v1.41/x?filters=%7B%22label%22%3A+%5B%22a%3Db%22%5D%7D"
    )


def test_an_engine_that_is_not_there_is_an_engine_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        Engine(str(tmp_path / "none.sock"), timeout=1).containers({})


# --------------------------------------------------------------------------- the process


def _reaper(
    engine: FakeEngine, port: int, *, scope: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "socketlab", "reaper", "--project", "p", "--scope", scope,
            "--run-id", "r1", "--port", str(port), "--docker-socket", engine.path,
            "--linger", "0.2", "--netkit-image", "n:1", "--reset-script", "true"]  # fmt: skip
    return subprocess.Popen(
        argv,
        env={**os.environ, "SOCKETLAB_REAPER_TOKEN": TOKEN, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _connect(port: int, wait_until: Callable[..., Any]) -> socket.socket:
    def attempt() -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            return None

    conn: socket.socket = wait_until(attempt, "the reaper to listen")
    conn.sendall(f"hello {TOKEN}\n".encode())
    assert conn.makefile("rb").readline().strip() == b"ok"
    return conn


def test_a_dropped_session_controller_gets_its_project_removed(
    engine: FakeEngine, free_port: Callable[..., int], wait_until: Callable[..., Any]
) -> None:
    engine.containers = [
        {"Id": "s1", "Names": ["/p_server_1"], "Labels": SERVICE, "State": "running"},
        {"Id": "h1", "Names": ["/p-shaper"], "Labels": {"io.socketlab.project": "p",
                                                         "io.socketlab.role": "shaper"}},
        {"Id": "q1", "Names": ["/q_server_1"], "Labels": {"com.docker.compose.project": "q"}},
    ]  # fmt: skip
    port = free_port()
    process = _reaper(engine, port, scope="session")
    try:
        conn = _connect(port, wait_until)
        conn.sendall(b'note {"did": "shaping client -> server"}\n')
        conn.close()  # as the kernel does for a killed pytest
        out, _ = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert process.returncode == 0
    deleted = engine.deleted()
    assert "/containers/s1" in deleted
    assert "/containers/h1" in deleted
    assert "/containers/q1" not in deleted  # another project: never
    assert "/networks/n1" in deleted
    assert "/volumes/p_data" in deleted
    assert 'event=journal run=r1 note={"did":"shaping client -> server"}' in out
    assert "event=reaped scope=session removed=2 networks=1 volumes=1" in out


def test_a_dropped_run_controller_gets_its_network_reset_and_helpers_removed(
    engine: FakeEngine, free_port: Callable[..., int], wait_until: Callable[..., Any]
) -> None:
    engine.containers = [
        {"Id": "s1", "Names": ["/p_server_1"], "Labels": SERVICE, "State": "running"},
        {"Id": "h1", "Names": ["/p-shaper"], "Labels": {"io.socketlab.project": "p",
                                                         "io.socketlab.role": "shaper"}},
    ]  # fmt: skip
    port = free_port()
    process = _reaper(engine, port, scope="run")
    try:
        _connect(port, wait_until).close()
        out, _ = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    created = [c for c in engine.calls if c[1].endswith("/containers/create")]
    (create,) = created
    assert create[2]["body"]["HostConfig"]["NetworkMode"] == "container:s1"
    assert create[2]["body"]["Cmd"] == ["sh", "-c", "true"]
    assert engine.deleted() == ["/containers/reset-1", "/containers/h1"]  # the service stays
    assert "event=reset container=p_server_1 exit=0" in out
    assert "event=reaped scope=run run=r1 reset=1 removed=1" in out


def test_a_controller_that_says_done_leaves_everything(
    engine: FakeEngine, free_port: Callable[..., int], wait_until: Callable[..., Any]
) -> None:
    engine.containers = [{"Id": "s1", "Names": ["/p_server_1"], "Labels": SERVICE}]
    port = free_port()
    process = _reaper(engine, port, scope="session")
    try:
        conn = _connect(port, wait_until)
        conn.sendall(b"done\n")
        assert conn.makefile("rb").readline().strip() == b"bye"
        conn.close()
        out, _ = process.communicate(timeout=DEADLINE)
    finally:
        process.kill()
    assert engine.deleted() == []
    assert "event=released run=r1" in out


def test_the_reaper_will_not_start_without_a_token(engine: FakeEngine) -> None:
    started = time.monotonic()
    process = _reaper(engine, 1, scope="run", env={"SOCKETLAB_REAPER_TOKEN": ""})
    out, _ = process.communicate(timeout=DEADLINE)
    assert process.returncode == 2
    assert "SOCKETLAB_REAPER_TOKEN" in out
    assert time.monotonic() - started < DEADLINE
