"""Text for a human's terminal: control and bidi characters shown escaped, never obeyed.

Whatever a peer wrote (a feed title, a chat message, a container's log line)
can carry ESC sequences that clear a screen or set a terminal's title, a CR or
LF that forges a line of its own, or bidi controls that reorder what is shown.
:func:`neutralize` turns each such character into visible text: C0 controls
(but tab, and newline when ``multiline``), DEL and C1 become ``\\xNN``; the
Unicode bidi controls U+202A-U+202E, U+2066-U+2069, U+200E, U+200F and U+061C
become ``\\uNNNN``. Everything else, backslashes included, is left as it is.
"""

from __future__ import annotations

from typing import Final

_BIDI: Final = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
BIDI_CONTROLS: Final = frozenset(map(chr, _BIDI))
_CONTROLS: Final = (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))

_SINGLE_LINE: Final[dict[int, str]] = {
    **{code: f"\\x{code:02x}" for code in _CONTROLS if code != 0x09},
    **{code: f"\\u{code:04x}" for code in _BIDI},
}
_MULTI_LINE: Final[dict[int, str]] = {
    code: text for code, text in _SINGLE_LINE.items() if code != 0x0A
}


def neutralize(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control and bidi character escaped (newline kept if ``multiline``)."""
    return text.translate(_MULTI_LINE if multiline else _SINGLE_LINE)
