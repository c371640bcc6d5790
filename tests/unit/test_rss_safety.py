"""No entity bomb is ever expanded and no local file is ever read while parsing feeds."""

from __future__ import annotations

import codecs
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.rss import faults
from socketlab.rss.entries import parse_feed
from socketlab.rss.errors import UnsafeFeed
from socketlab.rss.safety import neutralise, strip_declarations

SENTINEL = "SOCKETLAB-SENTINEL-7d1c9e"


@pytest.fixture
def sentinel_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SENTINEL + "\n")
    return path


def _everything(parsed: object) -> str:
    return repr(parsed)


def test_billion_laughs_is_not_expanded() -> None:
    tracemalloc.start()
    try:
        parsed = parse_feed(faults.billion_laughs_feed(), url="http://lab/faults/laughs.rss")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.bozo
    assert "DOCTYPE" in parsed.removed
    assert "lollol" not in _everything(parsed)
    assert peak < 50 * 1024 * 1024  # expanded, the bomb is ~3 GB
    assert [item.key for item in parsed.items] == ["guid:socketlab-laughs-1"]


def test_xxe_never_reads_the_local_file(sentinel_file: Path) -> None:
    parsed = parse_feed(faults.xxe_feed(str(sentinel_file)), url="http://lab/faults/xxe.rss")
    assert SENTINEL not in _everything(parsed)
    assert parsed.items, "what can be parsed is kept"


def test_a_body_that_is_a_file_name_is_not_opened(sentinel_file: Path) -> None:
    # feedparser.parse(bytes) treats bytes as a path first; we must never let it.
    parsed = parse_feed(str(sentinel_file).encode(), url="http://lab/x.rss")
    assert SENTINEL not in _everything(parsed)
    assert parsed.items == ()


@pytest.mark.parametrize(
    "encoding",
    [
        pytest.param("utf-16", id="utf16-bom"),
        pytest.param("utf-16-le", id="utf16le-no-bom"),
        pytest.param("utf-32", id="utf32-bom"),
    ],
)
def test_wide_encodings_cannot_hide_a_doctype(encoding: str, sentinel_file: Path) -> None:
    text = (
        faults.xxe_feed(str(sentinel_file))
        .decode()
        .replace('encoding="utf-8"', f'encoding="{encoding}"')
    )
    data = text.encode(encoding)
    if encoding == "utf-16-le":
        assert not data.startswith(codecs.BOM_UTF16_LE)
    parsed = parse_feed(data, url="http://lab/x.rss", content_type="application/rss+xml")
    assert "DOCTYPE" in parsed.removed
    assert SENTINEL not in _everything(parsed)
    assert [item.key for item in parsed.items] == ["guid:socketlab-xxe-1"]


@pytest.mark.parametrize(
    "encoding",
    [pytest.param("utf-16-le", id="le"), pytest.param("utf-16-be", id="be")],
)
def test_wide_text_without_bom_or_declaration_is_still_scanned(encoding: str) -> None:
    text = '<!DOCTYPE r [<!ENTITY a "aaaaaaaa">]><rss version="2.0"><channel><title>&a;</title></channel></rss>'
    result = neutralise(text.encode(encoding))
    assert result.transcoded_from == encoding
    assert result.removed == ("DOCTYPE",)
    assert b"aaaaaaaa" not in result.data


def test_misaligned_wide_text_is_never_decoded_into_a_bomb() -> None:
    # Leading space, no BOM, no charset: neither we nor feedparser read it as UTF-16.
    data = (b" " + faults.billion_laughs_feed()).decode().encode("utf-16-le")
    tracemalloc.start()
    try:
        parsed = parse_feed(data, url="http://lab/x.rss")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.items == ()
    assert parsed.bozo
    assert peak < 50 * 1024 * 1024


def test_stray_entity_declarations_outside_a_doctype_are_removed() -> None:
    data = b'<rss><!ENTITY a "x"><channel><title>t</title></channel></rss>'
    cleaned, removed = strip_declarations(data)
    assert cleaned == b"<rss><channel><title>t</title></channel></rss>"
    assert removed == ("ENTITY",)


def test_comments_and_cdata_are_left_alone() -> None:
    data = (
        b"<rss><!-- <!DOCTYPE not really> --><channel>"
        b"<description><![CDATA[how to write <!DOCTYPE html> >]]></description>"
        b"</channel></rss>"
    )
    assert strip_declarations(data) == (data, ())


def test_quoted_brackets_inside_the_internal_subset_do_not_end_it() -> None:
    data = b"<!DOCTYPE r [<!ENTITY a \"]>\"><!ENTITY b '>'>]><r>&a;</r>"
    cleaned, removed = strip_declarations(data)
    assert cleaned == b"<r>&a;</r>"
    assert removed == ("DOCTYPE",)


def test_an_unterminated_doctype_swallows_the_rest() -> None:
    cleaned, _ = strip_declarations(b'<r/><!DOCTYPE r [<!ENTITY a "aaaa"')
    assert cleaned == b"<r/>"


def test_a_plain_feed_passes_untouched() -> None:
    body = faults.small_feed("plain")
    result = neutralise(body)
    assert result.data == body
    assert result.removed == ()
    assert result.transcoded_from is None


def test_a_dtd_that_survives_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate a scanner bug: the second line of defence (defusedxml) must refuse.
    monkeypatch.setattr("socketlab.rss.safety.strip_declarations", lambda data: (data, ()))
    with pytest.raises(UnsafeFeed):
        neutralise(faults.billion_laughs_feed())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_neutralise_never_crashes_and_leaves_no_declaration(data: bytes) -> None:
    try:
        result = neutralise(data)
    except UnsafeFeed:
        return
    assert strip_declarations(result.data)[1] == ()


def test_declarations_joined_by_a_removal_are_removed_too() -> None:
    data = b'<!<!X>DOCTYPE r [<!ENTITY a "x">]><r>&a;</r>'
    result = neutralise(data)
    assert result.data == b"<r>&a;</r>"
    assert strip_declarations(result.data)[1] == ()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"<!DOCTYPE r [",
                b"<!ENTITY a 'x'>",
                b"]>",
                b"<r>",
                b"</r>",
                b"&a;",
                b"'",
                b'"',
                b"<!--",
                b"-->",
                b"<![CDATA[",
                b"]]>",
                b"text",
                b">",
                b"[",
            ]
        ),
        max_size=30,
    )
)
def test_parse_feed_survives_declaration_soup(parts: list[bytes]) -> None:
    parse_feed(b"".join(parts), url="http://lab/soup.rss")
