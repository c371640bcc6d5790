"""What an action handler asks the loop to do, and what a handler may use.

A handler is a function ``(Call) -> Outcome``. It never touches a socket: it
returns bytes to send, a file to stream, work to run off the loop, an answer
to give later, or the switch to the sink, and the loop carries that out.
Exceptions it raises are turned into answers in one place,
:func:`socketlab.server.dispatch.answer_message`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socketlab.objects import TypeRegistry
from socketlab.protocol import ProtocolError, encode_response
from socketlab.server.config import ServerConfig
from socketlab.server.hashes import HashCache


@dataclass(frozen=True, kw_only=True)
class Services:
    """What handlers may use: the settings, the object type registry, the file hash cache."""

    config: ServerConfig
    hostname: str
    registry: TypeRegistry
    hashes: HashCache


@dataclass(frozen=True, kw_only=True)
class Call:
    """One JSON request as its handler sees it."""

    services: Services
    peer: str  # "host:port"
    action: str
    value: Any

    @property
    def peer_host(self) -> str:
        return self.peer.rsplit(":", 1)[0]


@dataclass(frozen=True)
class Send:
    """Queue these bytes (an encoded message)."""

    data: bytes


@dataclass(frozen=True, kw_only=True)
class SendFile:
    """Queue ``header``, then ``count`` bytes of ``path`` from ``offset`` (``os.sendfile``)."""

    header: bytes
    path: Path
    offset: int
    count: int
    name: str  # as the peer asked for it, for the logs
    size: int


@dataclass(frozen=True)
class Deferred:
    """Run ``work`` on a worker thread (it may block), then carry out the outcome it returns.

    The connection reads nothing meanwhile, and no deadline runs against the peer.
    """

    work: Callable[[], Outcome]


@dataclass(frozen=True)
class Later:
    """Carry out ``then`` after ``delay`` seconds (the connection waits, as for Deferred)."""

    delay: float
    then: Outcome


@dataclass(frozen=True)
class StartSink:
    """Count raw bytes until the peer half-closes, then answer with what was counted."""

    expected: int | None


@dataclass(frozen=True)
class Violation:
    """The peer broke the protocol: answer with the error, then close this connection."""

    error: ProtocolError

    def last_words(self) -> bytes:
        return encode_response(None, error=f"protocol error: {self.error}")


Outcome = Send | SendFile | Deferred | Later | StartSink | Violation

Handler = Callable[[Call], Outcome]


def reply(result: Any) -> Send:
    """A successful JSON answer carrying ``result``."""
    return Send(encode_response(result))


def refusal(error: str) -> Send:
    """A JSON error answer; the connection stays open for the next request."""
    return Send(encode_response(None, error=error))
