"""The lab wire protocol, sans-IO: no sockets, selectors or asyncio in here.

``framing`` turns bytes into events and messages into bytes; ``messages`` adds
JSON requests/responses and the pure actions; ``errors`` holds the exception
tree. Blocking clients and the selectors server are thin loops around these.
"""

from socketlab.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from socketlab.protocol.framing import (
    NEED_DATA,
    ConnectionClosed,
    Content,
    Event,
    FrameDecoder,
    Header,
    Limits,
    MessageEnd,
    encode_header,
    encode_message,
)
from socketlab.protocol.messages import (
    BINARY_TYPE,
    JSON_TYPE,
    Message,
    MessageCollector,
    Request,
    ServerRefused,
    encode_json,
    encode_request,
    encode_response,
)

__all__ = [
    "BINARY_TYPE",
    "JSON_TYPE",
    "NEED_DATA",
    "ConnectionClosed",
    "Content",
    "Event",
    "FrameDecoder",
    "Header",
    "Limits",
    "LocalProtocolError",
    "Message",
    "MessageCollector",
    "MessageEnd",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "ServerRefused",
    "encode_header",
    "encode_json",
    "encode_message",
    "encode_request",
    "encode_response",
]
