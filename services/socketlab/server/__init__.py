"""The lab protocol server on 4571/tcp (``server`` container): many clients, one process.

A single selectors loop around the sans-IO protocol (``socketlab.protocol``),
split the way the chat hub is:

* :mod:`~socketlab.server.connection`: one connection's state without I/O
  (mode, deadlines, what to read or send next);
* :mod:`~socketlab.server.dispatch`: a complete request to an outcome, through
  the table of :mod:`~socketlab.server.actions` (``messages``, ``objects``,
  ``files``, ``sink``), whose handlers return :mod:`~socketlab.server.outcomes`;
* :mod:`~socketlab.server.loop`: the sockets, workers and timers that carry
  those outcomes out;
* :mod:`~socketlab.server.config`: :class:`ServerConfig`, read once from the
  environment.

Actions: ``hello``, ``echo``, ``time``, ``lookup``/``search`` (pure, see
``protocol.messages``); ``objects`` (JSON with a type registry); signed
``pickle`` (only with a key: ``SOCKETLAB_PICKLE_KEY_FILE``, mounted by ``lab up``); ``ls`` and ``fetch``
(files under the data root, streamed with ``os.sendfile``); ``sink`` (the
blocking/non-blocking demo: after the request the connection carries raw bytes
until the client half-closes; the answer counts bytes, recv batches and time);
``stall`` (answers late, for the client read-timeout demo). Requests on one
connection are answered in order, one at a time. A protocol violation gets an
error message and closes that connection only; the deadlines in
:mod:`~socketlab.server.connection` stop slow or silent peers from holding a slot.
"""

from __future__ import annotations

import threading

from socketlab.server.config import ServerConfig
from socketlab.server.hashes import HashCache
from socketlab.server.loop import LabServer

__all__ = ["HashCache", "LabServer", "ServerConfig", "serve"]


def serve(stop: threading.Event) -> None:
    """The ``lab-protocol`` component of the server container."""
    LabServer(ServerConfig.from_env().resolved()).serve(stop)
