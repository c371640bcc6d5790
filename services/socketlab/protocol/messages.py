"""Messages on top of the framing: JSON requests and responses, binary pass-through.

A JSON request is a ``text/json`` message whose content is
``{"action": ..., "value": ...}``; its response is ``{"result": ...}`` (plus
``"error"`` when the request failed, in which case ``result`` carries the same
text, the way the tutorial's server answers an invalid action). Binary content
types pass through as bytes. The pure actions (``hello``, ``echo``, ``time``,
``lookup``/``search``) are answered here; actions that need files or sockets
are the server's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from socketlab.protocol.errors import LocalProtocolError, RemoteProtocolError
from socketlab.protocol.framing import (
    TEXT_ENCODINGS,
    Content,
    Event,
    Header,
    MessageEnd,
    encode_message,
)

JSON_TYPE: Final = "text/json"
BINARY_TYPE: Final = "application/octet-stream"
# The tutorial's binary request/response types; any other non-JSON type is also binary.
TUTORIAL_CLIENT_BINARY: Final = "binary/custom-client-binary-type"
TUTORIAL_SERVER_BINARY: Final = "binary/custom-server-binary-type"

# The small lookup table (the tutorial's "search" action, kept under both names).
LOOKUP_TABLE: Final[Mapping[str, str]] = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
    "socketlab": "A containerized network lab for socket programs.",
}


@dataclass(frozen=True)
class Message:
    """A complete message: its header and all of its content."""

    header: Header
    content: bytes

    @property
    def is_json(self) -> bool:
        return self.header.content_type == JSON_TYPE

    def json(self) -> Any:
        """The decoded JSON content; RemoteProtocolError if it is not JSON."""
        return decode_json_content(self.header, self.content)


@dataclass
class MessageCollector:
    """Gathers decoder events into whole :class:`Message` values.

    Only for messages small enough to hold (the decoder's limits bound them);
    streamed content (file fetches) is consumed event by event instead.
    """

    _header: Header | None = None
    _chunks: list[bytes] = field(default_factory=list)

    def feed(self, event: Event) -> Message | None:
        """Take one event; returns the message when ``event`` completes it."""
        if isinstance(event, Header):
            self._header, self._chunks = event, []
        elif isinstance(event, Content):
            self._chunks.append(event.data)
        elif isinstance(event, MessageEnd):
            if self._header is None:
                raise RemoteProtocolError("message end without a header")
            message = Message(self._header, b"".join(self._chunks))
            self._header, self._chunks = None, []
            return message
        return None


def encode_json(obj: Any, *, extra: Mapping[str, Any] | None = None) -> bytes:
    """A ``text/json`` message carrying ``obj`` (UTF-8)."""
    try:
        content = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"content is not JSON-serialisable: {exc}") from exc
    return encode_message(JSON_TYPE, content, content_encoding="utf-8", extra=extra)


def encode_request(
    action: str, value: Any = None, *, extra: Mapping[str, Any] | None = None
) -> bytes:
    """A JSON request ``{"action": action, "value": value}``."""
    return encode_json({"action": action, "value": value}, extra=extra)


def encode_response(result: Any, *, error: str | None = None) -> bytes:
    """A JSON response; with ``error`` the result repeats it for tutorial clients."""
    if error is not None:
        return encode_json({"result": f"Error: {error}", "error": error}, extra={"status": "error"})
    return encode_json({"result": result}, extra={"status": "ok"})


def decode_json_content(header: Header, content: bytes) -> Any:
    """Decode a ``text/json`` message's content with its declared encoding."""
    if header.content_type != JSON_TYPE:
        raise RemoteProtocolError(f"expected {JSON_TYPE}, got {header.content_type}")
    if header.content_encoding not in TEXT_ENCODINGS:
        raise RemoteProtocolError(f"JSON content cannot use encoding {header.content_encoding!r}")
    try:
        return json.loads(content.decode(header.content_encoding))
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"content is not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class Request:
    """A decoded JSON request."""

    action: str
    value: Any


def parse_request(message: Message) -> Request:
    """The action and value of a JSON request message."""
    body = message.json()
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise RemoteProtocolError('a JSON request must be an object with a string "action"')
    return Request(body["action"], body.get("value"))


def response_result(message: Message) -> Any:
    """The ``result`` of a JSON response; RemoteProtocolError carrying the peer's error."""
    body = message.json()
    if not isinstance(body, dict) or "result" not in body:
        raise RemoteProtocolError('a JSON response must be an object with "result"')
    if body.get("error") is not None:
        raise ServerRefused(str(body["error"]))
    return body["result"]


class ServerRefused(RemoteProtocolError):
    """The server answered a well-formed request with an error."""


class UnknownAction(RemoteProtocolError):
    """A request named an action nobody handles."""


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """What the pure actions may know about the world (injected, so tests control it)."""

    peer: str
    hostname: str
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


def greeting(peer: str, hostname: str) -> str:
    return f"Hello, {peer}! This is the socketlab server on {hostname}."


def answer(request: Request, context: RequestContext) -> Any:
    """The result of a pure action; UnknownAction or RemoteProtocolError otherwise."""
    action, value = request.action, request.value
    if action == "hello":
        return greeting(context.peer, context.hostname)
    if action == "echo":
        return value
    if action == "time":
        now = context.now()
        return {"iso": now.isoformat(), "epoch": now.timestamp()}
    if action in {"lookup", "search"}:
        if not isinstance(value, str):
            raise RemoteProtocolError(f"{action} needs a string value")
        return LOOKUP_TABLE.get(value, f"No match for {value!r}.")
    raise UnknownAction(f"invalid action {action!r}")


def binary_reply(message: Message) -> bytes:
    """Answer a binary request the tutorial's way: a binary message about its content."""
    return encode_message(
        TUTORIAL_SERVER_BINARY,
        b"First 10 bytes of request: " + message.content[:10],
        extra={"status": "ok"},
    )
