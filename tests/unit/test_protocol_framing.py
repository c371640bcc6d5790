"""Framing: round trips in any fragmentation, limits, and robustness on garbage."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    Content,
    FrameDecoder,
    Header,
    Limits,
    LocalProtocolError,
    MessageEnd,
    ProtocolError,
    RemoteProtocolError,
    encode_header,
    encode_message,
)

BIG_LIMITS = Limits(max_header=0xFFFF, default_max_content=1 << 20, max_chunk=4096)


def drain(decoder: FrameDecoder) -> list[object]:
    events: list[object] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    return events


def decode_all(chunks: list[bytes], *, limits: Limits = BIG_LIMITS) -> list[object]:
    decoder = FrameDecoder(limits=limits)
    events: list[object] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        events += drain(decoder)
    decoder.receive_data(b"")
    events += drain(decoder)
    return events


def messages_of(events: list[object]) -> list[tuple[dict[str, object], bytes]]:
    """Reassemble events into (header fields, content) pairs, checking the order."""
    out: list[tuple[dict[str, object], bytes]] = []
    current: tuple[dict[str, object], bytearray] | None = None
    for event in events:
        if isinstance(event, Header):
            assert current is None
            current = (dict(event.fields), bytearray())
        elif isinstance(event, Content):
            assert current is not None
            assert event.data
            current[1].extend(event.data)
        elif isinstance(event, MessageEnd):
            assert current is not None
            assert len(current[1]) == current[0]["content-length"]
            out.append((current[0], bytes(current[1])))
            current = None
        else:
            assert isinstance(event, ConnectionClosed)
            assert current is None
    assert isinstance(events[-1], ConnectionClosed)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(
        lambda k: k not in {"byteorder", "content-type", "content-encoding", "content-length"}
    ),
    json_scalars,
    max_size=4,
)
message_specs = st.tuples(
    st.sampled_from(["text/json", "application/octet-stream", "image/png", "binary/x"]),
    st.binary(max_size=3000),
    extra_fields,
)


@given(
    st.lists(message_specs, min_size=1, max_size=4), st.lists(st.integers(min_value=0), max_size=30)
)
@settings(max_examples=150, deadline=None)
def test_round_trip_in_random_fragments(
    specs: list[tuple[str, bytes, dict[str, object]]], cuts: list[int]
) -> None:
    wire = b"".join(encode_message(t, c, extra=x) for t, c, x in specs)
    decoded = messages_of(decode_all(split(wire, cuts)))
    assert [(h["content-type"], c) for h, c in decoded] == [(t, c) for t, c, _ in specs]
    for (fields, _), (_, _, extra) in zip(decoded, specs, strict=True):
        assert {k: fields[k] for k in extra} == extra


@given(st.lists(message_specs, min_size=1, max_size=2))
@settings(max_examples=30, deadline=None)
def test_round_trip_one_byte_at_a_time(specs: list[tuple[str, bytes, dict[str, object]]]) -> None:
    wire = b"".join(encode_message(t, c, extra=x) for t, c, x in specs)
    decoded = messages_of(decode_all([wire[i : i + 1] for i in range(len(wire))]))
    assert [c for _, c in decoded] == [c for _, c, _ in specs]


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    try:
        events = decode_all(split(data, cuts), limits=Limits())
    except ProtocolError:
        return  # the only exception allowed
    # Garbage that happens to decode must still end cleanly at EOF.
    assert isinstance(events[-1], ConnectionClosed)


@given(
    st.recursive(
        json_scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=20,
    )
)
@settings(max_examples=200, deadline=None)
def test_arbitrary_json_headers_raise_only_protocol_errors(header: object) -> None:
    raw = json.dumps(header).encode()
    try:
        events = decode_all([struct.pack(">H", len(raw)) + raw + b"x" * 10])
    except ProtocolError:
        return  # the only exception allowed
    assert isinstance(events[0], Header)


def test_tutorial_style_header_is_accepted() -> None:
    # Exactly what the Real Python libclient sends: byteorder from sys.byteorder,
    # ensure_ascii=False JSON, "text/json" content.
    content = json.dumps({"action": "search", "value": "ring"}, ensure_ascii=False).encode()
    header = json.dumps(
        {
            "byteorder": "little",
            "content-type": "text/json",
            "content-encoding": "utf-8",
            "content-length": len(content),
        },
        ensure_ascii=False,
    ).encode("utf-8")
    events = decode_all([struct.pack(">H", len(header)) + header + content])
    [(fields, body)] = messages_of(events)
    assert fields["content-type"] == "text/json"
    assert json.loads(body) == {"action": "search", "value": "ring"}


def test_empty_content_gives_header_then_end() -> None:
    events = decode_all([encode_message("text/json", b"")])
    assert [type(e) for e in events] == [Header, MessageEnd, ConnectionClosed]


def test_oversize_header_is_refused_from_its_length_alone() -> None:
    decoder = FrameDecoder(limits=Limits(max_header=100))
    decoder.receive_data(struct.pack(">H", 101))  # no header bytes follow: nothing allocated
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        decoder.next_event()
    with pytest.raises(RemoteProtocolError, match="unusable"):
        decoder.next_event()


def test_content_cap_per_content_type() -> None:
    limits = Limits(default_max_content=10, max_content={"application/octet-stream": 1000})
    assert messages_of(
        decode_all([encode_message("application/octet-stream", b"x" * 500)], limits=limits)
    )
    with pytest.raises(
        RemoteProtocolError, match="content-length 11 exceeds the limit of 10 for text/json"
    ):
        decode_all([encode_message("text/json", b"x" * 11)], limits=limits)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        pytest.param(b"\xff\xfe", "not valid UTF-8 JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "not an object", id="not-object"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "not", id="deeply-nested"),
        pytest.param(b'{"byteorder": "little"}', "lacks required", id="missing-fields"),
        pytest.param(
            b'{"byteorder": "middle", "content-type": "a", "content-encoding": "binary", "content-length": 1}',
            "byteorder",
            id="bad-byteorder",
        ),
        pytest.param(
            b'{"byteorder": "big", "content-type": "a", "content-encoding": "rot13", "content-length": 1}',
            "content-encoding",
            id="unknown-encoding",
        ),
        pytest.param(
            b'{"byteorder": "big", "content-type": "a", "content-encoding": "binary", "content-length": -1}',
            "non-negative",
            id="negative-length",
        ),
        pytest.param(
            b'{"byteorder": "big", "content-type": "a", "content-encoding": "binary", "content-length": true}',
            "non-negative",
            id="bool-length",
        ),
    ],
)
def test_bad_headers_are_remote_errors(header: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_all([struct.pack(">H", len(header)) + header])


def test_zero_header_length_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="length is 0"):
        decode_all([b"\x00\x00"])


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(1, id="in-length"),
        pytest.param(5, id="in-header"),
        pytest.param(-3, id="in-content"),
    ],
)
def test_eof_inside_a_message_is_a_remote_error(cut: int) -> None:
    wire = encode_message("text/json", b"0123456789")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        decode_all([wire[:cut]])


def test_large_content_comes_in_bounded_chunks() -> None:
    content = bytes(range(256)) * 100
    decoder = FrameDecoder(limits=Limits(default_max_content=len(content), max_chunk=1000))
    decoder.receive_data(encode_message("application/octet-stream", content))
    events = drain(decoder)
    chunks = [e.data for e in events if isinstance(e, Content)]
    assert max(map(len, chunks)) <= 1000
    assert b"".join(chunks) == content
    assert decoder.in_message is False


def test_in_message_tracks_partial_input() -> None:
    decoder = FrameDecoder()
    assert decoder.in_message is False
    decoder.receive_data(b"\x00")
    assert decoder.next_event() is NEED_DATA
    assert decoder.in_message is True


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"extra": {"content-length": 3}}, "clash", id="clash"),
        pytest.param({"extra": {"x": object()}}, "JSON-serialisable", id="not-json"),
        pytest.param({"extra": {"x": "y" * 70000}}, "too large", id="too-large"),
        pytest.param({"content_encoding": "latin-1"}, "content-encoding", id="bad-encoding"),
    ],
)
def test_local_errors_on_invalid_sends(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        encode_header("text/json", 3, **kwargs)  # type: ignore[arg-type]


# --- content read around the decoder (consume_content) --------------------------------


@settings(max_examples=100, deadline=None)
@given(
    content=st.binary(min_size=1, max_size=3000),
    with_header=st.integers(min_value=0, max_value=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6),
)
def test_content_read_directly_still_ends_the_message(
    content: bytes, with_header: int, cuts: list[int]
) -> None:
    """A receiver drains what the decoder holds, reads the rest itself, and the
    decoder still ends the message and goes on to the next one."""
    first = encode_message("binary/file", content)
    after = encode_message("text/json", b"{}", content_encoding="utf-8")
    header_size = len(first) - len(content)
    decoder = FrameDecoder(limits=BIG_LIMITS)
    decoder.receive_data(first[: header_size + min(with_header, len(content))])
    header = decoder.next_event()
    assert isinstance(header, Header)
    got = bytearray()
    while decoder.buffered and decoder.content_remaining:
        event = decoder.next_event()
        assert isinstance(event, Content)
        got += event.data
    position, turn = header_size + len(got), 0
    while decoder.content_remaining:
        size = min(cuts[turn % len(cuts)], decoder.content_remaining)
        got += first[position : position + size]  # "recv_into" our own buffer
        decoder.consume_content(size)
        position, turn = position + size, turn + 1
    assert bytes(got) == content
    assert isinstance(decoder.next_event(), MessageEnd)
    decoder.receive_data(after)
    events = drain(decoder)
    assert isinstance(events[0], Header)
    assert events[0].content_type == "text/json"
    assert isinstance(events[-1], MessageEnd)


def test_eof_while_reading_content_directly_is_a_remote_error() -> None:
    decoder = FrameDecoder(limits=BIG_LIMITS)
    message = encode_message("binary/file", b"x" * 100)
    decoder.receive_data(message[: len(message) - 100])
    assert isinstance(decoder.next_event(), Header)
    decoder.consume_content(40)
    assert decoder.content_remaining == 60
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        decoder.next_event()


@pytest.mark.parametrize(
    ("feed", "count", "match"),
    [
        pytest.param(b"", 1, "inside a message's content", id="no-message"),
        pytest.param(b"xy", 1, "empty buffer", id="bytes-buffered"),
        pytest.param(b"header-only", 11, "with 10 bytes remaining", id="too-many"),
        pytest.param(b"header-only", 0, "with 10 bytes remaining", id="zero"),
    ],
)
def test_consume_content_refuses_caller_mistakes(feed: bytes, count: int, match: str) -> None:
    decoder = FrameDecoder(limits=BIG_LIMITS)
    message = encode_message("binary/file", b"0123456789")
    if feed:
        decoder.receive_data(message[:-10])
        assert isinstance(decoder.next_event(), Header)
        if feed == b"xy":
            decoder.receive_data(b"xy")
    with pytest.raises(RuntimeError, match=match):
        decoder.consume_content(count)
