"""The NFQUEUE netlink protocol as bytes in, records out; pure (no sockets).

What the verdict loop says to the kernel's ``nfnetlink_queue`` and reads back,
after ``include/uapi/linux/netfilter/nfnetlink_queue.h``: every message is a
``nlmsghdr`` (host byte order), an ``nfgenmsg`` (the queue number in network
order) and attributes (``nlattr`` headers in host order, values in network
order), each padded to four bytes.

* Configuration (:func:`configure`: bind, copy mode, queue length, flags)
  asks for an acknowledgement; :func:`parse_messages` reads it back as an
  :class:`Ack` (error 0) or a failure.
* Packets arrive as :class:`NfqPacket` records: the kernel's id, the
  copied bytes (none in metadata mode), the packet's full length and whether it
  is a GSO super-packet.
* Verdicts: :func:`verdict` for one packet (optionally with a new payload),
  :func:`batch_verdict` for every queued packet up to an id. Several
  messages may go in one ``send``; the kernel handles them in order.

:func:`parse_queue_stats` reads ``/proc/net/netfilter/nfnetlink_queue``: the
kernel's own count of packets dropped because the queue was full, or because
our socket's buffer was.

The parser takes whatever bytes it is given: a truncated or malformed message
ends the parse of that buffer (:class:`NetlinkError`) rather than reading
past it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from socketlab.errors import ServiceError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFNETLINK_V0 = 0

MSG_PACKET = 0
MSG_VERDICT = 1
MSG_CONFIG = 2
MSG_VERDICT_BATCH = 3
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# config attributes and commands
CFG_CMD = 1
CFG_PARAMS = 2
CFG_QUEUE_MAXLEN = 3
CFG_MASK = 4
CFG_FLAGS = 5
CMD_BIND = 1
COPY_NONE = 0
COPY_META = 1
COPY_PACKET = 2
# The kernel's largest copy range (0xffff less an attribute header).
MAX_COPY_RANGE = 0xFFFF - 4
# queue flags
FLAG_FAIL_OPEN = 0x1
FLAG_GSO = 0x4

# packet attributes
ATTR_PACKET_HDR = 1
ATTR_VERDICT_HDR = 2
ATTR_PAYLOAD = 10
ATTR_CAP_LEN = 13
ATTR_SKB_INFO = 14
SKB_INFO_GSO = 0x2
_ATTR_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

NF_DROP = 0
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_BE32X2 = struct.Struct("!II")
_HEADERS = _NLMSGHDR.size + _NFGENMSG.size
_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | MSG_PACKET


class NetlinkError(ServiceError):
    """A netlink message the verdict loop cannot read (or the kernel refused ours)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """The kernel's answer to a request: ``error`` 0 is success, else a negative errno."""

    sequence: int
    error: int


@dataclass(slots=True)
class NfqPacket:
    """One packet the kernel queued for a verdict.

    ``payload`` is what was copied (empty in metadata mode, cut at the copy
    range); ``length`` is the packet's real length. Fits the scheduling
    core's packet protocol: ``set_payload`` records a new payload for the verdict.
    """

    packet_id: int
    payload: bytes
    length: int
    gso: bool = False
    new_payload: bytes | None = None

    def get_payload(self) -> bytes:
        return self.payload if self.new_payload is None else self.new_payload

    def set_payload(self, payload: bytes) -> None:
        self.new_payload = payload


def _align(length: int) -> int:
    return (length + 3) & ~3


def attribute(kind: int, value: bytes) -> bytes:
    """One ``nlattr``: header, value, padding to four bytes."""
    length = _NLATTR.size + len(value)
    return _NLATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def message(
    kind: int, queue: int, body: bytes, *, flags: int = NLM_F_REQUEST, sequence: int = 0
) -> bytes:
    """One nfnetlink queue message of type ``kind`` for ``queue`` (attributes in ``body``)."""
    payload = _NFGENMSG.pack(socket.AF_UNSPEC, NFNETLINK_V0, queue) + body
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(payload), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, sequence, 0
    )
    return header + payload


def configure(
    queue: int,
    *,
    sequence: int,
    copy_mode: int,
    copy_range: int,
    maxlen: int,
    flags: int = 0,
    mask: int = 0,
) -> bytes:
    """Bind ``queue`` to this socket and set it up, in one request (acknowledged).

    The kernel reads the parts in order: bind, what to copy of each packet
    (mode and bytes), how many packets it may hold, then the flags in
    ``mask`` set to their value in ``flags``. One request leaves no moment
    in which the queue is bound but copies nothing (the kernel drops packets then).
    """
    body = attribute(CFG_CMD, struct.pack("!BBH", CMD_BIND, 0, socket.AF_INET))
    # the kernel's nfqnl_msg_config_params is packed: 5 bytes
    body += attribute(CFG_PARAMS, struct.pack("!IB", copy_range, copy_mode))
    body += attribute(CFG_QUEUE_MAXLEN, _BE32.pack(maxlen))
    if mask:
        body += attribute(CFG_FLAGS, _BE32.pack(flags)) + attribute(CFG_MASK, _BE32.pack(mask))
    return message(MSG_CONFIG, queue, body, flags=NLM_F_REQUEST | NLM_F_ACK, sequence=sequence)


def verdict(queue: int, packet_id: int, decision: int, payload: bytes | None = None) -> bytes:
    """The verdict for one packet, with its new payload if it was changed."""
    body = attribute(ATTR_VERDICT_HDR, _BE32X2.pack(decision, packet_id))
    if payload is not None:
        body += attribute(ATTR_PAYLOAD, payload)
    return message(MSG_VERDICT, queue, body)


def batch_verdict(queue: int, upto: int, decision: int) -> bytes:
    """The same verdict for every packet still queued whose id is at most ``upto``."""
    return message(
        MSG_VERDICT_BATCH, queue, attribute(ATTR_VERDICT_HDR, _BE32X2.pack(decision, upto))
    )


def _attributes(
    data: bytes | bytearray | memoryview, start: int, end: int
) -> dict[int, tuple[int, int]]:
    """Attribute type -> (value start, value end) for the attributes in ``data[start:end]``."""
    found: dict[int, tuple[int, int]] = {}
    offset = start
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            raise NetlinkError(f"attribute of length {length} at {offset} overruns its message")
        found[kind & _ATTR_TYPE_MASK] = (offset + _NLATTR.size, offset + length)
        offset += _align(length)
    return found


def _packet(data: bytes | bytearray | memoryview, start: int, end: int) -> NfqPacket:
    attrs = _attributes(data, start + _HEADERS, end)
    header = attrs.get(ATTR_PACKET_HDR)
    if header is None or header[1] - header[0] < _BE32.size:
        raise NetlinkError("queued packet without its packet header")
    (packet_id,) = _BE32.unpack_from(data, header[0])
    where = attrs.get(ATTR_PAYLOAD)
    payload = bytes(data[where[0] : where[1]]) if where is not None else b""
    length = len(payload)
    if (cap := attrs.get(ATTR_CAP_LEN)) is not None and cap[1] - cap[0] >= _BE32.size:
        (length,) = _BE32.unpack_from(data, cap[0])
    gso = False
    if (info := attrs.get(ATTR_SKB_INFO)) is not None and info[1] - info[0] >= _BE32.size:
        gso = bool(_BE32.unpack_from(data, info[0])[0] & SKB_INFO_GSO)
    return NfqPacket(packet_id=packet_id, payload=payload, length=length, gso=gso)


def parse_messages(
    data: bytes | bytearray | memoryview, size: int | None = None
) -> tuple[list[NfqPacket], list[Ack]]:
    """Packets and acknowledgements in the first ``size`` bytes of ``data`` (all by default).

    Other messages (no-ops, other subsystems) are skipped. :class:`NetlinkError`
    for a message whose length does not fit what was read.
    """
    end = len(data) if size is None else min(size, len(data))
    packets: list[NfqPacket] = []
    acks: list[Ack] = []
    offset = 0
    while offset + _NLMSGHDR.size <= end:
        length, kind, _flags, sequence, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            raise NetlinkError(f"message of length {length} at {offset} overruns the {end} read")
        if kind == _PACKET_TYPE:
            if length < _HEADERS:
                raise NetlinkError(f"queued-packet message of {length} bytes is too short")
            packets.append(_packet(data, offset, offset + length))
        elif kind == NLMSG_ERROR:
            if length < _NLMSGHDR.size + 4:
                raise NetlinkError("error message without its error code")
            (error,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
            acks.append(Ack(sequence=sequence, error=error))
        offset += _align(length)
    return packets, acks


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verdict message as the kernel reads it (``batch``: for every id up to ``packet_id``)."""

    queue: int
    packet_id: int
    decision: int
    batch: bool = False
    payload: bytes | None = None


def parse_verdicts(data: bytes | bytearray | memoryview) -> list[Verdict]:
    """The verdict messages in ``data``, in order (what the kernel would act on).

    The other direction of :func:`verdict` and :func:`batch_verdict`; other
    messages are skipped. :class:`NetlinkError` for a malformed one.
    """
    found: list[Verdict] = []
    offset, end = 0, len(data)
    single, batch = (
        (NFNL_SUBSYS_QUEUE << 8) | MSG_VERDICT,
        (NFNL_SUBSYS_QUEUE << 8) | MSG_VERDICT_BATCH,
    )
    while offset + _NLMSGHDR.size <= end:
        length, kind, _flags, _sequence, _port = _NLMSGHDR.unpack_from(data, offset)
        if length < _HEADERS or offset + length > end:
            raise NetlinkError(f"message of length {length} at {offset} overruns the {end} given")
        if kind in (single, batch):
            (queue,) = struct.unpack_from("!H", data, offset + _NLMSGHDR.size + 2)
            attrs = _attributes(data, offset + _HEADERS, offset + length)
            header = attrs.get(ATTR_VERDICT_HDR)
            if header is None or header[1] - header[0] < _BE32X2.size:
                raise NetlinkError("verdict without its verdict header")
            decision, packet_id = _BE32X2.unpack_from(data, header[0])
            where = attrs.get(ATTR_PAYLOAD)
            payload = bytes(data[where[0] : where[1]]) if where is not None else None
            found.append(Verdict(queue, packet_id, decision, kind == batch, payload))
        offset += _align(length)
    return found


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of ``/proc/net/netfilter/nfnetlink_queue``: the kernel's view of a queue."""

    queue: int
    port: int
    waiting: int  # packets queued, waiting for a verdict
    copy_mode: int
    copy_range: int
    queue_dropped: int  # the queue was full (max_len)
    user_dropped: int  # our socket's receive buffer was full
    last_id: int


def parse_queue_stats(text: str) -> dict[int, QueueStats]:
    """Queue number -> its counters; lines that do not read as numbers are skipped."""
    found: dict[int, QueueStats] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or not all(field.isdigit() for field in fields[:8]):
            continue
        values = [int(field) for field in fields[:8]]
        found[values[0]] = QueueStats(*values)
    return found
