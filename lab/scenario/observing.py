"""What a scenario's checks look at, read from the lab, and the checks judged on it:
captured output, status URLs, logs, file digests and link pcaps, with a URL or a
log read again until its check holds or the check's ``within`` deadline passes.
The verdicts themselves are pure (:mod:`lab.scenario.checks`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Final, cast

from lab.config import ScenarioConfig
from lab.errors import LabError, NotReady
from lab.interface import Lab
from lab.progress import Progress
from lab.report.analysis import analyze_file
from lab.report.errors import PcapError
from lab.report.metrics import capture_point
from lab.scenario import checks as verdicts
from lab.scenario.checks import (
    CheckResult,
    FaultRecord,
    FileFacts,
    Observations,
    PcapFacts,
    StepRecord,
    TextFacts,
)
from lab.scenario.plan import Check, CheckKind, FileRef, Scenario, Source
from lab.scenario.report import PcapRecord
from lab.waiting import Stream, wait_for

log = logging.getLogger("lab.scenario")

_URL_FETCH: Final = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as answer:\n"
    "    sys.stdout.write(answer.read().decode('utf-8', 'replace'))\n"
)


def lab_addresses(lab: Lab) -> dict[str, str]:
    """Service -> IP as the run starts (names pcap directions in the report)."""
    found: dict[str, str] = {}
    for service in lab.services:
        try:
            found[service] = lab.ip(service)
        except LabError as exc:  # a stopped service has none; the run says so elsewhere
            log.info("event=no_address service=%s error=%s", service, exc)
    return found


def pcap_keys(scenario: Scenario) -> set[str]:
    """The captures the scenario's ``pcap`` checks read (:func:`lab.scenario.checks.pcap_key`)."""
    return {
        verdicts.pcap_key(check.link, capture_point(check.metric or ""))
        for check in scenario.checks
        if check.kind is CheckKind.PCAP and check.link is not None
    }


def read_logs(lab: Lab, service: str, *, since: float, stream: Stream = "both") -> TextFacts:
    """A service's log since ``since`` (Unix time), or why it could not be read."""
    try:
        return TextFacts(text=lab.logs(service, since=since, stream=stream))
    except LabError as exc:
        return TextFacts(text=None, error=str(exc))


class Observer:
    """Reads what the checks need from one lab and evaluates them; pcaps are found
    under ``folder`` (the run's results folder)."""

    def __init__(self, lab: Lab, *, config: ScenarioConfig, folder: Path) -> None:
        self.lab = lab
        self.config = config
        self.folder = folder

    def pcap_facts(
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

    def read_url(self, source: Source) -> TextFacts:
        """A GET of the source's URL from inside the lab (its ``via``, else the client)."""
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

    def read_file(self, ref: FileRef) -> FileFacts:
        """A file's digest and size, and its content when small enough to keep."""
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

    def text(self, source: Source, *, since: float) -> TextFacts:
        """A check's text as it is now: a URL's body, or a log since ``since``."""
        if source.kind == "url":
            return self.read_url(source)
        # The schema admits only stdout, stderr and both.
        return read_logs(self.lab, source.name, since=since, stream=cast(Stream, source.stream))

    def evaluate(
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
                        files[str(ref)] = self.read_file(ref)
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
                texts[check.source.key] = self.text(check.source, since=since)
            seen = Observations(steps=steps, texts=texts, files=files, pcaps=pcaps)
            last[:] = [verdicts.evaluate(check, seen)]
            return last[0] if last[0].passed else None

        try:
            return wait_for(
                holds, timeout=check.within, what=check.name, interval=self.config.check_poll
            )
        except NotReady:
            return last[0]  # the verdict at the deadline, with its reason
