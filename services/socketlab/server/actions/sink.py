"""The sink action: the blocking/non-blocking demo's receiver.

After the request the connection carries raw bytes until the client
half-closes; the answer counts bytes, recv batches and time
(:class:`~socketlab.server.connection.SinkStats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from socketlab.server.outcomes import Call, Handler, Outcome, StartSink


def sink(call: Call) -> Outcome:
    """``{"bytes": n}`` (optional) is what the client means to send, echoed in the report."""
    value = call.value
    expected = value.get("bytes") if isinstance(value, dict) else None
    return StartSink(expected if isinstance(expected, int) else None)


ACTIONS: Final[Mapping[str, Handler]] = {"sink": sink}
