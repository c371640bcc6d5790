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
EBCDIC documents are first transcoded to UTF-8. An EBCDIC document is decoded
with the code page its XML declaration names (cp500, ibm500, ebcdic-cp-be, ...),
read through cp037, whose letters, digits and punctuation of a declaration are
those of every EBCDIC code page; cp037 when it names none we know.

C0 control characters (but tab, CR and LF) are not allowed anywhere in XML, so
one hostile entry carrying an ESC would make the whole document malformed.
Each is replaced by a reference to a private-use stand-in (U+E000 + its code,
see :func:`restore_controls`), which parses, so the entry that carried it keeps
its text and only that entry is marked.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as StdET
from dataclasses import dataclass

import defusedxml
import defusedxml.ElementTree as SafeET

from socketlab.rss.errors import UnsafeFeed

_EBCDIC_SIGNATURE = b"\x4c\x6f\xa7\x94"  # "<?xm" in every EBCDIC code page

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
    (_EBCDIC_SIGNATURE, "cp037", 0),
    # No BOM and no declaration: not well-formed XML, but lenient parsers guess.
    (b"\x00<", "utf-16-be", 0),
    (b"<\x00", "utf-16-le", 0),
)
_WIDE_CHARSETS = {"utf16", "utf16be", "utf16le", "utf32", "utf32be", "utf32le"}
_DECLARED_ENCODING = re.compile(rb"""^(\s*<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")
_DECLARATION_NAME = re.compile(r"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")

# Control characters XML forbids, and where their private-use stand-ins start.
_FORBIDDEN_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
STAND_IN_BASE = 0xE000
_FORBIDDEN_CODES = (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20))
_RESTORE = {STAND_IN_BASE + code: code for code in _FORBIDDEN_CODES}
_CDATA = re.compile(rb"<!\[CDATA\[.*?(?:\]\]>|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Neutralised:
    """The document to parse, and what was done to it."""

    data: bytes
    removed: tuple[str, ...]  # kinds of declarations removed, e.g. ("DOCTYPE", "ENTITY")
    transcoded_from: str | None  # original encoding when the bytes were rewritten as UTF-8
    controls: int = 0  # forbidden control characters replaced by their stand-ins


def ebcdic_codepage(data: bytes) -> str:
    """The EBCDIC code page an XML declaration names (``cp037`` when it names none we know)."""
    head = data[:200].decode("cp037", errors="replace")
    match = _DECLARATION_NAME.match(head)
    if match is None:
        return "cp037"
    try:
        name = codecs.lookup(match.group(1)).name
    except LookupError:
        return "cp037"
    # Only a code page that reads the signature as "<?xm" is an EBCDIC one.
    try:
        is_ebcdic = _EBCDIC_SIGNATURE.decode(name) == "<?xm"
    except (UnicodeDecodeError, LookupError):
        is_ebcdic = False
    return name if is_ebcdic else "cp037"


def _wide_encoding(data: bytes, declared_charset: str | None) -> tuple[str, int] | None:
    for signature, encoding, skip in _SIGNATURES:
        if data.startswith(signature):
            if signature == _EBCDIC_SIGNATURE:
                return ebcdic_codepage(data), skip
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


def _stand_in(match: re.Match[bytes]) -> bytes:
    return b"&#x%X;" % (STAND_IN_BASE + match.group()[0])


def _cdata_stand_in(match: re.Match[bytes]) -> bytes:
    # A reference means nothing inside CDATA: close it, refer, reopen.
    return b"]]>&#x%X;<![CDATA[" % (STAND_IN_BASE + match.group()[0])


def replace_controls(data: bytes) -> tuple[bytes, int]:
    """Replace each control character XML forbids by a reference to its stand-in.

    The data must be in an ASCII-compatible encoding (in which those bytes are
    always characters of their own). Returns the new bytes and how many were replaced.
    """
    count = len(_FORBIDDEN_CONTROL.findall(data))
    if not count:
        return data, 0
    out: list[bytes] = []
    position = 0
    for section in _CDATA.finditer(data):
        out.append(_FORBIDDEN_CONTROL.sub(_stand_in, data[position : section.start()]))
        out.append(_FORBIDDEN_CONTROL.sub(_cdata_stand_in, section.group()))
        position = section.end()
    out.append(_FORBIDDEN_CONTROL.sub(_stand_in, data[position:]))
    return b"".join(out), count


def restore_controls(text: str) -> str:
    """Turn the stand-ins of :func:`replace_controls` back into the control characters.

    (A feed that used those private-use characters itself sees them shown as controls.)
    """
    return text.translate(_RESTORE)


def neutralise(data: bytes, *, declared_charset: str | None = None) -> Neutralised:
    """Return ``data`` without any DTD, safe for feedparser; raise UnsafeFeed if that fails."""
    transcoded_from = None
    wide = _wide_encoding(data, declared_charset)
    if wide is not None:
        encoding, skip = wide
        data = _to_utf8(data, encoding, skip)
        transcoded_from = encoding
    data, controls = replace_controls(data)
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
    return Neutralised(cleaned, tuple(dict.fromkeys(kinds)), transcoded_from, controls)
