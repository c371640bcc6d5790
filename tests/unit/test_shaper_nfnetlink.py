"""The NFQUEUE netlink codec: byte layouts as the kernel's headers define them, and hostile input."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.shaper import nfnetlink as nl


def nlmsghdr(length: int, kind: int, flags: int, sequence: int) -> bytes:
    return struct.pack("=IHHII", length, kind, flags, sequence, 0)


def packet_message(
    packet_id: int,
    payload: bytes = b"",
    *,
    queue: int = 1,
    cap_len: int | None = None,
    skb_info: int | None = None,
) -> bytes:
    """A queued-packet message as the kernel sends it (nfqnl_build_packet_message)."""
    body = nl.attribute(nl.ATTR_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 0))
    body += nl.attribute(5, struct.pack("!I", 7))  # NFQA_IFINDEX_INDEV: skipped
    if payload:
        body += nl.attribute(nl.ATTR_PAYLOAD, payload)
    if cap_len is not None:
        body += nl.attribute(nl.ATTR_CAP_LEN, struct.pack("!I", cap_len))
    if skb_info is not None:
        body += nl.attribute(nl.ATTR_SKB_INFO, struct.pack("!I", skb_info))
    inner = struct.pack("!BBH", 2, 0, queue) + body
    return nlmsghdr(16 + len(inner), 0x0300, 0, 0) + inner


def ack_message(sequence: int, error: int) -> bytes:
    body = struct.pack("=i", error) + nlmsghdr(36, 0x0302, 5, sequence)
    return nlmsghdr(16 + len(body), nl.NLMSG_ERROR, 0, sequence) + body


def test_configure_is_one_acknowledged_request_in_the_kernels_layout() -> None:
    data = nl.configure(
        5, sequence=9, copy_mode=nl.COPY_META, copy_range=0, maxlen=16384,
        flags=nl.FLAG_GSO, mask=nl.FLAG_GSO | nl.FLAG_FAIL_OPEN,
    )  # fmt: skip
    expected_body = (
        b"\x00\x00\x00\x05"  # nfgenmsg: AF_UNSPEC, version 0, queue 5 (big-endian)
        + struct.pack("=HH", 8, 1) + b"\x01\x00\x00\x02"  # CFG_CMD: BIND, pad, AF_INET
        + struct.pack("=HH", 9, 2) + b"\x00\x00\x00\x00\x01\x00\x00\x00"  # PARAMS: 5 B + pad
        + struct.pack("=HH", 8, 3) + struct.pack("!I", 16384)  # QUEUE_MAXLEN
        + struct.pack("=HH", 8, 5) + struct.pack("!I", 4)  # FLAGS: GSO
        + struct.pack("=HH", 8, 4) + struct.pack("!I", 5)  # MASK: GSO | FAIL_OPEN
    )  # fmt: skip
    # type: subsystem 3 (queue) << 8 | config; flags: REQUEST | ACK
    assert data == nlmsghdr(16 + len(expected_body), 0x0302, 0x5, 9) + expected_body


def test_configure_without_a_mask_leaves_the_flags_alone() -> None:
    data = nl.configure(1, sequence=1, copy_mode=nl.COPY_PACKET, copy_range=0xFFFB, maxlen=10)
    assert struct.pack("=HH", 8, 5) not in data
    assert struct.pack("!IB", 0xFFFB, 2) in data


def test_verdicts_round_trip_in_order() -> None:
    data = (
        nl.verdict(3, 41, nl.NF_DROP)
        + nl.verdict(3, 42, nl.NF_ACCEPT, b"new bytes")
        + nl.batch_verdict(3, 99, nl.NF_ACCEPT)
    )
    assert nl.parse_verdicts(data) == [
        nl.Verdict(3, 41, nl.NF_DROP),
        nl.Verdict(3, 42, nl.NF_ACCEPT, payload=b"new bytes"),
        nl.Verdict(3, 99, nl.NF_ACCEPT, batch=True),
    ]


def test_a_verdict_is_the_kernels_verdict_header() -> None:
    data = nl.verdict(0x1234, 0xDEADBEEF, nl.NF_ACCEPT)
    assert data[4:6] == struct.pack("=H", 0x0301)
    assert data[16:20] == b"\x00\x00\x12\x34"
    assert data[20:] == struct.pack("=HH", 12, 2) + struct.pack("!II", 1, 0xDEADBEEF)
    assert nl.batch_verdict(1, 5, nl.NF_ACCEPT)[4:6] == struct.pack("=H", 0x0303)


def test_packets_and_acks_are_read_from_one_buffer() -> None:
    data = (
        packet_message(1, b"E" + b"\x00" * 39)
        + ack_message(7, 0)
        + packet_message(2, cap_len=65000, skb_info=nl.SKB_INFO_GSO)
        + ack_message(8, -16)
    )
    packets, acks = nl.parse_messages(data)
    assert [(p.packet_id, p.payload[:1], p.length, p.gso) for p in packets] == [
        (1, b"E", 40, False),
        (2, b"", 65000, True),
    ]
    assert acks == [nl.Ack(sequence=7, error=0), nl.Ack(sequence=8, error=-16)]


def test_only_the_bytes_read_are_parsed() -> None:
    buffer = bytearray(4096)
    message = packet_message(5, b"abcd")
    buffer[: len(message)] = message
    packets, _ = nl.parse_messages(buffer, len(message))
    assert [p.packet_id for p in packets] == [5]


def test_a_new_payload_is_what_the_core_reads_back() -> None:
    packet = nl.NfqPacket(packet_id=1, payload=b"old", length=3)
    packet.set_payload(b"new")
    assert packet.get_payload() == b"new"
    assert packet.payload == b"old"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(packet_message(1, b"xy")[:-4], "overruns", id="cut-short"),
        pytest.param(nlmsghdr(8, 0x0300, 0, 0) + b"\0" * 8, "overruns|length 8", id="tiny"),
        pytest.param(
            nlmsghdr(20, 0x0300, 0, 0) + b"\0\0\0\1", "without its packet header", id="no-header"
        ),
        pytest.param(
            nlmsghdr(28, 0x0300, 0, 0) + b"\0\0\0\1" + struct.pack("=HH", 200, 1) + b"\0" * 4,
            "attribute of length 200",
            id="attribute-overrun",
        ),
        pytest.param(nlmsghdr(18, nl.NLMSG_ERROR, 0, 0) + b"\0\0", "error code", id="bad-ack"),
    ],
)
def test_malformed_messages_are_a_netlink_error(data: bytes, message: str) -> None:
    with pytest.raises(nl.NetlinkError, match=message):
        nl.parse_messages(data)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_parsers(data: bytes) -> None:
    for parse in (nl.parse_messages, nl.parse_verdicts):
        with contextlib.suppress(nl.NetlinkError):
            parse(data)


@given(st.binary(max_size=200), st.integers(0, 2**32 - 1))
def test_mutated_packet_messages_never_crash(noise: bytes, packet_id: int) -> None:
    data = bytearray(packet_message(packet_id, b"payload!"))
    for index, byte in enumerate(noise[: len(data)]):
        data[index] ^= byte
    try:
        packets, _ = nl.parse_messages(bytes(data))
    except nl.NetlinkError:
        return
    for packet in packets:
        assert len(packet.payload) <= len(data)


def test_queue_stats_are_read_from_procfs_text() -> None:
    text = "    1  31337     2 1     0     5     7    63982  1\nnot numbers at all\n   9 1\n"
    assert nl.parse_queue_stats(text) == {
        1: nl.QueueStats(
            queue=1, port=31337, waiting=2, copy_mode=1, copy_range=0,
            queue_dropped=5, user_dropped=7, last_id=63982,
        )
    }  # fmt: skip
