"""Text that reaches a person's terminal: control and bidi characters shown, never obeyed.

Anything a peer chose (a chat line, a feed title, a name in a table) goes
through :func:`neutralize` before it is printed, so it cannot clear the
screen, set the title, move the cursor, overwrite a line with CR or forge a
whole line with LF, or reorder what follows with a bidi override.
"""

from __future__ import annotations

from typing import Final

# Bidi controls: embeddings and overrides, isolates, the marks, the Arabic letter mark.
BIDI_CONTROLS: Final = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
)


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _is_unsafe(char: str, *, multiline: bool) -> bool:
    code = ord(char)
    if code < 0x20:  # C0 controls
        return not (char == "\t" or (multiline and char == "\n"))
    return 0x7F <= code <= 0x9F or char in BIDI_CONTROLS  # DEL, C1, bidi


def _neutralize(text: str, *, multiline: bool) -> str:
    # Every unsafe character is a Cc or Cf, which isprintable() rejects: the
    # common clean line is checked in C and returned as it is.
    if text.isprintable():
        return text
    return "".join(_escaped(c) if _is_unsafe(c, multiline=multiline) else c for c in text)


def neutralize(text: str) -> str:
    """``text`` for one terminal line: C0 controls but tab, DEL, C1 and bidi controls
    replaced by visible escapes (``\\x1b``, ``\\x9b``, ``\\u202e``)."""
    return _neutralize(text, multiline=False)


def neutralize_multiline(text: str) -> str:
    """Like :func:`neutralize`, but newlines stay (multi-line output)."""
    return _neutralize(text, multiline=True)
