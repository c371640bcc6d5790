"""The UDP datagram format: round trip, classification of garbage and truncation."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.udp.datagram import (
    HEADER_SIZE,
    MAGIC,
    MAX_DATAGRAM,
    Datagram,
    DatagramError,
    Encoder,
    Kind,
    classify,
    decode,
    encode,
    minimum_size,
)

sender_ids = st.integers(min_value=0, max_value=2**32 - 1)
seqs = st.integers(min_value=1, max_value=2**64 - 1)
times = st.integers(min_value=0, max_value=2**64 - 1)


@given(sender_id=sender_ids, seq=seqs, sent_ns=times, size=st.integers(0, 2000))
def test_round_trip(sender_id: int, seq: int, sent_ns: int, size: int) -> None:
    data = encode(sender_id=sender_id, seq=seq, sent_ns=sent_ns, size=size)
    assert len(data) == max(size, minimum_size(seq))
    assert decode(data) == Datagram(sender_id, seq, sent_ns, len(data))


def test_reads_as_message_n_for_humans() -> None:
    data = encode(sender_id=7, seq=42, sent_ns=1, size=100)
    assert data.startswith(b"Message #42\n")
    assert len(data) == 100


def test_minimum_size() -> None:
    assert minimum_size(1) == len(b"Message #1\n") + HEADER_SIZE
    assert len(encode(sender_id=1, seq=1, sent_ns=0, size=1)) == minimum_size(1)
    assert minimum_size(1) <= 64  # the benchmark's small datagrams fit


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"sender_id": -1, "seq": 1, "sent_ns": 0}, id="negative-sender"),
        pytest.param({"sender_id": 2**32, "seq": 1, "sent_ns": 0}, id="sender-too-big"),
        pytest.param({"sender_id": 1, "seq": 0, "sent_ns": 0}, id="seq-zero"),
        pytest.param({"sender_id": 1, "seq": 2**64, "sent_ns": 0}, id="seq-too-big"),
        pytest.param({"sender_id": 1, "seq": 1, "sent_ns": -5}, id="negative-time"),
        pytest.param({"sender_id": 1, "seq": 1, "sent_ns": 0, "size": MAX_DATAGRAM + 1}, id="size"),
    ],
)
def test_encode_refuses_out_of_range(fields: dict[str, int]) -> None:
    with pytest.raises(DatagramError):
        encode(**fields)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"hello from socat\n", id="socat-text"),
        pytest.param(b"Message #5", id="seed-style-no-newline"),
        pytest.param(b"Message #5\n", id="seed-style-with-newline"),
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http"),
    ],
)
def test_plain_datagrams_are_foreign(data: bytes) -> None:
    assert classify(data).kind is Kind.FOREIGN
    with pytest.raises(DatagramError):
        decode(data)


GOOD = encode(sender_id=0xABCD, seq=123, sent_ns=10**18, size=200)
HEADER_AT = GOOD.index(b"\n") + 1


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(GOOD[: HEADER_AT + 10], "truncated", id="truncated-header"),
        pytest.param(GOOD[:-1], "length", id="truncated-padding"),
        pytest.param(GOOD + b".", "length", id="extra-byte"),
        pytest.param(_flip(GOOD, len(GOOD) - 1), "CRC", id="corrupt-padding"),
        pytest.param(_flip(GOOD, HEADER_AT + 6), "CRC", id="corrupt-sender-id"),
        pytest.param(_flip(GOOD, 9), "CRC", id="corrupt-text"),
        pytest.param(
            encode(sender_id=1, seq=77, sent_ns=0, size=100).replace(b"#77", b"#78"),
            "CRC",
            id="text-edited",
        ),
    ],
)
def test_damaged_datagrams_are_malformed(data: bytes, reason: str) -> None:
    result = classify(data)
    assert result.kind is Kind.MALFORMED
    assert reason in result.reason


@given(st.binary(max_size=300))
def test_classify_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = classify(data)
    assert (result.kind is Kind.VALID) == (result.datagram is not None)


@given(data=st.data(), seq=seqs)
def test_any_truncation_is_never_valid(data: st.DataObject, seq: int) -> None:
    good = encode(sender_id=1, seq=seq, sent_ns=5, size=80)
    cut = data.draw(st.integers(0, len(good) - 1))
    assert classify(good[:cut]).kind is not Kind.VALID


@given(data=st.data())
def test_any_single_bit_flip_is_never_valid(data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(GOOD) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = GOOD[:at] + bytes([GOOD[at] ^ (1 << bit)]) + GOOD[at + 1 :]
    assert classify(damaged).kind is not Kind.VALID


def forge(text: bytes, seq: int) -> bytes:
    """A datagram with any text line and a correct length and CRC."""
    header = struct.Struct("!4sIQQH")
    head = text + header.pack(MAGIC, 1, seq, 0, len(text) + HEADER_SIZE)
    return head + zlib.crc32(head).to_bytes(4, "big")


def test_forge_matches_encode() -> None:
    assert forge(b"Message #7\n", 7) == encode(sender_id=1, seq=7, sent_ns=0)


@pytest.mark.parametrize(
    ("text", "seq"),
    [
        pytest.param(b"Message #07\n", 7, id="leading-zero"),
        pytest.param(b"Message #8\n", 7, id="other-number"),
        pytest.param(b"message #7\n", 7, id="lower-case"),
        pytest.param(b"Message #0\n", 0, id="seq-zero"),
    ],
)
def test_text_line_must_be_the_canonical_one(text: bytes, seq: int) -> None:
    result = classify(forge(text, seq))
    assert result.kind is Kind.MALFORMED
    assert "text line" in result.reason


@given(
    sender_id=sender_ids,
    size=st.sampled_from([0, 40, 47, 64, 1200, 9000]),
    start=st.integers(min_value=1, max_value=10**19),
    steps=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=30),
    sent_ns=times,
)
def test_the_encoder_builds_what_encode_builds(
    sender_id: int, size: int, start: int, steps: list[int], sent_ns: int
) -> None:
    encoder = Encoder(sender_id=sender_id, size=size)
    seq = start
    for step in steps:  # across changes of the text's length too
        if seq > 2**64 - 1:
            break
        expected = encode(sender_id=sender_id, seq=seq, sent_ns=sent_ns, size=size)
        assert bytes(encoder.encode(seq, sent_ns)) == expected
        seq += step


def test_the_encoder_refuses_what_encode_refuses() -> None:
    with pytest.raises(DatagramError):
        Encoder(sender_id=2**32, size=64)
    with pytest.raises(DatagramError):
        Encoder(sender_id=1, size=MAX_DATAGRAM + 1)
    encoder = Encoder(sender_id=1, size=64)
    for seq, sent_ns in ((0, 1), (2**64, 1), (1, -1), (1, 2**64)):
        with pytest.raises(DatagramError):
            encoder.encode(seq, sent_ns)
