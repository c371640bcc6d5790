"""The hub's outgoing side without I/O: one shared log of broadcast frames, a cursor per reader.

A broadcast is appended once to the :class:`BroadcastLog` (O(1), whatever the
number of participants); each participant's :class:`Mailbox` is a cursor into
that log plus a small FIFO of private frames (errors, ``/who`` answers, pongs)
that are ordered against the log by position: a private frame queued when the
log ended at ``p`` goes out after log frame ``p - 1`` and before frame ``p``.
A sender's own broadcasts are skipped at its cursor, never sent back.

What a mailbox *holds* is everything from its cursor to the end of the log
(its own frames still ahead of the cursor included: they keep the log from
being trimmed) plus its private frames, less the bytes of the frame in flight
already sent. That is what the bounds count: a reader whose holding would
exceed ``max_frames`` or ``max_bytes`` is cut from the log (a slow reader is a
cursor that fell behind). The log checks its readers only when the slack left
by the fullest one at the last check is used up, so a broadcast stays O(1)
amortised, and it drops the frames every cursor has passed at each check.

:meth:`Mailbox.peek` joins what is due, up to :data:`PEEK_LIMIT` bytes, into one
chunk for one ``send``. Nothing is kept per reader (a chunk per reader would cost
N x the limit in memory); the log keeps the last few joined runs
(:data:`RUN_CACHE`), because at one flush nearly every reader is at the same
cursor and asks for the same run: one join serves them all.
A detached mailbox keeps the frame in flight whole, so whatever is queued
after it (an ``overflow`` notice) starts on a frame boundary.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from typing import Final

# Bytes handed to one send() at most: about what a socket with the hub's 64 KiB
# SO_SNDBUF (doubled by the kernel) can take at once.
PEEK_LIMIT: Final = 128 * 1024
# Joined runs of log frames the log keeps for readers at the same cursor: at one
# flush, nearly every reader asks for the same run (the senders of the frames in it
# ask for it less their own), so a handful of entries serves N readers with one join.
RUN_CACHE: Final = 8


class BroadcastLog:
    """Encoded broadcast frames, shared by every attached :class:`Mailbox`."""

    __slots__ = (
        "_base",
        "_bounds",
        "_frames",
        "_readers",
        "_runs",
        "_slack_bytes",
        "_slack_frames",
        "max_bytes",
        "max_frames",
    )

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: list[bytes] = []
        # _bounds[i]: the absolute byte offset where frame _base + i starts; the last
        # entry is where the next frame will start (so a run's size is a subtraction).
        self._bounds: list[int] = [0]
        self._base = 0  # absolute index of _frames[0]
        self._readers: dict[Mailbox, None] = {}  # attached mailboxes, in attach order
        # (first, last) absolute -> frames first..last-1 joined. Frames never change
        # once appended, so an entry stays right until the log is trimmed past it.
        self._runs: dict[tuple[int, int], bytes] = {}
        self._slack_frames = max_frames
        self._slack_bytes = max_bytes

    def __len__(self) -> int:
        """Frames kept (not yet passed by every cursor)."""
        return len(self._frames)

    @property
    def end(self) -> int:
        """Absolute index the next frame will get."""
        return self._base + len(self._frames)

    @property
    def readers(self) -> list[Mailbox]:
        return list(self._readers)

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    def append(self, frame: bytes, *, origin: Mailbox | None = None) -> list[Mailbox]:
        """Broadcast ``frame`` to every attached mailbox but ``origin``.

        Returns the mailboxes that would now hold more than the bounds; they are
        already detached (their frame in flight kept whole, the rest dropped).
        """
        position = self.end
        size = len(frame)
        self._frames.append(frame)
        self._bounds.append(self._bounds[-1] + size)
        if origin is not None and origin._cursor is not None:
            if origin._cursor == position:  # caught up: pass its own frame at once
                origin._cursor = position + 1
            else:
                origin._own.append(position)
        self._slack_frames -= 1
        self._slack_bytes -= size
        if self._slack_frames < 0 or self._slack_bytes < 0:
            return self.check()
        return []

    def check(self) -> list[Mailbox]:
        """Cut every reader over the bounds, recompute the slack, trim; returns the cut."""
        over: list[Mailbox] = []
        slack_frames, slack_bytes = self.max_frames, self.max_bytes
        for mailbox in list(self._readers):
            frames, size = mailbox.frames, len(mailbox)
            if frames > self.max_frames or size > self.max_bytes:
                mailbox.detach(keep=False)
                over.append(mailbox)
            else:
                slack_frames = min(slack_frames, self.max_frames - frames)
                slack_bytes = min(slack_bytes, self.max_bytes - size)
        self._slack_frames, self._slack_bytes = slack_frames, slack_bytes
        self.trim()
        return over

    def trim(self) -> None:
        """Forget the frames every attached cursor has passed."""
        cursors = [m._cursor for m in self._readers if m._cursor is not None]
        drop = (min(cursors) if cursors else self.end) - self._base
        if drop > 0:
            del self._frames[:drop]
            del self._bounds[:drop]
            self._base += drop
            self._runs.clear()

    def _run(self, first: int, last: int) -> bytes:
        """Frames ``first``..``last - 1`` (indices into ``_frames``) joined, shared."""
        if last - first == 1:
            return self._frames[first]
        key = (self._base + first, self._base + last)
        run = self._runs.get(key)
        if run is None:
            if len(self._runs) >= RUN_CACHE:
                del self._runs[next(iter(self._runs))]  # the oldest: its readers moved on
            run = self._runs[key] = b"".join(self._frames[first:last])
        return run

    def _noted(self, mailbox: Mailbox) -> None:
        """``mailbox`` holds more (a private frame): its slack may be the smallest now."""
        self._slack_frames = min(self._slack_frames, self.max_frames - mailbox.frames)
        self._slack_bytes = min(self._slack_bytes, self.max_bytes - len(mailbox))


class Mailbox:
    """One participant's outgoing stream: a cursor into the log and private frames.

    Unattached (before joining, and after :meth:`detach`) it carries private
    frames only.
    """

    __slots__ = (
        "_cursor",
        "_log",
        "_offset",
        "_own",
        "_private",
        "_private_bytes",
        "owner",
    )

    def __init__(self, log: BroadcastLog, *, owner: int = 0) -> None:
        self.owner = owner  # the connection id, for whoever handles an overflow
        self._log = log
        self._cursor: int | None = None  # next log frame; None: not attached
        self._own: deque[int] = deque()  # positions of own frames ahead of the cursor
        self._private: deque[tuple[int, bytes]] = deque()  # (log position, frame)
        self._private_bytes = 0
        self._offset = 0  # bytes of the front piece already sent

    # ------------------------------------------------------------------ state

    @property
    def attached(self) -> bool:
        return self._cursor is not None

    @property
    def frames(self) -> int:
        """Frames held (the one in flight counts until it is all sent)."""
        held = len(self._private)
        if self._cursor is not None:
            held += self._log.end - self._cursor
        return held

    def __len__(self) -> int:
        """Bytes held and not yet sent."""
        held = self._private_bytes - self._offset
        if self._cursor is not None:
            log = self._log
            held += log._bounds[-1] - log._bounds[self._cursor - log._base]
        return held

    def attach(self) -> None:
        """Receive every broadcast from now on."""
        if self._cursor is None:
            self._cursor = self._log.end
            self._log._readers[self] = None
            self._log._noted(self)  # private frames queued before count against the slack

    def detach(self, *, keep: bool) -> None:
        """Stop receiving broadcasts. ``keep``: what is held still goes out; otherwise
        only the frame in flight is finished (so the next frame starts on a boundary)."""
        frames = self._due_frames()
        if not keep:
            frames = frames[:1] if self._offset else []
        if self._cursor is not None:
            del self._log._readers[self]
        self._cursor = None
        self._own.clear()
        self._private = deque((0, frame) for frame in frames)
        self._private_bytes = sum(len(frame) for frame in frames)
        if not frames:
            self._offset = 0

    def clear(self) -> None:
        """Drop everything (the socket is gone)."""
        self.detach(keep=False)
        self._private.clear()
        self._private_bytes = 0
        self._offset = 0

    # ------------------------------------------------------------------ queueing

    def push(self, frame: bytes) -> bool:
        """Queue a private frame; False (nothing queued) when it would exceed the bounds."""
        log = self._log
        if self.frames + 1 > log.max_frames or len(self) + len(frame) > log.max_bytes:
            return False
        self.force(frame)
        if self._cursor is not None:
            log._noted(self)
        return True

    def force(self, frame: bytes) -> None:
        """Queue a private frame regardless of the bounds (a last word before closing)."""
        position = self._log.end if self._cursor is not None else 0
        self._private.append((position, frame))
        self._private_bytes += len(frame)

    # ------------------------------------------------------------------ sending

    def peek(self, limit: int = PEEK_LIMIT) -> bytes:
        """The front of what is due, up to about ``limit`` bytes (at least one piece);
        ``b""`` when nothing is."""
        cursor = self._cursor
        if cursor is not None and not self._private and not self._own and not self._offset:
            # The common case, a reader with only log frames due: a shared run.
            log = self._log
            first, stop = cursor - log._base, len(log._frames)
            if first >= stop:
                return b""
            bounds = log._bounds
            last = bisect_right(bounds, bounds[first] + limit, first + 1, stop + 1) - 1
            return log._run(first, max(first + 1, last))
        parts: list[bytes] = []
        size = 0
        for part in self._pieces(limit):
            parts.append(part)
            size += len(part)
            if size >= limit:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def consume(self, size: int) -> None:
        """``size`` bytes from the front reached the socket."""
        log, private = self._log, self._private
        cursor = self._cursor
        if (  # the common case: only log frames were due, and all of them went
            cursor is not None
            and not private
            and not self._own
            and log._bounds[cursor - log._base] + self._offset + size == log._bounds[-1]
        ):
            self._cursor = log.end
            self._offset = 0
            return
        while size > 0:
            cursor = self._cursor
            if private and (cursor is None or private[0][0] <= cursor):
                frame = private[0][1]
                rest = len(frame) - self._offset
                if size < rest:
                    self._offset += size
                    return
                size -= rest
                private.popleft()
                self._private_bytes -= len(frame)
                self._offset = 0
                self._skip_own()
                continue
            if cursor is None or cursor >= log.end:
                raise ValueError("consumed more than was held")
            stop = self._run_stop()
            base, bounds = log._base, log._bounds
            start = bounds[cursor - base] + self._offset
            run_end = bounds[stop - base]
            if start + size >= run_end:
                size -= run_end - start
                self._cursor = stop
                self._offset = 0
                self._skip_own()
            else:
                target = start + size
                index = bisect_right(bounds, target, cursor - base, stop - base) - 1
                self._cursor = base + index
                self._offset = target - bounds[index]
                return

    # ------------------------------------------------------------------ internals

    def _skip_own(self) -> None:
        own, cursor = self._own, self._cursor
        if cursor is None:
            return
        while own and own[0] == cursor:
            own.popleft()
            cursor += 1
        self._cursor = cursor

    def _run_stop(self) -> int:
        """Where the run of log frames sendable from the cursor ends."""
        stop = self._log.end
        if self._own:
            stop = min(stop, self._own[0])
        if self._private:
            stop = min(stop, self._private[0][0])
        return stop

    def _due_frames(self) -> list[bytes]:
        """Every frame held, whole, in the order they go out (own frames left out)."""
        log, private, own = self._log, self._private, self._own
        cursor, end, base = self._cursor, log.end, log._base
        pi, oi = 0, 0
        frames: list[bytes] = []
        while True:
            if pi < len(private) and (cursor is None or private[pi][0] <= cursor):
                frames.append(private[pi][1])
                pi += 1
            elif cursor is not None and cursor < end:
                if oi < len(own) and own[oi] == cursor:
                    cursor += 1
                    oi += 1
                    continue
                stop = min(end, own[oi] if oi < len(own) else end)
                if pi < len(private):
                    stop = min(stop, private[pi][0])
                frames.extend(log._frames[cursor - base : stop - base])
                cursor = stop
            else:
                return frames

    def _pieces(self, limit: int) -> list[bytes]:
        """What is due, in order, as byte strings: runs of log frames joined, up to
        about ``limit`` bytes, the front piece without its bytes already sent."""
        log, private, own = self._log, self._private, self._own
        cursor, offset = self._cursor, self._offset
        pi, oi = 0, 0
        pieces: list[bytes] = []
        size = 0
        end = log.end
        while size < limit:
            if pi < len(private) and (cursor is None or private[pi][0] <= cursor):
                piece = private[pi][1]
                pi += 1
            elif cursor is not None and cursor < end:
                if oi < len(own) and own[oi] == cursor:
                    cursor += 1
                    oi += 1
                    continue
                stop = min(end, own[oi] if oi < len(own) else end)
                if pi < len(private):
                    stop = min(stop, private[pi][0])
                first, base, bounds = cursor - log._base, log._base, log._bounds
                budget = bounds[first] + offset + (limit - size)
                last = max(first + 1, bisect_right(bounds, budget, first + 1, stop - base + 1) - 1)
                piece = log._run(first, last)
                cursor = base + last
            else:
                break
            if offset:
                piece = piece[offset:]
                offset = 0
            pieces.append(piece)
            size += len(piece)
        return pieces
