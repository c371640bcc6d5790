"""Our own source files, each parsed once per test process, for the tests that read
the code's structure (imports, settings reads)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The syntax tree of ``path`` (read and parsed on first use)."""
    return ast.parse(path.read_text(), filename=str(path))


def python_files(package: Path) -> list[Path]:
    """Every ``.py`` file under ``package``, in a stable order."""
    return sorted(package.rglob("*.py"))
