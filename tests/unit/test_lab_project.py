"""``lab`` from any folder: which project it acts on, its state folder, and the image files
an installed package carries (the same build context, the same tags, as the checkout's)."""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import stat
import tarfile
import tomllib
from pathlib import Path

import pytest

from lab.api import Lab, pickle_key
from lab.compose import project_files
from lab.errors import ComposeError, LabError
from lab.images import (
    DATA_FILES,
    PACKAGE_DIR,
    build_context,
    checkout_inputs,
    context_of,
    files_digest,
    installed_inputs,
    package_files,
)
from lab.project import INIT_FILE, Project, find_project, project_secret

REPO = Path(__file__).resolve().parents[2]


def checkout(folder: Path) -> Path:
    (folder / "services" / "socketlab").mkdir(parents=True)
    (folder / "services" / "socketlab" / "__init__.py").write_text("")
    (folder / "docker-compose.yml").write_text("services: {}\n")
    return folder


def test_the_nearest_compose_lab_yml_makes_the_project(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "src" / "deep").mkdir(parents=True)
    (mine / INIT_FILE).write_text("services: {}\n")
    found = find_project(mine / "src" / "deep", package=tmp_path / "nowhere" / "lab")
    assert found == Project(root=mine.resolve(), default_file=INIT_FILE)
    assert found.state_dir == mine.resolve() / ".socketlab"


def test_a_checkout_is_a_project_and_keeps_its_state_in_build(tmp_path: Path) -> None:
    root = checkout(tmp_path / "socketlab")
    found = find_project(root / "services", package=tmp_path / "x" / "lab")
    assert found == Project(root=root.resolve(), checkout=True)
    assert found.state_dir == root.resolve() / "build"


def test_a_lab_project_inside_a_checkout_wins_when_nearer(tmp_path: Path) -> None:
    root = checkout(tmp_path / "socketlab")
    example = root / "examples" / "byo"
    example.mkdir(parents=True)
    (example / INIT_FILE).write_text("services: {}\n")
    assert find_project(example, package=tmp_path / "x" / "lab").root == example.resolve()


def test_outside_any_project_an_editable_install_falls_back_to_its_checkout(
    tmp_path: Path,
) -> None:
    root = checkout(tmp_path / "socketlab")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert find_project(elsewhere, package=root / "lab").root == root.resolve()
    # an installed wheel has no checkout: the folder itself, where `lab init` would write
    plain = find_project(elsewhere, package=tmp_path / "site-packages" / "lab")
    assert plain == Project(root=elsewhere.resolve(), default_file=INIT_FILE)


def test_with_no_compose_file_the_error_names_lab_init_and_f(tmp_path: Path) -> None:
    with pytest.raises(ComposeError) as caught:
        project_files(default_dir=tmp_path, default_file=INIT_FILE)
    message = str(caught.value)
    assert f"no {INIT_FILE} in {tmp_path}" in message
    assert "`lab init`" in message
    assert "-f" in message


def test_a_lab_init_project_reads_only_its_compose_lab_yml(tmp_path: Path) -> None:
    (tmp_path / INIT_FILE).write_text("services: {}\n")
    (tmp_path / "docker-compose.override.yml").write_text("services: {}\n")
    files = project_files(default_dir=tmp_path, default_file=INIT_FILE)
    assert files.files == (tmp_path / INIT_FILE,)


def test_the_lab_of_a_lab_init_project_uses_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / INIT_FILE).write_text("services: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SOCKETLAB_ROOT", raising=False)
    lab = Lab(project="x")
    assert lab.repo_root == tmp_path.resolve()
    assert lab.project_files.files == (tmp_path.resolve() / INIT_FILE,)


def test_secrets_are_made_once_private_and_never_committed(tmp_path: Path) -> None:
    project = Project(root=tmp_path, default_file=INIT_FILE)
    first = project_secret(project, "pickle-key")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert project_secret(project, "pickle-key") == first
    state = tmp_path / ".socketlab"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "pickle-key").stat().st_mode) == 0o600
    assert (state / ".gitignore").read_text().splitlines()[-1] == "*"
    assert project_secret(project, "admin-token") != first  # one file per secret
    assert pickle_key(project) == first
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(LabError, match="not a plain file name"):
            project_secret(project, bad)


# --------------------------------------------------------------------------- image files


def test_the_wheel_carries_every_image_file_the_build_reads() -> None:
    """setup.py copies services/ files matching its patterns into lab/_image (it calls
    setup() when imported, so its patterns are read from its text)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    patterns = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") == "IMAGE_FILE_PATTERNS"
    )
    shipped = {path.name for pattern in patterns for path in (REPO / "services").glob(pattern)}
    assert {Path(name).name for name in DATA_FILES} <= shipped
    assert all(name.startswith("services/") for name in DATA_FILES)


def test_the_wheel_carries_every_file_of_the_package_the_images_copy() -> None:
    """Every non-Python file of services/socketlab the images get (the healthcheck script
    the Compose file runs) is package data in pyproject.toml, so a wheel has it too."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["socketlab"]
    files = package_files(REPO / PACKAGE_DIR)
    assert "healthcheck.sh" in files
    others = {name for name in files if not name.endswith(".py")}
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in package_data) for name in others)


def installed_copy(tmp_path: Path) -> tuple[Path, Path]:
    """What a wheel install holds: lab/_image with the data files, and the package."""
    data = tmp_path / "site" / "lab" / "_image"
    data.mkdir(parents=True)
    for name in DATA_FILES:
        (data / Path(name).name).write_bytes((REPO / name).read_bytes())
    package = tmp_path / "site" / "socketlab"
    shipped = [path for pattern in ("*.py", "*.sh") for path in (REPO / PACKAGE_DIR).rglob(pattern)]
    for path in shipped:
        target = package / path.relative_to(REPO / PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    return data, package


def test_an_installed_package_gives_the_checkouts_context_and_digest(tmp_path: Path) -> None:
    data, package = installed_copy(tmp_path)
    sources = tmp_path / "cache" / "abc123"
    sources.mkdir(parents=True)
    (sources / "feedparser-6.0.14.tar.gz").write_bytes(b"sdist")
    installed = installed_inputs(data, package, sources_dir=tmp_path / "cache")
    from_checkout = checkout_inputs(REPO)
    assert sorted(installed.files) == sorted(from_checkout.files)
    assert files_digest(installed.files) == files_digest(from_checkout.files)
    where, files = context_of(installed, sources)
    assert where == "build/sources/abc123"
    assert "build/sources/abc123/feedparser-6.0.14.tar.gz" in files
    assert not any(
        "__pycache__" in name or name.endswith(".txt") for name in installed.context_files
    )


def test_the_build_context_is_a_plain_tar_of_exactly_those_files(tmp_path: Path) -> None:
    script = tmp_path / "install-venv.sh"
    script.write_text("#!/bin/sh\n")
    other = tmp_path / "x.py"
    other.write_text("x = 1\n")
    files = {"services/install-venv.sh": script, "services/socketlab/x.py": other}
    with build_context(files) as first, build_context(files) as second:
        raw = first.read()
        assert raw == second.read(), "the same files give the same stream"
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        members = {member.name: member for member in archive.getmembers()}
        assert sorted(members) == sorted(files)
        assert members["services/install-venv.sh"].mode == 0o755
        assert (
            members["services/socketlab/x.py"].uid,
            members["services/socketlab/x.py"].mtime,
        ) == (0, 0)
