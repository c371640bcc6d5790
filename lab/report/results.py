"""``results.json`` -> typed, frozen records, so a report can be rebuilt offline.

The document is what :func:`lab.scenario.report.results_json` writes. Reading
is strict about types (a wrong one is a :class:`ResultsError` naming where) and
lenient about optional keys added later:

* ``clock_origin`` (per scenario): Unix time of the timeline's 0, the first step's
  start. Without it, ``started_at`` (whole seconds, before shaping) stands in and
  the timeline is marked approximate.
* ``addresses`` (per scenario): service -> IP address, to name pcap directions.
* ``service`` and ``point`` (per pcap): the namespace a capture was taken in and
  whether it is what the link ``sent`` or ``delivered`` (lab.scenario.capture).
  Without them, the service is the part of ``link`` before `` -> ``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from lab.report.errors import ResultsError

T = TypeVar("T")
RESULTS_FILE = "results.json"


@dataclass(frozen=True, kw_only=True)
class StepEntry:
    name: str
    service: str
    argv: tuple[str, ...]
    timeout: float
    exit_code: int | None
    timed_out: bool
    started: float
    duration: float
    error: str | None
    stdout: str
    stderr: str

    @property
    def end(self) -> float:
        return self.started + self.duration


@dataclass(frozen=True, kw_only=True)
class FaultEntry:
    at: float
    action: str
    applied_at: float | None
    error: str | None


@dataclass(frozen=True, kw_only=True)
class CheckEntry:
    name: str
    kind: str
    passed: bool
    detail: str
    line: int
    implicit: bool


@dataclass(frozen=True, kw_only=True)
class PcapEntry:
    link: str
    file: str | None
    bytes: int
    error: str | None
    service: str | None = None
    point: str = "sent"


@dataclass(frozen=True, kw_only=True)
class ScenarioEntry:
    name: str
    description: str
    file: str
    passed: bool
    started_at: str
    duration: float
    error: str | None
    reason: str
    links: tuple[str, ...]
    pcaps: tuple[PcapEntry, ...]
    steps: tuple[StepEntry, ...]
    faults: tuple[FaultEntry, ...]
    checks: tuple[CheckEntry, ...]
    clock_origin: float | None = None
    addresses: Mapping[str, str] | None = None

    def origin(self) -> tuple[float | None, bool]:
        """Unix time of the timeline's 0 and whether it is exact (see the module docstring)."""
        if self.clock_origin is not None:
            return self.clock_origin, True
        try:
            return datetime.fromisoformat(self.started_at).timestamp(), False
        except ValueError:
            return None, False


@dataclass(frozen=True, kw_only=True)
class RunEntry:
    run_id: str
    project: str
    passed: bool
    scenarios: tuple[ScenarioEntry, ...]


class _Reader:
    """Typed access to one JSON object, naming the path in every error."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ResultsError(f"{where}: expected an object, got {type(data).__name__}")
        self.data = data
        self.where = where

    def _fail(self, key: str, wanted: str) -> ResultsError:
        got = self.data.get(key, None)
        shown = "missing" if key not in self.data else f"{type(got).__name__} {got!r:.40}"
        return ResultsError(f"{self.where}.{key}: expected {wanted}, got {shown}")

    def text(self, key: str, *, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self._fail(key, "a string or null")
        return value

    def number(self, key: str, *, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "a number")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, "a number or null")
        return float(value)

    def integer(self, key: str, *, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer")
        return value

    def optional_integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise self._fail(key, "an integer or null")
        return value

    def flag(self, key: str, *, default: bool | None = None) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def items(self, key: str) -> list[_Reader]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return [_Reader(item, f"{self.where}.{key}[{index}]") for index, item in enumerate(value)]

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self._fail(key, "an object of strings")
        return dict(value)


def _step(item: _Reader) -> StepEntry:
    return StepEntry(
        name=item.text("name"),
        service=item.text("service"),
        argv=item.strings("argv"),
        timeout=item.number("timeout", default=0.0),
        exit_code=item.optional_integer("exit_code"),
        timed_out=item.flag("timed_out", default=False),
        started=item.number("started", default=0.0),
        duration=item.number("duration", default=0.0),
        error=item.optional_text("error"),
        stdout=item.text("stdout", default=""),
        stderr=item.text("stderr", default=""),
    )


def parse_scenario(data: Any, where: str = "scenario") -> ScenarioEntry:
    """One entry of ``scenarios`` (as :func:`lab.scenario.report.scenario_json` writes it)."""
    item = _Reader(data, where)
    return ScenarioEntry(
        name=item.text("name"),
        description=item.text("description", default=""),
        file=item.text("file", default=""),
        passed=item.flag("passed"),
        started_at=item.text("started_at", default=""),
        duration=item.number("duration", default=0.0),
        error=item.optional_text("error"),
        reason=item.text("reason", default=""),
        links=item.strings("links"),
        pcaps=tuple(
            PcapEntry(
                link=pcap.text("link"),
                file=pcap.optional_text("file"),
                bytes=pcap.integer("bytes", default=0),
                error=pcap.optional_text("error"),
                service=pcap.optional_text("service"),
                point=pcap.text("point", default="sent"),
            )
            for pcap in item.items("pcaps")
        ),
        steps=tuple(_step(step) for step in item.items("steps")),
        faults=tuple(
            FaultEntry(
                at=fault.number("at", default=0.0),
                action=fault.text("action"),
                applied_at=fault.optional_number("applied_at"),
                error=fault.optional_text("error"),
            )
            for fault in item.items("faults")
        ),
        checks=tuple(
            CheckEntry(
                name=check.text("name"),
                kind=check.text("kind"),
                passed=check.flag("passed"),
                detail=check.text("detail", default=""),
                line=check.integer("line", default=0),
                implicit=check.flag("implicit", default=False),
            )
            for check in item.items("checks")
        ),
        clock_origin=item.optional_number("clock_origin"),
        addresses=item.string_map("addresses"),
    )


def parse_results(data: Any, where: str = "results.json") -> RunEntry:
    """The whole document; ResultsError names the first field that is wrong."""
    run = _Reader(data, where)
    return RunEntry(
        run_id=run.text("run_id"),
        project=run.text("project", default=""),
        passed=run.flag("passed"),
        scenarios=tuple(
            parse_scenario(scenario.data, scenario.where) for scenario in run.items("scenarios")
        ),
    )


def load_results(folder: Path) -> RunEntry:
    """``folder/results.json``, parsed; ResultsError when it is missing or malformed."""
    path = folder / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ResultsError(f"{path}: not JSON: {exc}") from exc
    return parse_results(data, str(path))
