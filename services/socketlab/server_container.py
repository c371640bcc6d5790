"""The ``server`` container's main process: lab protocol server and feed server.

Each component is a function ``serve(stop: threading.Event) -> None`` that
blocks until ``stop`` is set (and notices it within about a second). This
module runs them in threads, stops them all on SIGTERM/SIGINT, and exits
non-zero if any of them dies on its own, so Docker's restart policy and
healthcheck see the failure instead of a half-working container.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from socketlab import server
from socketlab.chat import hub as chat_hub
from socketlab.rss import feed_server

log = logging.getLogger("socketlab.server")

Component = Callable[[threading.Event], None]

COMPONENTS: dict[str, Component] = {
    "lab-protocol": server.serve,
    "feeds": feed_server.serve,
    "chat": chat_hub.serve,
}


def main(argv: list[str]) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    stop = threading.Event()
    failed: list[str] = []

    def guard(name: str, component: Component) -> None:
        try:
            component(stop)
        except Exception:
            log.exception("event=component_crashed component=%s", name)
            failed.append(name)
        finally:
            stop.set()  # one component down takes the container down

    def on_signal(signum: int, frame: object) -> None:
        del frame
        log.info("event=stopping signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threads = [
        threading.Thread(target=guard, args=(name, component), name=name, daemon=True)
        for name, component in COMPONENTS.items()
    ]
    for thread in threads:
        thread.start()
    while not stop.wait(timeout=1.0):
        pass
    for thread in threads:
        thread.join(timeout=5.0)
    return 1 if failed else 0
