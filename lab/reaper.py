"""Starting the reaper and holding its connection (the controller's side).

The reaper (``socketlab reaper``, :mod:`socketlab.reaper`) is a small container
from the lab's netkit image with the engine's socket mounted; the controller
connects to it and keeps the connection open for as long as it lives. If the
controller dies (``kill -9``, a crash, a closed laptop lid), the kernel closes
that connection, and the reaper

* ``session`` scope (the pytest plugin's own lab): removes every container,
  network and volume of the project, then itself;
* ``run`` scope (``lab run`` and its scenarios): resets the network namespace
  of every service container (socketlab's iptables chains, NFLOG capture rules,
  tc roots, segmentation offload back on) and removes the project's helpers;
  the services keep running, and the exited reaper stays as the record of the
  dead run for the next ``lab`` to name.

While connected, the controller journals what it applies to the network
(:meth:`ReaperHandle.note`): the reaper logs each note, so any later ``lab``
process reads what a run did from the reaper's log (:mod:`lab.netstate`). A
controller that ends normally says ``done`` first (:meth:`ReaperHandle.release`).

What the reaper can touch is the one project named on its command line (see
:mod:`socketlab.reaper.plan`); it needs the engine's unix socket
(``DOCKER_HOST`` must be ``unix://``), runs as an unprivileged user in the
socket's group, with no capabilities, a read-only root and no new privileges,
and listens on 127.0.0.1 only, for the controller holding its random token.
``SOCKETLAB_REAPER=0`` starts none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from lab.engine import docker_errors
from lab.errors import DockerNotFound, LabError
from lab.helpers import PROJECT_LABEL, ROLE_LABEL, DockerHelper, helper_removed_on_error
from lab.shaping.builders import CHAIN, IP6TABLES, IPTABLES, MANAGED_TABLES
from lab.waiting import wait_for, wait_for_log

if TYPE_CHECKING:
    from lab.api import Lab

log = logging.getLogger("lab.reaper")

REAPER_ROLE: Final = "reaper"
REAPER_PORT: Final = 7070
LABEL_SCOPE: Final = "io.socketlab.reaper.scope"
LABEL_RUN: Final = "io.socketlab.run"
LABEL_WHAT: Final = "io.socketlab.run.what"
LABEL_OWNER: Final = "io.socketlab.run.owner"
LABEL_STARTED: Final = "io.socketlab.run.started"
LISTENING: Final = "event=reaper_listening"
SOCKET_IN_CONTAINER: Final = "/var/run/docker.sock"
REAPER_USER: Final = "10001"
ANSWER_LIMIT: Final = 4096
# Where lab.scenario.capture puts a delivered capture's NFLOG rules (mangle table).
CAPTURE_CHAINS: Final = ("PREROUTING", "POSTROUTING")


class ReaperError(LabError):
    """The reaper could not be started or reached."""


def reset_script() -> str:
    """The ``sh`` script a reaper runs in each service namespace of a dead run: every
    SOCKETLAB chain flushed and removed, the capture helpers' NFLOG rules removed, every
    tc root deleted, segmentation offload back on. Every command may fail (already clean)."""
    lines = []
    for tool in (IPTABLES, IP6TABLES):
        command = shlex.join(tool)
        for table, hooks in MANAGED_TABLES:
            lines.append(f"{command} -t {table} -F {CHAIN} 2>/dev/null")
            lines += [f"{command} -t {table} -D {hook} -j {CHAIN} 2>/dev/null" for hook in hooks]
            lines.append(f"{command} -t {table} -X {CHAIN} 2>/dev/null")
        for chain in CAPTURE_CHAINS:
            lines.append(
                f"{command} -t mangle -S {chain} 2>/dev/null | grep -e '-j NFLOG' | "
                f"sed 's/^-A /-D /' | while read -r rule; do {command} -t mangle $rule; done"
            )
    lines.append(
        'for dev in $(ls /sys/class/net); do [ "$dev" = lo ] && continue; '
        'tc qdisc del dev "$dev" root 2>/dev/null; '
        'ethtool -K "$dev" tso on gso on 2>/dev/null; done'
    )
    return "\n".join(lines) + "\ntrue\n"


@dataclass(frozen=True, kw_only=True)
class ReaperSpec:
    """Everything a reaper container is started with."""

    project: str
    scope: str
    run_id: str
    image: str
    token: str
    socket_path: str
    socket_gid: int
    what: str
    owner: str
    started: str
    connect_timeout: float = 60.0

    @property
    def name(self) -> str:
        return f"{self.project}-reaper-{self.run_id}"


def reaper_run_options(spec: ReaperSpec) -> dict[str, Any]:
    """``containers.run`` options of a reaper (pure): labelled with the project (``lab
    down`` removes it), its socket, its port on 127.0.0.1 only, and nothing else."""
    if spec.scope not in {"session", "run"}:
        raise ReaperError(f"no reaper scope {spec.scope!r}")
    command = [
        "socketlab", "reaper", "--project", spec.project, "--scope", spec.scope,
        "--run-id", spec.run_id, "--port", str(REAPER_PORT),
        "--connect-timeout", f"{spec.connect_timeout:g}",
    ]  # fmt: skip
    if spec.scope == "run":
        command += ["--netkit-image", spec.image, "--reset-script", reset_script()]
    return {
        "command": command,
        "name": spec.name,
        "detach": True,
        "environment": {"SOCKETLAB_REAPER_TOKEN": spec.token},
        "labels": {
            PROJECT_LABEL: spec.project,
            ROLE_LABEL: REAPER_ROLE,
            LABEL_SCOPE: spec.scope,
            LABEL_RUN: spec.run_id,
            LABEL_WHAT: spec.what,
            LABEL_OWNER: spec.owner,
            LABEL_STARTED: spec.started,
        },
        "ports": {f"{REAPER_PORT}/tcp": ("127.0.0.1", None)},
        "volumes": {spec.socket_path: {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}},
        "user": REAPER_USER,
        "group_add": [str(spec.socket_gid)],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "mem_limit": "96m",
        "pids_limit": 32,
        # A session's reaper removes itself when done; a run's stays as the dead run's record.
        "auto_remove": spec.scope == "session",
    }


def socket_path(docker_host: str) -> str:
    """The engine's unix socket from ``DOCKER_HOST``; ReaperError for any other kind."""
    if not docker_host.startswith("unix://"):
        raise ReaperError(
            f"a reaper needs the engine's unix socket; DOCKER_HOST is {docker_host!r}"
        )
    return docker_host.removeprefix("unix://")


def host_port(attrs: Mapping[str, Any]) -> int | None:
    """The host port Docker published the reaper's port on, from ``inspect``."""
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{REAPER_PORT}/tcp") or []:
        if binding.get("HostIp") in {"127.0.0.1", "", "0.0.0.0"} and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


class ReaperHandle:
    """The open connection to a reaper; :meth:`note` journals, :meth:`release` ends it."""

    def __init__(
        self, *, name: str, conn: socket.socket, helper: DockerHelper | None, scope: str
    ) -> None:
        self.name = name
        self.scope = scope
        self._conn = conn
        self._reader = conn.makefile("rb")
        self._helper = helper
        self._lock = threading.Lock()
        self.released = False

    def _say(self, line: str) -> str:
        with self._lock:
            self._conn.sendall(line.encode() + b"\n")
            answer = self._reader.readline(ANSWER_LIMIT)
        return answer.decode(errors="replace").strip()

    def note(self, entry: Mapping[str, object]) -> None:
        """Journal what was done to the network (best effort: the run goes on without)."""
        if self.released:
            return
        try:
            self._say("note " + json.dumps(dict(entry), sort_keys=True))
        except OSError as exc:
            log.warning("event=reaper_note_failed reaper=%s error=%s", self.name, exc)

    def release(self) -> None:
        """Tell the reaper all is well, close, and (a run's) remove it."""
        if self.released:
            return
        self.released = True
        with contextlib.suppress(OSError):
            self._say("done")
        with contextlib.suppress(OSError):
            self._reader.close()
            self._conn.close()
        if self._helper is not None and self.scope == "run":
            with contextlib.suppress(LabError):
                self._helper.remove()


def _connect(port: int, token: str, *, timeout: float) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn.sendall(f"hello {token}\n".encode())
        answer = conn.makefile("rb").readline(ANSWER_LIMIT).strip()
    except OSError:
        conn.close()
        raise
    if answer != b"ok":
        conn.close()
        raise ReaperError(f"the reaper did not accept the controller ({answer!r})")
    return conn


def start_reaper(
    lab: Lab, scope: str, *, run_id: str, what: str, timeout: float = 30.0
) -> ReaperHandle:
    """Start a reaper for ``lab`` and connect to it (see the module docstring)."""
    path = socket_path(lab.config.docker_host)
    try:
        gid = os.stat(path).st_gid
    except OSError as exc:
        raise ReaperError(f"cannot find the engine's socket {path}: {exc.strerror}") from exc
    spec = ReaperSpec(
        project=lab.project,
        scope=scope,
        run_id=run_id,
        image=lab.netkit_image,
        token=secrets.token_hex(24),
        socket_path=path,
        socket_gid=gid,
        what=what,
        owner=f"{os.getpid()}@{socket.gethostname()}",
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        connect_timeout=max(60.0, timeout * 2),
    )
    options = reaper_run_options(spec)
    image = spec.image
    with docker_errors(f"cannot start the reaper of {lab.project}"):
        helper = DockerHelper(lab.docker.containers.run(image, **options))
    with helper_removed_on_error(helper):
        try:
            wait_for_log(helper, LISTENING, timeout=timeout)
        except LabError as exc:
            raise ReaperError(f"the reaper {spec.name} did not start: {exc}") from exc

        def published() -> int | None:
            helper.reload()
            return host_port(helper.attrs)

        port = wait_for(published, timeout=timeout, what=f"the port of {spec.name}", interval=0.1)
        try:
            conn = _connect(port, spec.token, timeout=timeout)
        except OSError as exc:
            raise ReaperError(
                f"cannot reach the reaper {spec.name} on 127.0.0.1:{port}: {exc}"
            ) from exc
    log.info("event=reaper_started name=%s scope=%s port=%d", spec.name, scope, port)
    # The connection lives as long as this process: no timeout on it but the notes'.
    conn.settimeout(timeout)
    return ReaperHandle(name=spec.name, conn=conn, helper=helper, scope=scope)


def remove_reaper(lab: Lab, name: str) -> None:
    """Remove a reaper container by name (gone already is fine)."""
    with contextlib.suppress(DockerNotFound), docker_errors(f"cannot remove {name}"):
        lab.docker.containers.get(name).remove(force=True)
