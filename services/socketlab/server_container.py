"""The ``server`` container's main process: lab protocol server, feed server and chat hub.

Each is a component ``serve(stop)`` run by :func:`socketlab.supervisor.run_components`:
they all stop on SIGTERM/SIGINT, and the process exits non-zero if any of them
fails, so Docker's restart policy and healthcheck see the failure instead of a
half-working container. Settings are read here, once, before anything starts.
"""

from __future__ import annotations

import threading

from socketlab import server
from socketlab.chat import hub as chat_hub
from socketlab.chat.hub import HubServerConfig
from socketlab.rss import feed_server
from socketlab.rss.feed_server import FeedServerConfig
from socketlab.supervisor import Component, HeartbeatConfig, run_components


def components(feeds: FeedServerConfig, chat: HubServerConfig) -> dict[str, Component]:
    """The server container's components, configured."""

    def serve_feeds(stop: threading.Event) -> None:
        feed_server.serve(stop, feeds)

    def serve_chat(stop: threading.Event) -> None:
        chat_hub.serve(stop, chat)

    return {"lab-protocol": server.serve, "feeds": serve_feeds, "chat": serve_chat}


def main(argv: list[str]) -> int:
    del argv
    parts = components(FeedServerConfig.from_env(), HubServerConfig.from_env())
    run_components(parts, heartbeat=HeartbeatConfig.from_env().heartbeat()).raise_for_failures()
    return 0
