"""Framing of the lab wire protocol (SPEC §3.12 and §4), without any I/O.

A message on the wire is::

    +----------------+---------------------------+---------------------+
    | 2 bytes, >H    | JSON header, UTF-8        | content             |
    | header length  | (header length bytes)     | (content-length     |
    |                |                           |  bytes)             |
    +----------------+---------------------------+---------------------+

The JSON header is an object with at least ``byteorder`` ("little"/"big"),
``content-type``, ``content-encoding`` and ``content-length``; any other keys
are ours (``action``, ``name``, ``sha256``, ...) and are passed through. This is
the same layout as the Real Python selectors tutorial (libclient/libserver), so
a client written for it talks to us unchanged.

:class:`FrameDecoder` works like h11: feed it bytes with :meth:`receive_data`
(``b""`` means EOF) and pull events with :meth:`next_event` until it returns
:data:`NEED_DATA`. Every limit is checked *before* anything is allocated for
it: the header length as soon as its two bytes are in, the content length as
soon as the JSON header parses.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from socketlab.protocol.errors import LocalProtocolError, RemoteProtocolError

PROTO_HEADER: Final = struct.Struct(">H")
MAX_HEADER_WIRE: Final = 0xFFFF  # what two bytes can express
REQUIRED_FIELDS: Final = ("byteorder", "content-type", "content-encoding", "content-length")
BYTEORDERS: Final = frozenset({"little", "big"})
# Encodings we decode text content with; "binary" means raw bytes. A short allowlist:
# codecs.lookup() of a peer-chosen name could pick a text transform like rot13.
TEXT_ENCODINGS: Final = frozenset({"utf-8", "utf8", "ascii"})
ENCODINGS: Final = TEXT_ENCODINGS | {"binary"}

DEFAULT_MAX_HEADER: Final = 16 * 1024
DEFAULT_MAX_CONTENT: Final = 1024 * 1024
DEFAULT_MAX_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Size limits a decoder enforces.

    ``max_content`` maps a content type to its cap; types not listed get
    ``default_max_content``. The JSON header cap can never exceed what two
    bytes express (65535).
    """

    max_header: int = DEFAULT_MAX_HEADER
    default_max_content: int = DEFAULT_MAX_CONTENT
    max_content: Mapping[str, int] = field(default_factory=dict)
    max_chunk: int = DEFAULT_MAX_CHUNK

    def __post_init__(self) -> None:
        if not 2 <= self.max_header <= MAX_HEADER_WIRE:
            raise ValueError(f"max_header must be within 2..{MAX_HEADER_WIRE}")
        if self.default_max_content < 0 or self.max_chunk < 1:
            raise ValueError("content limits must be non-negative, max_chunk positive")

    def content_cap(self, content_type: str) -> int:
        """The largest content length accepted for ``content_type``."""
        return self.max_content.get(content_type, self.default_max_content)


@dataclass(frozen=True)
class Header:
    """A message's JSON header (all fields, ours included)."""

    fields: Mapping[str, Any]

    @property
    def content_type(self) -> str:
        return str(self.fields["content-type"])

    @property
    def content_encoding(self) -> str:
        return str(self.fields["content-encoding"])

    @property
    def content_length(self) -> int:
        return int(self.fields["content-length"])

    @property
    def byteorder(self) -> str:
        return str(self.fields["byteorder"])

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True)
class Content:
    """A piece of the current message's content (never empty)."""

    data: bytes


@dataclass(frozen=True)
class MessageEnd:
    """The current message is complete."""


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer closed the stream cleanly, between two messages."""


class _Sentinel(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""Returned by :meth:`FrameDecoder.next_event` when more bytes are needed."""

Event = Header | Content | MessageEnd | ConnectionClosed


class _State(Enum):
    LENGTH = "length"  # waiting for the 2-byte header length
    HEADER = "header"  # waiting for the JSON header
    CONTENT = "content"  # passing content through
    END = "end"  # content complete, MessageEnd not yet emitted
    CLOSED = "closed"  # EOF seen at a message boundary
    ERROR = "error"  # a RemoteProtocolError was raised; unusable


class FrameDecoder:
    """Turns a byte stream into :data:`Event` values; no I/O."""

    def __init__(self, *, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._pos = 0  # consumed prefix of _buffer, compacted lazily
        self._eof = False
        self._state = _State.LENGTH
        self._header_length = 0
        self._remaining = 0

    @property
    def in_message(self) -> bool:
        """True from the first byte of a message until its MessageEnd."""
        return self._state is not _State.LENGTH or self.buffered > 0

    @property
    def content_remaining(self) -> int:
        """Content bytes of the current message not yet emitted."""
        return self._remaining if self._state is _State.CONTENT else 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buffer) - self._pos

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """Unparsed bytes and whether EOF was seen, for switching protocols (like h11).

        Only meaningful between messages, after the MessageEnd of the last one.
        """
        return bytes(self._buffer[self._pos :]), self._eof

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if self._eof:
            if data:
                raise RuntimeError("receive_data after EOF")
            return
        if not data:
            self._eof = True
            return
        if self.buffered == 0:
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    def consume_content(self, count: int) -> None:
        """Count ``count`` content bytes the caller read off the stream itself.

        For large content without copies in user space: once the buffered
        bytes are drained, a receiver may ``recv_into`` its own buffer up to
        :attr:`content_remaining` and report the count here instead of
        feeding them through :meth:`receive_data`. The message then ends
        (``MessageEnd``) as usual. RuntimeError when bytes are buffered, no
        content is expected, or ``count`` exceeds what remains: all caller bugs.
        """
        if self._state is not _State.CONTENT or self.buffered:
            raise RuntimeError("consume_content needs an empty buffer inside a message's content")
        if not 0 < count <= self._remaining:
            raise RuntimeError(f"consume_content({count}) with {self._remaining} bytes remaining")
        self._remaining -= count
        if not self._remaining:
            self._state = _State.END

    def next_event(self) -> Event | _Sentinel:
        """Return the next event, or NEED_DATA; raises RemoteProtocolError."""
        if self._state is _State.ERROR:
            raise RemoteProtocolError("decoder is unusable after an earlier protocol error")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._state = _State.ERROR
            raise

    def _next_event(self) -> Event | _Sentinel:
        # One handler per state; a handler that changes state without producing an
        # event returns None and the loop runs the next state's handler.
        handlers = {
            _State.LENGTH: self._on_length,
            _State.HEADER: self._on_header,
            _State.CONTENT: self._on_content,
            _State.END: self._on_end,
            _State.CLOSED: self._on_closed,
        }
        while True:
            result = handlers[self._state]()
            if result is not None:
                return result

    def _on_length(self) -> Event | _Sentinel | None:
        if self.buffered < PROTO_HEADER.size:
            return self._need_data_or_eof()
        (length,) = PROTO_HEADER.unpack_from(self._buffer, self._pos)
        self._check_header_length(length)
        self._pos += PROTO_HEADER.size
        self._header_length = length
        self._state = _State.HEADER
        return None

    def _on_header(self) -> Event | _Sentinel | None:
        if self.buffered < self._header_length:
            return self._need_data_or_eof()
        raw = bytes(self._buffer[self._pos : self._pos + self._header_length])
        self._pos += self._header_length
        header = self._parse_header(raw)
        self._remaining = header.content_length
        self._state = _State.CONTENT if self._remaining else _State.END
        self._compact()
        return header

    def _on_content(self) -> Event | _Sentinel | None:
        available = min(self.buffered, self._remaining, self.limits.max_chunk)
        if not available:
            return self._need_data_or_eof()
        chunk = bytes(self._buffer[self._pos : self._pos + available])
        self._pos += available
        self._remaining -= available
        if not self._remaining:
            self._state = _State.END
        self._compact()
        return Content(chunk)

    def _on_end(self) -> Event | _Sentinel | None:
        self._state = _State.LENGTH
        return MessageEnd()

    def _on_closed(self) -> Event | _Sentinel | None:
        return ConnectionClosed()

    def _need_data_or_eof(self) -> _Sentinel | ConnectionClosed:
        if not self._eof:
            return NEED_DATA
        if self._state is _State.LENGTH and self.buffered == 0:
            self._state = _State.CLOSED
            return ConnectionClosed()
        raise RemoteProtocolError(
            f"peer closed the connection in the middle of a message ({self._state.value})"
        )

    def _compact(self) -> None:
        # Drop the consumed prefix once it dominates, so a long stream stays O(n).
        if self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0

    def _check_header_length(self, length: int) -> None:
        if length == 0:
            raise RemoteProtocolError("JSON header length is 0")
        if length > self.limits.max_header:
            raise RemoteProtocolError(
                f"JSON header of {length} bytes exceeds the limit of {self.limits.max_header}"
            )

    def _parse_header(self, raw: bytes) -> Header:
        try:
            fields = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise RemoteProtocolError(f"JSON header is not valid UTF-8 JSON: {exc}") from exc
        return Header(validate_header_fields(fields, limits=self.limits))


def validate_header_fields(fields: Any, *, limits: Limits) -> dict[str, Any]:
    """Check a decoded JSON header; returns it as a dict or raises RemoteProtocolError."""
    if not isinstance(fields, dict):
        raise RemoteProtocolError("JSON header is not an object")
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise RemoteProtocolError(f"JSON header lacks required field(s): {', '.join(missing)}")
    if fields["byteorder"] not in BYTEORDERS:
        raise RemoteProtocolError(
            f"byteorder must be 'little' or 'big', not {fields['byteorder']!r}"
        )
    content_type = fields["content-type"]
    if not isinstance(content_type, str) or not content_type:
        raise RemoteProtocolError("content-type must be a non-empty string")
    if fields["content-encoding"] not in ENCODINGS:
        raise RemoteProtocolError(
            f"content-encoding {fields['content-encoding']!r} is not one of {sorted(ENCODINGS)}"
        )
    length = fields["content-length"]
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise RemoteProtocolError("content-length must be a non-negative integer")
    cap = limits.content_cap(content_type)
    if length > cap:
        raise RemoteProtocolError(
            f"content-length {length} exceeds the limit of {cap} for {content_type}"
        )
    return fields


def encode_header(
    content_type: str,
    content_length: int,
    *,
    content_encoding: str = "binary",
    extra: Mapping[str, Any] | None = None,
    max_header: int = MAX_HEADER_WIRE,
) -> bytes:
    """Return the 2-byte length and JSON header for a message (content follows)."""
    fields: dict[str, Any] = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": content_length,
    }
    if extra:
        clash = set(extra) & set(fields)
        if clash:
            raise LocalProtocolError(
                f"extra header fields clash with required ones: {sorted(clash)}"
            )
        fields.update(extra)
    try:
        validate_header_fields(fields, limits=Limits(default_max_content=content_length))
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from exc
    try:
        raw = json.dumps(fields, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"header is not JSON-serialisable: {exc}") from exc
    if len(raw) > min(max_header, MAX_HEADER_WIRE):
        raise LocalProtocolError(f"JSON header of {len(raw)} bytes is too large")
    return PROTO_HEADER.pack(len(raw)) + raw


def encode_message(
    content_type: str,
    content: bytes,
    *,
    content_encoding: str = "binary",
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """Return a whole message: length, JSON header and content."""
    header = encode_header(
        content_type, len(content), content_encoding=content_encoding, extra=extra
    )
    return header + content
