"""The reaper's decisions, with no sockets and no clock: lines in, actions out.

The controller connects, says ``hello TOKEN`` (the token given to the reaper
at start, in its environment), and keeps the connection open for as long as
it lives. Over it, it may send ``note JSON`` (a line for the journal: what the
run applied to the network, so a later ``lab`` process can read it in the
reaper's log), ``ping`` (answered ``pong``) and, when it ends normally,
``done`` (the reaper then leaves without touching anything).

The reaper reaps when

* a controller was connected, none is any more, and none came back within
  ``linger`` seconds (its process died: the kernel closed its socket), or
* no controller said hello within ``connect_timeout`` seconds of the start.

Hostile input is bounded: lines of at most :data:`MAX_LINE` bytes, at most
:data:`MAX_CONNECTIONS` connections, :data:`HELLO_TIMEOUT` seconds to say
hello, a wrong token or any other first line closes the connection, at most
:data:`MAX_NOTES` notes. Nothing a connection sends changes *what* is reaped:
the project and scope come from the command line only.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Final

MAX_LINE: Final = 4096
MAX_CONNECTIONS: Final = 16
MAX_NOTES: Final = 10_000
HELLO_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    conn: int
    text: str


@dataclass(frozen=True, slots=True)
class Close:
    conn: int
    why: str


@dataclass(frozen=True, slots=True)
class Journal:
    """A note from the controller, to log (already checked: one JSON object)."""

    note: str


@dataclass(frozen=True, slots=True)
class Reap:
    reason: str


@dataclass(frozen=True, slots=True)
class Release:
    """The controller ended normally: leave without reaping."""


Action = Reply | Close | Journal | Reap | Release


@dataclass
class _Connection:
    opened: float
    buffer: bytes = b""
    authed: bool = False


@dataclass
class ReaperCore:
    """The reaper's state: connections, whether a controller ever said hello, when the
    last one left."""

    token: str
    started: float
    connect_timeout: float
    linger: float
    connections: dict[int, _Connection] = field(default_factory=dict)
    ever_authed: bool = False
    last_left: float | None = None
    notes: int = 0
    finished: bool = False  # reaped or released: nothing more to decide

    def connected(self, conn: int, now: float) -> list[Action]:
        if self.finished or len(self.connections) >= MAX_CONNECTIONS:
            return [Close(conn, "too many connections")]
        self.connections[conn] = _Connection(opened=now)
        return []

    def received(self, conn: int, data: bytes, now: float) -> list[Action]:
        """Bytes from ``conn`` (``b""``: it closed)."""
        state = self.connections.get(conn)
        if state is None:
            return []
        if not data:
            return self.closed(conn, now)
        state.buffer += data
        actions: list[Action] = []
        while b"\n" in state.buffer:
            line, state.buffer = state.buffer.split(b"\n", 1)
            actions += self._line(conn, state, line.rstrip(b"\r"))
            if any(isinstance(a, Close | Release) for a in actions):
                return actions
        if len(state.buffer) > MAX_LINE:
            actions.append(Close(conn, f"a line longer than {MAX_LINE} bytes"))
        return actions

    def _line(self, conn: int, state: _Connection, raw: bytes) -> list[Action]:
        if len(raw) > MAX_LINE:
            return [Close(conn, f"a line longer than {MAX_LINE} bytes")]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return [Close(conn, "not UTF-8")]
        word, _, rest = text.partition(" ")
        if not state.authed:
            return self._hello(conn, state, word, rest)
        if word == "note":
            return self._note(conn, rest)
        if word == "done":
            self.finished = True
            return [Reply(conn, "bye"), Release()]
        return [Reply(conn, "pong" if word == "ping" else f"unknown {word[:40]!r}")]

    def _hello(self, conn: int, state: _Connection, word: str, rest: str) -> list[Action]:
        if word == "hello" and hmac.compare_digest(rest.encode(), self.token.encode()):
            state.authed = True
            self.ever_authed = True
            return [Reply(conn, "ok")]
        return [Reply(conn, "refused"), Close(conn, "no hello with the right token")]

    def _note(self, conn: int, text: str) -> list[Action]:
        if self.notes >= MAX_NOTES:
            return [Reply(conn, "full")]
        try:
            value = json.loads(text)
        except ValueError:
            return [Reply(conn, "not json")]
        if not isinstance(value, dict):
            return [Reply(conn, "not a json object")]
        self.notes += 1
        return [
            Journal(json.dumps(value, sort_keys=True, separators=(",", ":"))),
            Reply(conn, "ok"),
        ]

    def closed(self, conn: int, now: float) -> list[Action]:
        state = self.connections.pop(conn, None)
        if state is not None and state.authed:
            self.last_left = now
        return []

    def tick(self, now: float) -> list[Action]:
        """What time alone decides: slow hellos are closed, and whether to reap."""
        actions: list[Action] = [
            Close(conn, "no hello in time")
            for conn, state in self.connections.items()
            if not state.authed and now - state.opened > HELLO_TIMEOUT
        ]
        if self.finished:
            return actions
        if any(state.authed for state in self.connections.values()):
            return actions
        if not self.ever_authed and now - self.started > self.connect_timeout:
            self.finished = True
            return [*actions, Reap(f"no controller connected within {self.connect_timeout:g} s")]
        if self.ever_authed and self.last_left is not None and now - self.last_left >= self.linger:
            self.finished = True
            return [*actions, Reap("the controller's connection dropped")]
        return actions
