"""The UDP demo's datagram format (sans-IO: bytes in, values out).

Every datagram the sender emits still reads as ``Message #n`` in a packet
capture, followed by a compact binary header the listener parses::

    Message #<seq>\\n                      ASCII text line (what humans see)
    magic      4 bytes  b"SLU1"           format name and version
    sender_id  uint32                     chosen by the sender (random per run by default)
    seq        uint64                     sequence number, 1, 2, 3, ... within one run
    sent_ns    uint64                     send time, ns since the Unix epoch, strictly increasing
    length     uint16                     total datagram length, text line and padding included
    crc32      uint32                     zlib.crc32 of the whole datagram minus these 4 bytes
    padding    0+ bytes b"."              filler up to the requested datagram size

All integers are big-endian. The header starts right after the first ``\\n``,
so its offset depends on the number of digits in ``seq``; the text's number
and the header's ``seq`` must agree.

Classification, applied by :func:`classify`:

* **valid**: text line, magic and header all check out.
* **foreign**: the bytes after the first line do not start with the magic
  (plain text from ``socat``/``nc``, anything else); never an error, just counted.
* **malformed**: the magic is there but the rest is wrong: truncated header,
  length or CRC mismatch (truncation, corruption), text and header disagree.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import Enum

from socketlab.errors import SocketlabError

MAGIC = b"SLU1"
_HEADER = struct.Struct("!4sIQQHI")
HEADER_SIZE = _HEADER.size
_CRC_SIZE = 4
_HEADER_NO_CRC = struct.Struct("!4sIQQH")
_CRC = struct.Struct("!I")
MAX_DATAGRAM = 65507  # largest UDP payload over IPv4
PADDING_BYTE = b"."


class DatagramError(SocketlabError):
    """A datagram could not be built or does not follow the format above."""


class Kind(Enum):
    """How the listener classifies one received datagram."""

    VALID = "valid"
    FOREIGN = "foreign"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Datagram:
    """One decoded datagram of ours."""

    sender_id: int
    seq: int
    sent_ns: int
    length: int


@dataclass(frozen=True, slots=True)
class Classified:
    """The result of :func:`classify`: a kind, the datagram when valid, why when not."""

    kind: Kind
    datagram: Datagram | None = None
    reason: str = ""


def minimum_size(seq: int) -> int:
    """Smallest datagram that can carry sequence number ``seq`` (no padding)."""
    return len(b"Message #%d\n" % seq) + HEADER_SIZE


def encode(*, sender_id: int, seq: int, sent_ns: int, size: int = 0) -> bytes:
    """Build one datagram, padded to ``size`` bytes when ``size`` is above the minimum.

    Raises :class:`DatagramError` for out-of-range fields or a size above
    :data:`MAX_DATAGRAM`. A ``size`` below the minimum gives the minimum.
    """
    if not 0 <= sender_id <= 0xFFFFFFFF:
        raise DatagramError(f"sender id {sender_id} is outside 0..2**32-1")
    if not 1 <= seq <= 0xFFFFFFFFFFFFFFFF:
        raise DatagramError(f"sequence number {seq} is outside 1..2**64-1")
    if not 0 <= sent_ns <= 0xFFFFFFFFFFFFFFFF:
        raise DatagramError(f"send time {sent_ns} is outside 0..2**64-1")
    text = b"Message #%d\n" % seq
    length = max(size, len(text) + HEADER_SIZE)
    if length > MAX_DATAGRAM:
        raise DatagramError(f"datagram size {length} is above {MAX_DATAGRAM}")
    head = text + _HEADER.pack(MAGIC, sender_id, seq, sent_ns, length, 0)[:-_CRC_SIZE]
    padding = PADDING_BYTE * (length - len(head) - _CRC_SIZE)
    crc = zlib.crc32(padding, zlib.crc32(head))
    return head + crc.to_bytes(_CRC_SIZE, "big") + padding


class Encoder:
    """One sender's datagrams of one size, written into one reused buffer: what
    :func:`encode` builds, with no per-datagram allocation but the text line.

    The padding is the same in every datagram of a layout (the text's length), so
    its CRC is folded in by four table lookups instead of a pass over it: zlib's
    CRC-32 of fixed bytes ``P`` from a start value ``v`` is ``L(v) ^ crc32(P)``
    with ``L`` linear in ``v``, so ``L`` is tabulated per byte of ``v``. The
    buffer returned is overwritten by the next call: send it before that.
    """

    def __init__(self, *, sender_id: int, size: int = 0) -> None:
        if not 0 <= sender_id <= 0xFFFFFFFF:
            raise DatagramError(f"sender id {sender_id} is outside 0..2**32-1")
        if size > MAX_DATAGRAM:
            raise DatagramError(f"datagram size {size} is above {MAX_DATAGRAM}")
        self.sender_id = sender_id
        self.size = size
        self._text_length = -1
        self._buffer = bytearray()
        self._view = memoryview(self._buffer)
        self._length = self._crc_at = self._padding_crc = 0
        self._tables: tuple[list[int], ...] = ()

    def _layout(self, text_length: int) -> None:
        length = max(self.size, text_length + HEADER_SIZE)
        if length > MAX_DATAGRAM:
            raise DatagramError(f"datagram size {length} is above {MAX_DATAGRAM}")
        self._crc_at = text_length + HEADER_SIZE - _CRC_SIZE
        padding = PADDING_BYTE * (length - self._crc_at - _CRC_SIZE)
        zero = zlib.crc32(padding)
        self._padding_crc = zero
        self._tables = tuple(
            [zlib.crc32(padding, byte << shift) ^ zero for byte in range(256)]
            for shift in (0, 8, 16, 24)
        )
        self._view.release()
        self._buffer = bytearray(self._crc_at + _CRC_SIZE) + padding
        self._view = memoryview(self._buffer)
        self._length = length
        self._text_length = text_length

    def encode(self, seq: int, sent_ns: int) -> bytearray:
        """Datagram ``seq`` sent at ``sent_ns``, byte for byte what :func:`encode` gives."""
        if not 1 <= seq <= 0xFFFFFFFFFFFFFFFF or not 0 <= sent_ns <= 0xFFFFFFFFFFFFFFFF:
            raise DatagramError(f"sequence number {seq} or send time {sent_ns} out of range")
        text = b"Message #%d\n" % seq
        if len(text) != self._text_length:
            self._layout(len(text))
        buffer = self._buffer
        buffer[: len(text)] = text
        _HEADER_NO_CRC.pack_into(
            buffer, len(text), MAGIC, self.sender_id, seq, sent_ns, self._length
        )
        crc_at = self._crc_at
        head = zlib.crc32(self._view[:crc_at])
        low, mid, high, top = self._tables
        crc = (
            low[head & 0xFF]
            ^ mid[(head >> 8) & 0xFF]
            ^ high[(head >> 16) & 0xFF]
            ^ top[head >> 24]
            ^ self._padding_crc
        )
        _CRC.pack_into(buffer, crc_at, crc)
        return buffer


def decode(data: bytes) -> Datagram:
    """Decode one datagram of ours; raises :class:`DatagramError` on anything else."""
    result = classify(data)
    if result.datagram is None:
        raise DatagramError(f"{result.kind.value} datagram: {result.reason}")
    return result.datagram


def classify(data: bytes) -> Classified:
    """Classify ``data`` as valid, foreign or malformed; never raises."""
    fields = parse(data)
    if isinstance(fields, Classified):
        return fields
    return Classified(Kind.VALID, Datagram(*fields, len(data)))


def parse(data: bytes) -> tuple[int, int, int] | Classified:
    """``(sender_id, seq, sent_ns)`` of a valid datagram, else why not; never raises.

    The listener's hot path: no objects are built for valid datagrams.
    """
    newline = data.find(b"\n", 0, 32)
    start = newline + 1
    if newline < 0 or not data.startswith(MAGIC, start):
        return _NOT_OURS
    if len(data) < start + HEADER_SIZE:
        return Classified(Kind.MALFORMED, reason="truncated header")
    _, sender_id, seq, sent_ns, length, crc = _HEADER.unpack_from(data, start)
    if length != len(data):
        return Classified(Kind.MALFORMED, reason=f"length field {length}, got {len(data)} bytes")
    crc_at = start + HEADER_SIZE - _CRC_SIZE
    view = memoryview(data)
    if zlib.crc32(view[crc_at + _CRC_SIZE :], zlib.crc32(view[:crc_at])) != crc:
        return Classified(Kind.MALFORMED, reason="CRC mismatch")
    # Comparing with the canonical text is cheaper than a regex and refuses "#007"; the
    # text ends at the first newline, so starting with it means it is the whole line.
    if seq == 0 or not data.startswith(b"Message #%d\n" % seq):
        return Classified(Kind.MALFORMED, reason="text line does not match the header")
    return sender_id, seq, sent_ns


_NOT_OURS = Classified(Kind.FOREIGN, reason="no socketlab header")
