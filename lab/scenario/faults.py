"""A scenario's faults: doing one to the lab, and the timeline thread that does
them at their times (``at`` seconds after the first step started or after their
``after`` step ended), recording each one applied, failed or not reached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from lab import congestion as tcp_congestion
from lab import shaping
from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress
from lab.scenario.checks import FaultRecord
from lab.scenario.errors import ScenarioError
from lab.scenario.plan import Fault, Scenario

Journal = Callable[[dict[str, object]], None]  # a note of what a run did to the network

RECOVER_ACTIONS: Final = frozenset({"kill", "stop", "pause", "restart"})
NETWORK_ACTIONS: Final = frozenset({"partition", "heal", "shape", "unshape"})


def apply_fault(
    lab: Lab, fault: Fault, *, congestion: Mapping[str, str | None] | None = None
) -> None:
    """Do one fault to the lab (the one place the runner calls lab.shaping for faults).

    A container that comes back (restart, start) has a fresh namespace: the lab
    puts back its routes and the project's TCP congestion control; a scenario's
    own ``congestion`` (by service) goes back on top.
    """
    if fault.action in {"kill", "restart", "pause", "unpause", "stop", "start"}:
        getattr(lab, fault.action)(fault.services[0])
        if fault.action in {"restart", "start"} and congestion:
            tcp_congestion.ensure_congestion(lab, overrides=congestion, names=[fault.services[0]])
    elif fault.action == "partition":
        shaping.partition(lab, *fault.services)
    elif fault.action == "heal":
        if fault.services:
            shaping.heal(lab, *fault.services)
        else:
            shaping.heal(lab)
    elif fault.action == "shape":
        assert fault.spec is not None  # noqa: S101 - the plan builder sets it for shape
        shaping.shape(lab, fault.services[0], fault.services[1], fault.spec)
    elif fault.action == "unshape":
        shaping.unshape(lab, fault.services[0], fault.services[1])
    else:  # pragma: no cover - the schema admits no other action
        raise ScenarioError([f"unknown fault action {fault.action!r}"])


class Timeline(threading.Thread):
    """Applies faults in turn, each ``at`` seconds after the first step started or
    after its ``after`` step finished; stops when told.

    Faults at 0 s that are not tied to a step are applied by :meth:`apply_upfront`
    before the first step starts, so a scenario can begin in a given state
    (e.g. partitioned). The runner reports each step's end via :meth:`step_finished`.
    """

    def __init__(
        self,
        lab: Lab,
        faults: Sequence[Fault],
        *,
        steps: Sequence[str],
        progress: Progress,
        journal: Journal | None = None,
        congestion: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(name="scenario-faults", daemon=True)
        self.lab = lab
        self.journal = journal
        self.congestion = congestion
        self.upfront = [fault for fault in faults if fault.upfront]
        self.faults = [fault for fault in faults if not fault.upfront]
        self.t0 = time.monotonic()
        self.progress = progress
        self.stopped = threading.Event()
        self.wall0: float | None = None  # Unix time of t0, once begun
        self.records: list[FaultRecord] = []
        self._ends: dict[str, float] = {}
        self._finished_at = float("inf")  # monotonic time the steps ended, once they have
        self._end_events = {name: threading.Event() for name in steps}

    def step_finished(self, name: str, at: float) -> None:
        self._ends[name] = at
        self._end_events[name].set()

    def apply(self, fault: Fault, applied: float) -> None:
        if self.journal is not None and fault.action in NETWORK_ACTIONS:
            self.journal({"did": fault.describe()})
        try:
            apply_fault(self.lab, fault, congestion=self.congestion)
        except LabError as exc:
            self.progress(f"fault {fault.when}: {fault.describe()} FAILED: {exc}")
            self.records.append(FaultRecord(fault=fault, applied_at=applied, error=str(exc)))
            return
        self.progress(f"fault at {applied:.2f} s: {fault.describe()}")
        self.records.append(FaultRecord(fault=fault, applied_at=applied))

    def apply_upfront(self) -> None:
        for fault in self.upfront:
            self.apply(fault, 0.0)

    def begin(self) -> float:
        """Start the clock (the first step starts now) and the thread; return ``t0``."""
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.start()
        return self.t0

    def _base(self, fault: Fault) -> float | None:
        """When the fault's clock started, or None when the run stopped first."""
        if fault.after is None:
            return self.t0
        # finish() sets every end event, so this wait ends with the steps at the latest.
        self._end_events[fault.after].wait()
        return self._ends.get(fault.after)  # None: the step never ran

    def run(self) -> None:
        for fault in self.faults:
            base = self._base(fault)
            if base is None:
                break
            due = base + fault.at
            # Event.wait, not sleep: a scheduled time that `stop` can cut short. A fault
            # due by the time the steps ended (e.g. at 0 s after the last step) still runs.
            if self.stopped.wait(max(0.0, due - time.monotonic())) and due > self._finished_at:
                break
            self.apply(fault, time.monotonic() - self.t0)

    def finish(self) -> list[FaultRecord]:
        """Stop; faults not reached are recorded as such (the steps ended first)."""
        self._finished_at = time.monotonic()
        ended = self._finished_at - self.t0
        self.stopped.set()
        for event in self._end_events.values():
            event.set()
        if self.is_alive():
            self.join()
        done = {id(record.fault) for record in self.records}
        planned = [*self.upfront, *self.faults]
        missed = [
            FaultRecord(fault=fault, error=f"not reached: the steps had finished at {ended:.2f} s")
            for fault in planned
            if id(fault) not in done
        ]
        position = {id(fault): index for index, fault in enumerate(planned)}
        return sorted([*self.records, *missed], key=lambda record: position[id(record.fault)])


def congestion_overrides(scenario: Scenario, services: Sequence[str]) -> dict[str, str | None]:
    """The scenario's ``congestion`` by service: its one algorithm for every service of the
    lab, then its per-service ones (empty: the Compose file's stay)."""
    asked = scenario.congestion
    overrides: dict[str, str | None] = {}
    if asked.default is not None:
        overrides = dict.fromkeys(services, asked.default)
    return overrides | dict(asked.services)
