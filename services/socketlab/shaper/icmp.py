"""ICMP and ICMPv6 echo packets for the link prober: build requests, read replies. No I/O.

An IPv4 raw socket hands over whole datagrams (IP header included); an ICMPv6
raw socket only the ICMPv6 message, whose checksum the kernel computes and
checks (it covers a pseudo-header we do not see).
"""

from __future__ import annotations

import struct

ECHO_REQUEST = 8
ECHO_REPLY = 0
ECHO6_REQUEST = 128
ECHO6_REPLY = 129
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(identifier: int, sequence: int, payload: bytes = b"") -> bytes:
    """An ICMP echo request (without IP header) with a valid checksum."""
    ident, seq = identifier & 0xFFFF, sequence & 0xFFFF
    unsummed = _HEADER.pack(ECHO_REQUEST, 0, 0, ident, seq) + payload
    return _HEADER.pack(ECHO_REQUEST, 0, checksum(unsummed), ident, seq) + payload


def parse_echo_reply(datagram: bytes, identifier: int) -> int | None:
    """Sequence number of an intact echo reply to us in an IPv4 datagram, else None.

    Raw ICMP sockets see every ICMP packet of the namespace (other pings,
    errors, corrupted copies): anything not ours or not intact is ignored.
    """
    if len(datagram) < 20:
        return None
    header_len = (datagram[0] & 0x0F) * 4
    icmp = datagram[header_len:]
    if len(icmp) < _HEADER.size or checksum(icmp) != 0:
        return None
    kind, code, _, ident, seq = _HEADER.unpack_from(icmp)
    if kind != ECHO_REPLY or code != 0 or ident != identifier & 0xFFFF:
        return None
    return int(seq)


def echo6_request(identifier: int, sequence: int, payload: bytes = b"") -> bytes:
    """An ICMPv6 echo request; checksum 0, for the kernel fills it in on raw ICMPv6 sockets."""
    return _HEADER.pack(ECHO6_REQUEST, 0, 0, identifier & 0xFFFF, sequence & 0xFFFF) + payload


def parse_echo6_reply(message: bytes, identifier: int) -> int | None:
    """Sequence number of an ICMPv6 echo reply to us, else None (the kernel dropped
    any with a bad checksum before we see them)."""
    if len(message) < _HEADER.size:
        return None
    kind, code, _, ident, seq = _HEADER.unpack_from(message)
    if kind != ECHO6_REPLY or code != 0 or ident != identifier & 0xFFFF:
        return None
    return int(seq)
