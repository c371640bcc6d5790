"""Shared unit-test helpers: the one fake lab, and loopback helpers for server tests.

* ``fake_lab``: a :class:`FakeLab`, an in-memory :class:`lab.interface.Lab` the
  runners (scenario, capture, shaping, bench, feeds) run against with no Docker.
  It records what was done to it; tests script it (``commands``, ``files``,
  logs, ``queue_helper``). It answers the TCP congestion control scripts of
  :mod:`lab.congestion` itself (``congestion``: what each container uses).
* ``free_port``: a port nothing listens on (TCP or UDP).
* ``wait_until``: poll a probe with a deadline (never a bare sleep).
* ``serve``: run a server's ``loop(stop_event)`` in a thread, stopped and joined
  at the end of the test.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
from hypothesis import settings

from lab.addressing import parse_target, select_replicas
from lab.config import BenchConfig, CaptureConfig, LabConfig, ScenarioConfig, ShapingConfig
from lab.errors import LabError
from lab.interface import ExecResult, ServiceStatus
from lab.shaping.builders import STATUS_SCRIPT
from lab.shaping.congestion import STATE_SCRIPT
from lab.topology import (
    ContainerFacts,
    EndpointFacts,
    NetworkSpec,
    ProjectModel,
    ServiceSpec,
    Topology,
    build_topology,
)
from lab.waiting import Stream, wait_for_log

T = TypeVar("T")

# Hypothesis fails an example slower than 200 ms ("unreliable timings"): one stall of a
# loaded machine would do it. Speed is not what the properties test.
settings.register_profile("socketlab", deadline=None)
settings.load_profile("socketlab")

SERVICES = ("server", "client", "udp-listener", "rss-poller")
DEADLINE = 15.0  # generous bound on waits in tests: the machine is shared

# Short timeouts and polls: a unit test never waits for a real lab's patience.
FAST_CONFIG = LabConfig(
    project="fake",
    shaping=ShapingConfig(netns_timeout=5.0, helper_ready_timeout=2.0),
    scenario=ScenarioConfig(ready_timeout=1.0, recover_timeout=1.0, check_poll=0.01),
    capture=CaptureConfig(start_timeout=2.0, stop_timeout=2.0),
    bench=BenchConfig(ready_timeout=2.0, step_timeout=10.0),
)

ACTIONS = ("stop", "start", "restart", "kill", "pause", "unpause")
AFTER_ACTION = {
    "stop": "exited",
    "start": "running",
    "restart": "running",
    "kill": "exited",
    "pause": "paused",
    "unpause": "running",
}

Command = Callable[["FakeLab", str, list[str]], ExecResult]


class FakeReaper:
    """A reaper that records the notes a run journals, and whether it was released."""

    def __init__(self, name: str, scope: str) -> None:
        self.name = name
        self.scope = scope
        self.notes: list[dict[str, object]] = []
        self.released = False

    def note(self, entry: Mapping[str, object]) -> None:
        self.notes.append(dict(entry))

    def release(self) -> None:
        self.released = True


class FakeHelper:
    """A helper container with scripted state and output; records what was done to it."""

    def __init__(
        self,
        *,
        name: str = "helper",
        stdout: str = "",
        stderr: str = "",
        status: str = "running",
        exit_code: int = 0,
        files: Mapping[str, bytes] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.stdout, self.stderr = stdout, stderr
        self.status = status
        self.exit_code = exit_code
        self.files = dict(files or {})
        self.labels: dict[str, str] = dict(labels or {})
        self.started_at = "2026-01-01T10:00:00Z"
        self.calls: list[str] = []
        self.removed = False

    def reload(self) -> None:
        self.calls.append("reload")

    def logs(self, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> str:
        return (self.stdout if stdout else "") + (self.stderr if stderr else "")

    def signal(self, signal: str) -> None:
        self.calls.append(f"signal {signal}")
        self.status = "exited"

    def wait(self, *, timeout: float) -> int:
        self.calls.append("wait")
        return self.exit_code

    def read_file(self, path: str) -> bytes:
        self.calls.append(f"read_file {path}")
        if path not in self.files:
            raise LabError(f"{self.name}:{path} does not exist")
        return self.files[path]

    def stop(self, *, timeout: float) -> None:
        self.calls.append("stop")
        self.status = "exited"

    def remove(self) -> None:
        self.calls.append("remove")
        self.removed = True

    def __enter__(self) -> FakeHelper:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()


class FakeLab:
    """An in-memory lab (:class:`lab.interface.Lab`): services with states, scripted
    commands, files, logs and helpers. Everything done to it is recorded.

    Every service is on one network ``lab`` (10.0.0.0/24); ``replicas`` gives a
    service several containers, named ``service.N`` as the real lab names them.
    States, health, logs and recorded calls are by container name.
    """

    def __init__(
        self,
        repo_root: Path,
        *,
        services: Sequence[str] = SERVICES,
        config: LabConfig = FAST_CONFIG,
        replicas: Mapping[str, int] | None = None,
    ) -> None:
        self.project = config.project
        self.config = config
        self.repo_root = repo_root
        self.services = list(services)
        self.replicas = {name: (replicas or {}).get(name, 1) for name in self.services}
        self.names = [
            service if count == 1 else f"{service}.{n}"
            for service, count in self.replicas.items()
            for n in range(1, count + 1)
        ]
        self.states = dict.fromkeys(self.names, "running")
        self.health = dict.fromkeys(self.names, "healthy")
        self.commands: Command | None = None  # answers exec and netkit_run
        self.files: dict[str, bytes] = {}  # "service:/path" -> content
        self.stdout_logs: dict[str, str] = {}
        self.stderr_logs: dict[str, str] = {}
        self.log_reads = 0
        self.execs: list[tuple[str, tuple[str, ...]]] = []
        self.netkit_runs: list[tuple[str, tuple[str, ...], bool]] = []
        self.actions: list[tuple[str, str]] = []
        self.copies: list[tuple[str, str, str]] = []  # (to|from, source, dest) of copy_*
        self.acted = {action: threading.Event() for action in ACTIONS}
        self.started: list[dict[str, Any]] = []  # start_helper's arguments, in order
        self.started_helpers: list[FakeHelper] = []
        self._queued: list[FakeHelper] = []
        # The rules each namespace reports (STATUS_SCRIPT's output), by container name:
        # what `lab status` and a run's network check read, answered without `commands`.
        self.rules: dict[str, str] = {}
        self.rule_reads = 0
        self.reapers: list[FakeReaper] = []
        self.lock = threading.Lock()
        # per container: the per-route algorithm set in its namespace (None: its default)
        self.congestion: dict[str, str | None] = dict.fromkeys(self.names)
        self.congestion_default = "bbr"
        self.tcp_congestion: dict[str, str] = {}  # x-socketlab.tcp_congestion by service

    # ------------------------------------------------------------------ scripting

    def queue_helper(self, **kwargs: Any) -> FakeHelper:
        """The helper the next ``start_helper`` hands out (else a plain running one)."""
        helper = FakeHelper(**kwargs)
        self._queued.append(helper)
        return helper

    def add_helper(self, **kwargs: Any) -> FakeHelper:
        """A helper that exists already (left by an earlier ``lab`` process, say)."""
        helper = FakeHelper(**kwargs)
        self.started_helpers.append(helper)
        return helper

    # ------------------------------------------------------------------ names

    def name(self, text: str) -> str:
        """The container name ``text`` means (a bare service: its first replica)."""
        return self.select(text)[0]

    def select(self, text: str) -> list[str]:
        """Every container name ``text`` means (a bare service: all its replicas)."""
        target = parse_target(text, self.services)
        running = {s: list(range(1, n + 1)) for s, n in self.replicas.items()}
        numbers = select_replicas(target, running)
        count = self.replicas[target.service]
        return [target.service if count == 1 else f"{target.service}.{n}" for n in numbers]

    # ------------------------------------------------------------------ inspection

    def topology(self) -> Topology:
        model = ProjectModel(
            project=self.project,
            services=tuple(
                ServiceSpec(
                    name=s, networks=("lab",), replicas=n, tcp_congestion=self.tcp_congestion.get(s)
                )
                for s, n in self.replicas.items()
            ),
            networks=(NetworkSpec(key="lab", name=f"{self.project}_lab"),),
        )
        facts = []
        for name in self.names:
            service, _, number = name.partition(".")
            facts.append(
                ContainerFacts(
                    id=f"c-{name}",
                    name=f"{self.project}-{name}",
                    project=self.project,
                    service=service,
                    number=int(number or 1),
                    state=self.states[name],
                    health=self.health[name],
                    image="fake/runtime",
                    started_at="2026-01-01T09:00:00Z",
                    endpoints={
                        f"{self.project}_lab": EndpointFacts(ipv4=self.ip(name), prefix4=24)
                    },
                )
            )
        return build_topology(model, facts)

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(
                service=name,
                state=self.states[name],
                health=self.health[name],
                ip=self.ip(name),
                container=f"c-{name}",
                image="fake/runtime",
            )
            for name in self.names
        ]

    def wait_healthy(self, *, timeout: float) -> None:
        down = [s for s, state in self.states.items() if state != "running"]
        if down:
            raise LabError(f"not healthy: {', '.join(down)}")

    def ip(self, service: str, *, network: str | None = None, family: int = 4) -> str:
        if family == 6:
            raise LabError("network 'lab' has no IPv6")
        return f"10.0.0.{self.names.index(self.name(service)) + 2}"

    def state(self, service: str) -> str:
        return self.states[self.name(service)]

    def started_at(self, service: str) -> str:
        return "2026-01-01T09:00:00Z"

    def logs(
        self,
        service: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        stream: Stream = "both",
    ) -> str:
        with self.lock:
            self.log_reads += 1
        text = self.stdout_logs.get(service, "") if stream != "stderr" else ""
        return text + (self.stderr_logs.get(service, "") if stream != "stdout" else "")

    def engine_version(self) -> str:
        return "0.0-fake"

    # ------------------------------------------------------------------ commands and files

    def _answer(self, service: str, argv: Sequence[str]) -> ExecResult:
        service = self.name(service)
        if self.states[service] != "running":
            raise LabError(f"{service} is {self.states[service]}")
        if list(argv) == ["sh", "-c", STATUS_SCRIPT]:
            with self.lock:
                self.rule_reads += 1
            return ExecResult(exit_code=0, stdout=self.rules.get(service, ""), stderr="")
        if self.commands is None:
            raise AssertionError(f"unexpected command {list(argv)} in {service}")
        return self.commands(self, service, list(argv))

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        timeout: float,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        with self.lock:
            self.execs.append((self.name(service), tuple(argv)))
        return self._answer(service, argv)

    def netkit_run(
        self, service: str, argv: Sequence[str], *, timeout: float, net_admin: bool = False
    ) -> ExecResult:
        with self.lock:
            self.netkit_runs.append((self.name(service), tuple(argv), net_admin))
        answer = self._congestion_script(self.name(service), list(argv))
        return answer if answer is not None else self._answer(service, argv)

    def _congestion_script(self, name: str, argv: list[str]) -> ExecResult | None:
        """The namespace's answer to lab.congestion's scripts (None: not one of them)."""
        if argv[:2] != ["sh", "-c"] or len(argv) < 3:
            return None
        script = argv[2]
        if script == STATE_SCRIPT:
            chosen = self.congestion.get(name)
            suffix = f" congctl {chosen}" if chosen else ""
            text = (
                f"default={self.congestion_default}\navailable=reno bbr cubic\n"
                f"route=default via 10.0.0.1 dev eth0{suffix}\n"
                f"route=10.0.0.0/24 dev eth0 proto kernel scope link{suffix}\n"
            )
            return ExecResult(exit_code=0, stdout=text, stderr="")
        if "ip route change" in script and "ip -o route show table main" in script:
            match = re.search(r"congctl '?([a-z0-9_]+)", script.split("while read", 1)[1])
            self.congestion[name] = match.group(1) if match else None
            return ExecResult(exit_code=0, stdout="", stderr="")
        return None

    def read_file(self, service: str, path: str) -> bytes:
        key = f"{service}:{path}"
        if key not in self.files:
            raise LabError(f"{key} does not exist")
        return self.files[key]

    def file_sha256(self, service: str, path: str, *, timeout: float = 300.0) -> str:
        key = f"{service}:{path}"
        if key not in self.files:
            raise LabError(f"sha256sum {key} failed with exit code 1: No such file")
        return hashlib.sha256(self.files[key]).hexdigest()

    def copy_to(self, source: Path, dest: str) -> str:
        """A host file into ``files`` under ``dest`` (``service:/path``)."""
        self.copies.append(("to", str(source), dest))
        self.files[dest] = source.read_bytes()
        return dest

    def copy_from(self, source: str, dest: Path) -> list[Path]:
        """``files[source]`` written to ``dest`` on the host."""
        self.copies.append(("from", source, str(dest)))
        if source not in self.files:
            raise LabError(f"{source} does not exist")
        dest.write_bytes(self.files[source])
        return [dest]

    # ------------------------------------------------------------------ helpers

    def start_helper(
        self,
        service: str,
        argv: Sequence[str],
        *,
        role: str,
        caps: Sequence[str] = (),
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        ready: str | None = None,
        ready_stream: Stream = "both",
        ready_timeout: float = 30.0,
        volumes: str | None = None,
        cpu_shares: int | None = None,
    ) -> FakeHelper:
        service = self.name(service)
        self.started.append(
            {
                "service": service,
                "argv": list(argv),
                "role": role,
                "caps": tuple(caps),
                "name": name,
                "labels": dict(labels or {}),
                "volumes": volumes,
                "cpu_shares": cpu_shares,
            }
        )
        helper = self._queued.pop(0) if self._queued else FakeHelper()
        helper.name = name or helper.name
        helper.labels |= {**(labels or {}), "io.socketlab.role": role}
        self.started_helpers.append(helper)
        if ready is not None:
            # The real wait on the fake helper: readiness behaves as with Docker.
            try:
                wait_for_log(
                    helper, ready, timeout=ready_timeout, stream=ready_stream, interval=0.01
                )
            except LabError:
                helper.remove()
                raise
        return helper

    # ------------------------------------------------------------------ life cycle
    # (not the Lab protocol: what a pytest session brings up and takes down)

    def build(self) -> Any:
        self.actions.append(("build", ""))

    def up(self, *, timeout: float = 180.0) -> list[ServiceStatus]:
        self.actions.append(("up", ""))
        return self.status()

    def down(self) -> dict[str, int]:
        self.actions.append(("down", ""))
        return {"containers": len(self.names), "networks": 1, "volumes": 0}

    def start_reaper(self, scope: str, *, run_id: str, what: str) -> FakeReaper:
        reaper = FakeReaper(f"{self.project}-reaper-{run_id}", scope)
        reaper.notes.append({"started": what})
        self.reapers.append(reaper)
        return reaper

    def helpers(self, role: str) -> list[FakeHelper]:
        return [
            helper
            for helper in self.started_helpers
            if helper.labels.get("io.socketlab.role") == role and not helper.removed
        ]

    # ------------------------------------------------------------------ faults

    def _act(self, action: str, service: str) -> None:
        self.actions.append((action, service))
        for name in self.select(service):
            self.states[name] = AFTER_ACTION[action]
        self.acted[action].set()

    def stop(self, service: str) -> None:
        self._act("stop", service)

    def start(self, service: str) -> None:
        self._act("start", service)

    def restart(self, service: str) -> None:
        self._act("restart", service)

    def kill(self, service: str) -> None:
        self._act("kill", service)

    def pause(self, service: str) -> None:
        self._act("pause", service)

    def unpause(self, service: str) -> None:
        self._act("unpause", service)


@pytest.fixture
def fake_lab(tmp_path: Path) -> FakeLab:
    """A fresh :class:`FakeLab` whose checkout is ``tmp_path``."""
    return FakeLab(tmp_path)


# ---------------------------------------------------------------------- loopback helpers


# free_port hands out ports from a block of its own per xdist worker, below the kernel's
# ephemeral range (32768 and up): a port found with bind(0) and released at once could be
# handed by the kernel to another worker's bind(0), or to any connect(), before the test's
# server binds it, and that server then fails with EADDRINUSE.
_PORT_BASE = 20_000
_PORT_BLOCK = 1_000
_MAX_BLOCKS = 12  # 20_000 + 12 * 1_000 stays below 32_768
_port_offsets = itertools.count()


def _worker_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3" under xdist
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return _PORT_BASE + (index % _MAX_BLOCKS) * _PORT_BLOCK


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    addresses = [(socket.AF_INET, ("127.0.0.1", port))]
    if socket.has_ipv6:
        addresses.append((socket.AF_INET6, ("::", port)))  # servers that bind both families
    for family, address in addresses:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:  # no IPv6 here: the v4 check decides
                    return False
    return True


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    block = _worker_block()
    for _ in range(_PORT_BLOCK):
        port = block + next(_port_offsets) % _PORT_BLOCK
        if _bindable(port, kind):
            return port
    raise RuntimeError(f"no free port in {block}..{block + _PORT_BLOCK - 1}")


@pytest.fixture
def free_port() -> Callable[..., int]:
    """``free_port(kind=socket.SOCK_STREAM)``: a loopback port nobody listens on now."""
    return _free_port


def _wait_until(
    probe: Callable[[], T | None],
    what: str = "the condition",
    *,
    timeout: float = DEADLINE,
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = 0.02,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = None
        with contextlib.suppress(*ignoring):
            value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # polling interval of a deadline-bounded wait


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(probe, what, *, timeout, ignoring=(Errors,))``: the probe's first
    truthy value; fails the test naming ``what`` at the deadline."""
    return _wait_until


class ServerThread:
    """A server's ``loop(stop)`` in a daemon thread; :meth:`close` stops and joins it and
    fails the test when the loop does not notice ``stop`` within ``stop_within`` seconds."""

    def __init__(
        self, loop: Callable[[threading.Event], object], *, name: str, stop_within: float
    ) -> None:
        self.stop = threading.Event()
        self.stop_within = stop_within
        self.thread = threading.Thread(target=loop, args=(self.stop,), name=name, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=self.stop_within)
        assert not self.thread.is_alive(), (
            f"{self.thread.name} did not notice stop within {self.stop_within:g} s"
        )


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """``serve(loop, name=..., stop_within=...)``: start ``loop(stop_event)`` in a thread;
    every one still running is stopped and joined when the test ends."""
    running: list[ServerThread] = []

    def start(
        loop: Callable[[threading.Event], object],
        *,
        name: str = "server",
        stop_within: float = DEADLINE,
    ) -> ServerThread:
        server = ServerThread(loop, name=name, stop_within=stop_within)
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        if server.thread.is_alive():
            server.close()
