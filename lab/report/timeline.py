"""A scenario's timeline: steps, faults, shaping changes and checks on one time axis.

Times are seconds since the scenario's first step started (the runner's clock,
``StepRecord.started``). Built from :class:`~lab.report.results.ScenarioEntry`,
i.e. from ``results.json``, so it can be drawn again offline; :func:`from_result`
takes a :class:`~lab.scenario.report.ScenarioResult` straight from the runner.

* **steps** become spans, one lane each where they overlap (parallel groups,
  background steps); a step's verdict is its implicit ``exits N`` check when it
  has one, else whether it ran without error.
* **shaping**: a scenario's ``links`` are in force from before the first step
  (time 0); ``shape``, ``unshape``, ``partition`` and ``heal`` faults at their
  application time.
* **faults**: the other fault actions (kill, restart, pause, ...); one that was
  not applied has no time and is listed, not drawn.
* **checks**: an implicit exit-code check sits at its step's end; every other
  check at the end of the steps, when the runner evaluates them (polled checks
  may be decided a little later: ``within``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from lab.report.results import ScenarioEntry, parse_scenario
from lab.scenario.report import ScenarioResult, scenario_json

SHAPING_ACTIONS: Final = frozenset({"shape", "unshape", "partition", "heal"})


class Verdict(StrEnum):
    OK = "ok"
    FAILED = "failed"
    NEUTRAL = "neutral"  # nothing was asked of it


class MarkKind(StrEnum):
    SHAPING = "shaping"
    FAULT = "fault"
    CHECK = "check"


@dataclass(frozen=True, kw_only=True)
class Span:
    """One step, from its start to its end."""

    name: str
    service: str
    start: float
    end: float
    exit_code: int | None
    timed_out: bool
    error: str | None
    verdict: Verdict
    lane: int = 0

    @property
    def summary(self) -> str:
        if self.error is not None:
            return f"did not finish: {self.error}"
        status = "timed out" if self.timed_out else f"exit {self.exit_code}"
        return f"{status} after {self.end - self.start:.2f} s"


@dataclass(frozen=True, kw_only=True)
class Mark:
    """Something that happened at one moment (``at`` None: it never happened)."""

    kind: MarkKind
    at: float | None
    label: str
    detail: str
    verdict: Verdict


@dataclass(frozen=True, kw_only=True)
class Timeline:
    scenario: str
    spans: tuple[Span, ...]
    marks: tuple[Mark, ...]
    origin: float | None  # Unix time of 0
    origin_exact: bool  # False: started_at stood in (see lab.report.results)

    @property
    def lanes(self) -> int:
        return 1 + max((span.lane for span in self.spans), default=0)

    @property
    def start(self) -> float:
        times = [span.start for span in self.spans] + [m.at for m in self.marks if m.at is not None]
        return min([0.0, *times])

    @property
    def end(self) -> float:
        times = [span.end for span in self.spans] + [m.at for m in self.marks if m.at is not None]
        return max([0.0, *times])

    def rows(self) -> list[tuple[float | None, str, str, str, Verdict]]:
        """Every item as ``(time, kind, label, detail, verdict)``, by time (untimed last)."""
        rows: list[tuple[float | None, str, str, str, Verdict]] = []
        for span in self.spans:
            label = f"{span.name} on {span.service}"
            rows.append((span.start, "step", label, span.summary, span.verdict))
        rows += [(m.at, str(m.kind), m.label, m.detail, m.verdict) for m in self.marks]
        order = {"shaping": 0, "fault": 1, "step": 2, "check": 3}
        return sorted(
            rows,
            key=lambda row: (row[0] is None, row[0] or 0.0, order.get(row[1], 9)),
        )


def _lanes(spans: list[tuple[float, float]]) -> list[int]:
    """Lane per span (in start order): the lowest lane free at its start."""
    ends: list[float] = []
    lanes: list[int] = []
    for start, end in spans:
        for lane, busy_until in enumerate(ends):
            if busy_until <= start:
                ends[lane] = end
                lanes.append(lane)
                break
        else:
            ends.append(end)
            lanes.append(len(ends) - 1)
    return lanes


def build_timeline(scenario: ScenarioEntry) -> Timeline:
    """The timeline of one scenario entry of ``results.json``."""
    exit_checks = {
        check.name: check
        for check in scenario.checks
        if check.implicit and check.kind == "exit_code"
    }
    ordered = sorted(scenario.steps, key=lambda step: step.started)
    lanes = _lanes([(step.started, step.end) for step in ordered])
    spans: list[Span] = []
    marks: list[Mark] = []
    step_ends: dict[str, float] = {}
    for step, lane in zip(ordered, lanes, strict=True):
        prefix = f"step {step.name} exits "
        verdict_check = next(
            (check for name, check in exit_checks.items() if name.startswith(prefix)), None
        )
        if verdict_check is not None:
            verdict = Verdict.OK if verdict_check.passed else Verdict.FAILED
        else:
            verdict = Verdict.NEUTRAL if step.error is None else Verdict.FAILED
        spans.append(
            Span(
                name=step.name,
                service=step.service,
                start=step.started,
                end=step.end,
                exit_code=step.exit_code,
                timed_out=step.timed_out,
                error=step.error,
                verdict=verdict,
                lane=lane,
            )
        )
        step_ends[step.name] = step.end
    for link in scenario.links:
        marks.append(
            Mark(
                kind=MarkKind.SHAPING,
                at=0.0,
                label=f"shaped {link}",
                detail="in force from before the first step",
                verdict=Verdict.NEUTRAL,
            )
        )
    for fault in scenario.faults:
        word = fault.action.split(" ", 1)[0]
        kind = MarkKind.SHAPING if word in SHAPING_ACTIONS else MarkKind.FAULT
        if fault.error is not None:
            detail, verdict = fault.error, Verdict.FAILED
        elif fault.applied_at is None:
            detail, verdict = "not applied", Verdict.FAILED
        else:
            detail, verdict = f"planned at {fault.at:g} s", Verdict.OK
        marks.append(
            Mark(kind=kind, at=fault.applied_at, label=fault.action, detail=detail, verdict=verdict)
        )
    evaluated = max(step_ends.values(), default=0.0)
    for check in scenario.checks:
        if check.kind == "fault":
            continue  # drawn as the fault itself
        at = evaluated
        if check.implicit and check.kind == "exit_code":
            step_name = check.name.removeprefix("step ").rsplit(" exits ", 1)[0]
            at = step_ends.get(step_name, evaluated)
        marks.append(
            Mark(
                kind=MarkKind.CHECK,
                at=at,
                label=check.name,
                detail=check.detail,
                verdict=Verdict.OK if check.passed else Verdict.FAILED,
            )
        )
    origin, exact = scenario.origin()
    return Timeline(
        scenario=scenario.name,
        spans=tuple(spans),
        marks=tuple(marks),
        origin=origin,
        origin_exact=exact,
    )


def from_result(result: ScenarioResult) -> Timeline:
    """The timeline of a scenario the runner just ran (through its results.json form)."""
    return build_timeline(parse_scenario(scenario_json(result), result.name))
