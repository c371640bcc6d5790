"""TCP congestion control per service against the shared fake lab: what the Compose file
asks, what a scenario or sweep asks for its run, put back after, and read back for reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.congestion import congestion_in_use, ensure_congestion, wanted
from lab.interface import ExecResult
from lab.scenario.faults import apply_fault, congestion_overrides
from lab.scenario.loader import parse_text
from lab.scenario.plan import Fault, build_scenario
from lab.scenario.report import scenario_json
from lab.scenario.runner import ScenarioRunner


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[:1] == ["echo"] or argv[:2] == ["sh", "-c"]:
            return ExecResult(exit_code=0, stdout="ok\n", stderr="")
        raise AssertionError(f"unexpected command {argv}")

    fake_lab.commands = commands
    fake_lab.tcp_congestion = dict.fromkeys(fake_lab.services, "cubic")
    return fake_lab


def test_what_each_container_should_use(lab: Any) -> None:
    topology = lab.topology()
    assert wanted(topology) == dict.fromkeys(lab.names, "cubic")
    assert wanted(topology, {"client": "bbr"}, names=["client", "server"]) == {
        "server": "cubic",
        "client": "bbr",
    }


def test_ensure_sets_it_in_each_namespace_and_reads_back(lab: Any) -> None:
    assert congestion_in_use(lab, ["client"]) == {"client": "bbr"}  # the host's default
    applied = ensure_congestion(lab)
    assert applied == dict.fromkeys(lab.names, "cubic")
    # through a NET_ADMIN helper in the namespace, never the service container
    assert all(net_admin for _, _, net_admin in lab.netkit_runs)
    assert lab.execs == []
    assert congestion_in_use(lab, lab.services) == dict.fromkeys(lab.names, "cubic")


def test_nothing_asked_is_left_alone_unless_reset(lab: Any) -> None:
    lab.tcp_congestion = {}
    assert ensure_congestion(lab) == {}
    lab.congestion["client"] = "bbr"
    assert ensure_congestion(lab, names=["client"], reset=True) == {"client": "default"}
    assert lab.congestion["client"] is None


def test_a_stopped_container_is_reported_not_fatal(lab: Any) -> None:
    lab.states["server"] = "exited"
    assert congestion_in_use(lab, ["server"]) == {"server": "unknown (exited)"}


SCENARIO = """
name: cc
description: with bbr on the client only
congestion: {client: bbr}
seed: 11
steps:
  - {name: hi, service: client, run: [echo, hi], timeout: 10}
checks:
  - {kind: exit_code, step: hi, equals: 0}
"""


def test_a_scenario_runs_with_its_algorithm_records_it_and_puts_the_lab_back(
    lab: Any, tmp_path: Path
) -> None:
    ensure_congestion(lab)
    scenario = build_scenario(parse_text(SCENARIO, file="cc.yaml"), services=lab.services)
    assert congestion_overrides(scenario, lab.services) == {"client": "bbr"}
    runner = ScenarioRunner(lab, folder=tmp_path)
    result = runner.run(scenario)
    assert result.passed, result.reason()
    assert result.congestion == {"client": "bbr"}  # the services it touches
    document = scenario_json(result)
    assert document["congestion"] == {"client": "bbr"}
    assert lab.congestion["server"] == "cubic"
    assert document["seed"] == 11
    # after the run: the Compose file's cubic again
    assert lab.congestion["client"] == "cubic"


def test_one_algorithm_for_the_whole_scenario_covers_every_service(lab: Any) -> None:
    text = SCENARIO.replace("congestion: {client: bbr}", "congestion: reno")
    scenario = build_scenario(parse_text(text, file="cc.yaml"), services=lab.services)
    assert congestion_overrides(scenario, lab.services) == dict.fromkeys(lab.services, "reno")


def test_a_restarted_service_gets_its_algorithm_back_at_once(lab: Any) -> None:
    ensure_congestion(lab)
    lab.congestion["udp-listener"] = None  # what a fresh namespace has
    apply_fault(
        lab,
        Fault(at=1, action="restart", services=("udp-listener",)),
        congestion={"udp-listener": "bbr"},
    )
    assert ("restart", "udp-listener") in lab.actions
    assert lab.congestion["udp-listener"] == "bbr"


def test_the_engine_bench_puts_back_what_the_compose_file_asks(lab: Any) -> None:
    from lab.bench.engine_runner import _set_congestion  # noqa: PLC0415 - the bench's own

    ensure_congestion(lab)
    assert _set_congestion(lab, "bbr") == "bbr"
    # after the bench: cubic, as `lab up` set it, not the namespace's default
    assert _set_congestion(lab, None) == "cubic"
    assert congestion_in_use(lab, ["client"]) == {"client": "cubic"}
