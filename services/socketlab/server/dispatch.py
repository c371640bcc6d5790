"""From a complete request to an outcome: the dispatch table and the refusal policy.

A signed-pickle message goes to ``objects``; any other non-JSON message gets
the tutorial's binary reply; a JSON request goes to the handler of its action
in :data:`ACTIONS`. What a handler raises becomes the answer here, in one place:

* a refusal the peer framed correctly (:class:`~socketlab.files.PathRefused`,
  :class:`~socketlab.objects.ObjectError`, an unknown action) is an error
  answer and the connection stays open;
* any other :class:`~socketlab.protocol.RemoteProtocolError` is a
  :class:`~socketlab.server.outcomes.Violation`: an error answer, then close;
* an ``OSError`` (the data root vanished, ...) is our problem, not the peer's:
  a ``server error`` answer, connection kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Final

from socketlab import objects
from socketlab.files import PathRefused
from socketlab.protocol import Message, RemoteProtocolError
from socketlab.protocol.messages import UnknownAction, binary_reply, parse_request
from socketlab.server.actions import files, messages, sink
from socketlab.server.actions import objects as object_actions
from socketlab.server.outcomes import (
    Call,
    Handler,
    Outcome,
    Send,
    Services,
    Violation,
    refusal,
)

log = logging.getLogger("socketlab.server")

ACTIONS: Final[Mapping[str, Handler]] = {
    **messages.ACTIONS,
    **object_actions.ACTIONS,
    **files.ACTIONS,
    **sink.ACTIONS,
}

REFUSED: Final = (PathRefused, objects.ObjectError, UnknownAction)


def answer_message(
    message: Message,
    services: Services,
    peer: str,
    *,
    actions: Mapping[str, Handler] = ACTIONS,
) -> Outcome:
    """What to do about ``message`` from ``peer``; never raises for the peer's mistakes."""
    try:
        return _route(message, services, peer, actions)
    except REFUSED as exc:
        log.info("event=refused peer=%s reason=%s", peer, one_line(exc))
        return refusal(str(exc))
    except RemoteProtocolError as exc:
        return Violation(exc)
    except OSError as exc:
        log.warning("event=request_failed peer=%s error=%s", peer, exc)
        return refusal(f"server error: {exc}")


def _route(
    message: Message, services: Services, peer: str, actions: Mapping[str, Handler]
) -> Outcome:
    if message.header.content_type == objects.PICKLE_TYPE:
        return object_actions.signed_pickle(message, services)
    if not message.is_json:
        return Send(binary_reply(message))
    request = parse_request(message)
    log.info("event=request peer=%s action=%s", peer, request.action)
    handler = actions.get(request.action)
    if handler is None:
        raise UnknownAction(f"invalid action {request.action!r}")
    return handler(Call(services=services, peer=peer, action=request.action, value=request.value))


def settle(work: Callable[[], Outcome], peer: str) -> Outcome:
    """Run deferred ``work`` (on a worker thread); its failure becomes the answer."""
    try:
        return work()
    except (PathRefused, objects.ObjectError) as exc:
        log.info("event=refused peer=%s reason=%s", peer, one_line(exc))
        return refusal(str(exc))
    except Exception as exc:  # never let one request's failure stop the loop
        log.exception("event=worker_failed peer=%s", peer)
        return refusal(f"server error: {exc}")


def one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", " ")
