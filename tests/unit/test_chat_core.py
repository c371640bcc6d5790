"""The chat hub's core without sockets: names, order, bounded queues, heartbeats, bad input."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.chat import wire
from socketlab.chat.core import ChatHub, HubConfig, Reason, name_problem
from socketlab.chat.fanout import BroadcastLog, Mailbox
from socketlab.protocol import encode_message
from socketlab.protocol.messages import JSON_TYPE


class Room:
    """A hub plus per-connection decoders of what it queued (the loop's job, in memory)."""

    def __init__(self, config: HubConfig | None = None) -> None:
        self.now = 0.0
        self.hub = ChatHub(config=config or HubConfig(), wall_clock=lambda: 1000.0 + self.now)
        self.streams: dict[int, wire.ChatStream] = {}
        self.closed: dict[int, Reason] = {}

    def connect(self) -> int:
        conn = self.hub.open(self.now)
        self.streams[conn] = wire.ChatStream()
        return conn

    def join(self, name: str) -> int:
        conn = self.connect()
        self.send(conn, wire.join(name))
        kinds = [e["type"] for e in self.read(conn)]
        assert kinds[0] == "welcome", kinds
        return conn

    def send(self, conn: int, data: bytes) -> None:
        self.hub.receive_data(conn, data, self.now)
        for item in self.hub.take_closing():
            self.closed[item.conn_id] = item.reason

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.hub.tick(self.now)
        for item in self.hub.take_closing():
            self.closed[item.conn_id] = item.reason

    def read(self, conn: int) -> list[dict[str, Any]]:
        """Everything queued for ``conn`` so far, decoded (and taken off the outbox)."""
        outbox = self.hub.outbox(conn)
        events: list[dict[str, Any]] = []
        while len(outbox):
            data = bytes(outbox.peek(limit=1 << 30))
            assert data, "held bytes but nothing to send"
            self.hub.sent(conn, len(data), self.now)
            events += self.streams[conn].receive_data(data)
        return events


# What the hub relays: any text without control characters but tab.
RELAYABLE = st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t")


def texts(events: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["from"], e["text"], e["seq"]) for e in events if e["type"] == "message"]


def test_join_welcome_lists_everyone_and_others_see_joined() -> None:
    room = Room()
    alice = room.join("alice")
    bob = room.connect()
    room.send(bob, wire.join("bob"))
    welcome = room.read(bob)[0]
    assert welcome == {"type": "welcome", "name": "bob", "participants": ["alice", "bob"]}
    assert room.read(alice) == [{"type": "joined", "name": "bob"}]
    assert room.hub.participants == ["alice", "bob"]


def test_taken_name_is_a_clear_error_and_another_name_works() -> None:
    room = Room()
    room.join("alice")
    conn = room.connect()
    room.send(conn, wire.join("alice"))
    (error,) = room.read(conn)
    assert error["type"] == "error"
    assert error["code"] == "name-taken"
    assert "alice" in error["detail"]
    assert conn not in room.closed
    room.send(conn, wire.join("alice2"))
    assert room.read(conn)[0]["type"] == "welcome"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param(" alice", id="leading-space"),
        pytest.param("a\nb", id="newline"),
        pytest.param("x" * 33, id="too-long"),
        pytest.param(42, id="not-a-string"),
    ],
)
def test_bad_names_are_refused(name: Any) -> None:
    room = Room()
    conn = room.connect()
    room.send(conn, wire.encode_event("join", name=name))
    (error,) = room.read(conn)
    assert error["code"] == "bad-name"
    assert name_problem(name, max_length=32) is not None


def test_messages_reach_every_other_participant_in_sender_order() -> None:
    room = Room()
    conns = {name: room.join(name) for name in ["a", "b", "c", "d"]}
    for conn in conns.values():
        room.read(conn)  # drop join notices
    # Interleave the senders; each one's own order must survive at every receiver.
    for i in range(20):
        for name, conn in conns.items():
            room.send(conn, wire.say(f"{name}-{i}"))
    for receiver, conn in conns.items():
        got = texts(room.read(conn))
        assert len(got) == 3 * 20
        assert all(sender != receiver for sender, _, _ in got)
        for sender in conns:
            if sender == receiver:
                continue
            mine = [(text, seq) for s, text, seq in got if s == sender]
            assert mine == [(f"{sender}-{i}", i + 1) for i in range(20)]
    assert room.hub.relayed == 80


def test_say_before_join_is_refused() -> None:
    room = Room()
    conn = room.connect()
    room.send(conn, wire.say("hello?"))
    assert room.read(conn)[0]["code"] == "not-joined"


def test_bye_acknowledges_closes_and_announces() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    room.read(alice)
    room.send(bob, wire.bye())
    assert room.read(bob) == [{"type": "bye"}]
    assert room.closed[bob] is Reason.BYE
    assert room.read(alice) == [{"type": "left", "name": "bob", "reason": "bye"}]
    room.hub.forget(bob)
    assert room.hub.participants == ["alice"]
    room.join("bob")  # the name is free again


def test_eof_announces_left_as_disconnected() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    room.read(alice)
    room.send(bob, b"")
    assert room.closed[bob] is Reason.DISCONNECTED
    assert room.read(alice) == [{"type": "left", "name": "bob", "reason": "disconnected"}]


def test_socket_closed_by_the_loop_is_announced_once() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    room.read(alice)
    room.hub.forget(bob)
    room.hub.forget(bob)
    assert room.read(alice) == [{"type": "left", "name": "bob", "reason": "disconnected"}]


def test_slow_reader_overflows_alone_with_a_reason() -> None:
    config = HubConfig(max_queue_frames=10, max_queue_bytes=1 << 20)
    room = Room(config)
    talker, slow, fast = room.join("talker"), room.join("slow"), room.join("fast")
    for conn in (talker, slow, fast):
        room.read(conn)
    for i in range(10):
        room.send(talker, wire.say(f"m{i}"))
        assert len(texts(room.read(fast))) == 1  # fast keeps reading
    assert slow not in room.closed  # exactly full
    room.send(talker, wire.say("one too many"))
    assert room.closed[slow] is Reason.OVERFLOW
    last = room.read(slow)
    assert [e["type"] for e in last] == ["error"], "the backlog is dropped, the reason kept"
    assert last[0]["code"] == "overflow"
    fast_events = room.read(fast)
    assert texts(fast_events) == [("talker", "one too many", 11)]
    assert {"type": "left", "name": "slow", "reason": str(Reason.OVERFLOW)} in fast_events
    assert talker not in room.closed
    assert fast not in room.closed


def test_overflow_by_bytes() -> None:
    config = HubConfig(max_queue_frames=1000, max_queue_bytes=2000, max_text=1500)
    room = Room(config)
    talker, slow = room.join("talker"), room.join("slow")
    room.read(slow)
    room.send(talker, wire.say("x" * 1000))
    assert slow not in room.closed
    room.send(talker, wire.say("y" * 1000))
    assert room.closed[slow] is Reason.OVERFLOW


def test_overflow_cascade_from_left_notices_terminates() -> None:
    # Every receiver is exactly full: one overflow's left notice overflows the next.
    config = HubConfig(max_queue_frames=3)
    room = Room(config)
    conns: list[int] = []
    for i in range(5):
        conns.append(room.join(f"p{i}"))
        for conn in conns:
            room.read(conn)
    room.send(conns[0], wire.say("1"))
    room.send(conns[0], wire.say("2"))
    room.send(conns[0], wire.say("3"))
    room.send(conns[0], wire.say("4"))
    assert all(room.closed.get(c) is Reason.OVERFLOW for c in conns[1:])
    # p0 hears four left notices with room for three: it overflows too, and it ends there.
    assert room.closed[conns[0]] is Reason.OVERFLOW
    assert room.hub.participants == []


def test_silent_peer_is_pinged_then_announced_left_within_the_timeout() -> None:
    config = HubConfig(heartbeat_interval=3.0, peer_timeout=10.0)
    room = Room(config)
    alive, silent = room.join("alive"), room.join("silent")
    room.read(alive)
    room.read(silent)
    for _ in range(40):  # 10 s in quarter seconds; alive answers every ping
        room.tick(0.25)
        if any(e["type"] == "ping" for e in room.read(alive)):
            room.send(alive, wire.pong())
    assert silent not in room.closed
    assert any(e["type"] == "ping" for e in room.read(silent))
    room.tick(0.5)  # now silent for 10.5 s
    assert room.closed[silent] is Reason.TIMEOUT
    assert {"type": "left", "name": "silent", "reason": "heartbeat timeout"} in room.read(alive)
    assert alive not in room.closed


def test_a_reader_behind_a_backlog_is_alive_while_it_keeps_reading() -> None:
    room = Room(HubConfig(heartbeat_interval=1.0, peer_timeout=2.0))
    talker, busy = room.join("talker"), room.join("busy")
    for i in range(200):
        room.send(talker, wire.say(f"m{i}"))
    # busy takes a little of its backlog every half second but never answers a ping.
    outbox = room.hub.outbox(busy)
    for _ in range(20):
        room.tick(0.5)
        room.send(talker, wire.pong())
        room.hub.sent(busy, min(len(outbox), 100), room.now)
    assert busy not in room.closed
    room.tick(2.5)  # now it stops reading too
    assert room.closed[busy] is Reason.TIMEOUT


def test_any_bytes_count_as_life() -> None:
    room = Room(HubConfig(heartbeat_interval=1.0, peer_timeout=2.0))
    conn = room.join("chatty")
    for i in range(20):
        room.tick(0.5)
        room.send(conn, wire.say(f"still here {i}"))
    assert conn not in room.closed


def test_unjoined_connection_also_times_out() -> None:
    room = Room(HubConfig(heartbeat_interval=1.0, peer_timeout=2.0))
    conn = room.connect()
    room.tick(2.5)
    assert room.closed[conn] is Reason.TIMEOUT


def frame_with_content(content: bytes, content_type: str = JSON_TYPE) -> bytes:
    return encode_message(content_type, content, content_encoding="utf-8")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(
            frame_with_content(b'{"type": "say", "text": "\xff\xfe"}'),
            "invalid-utf8",
            id="invalid-utf8",
        ),
        pytest.param(frame_with_content(b"not json"), "bad-event", id="not-json"),
        pytest.param(frame_with_content(b"[1, 2]"), "bad-event", id="not-an-object"),
        pytest.param(frame_with_content(b"{}", "image/png"), "bad-event", id="wrong-type"),
        pytest.param(wire.encode_event("dance"), "unknown-event", id="unknown-event"),
        pytest.param(wire.say("x" * 4097), "too-long", id="text-over-max"),
        pytest.param(wire.encode_event("say", text=""), "bad-text", id="empty-text"),
        pytest.param(wire.encode_event("say", text=["a"]), "bad-text", id="text-not-string"),
    ],
)
def test_bad_event_gets_an_error_to_that_client_only_and_keeps_it(
    payload: bytes, code: str
) -> None:
    room = Room()
    bad, other = room.join("bad"), room.join("other")
    room.read(bad)
    room.send(bad, payload)
    (error,) = room.read(bad)
    assert error["type"] == "error"
    assert error["code"] == code
    assert room.read(other) == []
    assert bad not in room.closed
    room.send(bad, wire.say("recovered"))
    assert texts(room.read(other)) == [("bad", "recovered", 1)]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00\x00", id="zero-header-length"),
        pytest.param(b"\x00\x05hello", id="header-not-json"),
        pytest.param(struct.pack(">H", 5000) + b"x" * 5000, id="header-over-limit"),
        pytest.param(frame_with_content(b"x" * (wire.DEFAULT_MAX_FRAME + 1)), id="frame-over-max"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="http"),
    ],
)
def test_broken_framing_gets_an_error_and_only_that_connection_closes(payload: bytes) -> None:
    room = Room()
    bad, other = room.join("bad"), room.join("other")
    room.read(other)
    room.send(bad, payload)
    events = room.read(bad)
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "protocol"
    assert room.closed == {bad: Reason.PROTOCOL}
    assert room.read(other) == [{"type": "left", "name": "bad", "reason": "protocol error"}]


def test_byte_at_a_time_is_the_same_as_all_at_once() -> None:
    room = Room()
    alice, bob = room.join("alice"), room.join("bob")
    room.read(alice)
    data = b"".join(wire.say(f"piece {i} é✓") for i in range(5))
    for i in range(len(data)):
        room.send(bob, data[i : i + 1])
    assert texts(room.read(alice)) == [("bob", f"piece {i} é✓", i + 1) for i in range(5)]


def test_hub_full() -> None:
    room = Room(HubConfig(max_participants=2))
    room.join("a")
    room.join("b")
    conn = room.connect()
    room.send(conn, wire.join("c"))
    assert room.read(conn)[0]["code"] == "hub-full"
    assert room.closed[conn] is Reason.HUB_FULL


def test_shutdown_tells_everyone() -> None:
    room = Room()
    conns = [room.join("a"), room.join("b")]
    room.read(conns[0])
    room.hub.shutdown()
    closing = room.hub.take_closing()
    assert {c.conn_id for c in closing} == set(conns)
    for conn in conns:
        assert room.read(conn)[-1]["code"] == "shutdown"


def test_who_lists_participants() -> None:
    room = Room()
    alice = room.join("alice")
    room.join("bob")
    room.read(alice)
    room.send(alice, wire.who())
    assert room.read(alice) == [{"type": "participants", "names": ["alice", "bob"]}]


def test_mailbox_partial_consume_and_bounds() -> None:
    box = Mailbox(BroadcastLog(max_frames=3, max_bytes=10))
    assert box.push(b"abc")
    assert box.push(b"defg")
    assert not box.push(b"hijkl")  # 12 bytes would exceed 10
    assert box.peek() == b"abcdefg"
    box.consume(2)
    assert box.peek() == b"cdefg"
    assert len(box) == 5
    assert box.frames == 2
    box.consume(4)
    assert box.peek() == b"g"
    assert box.frames == 1  # a frame sent whole no longer counts
    box.consume(1)
    assert box.frames == 0
    assert len(box) == 0
    assert box.peek() == b""


def test_partial_sends_do_not_inflate_the_count_of_a_fast_reader() -> None:
    # The reader's socket takes all but the last 100 bytes of what is due, every
    # time: it really holds 100 bytes (under one frame), so it must never be cut as
    # too slow. (The old outbox merged the unsent rest with new frames into one
    # chunk that was never sent whole, so every frame ever sent kept counting.)
    config = HubConfig(max_queue_frames=100, rate=1e9, burst=10**9)
    room = Room(config)
    talker, reader = room.join("talker"), room.join("reader")
    room.read(talker)
    room.read(reader)
    outbox = room.hub.outbox(reader)
    stream, got = wire.ChatStream(), []
    for i in range(3000):
        room.send(talker, wire.say(f"message {i:05d}"))  # a frame of ~190 bytes
        due = bytes(outbox.peek())
        data = due[: max(0, len(due) - 100)]
        room.hub.sent(reader, len(data), room.now)
        got += stream.receive_data(data)
        assert len(outbox) == 100
        assert outbox.frames <= 2, f"after {i + 1} messages it counts {outbox.frames} frames"
    assert reader not in room.closed
    rest = bytes(outbox.peek(1 << 30))
    room.hub.sent(reader, len(rest), room.now)
    got += stream.receive_data(rest)
    assert [e["seq"] for e in got] == list(range(1, 3001))


def test_overflow_notice_follows_a_half_sent_frame_whole() -> None:
    config = HubConfig(max_queue_frames=20, max_queue_bytes=1 << 20)
    room = Room(config)
    talker, slow = room.join("talker"), room.join("slow")
    room.read(slow)
    room.send(talker, wire.say("first"))
    outbox = room.hub.outbox(slow)
    stream = wire.ChatStream()
    head = bytes(outbox.peek())[:7]  # the socket took 7 bytes of the frame, then stalled
    room.hub.sent(slow, len(head), room.now)
    events = stream.receive_data(head)
    for i in range(30):
        room.send(talker, wire.say(f"more {i}"))
    assert room.closed[slow] is Reason.OVERFLOW
    rest = bytes(outbox.peek(1 << 30))
    room.hub.sent(slow, len(rest), room.now)
    events += stream.receive_data(rest)  # a garbled stream raises here
    assert [e["type"] for e in events] == ["message", "error"]
    assert events[0]["text"] == "first"
    assert events[1]["code"] == "overflow"


def test_private_frames_keep_their_place_among_broadcasts() -> None:
    room = Room()
    talker, asker = room.join("talker"), room.join("asker")
    room.read(asker)
    room.send(talker, wire.say("before"))
    room.send(asker, wire.who())  # queued while "before" is still unread
    room.send(talker, wire.say("after"))
    room.send(asker, wire.say("mine"))  # never sent back to its sender
    room.send(talker, wire.say("last"))
    kinds = [(e["type"], e.get("text")) for e in room.read(asker)]
    assert kinds == [
        ("message", "before"),
        ("participants", None),
        ("message", "after"),
        ("message", "last"),
    ]
    assert texts(room.read(talker)) == [("asker", "mine", 1)]


def test_a_flooder_is_rate_limited_and_the_readers_get_every_relayed_message() -> None:
    config = HubConfig(rate=50.0, burst=100)
    room = Room(config)
    flooder, reader = room.join("flooder"), room.join("reader")
    room.read(flooder)
    room.read(reader)
    room.send(flooder, b"".join(wire.say(f"f{i}") for i in range(300)))
    errors = [e for e in room.read(flooder) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate-limited"]  # once, not once per message
    assert "50 messages/s" in errors[0]["detail"]
    assert room.hub.read_paused_until(flooder, room.now) is not None
    assert room.hub.read_paused_until(reader, room.now) is None
    assert texts(room.read(reader)) == [("flooder", f"f{i}", i + 1) for i in range(100)]
    room.now += 1.0  # 50 tokens later
    assert room.hub.read_paused_until(flooder, room.now) is None
    room.send(flooder, b"".join(wire.say(f"g{i}") for i in range(60)))
    got = texts(room.read(reader))
    assert [t for _, t, _ in got] == [f"g{i}" for i in range(50)]
    assert [s for _, _, s in got] == list(range(101, 151))  # seq counts relayed messages only
    assert [e["code"] for e in room.read(flooder) if e["type"] == "error"] == ["rate-limited"]
    assert flooder not in room.closed
    assert reader not in room.closed
    assert room.hub.rate_limited == 200 + 10


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\x1b[2Jcleared", id="esc"),
        pytest.param("\x1b]0;title\x07", id="osc"),
        pytest.param("fine\r* alice left (bye)", id="cr"),
        pytest.param("fine\n* alice left (bye)", id="lf"),
        pytest.param("del\x7f", id="del"),
        pytest.param("csi\x9b2J", id="c1"),
        pytest.param("nul\x00", id="nul"),
    ],
)
def test_texts_with_control_characters_are_refused_and_the_sender_stays(text: str) -> None:
    room = Room()
    bad, other = room.join("bad"), room.join("other")
    room.read(bad)
    room.send(bad, wire.say(text))
    (error,) = room.read(bad)
    assert error["code"] == "bad-text"
    assert "control" in error["detail"]
    assert room.read(other) == []
    room.send(bad, wire.say("tab\tis fine, and so are \u202e bidi and é✓"))
    assert texts(room.read(other)) == [("bad", "tab\tis fine, and so are \u202e bidi and é✓", 1)]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("* alice", id="notice"),
        pytest.param("*alice", id="notice-no-space"),
        pytest.param("! overflow", id="error"),
        pytest.param("\uff0aalice", id="fullwidth-star"),
        pytest.param("ali\u202ece", id="bidi"),
        pytest.param("a\x1bb", id="esc"),
    ],
)
def test_names_that_imitate_notices_or_hide_controls_are_refused(name: str) -> None:
    room = Room()
    conn = room.connect()
    room.send(conn, wire.join(name))
    (error,) = room.read(conn)
    assert error["code"] == "bad-name"
    assert conn not in room.closed


@pytest.mark.parametrize(
    ("present", "lookalike"),
    [
        pytest.param("alice", "\u0430lice", id="cyrillic-a"),
        pytest.param("alice", "ALICE", id="case"),
        pytest.param("bob", "b\u043eb", id="cyrillic-o"),
        pytest.param("bill", "bi11", id="digits"),
        pytest.param("modem", "rnodem", id="rn-m"),
        pytest.param("alice", "\uff41lice", id="fullwidth"),
        pytest.param("zoe", "zo\u0065\u0301", id="combining-mark"),
        pytest.param("ann_2", "ann-2", id="underscore"),
    ],
)
def test_confusable_names_are_refused_while_the_original_is_present(
    present: str, lookalike: str
) -> None:
    room = Room()
    original = room.join(present)
    conn = room.connect()
    room.send(conn, wire.join(lookalike))
    (error,) = room.read(conn)
    assert error["code"] == "name-confusable"
    assert present in error["detail"]
    room.send(original, wire.bye())
    room.hub.forget(original)
    room.send(conn, wire.join(lookalike))  # free once the original has left
    assert room.read(conn)[0]["type"] == "welcome"


def test_distinct_names_are_not_confused() -> None:
    room = Room()
    for name in ["alice", "alicia", "bob", "bobby", "swarm-1", "swarm-10", "swarm-11", "Zoë"]:
        room.join(name)
    assert len(room.hub.participants) == 8


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_hub(data: bytes) -> None:
    room = Room()
    victim, bystander = room.join("victim"), room.join("bystander")
    room.read(bystander)
    room.send(victim, data)
    room.read(victim)
    # The bystander hears at most a left notice about the victim, never a crash.
    for event in room.read(bystander):
        assert event["type"] in {"left", "message", "joined"}
    assert bystander not in room.closed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(RELAYABLE, min_size=1, max_size=50), min_size=1, max_size=20), st.data())
def test_any_chunking_preserves_order(messages: list[str], data: st.DataObject) -> None:
    room = Room()
    sender, receiver = room.join("s"), room.join("r")
    room.read(sender)
    stream = b"".join(wire.say(text) for text in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:  # b"" would mean EOF
            room.send(sender, stream[start:end])
    assert [t for _, t, _ in texts(room.read(receiver))] == messages


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.binary(min_size=1, max_size=40)),
            st.tuples(st.just("send"), st.integers(1, 100)),
        ),
        max_size=60,
    ),
    st.integers(1, 64),
)
def test_private_mailbox_is_a_byte_fifo(ops: list[tuple[str, Any]], limit: int) -> None:
    box = Mailbox(BroadcastLog(max_frames=10_000, max_bytes=1 << 20))
    pushed, sent = bytearray(), bytearray()
    for op, arg in ops:
        if op == "push":
            assert box.push(arg)
            pushed += arg
        else:
            data = bytes(box.peek(limit))[:arg]
            box.consume(len(data))
            sent += data
        assert len(box) == len(pushed) - len(sent)
    while len(box):
        data = bytes(box.peek(limit))
        assert data
        box.consume(len(data))
        sent += data
    assert bytes(sent) == bytes(pushed)
    assert box.frames == 0
