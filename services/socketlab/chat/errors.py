"""Errors of the chat subsystem.

::

    SocketlabError
    └── ChatError                   anything the chat client gives up on
        ├── ChatRefused             the hub answered with an error (name taken, hub full)
        ├── HubGone                 the hub closed the connection or went silent
        └── ScriptError             a chat script cannot be parsed (file, line, why);
                                    the CLI reports it as a ConfigError (exit 2)

The hub itself raises nothing at its peers: a bad client gets an ``error``
event and, when the stream can no longer be trusted, its connection closed.
"""

from __future__ import annotations

from socketlab.errors import SocketlabError
from socketlab.terminal import neutralize


class ChatError(SocketlabError):
    """Root of the chat errors."""


class ChatRefused(ChatError):
    """The hub refused what we asked (e.g. the name is taken)."""

    def __init__(self, code: str, detail: str) -> None:
        # Printed on the user's terminal: the hub's words are shown, never obeyed.
        super().__init__(f"refused: {neutralize(detail)} ({neutralize(code)})")
        self.code = code
        self.detail = detail


class HubGone(ChatError):
    """The hub closed the connection, reset it, or stopped answering heartbeats."""


class ScriptError(ChatError):
    """A chat script has a line we cannot run."""
