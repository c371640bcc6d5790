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
    if newline < 0 or data[start : start + len(MAGIC)] != MAGIC:
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
    # Comparing with the canonical text is cheaper than a regex and refuses "#007".
    if seq == 0 or data[:start] != b"Message #%d\n" % seq:
        return Classified(Kind.MALFORMED, reason="text line does not match the header")
    return sender_id, seq, sent_ns


_NOT_OURS = Classified(Kind.FOREIGN, reason="no socketlab header")
