"""A ``lab run`` of several scenario files: finding the files, validating every one
before anything runs, making the network the declared one, recording the run on
the lab's reaper (which undoes its faults if this process dies), running each
scenario with fresh variables (``${RUN_ID}``, ``${IP_<service>}``) and writing
results.json, junit.xml and report.html (a report that cannot be built is a
warning; the run's results stand).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from lab.errors import LabError
from lab.interface import Lab, Reaper
from lab.netstate import NetworkRefused, prepare_network
from lab.progress import Progress
from lab.report.errors import ReportError
from lab.scenario.errors import ScenarioError
from lab.scenario.plan import Scenario, load_scenario
from lab.scenario.report import ScenarioResult, new_run_id, write_reports
from lab.scenario.runner import ScenarioRunner, log_progress

SCENARIO_SUFFIX: Final = ".yaml"


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
    progress: Progress = log_progress,
    capture: bool = False,
    keep_network: bool = False,
    reaper: Reaper | None = None,
    seed: int | None = None,
) -> RunReport:
    """Validate every file first (nothing runs if one is invalid), make the network the
    declared one (refused with ``keep_network`` when something was left on it), record
    the run on the lab with a reaper of its own (unless ``reaper`` is given: a pytest
    session's), run them, write reports (results.json, junit.xml, report.html); with
    ``capture``, keep a pcap per shaped link under ``pcap/``; ``seed`` replaces every
    scenario's ``seed:``."""
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
    prepared = _prepare_first(lab, run_id=run_id, keep_network=keep_network, progress=progress)
    own = reaper is None and lab.config.reaper
    if own:
        try:
            reaper = lab.start_reaper("run", run_id=run_id, what="lab run " + " ".join(titles))
        except LabError as exc:
            progress(
                f"warning: this run has no reaper ({exc}); if it dies, the next run undoes its faults"
            )
    try:
        report = _run_scenarios(
            lab,
            paths,
            labels,
            names,
            scenarios,
            runner=ScenarioRunner(
                lab,
                folder=results_root / run_id,
                progress=progress,
                capture=capture,
                run_id=run_id,
                keep_network=keep_network,
                reaper=reaper,
                prepared=prepared,
            ),
            run_id=run_id,
            seed=seed,
        )
    finally:
        if own and reaper is not None:
            reaper.release()
    folder = report.folder
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


def _prepare_first(lab: Lab, *, run_id: str, keep_network: bool, progress: Progress) -> bool:
    """The network made the declared one before anything runs: a refusal stops the run;
    a lab that cannot be read now is left to each scenario (whose error it becomes)."""
    try:
        prepare_network(lab, own_run=run_id, keep_network=keep_network, progress=progress)
    except NetworkRefused:
        raise
    except LabError as exc:
        progress(f"warning: cannot read the lab's network now: {exc}")
        return False
    return True


def _run_scenarios(
    lab: Lab,
    paths: Sequence[Path],
    labels: Sequence[str],
    names: Sequence[str],
    scenarios: Sequence[Scenario],
    *,
    runner: ScenarioRunner,
    run_id: str,
    seed: int | None = None,
) -> RunReport:
    report = RunReport(run_id=run_id, folder=runner.folder)
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
    return report
