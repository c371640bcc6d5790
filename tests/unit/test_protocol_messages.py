"""JSON requests/responses and the pure actions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from socketlab.protocol import (
    FrameDecoder,
    MessageCollector,
    RemoteProtocolError,
    encode_request,
    encode_response,
)
from socketlab.protocol.framing import NEED_DATA, Header, MessageEnd, encode_message
from socketlab.protocol.messages import (
    Message,
    Request,
    RequestContext,
    ServerRefused,
    UnknownAction,
    answer,
    binary_reply,
    parse_request,
    response_result,
)

CONTEXT = RequestContext(
    peer="10.0.0.2", hostname="server", now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
)


def one_message(wire: bytes) -> Message:
    decoder = FrameDecoder()
    collector = MessageCollector()
    decoder.receive_data(wire)
    while (event := decoder.next_event()) is not NEED_DATA:
        message = collector.feed(event)  # type: ignore[arg-type]
        if message is not None:
            return message
    raise AssertionError("no complete message")


@pytest.mark.parametrize(
    ("action", "value", "expected"),
    [
        pytest.param(
            "hello", None, "Hello, 10.0.0.2! This is the socketlab server on server.", id="hello"
        ),
        pytest.param("echo", {"a": [1, "\u00e9"]}, {"a": [1, "\u00e9"]}, id="echo"),
        pytest.param(
            "time", None, {"iso": "2026-01-02T03:04:05+00:00", "epoch": 1767323045.0}, id="time"
        ),
        pytest.param(
            "lookup", "ring", "In the caves beneath the Misty Mountains. \U0001f48d", id="lookup"
        ),
        pytest.param(
            "search", "morpheus", "Follow the white rabbit. \U0001f430", id="tutorial-search"
        ),
        pytest.param("lookup", "nothing", "No match for 'nothing'.", id="lookup-miss"),
    ],
)
def test_pure_actions_over_the_wire(action: str, value: object, expected: object) -> None:
    request = parse_request(one_message(encode_request(action, value)))
    assert request == Request(action, value)
    result = response_result(one_message(encode_response(answer(request, CONTEXT))))
    assert result == expected


def test_unknown_action() -> None:
    with pytest.raises(UnknownAction, match="invalid action 'nope'"):
        answer(Request("nope", None), CONTEXT)


def test_error_response_reads_like_the_tutorial_and_raises() -> None:
    message = one_message(encode_response(None, error="invalid action 'x'"))
    assert message.json()["result"] == "Error: invalid action 'x'"
    with pytest.raises(ServerRefused, match="invalid action"):
        response_result(message)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(
            encode_message("text/json", b"[1]", content_encoding="utf-8"), id="not-object"
        ),
        pytest.param(
            encode_message("text/json", b'{"value": 1}', content_encoding="utf-8"), id="no-action"
        ),
        pytest.param(encode_message("text/json", b"\xff", content_encoding="utf-8"), id="bad-utf8"),
        pytest.param(
            encode_message("text/json", b"{}", content_encoding="binary"), id="binary-json"
        ),
    ],
)
def test_malformed_requests(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_request(one_message(wire))


def test_binary_passes_through() -> None:
    message = one_message(
        encode_message("binary/custom-client-binary-type", b"\x00\x01binary data")
    )
    assert message.content == b"\x00\x01binary data"
    reply = one_message(binary_reply(message))
    assert reply.header.content_type == "binary/custom-server-binary-type"
    assert reply.content == b"First 10 bytes of request: \x00\x01binary d"


def test_collector_needs_a_header() -> None:
    with pytest.raises(RemoteProtocolError):
        MessageCollector().feed(MessageEnd())
    assert isinstance(one_message(encode_request("x")).header, Header)
