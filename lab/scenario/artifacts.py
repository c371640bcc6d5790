"""What a scenario leaves in its results folder: each step's output, every
container's log and the files its ``same_file`` checks read, under names made
safe for a path (nothing a scenario names can escape the folder).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from lab.errors import LabError
from lab.interface import Lab
from lab.progress import Progress
from lab.scenario.checks import FileFacts, StepRecord
from lab.scenario.observing import read_logs
from lab.scenario.plan import Scenario

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """``name`` as one path part: runs of other characters as ``_``, never empty."""
    return _SAFE_NAME.sub("_", name).strip("_") or "_"


def keep_artifacts(
    lab: Lab,
    scenario: Scenario,
    steps: Sequence[StepRecord],
    files: dict[str, FileFacts],
    *,
    folder: Path,
    since: float,
    say: Progress,
) -> None:
    """Write ``captures/``, ``logs/`` and ``files/`` under ``folder``; a failure is said."""
    try:
        captures = folder / "captures"
        captures.mkdir(parents=True, exist_ok=True)
        names = {step.name: step.capture for step in scenario.steps}
        for record in steps:
            stem = safe_name(names.get(record.name) or record.name)
            (captures / f"{stem}.stdout").write_text(record.stdout)
            (captures / f"{stem}.stderr").write_text(record.stderr)
        logs = folder / "logs"
        logs.mkdir(exist_ok=True)
        for service in _log_names(lab):
            log_text = read_logs(lab, service, since=since)
            (logs / f"{safe_name(service)}.log").write_text(
                log_text.text or f"({log_text.error})\n"
            )
        for ref, file_facts in files.items():
            if file_facts.content is not None:
                service, _, path = ref.partition(":")
                # Only name parts: a ".." in a scenario's path must not escape the folder.
                parts = [
                    safe_name(part)
                    for part in PurePosixPath(path).parts
                    if part not in {"/", ".", ".."}
                ]
                target = folder.joinpath("files", safe_name(service), *parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(file_facts.content)
    except OSError as exc:
        say(f"could not keep artifacts in {folder}: {exc}")


def _log_names(lab: Lab) -> list[str]:
    """Every container's name (each replica's), else the services'."""
    try:
        return [instance.name for instance in lab.topology().instances]
    except LabError:
        return list(lab.services)
