"""What ``lab`` prints from containers cannot drive the terminal or forge lines."""

from __future__ import annotations

from typing import Any

import pytest

from lab import console

HOSTILE = "evil\x1b]0;pwned\x07\r\n* alice left (bye) [bold red]x[/] \u202e"


def test_table_cells_are_escaped_and_never_markup() -> None:
    with console.out_console.capture() as captured:
        console.print_rows("t", [{"title": HOSTILE}])
    text = captured.get()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\r" not in text
    assert "\u202e" not in text
    assert "\\x1b]0;pwned\\x07\\x0d\\x0a* alice left (bye) [bold red]x[/] \\u202e" in text


def test_figures_are_escaped_too() -> None:
    with console.out_console.capture() as captured:
        console.print_figures("t", [{"what": "a\x1bb", "value": "1\n2"}])
    text = captured.get()
    assert "a\\x1bb" in text
    assert "1\\x0a2" in text


def test_log_lines_progress_and_errors_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    console.print_log_line("server", "event=x title='\x1b[2J'")
    assert capsys.readouterr().out == "      server | event=x title='\\x1b[2J'\n"
    with console.err_console.capture() as captured:
        console.progress_printer("step \x1b[31m")
        console.print_error("boom\r\nfake")
    text = captured.get()
    assert "step \\x1b[31m" in text
    assert "boom\\x0d\\x0afake" in text
    assert "\x1b[31m" not in text


def test_lab_status_shows_restarts(fake_lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.cli import print_status  # noqa: PLC0415 - the root CLI, imported by this test only
    from lab.interface import ServiceStatus  # noqa: PLC0415

    rows = [
        ServiceStatus(
            service="server",
            state="running",
            health="healthy",
            ip="10.0.0.2",
            container="c1",
            image="i",
            restarts=2,
        )
    ]
    monkeypatch.setattr(fake_lab, "status", lambda: rows)
    monkeypatch.setattr(
        "lab.cli.status_tables", lambda lab: {"links": [], "partitions": []}
    )  # shaping is not the point here
    with console.out_console.capture() as captured:
        print_status(fake_lab)
    table = captured.get()
    header = next(line for line in table.splitlines() if "service" in line)
    assert "restarts" in header
    assert "│ 2 " in next(line for line in table.splitlines() if "server" in line)
