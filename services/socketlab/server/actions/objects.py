"""The object actions: JSON through the type registry, and the signed-pickle content type."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from socketlab import objects
from socketlab.protocol import Message
from socketlab.server.outcomes import Call, Handler, Outcome, Services, reply

log = logging.getLogger("socketlab.server")


def objects_action(call: Call) -> Outcome:
    """Decode the peer's objects, echo them and say whether they equal the sample."""
    registry = call.services.registry
    # Decoding through the registry validates every field and refuses unknown types.
    received = registry.loads(json.dumps(call.value))
    sample = objects.sample_objects()
    return reply(
        {
            "types": type_names(received),
            "echo": json.loads(registry.dumps(received)),
            "sample": json.loads(registry.dumps(sample)),
            "equal_to_sample": received == sample,
        }
    )


def signed_pickle(message: Message, services: Services) -> Outcome:
    """Load a pickle only if it is signed with the shared key (``objects`` checks first)."""
    signature = message.header.get("signature")
    loaded = objects.load_signed_pickle(
        message.content,
        signature if isinstance(signature, str) else None,
        services.config.pickle_key,
        max_size=services.config.max_pickle,
    )
    log.info("event=pickle_loaded bytes=%d type=%s", len(message.content), type(loaded).__name__)
    return reply(
        {"types": type_names(loaded), "equal_to_sample": loaded == objects.sample_objects()}
    )


def type_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return sorted({type(v).__name__ for v in value.values()})
    return [type(value).__name__]


ACTIONS: Final[Mapping[str, Handler]] = {"objects": objects_action}
