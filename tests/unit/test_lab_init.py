"""``lab init``: what it writes, what it refuses to overwrite, and that what it writes works
(the compose file's shape, the scenario valid for its services, the echo pair on loopback)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from lab.cli import main as lab_main
from lab.init import BEGIN, END, FILES, README, InitError, plan_init, templates, write_init
from lab.scenario.loader import parse_text
from lab.scenario.plan import build_scenario
from lab.scenario.steps import NETWORK_WAITS

DEADLINE = 15.0


def test_an_empty_folder_gets_every_file_and_a_readme_section(tmp_path: Path) -> None:
    target = tmp_path / "project"
    plan = write_init(target)
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted([*FILES, README])
    readme = (target / README).read_text()
    assert readme.startswith(BEGIN)
    assert readme.rstrip().endswith(END)
    assert "lab run example" in readme
    assert plan.warnings == ()
    # nothing it writes can shadow the controller's packages
    assert not (target / "lab").exists()
    assert not (target / "socketlab").exists()


def test_existing_files_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "echo_server.py").write_text("mine\n")
    with pytest.raises(InitError) as caught:
        write_init(tmp_path)
    assert "would overwrite echo_server.py" in str(caught.value)
    assert "--force" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["echo_server.py"]
    assert (tmp_path / "echo_server.py").read_text() == "mine\n"
    write_init(tmp_path, force=True)
    assert (tmp_path / "echo_server.py").read_text() == templates()[0]["echo_server.py"]


def test_a_readme_keeps_its_text_and_gets_the_section_once(tmp_path: Path) -> None:
    (tmp_path / README).write_text("# My project\n\nIt does things.\n")
    write_init(tmp_path)
    text = (tmp_path / README).read_text()
    assert text.startswith("# My project\n\nIt does things.\n\n" + BEGIN)
    with pytest.raises(InitError, match=r"README\.md \(its socketlab section\)"):
        write_init(tmp_path)
    (tmp_path / README).write_text(text.replace("It does things.", "It does more.") + "Tail.\n")
    write_init(tmp_path, force=True)
    again = (tmp_path / README).read_text()
    assert again.count(BEGIN) == 1
    assert "It does more." in again
    assert again.endswith("Tail.\n")


def test_folders_that_shadow_the_controller_are_warned_about() -> None:
    texts, section = templates()
    plan = plan_init({}, texts=texts, section=section, folders=frozenset({"lab", "src"}))
    (warning,) = plan.warnings
    assert warning.startswith("lab/ here would shadow socketlab's own `lab` package")


def test_the_command_writes_and_then_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab_main(["init", str(tmp_path)]) == 0
    assert f"next: cd {tmp_path} && lab up && lab run example && pytest" in capsys.readouterr().out
    assert lab_main(["init", str(tmp_path)]) == 1
    assert "would overwrite compose.lab.yml" in capsys.readouterr().err


def test_the_compose_file_runs_the_projects_code_read_only_on_the_runtime_image() -> None:
    texts, _ = templates()
    document = yaml.safe_load(texts["compose.lab.yml"])
    services = document["services"]
    assert sorted(services) == ["client", "server"]
    for service in services.values():
        assert service["image"] == "${SOCKETLAB_IMAGE:-socketlab/runtime:latest}"
        assert service["volumes"] == ["./:/app:ro"]
        assert service["working_dir"] == "/app"
        assert service["cap_drop"] == ["ALL"]
    assert services["server"]["command"][:3] == ["python3", "-u", "echo_server.py"]
    assert services["client"]["depends_on"] == {"server": {"condition": "service_healthy"}}


def test_the_example_scenario_is_valid_for_the_compose_services() -> None:
    texts, _ = templates()
    document = parse_text(texts["scenarios/example.yaml"], file="scenarios/example.yaml")
    scenario = build_scenario(document, services=["server", "client"], variables={"RUN_ID": "r"})
    kinds = [step.kind for step in scenario.steps]
    assert kinds == ["wait", "run"]
    assert scenario.steps[0].wait is not None
    assert scenario.steps[0].wait.kind in NETWORK_WAITS
    assert [link.describe() for link in scenario.links] == ["server -> client: delay=20ms"]


def test_the_generated_test_uses_the_plugins_api_and_compiles(tmp_path: Path) -> None:
    texts, _ = templates()
    source = texts["tests/test_lab_example.py"]
    compile(source, "test_lab_example.py", "exec")
    for name in ("lab.exec(", "lab.shaped(", "lab.partitioned(", "lab.run_scenario(", "lab_links"):
        assert name in source


def test_the_starter_programs_echo_on_loopback(
    tmp_path: Path, free_port: Callable[..., int], wait_until: Callable[..., object]
) -> None:
    write_init(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-u", "echo_server.py", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        wait_until(lambda: server.stdout.readline().startswith("listening"), "the server")
        answer = subprocess.run(
            [sys.executable, "echo_client.py", "127.0.0.1", str(port), "hello there"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert (answer.returncode, answer.stdout) == (0, "reply: hello there\n")
    finally:
        server.kill()
        server.wait(timeout=DEADLINE)
    refused = subprocess.run(
        [sys.executable, "echo_client.py", "127.0.0.1", str(port), "x", "--timeout", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("no reply:")
