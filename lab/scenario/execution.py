"""Running one scenario's steps: in order, a ``parallel`` group together,
``background`` steps alongside the rest, ``daemon`` steps until every other step
has ended (then stopped last started first), each bounded by its timeout, while
the fault timeline (:mod:`lab.scenario.faults`) applies the faults at their times.
A daemon that ends by itself before the others stops the steps not started yet.
"""

from __future__ import annotations

import concurrent.futures
import functools
import secrets
import time
from pathlib import Path

from lab.config import ScenarioConfig
from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress
from lab.scenario.checks import FaultRecord, StepRecord
from lab.scenario.faults import Journal, Timeline, congestion_overrides
from lab.scenario.plan import Scenario, Step, phases
from lab.scenario.stepping import Daemon, run_copy, run_wait, step_record


class StepRunner:
    """Runs the steps of one scenario against a lab, saying how each ended.

    ``results`` is the scenario's results folder (``copy`` steps write there);
    ``since`` the Unix time the scenario started (log waits read from it).
    """

    def __init__(
        self,
        lab: Lab,
        scenario: Scenario,
        *,
        config: ScenarioConfig,
        results: Path,
        since: float,
        say: Progress,
    ) -> None:
        self.lab = lab
        self.scenario = scenario
        self.config = config
        self.results = results
        self.since = since
        self.say = say

    def run(
        self, journal: Journal | None = None
    ) -> tuple[list[StepRecord], list[FaultRecord], float | None]:
        """Step records, fault records and the Unix time the first step started."""
        scenario, say = self.scenario, self.say
        records: dict[str, StepRecord] = {}
        background: list[tuple[Step, concurrent.futures.Future[StepRecord]]] = []
        daemons: dict[str, Daemon] = {}
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(scenario.steps), thread_name_prefix="scenario-step"
        )
        timeline = Timeline(
            self.lab,
            scenario.faults,
            steps=[step.name for step in scenario.steps],
            progress=say,
            journal=journal,
            congestion=congestion_overrides(scenario, self.lab.services),
        )
        token = secrets.token_hex(4)
        try:
            timeline.apply_upfront()
            t0 = timeline.begin()
            groups = phases(scenario.steps)
            for index, phase in enumerate(groups):
                if dead := next((d for d in daemons.values() if d.ended), None):
                    # Its peers would only time out: say why they did not run instead.
                    for step in (step for later in groups[index:] for step in later):
                        records[step.name] = _not_run(step, f"daemon {dead.step.name} ended")
                    break
                if phase[0].daemon:
                    step = phase[0]
                    daemons[step.name] = Daemon.start(
                        self.lab,
                        step,
                        pool=pool,
                        token=token,
                        t0=t0,
                        on_end=functools.partial(_ended, timeline, step.name),
                    )
                    say(f"step {step.name} started as a daemon on {step.service}")
                    continue
                futures = [
                    (step, pool.submit(self._perform, step, t0, timeline, daemons=daemons))
                    for step in phase
                ]
                if len(phase) == 1 and phase[0].background:
                    say(f"step {phase[0].name} started in the background on {phase[0].service}")
                    background += futures
                    continue
                for step, future in futures:
                    records[step.name] = self._report(self._await(step, future))
            for step, future in background:
                records[step.name] = self._report(self._await(step, future))
        finally:
            # Last started, first stopped: a daemon may depend on one started before it.
            for name, daemon in reversed(daemons.items()):
                records[name] = self._report(daemon.stop())
            faults = timeline.finish()
            # A step stuck past its grace keeps its thread; do not wait for it here.
            pool.shutdown(wait=False, cancel_futures=True)
        ordered = [records[step.name] for step in scenario.steps if step.name in records]
        return ordered, faults, timeline.wall0

    def _perform(
        self, step: Step, t0: float, timeline: Timeline, *, daemons: dict[str, Daemon]
    ) -> StepRecord:
        """Do one non-daemon step: a command, a wait or a copy."""
        if step.wait is not None:
            try:
                return run_wait(self.lab, step, t0=t0, since=self.since, daemons=daemons)
            finally:
                timeline.step_finished(step.name, time.monotonic())
        if step.copy is not None:
            scenario = self.scenario
            folder = Path(scenario.folder) if scenario.folder else self.lab.repo_root
            try:
                return run_copy(self.lab, step, t0=t0, scenario_dir=folder, results=self.results)
            finally:
                timeline.step_finished(step.name, time.monotonic())
        return self._exec(step, t0, timeline)

    def _exec(self, step: Step, t0: float, timeline: Timeline) -> StepRecord:
        started = time.monotonic()
        try:
            answer = self.lab.exec(step.service, step.run, timeout=step.timeout, env=dict(step.env))
        except LabError as exc:
            timeline.step_finished(step.name, time.monotonic())
            return step_record(step, t0=t0, started=started, exit_code=None, error=str(exc))
        timeline.step_finished(step.name, time.monotonic())
        return step_record(
            step,
            t0=t0,
            started=started,
            exit_code=answer.exit_code,
            stdout=answer.stdout,
            stderr=answer.stderr,
        )

    def _await(self, step: Step, future: concurrent.futures.Future[StepRecord]) -> StepRecord:
        # A step's exec is bounded in the container by coreutils `timeout -k 5`; the
        # grace is how much longer we wait for the Docker API call itself.
        limit = step.timeout + self.config.exec_grace
        try:
            return future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            return StepRecord(
                name=step.name,
                service=step.service,
                argv=step.run,
                timeout=step.timeout,
                exit_code=None,
                duration=limit,
                error=f"the exec call did not return within {limit:g} s",
            )

    def _report(self, record: StepRecord) -> StepRecord:
        if record.error is not None:
            outcome = f"error: {record.error}"
            if record.kind == "daemon" and (tail := _tail(record.stderr or record.stdout)):
                outcome += f"; its output ends: {tail}"
        elif record.kind != "run" and record.note:
            outcome = record.note + (
                f" (exit {record.exit_code})" if record.kind == "daemon" else ""
            )
        elif record.timed_out:
            outcome = f"timed out after {record.timeout:g} s"
        else:
            outcome = f"exit {record.exit_code}"
        self.say(f"step {record.name} ({record.service}): {outcome} in {record.duration:.2f} s")
        return record


def _ended(timeline: Timeline, name: str) -> None:
    timeline.step_finished(name, time.monotonic())


def _not_run(step: Step, why: str) -> StepRecord:
    return step_record(step, exit_code=None, error=f"not run: {why}")


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join([line for line in text.strip().splitlines() if line.strip()][-lines:])
