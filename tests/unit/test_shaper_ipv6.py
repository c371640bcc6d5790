"""The verdict loop's core and the prober with IPv6 packets: whole-datagram checks,
corruption after the fixed header, duplicates injected as whole IPv6 datagrams, ICMPv6."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

from socketlab.shaper.core import (
    Impairment,
    ImpairmentScheduler,
    Inject,
    corrupt_payload,
    ip_version,
    is_whole_datagram,
)
from socketlab.shaper.icmp import ECHO6_REPLY, echo6_request, parse_echo6_reply
from socketlab.shaper.loop import _destination

SRC, DST = "fd00:5c:200::4", "fd00:5c:200::3"


def ipv6_packet(payload: bytes, *, next_header: int = 17) -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(payload), next_header, 64)
    return header + ipaddress.IPv6Address(SRC).packed + ipaddress.IPv6Address(DST).packed + payload


class Packet:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload


def test_a_whole_ipv6_datagram_is_recognised_and_a_cut_one_is_not() -> None:
    packet = ipv6_packet(b"x" * 100)
    assert ip_version(packet) == 6
    assert is_whole_datagram(packet)
    assert not is_whole_datagram(packet[:-1])  # cut short by the queue's copy range
    assert not is_whole_datagram(packet[:30])
    assert not is_whole_datagram(b"")


def test_corruption_keeps_the_ipv6_header_and_flips_one_bit_after_it() -> None:
    packet = ipv6_packet(bytes(64))
    rng = random.Random(7)
    for _ in range(50):
        corrupted = corrupt_payload(packet, rng)
        assert corrupted[:40] == packet[:40]
        flipped = [i for i, (a, b) in enumerate(zip(packet, corrupted, strict=True)) if a != b]
        assert len(flipped) == 1
        assert bin(packet[flipped[0]] ^ corrupted[flipped[0]]).count("1") == 1
    assert corrupt_payload(ipv6_packet(b""), rng) == ipv6_packet(b"")


def test_a_duplicate_of_an_ipv6_packet_is_injected_whole_to_its_destination() -> None:
    scheduler: ImpairmentScheduler[Packet] = ImpairmentScheduler(
        Impairment(duplicate=1.0), rng=random.Random(1)
    )
    packet = Packet(ipv6_packet(b"hello"))
    assert scheduler.admit(packet, 0.0)
    copies = [v for v in scheduler.pop_due(1.0) if isinstance(v, Inject)]
    assert [copy.payload for copy in copies] == [packet.payload]
    assert _destination(copies[0].payload) == DST
    assert scheduler.counters.duplicated == 1


def test_the_injector_reads_the_ipv4_destination_as_before() -> None:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                         socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.3"))  # fmt: skip
    assert _destination(header + bytes(8)) == "10.0.0.3"


def test_icmpv6_echo_request_and_reply() -> None:
    request = echo6_request(0x1234, 7, b"probe")
    assert request[:2] == bytes([128, 0])
    assert request[2:4] == b"\0\0"  # the kernel fills the checksum in
    reply = bytes([ECHO6_REPLY, 0]) + request[2:]
    assert parse_echo6_reply(reply, 0x1234) == 7
    assert parse_echo6_reply(reply, 0x9999) is None  # someone else's ping
    assert parse_echo6_reply(request, 0x1234) is None  # a request, not a reply
    assert parse_echo6_reply(reply[:5], 0x1234) is None
