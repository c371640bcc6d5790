"""``lab bench`` / ``lab sweep`` argument handling that needs no lab."""

from __future__ import annotations

import argparse

import pytest

from lab.bench.cli import file_size
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
            ["bench", "--dest", "floppy"], "invalid choice: 'floppy'", id="bench-bad-dest"
        ),
        pytest.param(["bench", "--repeat", "0"], "'0': at least 1", id="bench-repeat-0"),
        pytest.param(
            ["bench", "--repeat", "two"], "'two' is not a whole number", id="bench-repeat-word"
        ),
        pytest.param(["bench", "--file-size", "2X"], "'2X' is not a size", id="bench-size-unit"),
        pytest.param(
            ["bench", "--file-size", "1000"], "below the smallest bench file", id="bench-tiny"
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
def test_usage_errors_exit_2(
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
    for option in (
        "--quick",
        "--json FILE",
        "--condition SPEC",
        "--dest {disk,tmpfs}",
        "--repeat N",
        "--file-size SIZE",
    ):
        assert option in out


@pytest.mark.parametrize(
    ("text", "size"),
    [
        pytest.param("2G", 2 * 2**30, id="G"),
        pytest.param("2gib", 2 * 2**30, id="gib"),
        pytest.param("512M", 512 * 2**20, id="M"),
        pytest.param("1048576", 2**20, id="bytes"),
        pytest.param(" 4096 k ", 4 * 2**20, id="spaces-k"),
    ],
)
def test_file_size(text: str, size: int) -> None:
    assert file_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.5G", "2 GB", "1e9"])
def test_file_size_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        file_size(text)
