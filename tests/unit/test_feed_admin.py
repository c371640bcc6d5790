"""The feed server's admin API: the lab's token, quotas, bounded faults and a bounded /stats."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from socketlab.__main__ import main as socketlab_main
from socketlab.credentials import is_authorized, read_token
from socketlab.errors import ConfigError
from socketlab.rss.feed_server import FeedServer, FeedServerConfig, ServerOptions

TOKEN = "admin-token-for-tests"  # noqa: S105 - a test token
OPTIONS = ServerOptions(
    host="127.0.0.1",
    port=0,
    admin_token=TOKEN,
    max_feeds=3,
    max_entries=5,
    fault_concurrency=1,
    fault_max_seconds=30.0,
    huge_bytes=200 * 1024 * 1024,
    request_timeout=1.0,
)


@contextmanager
def running(options: ServerOptions = OPTIONS) -> Iterator[FeedServer]:
    server = FeedServer(options)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with running() as started:
        yield started


def call(
    server: FeedServer,
    method: str,
    path: str,
    document: object | None = None,
    *,
    token: str | None = TOKEN,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=None if document is None else json.dumps(document).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


WRITES = [
    pytest.param("POST", "/admin/feeds/news/entries", {"title": "x"}, id="publish"),
    pytest.param("POST", "/admin/feeds/other/schedule", {"every": 1}, id="schedule"),
    pytest.param("GET", "/faults/huge.rss", None, id="fault-huge"),
    pytest.param("GET", "/faults/slow.rss?seconds=1", None, id="fault-slow"),
    pytest.param("GET", "/faults/xxe.rss", None, id="fault-xxe"),
    pytest.param("GET", "/faults/nope.rss", None, id="unknown-fault"),
]


@pytest.mark.parametrize(("method", "path", "document"), WRITES)
@pytest.mark.parametrize("token", [None, "wrong-token", "Bearer"], ids=["none", "wrong", "empty"])
def test_writes_and_faults_refuse_without_the_token(
    server: FeedServer, method: str, path: str, document: object, token: str | None
) -> None:
    status, headers, body = call(server, method, path, document, token=token)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "admin token" in json.loads(body)["error"]
    assert server.registry.entry_count("news") == 3, "nothing was published"
    assert server.registry.names() == ["news"], "nothing was created or scheduled"


def test_with_no_token_configured_every_write_is_refused() -> None:
    with running(replace(OPTIONS, admin_token=None)) as server:
        for token in (None, "", TOKEN):
            status, _, body = call(
                server, "POST", "/admin/feeds/news/entries", {"title": "x"}, token=token
            )
            assert status == 401
            assert "disabled" in json.loads(body)["error"]


def test_reads_stay_open(server: FeedServer) -> None:
    status, _, body = call(server, "POST", "/admin/feeds/news/entries", {"title": "open"})
    assert status == 201
    link = json.loads(body)["link"].rsplit("/feeds/", 1)[1]
    for path in ("/feeds/news.rss", "/feeds/news.atom", "/stats", "/health", f"/feeds/{link}"):
        assert call(server, "GET", path, token=None)[0] == 200, path


def test_quotas_feeds_per_lab_and_entries_per_feed(server: FeedServer) -> None:
    assert call(server, "POST", "/admin/feeds/a/entries", {"title": "1"})[0] == 201
    assert call(server, "POST", "/admin/feeds/b/entries", {"title": "1"})[0] == 201
    status, _, body = call(server, "POST", "/admin/feeds/c/entries", {"title": "1"})
    assert status == 429
    assert "3 feeds" in json.loads(body)["error"]
    assert call(server, "POST", "/admin/feeds/c/schedule", {"every": 1})[0] == 429
    for number in range(2, 6):
        assert call(server, "POST", "/admin/feeds/a/entries", {"title": str(number)})[0] == 201
    status, _, body = call(server, "POST", "/admin/feeds/a/entries", {"title": "6"})
    assert status == 429
    assert "5 entries" in json.loads(body)["error"]
    assert server.registry.entry_count("a") == 5
    assert sorted(server.registry.names()) == ["a", "b", "news"]


@pytest.mark.parametrize("every", [0.001, 0.05, -1, "fast", True])
def test_a_schedule_faster_than_the_minimum_is_refused(server: FeedServer, every: object) -> None:
    status, _, body = call(server, "POST", "/admin/feeds/news/schedule", {"every": every})
    assert status == 400, body
    assert server.scheduler._cancels == {}


def test_a_schedule_stops_at_the_entry_quota(
    server: FeedServer, wait_until: Callable[..., Any]
) -> None:
    assert call(server, "POST", "/admin/feeds/ticker/schedule", {"every": 0.1})[0] == 200
    wait_until(lambda: server.registry.entry_count("ticker") == 5, what="five scheduled entries")
    started = time.monotonic()
    while time.monotonic() - started < 0.5:  # the schedule had time for five more
        assert server.registry.entry_count("ticker") == 5
        time.sleep(0.05)  # sampling a count that must not change, not waiting for readiness


def _slots_free(server: FeedServer) -> bool:
    if server.fault_slots.acquire(blocking=False):
        server.fault_slots.release()
        return True
    return False


def test_a_slow_fault_stops_when_its_client_leaves(
    server: FeedServer, wait_until: Callable[..., Any]
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /faults/slow.rss?seconds=25 HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    wait_until(lambda: not _slots_free(server), what="the slow fault to hold its slot")
    # The only slot for lasting faults is taken: another is refused at once, and
    # small fault documents are still served.
    assert call(server, "GET", "/faults/drip.rss?every=0")[0] == 503
    assert call(server, "GET", "/faults/malformed.rss")[0] == 200
    sock.close()
    started = time.monotonic()
    wait_until(lambda: _slots_free(server), what="the slot back", timeout=5)
    assert time.monotonic() - started < 2.0, "the stall ended with its client, not after 25 s"
    assert call(server, "GET", "/faults/drip.rss?every=0")[0] == 200


def test_a_huge_fault_stops_sending_when_its_client_leaves(
    server: FeedServer, wait_until: Callable[..., Any]
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /faults/huge.rss HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    got = 0
    while got < 1024 * 1024:
        got += len(sock.recv(65536))
    sock.close()
    counters = wait_until(
        lambda: server.stats.snapshot().get("/faults/huge.rss"), what="the fault's counters"
    )
    assert counters["bytes_sent"] < 32 * 1024 * 1024, "not the 200 MiB it would make"


@pytest.mark.parametrize(
    ("query", "longest"),
    [("seconds=100000", 30.0), ("seconds=nan", 30.0), ("seconds=-5", 0.0)],
)
def test_fault_durations_are_capped(query: str, longest: float) -> None:
    options = replace(OPTIONS, fault_max_seconds=0.3)
    with running(options) as server:
        started = time.monotonic()
        status, _, _ = call(server, "GET", f"/faults/slow.rss?{query}")
        assert status == 200
        assert time.monotonic() - started < 3.0


def test_stats_count_unknown_paths_under_one_key(
    server: FeedServer, wait_until: Callable[..., Any]
) -> None:
    for number in range(300):
        call(server, "GET", f"/nope-{number}", token=None)
        call(server, "GET", f"/feeds/missing-{number}.rss", token=None)
    call(server, "GET", "/feeds/news.rss", token=None)

    def counted() -> dict[str, Any] | None:
        # a request is counted once its body is sent, which can be just after the
        # client has read it: wait for the last one
        paths: dict[str, Any] = json.loads(call(server, "GET", "/stats", token=None)[2])["paths"]
        unknown = paths.get("(unknown)", {}).get("requests", 0)
        return paths if "/feeds/news.rss" in paths and unknown >= 600 else None

    paths = wait_until(counted, what="every request in the stats")
    assert paths["(unknown)"]["requests"] == 600
    assert set(paths) == {"(unknown)", "/feeds/news.rss"}


def test_a_slowloris_crowd_does_not_stop_the_feed_server(server: FeedServer) -> None:
    crowd = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(150)]
    for sock in crowd:
        sock.send(b"GET /feeds/news.rss HTTP/1.0\r\nX-Slow: ")
    started = time.monotonic()
    assert call(server, "GET", "/feeds/news.rss", token=None)[0] == 200
    assert time.monotonic() - started < 2.0
    for sock in crowd:
        sock.close()


def test_config_reads_the_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(f"{TOKEN}\n")
    config = FeedServerConfig.from_env({"SOCKETLAB_ADMIN_TOKEN_FILE": str(token_file)})
    assert config.options().admin_token == TOKEN
    missing = FeedServerConfig.from_env({"SOCKETLAB_ADMIN_TOKEN_FILE": str(tmp_path / "none")})
    assert missing.options().admin_token is None
    with pytest.raises(ConfigError, match="SOCKETLAB_FEED_HUGE_BYTES"):
        FeedServerConfig.from_env({"SOCKETLAB_FEED_HUGE_BYTES": str(2 << 30)})


def test_credentials(tmp_path: Path) -> None:
    assert is_authorized(f"Bearer {TOKEN}", TOKEN)
    assert is_authorized(f"bearer  {TOKEN} ", TOKEN)
    assert not is_authorized(f"Basic {TOKEN}", TOKEN)
    assert not is_authorized(None, TOKEN)
    assert not is_authorized(f"Bearer {TOKEN}", None)
    assert not is_authorized("Bearer ", "")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 5000)
    with pytest.raises(ConfigError, match="more than"):
        read_token(big)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert read_token(empty) is None


def test_socketlab_feed_refusals_are_one_line(
    server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    base = ["feed", "--server", f"http://127.0.0.1:{server.port}"]
    too_fast = [*base, "--token-file", str(token_file), "schedule", "--every", "0.001"]
    assert socketlab_main(too_fast) == 1
    assert capsys.readouterr().err == (
        "socketlab feed: POST /admin/feeds/news/schedule: HTTP 400: "
        '"every" must be 0 (stop) or at least 0.1 s\n'
    )
    no_token = [*base, "--token-file", str(tmp_path / "none"), "publish", "--title", "x"]
    assert socketlab_main(no_token) == 1
    err = capsys.readouterr().err
    assert err.startswith("socketlab feed: POST /admin/feeds/news/entries: HTTP 401: ")
    assert err.count("\n") == 1
