"""The Compose CLI: which one exists, and the one place that runs it.

Compose v2 (``docker compose``) and v1.29 (``docker-compose``) both read our
spec-style ``docker-compose.yml``; we prefer v2 when both exist.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import ComposeError

log = logging.getLogger("lab.compose")

PROBE_TIMEOUT = 20.0

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
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0

    def argv(self, *args: str) -> list[str]:
        """The full argv for ``compose ARGS`` in this project (pure: used by tests)."""
        files = ["-f", str(self.compose_file)]
        if self.override_file is not None:
            files += ["-f", str(self.override_file)]
        return [*self.command, *files, "-p", self.project, *args]

    def run(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a Compose subcommand; raise :class:`ComposeError` with its output on failure."""
        argv = self.argv(*args)
        log.info("event=compose argv=%s", " ".join(argv))
        try:
            result = subprocess.run(
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
        if result.returncode != 0:
            detail = (result.stderr or "").strip().splitlines()[-5:] if capture else []
            raise ComposeError(
                f"'{' '.join(args)}' failed with exit code {result.returncode}"
                + (": " + " | ".join(detail) if detail else "")
            )
        return result
