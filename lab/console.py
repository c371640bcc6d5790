"""What the ``lab`` commands print: the consoles, tables and progress lines.

Every subcommand module prints through here, so none of them imports the root
CLI (``lab.cli``), which imports them. Text that came from a container (log
lines, feed titles, error messages, table cells) goes through
:func:`socketlab.terminal.neutralize` and is never read as rich markup, so it
cannot move the cursor, retitle the terminal or forge a line.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from socketlab.terminal import neutralize

# emoji off: ":x:" in /etc/passwd lines must not become a cross mark
err_console = Console(stderr=True, emoji=False, highlight=False)
# Piped output (CI logs, tests) gets a wide fixed width so IPs are never cut.
out_console = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 160)


def cell(value: object) -> Text:
    """One table cell: control and bidi characters escaped, no markup."""
    return Text(neutralize(str(value)))


def progress_printer(message: str) -> None:
    """A progress line on stderr (``• message``)."""
    err_console.print(f"• {neutralize(message)}", markup=False)


def print_log_line(service: str, line: str) -> None:
    """One line of a service's log, prefixed with the service (``lab logs``)."""
    sys.stdout.write(f"{service:>12} | {neutralize(line)}\n")


def print_rows(title: str, rows: Sequence[Mapping[str, str]]) -> None:
    """Print rows (dicts with the same keys) as a table."""
    if not rows:
        out_console.print(f"{title}: none")
        return
    table = Table(title=title, title_justify="left")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(cell(value) for value in row.values()))
    out_console.print(table)


def print_figures(title: str, rows: Sequence[Mapping[str, str]]) -> None:
    """Rows of measurements: the first column never wraps, figures are right-aligned."""
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(rows[0] if rows else {}):
        table.add_column(column, no_wrap=index == 0, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(cell(value) for value in row.values()))
    out_console.print(table)


def print_error(message: str) -> None:
    """``lab: error: message`` on stderr."""
    # soft_wrap: one line however long, as the CLI promises
    err_console.print(
        f"lab: error: {neutralize(message)}", markup=False, style="bold red", soft_wrap=True
    )
