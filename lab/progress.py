"""How long controller work reports progress: one line at a time, to a callable."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def silent(message: str) -> None:
    """The progress callable for callers that show none."""
    del message
