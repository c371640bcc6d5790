"""The lab as a run finds it, read rather than measured.

Before a run: are the services it needs running and healthy, and is any link
shaped or partitioned (``lab bench``, ``lab sweep`` and the UDP capacity search
refuse to start while the lab has shaping in force they did not make: the
figures would lie). Around each condition: the RTT of a link (pinged
``SOCKETLAB_BENCH_RTT_PINGS`` times) and the kernel's load average. In every
report: when it ran and the versions that produced the figures.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
from collections.abc import Sequence
from datetime import UTC, datetime

import lab
import socketlab
from lab.bench.errors import BenchError
from lab.errors import LabError
from lab.interface import Lab
from lab.shaping import link_status, measure_rtt


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions(lab_: Lab, *, iperf3: str | None = None) -> dict[str, str]:
    """What produced the figures: our versions, Python, kernel, Docker, tools."""
    found = {
        "lab": lab.__version__,
        "socketlab": socketlab.__version__,
        "python": platform.python_version(),
        "matplotlib": importlib.metadata.version("matplotlib"),
        "kernel": platform.release(),
    }
    with contextlib.suppress(LabError):
        found["docker engine"] = lab_.engine_version()
    if iperf3:
        found["iperf3"] = iperf3
    return found


def require_services(lab_: Lab, services: Sequence[str]) -> None:
    """BenchError unless every one of ``services`` runs and is healthy."""
    rows = {row.service: row for row in lab_.status()}
    missing = [
        name
        for name in services
        if name not in rows or (rows[name].state, rows[name].health) != ("running", "healthy")
    ]
    if missing:
        raise BenchError(
            f"lab {lab_.project!r} is not ready ({', '.join(missing)} not running and healthy): "
            f"run `lab -p {lab_.project} up` first"
        )


def refuse_foreign_shaping(lab_: Lab) -> None:
    """BenchError when links are shaped or partitioned: the figures would lie."""
    links = link_status(lab_)
    if links:
        shown = ", ".join(f"{state.link} ({state.shaping})" for state in links)
        raise BenchError(
            f"the lab has shaping or partitions in force: {shown}; "
            "run `lab unshape` / `lab heal` first (bench and sweep shape links themselves)"
        )


def load_average(lab_: Lab) -> float | None:
    """The 1-minute load average of the kernel the containers run on."""
    with contextlib.suppress(LabError, ValueError, IndexError):
        result = lab_.exec("client", ["cat", "/proc/loadavg"], timeout=30).check("loadavg")
        return float(result.stdout.split()[0])
    return None


def link_rtt(lab_: Lab, source: str, dest: str) -> float | None:
    """The mean RTT ``source`` -> ``dest`` over the configured number of pings (None: no reply)."""
    return measure_rtt(lab_, source, dest, count=lab_.config.bench.rtt_pings).rtt_avg
