"""The timeline model and results.json parsing: from what the runner records to one time axis."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lab.report.errors import ResultsError
from lab.report.results import load_results, parse_results, parse_scenario
from lab.report.timeline import MarkKind, Verdict, build_timeline, from_result
from lab.scenario.checks import CheckResult, FaultRecord, StepRecord
from lab.scenario.plan import Fault, FileRef
from lab.scenario.report import ScenarioResult, results_json
from lab.shaping.spec import LinkSpec

ORIGIN = 1_800_000_000.0


def step(name: str, started: float, duration: float, **fields: Any) -> StepRecord:
    values: dict[str, Any] = {"service": "client", "argv": ("x",), "timeout": 30.0, "exit_code": 0}
    return StepRecord(name=name, started=started, duration=duration, **(values | fields))


def check(
    name: str, passed: bool, *, kind: str = "json_field", implicit: bool = False
) -> CheckResult:
    return CheckResult(
        name=name, kind=kind, passed=passed, detail=f"detail of {name}", implicit=implicit
    )


RESULT = ScenarioResult(
    name="chat-partition",
    description="partition and heal",
    file="scenarios/chat-partition.yaml",
    started_at="2027-01-15T08:00:00+00:00",
    duration=12.0,
    steps=(
        step("hub-watch", 0.0, 8.0, service="server", exit_code=None, error="exec failed: boom"),
        step("alice", 0.1, 5.0),
        step("bob", 0.2, 7.0, exit_code=1),
        step("after", 8.5, 1.0, exit_code=124),
    ),
    faults=(
        FaultRecord(
            fault=Fault(at=1.0, action="partition", services=("client", "server")), applied_at=1.01
        ),
        FaultRecord(
            fault=Fault(at=2.0, action="kill", services=("udp-listener",)), applied_at=2.02
        ),
        FaultRecord(
            fault=Fault(
                at=3.0, action="shape", services=("server", "client"), spec=LinkSpec(delay=0.05)
            ),
            applied_at=3.0,
        ),
        FaultRecord(
            fault=Fault(at=30.0, action="heal", services=()), error="not reached: steps done"
        ),
    ),
    checks=(
        check("step alice exits 0", True, kind="exit_code", implicit=True),
        check("step bob exits 0", False, kind="exit_code", implicit=True),
        check("step after exits 124", True, kind="exit_code", implicit=True),
        check("fault at 1 s: partition client server", True, kind="fault", implicit=True),
        check("hub saw both", False),
    ),
    links=("client -> server: delay=10ms (engine nfqueue)",),
)


def scenario_document(**extra: Any) -> dict[str, Any]:
    document = results_json("run-1", "proj", [RESULT])
    document["scenarios"][0].update(extra)
    return document


def test_steps_are_spans_in_lanes_with_verdicts() -> None:
    timeline = build_timeline(parse_results(scenario_document()).scenarios[0])
    spans = {span.name: span for span in timeline.spans}
    assert [span.name for span in timeline.spans] == ["hub-watch", "alice", "bob", "after"]
    assert (spans["hub-watch"].lane, spans["alice"].lane, spans["bob"].lane) == (0, 1, 2)
    assert spans["after"].lane == 0  # hub-watch ended at 8.0: its lane is free again
    assert timeline.lanes == 3
    assert spans["alice"].verdict is Verdict.OK
    assert spans["bob"].verdict is Verdict.FAILED
    assert spans["after"].verdict is Verdict.OK  # it was expected to time out
    assert spans["hub-watch"].verdict is Verdict.FAILED  # no exit check, but an error
    assert spans["hub-watch"].summary == "did not finish: exec failed: boom"
    assert spans["after"].summary == "timed out after 1.00 s"
    assert (spans["bob"].start, spans["bob"].end) == (0.2, 7.2)


def test_shaping_faults_and_checks_are_marks_on_the_same_axis() -> None:
    timeline = build_timeline(parse_results(scenario_document()).scenarios[0])
    marks = [(m.kind, m.at, m.label, m.verdict) for m in timeline.marks]
    assert (
        MarkKind.SHAPING,
        0.0,
        "shaped client -> server: delay=10ms (engine nfqueue)",
        Verdict.NEUTRAL,
    ) in marks
    assert (MarkKind.SHAPING, 1.01, "partition client server", Verdict.OK) in marks
    assert (MarkKind.FAULT, 2.02, "kill udp-listener", Verdict.OK) in marks
    shape = next(m for m in timeline.marks if m.label.startswith("shape server -> client"))
    assert (shape.kind, shape.at) == (MarkKind.SHAPING, 3.0)
    heal = next(m for m in timeline.marks if m.label == "heal all")
    assert (heal.at, heal.verdict, heal.detail) == (None, Verdict.FAILED, "not reached: steps done")
    checks = {m.label: m for m in timeline.marks if m.kind is MarkKind.CHECK}
    assert checks["step alice exits 0"].at == pytest.approx(5.1)  # at its step's end
    assert checks["hub saw both"].at == pytest.approx(9.5)  # after the steps
    assert "fault at 1 s: partition client server" not in checks  # drawn as the fault
    assert (timeline.start, timeline.end) == (0.0, pytest.approx(9.5))


def test_rows_are_in_time_order_with_untimed_last() -> None:
    rows = build_timeline(parse_results(scenario_document()).scenarios[0]).rows()
    times = [row[0] for row in rows]
    assert times[-1] is None
    timed = [t for t in times if t is not None]
    assert timed == sorted(timed)
    assert rows[0][1] == "shaping"  # at 0, shaping comes before the step starting then


def test_the_clock_origin_is_exact_when_recorded_else_approximate() -> None:
    exact = build_timeline(parse_results(scenario_document(clock_origin=ORIGIN)).scenarios[0])
    assert (exact.origin, exact.origin_exact) == (ORIGIN, True)
    rough = build_timeline(parse_results(scenario_document()).scenarios[0])
    assert rough.origin == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert rough.origin_exact is False
    assert (
        build_timeline(parse_results(scenario_document(started_at="later")).scenarios[0]).origin
        is None
    )


def test_from_result_matches_the_results_json_path() -> None:
    direct = from_result(RESULT)
    offline = build_timeline(parse_results(scenario_document()).scenarios[0])
    assert direct.spans == offline.spans
    assert direct.marks == offline.marks


def test_a_scenario_that_never_started_has_an_empty_timeline() -> None:
    never = ScenarioResult(
        name="x",
        description="d",
        file="f",
        started_at="2027-01-15T08:00:00+00:00",
        duration=0.0,
        error="not started: lab down",
    )
    timeline = from_result(never)
    assert (timeline.spans, timeline.marks, timeline.lanes) == ((), (), 1)


def test_addresses_are_read_when_present() -> None:
    entry = parse_results(scenario_document(addresses={"client": "172.18.0.3"})).scenarios[0]
    assert entry.addresses == {"client": "172.18.0.3"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"started": "soon"},
            r"scenarios\[0\]\.steps\[1\]\.started: expected a number, got str 'soon'",
            id="step-time",
        ),
        pytest.param(
            {"exit_code": 1.5},
            r"steps\[1\]\.exit_code: expected an integer or null",
            id="exit-code",
        ),
        pytest.param({"argv": "ls -l"}, r"steps\[1\]\.argv: expected a list of strings", id="argv"),
        pytest.param(
            {"name": None}, r"steps\[1\]\.name: expected a string, got NoneType", id="name"
        ),
    ],
)
def test_malformed_results_name_the_field(change: dict[str, Any], message: str) -> None:
    document = scenario_document()
    document["scenarios"][0]["steps"][1].update(change)
    with pytest.raises(ResultsError, match=message) as caught:
        parse_results(document)
    assert "\n" not in str(caught.value)


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"results\.json: No such file"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text("{nope")
    with pytest.raises(ResultsError, match="not JSON"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps(scenario_document()))
    assert load_results(tmp_path).scenarios[0].name == "chat-partition"
    with pytest.raises(ResultsError, match="expected an object, got list"):
        parse_scenario([])


def test_same_file_refs_do_not_matter_to_the_timeline() -> None:
    # A same_file check has no step: it sits at the end with the other checks.
    result = ScenarioResult(
        name="f",
        description="d",
        file="f",
        started_at="",
        duration=1.0,
        steps=(step("fetch", 0.0, 2.0),),
        checks=(
            CheckResult(
                name=f"same file {FileRef(service='a', path='/x')}",
                kind="same_file",
                passed=True,
                detail="ok",
            ),
        ),
    )
    (mark,) = from_result(result).marks
    assert mark.at == 2.0
