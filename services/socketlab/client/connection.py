"""A blocking connection speaking the lab protocol, with a timeout on every call.

Every socket call runs inside :func:`~socketlab.errors.peer_errors`, so what
leaves this module is a :class:`~socketlab.errors.ConnectFailed`,
:class:`~socketlab.errors.ReadTimeout`, :class:`~socketlab.errors.SendTimeout`
or :class:`~socketlab.errors.PeerClosed`, never a bare ``OSError``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Final

from socketlab.errors import PeerClosed, peer_errors
from socketlab.protocol import (
    BINARY_TYPE,
    NEED_DATA,
    ConnectionClosed,
    Event,
    FrameDecoder,
    Limits,
    Message,
    MessageCollector,
    encode_request,
)
from socketlab.protocol.messages import response_result

RECV_SIZE: Final = 1024 * 1024
# Responses are bounded; file content may be as large as files get.
CLIENT_LIMITS: Final = Limits(
    max_header=0xFFFF, default_max_content=64 * 1024 * 1024, max_content={BINARY_TYPE: 1 << 50}
)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    host: str
    port: int
    timeout: float  # connect
    read_timeout: float  # also the send timeout: how long the peer may take nothing

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class LabConnection:
    """A blocking connection speaking the lab protocol; every call has a timeout."""

    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.decoder = FrameDecoder(limits=CLIENT_LIMITS)
        sock.settimeout(endpoint.read_timeout)

    @classmethod
    def open(cls, endpoint: Endpoint) -> LabConnection:
        """Connect within ``endpoint.timeout``; ConnectFailed with the reason otherwise."""
        with peer_errors(str(endpoint), "connect", timeout=endpoint.timeout):
            sock = socket.create_connection(
                (endpoint.host, endpoint.port), timeout=endpoint.timeout
            )
        return cls(sock, endpoint)

    def __enter__(self) -> LabConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        with peer_errors(str(self.endpoint), "send", timeout=self.endpoint.read_timeout):
            self.sock.sendall(data)

    def recv_into(self, view: memoryview) -> int:
        """Read straight into ``view`` (0 at EOF), bypassing the decoder: for content
        the caller then reports with ``decoder.consume_content``."""
        with peer_errors(str(self.endpoint), "read", timeout=self.endpoint.read_timeout):
            return self.sock.recv_into(view)

    def next_event(self) -> Event:
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            with peer_errors(str(self.endpoint), "read", timeout=self.endpoint.read_timeout):
                data = self.sock.recv(RECV_SIZE)
            self.decoder.receive_data(data)

    def read_message(self) -> Message:
        collector = MessageCollector()
        while True:
            event = self.next_event()
            if isinstance(event, ConnectionClosed):
                raise PeerClosed(f"{self.endpoint} closed the connection without an answer")
            message = collector.feed(event)
            if message is not None:
                return message

    def request(self, action: str, value: Any = None) -> Any:
        """Send a JSON request and return its result (ServerRefused on an error answer)."""
        self.send(encode_request(action, value))
        return response_result(self.read_message())
