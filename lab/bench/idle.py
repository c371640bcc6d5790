"""An idle lab's CPU: how much of one core its services use while nothing happens.

Read from each service container's cgroup CPU counter (the same one ``docker
stats`` reads) twice, ``seconds`` apart, while nothing runs in the lab:

* cgroup v1: ``/sys/fs/cgroup/cpuacct/docker/<id>/cpuacct.usage`` (ns);
* cgroup v2: ``/sys/fs/cgroup/system.slice/docker-<id>.scope/cpu.stat``
  (``usage_usec``), or ``/sys/fs/cgroup/docker/<id>/cpu.stat``;
* neither readable (a remote engine, Docker Desktop): the Docker API's
  ``cpu_stats.cpu_usage.total_usage`` of a one-shot stats call.

The arithmetic (:func:`idle_cpu`) is pure. :func:`measure_idle_cpu` is the one
reader ``lab bench`` calls to record the idle cost beside its figures; issue 18
asks for at most 2 % of one core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lab.bench.errors import BenchError

if TYPE_CHECKING:
    from lab.api import Lab

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
DEFAULT_SECONDS: Final = 30.0
TARGET_PERCENT: Final = 2.0  # of one core, for the whole idle lab (issue 18)

UsageReader = Callable[[str], int | None]


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """Cumulative CPU time (ns) of each service's container at one moment (monotonic s)."""

    at: float
    usage_ns: Mapping[str, int]


@dataclass(frozen=True, kw_only=True)
class IdleCpu:
    """Percent of one core each service used between two samples, and the lab's total."""

    seconds: float
    per_service: Mapping[str, float]

    @property
    def total(self) -> float:
        return sum(self.per_service.values())

    @property
    def within_target(self) -> bool:
        return self.total <= TARGET_PERCENT

    def as_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "percent_of_one_core": {name: round(v, 3) for name, v in self.per_service.items()},
            "total_percent_of_one_core": round(self.total, 3),
            "target_percent": TARGET_PERCENT,
        }

    def rows(self) -> list[dict[str, str]]:
        rows = [{"service": name, "idle CPU": f"{v:.2f} %"} for name, v in self.per_service.items()]
        return [*rows, {"service": "lab (total)", "idle CPU": f"{self.total:.2f} %"}]


def idle_cpu(before: CpuSample, after: CpuSample) -> IdleCpu:
    """Percent of one core used by each service between ``before`` and ``after`` (pure)."""
    seconds = after.at - before.at
    if seconds <= 0:
        raise BenchError("idle CPU: the second sample is not later than the first")
    per_service: dict[str, float] = {}
    for name, start in before.usage_ns.items():
        if name not in after.usage_ns:
            raise BenchError(f"idle CPU: {name} disappeared during the measurement")
        used = after.usage_ns[name] - start
        if used < 0:
            raise BenchError(f"idle CPU: {name}'s counter went back (it restarted): measure again")
        per_service[name] = used / 1e9 / seconds * 100.0
    return IdleCpu(seconds=seconds, per_service=per_service)


def cgroup_counter_paths(container_id: str, *, root: Path = CGROUP_ROOT) -> list[Path]:
    """Where a container's CPU counter may be, v1 first (pure)."""
    return [
        root / "cpuacct" / "docker" / container_id / "cpuacct.usage",
        root / "cpu,cpuacct" / "docker" / container_id / "cpuacct.usage",
        root / "system.slice" / f"docker-{container_id}.scope" / "cpu.stat",
        root / "docker" / container_id / "cpu.stat",
    ]


def parse_counter(path: Path, text: str) -> int:
    """Nanoseconds in a v1 ``cpuacct.usage`` or a v2 ``cpu.stat`` (``usage_usec``) text (pure)."""
    if path.name == "cpuacct.usage":
        return int(text.strip())
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    raise ValueError(f"{path}: no usage_usec line")


def read_cgroup_usage(container_id: str, *, root: Path = CGROUP_ROOT) -> int | None:
    """The container's CPU time in ns from its cgroup, or None where none is readable here."""
    for path in cgroup_counter_paths(container_id, root=root):
        try:
            return parse_counter(path, path.read_text())
        except (OSError, ValueError):
            continue
    return None


def sample(
    containers: Mapping[str, str],
    *,
    readers: Sequence[UsageReader],
    clock: Callable[[], float] = time.monotonic,
) -> CpuSample:
    """Every service's counter (``containers``: service -> container id), first reader that knows."""
    usage: dict[str, int] = {}
    for name, container_id in containers.items():
        for reader in readers:
            value = reader(container_id)
            if value is not None:
                usage[name] = value
                break
        else:
            raise BenchError(f"idle CPU: no CPU counter readable for {name} ({container_id[:12]})")
    return CpuSample(at=clock(), usage_ns=usage)


def measure_idle_cpu(
    lab: Lab,
    *,
    seconds: float = DEFAULT_SECONDS,
    stop: threading.Event | None = None,
) -> IdleCpu:
    """The lab's idle CPU over ``seconds`` (nothing else should run in it meanwhile).

    ``stop`` ends the measurement early (the figures then cover the shorter time).
    """
    containers = {row.service: lab.container(row.service).id for row in lab.status()}

    def docker_counter(container_id: str) -> int | None:
        stats = lab.docker.api.stats(container_id, stream=False, one_shot=True)
        return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])

    readers: list[UsageReader] = [read_cgroup_usage, docker_counter]
    before = sample(containers, readers=readers)
    (stop or threading.Event()).wait(seconds)  # the measurement window itself
    return idle_cpu(before, sample(containers, readers=readers))
