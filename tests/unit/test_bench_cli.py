"""``lab bench`` / ``lab sweep`` argument handling that needs no lab."""

from __future__ import annotations

import pytest

from lab.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["sweep", "nope", "--loss", "0", "--delay", "0"],
            "no sweep scenario 'nope' (known: tcp-vs-udp)",
            id="unknown-scenario",
        ),
        pytest.param(
            ["sweep", "tcp-vs-udp", "--loss", "0,x", "--delay", "0"],
            "--loss: 'x' is not a percentage",
            id="bad-loss",
        ),
        pytest.param(
            ["sweep", "tcp-vs-udp", "--loss", "0", "--delay", "20%"],
            "--delay: '20%' is not a delay",
            id="bad-delay",
        ),
        pytest.param(
            ["sweep", "tcp-vs-udp", "--loss", "0", "--delay", "0", "--bytes", "0"],
            "need --bytes > 0",
            id="no-bytes",
        ),
        pytest.param(
            ["sweep", "tcp-vs-udp", "--loss", "0", "--delay", "0", "--congestion", "cubic,bbrr"],
            "--congestion: 'bbrr' is not a TCP congestion control",
            id="bad-congestion",
        ),
        pytest.param(
            ["sweep", "tcp-vs-udp", "--loss", "0", "--delay", "0", "--offer", "20mbps"],
            "--offer: '20mbps' is ambiguous",
            id="bad-offer",
        ),
    ],
)
def test_sweep_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_help_lists_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bench", "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for option in ("--quick", "--json FILE", "--condition SPEC"):
        assert option in out
