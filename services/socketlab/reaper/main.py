"""``socketlab reaper --project P --scope session|run``: the reaper's process.

Listens on ``--port`` (published by the controller on 127.0.0.1 only), runs
:class:`~socketlab.reaper.core.ReaperCore` over a selectors loop, logs every
journal note and everything it does as ``event=...`` lines (a later ``lab``
reads them), and reaps as :mod:`socketlab.reaper.plan` says. The token comes
from ``SOCKETLAB_REAPER_TOKEN``; the engine is the socket mounted at
``--docker-socket``. SIGTERM ends it without reaping.
"""

from __future__ import annotations

import argparse
import logging
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Final

from socketlab.commandline import command_parser
from socketlab.config import EnvConfig, env_config, env_field
from socketlab.reaper.core import Action, Close, Journal, Reap, ReaperCore, Release, Reply
from socketlab.reaper.engine import Engine, EngineError
from socketlab.reaper.plan import (
    SCOPES,
    Container,
    label_filters,
    reset_options,
    run_reap,
    session_reap,
)

log = logging.getLogger("socketlab.reaper")

TOKEN_ENV: Final = "SOCKETLAB_REAPER_TOKEN"  # noqa: S105 - the variable's name


@env_config
@dataclass(frozen=True, kw_only=True)
class ReaperConfig(EnvConfig):
    """The reaper's one secret: the controller's token, given in its environment."""

    token: str = env_field(TOKEN_ENV, "", "the token a controller says hello with (set by lab)")


TICK: Final = 0.25  # seconds between looks at the clock when nothing arrives
RECV: Final = 4096


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("reaper", __doc__, raw=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--scope", choices=SCOPES, required=True)
    parser.add_argument("--run-id", default="")
    parser.add_argument("--port", type=int, default=7070)
    parser.add_argument("--docker-socket", default="/var/run/docker.sock")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--linger", type=float, default=1.0)
    parser.add_argument("--engine-timeout", type=float, default=30.0)
    parser.add_argument("--netkit-image", default="", help="image of the reset helpers (run)")
    parser.add_argument("--reset-script", default="", help="sh script resetting a namespace")
    return parser


def _self_id() -> str:
    # Docker names a container's host after the start of its id.
    return socket.gethostname()


class Reaper:
    """The I/O around the core: the listening socket, connections, the engine."""

    def __init__(self, args: argparse.Namespace, token: str) -> None:
        self.args = args
        self.core = ReaperCore(
            token=token,
            started=time.monotonic(),
            connect_timeout=args.connect_timeout,
            linger=args.linger,
        )
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, socket.socket] = {}
        self.stopping = False
        self.outcome = ""

    def serve(self) -> int:
        with socket.create_server(("0.0.0.0", self.args.port), backlog=16) as listener:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ)
            log.info("event=reaper_listening port=%d scope=%s project=%s run=%s",
                     self.args.port, self.args.scope, self.args.project, self.args.run_id)  # fmt: skip
            while not self.stopping and not self.outcome:
                for key, _ in self.selector.select(TICK):
                    if key.fileobj is listener:
                        self._accept(listener)
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._do(self.core.tick(time.monotonic()))
        for conn in list(self.conns.values()):
            conn.close()
        return 0

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.conns[conn.fileno()] = conn
        self.selector.register(conn, selectors.EVENT_READ)
        self._do(self.core.connected(conn.fileno(), time.monotonic()))

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(RECV)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        number = conn.fileno()
        actions = self.core.received(number, data, time.monotonic())
        if not data:
            self._drop(number)
        self._do(actions)

    def _drop(self, number: int) -> None:
        conn = self.conns.pop(number, None)
        if conn is not None:
            self.selector.unregister(conn)
            conn.close()

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                conn = self.conns.get(action.conn)
                if conn is not None:
                    try:
                        conn.send((action.text + "\n").encode())
                    except OSError:
                        self._drop(action.conn)
            elif isinstance(action, Close):
                if action.conn in self.conns:
                    self.core.closed(action.conn, time.monotonic())
                    self._drop(action.conn)
                    log.info("event=connection_closed why=%r", action.why)
            elif isinstance(action, Journal):
                log.info("event=journal run=%s note=%s", self.args.run_id, action.note)
            elif isinstance(action, Release):
                log.info("event=released run=%s", self.args.run_id)
                self.outcome = "released"
            elif isinstance(action, Reap):
                log.info("event=reaping run=%s reason=%r", self.args.run_id, action.reason)
                self.reap()
                self.outcome = "reaped"

    def reap(self) -> None:
        engine = Engine(self.args.docker_socket, timeout=self.args.engine_timeout)
        project = self.args.project
        try:
            listed = [
                Container.from_listing(item)
                for filters in label_filters(project)
                for item in engine.containers(filters)
            ]
        except EngineError as exc:
            log.warning("event=reap_failed error=%s", exc)
            return
        if self.args.scope == "run":
            self._reap_run(engine, listed)
        else:
            self._reap_session(engine, listed)

    def _reap_run(self, engine: Engine, listed: list[Container]) -> None:
        work = run_reap(self.args.project, listed, self_id=_self_id())
        reset = 0
        for container in work.reset:
            if not (self.args.netkit_image and self.args.reset_script):
                break
            options = reset_options(project=self.args.project, image=self.args.netkit_image,
                                    target_id=container.id, script=self.args.reset_script,
                                    run_id=self.args.run_id)  # fmt: skip
            try:
                code = engine.run_to_end(options, timeout=self.args.engine_timeout)
            except EngineError as exc:
                log.warning("event=reset_failed container=%s error=%s", container.name, exc)
                continue
            reset += code == 0
            log.info("event=reset container=%s exit=%d", container.name, code)
        removed = self._remove(engine, work.remove)
        log.info("event=reaped scope=run run=%s reset=%d removed=%d",
                 self.args.run_id, reset, removed)  # fmt: skip

    def _reap_session(self, engine: Engine, listed: list[Container]) -> None:
        removed = self._remove(engine, session_reap(self.args.project, listed, self_id=_self_id()))
        gone = {"networks": 0, "volumes": 0}
        for filters in label_filters(self.args.project):
            for kind, lister, remover in (
                ("networks", engine.networks, engine.remove_network),
                ("volumes", engine.volumes, engine.remove_volume),
            ):
                gone[kind] += self._remove_each(kind, lister(filters), remover)
        log.info("event=reaped scope=session removed=%d networks=%d volumes=%d",
                 removed, gone["networks"], gone["volumes"])  # fmt: skip

    def _remove(self, engine: Engine, containers: tuple[Container, ...]) -> int:
        removed = 0
        for container in containers:
            try:
                engine.remove_container(container.id)
            except EngineError as exc:
                log.warning("event=remove_failed container=%s error=%s", container.name, exc)
                continue
            removed += 1
            log.info("event=removed kind=container name=%s", container.name)
        return removed

    def _remove_each(
        self, kind: str, items: list[dict[str, object]], remover: Callable[[str], None]
    ) -> int:
        removed = 0
        for item in items:
            key = str(item.get("Id") or item.get("Name") or "")
            if not key:
                continue
            try:
                remover(key if kind == "networks" else str(item.get("Name", key)))
            except EngineError as exc:
                log.warning("event=remove_failed %s=%s error=%s", kind[:-1], key, exc)
                continue
            removed += 1
            log.info("event=removed kind=%s name=%s", kind[:-1], item.get("Name", key))
        return removed


def main(argv: list[str]) -> int:
    config = ReaperConfig.from_env()
    args = build_parser().parse_args(argv)
    token = config.token
    if len(token) < 16:
        print(f"socketlab reaper: {TOKEN_ENV} must hold the controller's token", file=sys.stderr)
        return 2
    reaper = Reaper(args, token)

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        reaper.stopping = True

    signal.signal(signal.SIGTERM, stop)
    return reaper.serve()
