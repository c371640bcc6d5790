"""Scenarios on the real lab: every shipped one passes, reports list them all, and a
scenario built to fail makes ``lab run`` exit non-zero with the reason in the reports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.api import Lab
from lab.cli import main
from lab.scenario.session import run_files, scenario_files

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MUST_FAIL = Path(__file__).resolve().parent / "scenarios" / "must-fail.yaml"


def read_reports(folder: Path) -> tuple[dict[str, object], ET.Element]:
    document = json.loads((folder / "results.json").read_text())
    junit = ET.parse(folder / "junit.xml").getroot()  # noqa: S314 - written by us just now
    return document, junit


def test_every_shipped_scenario_passes_and_the_reports_list_them_all(
    lab: Lab, tmp_path: Path
) -> None:
    paths = scenario_files(REPO / "scenarios")
    names = [path.stem for path in paths]
    assert {"hello", "udp-basic", "rss-basic"} <= set(names)

    # Exactly what a user (and CI) runs: the CLI's `lab run --all`.
    code = main(["-p", lab.project, "run", "--all", "--results", str(tmp_path)])

    (folder,) = tmp_path.iterdir()
    document, junit = read_reports(folder)
    scenarios = document["scenarios"]
    assert isinstance(scenarios, list)
    failed = {s["name"]: s["reason"] for s in scenarios if not s["passed"]}
    assert not failed, failed
    assert code == 0
    assert document["passed"] is True
    assert document["summary"] == {"scenarios": len(paths), "passed": len(paths), "failed": 0}
    assert [s["name"] for s in scenarios] == names
    for scenario in scenarios:
        assert scenario["checks"], scenario["name"]
        assert all(check["passed"] for check in scenario["checks"])
    assert (junit.get("tests"), junit.get("failures")) == (str(len(paths)), "0")
    assert [case.get("name") for case in junit.iter("testcase")] == names
    assert not list(junit.iter("failure"))
    # artifacts: captured output and every service's log, per scenario
    assert (folder / "hello" / "captures" / "greeting.stdout").read_text().strip()
    assert {p.name for p in (folder / "hello" / "logs").iterdir()} == {
        f"{service}.log" for service in lab.services
    }
    if "large-file" in names:
        copy = folder / "large-file" / "files" / "client"
        assert any(path.name == "sample-text.txt" for path in copy.rglob("*"))


def test_a_scenario_built_to_fail_makes_lab_run_exit_1_and_says_why(
    lab: Lab, tmp_path: Path
) -> None:
    code = main(["-p", lab.project, "run", str(MUST_FAIL), "--results", str(tmp_path)])

    assert code == 1
    (folder,) = tmp_path.iterdir()
    document, junit = read_reports(folder)
    assert document["passed"] is False
    (scenario,) = document["scenarios"]  # type: ignore[misc]
    assert scenario["name"] == "must-fail"
    assert scenario["passed"] is False
    # the fetch itself worked: it is the comparison that failed, and the report says so
    checks = {check["name"]: check for check in scenario["checks"]}
    assert checks["step fetch exits 0"]["passed"] is True
    failed = checks["image on the server = text on the client"]
    assert failed["passed"] is False
    assert failed["detail"].startswith("files differ: sha256 ")
    assert "sizes " in failed["detail"]
    assert "first difference at byte 0" in failed["detail"]
    assert "image on the server = text on the client: files differ" in scenario["reason"]
    (failure,) = junit.iter("failure")
    assert "files differ" in (failure.get("message") or "")


LINKED_HELLO = """\
name: hello-linked
description: the greeting over a shaped link, captured
links:
  - {from: client, to: server, delay: 5ms}
steps:
  - {name: hello, service: client, run: [socketlab, client, hello, --json], timeout: 60, capture: hello}
checks:
  - {kind: json_field, capture: hello, path: ok, op: "==", value: true}
"""


@pytest.mark.parametrize(
    ("source", "pcap_name"),
    [
        pytest.param("hello", "hello.client.pcap", id="no-link-the-clients-traffic"),
        pytest.param("linked", "hello-linked.client-to-server.pcap", id="a-shaped-link"),
    ],
)
def test_capture_keeps_a_pcap_with_packets_and_lists_it(
    lab: Lab, tmp_path: Path, source: str, pcap_name: str
) -> None:
    if source == "linked":
        path = tmp_path / "hello-linked.yaml"
        path.write_text(LINKED_HELLO)
    else:
        path = REPO / "scenarios" / "hello.yaml"

    report = run_files(lab, [path], results_root=tmp_path / "results", capture=True)

    assert report.passed, [r.reason() for r in report.results]
    pcap = report.folder / "pcap" / pcap_name
    data = pcap.read_bytes()
    assert data[:4] in {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"}  # pcap magic
    assert len(data) > 24, "only a pcap header: no packet was captured"  # 24: global header
    document, _ = read_reports(report.folder)
    scenarios = document["scenarios"]
    assert isinstance(scenarios, list)
    (listed,) = scenarios[0]["pcaps"]
    assert listed["file"] == f"pcap/{pcap_name}"
    assert listed["bytes"] == len(data)
    assert listed["error"] is None
    capture_helpers = [
        c.name
        for c in lab.docker.containers.list(
            all=True,
            filters={"label": [f"io.socketlab.project={lab.project}", "io.socketlab.role=capture"]},
        )
    ]
    assert capture_helpers == [], "a capture helper was left running"
