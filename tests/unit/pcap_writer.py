"""Small pcaps with known contents, for the packet-analysis tests.

Frames are built with dpkt (the library under test decodes them); records are
written by hand so a test can keep fewer bytes than the frame had, as
``tcpdump -s`` does, or damage the file.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
ETHERNET, RAW, SLL, SLL2, NFLOG = 1, 101, 113, 276, 239


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ip_packet(src: str, dst: str, transport: dpkt.Packet, proto: int) -> dpkt.Packet:
    if _family(src) == socket.AF_INET6:
        packet = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=proto,
            hlim=64,
            data=transport,
        )
        packet.plen = len(bytes(transport))
        return packet
    return dpkt.ip.IP(
        src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64, data=transport
    )


def tcp_options(*, mss: int | None = None, ts: tuple[int, int] | None = None) -> bytes:
    options = b""
    if mss is not None:
        options += struct.pack("!BBH", 2, 4, mss)
    if ts is not None:
        options += b"\x01\x01" + struct.pack("!BBII", 8, 10, *ts)
    while len(options) % 4:
        options += b"\x00"
    return options


def nflog_tlv(kind: int, value: bytes, byte_order: str = "<") -> bytes:
    """One NFLOG TLV: length and type in the writing host's order, padded to 4 bytes."""
    body = struct.pack(byte_order + "HH", 4 + len(value), kind) + value
    return body + b"\x00" * (-len(body) % 4)


def nflog_frame(network: bytes, *, byte_order: str = "<", family: int = 2) -> bytes:
    """What ``tcpdump -i nflog:N`` writes: header, a packet-header TLV, a prefix, the packet."""
    header = struct.pack("!BBH", family, 0, 7)
    hwproto = nflog_tlv(1, struct.pack("!HBB", 0x0800, 3, 0), byte_order)  # NFULA_PACKET_HDR
    prefix = nflog_tlv(10, b"socketlab\x00", byte_order)  # NFULA_PREFIX
    return header + hwproto + prefix + nflog_tlv(9, network, byte_order)


def link_frame(
    linktype: int, network: dpkt.Packet, *, outgoing: bool = False, byte_order: str = "<"
) -> bytes:
    six = isinstance(network, dpkt.ip6.IP6)
    ethertype = 0x86DD if six else 0x0800
    if linktype == ETHERNET:
        return bytes(
            dpkt.ethernet.Ethernet(
                src=b"\x02\x00\x00\x00\x00\x01",
                dst=b"\x02\x00\x00\x00\x00\x02",
                type=ethertype,
                data=network,
            )
        )
    if linktype == SLL:
        return bytes(
            dpkt.sll.SLL(type=4 if outgoing else 0, hdr=b"\x02" + b"\x00" * 7, ethtype=ethertype)
        ) + bytes(network)
    if linktype == SLL2:
        return bytes(
            dpkt.sll2.SLL2(
                ethtype=ethertype, intindex=2, type=4 if outgoing else 0, hdr=b"\x02" + b"\x00" * 7
            )
        ) + bytes(network)
    if linktype == RAW:
        return bytes(network)
    if linktype == NFLOG:
        return nflog_frame(bytes(network), byte_order=byte_order, family=10 if six else 2)
    raise ValueError(f"no frames for link type {linktype}")


@dataclass
class PcapWriter:
    """Collects records; ``bytes()`` gives the file. ``snaplen`` cuts frames as tcpdump does."""

    linktype: int = SLL2
    snaplen: int = 65535
    nano: bool = False
    byte_order: str = "<"
    records: list[tuple[float, bytes, int]] = field(default_factory=list)

    def frame(self, time: float, frame: bytes) -> None:
        self.records.append((time, frame[: self.snaplen], len(frame)))

    def tcp(
        self,
        time: float,
        src: str,
        dst: str,
        *,
        sport: int,
        dport: int,
        seq: int,
        ack: int = 0,
        flags: int = ACK,
        window: int = 65535,
        payload: bytes | int = b"",
        mss: int | None = None,
        ts: tuple[int, int] | None = None,
    ) -> None:
        data = b"x" * payload if isinstance(payload, int) else payload
        options = tcp_options(mss=mss, ts=ts)
        segment = dpkt.tcp.TCP(
            sport=sport,
            dport=dport,
            seq=seq % 2**32,
            ack=ack % 2**32,
            flags=flags,
            win=window,
            opts=options,
            data=data,
        )
        segment.off = (20 + len(options)) // 4
        network = ip_packet(src, dst, segment, 6)
        self.frame(time, link_frame(self.linktype, network, byte_order=self.byte_order))

    def udp(self, time: float, src: str, dst: str, *, sport: int, dport: int, data: bytes) -> None:
        datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
        datagram.ulen = 8 + len(data)
        network = ip_packet(src, dst, datagram, 17)
        self.frame(time, link_frame(self.linktype, network, byte_order=self.byte_order))

    def __bytes__(self) -> bytes:
        order = self.byte_order
        magic = 0xA1B23C4D if self.nano else 0xA1B2C3D4
        parts = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, self.snaplen, self.linktype)]
        scale = 10**9 if self.nano else 10**6
        for time, frame, original in self.records:
            seconds = int(time)
            fraction = round((time - seconds) * scale)
            parts.append(struct.pack(order + "IIII", seconds, fraction, len(frame), original))
            parts.append(frame)
        return b"".join(parts)

    def write(self, path: Path) -> Path:
        path.write_bytes(bytes(self))
        return path


class Conversation:
    """A TCP connection between a client and a server, with the bookkeeping done.

    ``send(side, n)`` sends ``n`` new bytes from ``side`` ("c" or "s") and returns
    the segment's sequence number; ``ack(side)`` acknowledges everything the other
    side sent so far. Sequence numbers start at ``isn`` on both sides.
    """

    def __init__(
        self,
        writer: PcapWriter,
        *,
        client: str = "10.0.0.1",
        server: str = "10.0.0.2",
        isn: int = 1000,
        timestamps: bool = False,
    ) -> None:
        self.writer = writer
        self.hosts = {"c": (client, 40000), "s": (server, 4571)}
        self.next = {"c": isn, "s": isn + 50_000}
        self.timestamps = timestamps
        self.ts_clock = {"c": 100, "s": 9000}
        self.last_ts_seen = {"c": 0, "s": 0}

    @staticmethod
    def peer(side: str) -> str:
        return "s" if side == "c" else "c"

    def segment(
        self,
        time: float,
        side: str,
        *,
        seq: int | None = None,
        payload: int = 0,
        flags: int = ACK,
        window: int = 65535,
        ack: int | None = None,
        ts_val: int | None = None,
        mss: int | None = None,
    ) -> int:
        src, sport = self.hosts[side]
        dst, dport = self.hosts[self.peer(side)]
        seq = self.next[side] if seq is None else seq
        ts = None
        if self.timestamps:
            value = ts_val if ts_val is not None else self.ts_clock[side]
            ts = (value, self.last_ts_seen[self.peer(side)])
            self.last_ts_seen[side] = value
        self.writer.tcp(
            time,
            src,
            dst,
            sport=sport,
            dport=dport,
            seq=seq,
            ack=self.next[self.peer(side)] if ack is None else ack,
            flags=flags,
            window=window,
            payload=payload,
            ts=ts,
            mss=mss,
        )
        return seq

    def handshake(self, time: float, rtt: float) -> None:
        self.segment(time, "c", flags=SYN, ack=0, mss=1460)
        self.next["c"] += 1
        self.segment(time + rtt / 2, "s", flags=SYN | ACK, mss=1460)
        self.next["s"] += 1
        self.segment(time + rtt, "c")

    def send(self, time: float, side: str, size: int, **options: int) -> int:
        seq = self.segment(time, side, payload=size, flags=ACK | PSH, **options)
        self.next[side] = max(self.next[side], seq + size)
        return seq

    def tick(self, side: str, by: int = 1) -> None:
        self.ts_clock[side] += by
