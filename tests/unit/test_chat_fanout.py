"""The shared broadcast log and its per-reader mailboxes, against a plain per-reader FIFO model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.chat.fanout import RUN_CACHE, BroadcastLog, Mailbox

NOTICE = b"<overflow notice>"


@dataclass
class Model:
    """What one reader should get: a FIFO of frames and the bytes it must receive."""

    attached: bool = False
    # Each item: [frame, own (never sent: the reader sent it), bytes sent, came from the log].
    queue: list[list[Any]] = field(default_factory=list)
    delivered: bytearray = field(default_factory=bytearray)
    expected: bytearray = field(default_factory=bytearray)
    cut: bool = False

    @property
    def frames(self) -> int:
        return len(self.queue)

    @property
    def size(self) -> int:
        return sum(len(item[0]) - item[2] for item in self.queue)

    def add(self, frame: bytes, *, own: bool = False, logged: bool = False) -> None:
        self.queue.append([frame, own, 0, logged])
        if not own:
            self.expected += frame

    def take(self, size: int) -> None:
        while size:
            item = self.queue[0]
            step = min(size, len(item[0]) - item[2])
            item[2] += step
            size -= step
            if item[2] == len(item[0]):
                self.queue.pop(0)
                self.pass_own()

    def pass_own(self) -> None:
        """Own frames with no log frame before them are passed (the cursor reached
        them), private frames queued before them notwithstanding."""
        for index, item in enumerate(self.queue):
            if item[3] and not item[1]:
                return  # a log frame still ahead of the rest
            if item[1]:
                del self.queue[index]
                self.pass_own()
                return

    def cut_to_boundary(self) -> None:
        """Detached after an overflow: only the frame in flight is finished."""
        kept = [self.queue[0]] if self.queue and self.queue[0][2] else []
        for item in self.queue[len(kept) :]:
            if not item[1]:
                del self.expected[len(self.expected) - len(item[0]) :]  # never sent now
        self.queue = kept
        self.attached = False
        self.cut = True


readers = st.integers(0, 2)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("attach"), readers),
        st.tuples(st.just("broadcast"), st.binary(min_size=1, max_size=30), st.none() | readers),
        st.tuples(st.just("private"), readers, st.binary(min_size=1, max_size=30)),
        st.tuples(st.just("send"), readers, st.integers(1, 80), st.integers(1, 64)),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(ops, st.integers(2, 12), st.integers(30, 300))
def test_every_reader_gets_its_own_fifo_with_exact_accounting(
    steps: list[tuple[Any, ...]], max_frames: int, max_bytes: int
) -> None:
    """Interleaved broadcasts (from readers or not), private frames, partial sends and
    peeks: each reader receives exactly its FIFO (never its own broadcasts), holds what
    the model says to the byte and the frame, and is cut exactly when it would exceed a
    bound, its notice starting on a frame boundary."""
    log = BroadcastLog(max_frames=max_frames, max_bytes=max_bytes)
    boxes = [Mailbox(log, owner=i) for i in range(3)]
    models = [Model() for _ in range(3)]

    def cut(index: int) -> None:
        models[index].cut_to_boundary()
        boxes[index].force(NOTICE)
        models[index].add(NOTICE)

    for step in steps:
        kind = step[0]
        if kind == "attach":
            index = step[1]
            if not models[index].attached and not models[index].cut:
                boxes[index].attach()
                models[index].attached = True
        elif kind == "broadcast":
            _, frame, origin = step
            for index, model in enumerate(models):
                if model.attached:
                    model.add(frame, own=index == origin, logged=True)
                    model.pass_own()
            origin_box = boxes[origin] if origin is not None else None
            over = {box.owner for box in log.append(frame, origin=origin_box)}
            should = {
                i
                for i, m in enumerate(models)
                if m.attached and (m.frames > max_frames or m.size > max_bytes)
            }
            assert over == should
            for index in sorted(over):
                cut(index)
        elif kind == "private":
            _, index, frame = step
            model = models[index]
            fits = model.frames + 1 <= max_frames and model.size + len(frame) <= max_bytes
            assert boxes[index].push(frame) is fits
            if fits:
                model.add(frame)
            else:
                boxes[index].detach(keep=False)
                cut(index)
        else:
            _, index, size, limit = step
            data = bytes(boxes[index].peek(limit))[:size]
            boxes[index].consume(len(data))
            models[index].delivered += data
            models[index].take(len(data))
        for box, model in zip(boxes, models, strict=True):
            assert box.frames == model.frames
            assert len(box) == model.size
            assert box.attached == model.attached
            assert model.expected.startswith(model.delivered)
    for box, model in zip(boxes, models, strict=True):
        while len(box):
            data = bytes(box.peek(7))
            assert data, "held bytes but nothing to send"
            box.consume(len(data))
            model.delivered += data
        assert bytes(model.delivered) == bytes(model.expected)
    log.check()
    assert len(log) == 0  # every cursor is at the end: the log keeps nothing


def drain(box: Mailbox) -> bytes:
    out = bytearray()
    while len(box):
        data = bytes(box.peek())
        box.consume(len(data))
        out += data
    return bytes(out)


def test_a_broadcast_touches_no_reader_until_the_slack_is_used_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = BroadcastLog(max_frames=10_000, max_bytes=1 << 30)
    boxes = [Mailbox(log, owner=i) for i in range(500)]
    for box in boxes:
        box.attach()
    checks: list[int] = []
    real_check = BroadcastLog.check

    def counted(self: BroadcastLog) -> list[Mailbox]:
        checks.append(self.end)
        return real_check(self)

    monkeypatch.setattr(BroadcastLog, "check", counted)
    for i in range(25_000):
        log.append(b"frame %05d" % i)
        if i % 5000 == 4999:
            for box in boxes:
                drain(box)
    # One scan of the readers per ~10,000 appends (when the slack runs out), not per append.
    assert len(checks) in (2, 3)
    assert all(len(box) == 0 for box in boxes)


def test_a_slow_reader_is_cut_at_the_bound_and_the_log_trimmed_past_it() -> None:
    log = BroadcastLog(max_frames=5, max_bytes=1 << 20)
    fast, other, slow = (Mailbox(log, owner=i) for i in range(3))
    for box in (fast, other, slow):
        box.attach()
    cut: list[Mailbox] = []
    for i in range(5):
        cut += log.append(b"m%d" % i)
        drain(fast)
        drain(other)
    assert cut == []
    assert slow.frames == 5  # exactly full
    cut += log.append(b"m5")
    assert cut == [slow]
    assert not slow.attached
    assert slow.frames == 0  # nothing was in flight: nothing kept
    assert len(log) == 1  # only what the fast readers have not read yet
    assert drain(fast) == b"m5"
    log.append(b"m6", origin=fast)  # its own broadcast: not sent back
    assert drain(fast) == b""
    assert drain(other) == b"m5m6"


def test_a_reader_that_sends_while_behind_never_gets_its_own_frames() -> None:
    log = BroadcastLog(max_frames=100, max_bytes=1 << 20)
    me, peer = Mailbox(log, owner=1), Mailbox(log, owner=2)
    me.attach()
    peer.attach()
    log.append(b"<p1>", origin=peer)
    log.append(b"<me1>", origin=me)  # me has <p1> pending: its own frame waits at its cursor
    me.push(b"<private>")
    log.append(b"<p2>", origin=peer)
    log.append(b"<me2>", origin=me)
    assert me.frames == 5  # its own two frames hold the log until its cursor passes them
    first = bytes(me.peek())
    assert first == b"<p1><private><p2>"
    me.consume(3)
    assert drain(me) == b"><private><p2>"
    assert me.frames == 0
    assert drain(peer) == b"<me1><me2>"


def test_readers_at_the_same_cursor_share_one_joined_run() -> None:
    log = BroadcastLog(max_frames=1000, max_bytes=1 << 20)
    boxes = [Mailbox(log, owner=i) for i in range(50)]
    for box in boxes:
        box.attach()
    log.append(b"<a>", origin=boxes[0])
    log.append(b"<b>", origin=boxes[1])
    log.append(b"<c>")
    chunks = [box.peek() for box in boxes]
    assert chunks[0] == b"<b><c>"
    assert chunks[1] == b"<a><c>"
    assert chunks[2] == b"<a><b><c>"
    # One join for the 48 readers with nothing of their own in the run, not one each.
    assert all(chunk is chunks[2] for chunk in chunks[2:])
    for box, chunk in zip(boxes, chunks, strict=True):
        box.consume(len(chunk))
    assert boxes[0].peek() == boxes[1].peek() == b""
    assert all(len(box) == 0 for box in boxes)
    log.check()
    assert len(log) == 0
    assert not log._runs  # trimmed: no run outlives its frames


def test_the_shared_runs_are_bounded_however_many_cursors() -> None:
    log = BroadcastLog(max_frames=1000, max_bytes=1 << 20)
    boxes = [Mailbox(log, owner=i) for i in range(40)]
    for box in boxes:
        box.attach()
    for i, box in enumerate(boxes):  # every reader at a different cursor
        log.append(b"<%d>" % i)
        log.append(b"<%d'>" % i)
        box.consume(len(box.peek()))
    for box in boxes:
        cursor = box._cursor
        assert cursor is not None
        assert box.peek() == b"".join(log._frames[cursor - log._base :])
    assert len(log._runs) <= RUN_CACHE
