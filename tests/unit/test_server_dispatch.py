"""The server's dispatch table and refusal policy, without sockets or threads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from socketlab import objects
from socketlab.protocol import (
    FrameDecoder,
    Header,
    Message,
    MessageCollector,
    Request,
    encode_message,
    encode_request,
)
from socketlab.protocol.framing import NEED_DATA
from socketlab.protocol.messages import (
    RequestContext,
    UnknownAction,
    answer,
    encode_response,
)
from socketlab.server import HashCache, ServerConfig
from socketlab.server.dispatch import ACTIONS, answer_message, settle
from socketlab.server.outcomes import (
    Call,
    Deferred,
    Later,
    Outcome,
    Send,
    SendFile,
    Services,
    StartSink,
    Violation,
)

PEER = "10.0.0.2:40000"


def services(tmp_path: Path, **changes: Any) -> Services:
    return Services(
        config=ServerConfig(data_root=tmp_path, **changes),
        hostname="server",
        registry=objects.default_registry(),
        hashes=HashCache(),
    )


def message(wire: bytes) -> Message:
    decoder, collector = FrameDecoder(), MessageCollector()
    decoder.receive_data(wire)
    while (event := decoder.next_event()) is not NEED_DATA:
        done = collector.feed(event)  # type: ignore[arg-type]
        if done is not None:
            return done
    raise AssertionError("incomplete message")


def result_of(outcome: Outcome) -> dict[str, Any]:
    assert isinstance(outcome, Send)
    body: dict[str, Any] = message(outcome.data).json()
    return body


def test_the_table_holds_every_action_of_every_family() -> None:
    assert set(ACTIONS) == {
        "hello",
        "echo",
        "time",
        "lookup",
        "search",
        "stall",
        "objects",
        "ls",
        "fetch",
        "sink",
    }


def test_unknown_action_is_the_same_refusal_as_before(tmp_path: Path) -> None:
    with pytest.raises(UnknownAction) as pure_refusal:
        answer(Request("nope", None), RequestContext(peer="10.0.0.2", hostname="server"))
    outcome = answer_message(message(encode_request("nope")), services(tmp_path), PEER)
    assert outcome == Send(encode_response(None, error=str(pure_refusal.value)))
    assert result_of(outcome)["error"] == "invalid action 'nope'"


def test_unknown_action_in_a_custom_table(tmp_path: Path) -> None:
    outcome = answer_message(message(encode_request("hello")), services(tmp_path), PEER, actions={})
    assert result_of(outcome)["error"] == "invalid action 'hello'"


@pytest.mark.parametrize(
    ("action", "value", "expected"),
    [
        pytest.param(
            "hello", None, "Hello, 10.0.0.2! This is the socketlab server on server.", id="hello"
        ),
        pytest.param("echo", [1, {"a": None}], [1, {"a": None}], id="echo"),
        pytest.param(
            "search", "ring", "In the caves beneath the Misty Mountains. \U0001f48d", id="search"
        ),
    ],
)
def test_pure_actions_answer_like_the_protocol(
    tmp_path: Path, action: str, value: object, expected: object
) -> None:
    outcome = answer_message(message(encode_request(action, value)), services(tmp_path), PEER)
    assert result_of(outcome) == {"result": expected}


def test_binary_request_gets_the_tutorial_reply(tmp_path: Path) -> None:
    wire = encode_message("binary/custom-client-binary-type", b"0123456789abc")
    outcome = answer_message(message(wire), services(tmp_path), PEER)
    assert isinstance(outcome, Send)
    reply = message(outcome.data)
    assert reply.header.content_type == "binary/custom-server-binary-type"
    assert reply.content == b"First 10 bytes of request: 0123456789"


def test_pickle_without_a_key_is_refused_and_never_loaded(tmp_path: Path) -> None:
    payload, signature = objects.dump_signed_pickle(objects.sample_objects(), b"k")
    wire = encode_message(objects.PICKLE_TYPE, payload, extra={"signature": signature})
    outcome = answer_message(message(wire), services(tmp_path, pickle_key=None), PEER)
    assert "pickle is disabled" in result_of(outcome)["error"]


def test_signed_pickle_with_the_key_is_loaded(tmp_path: Path) -> None:
    payload, signature = objects.dump_signed_pickle(objects.sample_objects(), b"k")
    wire = encode_message(objects.PICKLE_TYPE, payload, extra={"signature": signature})
    outcome = answer_message(message(wire), services(tmp_path, pickle_key=b"k"), PEER)
    assert result_of(outcome)["result"] == {"types": ["Product", "dict"], "equal_to_sample": True}


def test_objects_with_an_unknown_type_are_refused(tmp_path: Path) -> None:
    wire = encode_request("objects", {"x": {"__type__": "os.system"}})
    outcome = answer_message(message(wire), services(tmp_path), PEER)
    assert "os.system" in result_of(outcome)["error"]


@pytest.mark.parametrize(
    ("action", "value", "reason"),
    [
        pytest.param("fetch", "just-a-name", "fetch needs", id="fetch-not-an-object"),
        pytest.param("fetch", {"name": "f", "offset": -1}, "non-negative", id="fetch-offset"),
        pytest.param("fetch", {"name": "f", "offset": True}, "non-negative", id="fetch-bool"),
        pytest.param("stall", "soon", "number of seconds", id="stall-text"),
        pytest.param("stall", -1, "number of seconds", id="stall-negative"),
        pytest.param("lookup", 3, "needs a string", id="lookup-number"),
    ],
)
def test_malformed_values_are_violations(
    tmp_path: Path, action: str, value: object, reason: str
) -> None:
    outcome = answer_message(message(encode_request(action, value)), services(tmp_path), PEER)
    assert isinstance(outcome, Violation)
    assert reason in str(outcome.error)
    assert b"protocol error: " in outcome.last_words()


def test_a_request_that_is_not_an_object_is_a_violation(tmp_path: Path) -> None:
    wire = encode_message("text/json", json.dumps([1, 2]).encode(), content_encoding="utf-8")
    outcome = answer_message(message(wire), services(tmp_path), PEER)
    assert isinstance(outcome, Violation)


def test_stall_waits_at_most_max_stall(tmp_path: Path) -> None:
    outcome = answer_message(
        message(encode_request("stall", 500)), services(tmp_path, max_stall=2.0), PEER
    )
    assert isinstance(outcome, Later)
    assert outcome.delay == 2.0
    assert result_of(outcome.then) == {"result": "stalled for 2 s"}


def test_sink_starts_with_the_expected_size(tmp_path: Path) -> None:
    for value, expected in [({"bytes": 5}, 5), ({"bytes": "5"}, None), (None, None)]:
        outcome = answer_message(message(encode_request("sink", value)), services(tmp_path), PEER)
        assert outcome == StartSink(expected)


def test_ls_of_a_missing_root_is_a_server_error_not_a_violation(tmp_path: Path) -> None:
    outcome = answer_message(message(encode_request("ls")), services(tmp_path / "missing"), PEER)
    assert result_of(outcome)["error"].startswith("server error: ")


def test_fetch_is_prepared_off_the_loop(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    wire = encode_request(
        "fetch",
        {"name": "f.bin", "offset": 4, "prefix_sha256": hashlib.sha256(b"0123").hexdigest()},
    )
    outcome = answer_message(message(wire), services(tmp_path), PEER)
    assert isinstance(outcome, Deferred)
    prepared = settle(outcome.work, PEER)
    assert isinstance(prepared, SendFile)
    assert (prepared.offset, prepared.count, prepared.size) == (4, 6, 10)
    assert prepared.path == (tmp_path / "f.bin").resolve()
    decoder = FrameDecoder()
    decoder.receive_data(prepared.header)
    header = decoder.next_event()
    assert isinstance(header, Header)
    assert header.content_length == 6
    assert header.get("sha256") == hashlib.sha256(b"0123456789").hexdigest()


def test_fetch_with_a_foreign_prefix_restarts_from_zero(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"0123456789")
    wire = encode_request("fetch", {"name": "f.bin", "offset": 4, "prefix_sha256": "00"})
    outcome = answer_message(message(wire), services(tmp_path), PEER)
    assert isinstance(outcome, Deferred)
    prepared = settle(outcome.work, PEER)
    assert isinstance(prepared, SendFile)
    assert (prepared.offset, prepared.count) == (0, 10)


@pytest.mark.parametrize("name", ["../etc/passwd", "missing.bin"])
def test_fetch_refusals_are_answers(tmp_path: Path, name: str) -> None:
    outcome = answer_message(
        message(encode_request("fetch", {"name": name})), services(tmp_path), PEER
    )
    assert isinstance(outcome, Deferred)
    assert "error" in result_of(settle(outcome.work, PEER))


def test_a_failing_worker_becomes_a_server_error() -> None:
    def broken() -> Outcome:
        raise RuntimeError("disk on fire")

    assert result_of(settle(broken, PEER))["error"] == "server error: disk on fire"


def test_a_handler_sees_the_call() -> None:
    seen: list[Call] = []

    def spy(call: Call) -> Outcome:
        seen.append(call)
        return Send(b"")

    answer_message(
        message(encode_request("spy", {"k": 1})),
        services(Path()),
        PEER,
        actions={"spy": spy},
    )
    (call,) = seen
    assert (call.action, call.value, call.peer, call.peer_host) == (
        "spy",
        {"k": 1},
        PEER,
        "10.0.0.2",
    )
