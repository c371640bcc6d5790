"""Compose command detection and argv building (no Docker needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from lab.compose import Compose, detect_compose_command
from lab.errors import ComposeError


def which_of(*present: str):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in present else None


def runner(exit_code: int, calls: list[Sequence[str]]):  # type: ignore[no-untyped-def]
    def run(argv: Sequence[str]) -> int:
        calls.append(list(argv))
        return exit_code

    return run


@pytest.mark.parametrize(
    ("present", "plugin_exit", "expected"),
    [
        pytest.param(("docker",), 0, ["docker", "compose"], id="v2-plugin"),
        pytest.param(("docker", "docker-compose"), 0, ["docker", "compose"], id="both-prefers-v2"),
        pytest.param(("docker", "docker-compose"), 1, ["docker-compose"], id="v1-when-no-plugin"),
        pytest.param(("docker-compose",), 0, ["docker-compose"], id="v1-without-docker-cli"),
    ],
)
def test_detects_the_compose_that_exists(
    present: tuple[str, ...], plugin_exit: int, expected: list[str]
) -> None:
    calls: list[Sequence[str]] = []
    assert (
        detect_compose_command(which=which_of(*present), run=runner(plugin_exit, calls)) == expected
    )
    if "docker" in present:
        assert calls == [["docker", "compose", "version"]]


def test_no_compose_is_a_clear_error() -> None:
    with pytest.raises(ComposeError, match=r"docker compose.*docker-compose"):
        detect_compose_command(which=which_of(), run=runner(1, []))


def test_override_wins_without_probing() -> None:
    calls: list[Sequence[str]] = []
    assert detect_compose_command(
        which=which_of("docker"), run=runner(0, calls), override="docker-compose"
    ) == ["docker-compose"]
    assert calls == []


def test_argv_names_file_and_project() -> None:
    compose = Compose(
        project="lab-1", compose_file=Path("/x/docker-compose.yml"), command=("docker-compose",)
    )
    assert compose.argv("up", "-d") == [
        "docker-compose",
        "-f",
        "/x/docker-compose.yml",
        "-p",
        "lab-1",
        "up",
        "-d",
    ]


def test_override_file_follows_the_main_file() -> None:
    compose = Compose(
        project="p",
        compose_file=Path("/x/docker-compose.yml"),
        override_file=Path("/x/docker-compose.override.yml"),
        command=("docker", "compose"),
    )
    assert compose.argv("config")[2:6] == [
        "-f",
        "/x/docker-compose.yml",
        "-f",
        "/x/docker-compose.override.yml",
    ]


def test_failed_command_raises_compose_error(tmp_path: Path) -> None:
    compose = Compose(project="p", compose_file=tmp_path / "c.yml", command=("false",))
    with pytest.raises(ComposeError, match="exit code 1"):
        compose.run("up")


def test_missing_binary_raises_compose_error(tmp_path: Path) -> None:
    compose = Compose(
        project="p", compose_file=tmp_path / "c.yml", command=("no-such-compose-binary",)
    )
    with pytest.raises(ComposeError, match="cannot run"):
        compose.run("up")
