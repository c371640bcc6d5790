"""Run reports: ``results.json`` and ``junit.xml`` from scenario results (pure builders).

Layout of ``results/<run-id>/``::

    results.json  junit.xml
    <scenario>/captures/<capture>.stdout, <step>.stderr
    <scenario>/logs/<service>.log
    <scenario>/files/<service>/<path>     files compared by same_file
    pcap/<scenario>.<service>-to-<peer>.pcap   with ``--capture`` (lab.scenario.capture)
    pcap/<scenario>.<from>-to-<to>.delivered.pcap   links that ``pcap`` checks read
    report.html   written from all of the above (lab.report.page)
"""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.scenario.checks import CheckResult, FaultRecord, StepRecord

REPORT_VERSION = 1
OUTPUT_LIMIT = 64 * 1024  # characters of a step's stdout/stderr kept inline in results.json


@dataclass(frozen=True, kw_only=True)
class PcapRecord:
    """One capture of a scenario run: the file kept (relative to the run folder), or why
    there is none. ``service``: the namespace it was taken in; ``delivered``: after that
    service's ingress shaping (see :mod:`lab.scenario.capture`)."""

    link: str  # "client -> server", "client -> server (delivered)", "client (all traffic)"
    service: str | None = None
    delivered: bool = False
    file: str | None = None
    size: int = 0
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class ScenarioResult:
    """Everything one scenario run produced."""

    name: str
    description: str
    file: str
    started_at: str  # ISO 8601, UTC
    duration: float
    steps: tuple[StepRecord, ...] = ()
    faults: tuple[FaultRecord, ...] = ()
    checks: tuple[CheckResult, ...] = ()
    links: tuple[str, ...] = ()  # "client -> server: loss=5% (engine nfqueue)"
    pcaps: tuple[PcapRecord, ...] = ()
    error: str | None = None  # the run itself broke (shaping failed, lab not up, ...)
    clock_origin: float | None = None  # Unix time the first step started: the timeline's 0
    addresses: Mapping[str, str] = field(default_factory=dict)  # service -> IP during the run
    # container -> the TCP congestion control its new connections used (read at the start)
    congestion: Mapping[str, str] = field(default_factory=dict)
    seed: int | None = None  # the scenario's seed (each link's own is in ``links``)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    def reason(self) -> str:
        """Why it failed, one line per failed check (empty when it passed)."""
        lines = [f"error: {self.error}"] if self.error else []
        if not self.checks and not self.error:
            lines.append("no checks were evaluated")
        lines += [f"{c.name}: {c.detail}" for c in self.failures]
        return "\n".join(lines)


def new_run_id(now: datetime | None = None) -> str:
    """``20261121T101500Z-3f9a``: sortable, and unique between runs in the same second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


def _clip(text: str) -> str:
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "\n[... clipped]"


def step_json(record: StepRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "service": record.service,
        "argv": list(record.argv),
        "timeout": record.timeout,
        "exit_code": record.exit_code,
        "timed_out": record.timed_out,
        "started": round(record.started, 3),
        "duration": round(record.duration, 3),
        "error": record.error,
        "stdout": _clip(record.stdout),
        "stderr": _clip(record.stderr),
    }


def scenario_json(result: ScenarioResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "description": result.description,
        "file": result.file,
        "passed": result.passed,
        "started_at": result.started_at,
        "duration": round(result.duration, 3),
        "error": result.error,
        "reason": result.reason(),
        "links": list(result.links),
        "clock_origin": None if result.clock_origin is None else round(result.clock_origin, 6),
        "addresses": dict(result.addresses),
        "congestion": dict(result.congestion),
        "seed": result.seed,
        "pcaps": [
            {
                "link": pcap.link,
                "service": pcap.service,
                "point": "delivered" if pcap.delivered else "sent",
                "file": pcap.file,
                "bytes": pcap.size,
                "error": pcap.error,
            }
            for pcap in result.pcaps
        ],
        "steps": [step_json(record) for record in result.steps],
        "faults": [
            {
                "at": record.fault.at,
                "action": record.fault.describe(),
                "applied_at": None if record.applied_at is None else round(record.applied_at, 3),
                "error": record.error,
            }
            for record in result.faults
        ],
        "checks": [
            {
                "name": check.name,
                "kind": check.kind,
                "passed": check.passed,
                "detail": check.detail,
                "line": check.line,
                "implicit": check.implicit,
            }
            for check in result.checks
        ],
    }


def results_json(run_id: str, project: str, results: list[ScenarioResult]) -> dict[str, Any]:
    passed = sum(1 for result in results if result.passed)
    return {
        "version": REPORT_VERSION,
        "run_id": run_id,
        "project": project,
        "passed": passed == len(results) and bool(results),
        "summary": {"scenarios": len(results), "passed": passed, "failed": len(results) - passed},
        "scenarios": [scenario_json(result) for result in results],
    }


def junit_xml(run_id: str, results: list[ScenarioResult]) -> str:
    """JUnit XML: one testcase per scenario; a failure's message names the failed checks."""
    failed = sum(1 for result in results if not result.passed)
    suite = ET.Element(
        "testsuite",
        name="socketlab scenarios",
        tests=str(len(results)),
        failures=str(failed),
        errors="0",
        skipped="0",
        time=f"{sum(result.duration for result in results):.3f}",
        timestamp=results[0].started_at if results else "",
        id=run_id,
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname="scenarios",
            name=result.name,
            file=result.file,
            time=f"{result.duration:.3f}",
        )
        if not result.passed:
            reason = result.reason()
            first = reason.splitlines()[0] if reason else "failed"
            failure = ET.SubElement(case, "failure", message=first, type="CheckFailed")
            failure.text = reason
        lines = [f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in result.checks]
        ET.SubElement(case, "system-out").text = "\n".join(lines)
    ET.indent(suite)
    document: str = ET.tostring(suite, encoding="unicode", xml_declaration=True)
    return document + "\n"


def rerun_command(name: str, file: str) -> str:
    """How to run a scenario again with capture: by name when it is a shipped one."""
    shipped = file == f"scenarios/{name}.yaml"
    return f"lab run {name if shipped or not file else file} --capture"


def write_reports(
    folder: Path, *, run_id: str, project: str, results: list[ScenarioResult]
) -> tuple[Path, Path]:
    """Write results.json and junit.xml into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, junit_path = folder / "results.json", folder / "junit.xml"
    json_path.write_text(
        json.dumps(results_json(run_id, project, results), indent=2, ensure_ascii=False) + "\n"
    )
    junit_path.write_text(junit_xml(run_id, results))
    return json_path, junit_path
