"""The self-check's one-way stream: numbered UDP datagrams and the order they arrive in. No I/O.

``socketlab probe HOST --stream PORT`` sends ``count`` datagrams (:func:`encode`)
through the shaped link; ``socketlab probe --listen PORT`` in the destination's
namespace records each one's first arrival (:class:`ArrivalLog`), so the
controller reads reordering of one direction only, whatever shapes the way
back. A datagram carries a run number so strays (an earlier check's late
copies, anyone else's traffic) are ignored, and the log is bounded by the
count it expects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAGIC = b"SLPS"
_HEADER = struct.Struct("!4sII")  # magic, run, sequence number
HEADER_SIZE = _HEADER.size
MAX_RUN = 0xFFFFFFFF


def encode(run: int, seq: int, size: int = HEADER_SIZE) -> bytes:
    """Datagram ``seq`` of stream ``run``, padded with zeros to ``size`` bytes."""
    return _HEADER.pack(MAGIC, run & MAX_RUN, seq & 0xFFFFFFFF).ljust(size, b"\0")


def decode(datagram: bytes, run: int) -> int | None:
    """The sequence number of a datagram of stream ``run``, else None."""
    if len(datagram) < HEADER_SIZE:
        return None
    magic, got_run, seq = _HEADER.unpack_from(datagram)
    if magic != MAGIC or got_run != run & MAX_RUN:
        return None
    return int(seq)


@dataclass
class ArrivalLog:
    """First arrivals of the numbers ``0 .. count - 1``, in arrival order (mutable).

    Anything else (out of range, a repeat) is counted, never stored, so the log
    holds at most ``count`` numbers however much arrives.
    """

    count: int
    order: list[int] = field(default_factory=list)
    duplicates: int = 0
    strays: int = 0
    _seen: set[int] = field(default_factory=set)

    def add(self, seq: int | None) -> None:
        if seq is None or not 0 <= seq < self.count:
            self.strays += 1
        elif seq in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(seq)
            self.order.append(seq)

    @property
    def complete(self) -> bool:
        return len(self.order) >= self.count

    def report(self) -> dict[str, object]:
        return {
            "expected": self.count,
            "received": len(self.order),
            "duplicates": self.duplicates,
            "strays": self.strays,
            "arrivals": list(self.order),
        }
