"""The runner against a fake lab (no Docker): steps, faults, polling checks, cleanup, reports."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from lab.errors import LabError
from lab.interface import ExecResult
from lab.scenario.errors import ScenarioError
from lab.scenario.loader import parse_text
from lab.scenario.plan import Scenario, build_scenario
from lab.scenario.runner import ScenarioRunner
from lab.scenario.session import resolve_names, run_files

SERVICES = ["server", "client", "udp-listener", "rss-poller"]
WAIT = 5.0  # generous bound on event waits between the fake lab's threads


def plan(text: str) -> Scenario:
    document = parse_text(text, file="scenarios/t.yaml")
    return build_scenario(document, services=SERVICES, variables={"RUN_ID": "r1"})


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    """The shared fake lab, answering the few commands these scenarios run."""
    signal = threading.Event()

    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:  # noqa: PLR0911
        match argv:
            case ["wait-for-kill"]:
                ok = lab.acted["kill"].wait(WAIT)
                return ExecResult(exit_code=0 if ok else 1, stdout="", stderr="")
            case ["wait-signal"]:
                ok = signal.wait(WAIT)
                return ExecResult(exit_code=0 if ok else 1, stdout="", stderr="")
            case ["signal"]:
                signal.set()
                return ExecResult(exit_code=0, stdout="", stderr="")
            case ["echo", *words]:
                return ExecResult(exit_code=0, stdout=" ".join(words) + "\n", stderr="")
            case ["fail"]:
                return ExecResult(exit_code=3, stdout="", stderr="it went wrong\n")
            case ["hang"]:
                return ExecResult(exit_code=124, stdout="", stderr="")
            case ["stat", "-c", "%s", path]:
                size = len(lab.files[f"{service}:{path}"])
                return ExecResult(exit_code=0, stdout=f"{size}\n", stderr="")
        raise AssertionError(f"unexpected command {argv}")

    fake_lab.commands = commands
    return fake_lab


def run(lab: Any, text: str, tmp_path: Path) -> Any:
    runner = ScenarioRunner(lab, folder=tmp_path / "out", progress=lambda _: None)
    return runner.run(plan(text))


def test_fault_fires_during_a_step_and_the_killed_service_is_brought_back(
    lab: Any, tmp_path: Path
) -> None:
    result = run(
        lab,
        """\
name: kill
description: kill during a step
steps:
  - {name: w, service: client, run: [wait-for-kill], timeout: 10}
faults:
  - {at: 0.1, kill: server}
checks:
  - {kind: duration, step: w, max: 10}
""",
        tmp_path,
    )
    assert result.passed, result.reason()
    assert result.checks[0].name == "fault at 0.1 s: kill server"
    assert result.faults[0].applied_at is not None
    assert lab.actions == [("kill", "server"), ("start", "server")]  # cleanup revived it
    assert lab.states["server"] == "running"


def test_faults_at_zero_happen_before_the_first_step(lab: Any, tmp_path: Path) -> None:
    result = run(
        lab,
        """\
name: upfront
description: paused from the start
steps:
  - {name: e, service: server, run: [echo, x], timeout: 5}
faults:
  - {at: 0, pause: server}
checks:
  - {kind: exit_code, step: e, equals: 0}
""",
        tmp_path,
    )
    # the step ran against a paused server (the fake refuses it): the pause came first
    assert not result.passed
    assert result.steps[0].error == "server is paused"
    assert result.faults[0].applied_at == 0.0
    assert lab.actions == [("pause", "server"), ("unpause", "server")]


def test_a_fault_counts_from_the_end_of_the_step_it_is_after(lab: Any, tmp_path: Path) -> None:
    result = run(
        lab,
        """\
name: anchored
description: kill once the first step has finished
steps:
  - {name: first, service: client, run: [echo, x], timeout: 5}
  - {name: w, service: client, run: [wait-for-kill], timeout: 10}
faults:
  - {at: 0, after: first, kill: server}
checks:
  - {kind: exit_code, step: w, equals: 0}
""",
        tmp_path,
    )
    assert result.passed, result.reason()
    (fault,) = result.faults
    assert fault.applied_at is not None
    first = result.steps[0]
    assert fault.applied_at >= first.started + first.duration
    assert result.checks[0].name == "fault at 0 s after first: kill server"


def test_a_fault_at_0_after_the_last_step_is_applied_before_the_run_ends(
    lab: Any, tmp_path: Path
) -> None:
    result = run(
        lab,
        """\
name: after-last
description: a fault due as the last step ends
steps:
  - {name: only, service: client, run: [echo, hi], timeout: 5}
faults:
  - {at: 0, after: only, restart: server}
checks:
  - {kind: exit_code, step: only, equals: 0}
""",
        tmp_path,
    )
    assert result.passed, result.reason()
    (fault,) = result.faults
    assert fault.error is None
    assert fault.applied_at is not None
    assert ("restart", "server") in lab.actions


def test_a_fault_the_steps_never_reach_fails_the_scenario(lab: Any, tmp_path: Path) -> None:
    result = run(
        lab,
        """\
name: late
description: fault after the end
steps:
  - {name: e, service: client, run: [echo, hi], timeout: 5, capture: out}
faults:
  - {at: 3600, pause: server}
checks:
  - {kind: stdout_contains, capture: out, text: hi}
""",
        tmp_path,
    )
    assert not result.passed
    assert (
        "fault at 3600 s: pause server: not reached: the steps had finished at" in result.reason()
    )
    assert lab.actions == []  # nothing was paused, so nothing to undo


def test_failing_and_erroring_steps_fail_with_reasons_and_artifacts_are_kept(
    lab: Any, tmp_path: Path
) -> None:
    result = run(
        lab,
        """\
name: bad-steps
description: exit codes
steps:
  - {name: f, service: client, run: [fail], timeout: 5, capture: f-out}
  - {name: h, service: server, run: [hang], timeout: 7}
  - {name: ok, service: client, run: [echo, "${RUN_ID}"], timeout: 5, capture: echoed}
checks:
  - {kind: stdout_contains, capture: echoed, text: r1}
""",
        tmp_path,
    )
    assert not result.passed
    reason = result.reason()
    assert "step f exits 0: exit 3, expected 0: it went wrong" in reason
    assert "step h exits 0: exit 124, expected 0 (timed out after 7 s)" in reason
    assert "echoed" not in reason
    folder = tmp_path / "out" / "bad-steps"
    assert (folder / "captures" / "echoed.stdout").read_text() == "r1\n"
    assert (folder / "captures" / "f-out.stderr").read_text() == "it went wrong\n"
    assert sorted(p.name for p in (folder / "logs").iterdir()) == sorted(
        f"{s}.log" for s in SERVICES
    )


def test_parallel_steps_run_together(lab: Any, tmp_path: Path) -> None:
    # `a` exits 0 only if `b` runs while it waits: run one after the other, it would fail.
    result = run(
        lab,
        """\
name: par
description: parallel group
steps:
  - {name: a, service: client, run: [wait-signal], timeout: 10, parallel: g}
  - {name: b, service: server, run: [signal], timeout: 10, parallel: g}
  - {name: c, service: client, run: [echo, c], timeout: 10}
checks:
  - {kind: exit_code, step: c, equals: 0}
""",
        tmp_path,
    )
    assert result.passed, result.reason()
    assert [record.name for record in result.steps] == ["a", "b", "c"]
    assert result.steps[2].started >= result.steps[0].started + result.steps[0].duration


def test_logs_check_is_polled_until_it_holds(lab: Any, tmp_path: Path) -> None:
    text = """\
name: poll
description: logs appear later
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5}
checks:
  - {kind: stdout_contains, logs: rss-poller, text: "Bulletin r1", count: 1, within: 20}
"""
    reads = 0

    def slow_logs(service: str, **options: Any) -> str:
        nonlocal reads
        reads += 1
        return "Bulletin r1 | link\n" if reads >= 3 else ""

    lab.logs = slow_logs
    result = run(lab, text, tmp_path)
    assert result.passed, result.reason()
    assert reads >= 3


def test_same_file_reads_both_sides_and_keeps_copies(lab: Any, tmp_path: Path) -> None:
    lab.files = {"server:/srv/a.txt": b"one\ntwo\n", "client:/tmp/r1/a.txt": b"one\n2\n"}
    result = run(
        lab,
        """\
name: files
description: differing files
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5}
checks:
  - {kind: same_file, a: "server:/srv/a.txt", b: "client:/tmp/r1/a.txt"}
  - {kind: same_file, a: "server:/srv/a.txt", b: "client:/nope"}
""",
        tmp_path,
    )
    assert not result.passed
    reason = result.reason()
    assert "files differ: sha256" in reason
    assert "first difference at byte 4" in reason
    assert "client:/nope: sha256sum client:/nope failed" in reason
    copy = tmp_path / "out" / "files" / "files" / "client" / "tmp" / "r1" / "a.txt"
    assert copy.read_bytes() == b"one\n2\n"


def test_a_lab_that_is_not_healthy_fails_the_scenario_without_running_steps(
    lab: Any, tmp_path: Path
) -> None:
    lab.states["server"] = "exited"
    result = run(
        lab,
        """\
name: down
description: lab down
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5}
checks:
  - {kind: exit_code, step: e, equals: 0}
""",
        tmp_path,
    )
    assert not result.passed
    assert result.error == "not healthy: server"
    assert lab.execs == []


GOOD = """\
name: good
description: passes
steps:
  - {name: e, service: client, run: [echo, "hello ${IP_client}"], timeout: 5, capture: out}
checks:
  - {kind: stdout_contains, capture: out, text: hello 10.0.0.3}
"""
BAD = """\
name: bad
description: fails on purpose
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5, capture: out}
checks:
  - {kind: stdout_contains, capture: out, text: never}
"""


def test_run_files_writes_reports_that_list_every_scenario(lab: Any, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(BAD)
    paths = resolve_names(["good", str(tmp_path / "bad.yaml")], tmp_path)
    report = run_files(lab, paths, results_root=tmp_path / "results", run_id="r")
    assert not report.passed
    assert report.folder == tmp_path / "results" / "r"
    document = json.loads((report.folder / "results.json").read_text())
    assert [(s["name"], s["passed"]) for s in document["scenarios"]] == [
        ("good", True),
        ("bad", False),
    ]
    assert "'never' found 0 time(s)" in document["scenarios"][1]["reason"]
    junit = ET.parse(report.folder / "junit.xml").getroot()  # noqa: S314 - our own output
    assert [case.get("name") for case in junit.iter("testcase")] == ["good", "bad"]


def test_run_files_refuses_everything_when_one_file_is_invalid(lab: Any, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text(GOOD.replace("timeout: 5", "timeout: soon"))
    with pytest.raises(ScenarioError) as caught:
        run_files(lab, [tmp_path / "good.yaml", tmp_path / "broken.yaml"], results_root=tmp_path)
    assert caught.value.problems == [
        "broken.yaml:4: steps[0].timeout: 'soon' is not a number"  # named relative to the checkout
    ]
    assert lab.execs == []


def test_unknown_scenario_names_are_listed(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    with pytest.raises(ScenarioError, match=r"no scenario 'nope' \(known: good\)"):
        resolve_names(["nope"], tmp_path)


def test_a_scenario_that_cannot_start_is_reported_not_skipped(lab: Any, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)

    def no_address(service: str) -> str:
        raise LabError(f"{service} has no address on the lab network")

    lab.ip = no_address
    report = run_files(lab, [tmp_path / "good.yaml"], results_root=tmp_path, run_id="r")
    assert not report.passed
    (result,) = report.results
    assert result.error == "not started: server has no address on the lab network"
    document = json.loads((tmp_path / "r" / "results.json").read_text())
    assert document["scenarios"][0]["passed"] is False
