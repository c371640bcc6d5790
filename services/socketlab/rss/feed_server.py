"""HTTP feed server on 8080 (a component of the ``server`` container).

Routes::

    GET  /feeds/NAME.rss | /feeds/NAME.atom   growing feed (ETag, Last-Modified, 304)
    GET  /feeds/NAME/entries/SLUG             an entry's page (its <link>)
    GET  /faults/KIND.rss                     slow, drip, huge, malformed, error,   [token]
                                              billion-laughs, xxe (?path=FILE)
    GET  /stats                               per-path requests, 200s, 304s, bytes (JSON)
    GET  /health                              liveness
    POST /admin/feeds/NAME/entries            publish {"title": ..., "summary": ...} [token]
    POST /admin/feeds/NAME/schedule           {"every": SECONDS} (0 stops)         [token]

Routes marked ``[token]`` need ``Authorization: Bearer TOKEN``, the lab's admin
token (:mod:`socketlab.credentials`); without it they answer 401, and with no
token configured at all they are refused to everyone. Reads stay open.

Quotas: ``max_feeds`` feeds per lab and ``max_entries`` entries per feed (429
past them), a schedule no faster than ``min_schedule`` seconds (400), at most
``fault_concurrency`` slow, drip or huge feeds served at once (503), ``slow``/``drip`` no
longer than ``fault_max_seconds`` and ``huge`` no larger than ``huge_bytes``.
A fault stops working as soon as its client disconnects. The HTTP front end
is a :class:`~socketlab.bounded_http.BoundedHttpServer`: whole-request
deadlines, a header size cap, a fixed worker pool, backlog 128. ``/stats``
counts each known route under its own key and everything else (unknown paths,
missing feeds) under ``(unknown)``, so it cannot grow with what clients ask for.

Feeds live in memory (:class:`~socketlab.rss.feeds.FeedRegistry`); ``news`` is
seeded with a few entries so the default poller has something at start.
Published entries are also journalled to ``/var/lib/socketlab/feeds/entries.jsonl``
(``SOCKETLAB_FEED_JOURNAL``, ``none`` to disable), so a restarted server serves
the same feeds, byte for byte, and pollers holding its ETag keep getting 304s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape

from socketlab.bounded_http import (
    BoundedHttpServer,
    BoundedRequestHandler,
    HttpLimits,
    wait_unless_gone,
)
from socketlab.config import FEED_HTTP_PORT, SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.credentials import ADMIN_TOKEN_FILE, is_authorized, read_token
from socketlab.rss import faults
from socketlab.rss.feeds import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FEEDS,
    Entry,
    FeedRegistry,
    QuotaExceeded,
    entry_from_json,
    entry_to_json,
    http_date,
    is_not_modified,
    valid_feed_name,
)

log = logging.getLogger("socketlab.feeds")

MAX_REQUEST_BODY = 64 * 1024
DEFAULT_JOURNAL = "/var/lib/socketlab/feeds/entries.jsonl"
_FEED_PATH = re.compile(r"^/feeds/([^/]+)\.(rss|atom)$")
_ENTRY_PATH = re.compile(r"^/feeds/([^/]+)/entries/([0-9a-z-]+)$")
_FAULT_PATH = re.compile(r"^/faults/([a-z-]+)\.rss$")
_ADMIN_PATH = re.compile(r"^/admin/feeds/([^/]+)/(entries|schedule)$")
UNKNOWN_ROUTE: Final = "(unknown)"
OTHER_ROUTES: Final = "(other)"
MAX_STATS_KEYS: Final = 256
DEFAULT_HUGE_BYTES: Final = 64 * 1024 * 1024
MAX_HUGE_BYTES: Final = 1 << 30
# Faults that hold a worker for long (the others are small documents): at most
# fault_concurrency of them at once.
LASTING_FAULTS: Final = frozenset({"slow", "drip", "huge"})


@dataclass(frozen=True)
class ServerOptions:
    """What a :class:`FeedServer` runs with (from :class:`FeedServerConfig` in the container)."""

    host: str = "0.0.0.0"
    port: int = FEED_HTTP_PORT
    base_url: str = f"http://{SERVER_HOST}:{FEED_HTTP_PORT}"
    window: int = 50  # newest entries listed in a feed document
    seed_entries: int = 3
    request_timeout: float = 10.0
    slow_seconds: float = 30.0
    drip_every: float = 0.5
    huge_bytes: int = DEFAULT_HUGE_BYTES
    schedule_every: float = 0.0  # publish to "news" every N seconds; 0 = never
    journal: Path | None = None  # published entries survive restarts when set
    admin_token: str | None = None  # None: every admin and fault request is refused
    max_feeds: int = DEFAULT_MAX_FEEDS
    max_entries: int = DEFAULT_MAX_ENTRIES
    min_schedule: float = 0.1
    fault_max_seconds: float = 120.0
    fault_concurrency: int = 4
    workers: int = 16

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            workers=self.workers + self.fault_concurrency,
            head_timeout=self.request_timeout,
            body_timeout=self.request_timeout,
            io_timeout=self.request_timeout,
        )


@env_config
@dataclass(frozen=True, kw_only=True)
class FeedServerConfig(EnvConfig):
    """The feed server's settings (``SOCKETLAB_FEED_*``); :meth:`options` resolves them."""

    port: int = env_field("SOCKETLAB_FEED_PORT", FEED_HTTP_PORT, "HTTP port of the feed server")
    base_url: str = env_field(
        "SOCKETLAB_FEED_BASE_URL",
        "",
        f"base URL in the feeds' links (unset: http://{SERVER_HOST}:PORT)",
    )
    journal: str = env_field(
        "SOCKETLAB_FEED_JOURNAL",
        DEFAULT_JOURNAL,
        "where published entries are journalled across restarts; none disables it",
    )
    window: int = env_field("SOCKETLAB_FEED_WINDOW", 50, "newest entries listed in a feed")
    seed_entries: int = env_field("SOCKETLAB_FEED_ENTRIES", 3, "entries the news feed starts with")
    request_timeout: float = env_field(
        "SOCKETLAB_FEED_TIMEOUT",
        10.0,
        "seconds a feed server request may take to arrive (head, and body), and per send",
    )
    slow_seconds: float = env_field(
        "SOCKETLAB_FEED_SLOW_SECONDS", 30.0, "how long /faults/slow.rss stalls, seconds"
    )
    drip_every: float = env_field(
        "SOCKETLAB_FEED_DRIP_EVERY", 0.5, "seconds between the bytes of /faults/drip.rss"
    )
    huge_bytes: int = env_field(
        "SOCKETLAB_FEED_HUGE_BYTES",
        DEFAULT_HUGE_BYTES,
        f"size of /faults/huge.rss in bytes (at most {MAX_HUGE_BYTES})",
    )
    schedule_every: float = env_field(
        "SOCKETLAB_FEED_SCHEDULE", 0.0, "publish to news every N seconds (0: never)"
    )
    admin_token_file: Path = env_field(
        "SOCKETLAB_ADMIN_TOKEN_FILE",
        Path(ADMIN_TOKEN_FILE),
        "file holding the lab's admin token (feed admin and faults, UDP reset); "
        "absent: those requests are refused",
    )
    max_feeds: int = env_field("SOCKETLAB_FEED_MAX_FEEDS", DEFAULT_MAX_FEEDS, "feeds per lab")
    max_entries: int = env_field(
        "SOCKETLAB_FEED_MAX_ENTRIES", DEFAULT_MAX_ENTRIES, "entries one feed may be given"
    )
    min_schedule: float = env_field(
        "SOCKETLAB_FEED_MIN_SCHEDULE", 0.1, "shortest schedule interval accepted, seconds"
    )
    fault_max_seconds: float = env_field(
        "SOCKETLAB_FEED_FAULT_MAX_SECONDS",
        120.0,
        "longest /faults/slow.rss stall and /faults/drip.rss delivery, seconds",
    )
    fault_concurrency: int = env_field(
        "SOCKETLAB_FEED_FAULT_CONCURRENCY",
        4,
        "slow, drip and huge fault feeds served at once (503 beyond)",
    )
    workers: int = env_field(
        "SOCKETLAB_FEED_WORKERS", 16, "feed server requests handled at once (besides faults)"
    )

    def __post_init__(self) -> None:
        if not 0 < self.huge_bytes <= MAX_HUGE_BYTES:
            raise ValueError(f"SOCKETLAB_FEED_HUGE_BYTES must be 1..{MAX_HUGE_BYTES}")
        if min(self.max_feeds, self.max_entries, self.fault_concurrency, self.workers) < 1:
            raise ValueError("feed quotas and worker counts must be positive")

    def options(self) -> ServerOptions:
        """Resolved options; reads the admin token file (once, at the entry point)."""
        return ServerOptions(
            port=self.port,
            base_url=self.base_url or f"http://{SERVER_HOST}:{self.port}",
            window=self.window,
            seed_entries=self.seed_entries,
            request_timeout=self.request_timeout,
            slow_seconds=self.slow_seconds,
            drip_every=self.drip_every,
            huge_bytes=self.huge_bytes,
            schedule_every=self.schedule_every,
            journal=None if self.journal == "none" else Path(self.journal),
            admin_token=read_token(self.admin_token_file),
            max_feeds=self.max_feeds,
            max_entries=self.max_entries,
            min_schedule=self.min_schedule,
            fault_max_seconds=self.fault_max_seconds,
            fault_concurrency=self.fault_concurrency,
            workers=self.workers,
        )


@dataclass
class PathCounters:
    requests: int = 0
    ok: int = 0
    not_modified: int = 0
    errors: int = 0
    bytes_sent: int = 0


class FeedJournal:
    """Published entries as JSON lines, so a restarted server serves the same feeds.

    Append-only and fsynced per entry; a torn last line (crash mid-write) is
    skipped on load.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a+b")
        self._file.seek(0, os.SEEK_END)
        # After a write that failed part-way, start the next entry on a fresh line.
        self._torn = self._file.tell() > 0 and self._last_byte() != b"\n"

    def _last_byte(self) -> bytes:
        self._file.seek(-1, os.SEEK_END)
        return self._file.read(1)

    def load(self) -> list[tuple[str, Entry]]:
        restored = []
        self._file.seek(0)
        for number, raw in enumerate(self._file, start=1):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                restored.append(entry_from_json(line))
            except ValueError as exc:
                log.warning(
                    "event=journal_line_skipped path=%s line=%d error=%s", self.path, number, exc
                )
        return restored

    def append(self, name: str, entry: Entry) -> None:
        prefix = b"\n" if self._torn else b""
        self._torn = True
        self._file.write(prefix + entry_to_json(name, entry).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._torn = False

    def close(self) -> None:
        self._file.close()


class ServerStats:
    """Per-route counters; tests read them at ``/stats`` to see the 304 path.

    At most ``max_keys`` keys: routes past that are counted under ``(other)``.
    """

    def __init__(self, *, max_keys: int = MAX_STATS_KEYS) -> None:
        self._lock = threading.Lock()
        self._paths: dict[str, PathCounters] = {}
        self._max_keys = max_keys

    def count(self, path: str, *, status: int, body_bytes: int) -> None:
        with self._lock:
            if path not in self._paths and len(self._paths) >= self._max_keys:
                path = OTHER_ROUTES
            counters = self._paths.setdefault(path, PathCounters())
            counters.requests += 1
            counters.bytes_sent += body_bytes
            if status == 304:
                counters.not_modified += 1
            elif 200 <= status < 300:
                counters.ok += 1
            else:
                counters.errors += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {path: asdict(counters) for path, counters in sorted(self._paths.items())}


class Scheduler:
    """Publishes one entry every N seconds to a feed, one thread per scheduled feed."""

    def __init__(self, registry: FeedRegistry, stop: threading.Event) -> None:
        self._registry = registry
        self._stop = stop
        self._lock = threading.Lock()
        self._cancels: dict[str, threading.Event] = {}

    def set(self, name: str, every: float) -> None:
        with self._lock:
            previous = self._cancels.pop(name, None)
            if previous is not None:
                previous.set()
            if every <= 0:
                return
            cancel = threading.Event()
            self._cancels[name] = cancel
        thread = threading.Thread(
            target=self._loop, args=(name, every, cancel), name=f"schedule-{name}", daemon=True
        )
        thread.start()
        log.info("event=scheduled feed=%s every=%g", name, every)

    def _loop(self, name: str, every: float, cancel: threading.Event) -> None:
        number = 0
        while not cancel.wait(every) and not self._stop.is_set():
            number += 1
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            try:
                self._registry.publish(
                    name,
                    title=f"Scheduled bulletin {number} ({stamp})",
                    summary=f"Published automatically every {every:g} s.",
                )
            except QuotaExceeded as exc:
                log.warning("event=schedule_stopped feed=%s reason=%r", name, str(exc))
                return

    def stop_all(self) -> None:
        with self._lock:
            for cancel in self._cancels.values():
                cancel.set()
            self._cancels.clear()


class _BadRequest(Exception):
    """A request we answer with 400 and this message."""


class _ClientGone(Exception):
    """The client closed the connection while we were still sending."""


class _Refused(Exception):
    """A request answered with ``status`` and this message (401, 429, 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FeedServer:
    """The feed HTTP server: ``start()`` it, read ``port``, ``close()`` it."""

    def __init__(self, options: ServerOptions, *, registry: FeedRegistry | None = None) -> None:
        self.options = options
        self.registry = registry or FeedRegistry(
            base_url=options.base_url,
            window=options.window,
            seed_entries=options.seed_entries,
            max_feeds=options.max_feeds,
            max_entries=options.max_entries,
        )
        self.journal = self._open_journal(options.journal)
        self.stats = ServerStats()
        self.stopping = threading.Event()
        self.scheduler = Scheduler(self.registry, self.stopping)
        self.fault_slots = threading.BoundedSemaphore(options.fault_concurrency)
        self._httpd = BoundedHttpServer(
            (options.host, options.port),
            self._handler_class(),
            limits=options.http_limits(),
            name="feeds",
        )
        self.port: int = self._httpd.port
        self._started = False

    def _open_journal(self, path: Path | None) -> FeedJournal | None:
        if path is None:
            return None
        try:
            journal = FeedJournal(path)
            restored = journal.load()
        except OSError as exc:
            # A read-only or missing volume: still serve, from memory only.
            log.warning("event=journal_unavailable path=%s error=%s", path, exc)
            return None
        for name, entry in restored:
            try:
                self.registry.restore(name, entry)
            except ValueError as exc:
                log.warning("event=journal_entry_skipped feed=%s error=%s", name, exc)
        self.registry.on_publish = journal.append
        log.info("event=journal_loaded path=%s entries=%d", path, len(restored))
        return journal

    def start(self) -> None:
        self._httpd.start()
        self._started = True
        if self.options.schedule_every > 0:
            self.scheduler.set("news", self.options.schedule_every)
        log.info(
            "event=listening service=feeds port=%d admin=%s",
            self.port,
            "token" if self.options.admin_token else "disabled",
        )

    def close(self) -> None:
        self.stopping.set()  # wakes stalled fault handlers
        self.scheduler.stop_all()
        self._httpd.close()
        if self.journal is not None:
            self.registry.on_publish = None
            self.journal.close()

    def _handler_class(self) -> type[BoundedRequestHandler]:
        server = self

        class Handler(_FeedHandler):
            feed_server = server

        return Handler


class _FeedHandler(BoundedRequestHandler):
    feed_server: FeedServer
    server_version = "socketlab-feeds/0.2"
    _sent: int = 0
    _status: int = 0
    _head: bool = False
    _route: str = UNKNOWN_ROUTE

    # -- plumbing -------------------------------------------------------------

    def _send_body(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304 and not self._head:
            self.wfile.write(body)
            self._sent = len(body)

    def _stream(self, status: int, chunks: Iterable[bytes], content_type: str) -> None:
        """Send a body of unknown length; the end is the connection closing."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        if self._head:
            return
        try:
            for chunk in chunks:
                if self.feed_server.stopping.is_set():
                    return
                self.wfile.write(chunk)
                self._sent += len(chunk)
        except OSError as exc:
            raise _ClientGone from exc

    def _json(self, status: int, document: object, *, auth: bool = False) -> None:
        body = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["WWW-Authenticate"] = 'Bearer realm="socketlab"'
        self._send_body(status, body, headers)

    def _require_token(self) -> None:
        """Refuse (401) unless the request carries the lab's admin token."""
        token = self.feed_server.options.admin_token
        if is_authorized(self.headers.get("Authorization"), token):
            return
        client = self.client_address[0] if self.client_address else "?"
        log.warning("event=unauthorized path=%s client=%s", self.path[:200], client)
        if token is None:
            raise _Refused(401, "admin requests are disabled: the server has no admin token")
        raise _Refused(401, "this request needs the lab's admin token (Authorization: Bearer)")

    def _text(self, status: int, text: str) -> None:
        self._send_body(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _dispatch(self, route: Any) -> None:
        url = urllib.parse.urlsplit(self.path)
        self._sent = 0
        self._status = 0
        self._route = UNKNOWN_ROUTE
        try:
            route(url.path, urllib.parse.parse_qs(url.query))
        except _Refused as exc:
            self._json(exc.status, {"error": str(exc)}, auth=exc.status == 401)
        except (_ClientGone, OSError) as exc:
            # Pollers give up on slow and huge feeds by closing (or stop reading and
            # our send times out): expected, not a crash.
            log.info("event=client_gone path=%s sent=%d error=%r", url.path, self._sent, exc)
        except Exception:
            # One broken request must not take the feed server down; answer 500 if we can.
            log.exception("event=handler_crashed path=%s", url.path)
            if not self._status:
                with contextlib.suppress(OSError):
                    self._text(500, "internal error\n")
        finally:
            if url.path not in {"/health", "/stats"}:
                self.feed_server.stats.count(
                    self._route, status=self._status, body_bytes=self._sent
                )

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._head = False
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._head = True
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._head = False
        self._dispatch(self._post)

    # -- routes ----------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        if path == "/health":
            self._text(200, "ok\n")
        elif path == "/stats":
            registry = self.feed_server.registry
            self._json(
                200,
                {
                    "paths": self.feed_server.stats.snapshot(),
                    "feeds": {name: registry.entry_count(name) for name in registry.names()},
                },
            )
        elif match := _FEED_PATH.match(path):
            self._feed(match.group(1), match.group(2))
        elif match := _ENTRY_PATH.match(path):
            self._entry_page(match.group(1), match.group(2))
        elif (match := _FAULT_PATH.match(path)) and match.group(1) in faults.FAULTS:
            self._require_token()
            self._route = path
            if match.group(1) in LASTING_FAULTS:
                self._guarded_fault(match.group(1), query)
            else:
                self._fault(match.group(1), query)
        elif match:
            self._require_token()
            self._text(404, f"no fault {match.group(1)!r}; known: {', '.join(faults.FAULTS)}\n")
        else:
            self._text(404, "not found\n")

    def _feed(self, name: str, fmt: str) -> None:
        rendered = self.feed_server.registry.render(name, "rss" if fmt == "rss" else "atom")
        if rendered is None:
            self._text(404, f"no feed {name!r}\n")
            return
        self._route = f"/feeds/{name}.{fmt}"
        headers = {
            "ETag": rendered.etag,
            "Last-Modified": http_date(rendered.last_modified),
            "Cache-Control": "no-cache",
        }
        not_modified = is_not_modified(
            etag=rendered.etag,
            last_modified=rendered.last_modified,
            if_none_match=self.headers.get("If-None-Match"),
            if_modified_since=self.headers.get("If-Modified-Since"),
        )
        if not_modified:
            self._send_body(304, b"", headers)
        else:
            self._send_body(200, rendered.body, {**headers, "Content-Type": rendered.content_type})

    def _entry_page(self, name: str, slug: str) -> None:
        entry = self.feed_server.registry.entry(name, slug)
        if entry is None:
            self._text(404, "no such entry\n")
            return
        self._route = f"/feeds/{name}/entries/*"
        page = (
            f"<!doctype html><title>{escape(entry.title)}</title>"
            f"<h1>{escape(entry.title)}</h1><p>{escape(entry.summary)}</p>"
            f"<p><small>{escape(entry.published.isoformat())}</small></p>\n"
        )
        self._send_body(200, page.encode(), {"Content-Type": "text/html; charset=utf-8"})

    def _guarded_fault(self, kind: str, query: dict[str, list[str]]) -> None:
        slots = self.feed_server.fault_slots
        if not slots.acquire(blocking=False):
            limit = self.feed_server.options.fault_concurrency
            raise _Refused(503, f"{limit} fault feeds are being served already; try later")
        try:
            self._fault(kind, query)
        finally:
            slots.release()

    def _still_there(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the client leaves or the server stops."""
        return wait_unless_gone(self.connection, seconds, stopping=self.feed_server.stopping.is_set)

    def _fault(self, kind: str, query: dict[str, list[str]]) -> None:
        options = self.feed_server.options
        rss = "application/rss+xml; charset=utf-8"
        longest = options.fault_max_seconds

        def number(name: str, default: float, upper: float) -> float:
            try:
                value = float(query.get(name, [default])[0])
            except ValueError:
                return min(upper, default)
            return min(upper, max(0.0, value)) if math.isfinite(value) else min(upper, default)

        if kind == "slow":
            # Nothing at all (not even headers) until the stall is over.
            if not self._still_there(number("seconds", options.slow_seconds, longest)):
                raise _ClientGone("left during the stall")
            self._send_body(200, faults.small_feed("slow"), {"Content-Type": rss})
        elif kind == "drip":
            body = faults.small_feed("drip")
            # The whole delivery stays within the longest a fault may take.
            every = number("every", options.drip_every, longest / max(1, len(body) - 1))
            self.send_response(200)
            self.send_header("Content-Type", rss)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

            def drops() -> Iterable[bytes]:
                for index in range(len(body)):
                    if index and not self._still_there(every):
                        return
                    yield body[index : index + 1]

            try:
                for drop in drops():
                    self.wfile.write(drop)
                    self.wfile.flush()
                    self._sent += 1
            except OSError as exc:
                raise _ClientGone from exc
        elif kind == "huge":
            self._stream(200, faults.huge_feed_chunks(limit=options.huge_bytes), rss)
        elif kind == "malformed":
            self._send_body(200, faults.malformed_feed(), {"Content-Type": rss})
        elif kind == "error":
            self._text(500, "simulated server error\n")
        elif kind == "billion-laughs":
            self._send_body(200, faults.billion_laughs_feed(), {"Content-Type": rss})
        elif kind == "xxe":
            target = query.get("path", ["/etc/passwd"])[0][:1024]
            self._send_body(200, faults.xxe_feed(target), {"Content-Type": rss})

    def _post(self, path: str, query: dict[str, list[str]]) -> None:
        del query
        match = _ADMIN_PATH.match(path)
        if match is None:
            self._text(404, "not found\n")
            return
        self._require_token()
        name, action = match.groups()
        if not valid_feed_name(name):
            self._json(400, {"error": f"invalid feed name {name!r}"})
            return
        self._route = f"/admin/feeds/*/{action}"
        try:
            document = self._read_json()
            if action == "schedule":
                self._schedule(name, document)
            else:
                self._publish(name, document)
        except _BadRequest as exc:
            self._json(400, {"error": str(exc)})

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_REQUEST_BODY:
            raise _BadRequest(f"need a JSON body of 1..{MAX_REQUEST_BODY} bytes")
        try:
            document = json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise _BadRequest("body is not JSON") from exc
        if not isinstance(document, dict):
            raise _BadRequest("body must be a JSON object")
        return document

    def _schedule(self, name: str, document: dict[str, Any]) -> None:
        every = document.get("every")
        shortest = self.feed_server.options.min_schedule
        if isinstance(every, bool) or not isinstance(every, int | float) or not every >= 0:
            raise _BadRequest('"every" must be a number of seconds >= 0')
        if 0 < every < shortest:
            raise _BadRequest(f'"every" must be 0 (stop) or at least {shortest:g} s')
        if every and name not in self.feed_server.registry.names():
            max_feeds = self.feed_server.options.max_feeds
            if len(self.feed_server.registry.names()) >= max_feeds:
                raise _Refused(429, f"the lab has its {max_feeds} feeds already")
        self.feed_server.scheduler.set(name, float(every))
        self._json(200, {"feed": name, "every": every})

    def _publish(self, name: str, document: dict[str, Any]) -> None:
        title, summary = document.get("title", ""), document.get("summary", "")
        if not isinstance(title, str) or not isinstance(summary, str):
            raise _BadRequest('"title" and "summary" must be strings')
        try:
            entry = self.feed_server.registry.publish(name, title=title, summary=summary)
        except QuotaExceeded as exc:
            raise _Refused(429, str(exc)) from exc
        except ValueError as exc:
            raise _BadRequest(str(exc)) from exc
        base = self.feed_server.registry.base_url
        log.info("event=published feed=%s guid=%s", name, entry.guid)
        self._json(
            201,
            {
                "feed": name,
                "guid": entry.guid,
                "link": f"{base}/feeds/{name}/entries/{entry.slug}",
                "title": entry.title,
                "summary": entry.summary,
                "published": entry.published.isoformat(),
            },
        )


def serve(stop: threading.Event, config: FeedServerConfig) -> None:
    """Run the feed server until ``stop`` is set (a ``server`` container component)."""
    server = FeedServer(config.options())
    server.start()
    try:
        stop.wait()
    finally:
        server.close()
