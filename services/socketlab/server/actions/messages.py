"""The message actions: the pure ones of ``protocol.messages`` and ``stall``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from socketlab.protocol import RemoteProtocolError, Request
from socketlab.protocol.messages import RequestContext, answer
from socketlab.server.outcomes import Call, Handler, Later, Outcome, reply

# Answered by protocol.messages.answer, which needs nothing but the request.
PURE_ACTIONS: Final = ("hello", "echo", "time", "lookup", "search")


def pure(call: Call) -> Outcome:
    context = RequestContext(peer=call.peer_host, hostname=call.services.hostname)
    return reply(answer(Request(call.action, call.value), context))


def stall(call: Call) -> Outcome:
    """Answer after ``value`` seconds (at most ``max_stall``): the client read-timeout demo."""
    value = call.value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RemoteProtocolError("stall needs a number of seconds")
    delay = min(float(value), call.services.config.max_stall)
    return Later(delay, reply(f"stalled for {delay:g} s"))


ACTIONS: Final[Mapping[str, Handler]] = {**dict.fromkeys(PURE_ACTIONS, pure), "stall": stall}
