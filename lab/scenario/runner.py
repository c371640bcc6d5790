"""Running one scenario plan against a lab, from a healthy lab back to a healthy lab.

:class:`ScenarioRunner` checks the lab is healthy and makes its network the one
the scenario declares (:func:`lab.netstate.prepare_network`), puts its congestion
control and shaped links in place (:mod:`lab.scenario.staging`), starts the
tcpdump helpers (:mod:`lab.scenario.capture`), runs the steps with the fault
timeline (:mod:`lab.scenario.execution`), judges the checks
(:mod:`lab.scenario.observing`), keeps artifacts (:mod:`lab.scenario.artifacts`)
and undoes what it did. A run of several files is :mod:`lab.scenario.session`.
Its timeouts come from ``lab.config.scenario`` (:class:`lab.config.ScenarioConfig`).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from lab.errors import LabError
from lab.interface import Lab, Reaper
from lab.netstate import prepare_network
from lab.progress import Progress
from lab.scenario.artifacts import keep_artifacts, safe_name
from lab.scenario.capture import Capturer, run_targets
from lab.scenario.checks import CheckResult, FaultRecord, FileFacts, StepRecord
from lab.scenario.execution import StepRunner
from lab.scenario.faults import Journal
from lab.scenario.observing import Observer, lab_addresses, pcap_keys
from lab.scenario.plan import Scenario
from lab.scenario.report import PcapRecord, ScenarioResult, rerun_command
from lab.scenario.staging import clean_up, set_congestion, shape_links

log = logging.getLogger("lab.scenario")


def log_progress(message: str) -> None:
    """The progress of a run nobody watches: an info line of the log."""
    log.info("event=scenario_progress %s", message)


class ScenarioRunner:
    """Runs scenarios against one lab, writing artifacts under ``folder/<scenario>/``."""

    def __init__(
        self,
        lab: Lab,
        *,
        folder: Path,
        progress: Progress = log_progress,
        capture: bool = False,
        run_id: str = "",
        keep_network: bool = False,
        reaper: Reaper | None = None,
        prepared: bool = False,
    ) -> None:
        self.lab = lab
        self.config = lab.config.scenario
        self.folder = folder
        self.progress = progress
        self.capture = capture
        self.run_id = run_id
        self.keep_network = keep_network
        self.reaper = reaper
        # The network was made the declared one just before the first scenario.
        self._prepared = prepared
        self._observer = Observer(lab, config=self.config, folder=folder)

    def run(self, scenario: Scenario) -> ScenarioResult:
        """Run one scenario; never raises LabError (it becomes the result's error)."""
        say = self._sayer(scenario)
        started_at = datetime.now(UTC)
        wall = time.time()
        clock = time.monotonic()
        say(f"starting: {scenario.description}")
        results_folder = self.folder / safe_name(scenario.name)
        links: list[str] = []
        steps: list[StepRecord] = []
        faults: list[FaultRecord] = []
        results: list[CheckResult] = []
        files: dict[str, FileFacts] = {}
        pcaps: list[PcapRecord] = []
        capturer = Capturer(self.lab, folder=self.folder, prefix=safe_name(scenario.name))
        error: str | None = None
        origin: float | None = None
        addresses = lab_addresses(self.lab)
        journal = self._journal(scenario)
        congestion: dict[str, str] = {}
        try:
            congestion, links = self._start(scenario, say, journal)
            targets = run_targets(scenario, capture=self.capture)
            if targets:
                capturer.start(targets)
            try:
                steps, faults, origin = StepRunner(
                    self.lab,
                    scenario,
                    config=self.config,
                    results=results_folder,
                    since=wall,
                    say=say,
                ).run(journal)
            finally:
                pcaps = self._stop_capture(capturer, say)
            observed = self._observer.pcap_facts(pcaps, addresses, wanted=pcap_keys(scenario))
            results = self._observer.evaluate(
                scenario, steps, faults, files, pcaps=observed, since=wall, say=say
            )
        except LabError as exc:
            error = str(exc)
            say(f"error: {exc}")
        finally:
            pcaps = pcaps or self._stop_capture(capturer, say)
            keep_artifacts(
                self.lab, scenario, steps, files, folder=results_folder, since=wall, say=say
            )
            try:
                clean_up(self.lab, scenario, say, recover_timeout=self.config.recover_timeout)
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

    def _sayer(self, scenario: Scenario) -> Progress:
        def say(message: str) -> None:
            self.progress(f"[{scenario.name}] {message}")

        return say

    def _journal(self, scenario: Scenario) -> Journal | None:
        reaper = self.reaper
        if reaper is None:
            return None

        def note(entry: dict[str, object]) -> None:
            reaper.note({"scenario": scenario.name, **entry})

        return note

    def _start(
        self, scenario: Scenario, say: Progress, journal: Journal | None
    ) -> tuple[dict[str, str], list[str]]:
        """The lab ready with the scenario's network: congestion in use, the links shaped."""
        self._ready(say)
        congestion = set_congestion(self.lab, scenario, say)
        return congestion, shape_links(self.lab, scenario, say, journal)

    def _ready(self, say: Progress) -> None:
        """The lab healthy, and its network the declared one (scenarios start from it)."""
        self.lab.wait_healthy(timeout=self.config.ready_timeout)
        if not self._prepared:
            prepare_network(
                self.lab, own_run=self.run_id, keep_network=self.keep_network, progress=say
            )
        self._prepared = False

    def _stop_capture(self, capturer: Capturer, say: Progress) -> list[PcapRecord]:
        records = capturer.stop()
        for record in records:
            if record.error is None:
                say(f"capture {record.link}: {record.file} ({record.size} bytes)")
            else:
                say(f"capture {record.link} FAILED: {record.error}")
        return records
