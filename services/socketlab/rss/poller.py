"""``socketlab rss-poller``: poll feeds and print each new entry once.

Foundation version: fetch with a timeout and a size cap, parse with
feedparser, print entries not seen before in this process. Persistent state,
conditional GET and per-feed backoff replace this.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import urllib.request

import feedparser

from socketlab.config import FEED_HTTP_PORT, SERVER_HOST, env_float, env_str

log = logging.getLogger("socketlab.rss")

MAX_FEED_BYTES = 5 * 1024 * 1024
DEFAULT_FEED = f"http://{SERVER_HOST}:{FEED_HTTP_PORT}/feeds/news.rss"


def fetch(url: str, *, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - feed URLs
        body: bytes = response.read(MAX_FEED_BYTES + 1)
    if len(body) > MAX_FEED_BYTES:
        raise OSError(f"feed larger than {MAX_FEED_BYTES} bytes")
    return body


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="socketlab rss-poller")
    parser.add_argument("feeds", nargs="*", default=[env_str("SOCKETLAB_FEED_URL", DEFAULT_FEED)])
    parser.add_argument(
        "--interval", type=float, default=env_float("SOCKETLAB_POLL_INTERVAL", 30.0)
    )
    parser.add_argument("--timeout", type=float, default=env_float("SOCKETLAB_FETCH_TIMEOUT", 10.0))
    parser.add_argument("--once", action="store_true", help="poll every feed once and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    seen: set[str] = set()
    wakeup = threading.Event()
    while True:
        for url in args.feeds:
            try:
                parsed = feedparser.parse(fetch(url, timeout=args.timeout))
            except OSError as exc:
                log.warning("event=fetch_failed feed=%s error=%s", url, exc)
                continue
            for entry in reversed(parsed.entries):
                key = entry.get("id") or entry.get("link") or entry.get("title", "")
                if key in seen:
                    continue
                seen.add(key)
                print(f"{entry.get('title', '(untitled)')} | {entry.get('link', '')}", flush=True)
        if args.once:
            return 0
        wakeup.wait(args.interval)
