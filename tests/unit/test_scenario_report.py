"""Reports: results.json and junit.xml say which scenario failed, which check, and why."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from lab.scenario.checks import CheckResult, StepRecord
from lab.scenario.report import ScenarioResult, junit_xml, new_run_id, results_json, write_reports


def result(name: str, *checks: tuple[str, bool, str], error: str | None = None) -> ScenarioResult:
    return ScenarioResult(
        name=name,
        description=f"{name} scenario",
        file=f"scenarios/{name}.yaml",
        started_at="2026-11-21T10:00:00+00:00",
        duration=1.5,
        steps=(
            StepRecord(
                name="s", service="client", argv=("x",), timeout=5, exit_code=0, stdout="out"
            ),
        ),
        checks=tuple(
            CheckResult(name=n, kind="same_file", passed=p, detail=d, line=3) for n, p, d in checks
        ),
        error=error,
    )


GOOD = result("good", ("a", True, "exit 0"))
BAD = result("bad", ("exit", True, "exit 0"), ("same file", False, "files differ: sizes 3 vs 4"))


def test_passed_needs_every_check_and_no_error() -> None:
    assert GOOD.passed
    assert not BAD.passed
    assert not result("empty").passed  # no checks: nothing was shown, so no pass
    assert result("empty").reason() == "no checks were evaluated"
    broken = result("broken", ("a", True, "ok"), error="shaping failed")
    assert not broken.passed
    assert broken.reason() == "error: shaping failed"
    assert BAD.reason() == "same file: files differ: sizes 3 vs 4"


def test_results_json_lists_every_scenario_with_its_reason() -> None:
    document = results_json("run-1", "proj", [GOOD, BAD])
    assert document["passed"] is False
    assert document["summary"] == {"scenarios": 2, "passed": 1, "failed": 1}
    assert [s["name"] for s in document["scenarios"]] == ["good", "bad"]
    bad = document["scenarios"][1]
    assert bad["reason"] == "same file: files differ: sizes 3 vs 4"
    assert bad["checks"][1] == {
        "name": "same file",
        "kind": "same_file",
        "passed": False,
        "detail": "files differ: sizes 3 vs 4",
        "line": 3,
        "implicit": False,
    }
    assert bad["steps"][0]["stdout"] == "out"
    json.dumps(document)  # serialisable as is


def test_junit_has_one_testcase_per_scenario_and_failure_says_why() -> None:
    root = ET.fromstring(junit_xml("run-1", [GOOD, BAD]))  # noqa: S314 - our own output
    assert root.tag == "testsuite"
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {"good", "bad"}
    assert cases["good"].find("failure") is None
    failure = cases["bad"].find("failure")
    assert failure is not None
    assert failure.get("message") == "same file: files differ: sizes 3 vs 4"
    system_out = cases["bad"].findtext("system-out") or ""
    assert "FAIL same file: files differ" in system_out
    assert "PASS exit: exit 0" in system_out


def test_write_reports(tmp_path: Path) -> None:
    json_path, junit_path = write_reports(tmp_path / "r", run_id="x", project="p", results=[GOOD])
    assert json.loads(json_path.read_text())["passed"] is True
    assert ET.parse(junit_path).getroot().get("tests") == "1"  # noqa: S314


def test_run_ids_sort_by_time_and_differ() -> None:
    early = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert early.startswith("20260102T030405Z-")
    assert early < new_run_id()
