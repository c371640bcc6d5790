"""Reading pcaps: link types, IPv4/IPv6, sizes from headers, and hostile files."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap_writer import ETHERNET, NFLOG, RAW, SLL, SLL2, Conversation, PcapWriter, nflog_tlv

from lab.report.analysis import analyze, analyze_file
from lab.report.config import PcapLimits
from lab.report.errors import PcapError
from lab.report.packets import ReadCounts, read_packets


def read(data: bytes, **limits: int) -> tuple[list, ReadCounts]:  # type: ignore[type-arg]
    counts = ReadCounts()
    packets = list(read_packets(io.BytesIO(data), limits=PcapLimits(**limits), counts=counts))
    return packets, counts


def small_capture(linktype: int = SLL2, **options: object) -> PcapWriter:
    writer = PcapWriter(linktype=linktype, **options)  # type: ignore[arg-type]
    talk = Conversation(writer)
    talk.handshake(100.0, 0.02)
    talk.send(100.1, "s", 1448)
    talk.segment(100.11, "c")
    return writer


@pytest.mark.parametrize(
    "linktype",
    [
        pytest.param(ETHERNET, id="ethernet"),
        pytest.param(SLL, id="linux-cooked"),
        pytest.param(SLL2, id="linux-cooked-v2"),
        pytest.param(RAW, id="raw-ip"),
        pytest.param(NFLOG, id="nflog"),
    ],
)
def test_every_link_type_gives_the_same_packets(linktype: int) -> None:
    packets, counts = read(bytes(small_capture(linktype)))
    assert counts.records == counts.decoded == 5
    assert [p.proto for p in packets] == ["tcp"] * 5
    data = packets[3]
    assert (data.src, data.sport, data.dst, data.dport) == ("10.0.0.2", 4571, "10.0.0.1", 40000)
    assert data.tcp is not None
    assert data.tcp.payload == 1448
    assert data.length == 20 + 20 + 1448
    assert packets[0].tcp is not None
    assert packets[0].tcp.mss == 1460


def test_sizes_come_from_headers_when_the_snap_length_cuts_the_payload() -> None:
    packets, _ = read(bytes(small_capture(snaplen=96)))
    data = packets[3]
    assert data.tcp is not None
    assert data.tcp.payload == 1448
    assert data.length == 1488


def test_ipv6_tcp_and_udp() -> None:
    writer = PcapWriter(linktype=ETHERNET)
    talk = Conversation(writer, client="fd00::1", server="fd00::2")
    talk.handshake(5.0, 0.01)
    talk.send(5.1, "c", 700)
    writer.udp(5.2, "fd00::1", "fd00::2", sport=1, dport=37020, data=b"abc")
    packets, counts = read(bytes(writer))
    assert counts.decoded == 5
    assert packets[3].src == "fd00::1"
    assert packets[3].tcp is not None
    assert packets[3].tcp.payload == 700
    assert packets[3].length == 40 + 20 + 700
    assert (packets[4].proto, packets[4].udp_length, packets[4].udp_data) == ("udp", 3, b"abc")


def test_nanosecond_and_big_endian_files() -> None:
    for options in ({"nano": True}, {"byte_order": ">"}):
        writer = PcapWriter(**options)  # type: ignore[arg-type]
        writer.tcp(1_700_000_000.123456789, "10.0.0.1", "10.0.0.2", sport=1, dport=2, seq=5)
        packets, _ = read(bytes(writer))
        assert packets[0].time == pytest.approx(1_700_000_000.123456789, abs=2e-6)


def test_frames_without_ip_are_counted_not_returned() -> None:
    writer = PcapWriter(linktype=ETHERNET)
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    writer.frame(1.0, arp)
    packets, counts = read(bytes(writer))
    assert packets == []
    assert (counts.records, counts.not_ip, counts.undecodable) == (1, 1, 0)


def test_a_frame_claiming_ip_that_does_not_decode_is_counted() -> None:
    writer = PcapWriter(linktype=ETHERNET)
    writer.frame(1.0, b"\x02" * 12 + b"\x08\x00" + b"\x45\x00")  # IPv4, cut after 2 bytes
    writer.frame(2.0, b"\x02" * 12 + b"\x08\x00" + b"\x4f" + b"\x00" * 60)  # ihl 15, len 0
    packets, counts = read(bytes(writer))
    assert counts.undecodable + counts.decoded == 2
    assert counts.undecodable >= 1
    assert all(p.length >= 0 for p in packets)


def test_a_file_cut_inside_a_record_keeps_what_came_before() -> None:
    data = bytes(small_capture())
    packets, counts = read(data[:-10])
    assert len(packets) == 4
    assert counts.damaged == "the file ends inside record 5"
    _, counts = read(data[: 24 + 5])
    assert counts.damaged == "the file ends inside the header of record 1"


def test_a_huge_record_length_ends_the_read_without_allocating() -> None:
    data = bytes(small_capture())
    hostile = data[:24] + struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 100
    packets, counts = read(hostile, max_record=65536)
    assert packets == []
    assert counts.damaged == f"record 1 claims {0xFFFFFFF0} bytes (more than 65536)"


def test_at_most_max_packets_are_read() -> None:
    packets, counts = read(bytes(small_capture()), max_packets=2)
    assert len(packets) == 2
    assert counts.limited


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "shorter than a pcap header", id="empty"),
        pytest.param(b"GIF89a" + b"\x00" * 40, "not a pcap file: magic 47494638", id="gif"),
        pytest.param(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40, "pcapng is not read here", id="pcapng"),
        pytest.param(
            struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147), "link type 147", id="usb"
        ),
    ],
)
def test_files_we_cannot_read_are_one_line_errors(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message) as caught:
        read(data)
    assert "\n" not in str(caught.value)


def test_analyze_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match=r"missing\.pcap: No such file"):
        analyze_file(tmp_path / "missing.pcap")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"nope" * 10)
    with pytest.raises(PcapError, match=r"bad\.pcap: not a pcap file"):
        analyze_file(bad)
    good = small_capture().write(tmp_path / "good.pcap")
    assert analyze_file(good).packets == 5


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from([ETHERNET, SLL, SLL2, RAW, NFLOG]),
    frames=st.lists(st.binary(max_size=120), max_size=8),
)
def test_arbitrary_frames_never_raise(linktype: int, frames: list[bytes]) -> None:
    writer = PcapWriter(linktype=linktype)
    for index, frame in enumerate(frames):
        writer.frame(float(index), frame)
    _, counts = read(bytes(writer))
    assert counts.records == len(frames)
    assert counts.decoded + counts.not_ip + counts.undecodable == len(frames)


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=400))
def test_arbitrary_bytes_after_a_header_never_raise(tail: bytes) -> None:
    header = bytes(PcapWriter(linktype=SLL2))
    _, counts = read(header + tail, max_record=1024)
    assert counts.records <= len(tail) // 16


@settings(max_examples=200, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=60),
    flip=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
)
def test_damaged_real_frames_never_raise(cut: int, flip: list[tuple[int, int]]) -> None:
    """Valid frames with bytes changed or cut off: analysis goes on, nothing raises."""
    writer = small_capture(linktype=ETHERNET)
    damaged = PcapWriter(linktype=ETHERNET)
    for time, frame, _ in writer.records:
        body = bytearray(frame[: max(0, len(frame) - cut)])
        for at, value in flip:
            if at < len(body):
                body[at] = value
        damaged.frame(time, bytes(body))
    packets, counts = read(bytes(damaged))
    assert counts.records == 5
    assert analyze(packets).packets == len(packets)  # every rule copes with what decoded


@pytest.mark.parametrize(
    "order", [pytest.param("<", id="little-endian"), pytest.param(">", id="big-endian")]
)
def test_nflog_frames_are_unwrapped_in_the_files_byte_order(order: str) -> None:
    # a snap length that cuts the packet TLV, as tcpdump -s does: sizes still from headers
    packets, counts = read(bytes(small_capture(NFLOG, byte_order=order, snaplen=96)))
    assert counts.decoded == 5
    assert packets[3].tcp is not None
    assert packets[3].tcp.payload == 1448
    assert packets[3].length == 20 + 20 + 1448


def test_an_nflog_frame_without_a_packet_is_not_ip_and_a_tlv_leaving_the_frame_is_damage() -> None:
    writer = PcapWriter(linktype=NFLOG)
    writer.frame(1.0, b"\x02\x00\x00\x07" + nflog_tlv(10, b"prefix\x00"))
    lying = bytearray(b"\x02\x00\x00\x07" + nflog_tlv(10, b"prefix\x00") + nflog_tlv(9, b""))
    lying[4:6] = struct.pack("<H", 4000)  # a prefix TLV claiming more than the frame
    writer.frame(2.0, bytes(lying))
    packets, counts = read(bytes(writer))
    assert packets == []
    assert (counts.records, counts.not_ip, counts.undecodable) == (2, 1, 1)
