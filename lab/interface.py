"""What the runners need from a lab: the :class:`Lab` and :class:`HelperContainer` protocols.

``lab.shaping``, ``lab.scenario``, ``lab.bench`` and ``lab.feeds`` depend on
these protocols, not on Docker: :class:`lab.api.Lab` (a Compose project driven
through the Docker SDK) is one implementation, the unit tests' fake another.
Every method raises :class:`~lab.errors.LabError` subclasses only; no Docker
SDK type or error crosses this line.

A container is addressed as :mod:`lab.addressing` says: a Compose service
name (``client``: its first replica where one container is meant) or one
replica (``client.2``); :meth:`Lab.topology` tells which exist, on which
networks, with which addresses. A *helper* is a throwaway
container from the netkit image joined to a service's network namespace, the
one way the controller runs tools (``tc``, ``iperf3``, ``tcpdump``) there:
:meth:`Lab.start_helper` starts one, :meth:`Lab.helpers` finds them again by
role, ``lab down`` removes every one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Protocol

from lab.config import LabConfig
from lab.errors import LabError
from lab.topology import Family, Topology
from lab.waiting import Stream

# How a helper may mount its service's volumes (Docker's volumes_from): read-only or not.
VolumeAccess = Literal["ro", "rw"]
VOLUME_ACCESS: Final = ("ro", "rw")

TIMEOUT_EXIT_CODE = 124  # what coreutils `timeout` returns when it had to stop a command


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a command run in a container returned."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def timed_out(self) -> bool:
        return self.exit_code == TIMEOUT_EXIT_CODE

    def check(self, what: str = "command") -> ExecResult:
        """Return self when the exit code is 0, else raise LabError with stderr."""
        if not self.ok:
            tail = " | ".join(self.stderr.strip().splitlines()[-5:])
            raise LabError(f"{what} failed with exit code {self.exit_code}: {tail}")
        return self


@dataclass(frozen=True, kw_only=True)
class ServiceStatus:
    """One container as ``lab status`` shows it (``service``: ``client``, or ``client.2``
    among replicas; ``health``: Docker's, or ``running`` for a service without healthcheck)."""

    service: str
    state: str
    health: str
    ip: str
    container: str
    image: str
    addresses: tuple[str, ...] = ()  # "NETWORK IPV4 [IPV6]" for each network
    restarts: int = 0  # times Docker restarted it (restart: on-failure)
    node: str = ""  # the Swarm node running it ("" under Compose)

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in {"healthy", "running"}


class HelperContainer(Protocol):
    """A helper container; a context manager that removes it on exit."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def status(self) -> str:
        """Docker's state as of the last :meth:`reload`: running, exited, ..."""
        ...

    @property
    def started_at(self) -> str: ...

    def reload(self) -> None: ...

    def logs(self, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> str: ...

    def signal(self, signal: str) -> None:
        """Send ``signal`` (``"SIGINT"``) to the helper's command."""
        ...

    def wait(self, *, timeout: float) -> int:
        """The exit code; :class:`~lab.errors.CommandTimeout` after ``timeout`` seconds."""
        ...

    def read_file(self, path: str) -> bytes:
        """One regular file out of the helper's filesystem."""
        ...

    def stop(self, *, timeout: float) -> None: ...

    def remove(self) -> None:
        """Remove the helper (killing it); nothing happens if it is gone already."""
        ...

    def __enter__(self) -> HelperContainer: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class Reaper(Protocol):
    """A reaper holding this controller's connection (:mod:`lab.reaper`): if the
    controller dies, it cleans up after it."""

    @property
    def name(self) -> str: ...

    def note(self, entry: Mapping[str, object]) -> None:
        """Journal what was done to the lab's network (in the reaper's log)."""
        ...

    def release(self) -> None:
        """The controller ends normally: the reaper leaves without cleaning up."""
        ...


class Lab(Protocol):
    """One lab: its services, what runs in them, and helpers in their namespaces."""

    @property
    def project(self) -> str: ...

    @property
    def config(self) -> LabConfig: ...

    @property
    def repo_root(self) -> Path: ...

    @property
    def services(self) -> Sequence[str]:
        """Service names, dependencies first (as :class:`~lab.topology.ProjectModel` orders them)."""
        ...

    # ---------------------------------------------------------------- inspection

    def topology(self) -> Topology:
        """The lab now: services, their containers, networks, addresses, routes."""
        ...

    def status(self) -> list[ServiceStatus]: ...

    def wait_healthy(self, *, timeout: float) -> None:
        """Return once every service runs and is healthy; NotReady at the deadline."""
        ...

    def ip(self, service: str, *, network: str | None = None, family: Family = 4) -> str:
        """The container's address (default: IPv4 on its first network)."""
        ...

    def state(self, service: str) -> str:
        """Docker's state of the service's container now: running, paused, exited, ..."""
        ...

    def started_at(self, service: str) -> str:
        """When the service's container last started (ISO 8601, as Docker reports it)."""
        ...

    def logs(
        self,
        service: str,
        *,
        tail: int | None = None,
        since: float | None = None,
        stream: Stream = "both",
    ) -> str: ...

    def engine_version(self) -> str: ...

    # ---------------------------------------------------------------- commands and files

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        timeout: float,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult: ...

    def netkit_run(
        self, service: str, argv: Sequence[str], *, timeout: float, net_admin: bool = False
    ) -> ExecResult:
        """Run ``argv`` in a throwaway helper in ``service``'s namespace, to completion."""
        ...

    def read_file(self, service: str, path: str) -> bytes: ...

    def file_sha256(self, service: str, path: str, *, timeout: float = 300.0) -> str: ...

    def copy_to(self, source: Path, dest: str) -> str:
        """Copy a host file or folder to ``SERVICE[.N]:PATH`` (``lab cp``); where it went."""
        ...

    def copy_from(self, source: str, dest: Path) -> list[Path]:
        """Copy ``SERVICE[.N]:PATH`` to the host (``lab cp``); what was written."""
        ...

    # ---------------------------------------------------------------- helpers

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
        volumes: VolumeAccess | None = None,
        cpu_shares: int | None = None,
    ) -> HelperContainer:
        """Start ``argv`` in a helper joined to ``service``'s network namespace.

        With ``ready``, wait until the helper runs and logs that text (``""``:
        until it runs); if it does not, remove it and raise
        :class:`~lab.errors.HelperNotReady`. With ``volumes`` (``"ro"`` or
        ``"rw"``) the helper also mounts the service's volumes at their paths.
        ``cpu_shares``: its CPU weight (Docker's default is 1024; None leaves it).
        """
        ...

    def helpers(self, role: str) -> Sequence[HelperContainer]:
        """This lab's helpers of one role, running or not."""
        ...

    def start_reaper(self, scope: str, *, run_id: str, what: str) -> Reaper:
        """Start a reaper (``session``: removes the lab; ``run``: undoes its network
        faults) connected to this process; :class:`~lab.errors.LabError` if it cannot."""
        ...

    # ---------------------------------------------------------------- faults

    def stop(self, service: str) -> None: ...

    def start(self, service: str) -> None: ...

    def restart(self, service: str) -> None: ...

    def kill(self, service: str) -> None: ...

    def pause(self, service: str) -> None: ...

    def unpause(self, service: str) -> None: ...
