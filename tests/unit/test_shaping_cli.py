"""`lab shape | unshape | partition | heal` argument handling (no Docker)."""

from __future__ import annotations

import pytest

from lab.cli import build_parser, main
from lab.shaping import cli
from lab.shaping.spec import OPTION_HELP, SPEC_OPTIONS, option_flag


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


def test_every_shaping_option_has_a_flag_with_its_help() -> None:
    parser = build_parser()
    argv = ["shape", "a", "b"]
    values = {
        "delay": "40ms", "jitter": "5ms", "loss": "2%", "duplicate": "1%", "reorder": "10%",
        "corrupt": "0.1%", "rate": "20mbit", "loss_burst": "3", "loss_model": "gemodel:1%,30%",
        "loss_correlation": "25%", "delay_distribution": "normal", "delay_correlation": "25%",
        "reorder_gap": "5", "queue_limit": "64kb", "seed": "7",
    }  # fmt: skip
    assert set(values) == set(SPEC_OPTIONS)
    for name, value in values.items():
        argv += [option_flag(name), value]
    args = parser.parse_args(argv)
    assert {name: getattr(args, name) for name in SPEC_OPTIONS} == values
    shape_parser = parser._subparsers._group_actions[0].choices["shape"]  # type: ignore[union-attr]
    helps = {action.dest: action.help for action in shape_parser._actions}
    for name in SPEC_OPTIONS:
        assert helps[name] == OPTION_HELP[name].replace("%", "%%")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--loss-burst", "3"], "--loss-burst: needs --loss", id="burst-alone"),
        pytest.param(
            ["--loss", "2%", "--loss-correlation", "150%"],
            "--loss-correlation: '150%' is more than 100%",
            id="correlation-over-100",
        ),
        pytest.param(["--seed=-1"], "--seed: '-1' must be between 0 and", id="seed"),
        pytest.param(["--queue-limit", "64kb"], "--queue-limit: needs --rate", id="queue-alone"),
        pytest.param(
            ["--delay", "10ms", "--reorder", "5%", "--reorder-gap", "0"],
            "--reorder-gap: '0' must be between 1 and",
            id="gap",
        ),
        pytest.param(
            ["--delay", "10ms", "--delay-distribution", "cauchy", "--jitter", "1ms"],
            "--delay-distribution: 'cauchy' is not a distribution",
            id="distribution",
        ),
    ],
)
def test_bad_shaping_values_name_the_flag_and_its_range_and_change_nothing(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # no Docker: the spec is refused before a lab handle does anything
    assert main(["shape", "client", "server", *flags]) == 1
    err = capsys.readouterr().err.replace("\n", " ")
    assert message in err
    assert len(capsys.readouterr().err.strip().splitlines()) <= 1


def test_partition_takes_groups_or_isolate() -> None:
    args = build_parser().parse_args(["partition", "client,rss-poller", "server"])
    assert (args.source, args.dest, args.isolate) == ("client,rss-poller", "server", None)
    args = build_parser().parse_args(["partition", "--isolate", "server"])
    assert (args.source, args.isolate) == (None, "server")
    args = build_parser().parse_args(["heal", "--isolate", "server"])
    assert (args.func, args.isolate) == (cli.cmd_heal, "server")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["partition", "client"], "give two services", id="half"),
        pytest.param(["partition"], "or --isolate SERVICE", id="nothing"),
        pytest.param(["partition", "a", "b", "--isolate", "c"], "takes no other", id="both"),
    ],
)
def test_bad_partitions_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err.replace("\n", " ")
