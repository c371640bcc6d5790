"""HTTP feed server on 8080 (runs inside the ``server`` container).

Foundation version: one RSS 2.0 feed at ``/feeds/news.rss`` with a few
generated entries. Growing feeds, caching headers and fault feeds replace this.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from socketlab.config import FEED_HTTP_PORT, env_float, env_int

log = logging.getLogger("socketlab.feeds")

START = datetime(2026, 1, 1, tzinfo=UTC)


def render_rss(count: int) -> bytes:
    items = []
    for number in range(count, 0, -1):
        published = format_datetime(START + timedelta(hours=number))
        items.append(
            "<item>"
            f"<title>Lab bulletin {number}</title>"
            f"<link>http://server:{FEED_HTTP_PORT}/news/{number}</link>"
            f'<guid isPermaLink="false">socketlab-news-{number}</guid>'
            f"<description>{escape(f'Bulletin number {number} from the socketlab server.')}</description>"
            f"<pubDate>{published}</pubDate>"
            "</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<rss version="2.0"><channel><title>socketlab news</title>'
        f"<link>http://server:{FEED_HTTP_PORT}/</link>"
        "<description>Entries published by the lab server</description>"
        f"{''.join(items)}</channel></rss>"
    ).encode()


def serve(stop: threading.Event) -> None:
    port = env_int("SOCKETLAB_FEED_PORT", FEED_HTTP_PORT)
    entries = env_int("SOCKETLAB_FEED_ENTRIES", 3)

    class Handler(BaseHTTPRequestHandler):
        timeout = env_float("SOCKETLAB_FEED_TIMEOUT", 10.0)

        def do_GET(self) -> None:
            if self.path == "/health":
                body, content_type = b"ok\n", "text/plain"
            elif self.path == "/feeds/news.rss":
                body, content_type = render_rss(entries), "application/rss+xml"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    httpd.daemon_threads = True
    log.info("event=listening service=feeds port=%d", port)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True
    )
    thread.start()
    stop.wait()
    httpd.shutdown()
    httpd.server_close()
