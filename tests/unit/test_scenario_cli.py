"""``lab scenarios`` and ``lab run`` argument handling (no Docker needed for these paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.api import Lab
from lab.cli import main
from lab.topology import model_from_config, parse_config_json

RECORDED = Path(__file__).parent / "fixtures" / "compose" / "default.v2.json"


@pytest.fixture(autouse=True)
def recorded_project(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default project as recorded from ``compose config``: no Compose binary is run."""
    model = model_from_config(parse_config_json(RECORDED.read_text()), project="socketlab")
    monkeypatch.setattr(Lab, "model", property(lambda _lab: model))


GOOD = """\
name: good
description: the one-line description
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5, capture: out}
checks:
  - {kind: stdout_contains, capture: out, text: x}
"""


def test_scenarios_lists_names_and_descriptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    assert main(["scenarios", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good" in out
    assert "the one-line description" in out


def test_scenarios_flags_an_invalid_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("service: client", "service: nobody"))
    assert main(["scenarios", "--dir", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "INVALID" in out
    assert "no service 'nobody'" in out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["run"], id="nothing"),
        pytest.param(["run", "hello", "--all"], id="both"),
    ],
)
def test_run_needs_names_or_all(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "give scenario names" in capsys.readouterr().err


def test_run_unknown_name_is_an_error_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.yaml").write_text(GOOD)
    assert main(["run", "nope", "--dir", str(tmp_path)]) == 1
    assert "no scenario 'nope' (known: good)" in " ".join(capsys.readouterr().err.split())
