"""The lab under the Compose flavour in use, v1 or v2.

CI runs this module (with the foundation tests) once under Compose v1 and once
under Compose v2 (``SOCKETLAB_COMPOSE``), each run reported under its own
name. Compose itself must be the one that made the containers, and a handful
of scenarios, one per kind of demo, pass through ``lab run`` as users run them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.api import Lab
from lab.cli import main
from lab.compose import detect_compose_command

# One of each kind: greeting, objects, framing, files, UDP, chat, many clients,
# RSS, and shaping through netkit helpers.
SCENARIOS = (
    "hello",
    "objects",
    "framing",
    "large-file",
    "image",
    "udp-basic",
    "chat",
    "multi-client",
    "rss-basic",
    "udp-loss",
)


def compose_version() -> str:
    command = detect_compose_command(override=os.environ.get("SOCKETLAB_COMPOSE"))
    result = subprocess.run(
        [*command, "version", "--short"], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip().removeprefix("v")


def test_the_compose_in_use_made_every_container(lab: Lab) -> None:
    version = compose_version()
    made_by = {
        service: lab.container(service).labels.get("com.docker.compose.version")
        for service in lab.services
    }
    assert made_by == dict.fromkeys(lab.services, version)
    # CI names the flavour it means to test, so a fallback to the other one fails.
    if expected := os.environ.get("SOCKETLAB_EXPECT_COMPOSE_MAJOR"):
        assert version.split(".")[0] == expected, version


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_passes_under_this_compose(lab: Lab, tmp_path: Path, name: str) -> None:
    code = main(["-p", lab.project, "run", name, "--results", str(tmp_path)])

    (folder,) = tmp_path.iterdir()
    document = json.loads((folder / "results.json").read_text())
    (scenario,) = document["scenarios"]
    assert scenario["name"] == name
    assert scenario["passed"], scenario["reason"]
    assert scenario["checks"]
    assert all(check["passed"] for check in scenario["checks"])
    assert code == 0
