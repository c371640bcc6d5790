"""Running the UDP capacity search in the lab: the I/O half of :mod:`lab.bench.capacity`.

Client -> udp-listener, unshaped, for each datagram size:

* **ours**: every trial is ``socketlab udp-trial`` in the client (our sender
  at the trial's rate, then the listener's count of that session, read from its
  status server);
* **iperf3**: ``iperf3 -s`` in a netkit helper joined to the udp-listener's
  namespace for the whole search, and one ``iperf3 -u -b RATE -l SIZE`` client
  per trial in a helper joined to the client's; sent is the client's packet
  count, received the server's (packets - lost).

Around every trial the controller reads ``/proc/net/snmp`` in the
udp-listener's namespace, for the kernel's drops apart from the application's
loss, and the machine's load average is sampled.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from lab.bench.capacity import (
    IPERF3,
    OURS,
    Capacity,
    CapacityPlan,
    CapacityReport,
    KernelDrops,
    Trial,
    Verdict,
    search,
)
from lab.bench.errors import BenchError
from lab.bench.lab_state import now_iso, refuse_foreign_shaping, require_services, versions
from lab.bench.tool_output import last_json, parse_iperf3_json
from lab.errors import HelperNotReady
from lab.interface import Lab
from lab.iperf3 import SERVER_ROLE, client_argv
from lab.progress import Progress, silent

SENDER: Final = "client"
LISTENER: Final = "udp-listener"
SIZES: Final = (64, 1200)
SNMP: Final = "/proc/net/snmp"
EXEC_SLACK: Final = 60.0  # seconds beyond a trial's own length that its exec may take


class _Load:
    """The 1-minute load average before, after, and at its peak over the run."""

    def __init__(self) -> None:
        self.before = self.peak = os.getloadavg()[0]

    def sample(self) -> None:
        self.peak = max(self.peak, os.getloadavg()[0])

    def figures(self) -> tuple[float, float, float]:
        self.sample()
        return self.before, os.getloadavg()[0], self.peak


def snmp(lab_: Lab) -> str:
    """``/proc/net/snmp`` as the udp-listener's network namespace counts it."""
    result = lab_.exec(LISTENER, ["cat", SNMP], timeout=30)
    return result.check(f"reading {SNMP} in {LISTENER}").stdout


def our_trial(lab_: Lab, plan: CapacityPlan, *, size: int, rate: float) -> Trial:
    """Our sender at ``rate`` for one trial, counted by the listener."""
    count = plan.count(rate)
    argv = ["socketlab", "udp-trial", "--count", str(count), "--rate", f"{rate:g}",
            "--size", str(size), "--segments", str(plan.segments)]  # fmt: skip
    before = snmp(lab_)
    result = lab_.exec(SENDER, argv, timeout=plan.seconds + EXEC_SLACK).check("udp-trial")
    after = snmp(lab_)
    report = last_json(result.stdout, what="udp-trial")
    try:
        return Trial(
            rate=rate,
            sent=int(report["sent"]),
            received=int(report["received"]),
            seconds=float(report["duration_s"]),
            kernel=KernelDrops.between(before, after),
            gaps=int(report["gaps"]),
            missed_at_start=int(report["missed_at_start"]),
            tail=int(report["tail"]),
            duplicates=int(report["duplicates"]),
            send_errors=int(report["buffer_full"]) + int(report["unreachable"]),
            segments=int(report.get("segments", 1)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"udp-trial gave an unusable result: {exc}") from exc


def iperf3_trial_figures(report: dict[str, Any], *, rate: float) -> tuple[int, int, float]:
    """(sent, received, sender seconds) of an ``iperf3 -u -J`` client report."""
    end = report["end"]
    sent_side, received_side = end.get("sum_sent") or end["sum"], end["sum_received"]
    try:
        sent = int(sent_side["packets"])
        received = int(received_side["packets"]) - int(received_side["lost_packets"])
        seconds = float(sent_side["seconds"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"iperf3 -u at {rate:g}/s reported no packet counts: {exc}") from exc
    return sent, received, seconds


@contextlib.contextmanager
def iperf3_listening(lab_: Lab) -> Iterator[str]:
    """``iperf3 -s`` (many tests) in a helper joined to the listener's namespace;
    yields the address to reach it, removes it after."""
    port = lab_.config.bench.iperf_port
    argv = ["iperf3", "-s", "--forceflush", "-p", str(port)]
    try:
        helper = lab_.start_helper(
            LISTENER,
            argv,
            role=SERVER_ROLE,
            ready="listening",
            ready_timeout=lab_.config.bench.ready_timeout,
        )
    except HelperNotReady as exc:
        raise BenchError(f"iperf3 server in {LISTENER} did not start: {exc}") from exc
    with helper:
        yield lab_.ip(LISTENER)


def iperf3_trial(
    lab_: Lab, plan: CapacityPlan, address: str, *, size: int, rate: float, rcvbuf: int
) -> Trial:
    """iperf3 ``-u`` at ``rate`` ``size``-byte datagrams per second for one trial.

    ``-w``: the socket buffers our listener has (``rcvbuf`` as the kernel reports
    it, twice what was asked), so both receivers get the same room.
    """
    seconds = max(1, round(plan.seconds))
    args = ["-u", "-b", str(round(rate * size * 8)), "-l", str(size), "-t", str(seconds)]
    if rcvbuf > 0:
        args += ["-w", str(rcvbuf // 2)]
    argv = client_argv(address, port=lab_.config.bench.iperf_port, args=args)
    before = snmp(lab_)
    result = lab_.netkit_run(SENDER, argv, timeout=seconds + EXEC_SLACK)
    after = snmp(lab_)
    report = parse_iperf3_json(result.stdout)
    if not result.ok:
        raise BenchError(f"iperf3 exited with {result.exit_code}: {result.stderr.strip()[-300:]}")
    sent, received, sender_seconds = iperf3_trial_figures(report, rate=rate)
    return Trial(
        rate=rate,
        sent=sent,
        received=received,
        seconds=sender_seconds,
        kernel=KernelDrops.between(before, after),
    )


def _rcvbuf(lab_: Lab) -> int:
    result = lab_.exec(SENDER, ["socketlab", "udp-stats"], timeout=30).check("udp-stats")
    try:
        return int(json.loads(result.stdout).get("rcvbuf", 0))
    except (ValueError, AttributeError):
        return 0


def run_udp_capacity(
    lab_: Lab,
    plan: CapacityPlan,
    *,
    sizes: Sequence[int] = SIZES,
    iperf3: bool = True,
    progress: Progress = silent,
) -> CapacityReport:
    """``lab bench --udp-capacity``: the search for each size, ours then iperf3's."""
    started = now_iso()
    require_services(lab_, (SENDER, LISTENER))
    refuse_foreign_shaping(lab_)
    load = _Load()
    rcvbuf = _rcvbuf(lab_)
    searches: list[Capacity] = []

    def show(tool: str, size: int) -> Callable[[Trial, Verdict], None]:
        def report(trial: Trial, verdict: Verdict) -> None:
            load.sample()
            progress(
                f"[{tool} {size} B] {trial.rate:,.0f}/s asked, {trial.achieved:,.0f}/s sent, "
                f"loss {trial.loss * 100:.3f} %, kernel drops {trial.kernel.in_errors:,}: "
                f"{verdict.value}"
            )

        return report

    for size in sizes:
        progress(f"UDP capacity, {size}-byte datagrams: {OURS}")

        def ours(rate: float, size: int = size) -> Trial:
            return our_trial(lab_, plan, size=size, rate=rate)

        searches.append(search(plan, ours, tool=OURS, size=size, progress=show(OURS, size)))
        if not iperf3:
            continue
        progress(f"UDP capacity, {size}-byte datagrams: iperf3 -u")
        with iperf3_listening(lab_) as address:

            def theirs(rate: float, size: int = size, address: str = address) -> Trial:
                return iperf3_trial(lab_, plan, address, size=size, rate=rate, rcvbuf=rcvbuf)

            searches.append(
                search(plan, theirs, tool=IPERF3, size=size, progress=show(IPERF3, size))
            )
    return CapacityReport(
        started=started,
        finished=now_iso(),
        plan=plan,
        searches=tuple(searches),
        load=load.figures(),
        rcvbuf=rcvbuf,
        versions=versions(lab_),
    )
