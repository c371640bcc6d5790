"""A missing Docker engine is a one-line error, from the API and from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import engine
from lab.api import Lab, find_repo_root, pickle_key, wrap_with_timeout
from lab.cli import main
from lab.config import LabConfig
from lab.errors import DockerUnavailable, LabError, NotReady
from lab.waiting import wait_for


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    address = f"unix://{tmp_path}/nothing-listens-here.sock"
    monkeypatch.setenv("DOCKER_HOST", address)
    return address


def test_connect_reports_the_address_and_asks_about_the_daemon(no_engine: str) -> None:
    with pytest.raises(DockerUnavailable) as caught:
        engine.connect(host=LabConfig.from_env().docker_host)
    message = str(caught.value)
    assert message.startswith(f"cannot reach Docker at {no_engine}: is the daemon running?")


def test_cli_prints_one_line_and_exits_1(
    no_engine: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def compose_config(self: object, *, major: int) -> object:
        raise AssertionError("Compose was run although the engine does not answer")

    # The engine is asked first: Compose (a second or so) is not run for nothing.
    monkeypatch.setattr("lab.compose.Compose.config", compose_config)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert "lab: error: cannot reach Docker at" in err
    assert "Traceback" not in err


def test_bad_project_name_is_refused() -> None:
    with pytest.raises(LabError, match="project name"):
        Lab(project="Has Spaces")


def test_commands_in_containers_are_bounded() -> None:
    assert wrap_with_timeout(["socketlab", "client", "hello"], 30) == [
        "timeout",
        "-k",
        "5",
        "30",
        "socketlab",
        "client",
        "hello",
    ]


def test_repo_root_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "services" / "x").mkdir(parents=True)
    (tmp_path / "services" / "socketlab").mkdir()
    (tmp_path / "services" / "socketlab" / "__init__.py").write_text("")
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    assert find_repo_root(tmp_path / "services" / "x") == tmp_path.resolve()


def test_configured_repo_root_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKETLAB_ROOT", str(tmp_path))
    configured = LabConfig.from_env().root
    assert find_repo_root(Path.cwd(), configured=configured) == tmp_path.resolve()
    assert Lab(project="x").repo_root == tmp_path.resolve()  # the API reads it too


def test_wait_for_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "ready"])
    assert wait_for(lambda: next(answers), timeout=5, what="x", interval=0) == "ready"


def test_wait_for_names_what_it_waited_for_at_the_deadline() -> None:
    calls = []
    with pytest.raises(NotReady, match="timed out after 0 s waiting for the moon"):
        wait_for(lambda: calls.append(1), timeout=0, what="the moon", interval=0)
    assert calls == [1], "the probe gets one try even with no time left"


def test_pickle_key_is_made_once_per_checkout_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOCKETLAB_PICKLE_KEY", raising=False)
    configured = LabConfig.from_env().pickle_key
    assert configured is None
    first = pickle_key(tmp_path, configured=configured)
    assert len(first) == 64
    assert pickle_key(tmp_path) == first, "stable, or every lab up would recreate containers"
    assert (tmp_path / "build" / "pickle-key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    "configured", [pytest.param("", id="disabled"), pytest.param("k", id="given")]
)
def test_configured_pickle_key_wins(
    configured: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOCKETLAB_PICKLE_KEY", configured)
    assert pickle_key(tmp_path, configured=LabConfig.from_env().pickle_key) == configured
    assert not (tmp_path / "build").exists()
