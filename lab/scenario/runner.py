"""Running a scenario plan against a lab: links, steps, faults, checks, artifacts.

The thin I/O part of lab.scenario. For each scenario the runner

1. checks the lab is healthy and shapes the declared links (``lab.shaping``);
2. runs the steps (in order; a ``parallel`` group together; ``background``
   steps alongside the rest), each bounded by its timeout, while a timeline
   thread applies the faults at their times;
3. collects what the checks need (captured output, status URLs, logs, file
   digests), re-reading URLs and logs until a check holds or its ``within``
   deadline passes, and evaluates every check (:mod:`lab.scenario.checks`);
   tcpdump helpers record meanwhile (:mod:`lab.scenario.capture`): every link a
   ``pcap`` check reads, at the point its metric needs (as sent or as delivered),
   and with ``capture`` every shaped link as sent; they stop when the steps are
   done and the checked links' pcaps are analysed
   (:func:`lab.report.analysis.analyze_file`) for the ``pcap`` checks;
4. keeps artifacts, then undoes what it did: unshape, heal, bring back
   services it killed, stopped or paused, and wait until the lab is healthy.

:func:`run_files` then writes results.json, junit.xml and report.html
(:func:`lab.report.page.write_report`; a report that cannot be built is a
warning, the run's results stand).

It accepts any :class:`lab.interface.Lab` (a test session's, the CLI's, a
fake); its timeouts come from ``lab.config.scenario``
(:class:`lab.config.ScenarioConfig`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Final, cast

from lab import congestion as tcp_congestion
from lab import routing, shaping
from lab.errors import LabError, NotReady
from lab.interface import Lab
from lab.report.analysis import analyze_file
from lab.report.errors import PcapError, ReportError
from lab.report.metrics import capture_point
from lab.scenario import checks as verdicts
from lab.scenario.capture import Capturer, run_targets
from lab.scenario.checks import (
    CheckResult,
    FaultRecord,
    FileFacts,
    Observations,
    PcapFacts,
    StepRecord,
    TextFacts,
)
from lab.scenario.errors import ScenarioError
from lab.scenario.plan import (
    Check,
    CheckKind,
    Fault,
    FileRef,
    Scenario,
    Source,
    Step,
    load_scenario,
    phases,
)
from lab.scenario.report import (
    PcapRecord,
    ScenarioResult,
    new_run_id,
    rerun_command,
    write_reports,
)
from lab.waiting import Stream, wait_for

log = logging.getLogger("lab.scenario")

Progress = Callable[[str], None]

SCENARIO_SUFFIX: Final = ".yaml"
RECOVER_ACTIONS: Final = frozenset({"kill", "stop", "pause", "restart"})

_URL_FETCH: Final = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as answer:\n"
    "    sys.stdout.write(answer.read().decode('utf-8', 'replace'))\n"
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _quiet(message: str) -> None:
    log.info("event=scenario_progress %s", message)


def _safe(name: str) -> str:
    return _SAFE_NAME.sub("_", name).strip("_") or "_"


# --------------------------------------------------------------------------- finding files


def scenario_files(folder: Path) -> list[Path]:
    """The scenario files of a folder, by name."""
    return sorted(folder.glob(f"*{SCENARIO_SUFFIX}"))


def resolve_names(names: Sequence[str], folder: Path) -> list[Path]:
    """Scenario names (``hello``) or paths to YAML files -> files; ScenarioError if missing."""
    found: list[Path] = []
    missing: list[str] = []
    for name in names:
        path = Path(name)
        if path.suffix in {".yaml", ".yml"} or "/" in name:
            candidate = path
        else:
            candidate = folder / f"{name}{SCENARIO_SUFFIX}"
        if candidate.is_file():
            found.append(candidate)
        else:
            missing.append(name)
    if missing:
        known = ", ".join(path.stem for path in scenario_files(folder)) or "none"
        raise ScenarioError([f"no scenario {name!r} (known: {known})" for name in missing])
    return found


def _label(path: Path, root: Path) -> str:
    """How messages name a file: relative to the checkout when inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- lab actions


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


class _Timeline(threading.Thread):
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
        congestion: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(name="scenario-faults", daemon=True)
        self.lab = lab
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


# --------------------------------------------------------------------------- the runner


@dataclass
class RunReport:
    """A finished ``lab run``: where its reports are and what each scenario did."""

    run_id: str
    folder: Path
    results: list[ScenarioResult] = field(default_factory=list)
    json_path: Path | None = None
    junit_path: Path | None = None
    report_path: Path | None = None  # report.html, unless it could not be built

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(result.passed for result in self.results)


class ScenarioRunner:
    """Runs scenarios against one lab, writing artifacts under ``folder/<scenario>/``."""

    def __init__(
        self, lab: Lab, *, folder: Path, progress: Progress = _quiet, capture: bool = False
    ) -> None:
        self.lab = lab
        self.config = lab.config.scenario
        self.folder = folder
        self.progress = progress
        self.capture = capture

    # ------------------------------------------------------------------ public

    def run(self, scenario: Scenario) -> ScenarioResult:
        """Run one scenario; never raises LabError (it becomes the result's error)."""
        say = self._sayer(scenario)
        started_at = datetime.now(UTC)
        wall = time.time()
        clock = time.monotonic()
        say(f"starting: {scenario.description}")
        links: list[str] = []
        steps: list[StepRecord] = []
        faults: list[FaultRecord] = []
        results: list[CheckResult] = []
        files: dict[str, FileFacts] = {}
        pcaps: list[PcapRecord] = []
        capturer = Capturer(self.lab, folder=self.folder, prefix=_safe(scenario.name))
        error: str | None = None
        origin: float | None = None
        addresses = self._addresses()
        congestion: dict[str, str] = {}
        try:
            self.lab.wait_healthy(timeout=self.config.ready_timeout)
            congestion = self._set_congestion(scenario, say)
            links = self._shape_links(scenario, say)
            targets = run_targets(scenario, capture=self.capture)
            if targets:
                capturer.start(targets)
            try:
                steps, faults, origin = self._run_steps(scenario, say)
            finally:
                pcaps = self._stop_capture(capturer, say)
            observed = self._pcap_facts(pcaps, addresses, wanted=_pcap_keys(scenario))
            results = self._evaluate(
                scenario, steps, faults, files, pcaps=observed, since=wall, say=say
            )
        except LabError as exc:
            error = str(exc)
            say(f"error: {exc}")
        finally:
            pcaps = pcaps or self._stop_capture(capturer, say)
            self._keep_artifacts(scenario, steps, files, since=wall)
            try:
                self._clean_up(scenario, say)
            except LabError as exc:
                error = f"{error + '; ' if error else ''}cleaning up: {exc}"
                say(f"cleaning up failed: {exc}")
        result = ScenarioResult(
            name=scenario.name,
            description=scenario.description,
            file=scenario.file,
            started_at=started_at.isoformat(timespec="seconds"),
            duration=time.monotonic() - clock,
            steps=tuple(steps),
            faults=tuple(faults),
            checks=tuple(results),
            links=tuple(links),
            pcaps=tuple(pcaps),
            error=error,
            clock_origin=origin,
            addresses=addresses,
            congestion=congestion,
            seed=scenario.seed,
        )
        passed = sum(1 for check in result.checks if check.passed)
        verdict = "PASSED" if result.passed else "FAILED"
        say(f"{verdict} ({passed}/{len(result.checks)} checks) in {result.duration:.1f} s")
        if not result.passed and not self.capture:
            rerun = rerun_command(scenario.name, scenario.file)
            say(f"to see its packets, run it again with capture: {rerun}")
        return result

    # ------------------------------------------------------------------ phases

    def _sayer(self, scenario: Scenario) -> Progress:
        def say(message: str) -> None:
            self.progress(f"[{scenario.name}] {message}")

        return say

    def _addresses(self) -> dict[str, str]:
        """Service -> IP as the run starts (names pcap directions in the report)."""
        found: dict[str, str] = {}
        for service in self.lab.services:
            try:
                found[service] = self.lab.ip(service)
            except LabError as exc:  # a stopped service has none; the run says so elsewhere
                log.info("event=no_address service=%s error=%s", service, exc)
        return found

    def _pcap_facts(
        self, records: Sequence[PcapRecord], addresses: dict[str, str], *, wanted: set[str]
    ) -> dict[str, PcapFacts]:
        """The metrics of every link capture, by :func:`~lab.scenario.checks.pcap_key`,
        for ``pcap`` checks."""
        facts: dict[str, PcapFacts] = {}
        for record in records:
            source, arrow, dest = record.link.removesuffix(" (delivered)").partition(" -> ")
            if not arrow:
                continue  # a service's whole traffic: no check reads it
            link = f"{source} -> {dest}"
            key = verdicts.pcap_key((source, dest), "delivered" if record.delivered else "sent")
            if key not in wanted:
                continue  # kept for the report (--capture); no check reads it
            if record.file is None:
                facts[key] = PcapFacts(link=link, error=record.error or "no pcap kept")
                continue
            # RTTs are timed from the capture's own host (lab.report.analysis).
            local = addresses.get(record.service or "")
            try:
                analysis = analyze_file(
                    self.folder / record.file, limits=self.lab.config.report.pcap, local=local
                )
            except PcapError as exc:
                facts[key] = PcapFacts(link=link, file=record.file, error=str(exc))
                continue
            facts[key] = PcapFacts(
                link=link, metrics=analysis.metrics(), file=record.file, packets=analysis.packets
            )
        return facts

    def _stop_capture(self, capturer: Capturer, say: Progress) -> list[PcapRecord]:
        records = capturer.stop()
        for record in records:
            if record.error is None:
                say(f"capture {record.link}: {record.file} ({record.size} bytes)")
            else:
                say(f"capture {record.link} FAILED: {record.error}")
        return records

    def _shape_links(self, scenario: Scenario, say: Progress) -> list[str]:
        """Shape the scenario's links; each text names the spec in force, seed included
        (the one the link names, one derived from the scenario's, or one picked now)."""
        shaped = []
        for link in scenario.links:
            result = shaping.shape(self.lab, link.source, link.dest, link.spec)
            text = (
                f"{link.source} -> {link.dest}: {result.spec.describe()} (engine {result.engine})"
            )
            say(f"shaped {text}")
            shaped.append(text)
        return shaped

    def _set_congestion(self, scenario: Scenario, say: Progress) -> dict[str, str]:
        """Put the scenario's ``congestion`` in force; what each of its services uses now."""
        if scenario.congestion.asked:
            overrides = congestion_overrides(scenario, self.lab.services)
            applied = tcp_congestion.ensure_congestion(self.lab, overrides=overrides)
            say("TCP congestion control: " + ", ".join(f"{n} {a}" for n, a in applied.items()))
        return tcp_congestion.congestion_in_use(self.lab, scenario.services)

    def _exec(self, step: Step, t0: float, timeline: _Timeline) -> StepRecord:
        started = time.monotonic()
        try:
            answer = self.lab.exec(step.service, step.run, timeout=step.timeout, env=dict(step.env))
        except LabError as exc:
            timeline.step_finished(step.name, time.monotonic())
            return StepRecord(
                name=step.name,
                service=step.service,
                argv=step.run,
                timeout=step.timeout,
                exit_code=None,
                started=started - t0,
                duration=time.monotonic() - started,
                error=str(exc),
            )
        timeline.step_finished(step.name, time.monotonic())
        return StepRecord(
            name=step.name,
            service=step.service,
            argv=step.run,
            timeout=step.timeout,
            exit_code=answer.exit_code,
            stdout=answer.stdout,
            stderr=answer.stderr,
            started=started - t0,
            duration=time.monotonic() - started,
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

    def _run_steps(
        self, scenario: Scenario, say: Progress
    ) -> tuple[list[StepRecord], list[FaultRecord], float | None]:
        """Step records, fault records and the Unix time the first step started."""
        records: dict[str, StepRecord] = {}
        background: list[tuple[Step, concurrent.futures.Future[StepRecord]]] = []
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(scenario.steps), thread_name_prefix="scenario-step"
        )
        timeline = _Timeline(
            self.lab,
            scenario.faults,
            steps=[step.name for step in scenario.steps],
            progress=say,
            congestion=congestion_overrides(scenario, self.lab.services),
        )
        try:
            timeline.apply_upfront()
            t0 = timeline.begin()
            for phase in phases(scenario.steps):
                futures = [(step, pool.submit(self._exec, step, t0, timeline)) for step in phase]
                if len(phase) == 1 and phase[0].background:
                    say(f"step {phase[0].name} started in the background on {phase[0].service}")
                    background += futures
                    continue
                for step, future in futures:
                    records[step.name] = self._report_step(self._await(step, future), say)
            for step, future in background:
                records[step.name] = self._report_step(self._await(step, future), say)
        finally:
            faults = timeline.finish()
            # A step stuck past its grace keeps its thread; do not wait for it here.
            pool.shutdown(wait=False, cancel_futures=True)
        ordered = [records[step.name] for step in scenario.steps if step.name in records]
        return ordered, faults, timeline.wall0

    def _report_step(self, record: StepRecord, say: Progress) -> StepRecord:
        if record.error is not None:
            outcome = f"error: {record.error}"
        elif record.timed_out:
            outcome = f"timed out after {record.timeout:g} s"
        else:
            outcome = f"exit {record.exit_code}"
        say(f"step {record.name} ({record.service}): {outcome} in {record.duration:.2f} s")
        return record

    # ------------------------------------------------------------------ observations

    def _read_url(self, source: Source) -> TextFacts:
        read_timeout = self.config.read_timeout
        argv = ["python3", "-c", _URL_FETCH, source.name, f"{read_timeout:g}"]
        try:
            answer = self.lab.exec(source.via or "client", argv, timeout=read_timeout + 5)
        except LabError as exc:
            return TextFacts(text=None, error=str(exc))
        if not answer.ok:
            tail = " | ".join(answer.stderr.strip().splitlines()[-2:])
            return TextFacts(text=None, error=f"GET failed (exit {answer.exit_code}): {tail}")
        return TextFacts(text=answer.stdout)

    def _read_logs(self, service: str, *, since: float, stream: Stream = "both") -> TextFacts:
        try:
            return TextFacts(text=self.lab.logs(service, since=since, stream=stream))
        except LabError as exc:
            return TextFacts(text=None, error=str(exc))

    def _read_file(self, ref: FileRef) -> FileFacts:
        read_timeout = self.config.read_timeout
        try:
            sha256 = self.lab.file_sha256(ref.service, ref.path, timeout=read_timeout * 10)
            size_answer = self.lab.exec(
                ref.service, ["stat", "-c", "%s", ref.path], timeout=read_timeout
            ).check(f"stat {ref}")
            size = int(size_answer.stdout.strip())
            # Files up to the limit are copied into the results (and diffed when they differ).
            small = size <= self.config.file_copy_limit
            content = self.lab.read_file(ref.service, ref.path) if small else None
        except (LabError, ValueError) as exc:
            return FileFacts(ref=str(ref), error=str(exc))
        return FileFacts(ref=str(ref), sha256=sha256, size=size, content=content)

    def _text(self, source: Source, *, since: float) -> TextFacts:
        if source.kind == "url":
            return self._read_url(source)
        # The schema admits only stdout, stderr and both.
        return self._read_logs(source.name, since=since, stream=cast(Stream, source.stream))

    def _evaluate(
        self,
        scenario: Scenario,
        steps: list[StepRecord],
        faults: list[FaultRecord],
        files: dict[str, FileFacts],
        *,
        pcaps: dict[str, PcapFacts],
        since: float,
        say: Progress,
    ) -> list[CheckResult]:
        """Evaluate every check; ``files`` is filled with what same_file checks read."""
        by_name = {record.name: record for record in steps}
        captures = {step.capture: step.name for step in scenario.steps if step.capture}
        texts = verdicts.capture_sources(by_name, captures)
        results = [verdicts.evaluate_fault(record) for record in faults]
        for check in scenario.checks:
            if check.kind is CheckKind.SAME_FILE:
                for ref in check.files or ():
                    if str(ref) not in files:
                        files[str(ref)] = self._read_file(ref)
            result = self._evaluate_one(check, by_name, texts, files, pcaps, since=since)
            mark = "PASS" if result.passed else "FAIL"
            say(f"{mark} {result.name}: {result.detail.splitlines()[0] if result.detail else ''}")
            results.append(result)
        return results

    def _evaluate_one(
        self,
        check: Check,
        steps: dict[str, StepRecord],
        texts: dict[str, TextFacts],
        files: dict[str, FileFacts],
        pcaps: dict[str, PcapFacts],
        *,
        since: float,
    ) -> CheckResult:
        last: list[CheckResult] = []

        def holds() -> CheckResult | None:
            if check.source is not None and check.source.dynamic:
                texts[check.source.key] = self._text(check.source, since=since)
            seen = Observations(steps=steps, texts=texts, files=files, pcaps=pcaps)
            last[:] = [verdicts.evaluate(check, seen)]
            return last[0] if last[0].passed else None

        try:
            return wait_for(
                holds, timeout=check.within, what=check.name, interval=self.config.check_poll
            )
        except NotReady:
            return last[0]  # the verdict at the deadline, with its reason

    # ------------------------------------------------------------------ artifacts, cleanup

    def _keep_artifacts(
        self,
        scenario: Scenario,
        steps: list[StepRecord],
        files: dict[str, FileFacts],
        *,
        since: float,
    ) -> None:
        folder = self.folder / _safe(scenario.name)
        try:
            captures = folder / "captures"
            captures.mkdir(parents=True, exist_ok=True)
            names = {step.name: step.capture for step in scenario.steps}
            for record in steps:
                stem = _safe(names.get(record.name) or record.name)
                (captures / f"{stem}.stdout").write_text(record.stdout)
                (captures / f"{stem}.stderr").write_text(record.stderr)
            logs = folder / "logs"
            logs.mkdir(exist_ok=True)
            for service in self._log_names():
                log_text = self._read_logs(service, since=since)
                (logs / f"{_safe(service)}.log").write_text(
                    log_text.text or f"({log_text.error})\n"
                )
            for ref, file_facts in files.items():
                if file_facts.content is not None:
                    service, _, path = ref.partition(":")
                    # Only name parts: a ".." in a scenario's path must not escape the folder.
                    parts = [
                        _safe(part)
                        for part in PurePosixPath(path).parts
                        if part not in {"/", ".", ".."}
                    ]
                    target = folder.joinpath("files", _safe(service), *parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(file_facts.content)
        except OSError as exc:
            self.progress(f"[{scenario.name}] could not keep artifacts in {folder}: {exc}")

    def _log_names(self) -> list[str]:
        """Every container's name (each replica's), else the services'."""
        try:
            return [instance.name for instance in self.lab.topology().instances]
        except LabError:
            return list(self.lab.services)

    def _clean_up(self, scenario: Scenario, say: Progress) -> None:
        """Undo links, shaping and partitions; bring back services the faults took away."""
        shaped = {(link.source, link.dest) for link in scenario.links}
        shaped |= {(f.services[0], f.services[1]) for f in scenario.faults if f.action == "shape"}
        for source, dest in sorted(shaped):
            shaping.unshape(self.lab, source, dest)
        partitioned = [f.services for f in scenario.faults if f.action == "partition"]
        for pair in partitioned:
            shaping.heal(self.lab, *pair)
        touched = {f.services[0] for f in scenario.faults if f.action in RECOVER_ACTIONS}
        for service in sorted(touched):
            self._revive(service, say)
        if touched or partitioned:
            self.lab.wait_healthy(timeout=self.config.recover_timeout)
        if touched:
            # A restarted container has a fresh namespace: the routers' routes are gone there.
            for route in routing.ensure_routes(self.lab):
                say(f"route in {route.instance} again: {route.destination} via {route.via}")
        if touched or scenario.congestion.asked:
            # ... and so is its TCP congestion control; the scenario's own is undone.
            names = sorted(touched) if not scenario.congestion.asked else None
            reset = tcp_congestion.ensure_congestion(self.lab, names=names, reset=True)
            if scenario.congestion.asked:
                say(
                    "TCP congestion control back: "
                    + ", ".join(f"{n} {a}" for n, a in reset.items())
                )

    def _revive(self, service: str, say: Progress) -> None:
        state = self.lab.state(service)
        if state == "paused":
            self.lab.unpause(service)
            say(f"unpaused {service}")
        elif state in {"exited", "created", "dead"}:
            self.lab.start(service)
            say(f"started {service} again")


def congestion_overrides(scenario: Scenario, services: Sequence[str]) -> dict[str, str | None]:
    """The scenario's ``congestion`` by service: its one algorithm for every service of the
    lab, then its per-service ones (empty: the Compose file's stay)."""
    asked = scenario.congestion
    overrides: dict[str, str | None] = {}
    if asked.default is not None:
        overrides = dict.fromkeys(services, asked.default)
    return overrides | dict(asked.services)


def _pcap_keys(scenario: Scenario) -> set[str]:
    """The captures the scenario's ``pcap`` checks read (:func:`lab.scenario.checks.pcap_key`)."""
    return {
        verdicts.pcap_key(check.link, capture_point(check.metric or ""))
        for check in scenario.checks
        if check.kind is CheckKind.PCAP and check.link is not None
    }


def _not_started(scenario: Scenario, error: str) -> ScenarioResult:
    return ScenarioResult(
        name=scenario.name,
        description=scenario.description,
        file=scenario.file,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        duration=0.0,
        error=f"not started: {error}",
    )


def _variable(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def lab_variables(lab: Lab) -> dict[str, str]:
    """``${RUN_ID}`` (fresh per scenario) and ``${IP_<service>}`` (its first container's
    IPv4 address; dashes and dots as underscores: ``${IP_udp_listener}``,
    ``${IP_client_2}`` for a replica)."""
    variables = {"RUN_ID": secrets.token_hex(4)}
    for service in lab.services:
        variables[f"IP_{_variable(service)}"] = lab.ip(service)
    for instance in lab.topology().instances:
        for name in {instance.key, instance.name} - {instance.service}:
            variables[f"IP_{_variable(name)}"] = lab.ip(instance.key)
    return variables


def placeholder_variables(services: Sequence[str]) -> dict[str, str]:
    """The same names with placeholder values, to validate files without a running lab."""
    names = ["RUN_ID", *(f"IP_{_variable(service)}" for service in services)]
    return {name: name for name in names}


def _target_names(lab: Lab) -> list[str]:
    """What a scenario may name: each service and, while the lab runs, each ``service.N``."""
    try:
        return list(lab.topology().target_names())
    except LabError:
        return list(lab.services)


def run_files(
    lab: Lab,
    paths: Sequence[Path],
    *,
    results_root: Path,
    run_id: str | None = None,
    progress: Progress = _quiet,
    capture: bool = False,
    seed: int | None = None,
) -> RunReport:
    """Validate every file first (nothing runs if one is invalid), run them, write reports
    (results.json, junit.xml, report.html); with ``capture``, keep a pcap per shaped
    link under ``pcap/``; ``seed`` replaces every scenario's ``seed:``."""
    run_id = run_id or new_run_id()
    labels = [_label(path, lab.repo_root) for path in paths]
    names = _target_names(lab)
    placeholders = placeholder_variables(names)
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for path, label in zip(paths, labels, strict=True):
        try:
            scenarios.append(
                load_scenario(path, label=label, services=names, variables=placeholders, seed=seed)
            )
        except ScenarioError as exc:
            problems += exc.problems
    if problems:
        raise ScenarioError(problems)
    titles = [scenario.name for scenario in scenarios]
    if len(set(titles)) != len(titles):
        raise ScenarioError([f"scenario names must be unique in one run: {', '.join(titles)}"])
    folder = results_root / run_id
    runner = ScenarioRunner(lab, folder=folder, progress=progress, capture=capture)
    report = RunReport(run_id=run_id, folder=folder)
    for path, label in zip(paths, labels, strict=True):
        # Built again just before it runs: a fresh ${RUN_ID}, and addresses as they are
        # now (an earlier scenario's restart may have moved a service).
        try:
            variables = lab_variables(lab)
        except LabError as exc:
            report.results.append(_not_started(scenarios[len(report.results)], str(exc)))
            continue
        scenario = load_scenario(path, label=label, services=names, variables=variables, seed=seed)
        report.results.append(runner.run(scenario))
    report.json_path, report.junit_path = write_reports(
        folder, run_id=run_id, project=lab.project, results=report.results
    )
    # Imported here: lab.report.page imports lab.scenario (its timeline reads results),
    # whose package imports this module.
    from lab.report.page import write_report  # noqa: PLC0415

    try:
        report.report_path = write_report(folder, config=lab.config.report)
    except ReportError as exc:
        progress(f"warning: report.html not written: {exc}")
    shown = [report.json_path, report.junit_path, report.report_path]
    progress("reports: " + " ".join(str(path) for path in shown if path is not None))
    return report
