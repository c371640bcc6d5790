"""Feed server core, without I/O: growing feeds, RSS/Atom rendering, HTTP caching rules.

The HTTP front end (:mod:`socketlab.rss.feed_server`) holds a :class:`FeedRegistry`
and asks it for bodies and validators; everything here is testable without sockets.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

FeedFormat = Literal["rss", "atom"]

FEED_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SEED_START = datetime(2026, 1, 1, tzinfo=UTC)
MAX_TITLE = 500
MAX_SUMMARY = 20_000
DEFAULT_MAX_FEEDS = 32
DEFAULT_MAX_ENTRIES = 200


class QuotaExceeded(ValueError):
    """A publish that would pass the lab's number of feeds or a feed's number of entries."""


@dataclass(frozen=True)
class Entry:
    """One published item; ``guid`` is unique across server restarts."""

    guid: str
    slug: str
    title: str
    summary: str
    published: datetime


@dataclass(frozen=True)
class Rendered:
    """A feed representation with its validators."""

    body: bytes
    etag: str
    last_modified: datetime
    content_type: str


@dataclass
class Feed:
    """A feed whose entries only grow; ``version`` changes on every publish."""

    name: str
    title: str
    entries: list[Entry] = field(default_factory=list)
    updated: datetime = SEED_START
    version: int = 0


def entry_to_json(name: str, entry: Entry) -> str:
    """One journal line for ``entry`` of feed ``name``."""
    return json.dumps(
        {
            "feed": name,
            "guid": entry.guid,
            "slug": entry.slug,
            "title": entry.title,
            "summary": entry.summary,
            "published": entry.published.isoformat(),
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def entry_from_json(line: str) -> tuple[str, Entry]:
    """Parse a journal line; ValueError (incl. KeyError/TypeError as ValueError) if broken."""
    try:
        record = json.loads(line)
        published = datetime.fromisoformat(record["published"])
        entry = Entry(
            guid=str(record["guid"]),
            slug=str(record["slug"]),
            title=str(record["title"]),
            summary=str(record["summary"]),
            published=published if published.tzinfo else published.replace(tzinfo=UTC),
        )
        return str(record["feed"]), entry
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a journal line: {exc!r}") from exc


def valid_feed_name(name: str) -> bool:
    """Feed names become URL path segments: lowercase letters, digits, ``-`` and ``_``."""
    return bool(FEED_NAME.match(name))


def http_date(moment: datetime) -> str:
    """RFC 9110 IMF-fixdate for ``moment`` (seconds resolution)."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    """Parse an HTTP date; ``None`` for anything unparseable (the header is then ignored)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _etag_values(header: str) -> list[str]:
    """Split an If-None-Match list; entity tags may contain commas inside quotes."""
    return re.findall(r'(?:W/)?"[^"]*"|\*', header)


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def is_not_modified(
    *,
    etag: str,
    last_modified: datetime,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> bool:
    """Whether a GET/HEAD with these conditional headers gets ``304 Not Modified``.

    RFC 9110 §13.2.2: If-None-Match (weak comparison) decides when present and
    If-Modified-Since is then ignored; otherwise a valid If-Modified-Since that
    is not older than the resource's Last-Modified (seconds resolution) validates.
    """
    if if_none_match is not None and if_none_match.strip():
        tags = _etag_values(if_none_match)
        return "*" in tags or _opaque(etag) in {_opaque(tag) for tag in tags}
    if if_modified_since is None:
        return False
    since = parse_http_date(if_modified_since)
    if since is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def make_etag(body: bytes) -> str:
    """Strong entity tag derived from the exact bytes served."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def render_rss(feed: Feed, *, base_url: str, window: int) -> bytes:
    """RSS 2.0 document with the newest ``window`` entries, newest first."""
    items = []
    for entry in reversed(feed.entries[-window:]):
        link = f"{base_url}/feeds/{feed.name}/entries/{entry.slug}"
        items.append(
            "<item>"
            f"<title>{escape(entry.title)}</title>"
            f"<link>{escape(link)}</link>"
            f'<guid isPermaLink="false">{escape(entry.guid)}</guid>'
            f"<description>{escape(entry.summary)}</description>"
            f"<pubDate>{format_datetime(entry.published)}</pubDate>"
            "</item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0"><channel>'
        f"<title>{escape(feed.title)}</title>"
        f"<link>{escape(base_url)}/</link>"
        f"<description>Entries published by the socketlab feed server ({feed.name})</description>"
        f"<lastBuildDate>{format_datetime(feed.updated)}</lastBuildDate>"
        f"{''.join(items)}</channel></rss>\n"
    ).encode()


def render_atom(feed: Feed, *, base_url: str, window: int) -> bytes:
    """Atom 1.0 document with the same entries as :func:`render_rss`."""
    items = []
    for entry in reversed(feed.entries[-window:]):
        link = f"{base_url}/feeds/{feed.name}/entries/{entry.slug}"
        items.append(
            "<entry>"
            f"<title>{escape(entry.title)}</title>"
            f"<id>{escape(entry.guid)}</id>"
            f"<link href={quoteattr(link)}/>"
            f"<updated>{entry.published.isoformat()}</updated>"
            f'<summary type="text">{escape(entry.summary)}</summary>'
            "</entry>"
        )
    self_link = f"{base_url}/feeds/{feed.name}.atom"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(feed.title)}</title>"
        f"<id>urn:socketlab:feed:{feed.name}</id>"
        f'<link rel="self" href={quoteattr(self_link)}/>'
        f"<updated>{feed.updated.isoformat()}</updated>"
        "<author><name>socketlab</name></author>"
        f"{''.join(items)}</feed>\n"
    ).encode()


class FeedRegistry:
    """All feeds of one server process; thread-safe (handlers run in threads).

    Feeds live in memory. Published guids are UUIDs, so a restarted server that
    starts again from its seed entries never reuses the guid of an entry a
    poller has already seen. Quotas bound memory (and the journal): at most
    ``max_feeds`` feeds and ``max_entries`` entries per feed are published;
    what the journal restores is kept as it was.
    """

    def __init__(
        self,
        *,
        base_url: str,
        window: int,
        seed_entries: int = 3,
        on_publish: Callable[[str, Entry], None] | None = None,
        max_feeds: int = DEFAULT_MAX_FEEDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.window = window
        self.max_feeds = max_feeds
        self.max_entries = max_entries
        # Called under the lock before an entry becomes visible (the server's
        # journal): an entry a client could have seen is always on disk first.
        self.on_publish = on_publish
        self._lock = threading.Lock()
        self._feeds: dict[str, Feed] = {}
        self._cache: dict[tuple[str, str, int], Rendered] = {}
        self._seed("news", "socketlab news", seed_entries)

    def _seed(self, name: str, title: str, count: int) -> None:
        feed = Feed(name=name, title=title)
        for number in range(1, count + 1):
            feed.entries.append(
                Entry(
                    guid=f"urn:socketlab:{name}:seed-{number}",
                    slug=f"seed-{number}",
                    title=f"Lab bulletin {number}",
                    summary=f"Bulletin number {number} from the socketlab server.",
                    published=SEED_START + timedelta(hours=number),
                )
            )
        if feed.entries:
            feed.updated = feed.entries[-1].published
        self._feeds[name] = feed

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._feeds)

    def publish(self, name: str, *, title: str, summary: str, now: datetime | None = None) -> Entry:
        """Append an entry to feed ``name`` (created on first publish) and return it.

        Raises :class:`QuotaExceeded` when the lab has ``max_feeds`` feeds and
        ``name`` is a new one, or feed ``name`` has ``max_entries`` entries.
        """
        if not valid_feed_name(name):
            raise ValueError(f"invalid feed name {name!r}")
        if len(title) > MAX_TITLE or len(summary) > MAX_SUMMARY:
            raise ValueError("title or summary too long")
        moment = (now or datetime.now(UTC)).replace(microsecond=0)
        ident = uuid.uuid4()
        with self._lock:
            if name not in self._feeds and len(self._feeds) >= self.max_feeds:
                raise QuotaExceeded(f"the lab has its {self.max_feeds} feeds already")
            feed = self._feeds.get(name) or Feed(name=name, title=f"socketlab {name}")
            if len(feed.entries) >= self.max_entries:
                raise QuotaExceeded(f"feed {name!r} has its {self.max_entries} entries already")
            self._feeds[name] = feed
            # Last-Modified has one-second resolution: keep it strictly increasing
            # so a client validating with If-Modified-Since alone never gets a 304
            # for a version published within the same second as the one it holds.
            moment = max(moment, feed.updated + timedelta(seconds=1))
            entry = Entry(
                guid=f"urn:uuid:{ident}",
                slug=ident.hex,
                title=title,
                summary=summary,
                published=moment,
            )
            if self.on_publish is not None:
                self.on_publish(name, entry)
            feed.entries.append(entry)
            feed.updated = moment
            feed.version += 1
        return entry

    def restore(self, name: str, entry: Entry) -> None:
        """Re-add an entry an earlier run published (from the journal); repeats are ignored."""
        if not valid_feed_name(name):
            raise ValueError(f"invalid feed name {name!r}")
        with self._lock:
            feed = self._feeds.setdefault(name, Feed(name=name, title=f"socketlab {name}"))
            if any(known.guid == entry.guid for known in feed.entries):
                return
            feed.entries.append(entry)
            feed.updated = max(feed.updated, entry.published)
            feed.version += 1

    def entry(self, name: str, slug: str) -> Entry | None:
        with self._lock:
            feed = self._feeds.get(name)
            if feed is None:
                return None
            return next((entry for entry in feed.entries if entry.slug == slug), None)

    def entries(self, name: str) -> list[Entry]:
        """All entries of feed ``name``, oldest first (empty for an unknown feed)."""
        with self._lock:
            feed = self._feeds.get(name)
            return list(feed.entries) if feed else []

    def entry_count(self, name: str) -> int:
        with self._lock:
            feed = self._feeds.get(name)
            return len(feed.entries) if feed else 0

    def render(self, name: str, fmt: FeedFormat) -> Rendered | None:
        """Current representation of feed ``name``; ``None`` if there is no such feed."""
        with self._lock:
            feed = self._feeds.get(name)
            if feed is None:
                return None
            key = (name, fmt, feed.version)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            if fmt == "rss":
                body = render_rss(feed, base_url=self.base_url, window=self.window)
                content_type = "application/rss+xml; charset=utf-8"
            else:
                body = render_atom(feed, base_url=self.base_url, window=self.window)
                content_type = "application/atom+xml; charset=utf-8"
            rendered = Rendered(body, make_etag(body), feed.updated, content_type)
            # Old versions are never asked for again; keep the cache small.
            self._cache = {k: v for k, v in self._cache.items() if k[:2] != (name, fmt)}
            self._cache[key] = rendered
            return rendered
