"""neutralize: what a peer chose is shown on a terminal, never obeyed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.terminal import neutralize, neutralize_multiline


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("plain é ✓ 日本", "plain é ✓ 日本", id="printable-unchanged"),
        pytest.param("a\tb", "a\tb", id="tab-kept"),
        pytest.param("\x1b[2Jcleared", "\\x1b[2Jcleared", id="esc"),
        pytest.param("\x1b]0;title\x07", "\\x1b]0;title\\x07", id="osc-bel"),
        pytest.param("ok\r* alice left", "ok\\x0d* alice left", id="cr"),
        pytest.param("ok\n* alice left", "ok\\x0a* alice left", id="lf"),
        pytest.param("nul\x00", "nul\\x00", id="nul"),
        pytest.param("del\x7f", "del\\x7f", id="del"),
        pytest.param("csi\x9b2J", "csi\\x9b2J", id="c1"),
        pytest.param("\u202eexe.pdf", "\\u202eexe.pdf", id="rlo"),
        pytest.param("\u2066x\u2069", "\\u2066x\\u2069", id="isolates"),
        pytest.param("\u200e\u200f\u061c", "\\u200e\\u200f\\u061c", id="marks"),
        pytest.param("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d", id="embeddings"),
        pytest.param("zero\u200bwidth", "zero\u200bwidth", id="other-format-kept"),
    ],
)
def test_neutralize(raw: str, shown: str) -> None:
    assert neutralize(raw) == shown


def test_multiline_keeps_newlines_only() -> None:
    assert neutralize_multiline("one\ntwo\r\x1b") == "one\ntwo\\x0d\\x1b"


UNSAFE = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0))} - {"\t"}
BIDI = {*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\u200e", "\u200f"}


@given(st.text())
def test_no_unsafe_character_survives_and_safe_text_is_kept(text: str) -> None:
    shown = neutralize(text)
    assert not (set(shown) & (UNSAFE | BIDI | {"\u061c"}))
    if not (set(text) & (UNSAFE | BIDI | {"\u061c"})):
        assert shown == text
