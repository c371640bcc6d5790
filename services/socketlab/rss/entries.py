"""Turn fetched feed bytes into items with stable identities (pure, no I/O).

Identity (dedupe key) of an entry, first that exists:

1. its guid (RSS ``<guid>``, Atom ``<id>``),
2. its link, resolved against the feed URL,
3. a SHA-256 of title and summary.

Keys carry their kind as a prefix (``guid:``, ``link:``, ``hash:``) so a guid
that happens to equal some other entry's link is not mistaken for it.

One hostile entry costs only itself: control characters that XML forbids come
back from :mod:`~socketlab.rss.safety` as private-use stand-ins, are restored
here, and mark that entry ``degraded`` (the printer shows them escaped); the
feed stays ``ok``. When feedparser had to override the declared encoding
(``CharacterEncodingOverride``: declared utf-8, parsed as windows-1252), each
text that is valid in the declared encoding is read in it again, so an entry
keeps the key (and title) a correct decode of the same bytes gives it later.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import feedparser

from socketlab.rss.safety import neutralise, restore_controls

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_OVERRIDE = re.compile(r"declared as ([\w.:-]+), but parsed as ([\w.:-]+)")


@dataclass(frozen=True)
class Item:
    """One feed entry as the poller prints and records it."""

    key: str
    title: str
    link: str
    summary: str
    published: str | None  # ISO 8601 UTC, when the feed gave a parseable date
    degraded: bool = False  # carried control characters XML forbids (shown escaped)


@dataclass(frozen=True)
class ParsedFeed:
    """Items in publication order (oldest first) and what went wrong on the way."""

    items: tuple[Item, ...]
    bozo: bool
    bozo_reason: str | None
    removed: tuple[str, ...]  # markup declarations stripped before parsing
    title: str
    encoding_override: str | None = None  # "declared as utf-8, but parsed as windows-1252"
    degraded_entries: int = 0  # items that carried control characters XML forbids


Repair = Callable[[str], str]


def _as_is(text: str) -> str:
    return text


def _text(value: Any, repair: Repair = _as_is) -> str:
    return restore_controls(repair(value)).strip() if isinstance(value, str) else ""


def encoding_repair(declared: str, parsed_as: str) -> Repair:
    """Read a text decoded as ``parsed_as`` in ``declared`` again, where its bytes allow."""

    def repair(text: str) -> str:
        try:
            return text.encode(parsed_as).decode(declared)
        except (UnicodeError, LookupError):
            return text  # these characters really were not in the declared encoding

    return repair


def entry_key(entry: Mapping[str, Any], repair: Repair = _as_is) -> str:
    """Dedupe key: guid, else link, else a hash of title and summary."""
    guid = _text(entry.get("id"), repair)
    if guid:
        return "guid:" + guid
    link = _text(entry.get("link"), repair)
    if link:
        return "link:" + link
    title = _text(entry.get("title"), repair)
    summary = _text(entry.get("summary"), repair)
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


def _has_stand_ins(entry: Mapping[str, Any]) -> bool:
    values = (entry.get(name) for name in ("id", "link", "title", "summary"))
    return any(isinstance(v, str) and restore_controls(v) != v for v in values)


def to_item(entry: Mapping[str, Any], repair: Repair = _as_is) -> Item:
    """Build an :class:`Item` from one feedparser entry."""
    return Item(
        key=entry_key(entry, repair),
        title=_text(entry.get("title"), repair),
        link=_text(entry.get("link"), repair),
        summary=_text(entry.get("summary"), repair),
        published=_published(entry),
        degraded=_has_stand_ins(entry),
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
    reason = parsed.get("bozo_exception")
    override = None
    repair: Repair = _as_is
    if isinstance(reason, feedparser.CharacterEncodingOverride):
        override = str(reason)
        if match := _OVERRIDE.search(override):
            repair = encoding_repair(match.group(1), match.group(2))
    items: list[Item] = []
    seen: set[str] = set()
    # Feeds list newest first; print in publication order. Within a document a
    # repeated key is the same entry listed twice.
    for entry in reversed(parsed.entries):
        item = to_item(entry, repair)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
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
        title=_text(parsed.get("feed", {}).get("title"), repair),
        encoding_override=override,
        degraded_entries=sum(1 for item in items if item.degraded),
    )


def display_text(value: str, *, limit: int = 300) -> str:
    """One line for a terminal: tags dropped, entities decoded, whitespace collapsed."""
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
