"""The chat vocabulary on the lab framing: one ``text/json`` message per event.

Every chat event is a lab-protocol message (2-byte length, JSON header,
content) whose content is a UTF-8 JSON object with a ``type``:

client -> hub
    ``join {name}``, ``say {text}``, ``who``, ``ping``, ``pong``, ``bye``
hub -> client
    ``welcome {name, participants}``, ``joined {name}``,
    ``left {name, reason}``, ``message {from, text, seq, ts}``,
    ``participants {names}``, ``error {code, detail}``, ``ping``, ``pong``, ``bye``

``seq`` counts one sender's messages from 1, so a receiver can check
per-sender order; ``ts`` is the hub's wall clock when it relayed the message.
"""

from __future__ import annotations

from typing import Any, Final

from socketlab.protocol import (
    NEED_DATA,
    ConnectionClosed,
    FrameDecoder,
    Limits,
    MessageCollector,
    RemoteProtocolError,
    encode_json,
)
from socketlab.protocol.messages import JSON_TYPE, decode_json_content

# Frames larger than this are refused by the decoder (the stream is then
# unusable); texts between MAX_TEXT and MAX_FRAME get a recoverable error.
DEFAULT_MAX_FRAME: Final = 64 * 1024
DEFAULT_MAX_TEXT: Final = 4096
DEFAULT_MAX_NAME: Final = 32


def encode_event(kind: str, **fields: Any) -> bytes:
    """One chat event as a complete framed message."""
    return encode_json({"type": kind, **fields})


def join(name: str) -> bytes:
    return encode_event("join", name=name)


def say(text: str) -> bytes:
    return encode_event("say", text=text)


def bye() -> bytes:
    return encode_event("bye")


def ping() -> bytes:
    return encode_event("ping")


def pong() -> bytes:
    return encode_event("pong")


def who() -> bytes:
    return encode_event("who")


def limits(max_frame: int = DEFAULT_MAX_FRAME) -> Limits:
    """Decoder limits for chat streams: every frame is small."""
    return Limits(max_header=4096, default_max_content=max_frame, max_chunk=max_frame)


class ChatStream:
    """Turns received bytes into chat events (dicts); strict, for clients.

    Anything that is not a JSON object with a string ``type`` raises
    :class:`RemoteProtocolError`: a hub that sends garbage is not trusted further.
    """

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._decoder = FrameDecoder(limits=limits(max_frame))
        self._collector = MessageCollector()
        self.closed = False

    def receive_data(self, data: bytes) -> list[dict[str, Any]]:
        """Feed bytes (``b""`` = EOF); return the events they completed."""
        self._decoder.receive_data(data)
        events: list[dict[str, Any]] = []
        while True:
            event = self._decoder.next_event()
            if event is NEED_DATA:
                return events
            if isinstance(event, ConnectionClosed):
                self.closed = True
                return events
            message = self._collector.feed(event)
            if message is None:
                continue
            if message.header.content_type != JSON_TYPE:
                raise RemoteProtocolError(f"unexpected content-type {message.header.content_type}")
            body = decode_json_content(message.header, message.content)
            if not isinstance(body, dict) or not isinstance(body.get("type"), str):
                raise RemoteProtocolError('a chat event must be an object with a string "type"')
            events.append(body)
