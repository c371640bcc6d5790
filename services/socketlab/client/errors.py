"""Errors of the TCP demo client (the peer errors are in :mod:`socketlab.errors`).

::

    SocketlabError
    └── CommandFailed       a demo ran but did not show what it should
"""

from __future__ import annotations

from socketlab.errors import SocketlabError


class CommandFailed(SocketlabError):
    """A demo ran but did not show what it should (bytes lost, objects differ, ...)."""
