"""Dedupe keys and parsing of feeds the lab did not write (Atom/RSS variants, odd input)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.rss import faults
from socketlab.rss.entries import display_text, entry_key, parse_feed
from socketlab.rss.errors import UnsafeFeed

URL = "http://example.org/blog/feed.xml"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param({"id": "g1", "link": "http://l", "title": "t"}, "guid:g1", id="guid-first"),
        pytest.param({"id": "  g1 \n", "link": "http://l"}, "guid:g1", id="guid-trimmed"),
        pytest.param(
            {"id": "", "link": "http://l", "title": "t"}, "link:http://l", id="empty-guid"
        ),
        pytest.param({"link": "http://l", "title": "t"}, "link:http://l", id="link-second"),
        pytest.param(
            {"title": "t", "summary": "s"},
            "hash:" + hashlib.sha256(b"t\x00s").hexdigest(),
            id="hash-last",
        ),
        pytest.param({}, "hash:" + hashlib.sha256(b"\x00").hexdigest(), id="nothing-at-all"),
    ],
)
def test_entry_key_rules(entry: dict[str, str], expected: str) -> None:
    assert entry_key(entry) == expected


def test_hash_key_separates_title_from_summary() -> None:
    assert entry_key({"title": "ab", "summary": "c"}) != entry_key({"title": "a", "summary": "bc"})


def test_a_guid_equal_to_another_entrys_link_is_not_a_duplicate() -> None:
    assert entry_key({"id": "http://x/1"}) != entry_key({"link": "http://x/1"})


RSS_NO_GUIDS = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>blog</title><link>http://example.org/</link>
<item><title>Newest</title><link>/blog/2</link><description>two</description></item>
<item><title>Oldest</title><link>posts/1.html</link><description>one</description></item>
<item><description>no title, no link</description></item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://example.org/atom/">
<title>atom</title><id>urn:x</id><updated>2026-01-02T00:00:00Z</updated>
<entry><id>tag:example.org,2026:2</id><title type="html">&lt;b&gt;Bold&lt;/b&gt; news</title>
<link rel="alternate" href="entries/2"/><updated>2026-01-02T00:00:00Z</updated>
<content type="html">&lt;p&gt;full &lt;script&gt;alert(1)&lt;/script&gt;text&lt;/p&gt;</content></entry>
<entry><id>tag:example.org,2026:1</id><link href="entries/1"/>
<updated>2026-01-01T00:00:00Z</updated><summary>untitled entry</summary></entry>
</feed>"""

RSS_1_RDF = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
<channel rdf:about="http://example.org/"><title>rdf</title><link>http://example.org/</link></channel>
<item rdf:about="http://example.org/r/1"><title>RDF item</title><link>http://example.org/r/1</link>
<description>rss 1.0</description></item>
</rdf:RDF>"""

RSS_091 = b"""<?xml version="1.0" encoding="ISO-8859-1"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
 "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>old</title><link>http://example.org/</link>
<item><title>Caf\xe9 &amp; cr\xe8me</title><link>http://example.org/old/1</link></item>
</channel></rss>"""


def test_rss_without_guids_uses_resolved_links_then_hashes() -> None:
    parsed = parse_feed(RSS_NO_GUIDS, url=URL, content_type="application/rss+xml")
    assert not parsed.bozo
    keys = [item.key for item in parsed.items]
    assert keys[0].startswith("hash:")
    assert keys[1:] == [
        "link:http://example.org/blog/posts/1.html",
        "link:http://example.org/blog/2",
    ]
    untitled = parsed.items[0]
    assert untitled.title == ""
    assert untitled.summary == "no title, no link"


def test_atom_entries_with_relative_links_html_titles_and_no_title() -> None:
    parsed = parse_feed(ATOM, url=URL, content_type="application/atom+xml")
    assert not parsed.bozo
    first, second = parsed.items  # publication order: oldest first
    assert first.key == "guid:tag:example.org,2026:1"
    assert first.title == ""
    assert first.link == "http://example.org/atom/entries/1"
    assert first.published == "2026-01-01T00:00:00+00:00"
    assert second.link == "http://example.org/atom/entries/2"
    assert "<script" not in second.summary  # feedparser sanitises HTML content


def test_rss_1_0_rdf() -> None:
    (item,) = parse_feed(RSS_1_RDF, url=URL, content_type="application/rdf+xml").items
    assert item.title == "RDF item"
    assert item.key in {"guid:http://example.org/r/1", "link:http://example.org/r/1"}


def test_rss_0_91_in_latin1_with_a_public_doctype() -> None:
    parsed = parse_feed(RSS_091, url=URL, content_type="text/xml")
    assert parsed.removed == ("DOCTYPE",)
    (item,) = parsed.items
    assert item.title == "Café & crème"


@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        pytest.param("windows-1252", "application/rss+xml; charset=windows-1252", id="cp1252"),
        pytest.param("koi8-r", "application/xml", id="koi8r-declared-in-xml"),
        pytest.param("shift_jis", "text/xml; charset=Shift_JIS", id="shift-jis"),
        pytest.param("utf-16", "application/rss+xml", id="utf16-bom"),
        pytest.param("utf-8-sig", "application/rss+xml", id="utf8-bom"),
    ],
)
def test_odd_encodings(encoding: str, content_type: str) -> None:
    title = {
        "windows-1252": "\u201cquoted\u201d \u2013 dash \u20ac",
        "koi8-r": "Привет",
        "shift_jis": "日本語のニュース",
    }.get(encoding, "Grüße, 世界")
    declared = "utf-16" if encoding == "utf-16" else encoding.replace("-sig", "")
    document = (
        f'<?xml version="1.0" encoding="{declared}"?>'
        f'<rss version="2.0"><channel><title>enc</title><item><title>{title}</title>'
        f"<guid>g-{encoding}</guid></item></channel></rss>"
    )
    (item,) = parse_feed(document.encode(encoding), url=URL, content_type=content_type).items
    assert item.title == title


def test_duplicates_within_one_document_are_one_item() -> None:
    document = (
        b'<rss version="2.0"><channel><title>d</title>'
        b"<item><guid>same</guid><title>b</title></item>"
        b"<item><guid>same</guid><title>a</title></item></channel></rss>"
    )
    assert [item.title for item in parse_feed(document, url=URL).items] == ["a"]


def test_malformed_feed_keeps_what_can_be_parsed() -> None:
    parsed = parse_feed(faults.malformed_feed(), url=URL)
    assert parsed.bozo
    assert parsed.bozo_reason
    assert {item.key for item in parsed.items} == {
        "guid:socketlab-malformed-1",
        "guid:socketlab-malformed-2",
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"<html><body>Not a feed</body></html>", id="html"),
        pytest.param(b"\x00\xff\xfe garbage", id="binary"),
        pytest.param(b'{"json": true}', id="json"),
    ],
)
def test_not_a_feed_is_bozo_with_no_items(body: bytes) -> None:
    parsed = parse_feed(body, url=URL)
    assert parsed.items == ()
    assert parsed.bozo


def test_display_text_is_one_tidy_line() -> None:
    assert display_text("<p>Hello\n  <b>world</b></p>") == "Hello world"
    assert display_text("x" * 500, limit=10) == "x" * 9 + "…"


NEWS_SITE = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:media="http://search.yahoo.com/mrss/">
<channel>
<title>Example News - Economic Development</title>
<link>https://news.example.org/en/news/topic/economic-development</link>
<atom:link href="https://news.example.org/feed/rss.xml" rel="self" type="application/rss+xml"/>
<description>Latest stories</description><language>en</language>
<item>
  <title>Trade outlook improves</title>
  <link>https://news.example.org/en/story/2026/11/1</link>
  <description><![CDATA[<p>Growth is <em>expected</em> to rise &mdash; report.</p>]]></description>
  <pubDate>Fri, 20 Nov 2026 14:05:00 +0000</pubDate>
  <dc:creator>Example News</dc:creator>
  <guid isPermaLink="false">167001 at https://news.example.org</guid>
  <media:content url="https://news.example.org/img/1.jpg" medium="image"/>
</item>
</channel></rss>"""


def test_a_news_site_style_feed() -> None:
    parsed = parse_feed(
        NEWS_SITE,
        url="https://news.example.org/feed/rss.xml",
        content_type="application/rss+xml; charset=utf-8",
    )
    assert not parsed.bozo, parsed.bozo_reason
    (story,) = parsed.items
    assert story.key == "guid:167001 at https://news.example.org"
    assert story.link == "https://news.example.org/en/story/2026/11/1"
    assert story.published == "2026-11-20T14:05:00+00:00"
    assert display_text(story.summary) == "Growth is expected to rise \u2014 report."


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_feed_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    try:
        parsed = parse_feed(data, url=URL)
    except UnsafeFeed:
        return
    assert all(item.key.startswith(("guid:", "link:", "hash:")) for item in parsed.items)
