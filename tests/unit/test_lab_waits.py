"""``Lab.wait_healthy`` says why a service is not ready: an exited container's exit
code and last log line, an unhealthy one's last healthcheck output."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import lab.api
from lab.api import Lab
from lab.config import LabConfig
from lab.errors import NotReady, ServiceStopped
from lab.topology import (
    HEALTH_OUTPUT_CHARS,
    build_topology,
    container_facts,
    last_health_output,
    model_from_config,
    parse_config_json,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
SAID = "unhealthy: no answer to hello from 127.0.0.1:4571"


def inspected() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / "default.containers.v2.json").read_text())
    return data


def by_service(containers: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (found,) = [
        c for c in containers if c["Config"]["Labels"]["com.docker.compose.service"] == service
    ]
    return found


def waiting_lab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, containers: list[dict[str, Any]]
) -> Lab:
    """A Lab whose model and containers are the recorded default project's, as given."""
    handle = Lab(project="lab14", repo_root=tmp_path, config=LabConfig())
    model = model_from_config(
        parse_config_json((FIXTURES / "default.v2.json").read_text()), project="lab14"
    )
    handle.__dict__["model"] = model
    facts = [container_facts(c) for c in containers]
    monkeypatch.setattr(handle, "topology", lambda: build_topology(model, facts))
    monkeypatch.setattr(handle, "logs", lambda service, tail=5: "starting\nbind: address in use\n")
    monkeypatch.setattr(lab.api, "HEALTH_POLL", 0.01)
    return handle


def test_the_last_line_of_the_latest_healthcheck_is_kept_bounded() -> None:
    health = {
        "Status": "unhealthy",
        "Log": [{"Output": "ok\n"}, {"Output": f"first line\n{SAID}\n\n", "ExitCode": 1}],
    }
    assert last_health_output(health) == SAID
    assert len(last_health_output({"Log": [{"Output": "x" * 10_000}]})) == HEALTH_OUTPUT_CHARS
    for odd in (None, {}, {"Log": "no list"}, {"Log": []}, {"Log": ["not a mapping"]}):
        assert last_health_output(odd) == ""


def test_an_exited_service_is_named_with_its_exit_code_and_last_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containers = copy.deepcopy(inspected())
    by_service(containers, "server")["State"] = {"Status": "exited", "ExitCode": 3}
    handle = waiting_lab(tmp_path, monkeypatch, containers)
    with pytest.raises(ServiceStopped) as caught:
        handle.wait_healthy(timeout=5)
    assert str(caught.value) == "server stopped (exit 3): bind: address in use"


def test_an_unhealthy_service_at_the_deadline_says_what_its_healthcheck_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containers = copy.deepcopy(inspected())
    by_service(containers, "server")["State"]["Health"] = {
        "Status": "unhealthy",
        "Log": [{"Output": f"{SAID}\n", "ExitCode": 1}],
    }
    by_service(containers, "client")["State"]["Health"] = {"Status": "starting", "Log": []}
    handle = waiting_lab(tmp_path, monkeypatch, containers)
    with pytest.raises(NotReady) as caught:
        handle.wait_healthy(timeout=0.05)
    assert not isinstance(caught.value, ServiceStopped)
    assert str(caught.value) == (
        f"not healthy after 0 s: server (running/unhealthy: {SAID}), client (running/starting)"
    )


def test_a_healthy_lab_waits_for_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waiting_lab(tmp_path, monkeypatch, inspected()).wait_healthy(timeout=0.05)
