"""``lab init DIR``: a minimal lab in the user's own project.

It writes (from the templates in ``lab/templates``, package data):

* ``compose.lab.yml`` - ``server`` and ``client`` running the project's programs
  (the folder mounted read-only at ``/app``) on the lab's runtime image;
* ``echo_server.py`` and ``echo_client.py`` - a starting point to replace with
  one's own programs;
* ``scenarios/example.yaml`` - a shaped link, a readiness wait, checks;
* ``tests/test_lab_example.py`` - the same through the pytest plugin;
* a section of ``README.md`` (added at its end, between markers; the rest of
  the file is left alone).

No name it writes can shadow an importable package (no ``lab/`` or
``socketlab/`` folder: the controller's own packages). It refuses, listing
them, when any of those files exists (or the README already has the
section), unless ``--force``; nothing is written then. :func:`plan_init` is
the pure decision, :func:`write_init` does it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lab.commands import EXIT_OK
from lab.console import out_console
from lab.errors import LabError
from lab.project import INIT_FILE

TEMPLATES = Path(__file__).resolve().parent / "templates"
# file written -> its template
FILES: Final[dict[str, str]] = {
    INIT_FILE: "compose.lab.yml.tmpl",
    "echo_server.py": "echo_server.py.tmpl",
    "echo_client.py": "echo_client.py.tmpl",
    "scenarios/example.yaml": "example.yaml.tmpl",
    "tests/test_lab_example.py": "test_lab_example.py.tmpl",
}
README: Final = "README.md"
README_TEMPLATE: Final = "README-section.md.tmpl"
BEGIN: Final = "<!-- socketlab lab: begin (lab init) -->"
END: Final = "<!-- socketlab lab: end -->"
# Folders that would hide the controller's packages from `python -m pytest` run here.
SHADOWING: Final = ("lab", "socketlab")


class InitError(LabError):
    """``lab init`` would overwrite something, or cannot write its files."""


@dataclass(frozen=True, kw_only=True)
class InitPlan:
    """What ``lab init`` writes (relative path -> text), and what stands in its way."""

    files: dict[str, str]
    readme: str  # the README's new text
    conflicts: tuple[str, ...]
    warnings: tuple[str, ...]


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def readme_with_section(current: str | None, section: str) -> tuple[str, bool]:
    """The README with the lab section at its end (or in place of the one there), and
    whether one was there already."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}\n"
    if current is None:
        return block, False
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block.rstrip("\n") + tail, True
    separator = (
        ""
        if not current or current.endswith("\n\n")
        else ("\n" if current.endswith("\n") else "\n\n")
    )
    return current + separator + block, False


def plan_init(
    existing: dict[str, str | None],
    *,
    texts: dict[str, str],
    section: str,
    folders: frozenset[str] = frozenset(),
    force: bool = False,
) -> InitPlan:
    """Decide what to write (pure): ``existing`` is each target file's text now (None:
    absent), ``texts`` the files to write, ``section`` the README's, ``folders`` the
    folders at the top of the target."""
    conflicts = [name for name in texts if existing.get(name) is not None]
    readme, had_section = readme_with_section(existing.get(README), section)
    if had_section:
        conflicts.append(f"{README} (its socketlab section)")
    warnings = [
        f"{name}/ here would shadow socketlab's own `{name}` package under "
        f"`python -m pytest`: run `pytest` (not `python -m pytest`), or rename it"
        for name in SHADOWING
        if name in folders
    ]
    return InitPlan(
        files=dict(texts),
        readme=readme,
        conflicts=() if force else tuple(conflicts),
        warnings=tuple(warnings),
    )


def templates() -> tuple[dict[str, str], str]:
    """The files ``lab init`` writes, and its README section, from the package data."""
    return {name: template(source) for name, source in FILES.items()}, template(README_TEMPLATE)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InitError(f"cannot read {path}: {exc}") from exc


def write_init(target: Path, *, force: bool = False) -> InitPlan:
    """Write the lab into ``target`` (made if missing); InitError, writing nothing, when a
    file is in the way and ``force`` is not given."""
    if target.exists() and not target.is_dir():
        raise InitError(f"{target} is not a folder")
    existing = {name: _read(target / name) for name in (*FILES, README)}
    folders = (
        frozenset(p.name for p in target.iterdir() if p.is_dir())
        if target.is_dir()
        else frozenset()
    )
    texts, section = templates()
    plan = plan_init(existing, texts=texts, section=section, folders=folders, force=force)
    if plan.conflicts:
        raise InitError(
            f"lab init would overwrite {', '.join(plan.conflicts)} in {target}: "
            "give --force to replace them"
        )
    try:
        for name, text in {**plan.files, README: plan.readme}.items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        raise InitError(f"cannot write into {target}: {exc.strerror or exc}") from exc
    return plan


def cmd_init(args: argparse.Namespace) -> int:
    target: Path = args.dir
    plan = write_init(target, force=args.force)
    for warning in plan.warnings:
        out_console.print(f"warning: {warning}", markup=False)
    written = ", ".join([*plan.files, f"{README} (section)"])
    out_console.print(f"wrote {written} in {target}", markup=False)
    out_console.print(f"next: cd {target} && lab up && lab run example && pytest", markup=False)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``init`` to ``lab``'s subparsers."""
    init = subparsers.add_parser(
        "init",
        help="write a minimal lab into your own project (compose.lab.yml, scenario, test)",
        description="Write compose.lab.yml, starter programs, scenarios/example.yaml, "
        "tests/test_lab_example.py and a README section into DIR.",
    )
    init.add_argument("dir", type=Path, nargs="?", default=Path("."), metavar="DIR")
    init.add_argument("--force", action="store_true", help="replace files that exist")
    init.set_defaults(func=cmd_init)
