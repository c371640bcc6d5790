"""Fetch one feed over HTTP(S): conditional GET, a whole-fetch deadline, a size cap.

feedparser has no timeout and no size limit of its own, so the poller never
lets it fetch: this module gets the bytes with ``http.client`` and hands them
over. The deadline covers connect, headers and body together; a watchdog
shuts the socket down when it passes, so a server that trickles one byte at a
time cannot hold a fetch open forever (per-read socket timeouts alone would
never fire on it).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass

from socketlab.rss.errors import FeedTooLarge, FetchError, FetchTimeout, HttpStatusError

USER_AGENT = "socketlab-rss-poller/0.1 (+feedparser)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
MAX_REDIRECTS = 5
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Validators:
    """What the server said identifies the version we hold (for conditional GET)."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """``status`` is 200 (``body`` set) or 304 (``body`` empty)."""

    status: int
    body: bytes
    validators: Validators
    url: str  # after redirects: the base for relative links
    content_type: str | None


def conditional_headers(validators: Validators) -> dict[str, str]:
    """``If-None-Match`` / ``If-Modified-Since`` for the version we hold (pure)."""
    headers: dict[str, str] = {}
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


class _Watchdog:
    """Shuts a connection's socket down at the deadline, waking any blocked read."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                # Already closed means nothing is left to wake.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.fired:
            raise FetchTimeout("deadline passed")
        return left

    def cancel(self) -> None:
        self._timer.cancel()


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    # Only the network: a feed URL (or a redirect) naming file:// or ftp:// is refused.
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise FetchError(f"unsupported feed URL {url!r} (http and https only)")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    return conn_class(parts.hostname, parts.port, timeout=timeout), target


def _read_body(
    response: http.client.HTTPResponse,
    *,
    sock: socket.socket | None,
    max_bytes: int,
    watchdog: _Watchdog,
) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FeedTooLarge(f"declared length {declared} exceeds cap {max_bytes}")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in {"identity", "gzip", "x-gzip", "deflate"}:
        raise FetchError(f"unsupported Content-Encoding {encoding!r}")
    decompressor = None
    if encoding != "identity":
        # wbits 47 accepts gzip and zlib headers; a deflate bomb hits the cap below.
        decompressor = zlib.decompressobj(47 if encoding != "deflate" else 15)
    chunks: list[bytes] = []
    size = 0
    while True:
        if sock is not None:
            sock.settimeout(watchdog.remaining())
        # read1: return after one receive, so the deadline is checked between them.
        chunk = response.read1(READ_CHUNK)
        watchdog.remaining()
        if not chunk:
            break
        if decompressor is not None:
            chunk = decompressor.decompress(chunk, max_bytes + 1 - size)
        size += len(chunk)
        if size > max_bytes:
            raise FeedTooLarge(f"body passed the cap of {max_bytes} bytes")
        chunks.append(chunk)
    if decompressor is not None:
        tail = decompressor.flush()
        size += len(tail)
        if size > max_bytes:
            raise FeedTooLarge(f"body passed the cap of {max_bytes} bytes")
        chunks.append(tail)
    return b"".join(chunks)


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the default port spelled out), lowercase."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def fetch(
    url: str,
    *,
    validators: Validators,
    timeout: float,
    max_bytes: int,
    authorization: str | None = None,
) -> FetchResult:
    """GET ``url`` conditionally within ``timeout`` seconds overall; follows redirects.

    ``authorization`` (an ``Authorization`` header value) goes only to ``url``'s
    own origin, never to where a redirect points elsewhere. Returns a 200 or 304
    result; raises :class:`FetchError` subclasses otherwise.
    """
    home = origin(url)
    watchdog = _Watchdog(time.monotonic() + timeout)
    try:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            conn, target = _connection(current, watchdog.remaining())
            response: http.client.HTTPResponse | None = None
            try:
                headers = {
                    "User-Agent": USER_AGENT,
                    "Accept": ACCEPT,
                    "Accept-Encoding": "gzip",
                    "Connection": "close",
                    **conditional_headers(validators),
                }
                if authorization and origin(current) == home:
                    headers["Authorization"] = authorization
                conn.request("GET", target, headers=headers)
                # Keep the socket itself: getresponse() hands it to the response
                # and clears conn.sock when the server will close.
                sock = conn.sock
                watchdog.watch(sock)
                response = conn.getresponse()
                status = response.status
                if status in {301, 302, 303, 307, 308}:
                    location = response.getheader("Location")
                    if not location:
                        raise HttpStatusError(f"HTTP {status} without Location", status=status)
                    current = urllib.parse.urljoin(current, location)
                    continue
                got = Validators(
                    etag=response.getheader("ETag") or validators.etag,
                    last_modified=response.getheader("Last-Modified") or validators.last_modified,
                )
                if status == 304:
                    return FetchResult(304, b"", got, current, None)
                if status != 200:
                    raise HttpStatusError(f"HTTP {status} {response.reason}", status=status)
                body = _read_body(response, sock=sock, max_bytes=max_bytes, watchdog=watchdog)
                fresh = Validators(
                    etag=response.getheader("ETag"),
                    last_modified=response.getheader("Last-Modified"),
                )
                return FetchResult(200, body, fresh, current, response.getheader("Content-Type"))
            except (OSError, http.client.HTTPException) as exc:
                if watchdog.fired or isinstance(exc, TimeoutError):
                    raise FetchTimeout(f"no complete answer within {timeout:g} s") from exc
                raise FetchError(f"{type(exc).__name__}: {exc}") from exc
            finally:
                if response is not None:
                    response.close()  # it owns the socket once the server said "close"
                conn.close()
        raise HttpStatusError(f"more than {MAX_REDIRECTS} redirects", status=status)
    finally:
        watchdog.cancel()
