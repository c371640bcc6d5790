"""Turn fetched feed bytes into items with stable identities (pure, no I/O).

Identity (dedupe key) of an entry, first that exists:

1. its guid (RSS ``<guid>``, Atom ``<id>``),
2. its link, resolved against the feed URL,
3. a SHA-256 of title and summary.

Keys carry their kind as a prefix (``guid:``, ``link:``, ``hash:``) so a guid
that happens to equal some other entry's link is not mistaken for it.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser

from socketlab.rss.safety import neutralise

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Item:
    """One feed entry as the poller prints and records it."""

    key: str
    title: str
    link: str
    summary: str
    published: str | None  # ISO 8601 UTC, when the feed gave a parseable date


@dataclass(frozen=True)
class ParsedFeed:
    """Items in publication order (oldest first) and what went wrong on the way."""

    items: tuple[Item, ...]
    bozo: bool
    bozo_reason: str | None
    removed: tuple[str, ...]  # markup declarations stripped before parsing
    title: str


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def entry_key(entry: Mapping[str, Any]) -> str:
    """Dedupe key: guid, else link, else a hash of title and summary."""
    guid = _text(entry.get("id"))
    if guid:
        return "guid:" + guid
    link = _text(entry.get("link"))
    if link:
        return "link:" + link
    title = _text(entry.get("title"))
    summary = _text(entry.get("summary"))
    digest = hashlib.sha256(f"{title}\x00{summary}".encode()).hexdigest()
    return "hash:" + digest


def _published(entry: Mapping[str, Any]) -> str | None:
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not stamp:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(stamp), UTC).isoformat()
    except (TypeError, ValueError, OverflowError):
        return None


def to_item(entry: Mapping[str, Any]) -> Item:
    """Build an :class:`Item` from one feedparser entry."""
    return Item(
        key=entry_key(entry),
        title=_text(entry.get("title")),
        link=_text(entry.get("link")),
        summary=_text(entry.get("summary")),
        published=_published(entry),
    )


def parse_feed(body: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    """Neutralise ``body``, parse it with feedparser, return its items oldest first.

    Raises :class:`~socketlab.rss.errors.UnsafeFeed` when the document cannot be
    made safe. Relative links resolve against ``url``.
    """
    charset = None
    if content_type:
        match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
        charset = match.group(1) if match else None
    safe = neutralise(body, declared_charset=charset)
    headers = {"content-location": url}
    if content_type:
        mime = content_type.split(";", 1)[0].strip()
        # After transcoding, the HTTP charset no longer describes the bytes.
        headers["content-type"] = f"{mime}; charset=utf-8" if safe.transcoded_from else content_type
    # A file object, never bytes: feedparser.parse(bytes) first tries the bytes
    # as a local *file name*, so a body such as b"/etc/passwd" would be read.
    parsed = feedparser.parse(io.BytesIO(safe.data), response_headers=headers)
    items: list[Item] = []
    seen: set[str] = set()
    # Feeds list newest first; print in publication order. Within a document a
    # repeated key is the same entry listed twice.
    for entry in reversed(parsed.entries):
        item = to_item(entry)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
    reason = parsed.get("bozo_exception")
    # A feed served as text/plain, or whose declared encoding was overridden by
    # the HTTP charset, parsed fine: feedparser flags it, we do not degrade it.
    benign = isinstance(reason, feedparser.NonXMLContentType | feedparser.CharacterEncodingOverride)
    bozo = bool(parsed.get("bozo")) and not benign
    described = f"{type(reason).__name__}: {reason}" if reason is not None else None
    if not parsed.get("version"):
        bozo, described = True, described or "not a recognised RSS or Atom document"
    return ParsedFeed(
        items=tuple(items),
        bozo=bozo,
        bozo_reason=described,
        removed=safe.removed,
        title=_text(parsed.get("feed", {}).get("title")),
    )


def display_text(value: str, *, limit: int = 300) -> str:
    """One line for a terminal: tags dropped, entities decoded, whitespace collapsed."""
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
