"""Errors of the lab wire protocol.

::

    SocketlabError
    └── ProtocolError               anything wrong at the protocol layer
        ├── RemoteProtocolError     the peer sent something we cannot accept
        │                           (bad framing, a limit exceeded, bad JSON)
        └── LocalProtocolError      we were asked to send something invalid

A server answers a ``RemoteProtocolError`` with an error message and closes that
one connection; a ``LocalProtocolError`` is a bug or bad input on our side.
"""

from __future__ import annotations

from socketlab.errors import SocketlabError


class ProtocolError(SocketlabError):
    """Root of the protocol errors."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection cannot be used any more."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow."""
