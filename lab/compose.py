"""The Compose CLI: which one exists, which files a project has, and the one place that runs it.

Compose v2 (``docker compose``) and v1.29 (``docker-compose``) both read our
spec-style ``docker-compose.yml``; we prefer v2 when both exist. A project's
files follow Compose's own rules (:func:`project_files`): ``-f`` files, else
``SOCKETLAB_COMPOSE_FILE`` (several, separated as in ``COMPOSE_FILE``), else
``docker-compose.yml`` plus ``docker-compose.override.yml`` when there is one.

:meth:`Compose.config` reads Compose's normalised view of the project (what
:mod:`lab.topology` is built from): v2's ``config --format json`` (with its
YAML rendering for the ``x-*`` keys the JSON drops), v1's ``config`` YAML.
A file Compose rejects is a :class:`ComposeConfigError` carrying Compose's own
message and the files' names.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import ComposeError
from lab.topology import merge_service_extensions, parse_config_json, parse_config_yaml

log = logging.getLogger("lab.compose")

PROBE_TIMEOUT = 20.0
DEFAULT_FILE = "docker-compose.yml"
OVERRIDE_FILE = "docker-compose.override.yml"


class ComposeConfigError(ComposeError):
    """Compose rejects the project's files (its own message, the files named)."""


def split_compose_files(text: str, *, separator: str = os.pathsep) -> tuple[str, ...]:
    """``a.yml:b.yml`` -> ("a.yml", "b.yml"): ``COMPOSE_FILE``'s syntax (``:`` on Linux)."""
    return tuple(part.strip() for part in text.split(separator) if part.strip())


@dataclass(frozen=True, kw_only=True)
class ProjectFiles:
    """The Compose files of a project, in the order Compose merges them."""

    files: tuple[Path, ...]

    @property
    def main(self) -> Path:
        return self.files[0]

    @property
    def directory(self) -> Path:
        """Compose's project directory: the folder of the first file."""
        return self.main.parent

    def describe(self, relative_to: Path | None = None) -> str:
        def show(path: Path) -> str:
            if relative_to is not None:
                try:
                    return str(path.relative_to(relative_to))
                except ValueError:
                    pass
            return str(path)

        return " + ".join(show(path) for path in self.files)


def project_files(
    explicit: Sequence[str | Path] = (),
    *,
    configured: str | None = None,
    default_dir: Path,
    cwd: Path | None = None,
    is_file: Callable[[Path], bool] = Path.is_file,
) -> ProjectFiles:
    """Which files make the project, with the meaning of Compose's ``-f``.

    ``explicit`` (``lab -f``) wins, then ``configured`` (``SOCKETLAB_COMPOSE_FILE``),
    both relative to ``cwd``; otherwise ``docker-compose.yml`` in ``default_dir``
    plus ``docker-compose.override.yml`` when it exists (Compose reads the
    override only when no file is named). A named file that does not exist is
    a ComposeError.
    """
    base = cwd or Path.cwd()
    named = [Path(p) for p in explicit] or [Path(p) for p in split_compose_files(configured or "")]
    if named:
        files = tuple(path if path.is_absolute() else base / path for path in named)
        missing = [str(path) for path in files if not is_file(path)]
        if missing:
            raise ComposeError(f"no Compose file {missing[0]}")
        return ProjectFiles(files=files)
    main = default_dir / DEFAULT_FILE
    if not is_file(main):
        raise ComposeError(f"no {DEFAULT_FILE} in {default_dir}: name the project's files with -f")
    override = default_dir / OVERRIDE_FILE
    return ProjectFiles(files=(main, override) if is_file(override) else (main,))


Runner = Callable[[Sequence[str]], int]
Which = Callable[[str], str | None]


def _probe(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(
            argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        return 127


def detect_compose_command(
    *,
    which: Which = shutil.which,
    run: Runner = _probe,
    override: str | None = None,
) -> list[str]:
    """Return the argv prefix that runs Compose on this machine.

    ``override`` (env ``SOCKETLAB_COMPOSE``, e.g. ``"docker-compose"``) wins.
    Otherwise ``docker compose`` if the plugin answers ``version``, else
    ``docker-compose`` if it is on PATH; else :class:`ComposeError`.
    """
    if override:
        return override.split()
    if which("docker") is not None and run(["docker", "compose", "version"]) == 0:
        return ["docker", "compose"]
    if which("docker-compose") is not None:
        return ["docker-compose"]
    raise ComposeError(
        "neither 'docker compose' (Compose v2) nor 'docker-compose' (v1.29) was found; "
        "install one of them"
    )


@dataclass(frozen=True, kw_only=True)
class Compose:
    """One Compose project: file, project name and the environment passed to the CLI."""

    project: str
    compose_file: Path
    command: tuple[str, ...]
    # Compose loads docker-compose.override.yml only when no -f is given; we
    # pass -f, so we add the override ourselves when there is one.
    override_file: Path | None = None
    # More files after those (a user's further -f files, the lab's own override).
    extra_files: tuple[Path, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0

    @property
    def files(self) -> tuple[Path, ...]:
        override = () if self.override_file is None else (self.override_file,)
        return (self.compose_file, *override, *self.extra_files)

    def argv(self, *args: str) -> list[str]:
        """The full argv for ``compose ARGS`` in this project (pure: used by tests)."""
        files = [part for path in self.files for part in ("-f", str(path))]
        return [*self.command, *files, "-p", self.project, *args]

    def _execute(self, args: Sequence[str], *, capture: bool) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        log.info("event=compose argv=%s", " ".join(argv))
        try:
            return subprocess.run(
                argv,
                env={**os.environ, **self.env},
                capture_output=capture,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(
                f"'{' '.join(argv)}' did not finish in {self.timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise ComposeError(f"cannot run {argv[0]!r}: {exc}") from exc

    def run(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a Compose subcommand; raise :class:`ComposeError` with its output on failure."""
        result = self._execute(args, capture=capture)
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-5:] if capture else []
            raise ComposeError(
                f"'{' '.join(args)}' failed with exit code {result.returncode}"
                + (": " + " | ".join(detail) if detail else "")
            )
        return result

    def major_version(self) -> int:
        """Compose's major version (1 or 2), from ``version --short``."""
        out = self.run("version", "--short", capture=True).stdout.strip()
        try:
            return int(out.lstrip("v").split(".")[0])
        except ValueError as exc:
            raise ComposeError(f"cannot read Compose's version from {out!r}") from exc

    def _config_text(self, *args: str) -> str:
        result = self._execute(["config", *args], capture=True)
        if result.returncode != 0:
            raise ComposeConfigError(
                f"Compose rejects {ProjectFiles(files=self.files).describe()}: "
                + compose_message(result.stderr or result.stdout)
            )
        return result.stdout

    def config(self, *, major: int) -> dict[str, Any]:
        """Compose's normalised config of the project, loaded (see the module docstring)."""
        if major >= 2:
            data = parse_config_json(self._config_text("--format", "json"))
            rendered = parse_config_yaml(self._config_text())
            return merge_service_extensions(data, rendered)
        return parse_config_yaml(self._config_text())


def compose_message(stderr: str, *, lines: int = 6) -> str:
    """Compose's complaint as one line: its last lines, without a traceback's frames."""
    kept = [
        line.strip()
        for line in stderr.strip().splitlines()
        if line.strip() and not line.startswith(("Traceback", "  File ", "    "))
    ]
    return " ".join(kept[-lines:]) or "(no message)"
