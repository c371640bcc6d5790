"""The README's table of every setting, generated from the config classes.

``make settings-doc`` (``python -m lab.settings_doc``) imports every module of
``socketlab`` and ``lab`` so each ``@env_config`` class registers, renders
:func:`socketlab.config.settings_table` and writes it into README.md between
the markers. ``--check`` only compares, exiting 1 when the README is stale; a
unit test does the same.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from socketlab.config import conflicting_defaults, registered_configs, settings_table

PACKAGES = ("socketlab", "lab")
BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


class StaleReadme(Exception):
    """The README has no settings markers, or a table that is not the generated one."""


def import_all(packages: Iterable[str] = PACKAGES) -> list[str]:
    """Import every module of ``packages`` (not ``__main__``, which runs a program)."""
    imported = []
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue
            importlib.import_module(info.name)
            imported.append(info.name)
    return imported


def config_classes(packages: Iterable[str] = PACKAGES) -> list[type]:
    """Every registered config class of ``packages`` (others, such as tests', are not ours)."""
    import_all(packages)
    roots = set(packages)
    return [cls for cls in registered_configs() if cls.__module__.split(".")[0] in roots]


def render(classes: Sequence[type]) -> str:
    """The table; ValueError when one variable has two defaults."""
    conflicts = conflicting_defaults(classes)
    if conflicts:
        shown = "; ".join(
            f"{name}: {sorted(defaults)}" for name, defaults in sorted(conflicts.items())
        )
        raise ValueError(f"variables with more than one default: {shown}")
    return settings_table(classes)


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the markers replaced by ``table``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise StaleReadme(f"README.md has no {BEGIN} ... {END} section")
    return f"{readme[: start + len(BEGIN)]}\n{table}{readme[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.settings_doc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    try:
        current = args.readme.read_text()
        wanted = with_table(current, render(config_classes()))
    except (OSError, ValueError, StaleReadme) as exc:
        sys.stderr.write(f"settings-doc: {exc}\n")
        return 1
    if wanted == current:
        return 0
    if args.check:
        sys.stderr.write("settings-doc: README.md's settings table is stale: make settings-doc\n")
        return 1
    args.readme.write_text(wanted)
    sys.stdout.write(f"wrote the settings table into {args.readme}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
