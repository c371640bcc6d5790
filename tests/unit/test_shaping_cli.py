"""`lab shape | unshape | partition | heal` argument handling (no Docker)."""

from __future__ import annotations

import pytest

from lab.cli import build_parser, main
from lab.shaping import cli


def test_subcommands_are_registered() -> None:
    args = build_parser().parse_args(
        ["shape", "client", "server", "--delay", "40ms", "--loss", "2%", "--engine", "nfqueue"]
    )
    assert args.func is cli.cmd_shape
    assert (args.source, args.dest, args.delay, args.loss, args.engine) == (
        "client", "server", "40ms", "2%", "nfqueue",
    )  # fmt: skip
    assert args.rate is None
    assert not args.check
    assert build_parser().parse_args(["unshape"]).func is cli.cmd_unshape
    assert build_parser().parse_args(["heal", "a", "b"]).func is cli.cmd_heal
    assert build_parser().parse_args(["partition", "a", "b"]).func is cli.cmd_partition


def test_engine_choices_are_checked() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shape", "a", "b", "--engine", "tbf"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["shape", "a", "b", "--delay", "40xs"], "is not a duration", id="bad-unit"),
        pytest.param(["shape", "a", "b", "--profile", "moon"], "no profile 'moon'", id="profile"),
        pytest.param(["unshape", "client"], "give two services", id="half-pair"),
        pytest.param(["heal", "client"], "give two services", id="half-heal"),
    ],
)
def test_bad_input_is_one_clear_line_before_any_docker_call(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err.replace("\n", " ")
