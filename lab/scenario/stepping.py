"""Doing the steps that are not one command: daemons, waits and copies (the I/O).

The pure parts (wrapper commands, probe commands, what a wait or copy means)
are in :mod:`lab.scenario.steps`; :class:`lab.scenario.execution.StepRunner`
decides when each step happens. Everything here goes through the
:class:`lab.interface.Lab` protocol, so the unit tests run it on the fake lab.

A daemon's life: :meth:`Daemon.start` runs it (a Docker exec that lasts as
long as it does) on a thread of the runner's pool; :attr:`Daemon.ended` says
whether it is gone by itself; :meth:`Daemon.stop` sends SIGTERM, waits
``grace`` seconds, sends SIGKILL if it must, and returns its record: exit
code, output, how it was stopped, or, for one that ended before it was asked
to, the error that fails the scenario.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError, NotReady
from lab.interface import ExecResult, Lab
from lab.scenario.checks import StepRecord, TextFacts
from lab.scenario.plan import Step
from lab.scenario.steps import (
    COPIED,
    NETWORK_WAITS,
    Wait,
    cleanup_argv,
    daemon_argv,
    daemon_folder,
    host_relative,
    output_argv,
    probe_argv,
    signal_argv,
)
from lab.waiting import Stream, wait_for

# Seconds a netkit helper may take beyond its wait to start and report.
PROBE_OVERHEAD = 20.0
SEEN_LINES = 3


class DaemonEnded(LabError):
    """The daemon a log wait watches ended without logging what was waited for."""


def step_record(
    step: Step, *, t0: float | None = None, started: float | None = None, **values: object
) -> StepRecord:
    """``step``'s record; with ``t0`` and ``started`` (monotonic), timed up to now."""
    offset = duration = 0.0
    if t0 is not None and started is not None:
        offset, duration = started - t0, time.monotonic() - started
    return StepRecord(
        name=step.name,
        service=step.service,
        argv=step.run,
        timeout=step.timeout,
        kind=step.kind,
        started=offset,
        duration=duration,
        **values,  # type: ignore[arg-type]
    )


def _last_lines(text: str, lines: int = SEEN_LINES) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "nothing"


# --------------------------------------------------------------------------- daemons


@dataclass
class Daemon:
    """One running daemon step and the folder its wrapper writes to."""

    lab: Lab
    step: Step
    folder: str
    t0: float
    started: float = 0.0
    future: concurrent.futures.Future[ExecResult | LabError] | None = None
    stopping: bool = False
    _signal: str = field(default="", repr=False)

    @classmethod
    def start(
        cls,
        lab: Lab,
        step: Step,
        *,
        pool: concurrent.futures.Executor,
        token: str,
        t0: float,
        on_end: Callable[[], None],
    ) -> Daemon:
        folder = daemon_folder(lab.config.scenario.daemon_dir, token, step.name)
        daemon = cls(lab=lab, step=step, folder=folder, t0=t0, started=time.monotonic())
        daemon.future = pool.submit(daemon._run, on_end)
        return daemon

    def _run(self, on_end: Callable[[], None]) -> ExecResult | LabError:
        argv = daemon_argv(self.folder, self.step.run)
        try:
            return self.lab.exec(
                self.step.service, argv, timeout=self.step.timeout, env=dict(self.step.env)
            )
        except LabError as exc:
            return exc
        finally:
            on_end()

    @property
    def ended(self) -> bool:
        """Gone by itself (it was not asked to stop)."""
        return self.future is not None and self.future.done() and not self.stopping

    def output(self, stream: Stream = "both") -> TextFacts:
        """What it wrote so far (the last bytes of each stream, as configured)."""
        limit = self.lab.config.scenario.daemon_output_limit
        wanted = ("stdout", "stderr") if stream == "both" else (stream,)
        parts = []
        for name in wanted:
            try:
                answer = self.lab.exec(
                    self.step.service,
                    output_argv(self.folder, name, limit=limit),
                    timeout=self.lab.config.scenario.read_timeout,
                )
            except LabError as exc:
                return TextFacts(text=None, error=str(exc))
            parts.append(answer.stdout if answer.ok else "")
        return TextFacts(text="".join(parts))

    def _send(self, signal: str) -> None:
        self._signal = f"SIG{signal}"
        with contextlib.suppress(LabError):  # gone meanwhile: the wait below sees it
            self.lab.exec(
                self.step.service,
                signal_argv(self.folder, signal),
                timeout=self.lab.config.scenario.read_timeout,
            )

    def _result(self, timeout: float) -> ExecResult | LabError | None:
        assert self.future is not None  # noqa: S101 - started by start()
        try:
            return self.future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return None

    def stop(self) -> StepRecord:
        """Stop it (SIGTERM, then SIGKILL after ``grace``) unless it ended already, and
        return its record."""
        early = self.ended
        self.stopping = True
        result = self._result(0) if early else None
        if not early:
            self._send("TERM")
            result = self._result(self.step.grace)
            if result is None:
                self._send("KILL")
                result = self._result(self.lab.config.scenario.exec_grace)
        ended_at = time.monotonic() - self.t0
        stdout = self._stream("stdout")
        stderr = self._stream("stderr")
        with contextlib.suppress(LabError):
            self.lab.exec(
                self.step.service,
                cleanup_argv(self.folder),
                timeout=self.lab.config.scenario.read_timeout,
            )
        values: dict[str, object] = {"stdout": stdout, "stderr": stderr}
        if result is None:
            values |= {"exit_code": None, "error": f"did not stop after {self._signal}"}
        elif isinstance(result, LabError):
            values |= {"exit_code": None, "error": str(result)}
        elif early:
            values |= {
                "exit_code": result.exit_code,
                "error": f"exited {result.exit_code} at {ended_at:.2f} s, "
                "before the other steps ended",
            }
        else:
            values |= {"exit_code": result.exit_code, "note": f"stopped by {self._signal}"}
        return step_record(self.step, t0=self.t0, started=self.started, **values)

    def _stream(self, name: Stream) -> str:
        facts = self.output(name)
        return facts.text or ""


# --------------------------------------------------------------------------- waits


def _network_wait(lab: Lab, wait: Wait, timeout: float) -> tuple[bool, str]:
    answer = lab.netkit_run(
        wait.origin, probe_argv(wait, timeout=timeout), timeout=timeout + PROBE_OVERHEAD
    )
    try:
        report = json.loads(answer.stdout.strip().splitlines()[-1])
        ok, last = bool(report["ok"]), str(report["last"])
        tries, waited = int(report["tries"]), float(report["waited"])
    except (IndexError, ValueError, KeyError, TypeError):
        tail = _last_lines(answer.stderr or answer.stdout)
        return False, f"the probe failed (exit {answer.exit_code}): {tail}"
    if ok:
        return True, f"{last} after {waited:.2f} s ({tries} tries)"
    return False, last


def _log_text(lab: Lab, wait: Wait, *, since: float, daemons: Mapping[str, Daemon]) -> TextFacts:
    stream: Stream = (
        "stdout" if wait.stream == "stdout" else ("stderr" if wait.stream == "stderr" else "both")
    )
    if wait.daemon is not None:
        return daemons[wait.daemon].output(stream)
    try:
        return TextFacts(text=lab.logs(wait.origin, since=since, stream=stream))
    except LabError as exc:
        return TextFacts(text=None, error=str(exc))


def _polled_wait(
    lab: Lab,
    wait: Wait,
    timeout: float,
    *,
    since: float,
    daemons: Mapping[str, Daemon],
) -> tuple[bool, str]:
    """A log line or a file: looked at every ``interval`` until the deadline."""
    seen = ["nothing yet"]
    pattern = re.compile(wait.target, re.MULTILINE) if wait.kind == "log" else None

    def probe() -> str | None:
        if pattern is not None:
            daemon = daemons.get(wait.daemon or "")
            ended = daemon is not None and daemon.ended  # looked at before its last output
            facts = _log_text(lab, wait, since=since, daemons=daemons)
            if facts.text is None:
                seen[0] = facts.error or "nothing read"
                return None
            match = pattern.search(facts.text)
            seen[0] = f"output ends: {_last_lines(facts.text)}"
            if match is None and ended:
                # It will never log it: say so now rather than at the deadline.
                raise DaemonEnded(f"daemon {wait.daemon} ended first; {seen[0]}")
            return f"{match[0]!r}" if match else None
        try:
            answer = lab.exec(
                wait.origin, ["test", "-e", wait.path], timeout=lab.config.scenario.read_timeout
            )
        except LabError as exc:
            seen[0] = str(exc)
            return None
        seen[0] = "no such file" if answer.exit_code == 1 else _last_lines(answer.stderr)
        return "it exists" if answer.ok else None

    try:
        found = wait_for(probe, timeout=timeout, what=wait.describe(), interval=wait.interval)
    except DaemonEnded as exc:
        return False, str(exc)
    except NotReady:
        return False, seen[0]
    return True, found


def run_wait(
    lab: Lab, step: Step, *, t0: float, since: float, daemons: Mapping[str, Daemon]
) -> StepRecord:
    """Wait for what ``step.wait`` says, within ``step.timeout``; the record says what was
    seen (the last thing, when it timed out)."""
    wait = step.wait
    assert wait is not None  # noqa: S101 - a wait step has its wait
    started = time.monotonic()
    try:
        if wait.kind in NETWORK_WAITS:
            ok, seen = _network_wait(lab, wait, step.timeout)
        else:
            ok, seen = _polled_wait(lab, wait, step.timeout, since=since, daemons=daemons)
    except LabError as exc:
        ok, seen = False, str(exc)
    if ok:
        return step_record(
            step, t0=t0, started=started, exit_code=0, note=f"{wait.describe()}: {seen}"
        )
    if seen.startswith("daemon ") and " ended first; " in seen:
        error = f"gave up waiting for {wait.describe()}: {seen}"
    else:
        error = (
            f"timed out after {step.timeout:g} s waiting for {wait.describe()}; last seen: {seen}"
        )
    return step_record(step, t0=t0, started=started, exit_code=None, error=error)


# --------------------------------------------------------------------------- copies


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _host_path(text: str, folder: Path, what: str) -> Path:
    """``text`` under ``folder``; LabError when it would lead out of it (``..``, a link)."""
    relative = host_relative(text)
    path = folder / relative if relative is not None else folder
    if relative is None or not _inside(path, folder):
        raise LabError(f"{text!r} is outside {what} {folder}")
    return path


def _copy(lab: Lab, step: Step, *, scenario_dir: Path, results: Path) -> str:
    copy = step.copy
    assert copy is not None  # noqa: S101 - a copy step has its copy
    if copy.into:
        source = _host_path(copy.source, scenario_dir, "the scenario's folder")
        return f"copied {copy.source} -> {lab.copy_to(source, copy.dest)}"
    dest = _host_path(copy.dest, results / COPIED, "the results folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = lab.copy_from(copy.source, dest)
    return f"copied {copy.source} -> {written[0] if written else dest} ({len(written)} entries)"


def run_copy(lab: Lab, step: Step, *, t0: float, scenario_dir: Path, results: Path) -> StepRecord:
    """Copy host -> container (from the scenario's folder) or container -> ``results/copied``."""
    started = time.monotonic()
    try:
        note = _copy(lab, step, scenario_dir=scenario_dir, results=results)
    except (LabError, OSError) as exc:
        error = f"{step.describe()}: {exc}"
        return step_record(step, t0=t0, started=started, exit_code=None, error=error)
    return step_record(step, t0=t0, started=started, exit_code=0, note=note)
