"""Hostile and broken feed documents served under ``/faults/`` (pure builders, no I/O).

Each one exercises a way real feeds go wrong: the poller must survive all of
them, keep polling its other feeds, never expand entities and never read a
local file.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.sax.saxutils import escape, quoteattr

# Names under /faults/NAME.rss; the HTTP front end decides how each is delivered.
FAULTS = ("slow", "drip", "huge", "malformed", "error", "billion-laughs", "xxe")


def small_feed(title: str) -> bytes:
    """A valid one-item RSS document (what ``slow`` and ``drip`` eventually deliver)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>http://example.invalid/</link>"
        "<description>fault feed</description>"
        f"<item><title>{escape(title)} item</title>"
        f'<guid isPermaLink="false">socketlab-fault-{escape(title)}-1</guid>'
        "<description>delivered late</description></item>"
        "</channel></rss>\n"
    ).encode()


def malformed_feed() -> bytes:
    """Broken XML (unclosed tags, a stray ``&``) that still has two readable items."""
    return (
        b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        b"<title>malformed & broken</title><link>http://example.invalid/</link>"
        b'<item><title>Readable despite errors</title><guid isPermaLink="false">'
        b"socketlab-malformed-1</guid><description>first <b>bold</description></item>"
        b'<item><title>Second item</title><guid isPermaLink="false">socketlab-malformed-2'
        b"</guid><description>no closing tags follow"
    )


def billion_laughs_feed(*, levels: int = 10) -> bytes:
    """The classic exponential entity expansion (10 levels: ~3 GB if expanded)."""
    lines = ['<!ENTITY lol0 "lol">']
    for level in range(1, levels):
        refs = f"&lol{level - 1};" * 10
        lines.append(f'<!ENTITY lol{level} "{refs}">')
    top = f"&lol{levels - 1};"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<!DOCTYPE rss [\n{chr(10).join(lines)}\n]>\n"
        '<rss version="2.0"><channel><title>laughs</title>'
        "<link>http://example.invalid/</link><description>bomb</description>"
        f'<item><title>{top}</title><guid isPermaLink="false">socketlab-laughs-1</guid>'
        f"<description>{top}</description></item>"
        "</channel></rss>\n"
    ).encode()


def xxe_feed(path: str) -> bytes:
    """External entities pointing at a local file: general, parameter and external DTD."""
    url = "file://" + path
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<!DOCTYPE rss SYSTEM {quoteattr(url)} [\n"
        f"<!ENTITY xxe SYSTEM {quoteattr(url)}>\n"
        f"<!ENTITY % remote SYSTEM {quoteattr(url)}>\n"
        "%remote;\n]>\n"
        '<rss version="2.0"><channel><title>xxe</title>'
        "<link>http://example.invalid/</link><description>&xxe;</description>"
        '<item><title>Secret: &xxe;</title><guid isPermaLink="false">socketlab-xxe-1</guid>'
        "<description>&xxe;</description></item>"
        "</channel></rss>\n"
    ).encode()


def huge_feed_chunks(*, limit: int, chunk_items: int = 200) -> Iterator[bytes]:
    """An RSS document that never ends on its own: items until ``limit`` bytes were made."""
    head = (
        b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>huge</title>'
    )
    yield head
    produced = len(head)
    number = 0
    while produced < limit:
        parts = []
        for _ in range(chunk_items):
            number += 1
            parts.append(
                f'<item><title>Huge {number}</title><guid isPermaLink="false">huge-{number}'
                f"</guid><description>{'x' * 400}</description></item>"
            )
        chunk = "".join(parts).encode()
        produced += len(chunk)
        yield chunk
