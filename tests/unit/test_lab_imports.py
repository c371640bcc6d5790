"""Import rules of the controller, proved on the source: no module under ``lab/`` imports
the root CLI (``lab.cli``) except ``lab/__main__.py``, and the runners never touch Docker."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import lab

LAB_PACKAGE = Path(lab.__file__).parent


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module an import statement names, function-local imports included
    (``from lab import cli`` counts as ``lab.cli``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@functools.cache
def _imports_by_module() -> dict[str, frozenset[str]]:
    """Each ``lab/…`` file and what it imports, parsed once for every rule."""
    return {
        path.relative_to(LAB_PACKAGE.parent).as_posix(): frozenset(
            imported_modules(ast.parse(path.read_text(), filename=str(path)))
        )
        for path in sorted(LAB_PACKAGE.rglob("*.py"))
    }


def modules_importing(module: str) -> list[str]:
    return [
        path
        for path, names in _imports_by_module().items()
        if any(name == module or name.startswith(f"{module}.") for name in names)
    ]


def test_only_the_main_module_imports_the_root_cli() -> None:
    assert modules_importing("lab.cli") == ["lab/__main__.py"]


def test_the_rule_sees_function_local_and_from_imports() -> None:
    tree = ast.parse("def f():\n    from lab import cli\n")
    assert "lab.cli" in imported_modules(tree)
    tree = ast.parse("def g():\n    from lab.cli import out_console  # noqa: PLC0415\n")
    assert "lab.cli" in imported_modules(tree)


def test_docker_is_imported_only_where_its_errors_are_translated() -> None:
    # lab.images builds images with the SDK itself; lab.engine translates every other
    # Docker error; lab.api is the Docker implementation of the Lab protocol.
    importing = {path for module in ("docker", "requests") for path in modules_importing(module)}
    assert importing <= {"lab/api.py", "lab/engine.py", "lab/images.py"}
