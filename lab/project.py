"""Which project ``lab`` acts on, where its Compose file is, and where it keeps its secrets.

``lab`` works from any folder, installed from a checkout or from a wheel. The
**project folder** (``Lab.repo_root``: scenarios, the state folder, names in
messages) is, walking up from the working folder, the first folder that has

* ``compose.lab.yml`` - a project ``lab init`` made (the user's own repository), or
* ``docker-compose.yml`` next to ``services/socketlab/`` - the socketlab checkout;

else, with an editable install, the checkout the ``lab`` package lives in.
``SOCKETLAB_ROOT`` names it outright. The project's Compose files are then
``-f`` files, else ``SOCKETLAB_COMPOSE_FILE``, else that folder's
``compose.lab.yml`` (a ``lab init`` project) or ``docker-compose.yml`` (+
override, the checkout) - see :func:`lab.compose.project_files`.

The **state folder** keeps what ``lab`` makes once per project and must not
share: the signed-pickle demo's key, and any other per-lab secret
(:func:`project_secret`). It is the checkout's ``build/`` (ignored by git,
where it always was) or, in any other project, ``.socketlab/`` (mode 0700,
with a ``.gitignore`` of ``*`` so it never reaches a commit). Each secret is
a file of mode 0600, made once with ``O_EXCL`` and then read back, so it stays
the same across ``lab up`` runs (a changed key would recreate every container).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError

INIT_FILE = "compose.lab.yml"
CHECKOUT_FILE = "docker-compose.yml"
STATE_FOLDER = ".socketlab"
CHECKOUT_STATE_FOLDER = "build"
_LAB_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True, kw_only=True)
class Project:
    """A project folder and the Compose file ``lab`` uses there when none is named."""

    root: Path
    default_file: str = CHECKOUT_FILE
    checkout: bool = False

    @property
    def state_dir(self) -> Path:
        """Where this project's secrets live (see the module docstring)."""
        return self.root / (CHECKOUT_STATE_FOLDER if self.checkout else STATE_FOLDER)


def is_checkout(folder: Path, is_file: Callable[[Path], bool] = Path.is_file) -> bool:
    """A socketlab checkout: its Compose file next to the container package's sources."""
    return is_file(folder / CHECKOUT_FILE) and is_file(
        folder / "services" / "socketlab" / "__init__.py"
    )


def project_at(folder: Path, is_file: Callable[[Path], bool] = Path.is_file) -> Project | None:
    """The project whose folder is ``folder``, if it is one."""
    if is_file(folder / INIT_FILE):
        return Project(root=folder, default_file=INIT_FILE)
    if is_checkout(folder, is_file):
        return Project(root=folder, checkout=True)
    return None


def find_project(
    start: Path | None = None,
    *,
    configured: Path | None = None,
    package: Path = _LAB_PACKAGE,
    is_file: Callable[[Path], bool] = Path.is_file,
) -> Project:
    """The project ``lab`` acts on from ``start`` (default: the working folder).

    ``configured`` (``SOCKETLAB_ROOT``) wins. A folder that is no project at
    all is still returned (``lab init`` makes one there; commands that need a
    Compose file say so, naming ``-f`` and ``lab init``).
    """
    if configured is not None:
        root = configured.resolve()
        return project_at(root, is_file) or Project(root=root, default_file=INIT_FILE)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        found = project_at(folder, is_file)
        if found is not None:
            return found
    # An editable install: the checkout the controller itself comes from.
    if is_checkout(package.parent, is_file):
        return Project(root=package.parent, checkout=True)
    return Project(root=here, default_file=INIT_FILE)


def _private_folder(folder: Path, *, checkout: bool) -> None:
    if folder.is_dir():
        return
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not checkout:
        # The state folder must never be committed, whatever the project's .gitignore says.
        (folder / ".gitignore").write_text("# made by socketlab's lab: secrets, never commit\n*\n")


def project_secret(project: Project, name: str, *, make: Callable[[], str] | None = None) -> str:
    """The secret ``name`` of this project (``pickle-key``, ``admin-token``): read from its
    state folder, made there once (mode 0600) when missing."""
    if not name or "/" in name or name.startswith("."):
        raise LabError(f"{name!r} is not a plain file name for a secret")
    folder = project.state_dir
    path = folder / name
    if not path.is_file():
        try:
            _private_folder(folder, checkout=project.checkout)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # made by another lab process meanwhile: read that one
        except OSError as exc:
            raise LabError(f"cannot make {path}: {exc.strerror or exc}") from exc
        else:
            with os.fdopen(descriptor, "w") as secret_file:
                secret_file.write((make or _token)() + "\n")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise LabError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _token() -> str:
    return secrets.token_hex(32)
