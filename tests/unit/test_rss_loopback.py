"""Feed server and poller together in one process over 127.0.0.1 (no Docker)."""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from socketlab.__main__ import main as socketlab_main
from socketlab.rss import poller as poller_module
from socketlab.rss import publish as publish_module
from socketlab.rss.errors import FeedTooLarge, FetchError, FetchTimeout, HttpStatusError
from socketlab.rss.feed_server import FeedServer, ServerOptions
from socketlab.rss.fetch import Validators, fetch
from socketlab.rss.poller import Poller, PollerOptions

SENTINEL = "SOCKETLAB-LOOPBACK-SENTINEL-41c2"
DEADLINE = 15.0
TOKEN = "loopback-admin-token"  # noqa: S105 - a test token


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    running = FeedServer(
        ServerOptions(
            host="127.0.0.1",
            port=0,
            slow_seconds=60.0,
            drip_every=0.05,
            huge_bytes=200 * 1024 * 1024,
            admin_token=TOKEN,
        )
    )
    running.start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with feed_server() as running:
        yield running


@pytest.fixture(scope="module")
def unchanged_server() -> Iterator[FeedServer]:
    """One server for tests that only read it or get refused (nothing they do changes it)."""
    with feed_server() as running:
        yield running


def base(server: FeedServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def stats(server: FeedServer, path: str) -> dict[str, int]:
    return server.stats.snapshot().get(path, {"requests": 0, "ok": 0, "not_modified": 0})


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Running:
    def __init__(self, poller: Poller, out: io.StringIO) -> None:
        self.poller = poller
        self.out = out

    def status(self, url: str) -> poller_module.FeedStatus:
        return self.poller.status[url]


@contextmanager
def running_poller(
    feeds: list[str],
    directory: Path,
    *,
    interval: float = 0.1,
    timeout: float = 2.0,
    stop_grace: float = 2.0,
    token_origin: str | None = None,
) -> Iterator[Running]:
    options = PollerOptions(
        admin_token=TOKEN,
        token_origin=token_origin or _origin(feeds[0]),
        interval=interval,
        timeout=timeout,
        max_bytes=1024 * 1024,
        backoff_max=1.0,
        output=directory / "entries.jsonl",
        state=directory / "state.sqlite3",
        status=directory / "status.json",
        stop_grace=stop_grace,
    )
    out = io.StringIO()
    poller = Poller(feeds, options, stdout=out)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield Running(poller, out)
    finally:
        stop.set()
        thread.join(timeout=10)
        poller.close()


def _origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def publish(server: FeedServer, title: str, *, feed: str = "news") -> dict[str, Any]:
    return publish_module.publish(
        base(server), feed, title=title, summary=f"About {title}", token=TOKEN
    )


def test_publish_three_restart_publish_one_exactly_once(
    server: FeedServer, tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    url = base(server) + "/feeds/news.rss"
    output = tmp_path / "entries.jsonl"
    with running_poller([url], tmp_path, interval=0.05) as run:
        wait_until(lambda: len(records(output)) == 3, what="the seeded entries")
        published = [publish(server, f"Story {n}") for n in (1, 2, 3)]
        wait_until(lambda: len(records(output)) == 6, what="three published entries")
        polls = run.status(url).polls
        wait_until(
            lambda: run.status(url).polls >= polls + 3, what="more polls of the unchanged feed"
        )
    after_first = records(output)
    assert [r["key"] for r in after_first[3:]] == ["guid:" + p["guid"] for p in published]
    assert [r["title"] for r in after_first[3:]] == ["Story 1", "Story 2", "Story 3"]
    assert stats(server, "/feeds/news.rss")["not_modified"] >= 3

    with running_poller([url], tmp_path, interval=0.05) as run:  # a restarted poller
        wait_until(lambda: run.status(url).polls >= 3, what="polls after the restart")
        assert run.out.getvalue() == "", "nothing already printed is printed again"
        extra = publish(server, "Story 4")
        wait_until(lambda: len(records(output)) == 7, what="the fourth entry")
        polls = run.status(url).polls
        wait_until(lambda: run.status(url).polls >= polls + 3, what="more polls")
        assert run.out.getvalue().count("Story 4 |") == 1
        assert run.status(url).state == "ok"
    assert records(output)[-1]["key"] == "guid:" + extra["guid"]
    assert len(records(output)) == 7


def test_unchanged_feed_is_answered_with_304_and_no_body(
    server: FeedServer, tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    url = base(server) + "/feeds/news.atom"
    with running_poller([url], tmp_path) as run:
        wait_until(lambda: run.status(url).not_modified >= 3, what="conditional polls")
    counters = stats(server, "/feeds/news.atom")
    assert counters["ok"] == 1
    assert counters["not_modified"] == counters["requests"] - 1
    full = server.registry.render("news", "atom")
    assert full is not None
    assert counters["bytes_sent"] == len(full.body), "304 answers carry no body"


def test_hostile_feeds_do_not_crash_or_leak_and_others_keep_polling(
    server: FeedServer, tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SENTINEL)
    root = base(server)
    news = root + "/feeds/news.rss"
    hostile = {
        "malformed": root + "/faults/malformed.rss",
        "laughs": root + "/faults/billion-laughs.rss",
        "xxe": f"{root}/faults/xxe.rss?path={secret}",
        "error": root + "/faults/error.rss",
        "huge": root + "/faults/huge.rss",
        "drip": root + "/faults/drip.rss",
    }
    state_dir = tmp_path / "state"
    with running_poller([news, *hostile.values()], state_dir, timeout=0.5) as run:
        wait_until(
            lambda: all(run.status(u).polls >= 2 for u in hostile.values()), what="fault polls"
        )
        publish(server, "Still flowing")
        wait_until(lambda: "Still flowing" in run.out.getvalue(), what="news despite hostile feeds")
        status = {name: run.status(u) for name, u in hostile.items()}
        assert status["malformed"].state == "degraded"
        assert status["laughs"].state == "degraded"
        assert status["xxe"].state == "degraded"
        assert "DOCTYPE" in status["xxe"].removed
        assert status["error"].state == "failing"
        assert status["error"].last_status == 500
        assert status["error"].consecutive_failures >= 2, "backs off but keeps polling"
        assert "FeedTooLarge" in (status["huge"].last_error or "")
        assert "FetchTimeout" in (status["drip"].last_error or "")
        assert run.status(news).state == "ok"
    everything = (
        run.out.getvalue()
        + (state_dir / "entries.jsonl").read_text()
        + (state_dir / "status.json").read_text()
    )
    assert SENTINEL not in everything
    assert "lollollol" not in everything
    status_file = json.loads((state_dir / "status.json").read_text())
    assert status_file["feeds"][hostile["malformed"]]["state"] == "degraded"


def test_a_stalled_feed_does_not_delay_the_others(
    server: FeedServer, tmp_path: Path, wait_until: Callable[..., Any]
) -> None:
    root = base(server)
    news, slow = root + "/feeds/news.rss", root + "/faults/slow.rss"
    # The fetch timeout outlasts the test: the slow feed's poll is in flight throughout,
    # and stopping does not wait for it long.
    with running_poller([news, slow], tmp_path, interval=0.05, timeout=30.0, stop_grace=0.2) as run:
        wait_until(lambda: run.status(news).polls >= 10, what="ten polls of news")
        publish(server, "While slow stalls")
        wait_until(lambda: "While slow stalls" in run.out.getvalue(), what="entry during the stall")
        assert run.status(slow).polls == 1
        assert run.status(slow).last_poll_at is not None
        assert run.status(slow).last_success_at is None


def test_an_unexpected_error_in_one_poll_does_not_end_the_feed(
    server: FeedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wait_until: Callable[..., Any],
) -> None:
    calls: list[str] = []

    def broken_parse(body: bytes, *, url: str, content_type: str | None = None) -> None:
        calls.append(url)
        raise RuntimeError("parser bug")

    monkeypatch.setattr(poller_module, "parse_feed", broken_parse)
    url = base(server) + "/feeds/news.rss"
    with running_poller([url], tmp_path) as run:
        wait_until(lambda: len(calls) >= 3, what="polls after the crash")
        assert run.status(url).state == "failing"
        assert "parser bug" in (run.status(url).last_error or "")


def test_scheduled_publishing_grows_the_feed(
    server: FeedServer, wait_until: Callable[..., Any]
) -> None:
    answer = publish_module.request_json(
        base(server), "POST", "/admin/feeds/ticker/schedule", {"every": 0.1}, timeout=5, token=TOKEN
    )
    assert answer == {"feed": "ticker", "every": 0.1}
    wait_until(lambda: server.registry.entry_count("ticker") >= 3, what="scheduled entries")
    publish_module.request_json(
        base(server), "POST", "/admin/feeds/ticker/schedule", {"every": 0}, timeout=5, token=TOKEN
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        pytest.param("GET", "/feeds/nope.rss", None, 404, id="unknown-feed"),
        pytest.param("GET", "/nothing", None, 404, id="unknown-path"),
        pytest.param("GET", "/faults/unknown.rss", None, 404, id="unknown-fault"),
        pytest.param("GET", "/faults/malformed.rss", None, 200, id="fault"),
        pytest.param("POST", "/admin/feeds/news/entries", b"not json", 400, id="bad-json"),
        pytest.param("POST", "/admin/feeds/news/entries", b"[1]", 400, id="not-an-object"),
        pytest.param("POST", "/admin/feeds/Bad/entries", b"{}", 400, id="bad-name"),
        pytest.param("POST", "/admin/feeds/news/entries", b'{"title": 3}', 400, id="bad-title"),
        pytest.param("POST", "/admin/feeds/news/schedule", b'{"every": -1}', 400, id="bad-every"),
        pytest.param("GET", "/health", None, 200, id="health"),
        pytest.param("HEAD", "/feeds/news.rss", None, 200, id="head"),
    ],
)
def test_server_answers(
    unchanged_server: FeedServer, method: str, path: str, body: bytes | None, status: int
) -> None:
    before = unchanged_server.registry.entry_count("news")
    request = urllib.request.Request(  # noqa: S310
        base(unchanged_server) + path,
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            got, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        got, payload = exc.code, exc.read()
    assert got == status
    if method == "HEAD":
        assert payload == b""
    assert unchanged_server.registry.entry_count("news") == before, "the shared server is unchanged"


def test_a_handler_bug_is_a_500_and_the_server_keeps_serving(
    server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, fmt: str) -> None:
        raise RuntimeError("render bug")

    monkeypatch.setattr(server.registry, "render", broken)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(base(server) + "/feeds/news.rss", timeout=5)  # noqa: S310
    assert caught.value.code == 500
    caught.value.close()
    with urllib.request.urlopen(base(server) + "/health", timeout=5) as response:  # noqa: S310
        assert response.status == 200


def test_entry_links_resolve_to_a_page(server: FeedServer) -> None:
    server.registry.base_url = base(server)
    entry = publish(server, "Linked <story>")
    with urllib.request.urlopen(entry["link"], timeout=5) as response:  # noqa: S310
        page = response.read().decode()
    assert "Linked &lt;story&gt;" in page


def test_poller_and_feed_clis(
    server: FeedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    feed = ["feed", "--server", base(server), "--token-file", str(token_file)]
    assert socketlab_main([*feed, "publish", "--feed", "cli", "--title", "From CLI"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "From CLI"
    url = base(server) + "/feeds/cli.rss"
    argv = ["rss-poller", "--once", "--dir", str(tmp_path), "--timeout", "5", url]
    assert socketlab_main(argv) == 0
    assert socketlab_main(argv) == 0
    assert capsys.readouterr().out.count("From CLI") == 1
    status = ["rss-poller", "--status", "--dir"]
    assert socketlab_main([*status, str(tmp_path)]) == 1, "that run has ended"
    table = capsys.readouterr().out
    assert f"ok             1     0     1     0  {url}" in table, "counters of the last run"
    assert socketlab_main([*status, str(tmp_path / "none")]) == 1
    assert socketlab_main([*feed, "stats"]) == 0
    counters = json.loads(capsys.readouterr().out)["paths"]["/feeds/cli.rss"]
    assert counters["not_modified"] == 1
    capsys.readouterr()
    unreachable = ["feed", "--server", "http://127.0.0.1:9", "--timeout", "1", "stats"]
    assert socketlab_main(unreachable) == 1
    err = capsys.readouterr().err
    assert err.startswith("socketlab feed: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        pytest.param(["rss-poller", "--once"], "SOCKETLAB_POLL_INTERVAL", id="poller"),
        pytest.param(["feed", "stats"], "SOCKETLAB_FEED_ADMIN_TIMEOUT", id="feed"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_exit_2(
    argv: list[str],
    variable: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, "abc")
    assert socketlab_main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"socketlab: {variable}='abc' is not a number\n"


def test_a_poller_that_cannot_open_its_state_fails_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    argv = ["rss-poller", "--once", "--dir", str(blocker), "http://127.0.0.1:9/x.rss"]
    assert socketlab_main(argv) == 1, "a failure, not a usage error"
    assert capsys.readouterr().err.startswith("socketlab rss-poller: ")


class _Tricky(BaseHTTPRequestHandler):
    """Answers that the lab feed server never gives: gzip, redirects, lies about size."""

    feed = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        b"<item><guid>tricky-1</guid><title>compressed</title></item></channel></rss>"
    )

    def do_GET(self) -> None:
        if self.path == "/gzip":
            self._answer(200, gzip.compress(self.feed), {"Content-Encoding": "gzip"})
        elif self.path == "/gzip-bomb":
            self._answer(
                200, gzip.compress(b"<" * (20 * 1024 * 1024)), {"Content-Encoding": "gzip"}
            )
        elif self.path == "/redirect":
            self._answer(301, b"", {"Location": "/gzip"})
        elif self.path == "/loop":
            self._answer(302, b"", {"Location": "/loop"})
        elif self.path == "/to-file":
            self._answer(302, b"", {"Location": "file:///etc/passwd"})
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        else:
            self._answer(404, b"", {})

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def tricky() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Tricky)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_follows_redirects_and_decompresses(tricky: str) -> None:
    result = fetch(tricky + "/redirect", validators=Validators(), timeout=5, max_bytes=1 << 20)
    assert result.status == 200
    assert result.url == tricky + "/gzip"
    assert b"compressed" in result.body


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        pytest.param("/gzip-bomb", FeedTooLarge, "cap", id="gzip-bomb"),
        pytest.param("/declared-huge", FeedTooLarge, "declared", id="declared-length"),
        pytest.param("/loop", HttpStatusError, "redirects", id="redirect-loop"),
        pytest.param("/to-file", FetchError, "http and https only", id="redirect-to-file"),
        pytest.param("/missing", HttpStatusError, "404", id="not-found"),
    ],
)
def test_fetch_refusals(tricky: str, path: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        fetch(tricky + path, validators=Validators(), timeout=5, max_bytes=1 << 20)


def test_fetch_refuses_local_files_outright() -> None:
    with pytest.raises(FetchError, match="http and https only"):
        fetch("file:///etc/passwd", validators=Validators(), timeout=1, max_bytes=10)


def test_the_deadline_covers_a_server_that_trickles(server: FeedServer) -> None:
    started = time.monotonic()
    with pytest.raises(FetchTimeout):
        fetch(
            base(server) + "/faults/drip.rss",
            validators=Validators(),
            timeout=0.5,
            max_bytes=1 << 20,
            authorization=f"Bearer {TOKEN}",
        )
    # Each byte arrives within any per-read timeout; only the overall deadline ends it.
    assert time.monotonic() - started < 10.0


def test_published_entries_survive_a_server_restart_byte_for_byte(tmp_path: Path) -> None:
    journal = tmp_path / "feeds" / "entries.jsonl"
    options = ServerOptions(host="127.0.0.1", port=0, journal=journal, admin_token=TOKEN)
    first = FeedServer(options)
    first.start()
    try:
        published = [publish(first, f"Kept {n}") for n in (1, 2)]
        held = fetch(
            base(first) + "/feeds/news.rss", validators=Validators(), timeout=5, max_bytes=1 << 20
        )
    finally:
        first.close()
    with journal.open("ab") as torn:
        torn.write(b'{"feed": "news", "guid": "urn:uuid:torn-by-a-cra')  # died mid-write

    second = FeedServer(options)
    second.start()
    try:
        assert second.registry.entry_count("news") == 3 + 2
        again = fetch(
            base(second) + "/feeds/news.rss",
            validators=held.validators,
            timeout=5,
            max_bytes=1 << 20,
        )
        assert again.status == 304, "same entries, same bytes, same ETag"
        publish(second, "After restart")
    finally:
        second.close()

    third = FeedServer(options)
    try:
        guids = [entry.guid for entry in third.registry.entries("news")]
    finally:
        third.close()
    assert guids[3:5] == [p["guid"] for p in published]
    assert len(guids) == 6, "the torn line was skipped, later entries kept"


def test_an_unusable_journal_leaves_the_server_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    feed_server = FeedServer(
        ServerOptions(host="127.0.0.1", port=0, journal=blocker / "j.jsonl", admin_token=TOKEN)
    )
    feed_server.start()
    try:
        assert feed_server.journal is None
        assert publish(feed_server, "In memory")["title"] == "In memory"
    finally:
        feed_server.close()
