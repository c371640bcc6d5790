"""Make a fetched feed safe to hand to feedparser (pure, no I/O).

Feeds from the network may carry a DTD: internal entities that expand
exponentially ("billion laughs"), external entities or an external DTD that
point at local files (XXE). Feeds never need a DTD, so the poller removes every
markup declaration (``<!DOCTYPE ...>`` with its internal subset, stray
``<!ENTITY ...>`` and friends) before parsing, then checks the result with
defusedxml (which refuses any DTD) as a second line of defence. Undefined
entity references left behind make the feed "bozo"; feedparser's lenient
parser then keeps what it can, without expanding anything.

Byte-level scanning only works on ASCII-compatible encodings, so UTF-16/32 and
EBCDIC documents are first transcoded to UTF-8.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as StdET
from dataclasses import dataclass

import defusedxml
import defusedxml.ElementTree as SafeET

from socketlab.rss.errors import UnsafeFeed

# BOMs and the first bytes of '<?' in encodings that are not ASCII-compatible
# (XML 1.0 appendix F), longest first so UTF-32 wins over UTF-16.
_SIGNATURES: tuple[tuple[bytes, str, int], ...] = (
    (codecs.BOM_UTF32_BE, "utf-32-be", 4),
    (codecs.BOM_UTF32_LE, "utf-32-le", 4),
    (b"\x00\x00\x00<", "utf-32-be", 0),
    (b"<\x00\x00\x00", "utf-32-le", 0),
    (codecs.BOM_UTF16_BE, "utf-16-be", 2),
    (codecs.BOM_UTF16_LE, "utf-16-le", 2),
    (b"\x00<\x00?", "utf-16-be", 0),
    (b"<\x00?\x00", "utf-16-le", 0),
    (b"\x4c\x6f\xa7\x94", "cp037", 0),
    # No BOM and no declaration: not well-formed XML, but lenient parsers guess.
    (b"\x00<", "utf-16-be", 0),
    (b"<\x00", "utf-16-le", 0),
)
_WIDE_CHARSETS = {"utf16", "utf16be", "utf16le", "utf32", "utf32be", "utf32le"}
_DECLARED_ENCODING = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


@dataclass(frozen=True)
class Neutralised:
    """The document to parse, and what was done to it."""

    data: bytes
    removed: tuple[str, ...]  # kinds of declarations removed, e.g. ("DOCTYPE", "ENTITY")
    transcoded_from: str | None  # original encoding when the bytes were rewritten as UTF-8


def _wide_encoding(data: bytes, declared_charset: str | None) -> tuple[str, int] | None:
    for signature, encoding, skip in _SIGNATURES:
        if data.startswith(signature):
            return encoding, skip
    charset = (declared_charset or "").strip().lower().replace("_", "-")
    if charset.replace("-", "") in _WIDE_CHARSETS:
        return charset, 0
    return None


def _to_utf8(data: bytes, encoding: str, skip: int) -> bytes:
    text = data[skip:].decode(encoding, errors="replace").lstrip("\ufeff")
    converted = text.encode("utf-8")
    # The declaration must agree with the new bytes, or feedparser decodes them wrongly.
    return _DECLARED_ENCODING.sub(rb'\1"utf-8"', converted, count=1)


def _end_of_declaration(data: bytes, start: int) -> int:
    """Index just past the ``>`` closing the declaration at ``start``.

    Quotes hide ``>`` and brackets; ``[...]`` is an internal subset whose own
    declarations end with ``>`` too. An unterminated declaration runs to the end.
    """
    depth = 0
    quote = 0
    index = start + 2
    length = len(data)
    while index < length:
        byte = data[index]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in b"\"'":
            quote = byte
        elif byte == ord("["):
            depth += 1
        elif byte == ord("]"):
            depth = max(0, depth - 1)
        elif byte == ord(">") and depth == 0:
            return index + 1
        index += 1
    return length


def strip_declarations(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Remove every ``<!NAME ...>`` markup declaration, keeping comments and CDATA intact."""
    out: list[bytes] = []
    removed: list[str] = []
    position = 0
    while True:
        start = data.find(b"<!", position)
        if start < 0:
            out.append(data[position:])
            break
        if data.startswith(b"<!--", start):
            end = data.find(b"-->", start + 4)
            end = len(data) if end < 0 else end + 3
            out.append(data[position:end])
            position = end
            continue
        if data.startswith(b"<![CDATA[", start):
            end = data.find(b"]]>", start + 9)
            end = len(data) if end < 0 else end + 3
            out.append(data[position:end])
            position = end
            continue
        match = re.match(rb"<!\s*([A-Za-z]+)", data[start : start + 64])
        if match is None:
            out.append(data[position : start + 2])
            position = start + 2
            continue
        removed.append(match.group(1).decode("ascii").upper())
        out.append(data[position:start])
        position = _end_of_declaration(data, start)
    return b"".join(out), tuple(dict.fromkeys(removed))


def neutralise(data: bytes, *, declared_charset: str | None = None) -> Neutralised:
    """Return ``data`` without any DTD, safe for feedparser; raise UnsafeFeed if that fails."""
    transcoded_from = None
    wide = _wide_encoding(data, declared_charset)
    if wide is not None:
        encoding, skip = wide
        data = _to_utf8(data, encoding, skip)
        transcoded_from = encoding
    cleaned, removed = strip_declarations(data)
    kinds = list(removed)
    # Removing one declaration can join its neighbours into a new one
    # ("<!<!X>DOCTYPE ..."): repeat until nothing is left. Each pass shrinks the data.
    while removed:
        cleaned, removed = strip_declarations(cleaned)
        kinds.extend(removed)
    try:
        SafeET.fromstring(cleaned, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeFeed(f"a DTD survived neutralisation: {exc!r}") from exc
    except (StdET.ParseError, LookupError, ValueError):
        pass  # malformed or in an encoding expat lacks: feedparser's lenient parser copes
    return Neutralised(cleaned, tuple(dict.fromkeys(kinds)), transcoded_from)
