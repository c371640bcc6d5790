"""neutralize: control and bidi characters are shown escaped, everything else is kept."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.terminal import neutralize

BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("plain text, ünïcødé ✓", "plain text, ünïcødé ✓", id="kept"),
        pytest.param("a\tb", "a\tb", id="tab-kept"),
        pytest.param("\x1b[2J\x1b]0;pwned\x07", "\\x1b[2J\\x1b]0;pwned\\x07", id="esc-osc-bel"),
        pytest.param("ok\r\n* alice left (bye)", "ok\\x0d\\x0a* alice left (bye)", id="cr-lf"),
        pytest.param("\x00\x7f\x80\x9b\x9f", "\\x00\\x7f\\x80\\x9b\\x9f", id="nul-del-c1"),
        pytest.param("\u202egnp.exe", "\\u202egnp.exe", id="rlo"),
        pytest.param(
            "\u061c\u200e\u200f\u202a\u202d\u2066\u2069",
            "\\u061c\\u200e\\u200f\\u202a\\u202d\\u2066\\u2069",
            id="every-bidi-kind",
        ),
        pytest.param("C:\\x1b is text", "C:\\x1b is text", id="backslash-kept"),
        pytest.param("\u00a0\u2028", "\u00a0\u2028", id="nbsp-and-line-separator-kept"),
    ],
)
def test_escapes(raw: str, shown: str) -> None:
    assert neutralize(raw) == shown


def test_newline_is_kept_only_for_multi_line_output() -> None:
    assert neutralize("one\ntwo\r", multiline=True) == "one\ntwo\\x0d"
    assert neutralize("one\ntwo") == "one\\x0atwo"


def _dangerous(char: str, *, multiline: bool) -> bool:
    code = ord(char)
    if char == "\t" or (multiline and char == "\n"):
        return False
    return unicodedata.category(char) == "Cc" or code in BIDI


@given(st.text(), st.booleans())
def test_nothing_dangerous_survives(text: str, multiline: bool) -> None:
    shown = neutralize(text, multiline=multiline)
    assert not any(_dangerous(char, multiline=multiline) for char in shown)


@given(st.text())
def test_text_without_dangerous_characters_is_unchanged(text: str) -> None:
    safe = "".join(c for c in text if not _dangerous(c, multiline=False))
    assert neutralize(safe) == safe


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_each_dangerous_character_becomes_its_own_escape(text: str) -> None:
    expected = "".join(
        (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
        if _dangerous(c, multiline=False)
        else c
        for c in text
    )
    assert neutralize(text) == expected
