"""Packet analysis: every metric on small generated pcaps with known answers."""

from __future__ import annotations

import io

import pytest
from pcap_writer import ACK, ETHERNET, PSH, SLL2, SYN, Conversation, PcapWriter

from lab.report.analysis import CaptureAnalysis, analyze, lab_datagram, percentile
from lab.report.config import PcapLimits
from lab.report.metrics import METRIC_NAMES
from lab.report.packets import ReadCounts, read_packets
from socketlab.udp.datagram import encode

SERVER_TO_CLIENT = "10.0.0.2 -> 10.0.0.1"
CLIENT_TO_SERVER = "10.0.0.1 -> 10.0.0.2"


def analysis_of(
    writer: PcapWriter, *, local: str | None = None, **limits: float
) -> CaptureAnalysis:
    counts = ReadCounts()
    config = PcapLimits(**limits)  # type: ignore[arg-type]
    packets = read_packets(io.BytesIO(bytes(writer)), limits=config, counts=counts)
    return analyze(packets, limits=config, local=local, read=counts)


def connected(**options: object) -> tuple[PcapWriter, Conversation]:
    writer = PcapWriter(linktype=SLL2)
    talk = Conversation(writer, **options)  # type: ignore[arg-type]
    talk.handshake(0.0, 0.02)
    return writer, talk


# --------------------------------------------------------------------------- TCP


def test_a_clean_transfer_has_no_retransmissions() -> None:
    writer, talk = connected()
    for index in range(5):
        talk.send(0.1 + index * 0.001, "s", 1000)
    talk.segment(0.12, "c")
    result = analysis_of(writer)
    assert result.tcp.retransmissions == 0
    assert result.tcp.out_of_order == 0
    assert result.tcp.duplicate_acks == 0
    assert result.tcp.connections == 1
    assert result.metrics()["tcp.retransmissions"] == 0


def test_a_segment_sent_again_after_a_timeout_is_one_retransmission() -> None:
    writer, talk = connected()
    first = talk.send(0.100, "s", 1000)
    talk.send(0.101, "s", 1000)
    talk.segment(0.300, "s", seq=first, payload=1000, flags=ACK | PSH)
    talk.segment(0.310, "c")
    result = analysis_of(writer)
    assert result.tcp.retransmissions == 1
    assert (result.tcp.fast_retransmissions, result.tcp.spurious_retransmissions) == (0, 0)
    server = next(d for d in result.directions if d.label == SERVER_TO_CLIENT)
    assert server.retransmissions == 1
    assert server.goodput_bytes == 2000  # the resent bytes are not goodput
    resent_bin = next(b for b in result.bins if b.retransmissions)
    assert resent_bin.start == pytest.approx(0.3)


def test_duplicate_acks_then_a_fast_retransmission() -> None:
    writer, talk = connected()
    first = talk.send(0.1000, "s", 1000)
    lost = talk.send(0.1001, "s", 1000)
    talk.send(0.1002, "s", 1000)
    talk.send(0.1003, "s", 1000)
    for offset in range(4):  # one ACK, then three duplicates
        talk.segment(0.110 + offset * 0.0001, "c", ack=first + 1000)
    talk.segment(0.1104, "s", seq=lost, payload=1000, flags=ACK | PSH)
    talk.segment(0.1204, "c")
    result = analysis_of(writer)
    assert result.tcp.duplicate_acks == 3
    assert result.tcp.retransmissions == 1
    assert result.tcp.fast_retransmissions == 1
    assert sum(b.duplicate_acks for b in result.bins) == 3


def test_resending_acknowledged_data_is_a_spurious_retransmission() -> None:
    writer, talk = connected()
    first = talk.send(0.1, "s", 1000)
    talk.segment(0.11, "c")
    talk.segment(0.5, "s", seq=first, payload=1000, flags=ACK | PSH)
    result = analysis_of(writer)
    assert (result.tcp.retransmissions, result.tcp.spurious_retransmissions) == (1, 1)


def test_reordering_is_out_of_order_but_a_late_hole_fill_is_a_retransmission() -> None:
    """As the receiver's capture sees it: the handshake RTT (20 ms) tells them apart."""
    writer, talk = connected()
    start = talk.next["s"]
    talk.segment(0.1000, "s", seq=start + 1000, payload=1000)  # arrives first
    talk.segment(0.1005, "s", seq=start, payload=1000)  # 0.5 ms later: reordered
    talk.segment(0.2000, "s", seq=start + 3000, payload=1000)  # leaves a hole at 2000..3000
    talk.segment(0.7000, "s", seq=start + 2000, payload=1000)  # filled 500 ms later
    talk.next["s"] = start + 4000
    talk.segment(0.71, "c")
    result = analysis_of(writer)
    assert result.tcp.out_of_order == 1
    assert result.tcp.retransmissions == 1
    server = next(d for d in result.directions if d.label == SERVER_TO_CLIENT)
    assert server.goodput_bytes == 4000  # every byte was new once


def test_zero_windows_and_probes_are_not_retransmissions() -> None:
    writer, talk = connected()
    talk.send(0.1, "s", 1000)
    talk.segment(0.11, "c", window=0)  # receiver full: zero window 1
    talk.segment(0.5, "s", seq=talk.next["s"] - 1)  # Linux probe: no data, one byte back
    talk.segment(0.51, "c", window=0)  # still full: zero window 2 (not a dup ACK)
    probe = talk.segment(1.3, "s", payload=1, flags=ACK | PSH)  # probe carrying the next byte
    talk.next["s"] = probe + 1
    talk.segment(1.31, "c", window=0)  # zero window 3
    talk.segment(2.0, "c", window=65535)  # window opens
    talk.send(2.01, "s", 1000)
    talk.segment(2.02, "c")
    result = analysis_of(writer)
    assert result.tcp.zero_windows == 3
    assert result.tcp.zero_window_probes == 2
    assert result.tcp.retransmissions == 0
    assert result.tcp.duplicate_acks == 0
    assert result.tcp.keep_alives == 0
    assert result.metrics()["tcp.zero_windows"] == 3
    assert sum(b.zero_windows for b in result.bins) == 3


def test_a_keep_alive_is_not_a_retransmission() -> None:
    writer, talk = connected()
    talk.send(0.1, "s", 10)
    talk.segment(0.11, "c")
    talk.segment(60.0, "c", seq=talk.next["c"] - 1)  # keep-alive from the client
    talk.segment(60.01, "s")
    result = analysis_of(writer)
    assert result.tcp.keep_alives == 1
    assert result.tcp.retransmissions == 0
    assert result.tcp.duplicate_acks == 0


def test_rtt_from_data_to_the_ack_that_covers_it() -> None:
    writer, talk = connected()
    for index in range(9):
        sent = 1.0 + index
        talk.send(sent, "s", 1000)
        talk.segment(sent + 0.010 + index * 0.001, "c")  # 10, 11, ..., 18 ms
    result = analysis_of(writer)
    assert result.tcp.rtt_source == "acks"
    assert result.tcp.rtt_direction == SERVER_TO_CLIENT
    # the SYN/ACK (10 ms after it, half the 20 ms handshake) is timed too
    assert sorted(result.tcp.rtt_samples_ms) == pytest.approx(
        [10.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0]
    )
    assert result.metrics()["tcp.rtt_p50"] == pytest.approx(13.0)
    assert result.metrics()["tcp.rtt_p99"] == pytest.approx(18.0)


def test_resent_data_times_nothing() -> None:
    """Karn's rule: after a resend the ACK could be for either copy."""
    writer, talk = connected()
    first = talk.send(1.0, "s", 1000)
    talk.segment(1.5, "s", seq=first, payload=1000, flags=ACK | PSH)
    talk.segment(1.51, "c")
    result = analysis_of(writer, local="10.0.0.2")
    assert result.tcp.retransmissions == 1
    assert result.tcp.rtt_samples_ms == pytest.approx((10.0,))  # the SYN/ACK only


def test_rtt_from_timestamps_and_which_direction_the_metric_uses() -> None:
    writer, talk = connected(timestamps=True)
    for index in range(4):
        sent = 1.0 + index * 0.1
        talk.tick("s")
        talk.send(sent, "s", 1000)
        talk.tick("c")
        talk.segment(sent + 0.030, "c")  # the client echoes the server's TSval 30 ms later
        talk.tick("s")
        talk.send(sent + 0.0301, "s", 1000)  # echoes the client's at once (local turnaround)
        talk.tick("c")
        talk.segment(sent + 0.0602, "c")
    result = analysis_of(writer)
    assert result.tcp.rtt_source == "timestamps"
    assert result.tcp.rtt_direction == SERVER_TO_CLIENT
    assert result.metrics()["tcp.rtt_p50"] == pytest.approx(30.0, abs=0.2)
    # Captured at the client, its own direction is what the metric must time:
    local = analysis_of(writer, local="10.0.0.1")
    assert local.tcp.rtt_direction == CLIENT_TO_SERVER
    assert local.metrics()["tcp.rtt_p50"] == pytest.approx(0.1, abs=0.05)


def test_max_segment_and_mss_with_super_segments_cut_by_the_snap_length() -> None:
    writer = PcapWriter(linktype=ETHERNET, snaplen=256)
    talk = Conversation(writer)
    talk.handshake(0.0, 0.001)
    talk.send(0.1, "s", 1448)
    talk.send(0.1001, "s", 64_000)  # GSO: one 64 KB segment as the sender's capture sees it
    result = analysis_of(writer)
    assert result.tcp.max_segment == 64_000
    assert result.tcp.mss_option == 1460
    assert result.metrics()["tcp.max_segment"] == 64_000
    server = next(d for d in result.directions if d.label == SERVER_TO_CLIENT)
    assert server.bytes == 44 + (40 + 1448) + (40 + 64_000)


def test_sequence_numbers_wrapping_past_2_32_are_not_retransmissions() -> None:
    writer, talk = connected(isn=2**32 - 1_500)
    for index in range(4):
        talk.send(0.1 + index * 0.001, "c", 1000)
    talk.segment(0.11, "s")
    result = analysis_of(writer)
    assert result.tcp.retransmissions == 0
    client = next(d for d in result.directions if d.label == CLIENT_TO_SERVER)
    assert client.goodput_bytes == 4000


def test_goodput_per_bin_and_direction() -> None:
    writer, talk = connected()
    talk.send(0.05, "s", 1000)
    talk.send(0.15, "s", 2000)
    talk.send(0.16, "s", 500)
    talk.send(0.17, "c", 300)
    result = analysis_of(writer, bin_seconds=0.1)
    goodput = {round(b.start, 3): dict(b.goodput) for b in result.bins if b.goodput}
    assert goodput == {
        0.0: {SERVER_TO_CLIENT: 1000},
        0.1: {SERVER_TO_CLIENT: 2500, CLIENT_TO_SERVER: 300},
    }
    assert result.bin_seconds == 0.1


def test_per_direction_packets_and_bytes() -> None:
    writer, talk = connected()
    talk.send(0.1, "s", 100)
    talk.segment(0.11, "c")
    result = analysis_of(writer)
    by_label = {d.label: (d.packets, d.bytes) for d in result.directions}
    # client: SYN (44 with MSS), ACK (40), ACK (40); server: SYN/ACK (44), data (140)
    assert by_label == {CLIENT_TO_SERVER: (3, 124), SERVER_TO_CLIENT: (2, 184)}
    assert result.bytes == result.metrics()["bytes"] == 308
    assert result.packets == 5


def test_the_same_ports_again_are_a_new_connection() -> None:
    writer, talk = connected()
    talk.send(0.1, "s", 100)
    again = Conversation(writer, isn=777_000)
    again.handshake(5.0, 0.02)
    again.send(5.1, "s", 100)
    result = analysis_of(writer)
    assert result.tcp.connections == 2
    assert result.tcp.retransmissions == 0


def test_connections_beyond_the_limit_are_counted_not_tracked() -> None:
    writer, _ = connected()
    other = Conversation(writer, client="10.0.0.9")
    other.handshake(1.0, 0.02)
    result = analysis_of(writer, max_flows=1)
    assert result.tcp.connections == 1
    assert result.tcp.untracked == 3


def test_rtt_samples_are_bounded() -> None:
    writer, talk = connected()
    for index in range(50):
        talk.send(1.0 + index, "s", 10)
        talk.segment(1.0 + index + 0.01, "c")
    result = analysis_of(writer, max_rtt_samples=5)
    assert len(result.tcp.rtt_samples_ms) <= 5
    assert result.tcp.rtt_p50_ms == pytest.approx(10.0)


def test_bins_are_bounded() -> None:
    writer = PcapWriter()
    for index in range(10):
        writer.tcp(float(index), "10.0.0.1", "10.0.0.2", sport=1, dport=2, seq=index, flags=SYN)
    result = analysis_of(writer, max_bins=3)
    assert len(result.bins) == 3
    assert result.unbinned == 7
    assert result.packets == 10


def test_metrics_are_the_documented_ones() -> None:
    writer, _ = connected()
    result = analysis_of(writer)
    assert tuple(result.metrics()) == METRIC_NAMES
    assert result.metrics()["udp.lost"] == 0


def test_no_tcp_means_no_rtt() -> None:
    writer = PcapWriter()
    writer.udp(1.0, "10.0.0.1", "10.0.0.2", sport=1, dport=2, data=b"x")
    metrics = analysis_of(writer).metrics()
    assert metrics["tcp.rtt_p50"] is None
    assert metrics["tcp.retransmissions"] == 0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 0.99) == 99.0
    assert percentile([5.0], 0.99) == 5.0


# --------------------------------------------------------------------------- UDP


def datagrams(
    writer: PcapWriter,
    numbers: list[int],
    *,
    sender: int = 7,
    size: int = 0,
    start: float = 0.0,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.3",
) -> None:
    for index, seq in enumerate(numbers):
        data = encode(sender_id=sender, seq=seq, sent_ns=1_000 + seq, size=size)
        writer.udp(start + index * 0.1, src, dst, sport=50000, dport=37020, data=data)


def test_a_udp_gap_is_lost() -> None:
    writer = PcapWriter()
    datagrams(writer, [1, 2, 3, 5, 6])
    result = analysis_of(writer, bin_seconds=0.1)
    assert (result.udp.lost, result.udp.reordered, result.udp.duplicates) == (1, 0, 0)
    assert result.metrics()["udp.lost"] == 1
    assert result.udp.lab_datagrams == 5
    gap_bins = [round(b.start, 3) for b in result.bins if b.udp_gaps]
    assert gap_bins == [0.3]  # where seq 5 showed that 4 was missing
    (session,) = result.udp.sessions
    assert (session.first_seq, session.highest_seq, session.received) == (1, 6, 5)


def test_a_late_datagram_is_reordered_not_lost() -> None:
    writer = PcapWriter()
    datagrams(writer, [1, 2, 4, 3, 5, 5])
    result = analysis_of(writer, bin_seconds=0.1)
    assert (result.udp.lost, result.udp.reordered, result.udp.duplicates) == (0, 1, 1)
    assert result.metrics()["udp.reordered"] == 1
    assert [round(b.start, 3) for b in result.bins if b.udp_reordered] == [0.3]
    assert [round(b.start, 3) for b in result.bins if b.udp_gaps] == [0.2]


def test_gaps_older_than_the_window_are_final() -> None:
    writer = PcapWriter()
    datagrams(writer, [1, 100, 50, 95])
    result = analysis_of(writer, udp_window=10)
    (session,) = result.udp.sessions
    assert session.late == 1  # 50 came after the window moved past it
    assert session.reordered == 1  # 95 was still within it
    assert session.lost == 97


def test_sessions_by_sender_id_and_other_udp_traffic() -> None:
    writer = PcapWriter()
    datagrams(writer, [1, 2, 3], sender=1)
    datagrams(writer, [1, 3], sender=2, start=1.0)
    writer.udp(2.0, "10.0.0.1", "10.0.0.3", sport=1, dport=37020, data=b"hello from socat\n")
    corrupt = bytearray(encode(sender_id=9, seq=1, sent_ns=5, size=200))
    corrupt[-1] ^= 0xFF
    writer.udp(2.1, "10.0.0.1", "10.0.0.3", sport=1, dport=37020, data=bytes(corrupt))
    result = analysis_of(writer)
    assert len(result.udp.sessions) == 2
    assert result.udp.lost == 1
    assert (result.udp.foreign, result.udp.malformed, result.udp.datagrams) == (1, 1, 7)


def test_datagrams_cut_by_the_snap_length_still_count() -> None:
    writer = PcapWriter(snaplen=120)
    datagrams(writer, [1, 2, 4], size=1200)
    result = analysis_of(writer)
    assert result.udp.lab_datagrams == 3
    assert result.udp.lost == 1
    client = next(d for d in result.directions if d.udp_datagrams)
    assert client.goodput_bytes == 3 * 1200


def test_udp_over_ipv6() -> None:
    writer = PcapWriter(linktype=ETHERNET)
    datagrams(writer, [1, 3, 2, 4], src="fd00::1", dst="fd00::3")
    result = analysis_of(writer)
    assert (result.udp.lost, result.udp.reordered) == (0, 1)
    assert result.udp.sessions[0].src == "fd00::1"


def test_tcp_over_ipv6_retransmission() -> None:
    writer = PcapWriter(linktype=ETHERNET)
    talk = Conversation(writer, client="fd00::1", server="fd00::2")
    talk.handshake(0.0, 0.02)
    first = talk.send(0.1, "s", 1200)
    talk.segment(0.6, "s", seq=first, payload=1200, flags=ACK | PSH)
    result = analysis_of(writer)
    assert result.tcp.retransmissions == 1
    assert {d.label for d in result.directions} == {"fd00::1 -> fd00::2", "fd00::2 -> fd00::1"}


@pytest.mark.parametrize(
    ("data", "length", "expected"),
    [
        pytest.param(encode(sender_id=3, seq=12, sent_ns=1), None, (3, 12), id="valid"),
        pytest.param(b"hello", 5, None, id="foreign"),
        pytest.param(b"Message #1\nSLU1\x00", 16, "header cut off by the capture", id="cut"),
        pytest.param(
            encode(sender_id=3, seq=12, sent_ns=1)[:40],
            200,
            "length field 42, datagram 200 bytes",
            id="length",
        ),
        pytest.param(
            encode(sender_id=3, seq=12, sent_ns=1).replace(b"#12", b"#13"),
            None,
            "text line does not match the header",
            id="text",
        ),
    ],
)
def test_lab_datagram_header(data: bytes, length: int | None, expected: object) -> None:
    assert lab_datagram(data, len(data) if length is None else length) == expected
