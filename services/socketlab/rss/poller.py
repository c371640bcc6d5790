"""``socketlab rss-poller``: poll feeds and print each new entry exactly once.

Each feed has its own thread, so a slow or failing feed (timeouts, backoff)
never delays the others. A poll is: conditional GET with a deadline and a size
cap (:mod:`~socketlab.rss.fetch`), neutralise and parse
(:mod:`~socketlab.rss.entries`), then for each entry not seen before: claim it
in SQLite, print it, append it as a JSON line to the output file, confirm it
(:mod:`~socketlab.rss.state`). Per-feed state is written to ``status.json``
next to the database after every poll, for tests and ``lab``. What is printed
came from the network: every field goes through
:func:`socketlab.terminal.neutralize`, so a title cannot clear the screen or
forge a line. ``--once`` exits 1 naming each feed whose poll failed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from socketlab.commandline import add_setting, command_parser
from socketlab.config import FEED_HTTP_PORT, SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.credentials import ADMIN_TOKEN_FILE, read_token
from socketlab.errors import ConfigError
from socketlab.rss.entries import Item, ParsedFeed, display_text, parse_feed
from socketlab.rss.errors import (
    FetchError,
    HttpStatusError,
    PollFailed,
    RssError,
    StateError,
    UnsafeFeed,
)
from socketlab.rss.fetch import fetch, origin
from socketlab.rss.state import StateStore
from socketlab.supervisor import HeartbeatConfig, run_components
from socketlab.terminal import neutralize

log = logging.getLogger("socketlab.rss")

DEFAULT_FEED = f"http://{SERVER_HOST}:{FEED_HTTP_PORT}/feeds/news.rss"
DEFAULT_DIR = "/var/lib/socketlab/rss"
MAX_FEED_BYTES = 5 * 1024 * 1024
STOP_GRACE = 2.0


@env_config
@dataclass(frozen=True, kw_only=True)
class PollerConfig(EnvConfig):
    """Settings of ``socketlab rss-poller`` (the options override them)."""

    feed_urls: tuple[str, ...] = env_field(
        "SOCKETLAB_FEED_URLS", (), "feeds the RSS poller polls, comma-separated"
    )
    feed_url: str = env_field(
        "SOCKETLAB_FEED_URL", DEFAULT_FEED, "the one feed polled when SOCKETLAB_FEED_URLS is unset"
    )
    interval: float = env_field(
        "SOCKETLAB_POLL_INTERVAL", 30.0, "seconds between two polls of one feed"
    )
    timeout: float = env_field(
        "SOCKETLAB_FETCH_TIMEOUT", 10.0, "deadline of one whole feed fetch, seconds"
    )
    max_bytes: int = env_field(
        "SOCKETLAB_FEED_MAX_BYTES", MAX_FEED_BYTES, "size cap of a feed body after decompression"
    )
    backoff_max: float = env_field(
        "SOCKETLAB_POLL_BACKOFF_MAX", 300.0, "longest wait after repeated failures of one feed"
    )
    directory: Path = env_field(
        "SOCKETLAB_RSS_DIR",
        Path(DEFAULT_DIR),
        "the poller's state directory: state.sqlite3, status.json, entries.jsonl",
    )
    admin_token_file: Path = env_field(
        "SOCKETLAB_ADMIN_TOKEN_FILE",
        Path(ADMIN_TOKEN_FILE),
        "file holding the lab's admin token (feed admin and faults, UDP reset); "
        "absent: those requests are refused",
    )
    token_origin: str = env_field(
        "SOCKETLAB_FEED_TOKEN_ORIGIN",
        f"http://{SERVER_HOST}:{FEED_HTTP_PORT}",
        "the one origin a poller holding the admin token sends it to (the lab's fault feeds)",
    )

    def feeds(self) -> list[str]:
        """``SOCKETLAB_FEED_URLS``, else ``SOCKETLAB_FEED_URL``."""
        return list(self.feed_urls) or [u.strip() for u in self.feed_url.split(",") if u.strip()]


@dataclass(frozen=True)
class PollerOptions:
    """Everything a poller run needs besides its feed list."""

    interval: float = 30.0
    timeout: float = 10.0
    max_bytes: int = MAX_FEED_BYTES
    backoff_max: float = 300.0
    output: Path = Path(DEFAULT_DIR) / "entries.jsonl"
    state: Path = Path(DEFAULT_DIR) / "state.sqlite3"
    status: Path = Path(DEFAULT_DIR) / "status.json"
    stop_grace: float = STOP_GRACE  # how long a stop waits for fetches in flight
    admin_token: str | None = None  # sent (as a bearer token) to token_origin only
    token_origin: str | None = None


def backoff_delay(failures: int, *, interval: float, cap: float) -> float:
    """Seconds until the next poll after ``failures`` consecutive failures (pure).

    No failure: the interval. Then the interval doubled per failure, capped at
    ``cap`` (but never below the interval itself).
    """
    if failures <= 0:
        return interval
    delay: float = interval * 2.0 ** min(failures, 32)
    return min(max(cap, interval), delay)


@dataclass
class FeedStatus:
    """What the poller knows about one feed; serialised into status.json."""

    url: str
    state: str = "pending"  # pending | ok | degraded | failing
    polls: int = 0
    fetched: int = 0
    not_modified: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    new_entries: int = 0
    entries_in_feed: int = 0
    last_status: int | None = None
    last_error: str | None = None
    bozo_reason: str | None = None
    encoding_override: str | None = None  # feedparser read it in another encoding than declared
    degraded_entries: int = 0  # entries of the last document that carried forbidden controls
    removed: list[str] = field(default_factory=list)
    last_poll_at: str | None = None
    last_success_at: str | None = None
    next_poll_at: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def entry_line(record: dict[str, Any]) -> str:
    """The one line printed for an entry: ``title | link | summary``, every part neutralised."""
    title = neutralize(record["title"]) or "(untitled)"
    link = neutralize(record["link"]) or "-"
    summary = neutralize(display_text(record["summary"])) or "-"
    return f"{title} | {link} | {summary}"


class Sink:
    """Prints new entries and appends them to the output file, each exactly once."""

    def __init__(self, output: Path, store: StateStore, *, stdout: TextIO | None = None) -> None:
        self._store = store
        self._stdout = stdout if stdout is not None else sys.stdout
        self._lock = threading.Lock()
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self._file = output.open("a+b")
            # A crash mid-write leaves a partial last line; never glue the next one to it.
            self._file.seek(0, os.SEEK_END)
            if self._file.tell() > 0:
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        except OSError as exc:
            raise StateError(f"cannot open output file {output}: {exc}") from exc
        self.output = output
        self._torn = False

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _write(self, record: dict[str, Any], line: str) -> None:
        """Append ``line`` durably (OSError if that fails), then print the entry."""
        # After a failed write the file may end in a torn line: start a fresh one.
        prefix = b"\n" if self._torn else b""
        self._torn = True
        self._file.write(prefix + line.encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._torn = False
        try:
            print(entry_line(record), file=self._stdout, flush=True)
        except OSError as exc:
            # The file is the record of what was delivered; a closed stdout
            # must not make the entry count as unwritten and come back later.
            log.warning("event=print_failed key=%s error=%s", record.get("key"), exc)

    def emit(self, feed: str, items: Sequence[Item]) -> int:
        """Print and record the items not seen before; return how many were new."""
        new = 0
        with self._lock:
            for item in items:
                record = {"feed": feed, **asdict(item), "seen_at": _now().isoformat()}
                line = json.dumps(record, ensure_ascii=False, sort_keys=True)
                if not self._store.claim(feed, item.key, line):
                    continue
                try:
                    self._write(record, line)
                except OSError as exc:
                    # Disk full, volume gone: retry this entry on the next poll
                    # instead of leaving a claim that only a restart would finish.
                    self._store.unclaim(feed, item.key)
                    raise StateError(f"cannot write {self.output}: {exc}") from exc
                self._store.mark_done(feed, item.key)
                new += 1
        return new

    def recover(self) -> int:
        """Finish entries claimed before a crash: re-emit only those not in the file."""
        pending = self._store.pending()
        if not pending:
            return 0
        written: set[tuple[str, str]] = set()
        with self.output.open("rb") as existing:
            for raw in existing:
                try:
                    record = json.loads(raw)
                    written.add((record["feed"], record["key"]))
                except (ValueError, KeyError, TypeError):
                    continue  # the partial line of the crash
        emitted = 0
        with self._lock:
            for entry in pending:
                if (entry.feed, entry.key) not in written:
                    try:
                        self._write(json.loads(entry.record), entry.record)
                    except OSError as exc:
                        raise StateError(f"cannot write {self.output}: {exc}") from exc
                    emitted += 1
                self._store.mark_done(entry.feed, entry.key)
        log.info("event=recovered pending=%d reemitted=%d", len(pending), emitted)
        return emitted


class Poller:
    """Polls a set of feeds, one thread each, until ``stop`` is set."""

    def __init__(
        self, feeds: Sequence[str], options: PollerOptions, *, stdout: TextIO | None = None
    ):
        self.feeds = list(dict.fromkeys(feeds))
        self.options = options
        self.store = StateStore(options.state)
        self.sink = Sink(options.output, self.store, stdout=stdout)
        self.status = {url: FeedStatus(url) for url in self.feeds}
        self._status_lock = threading.Lock()

    def close(self) -> None:
        self.sink.close()
        self.store.close()

    def _write_status(self, *, running: bool = True) -> None:
        with self._status_lock:
            document = {
                "updated_at": _now().isoformat(),
                "running": running,
                "pid": os.getpid(),
                "interval": self.options.interval,
                "feeds": {url: asdict(status) for url, status in self.status.items()},
            }
            path = self.options.status
            temporary = path.with_name(path.name + ".tmp")
            try:
                temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
                temporary.replace(path)  # readers never see half a file
            except OSError as exc:
                log.warning("event=status_write_failed path=%s error=%s", path, exc)

    def poll(self, url: str) -> bool:
        """Poll ``url`` once; True unless the fetch failed (then the caller backs off)."""
        status = self.status[url]
        status.polls += 1
        status.last_poll_at = _now().isoformat()
        started = time.monotonic()
        try:
            result = fetch(
                url,
                validators=self.store.validators(url),
                timeout=self.options.timeout,
                max_bytes=self.options.max_bytes,
                authorization=self._authorization(url),
            )
            status.last_status = result.status
            if result.status == 304:
                status.not_modified += 1
                self._succeeded(status)
                log.info("event=not_modified feed=%s", url)
                return True
            parsed = parse_feed(result.body, url=result.url, content_type=result.content_type)
            new = self.sink.emit(url, parsed.items)
        except (FetchError, UnsafeFeed, StateError) as exc:
            if isinstance(exc, HttpStatusError):
                status.last_status = exc.status
            self._failed(status, exc)
            return False
        self.store.save_validators(url, result.validators)
        status.fetched += 1
        status.new_entries += new
        self._succeeded(status, parsed)
        log.info(
            "event=polled feed=%s status=200 entries=%d new=%d bozo=%s ms=%d",
            url,
            len(parsed.items),
            new,
            parsed.bozo,
            (time.monotonic() - started) * 1000,
        )
        return True

    def _authorization(self, url: str) -> str | None:
        token, home = self.options.admin_token, self.options.token_origin
        if token and home and origin(url) == origin(home):
            return f"Bearer {token}"
        return None

    def _succeeded(self, status: FeedStatus, parsed: ParsedFeed | None = None) -> None:
        status.consecutive_failures = 0
        status.last_error = None
        status.last_success_at = _now().isoformat()
        if parsed is None:  # 304: the version we hold is still current
            if status.state in {"pending", "failing"}:
                status.state = "ok"
            return
        status.entries_in_feed = len(parsed.items)
        status.encoding_override = parsed.encoding_override
        status.degraded_entries = parsed.degraded_entries
        status.removed = list(parsed.removed)
        status.bozo_reason = parsed.bozo_reason if parsed.bozo else None
        degraded = parsed.bozo or bool(parsed.removed)
        if degraded and status.state != "degraded":
            log.warning(
                "event=degraded feed=%s reason=%r removed=%s",
                status.url,
                parsed.bozo_reason,
                ",".join(parsed.removed) or "-",
            )
        status.state = "degraded" if degraded else "ok"

    def _failed(self, status: FeedStatus, exc: RssError) -> None:
        status.failures += 1
        status.consecutive_failures += 1
        status.last_error = f"{type(exc).__name__}: {exc}"
        status.state = "failing"
        log.warning(
            "event=poll_failed feed=%s error=%r consecutive=%d",
            status.url,
            status.last_error,
            status.consecutive_failures,
        )

    def _poll_guarded(self, url: str) -> None:
        try:
            self.poll(url)
        except Exception as exc:
            # A bug or an unexpected library error must not end this feed's thread.
            log.exception("event=poll_crashed feed=%s", url)
            self._failed(self.status[url], RssError(repr(exc)))

    def _run_feed(self, url: str, stop: threading.Event) -> None:
        status = self.status[url]
        while not stop.is_set():
            started = time.monotonic()
            self._poll_guarded(url)
            delay = backoff_delay(
                status.consecutive_failures,
                interval=self.options.interval,
                cap=self.options.backoff_max,
            )
            status.next_poll_at = (_now() + timedelta(seconds=delay)).isoformat()
            self._write_status()
            # Interval counts from the start of this poll, so polls stay on schedule.
            stop.wait(max(0.0, started + delay - time.monotonic()))

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Poll every feed concurrently until ``stop`` is set (or one round if ``once``)."""
        self.sink.recover()
        self._write_status()
        log.info(
            "event=polling feeds=%s interval=%g timeout=%g",
            ",".join(self.feeds),
            self.options.interval,
            self.options.timeout,
        )
        if once:
            threads = [
                threading.Thread(target=self._poll_guarded, args=(url,), daemon=True)
                for url in self.feeds
            ]
        else:
            threads = [
                threading.Thread(target=self._run_feed, args=(url, stop), daemon=True)
                for url in self.feeds
            ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads) and not stop.wait(0.2):
            pass
        # A thread inside a fetch notices stop only when the fetch ends; do not let
        # it hold up shutdown. Half-emitted entries are finished by recover().
        deadline = time.monotonic() + self.options.stop_grace
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._write_status(running=False)


def feed_list(args: Sequence[str], config: PollerConfig | None = None) -> list[str]:
    """Feeds from arguments, else ``SOCKETLAB_FEED_URLS`` (comma-separated), else the lab feed."""
    if args:
        return list(args)
    return (config or PollerConfig()).feeds()


def show_status(path: Path) -> int:
    """Print one line per feed from a status file; 0 while that poller runs, else 1."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"rss-poller: no status at {path}: {exc}", file=sys.stderr)
        return 1
    print(f"{'STATE':<9} {'POLLS':>6} {'NEW':>5} {'304':>5} {'FAILS':>5}  FEED")
    for url, feed in sorted(document.get("feeds", {}).items()):
        problem = neutralize(feed.get("last_error") or feed.get("bozo_reason") or "")
        print(
            f"{feed['state']:<9} {feed['polls']:>6} {feed['new_entries']:>5} "
            f"{feed['not_modified']:>5} {feed['failures']:>5}  {neutralize(url)}"
            + (f"  ({problem})" if problem else "")
        )
    print(f"updated {document.get('updated_at')}, running={document.get('running')}")
    return 0 if document.get("running") else 1


def main(argv: list[str]) -> int:
    config = PollerConfig.from_env()
    parser = command_parser(
        "rss-poller", "Poll feeds and print each new entry exactly once, across restarts."
    )
    parser.add_argument("feeds", nargs="*", help="feed URLs (default: $SOCKETLAB_FEED_URLS)")
    add_setting(parser, "--interval", config=config, name="interval")
    add_setting(parser, "--timeout", config=config, name="timeout")
    add_setting(parser, "--max-bytes", config=config, name="max_bytes")
    add_setting(parser, "--backoff-max", config=config, name="backoff_max")
    add_setting(parser, "--dir", config=config, name="directory", dest="dir")
    parser.add_argument("--output", type=Path, help="JSON-lines output (default DIR/entries.jsonl)")
    parser.add_argument("--once", action="store_true", help="poll every feed once and exit")
    parser.add_argument("--run-for", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--status", action="store_true", help="print DIR/status.json as a table and exit"
    )
    args = parser.parse_args(argv)
    if args.status:
        return show_status(args.dir / "status.json")
    if args.interval <= 0 or args.timeout <= 0 or args.max_bytes <= 0:
        raise ConfigError("--interval, --timeout and --max-bytes must be positive")
    options = PollerOptions(
        interval=args.interval,
        timeout=args.timeout,
        max_bytes=args.max_bytes,
        backoff_max=args.backoff_max,
        output=args.output or args.dir / "entries.jsonl",
        state=args.dir / "state.sqlite3",
        status=args.dir / "status.json",
        admin_token=read_token(config.admin_token_file),
        token_origin=config.token_origin,
    )
    poller = Poller(feed_list(args.feeds, config), options)
    try:
        stopped = run_components(
            {"poller": lambda stop: poller.run(stop, once=args.once)},
            run_for=args.run_for,
            heartbeat=None if args.once else HeartbeatConfig.from_env().heartbeat(),
        )
    finally:
        poller.close()
    stopped.raise_for_failures()
    if args.once:
        raise_for_failed_polls(poller.status.values())
    return 0


def raise_for_failed_polls(statuses: Iterable[FeedStatus]) -> None:
    """Raise :class:`PollFailed` naming every feed whose last poll did not succeed."""
    failed = [
        f"{status.url}: {status.last_error or 'not polled'}"
        for status in statuses
        if status.state in {"failing", "pending"}
    ]
    if failed:
        raise PollFailed("poll failed: " + "; ".join(failed))
