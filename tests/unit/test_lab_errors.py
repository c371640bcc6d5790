"""lab.errors' docstring draws the whole exception tree: every LabError is on it."""

from __future__ import annotations

import importlib
import pkgutil

import lab
from lab import errors
from lab.errors import LabError


def _every_subclass(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_every_subclass(sub)}
    return found


def test_every_public_lab_error_is_on_the_tree_in_lab_errors() -> None:
    for module in pkgutil.walk_packages(lab.__path__, "lab."):
        if not module.name.endswith("__main__"):  # runs the CLI
            importlib.import_module(module.name)
    public = {
        cls
        for cls in _every_subclass(LabError)
        if cls.__module__.startswith("lab.") and not cls.__name__.startswith("_")
    }
    assert errors.__doc__ is not None
    missing = sorted(
        f"{cls.__module__}.{cls.__name__}"
        for cls in public
        if f" {cls.__name__} " not in errors.__doc__
    )
    assert missing == []
