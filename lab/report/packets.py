"""pcap files -> :class:`Packet` values: what the analysis needs of each IP packet.

**Library: dpkt** (``dpkt>=1.9.8``) decodes the link layer (Ethernet with VLAN
tags, Linux cooked v1 and v2 as ``tcpdump -i any`` writes them, raw IP) and
IPv4, IPv6 (extension headers), TCP (options) and UDP. NFLOG frames (``tcpdump -i
nflog:N``, how ``lab run`` captures what a link delivered: see
:mod:`lab.scenario.capture`) are unwrapped here, their TLVs bounded by the frame.
Chosen over the others:

* **dpkt**: pure Python, ~2 MB installed, no dependencies, BSD-3-Clause; decodes
  a packet in a few microseconds, an order of magnitude faster than scapy, and
  tolerates packets cut short by the capture's snap length (``tcpdump -s 256``).
  Its API has been stable for years (1.9.8, 2022; releases are rare because the
  protocols it parses do not change). It has no type hints: mypy ignores it and
  this module is the only one that touches its objects.
* scapy: GPL-2.0 (awkward beside this MIT project), tens of MB with optional
  dependencies, and far slower per packet: too much for counting segments.
* ``tshark -T json``: a Debian binary rather than a Python dependency (users
  need Wireshark installed), JSON of several KB per packet, and a subprocess
  whose output we would have to bound ourselves.

Only the pcap *record* loop is ours: dpkt's reader trusts each record's length
field, so a hostile file could make it allocate gigabytes. Here a record longer
than ``max_record`` ends the read as damaged, a file cut off mid-record ends it
too, and at most ``max_packets`` records are read; frames that do not decode are
counted, never raised. Sizes come from the IP and TCP/UDP headers, not from the
captured bytes, so a snap length that keeps only headers still gives true
payload and byte counts.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Final

import dpkt

from lab.report.config import PcapLimits
from lab.report.errors import PcapError

# Link types (https://www.tcpdump.org/linktypes.html) and their fixed header sizes.
LINKTYPE_NULL: Final = 0
LINKTYPE_ETHERNET: Final = 1
LINKTYPE_RAW: Final = 101
LINKTYPE_LOOP: Final = 108
LINKTYPE_LINUX_SLL: Final = 113
LINKTYPE_IPV4: Final = 228
LINKTYPE_IPV6: Final = 229
LINKTYPE_LINUX_SLL2: Final = 276
LINKTYPE_NFLOG: Final = 239
# Some systems write DLT_RAW's own number (12 or 14) instead of LINKTYPE_RAW.
_RAW_TYPES: Final = frozenset({LINKTYPE_RAW, 12, 14, LINKTYPE_IPV4, LINKTYPE_IPV6})
_AF_HEADER_TYPES: Final = frozenset({LINKTYPE_NULL, LINKTYPE_LOOP})
LINKTYPES: Final = frozenset(
    {
        LINKTYPE_ETHERNET,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_NFLOG,
        *_RAW_TYPES,
        *_AF_HEADER_TYPES,
    }
)
# NFLOG: a 4-byte header (family, version, resource id), then TLVs of (length, type)
# in the writing host's byte order, each padded to 4 bytes; type 9 is the packet.
_NFLOG_HEADER: Final = 4
_NFLOG_TLV_HEADER: Final = 4
NFULA_PAYLOAD: Final = 9

_MAGIC_MICRO: Final = 0xA1B2C3D4
_MAGIC_NANO: Final = 0xA1B23C4D
_PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_FILE_HEADER_SIZE: Final = 24
_RECORD_HEADER_SIZE: Final = 16

TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_ACK: Final = 0x10
_OPT_MSS: Final = 2
_OPT_SACK: Final = 5
_OPT_TIMESTAMP: Final = 8
_TIMESTAMP = struct.Struct("!II")
_MSS = struct.Struct("!H")
_IP_ETHERTYPES: Final = frozenset({0x0800, 0x86DD})

# What a frame that does not decode can raise inside dpkt (fuzzed: tests/unit).
_DECODE_ERRORS: Final = (dpkt.Error, struct.error, IndexError, ValueError, KeyError, TypeError)


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """The TCP header fields the analysis uses, and the payload length the IP header implies."""

    seq: int
    ack: int
    flags: int
    window: int
    payload: int  # bytes of data, from the headers (not what the capture kept)
    mss: int | None = None
    ts_val: int | None = None
    ts_ecr: int | None = None
    sack: bool = False

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)


@dataclass(frozen=True, slots=True)
class Packet:
    """One IP packet as captured. ``proto`` is ``tcp``, ``udp`` or ``ip`` (anything else)."""

    time: float  # seconds since the Unix epoch
    src: str
    dst: str
    length: int  # IP bytes on the wire: headers and payload
    proto: str = "ip"
    sport: int = 0
    dport: int = 0
    tcp: TcpSegment | None = None
    udp_length: int = 0  # UDP payload bytes, from the UDP header
    udp_data: bytes = b""  # the UDP payload as captured (may be cut by the snap length)


@dataclass(frozen=True, kw_only=True)
class PcapHeader:
    linktype: int
    snaplen: int
    nanoseconds: bool
    byte_order: str  # "<" or ">"


@dataclass(kw_only=True)
class ReadCounts:
    """What reading one file met, filled in while packets are read."""

    records: int = 0
    decoded: int = 0  # IP packets (TCP, UDP or other)
    not_ip: int = 0  # ARP, loopback chatter, anything without an IP header
    undecodable: int = 0  # frames that claim IP but do not decode
    damaged: str | None = None  # why the read stopped before the end of the file
    limited: bool = False  # stopped at max_packets


def read_header(stream: IO[bytes]) -> PcapHeader:
    """The pcap file header; PcapError when it is not a pcap we read."""
    head = stream.read(_FILE_HEADER_SIZE)
    if head[:4] == _PCAPNG_MAGIC:
        raise PcapError(
            "pcapng is not read here (tcpdump -w writes pcap; editcap -F pcap converts)"
        )
    if len(head) < _FILE_HEADER_SIZE:
        raise PcapError(f"not a pcap file: {len(head)} bytes, shorter than a pcap header")
    for order in ("<", ">"):
        (magic,) = struct.unpack_from(order + "I", head)
        if magic in {_MAGIC_MICRO, _MAGIC_NANO}:
            _major, _minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(
                order + "HHiIII", head, 4
            )
            linktype &= 0xFFFF  # the upper bits carry FCS information
            if linktype not in LINKTYPES:
                raise PcapError(f"link type {linktype} is not read here")
            return PcapHeader(
                linktype=linktype,
                snaplen=snaplen,
                nanoseconds=magic == _MAGIC_NANO,
                byte_order=order,
            )
    raise PcapError(f"not a pcap file: magic {head[:4].hex()}")


def iter_records(
    stream: IO[bytes], header: PcapHeader, *, limits: PcapLimits, counts: ReadCounts
) -> Iterator[tuple[float, bytes, int]]:
    """``(time, frame, original length)`` per record, bounded (see the module docstring)."""
    record = struct.Struct(header.byte_order + "IIII")
    divisor = 1e9 if header.nanoseconds else 1e6
    while True:
        head = stream.read(_RECORD_HEADER_SIZE)
        if not head:
            return
        if counts.records >= limits.max_packets:
            counts.limited = True
            return
        number = counts.records + 1
        if len(head) < _RECORD_HEADER_SIZE:
            counts.damaged = f"the file ends inside the header of record {number}"
            return
        seconds, fraction, captured, original = record.unpack(head)
        if captured > limits.max_record:
            counts.damaged = (
                f"record {number} claims {captured} bytes (more than {limits.max_record})"
            )
            return
        frame = stream.read(captured)
        if len(frame) < captured:
            counts.damaged = f"the file ends inside record {number}"
            return
        counts.records = number
        yield seconds + fraction / divisor, frame, max(original, captured)


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


def _tcp_segment(tcp: Any, payload: int) -> TcpSegment:
    mss = ts_val = ts_ecr = None
    sack = False
    for option in dpkt.tcp.parse_opts(tcp.opts) if tcp.opts else ():
        if option is None:  # dpkt's mark for an option cut short: ignore the rest
            break
        kind, data = option
        if kind == _OPT_MSS and len(data) == _MSS.size:
            (mss,) = _MSS.unpack(data)
        elif kind == _OPT_TIMESTAMP and len(data) == _TIMESTAMP.size:
            ts_val, ts_ecr = _TIMESTAMP.unpack(data)
        elif kind == _OPT_SACK:
            sack = True
    return TcpSegment(
        seq=tcp.seq,
        ack=tcp.ack,
        flags=tcp.flags,
        window=tcp.win,
        payload=payload,
        mss=mss,
        ts_val=ts_val,
        ts_ecr=ts_ecr,
        sack=sack,
    )


def _claimed_ip(network: Any, ethertype: int) -> Any:
    """dpkt leaves an IP header it could not parse as bytes: that frame is damaged."""
    if isinstance(network, bytes) and ethertype in _IP_ETHERTYPES:
        raise dpkt.UnpackError(f"ethertype {ethertype:#06x} but no IP header")
    return network


def nflog_payload(frame: bytes, byte_order: str = "<") -> tuple[bytes, int] | None:
    """The packet an NFLOG frame carries and its offset in the frame; None when it has none.

    The packet TLV may run past the frame's end (the capture's snap length cut it, as
    it cuts any frame); another TLV doing so raises ``dpkt.UnpackError``."""
    tlv = struct.Struct(byte_order + "HH")
    offset = _NFLOG_HEADER
    while offset + _NFLOG_TLV_HEADER <= len(frame):
        length, kind = tlv.unpack_from(frame, offset)
        if length < _NFLOG_TLV_HEADER:
            raise dpkt.UnpackError(f"NFLOG TLV of {length} bytes at {offset}")
        if kind & 0x7FFF == NFULA_PAYLOAD:  # the top bit is netlink's "nested" flag
            start = offset + _NFLOG_TLV_HEADER
            return frame[start : offset + length], start
        if offset + length > len(frame):
            raise dpkt.UnpackError(f"NFLOG TLV of {length} bytes at {offset} leaves the frame")
        offset += (length + 3) & ~3
    return None


def _ip_of(body: bytes, offset: int) -> tuple[Any, int]:
    version = body[0] >> 4 if body else 0
    if version == 4:
        return dpkt.ip.IP(body), offset
    if version == 6:
        return dpkt.ip6.IP6(body), offset
    return body, offset


def _link_payload(linktype: int, frame: bytes, byte_order: str = "<") -> tuple[Any, int]:
    """The network-layer object of a frame and the link header's size."""
    if linktype == LINKTYPE_NFLOG:
        found = nflog_payload(frame, byte_order)
        return (b"", len(frame)) if found is None else _ip_of(*found)
    if linktype == LINKTYPE_ETHERNET:
        ether = dpkt.ethernet.Ethernet(frame)
        tags = getattr(ether, "vlan_tags", None) or ()
        return _claimed_ip(ether.data, ether.type), 14 + 4 * len(tags)
    if linktype == LINKTYPE_LINUX_SLL:
        cooked = dpkt.sll.SLL(frame)
        return _claimed_ip(cooked.data, cooked.ethtype), 16
    if linktype == LINKTYPE_LINUX_SLL2:
        cooked2 = dpkt.sll2.SLL2(frame)
        return _claimed_ip(cooked2.data, cooked2.ethtype), 20
    offset = 4 if linktype in _AF_HEADER_TYPES else 0
    return _ip_of(frame[offset:], offset)


def decode(
    linktype: int, time: float, frame: bytes, original: int, *, byte_order: str = "<"
) -> Packet | None:
    """One frame -> a Packet; None when it carries no IP. Raises what dpkt raises when the
    frame claims IP but does not decode (:func:`read_packets` counts those). ``byte_order``
    is the file's (NFLOG frames keep the writing host's)."""
    network, link_header = _link_payload(linktype, frame, byte_order)
    on_wire = original - link_header  # IP bytes when the IP header cannot say (TSO: length 0)
    if isinstance(network, dpkt.ip.IP):
        family = socket.AF_INET
        length = network.len or on_wire
        transport_length = length - network.hl * 4
        fragment = network.offset != 0
    elif isinstance(network, dpkt.ip6.IP6):
        family = socket.AF_INET6
        length = 40 + network.plen if network.plen else on_wire
        extensions = sum(header.length for header in network.all_extension_headers)
        transport_length = length - 40 - extensions
        fragment = isinstance(network.data, bytes)
    else:
        return None
    packet = Packet(
        time=time,
        src=_address(family, network.src),
        dst=_address(family, network.dst),
        length=length,
    )
    transport = network.data
    if fragment or isinstance(transport, bytes):
        return packet
    if isinstance(transport, dpkt.tcp.TCP):
        payload = transport_length - transport.off * 4
        if payload < 0:
            raise dpkt.UnpackError("TCP header longer than its IP packet")
        return Packet(
            time=time,
            src=packet.src,
            dst=packet.dst,
            length=length,
            proto="tcp",
            sport=transport.sport,
            dport=transport.dport,
            tcp=_tcp_segment(transport, payload),
        )
    if isinstance(transport, dpkt.udp.UDP):
        if transport.ulen < 8:
            raise dpkt.UnpackError(f"UDP length {transport.ulen} is below its header's")
        return Packet(
            time=time,
            src=packet.src,
            dst=packet.dst,
            length=length,
            proto="udp",
            sport=transport.sport,
            dport=transport.dport,
            udp_length=transport.ulen - 8,
            udp_data=bytes(transport.data)[: transport.ulen - 8],
        )
    return packet


def read_packets(stream: IO[bytes], *, limits: PcapLimits, counts: ReadCounts) -> Iterator[Packet]:
    """Every IP packet of a pcap stream, in file order; PcapError for a file it cannot read."""
    header = read_header(stream)
    for time, frame, original in iter_records(stream, header, limits=limits, counts=counts):
        try:
            packet = decode(header.linktype, time, frame, original, byte_order=header.byte_order)
        except _DECODE_ERRORS:
            counts.undecodable += 1
            continue
        if packet is None:
            counts.not_ip += 1
            continue
        counts.decoded += 1
        yield packet
