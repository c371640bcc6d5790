"""Base-image and builder-stage choice, apt mirror discovery, pinned sources, pip commands
and image input digests (no Docker)."""

from __future__ import annotations

import itertools
import re
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lab import images
from lab.errors import ImageBuildError
from lab.images import (
    BASE_PACKAGES,
    BUILD_BASE_PACKAGES,
    BUILD_PACKAGES,
    BUILD_TOOLS_FILE,
    LOCK_FILES,
    NETKIT_PACKAGES,
    AptSource,
    BaseChoice,
    ImageNames,
    ImagesConfig,
    Pin,
    base_mirror_lines,
    check_downloads,
    checkout_inputs,
    choose_base_image,
    ensure_sources,
    image_digest,
    local_base_tag,
    mmdebstrap_argv,
    parse_deb822_sources,
    parse_lock,
    parse_one_line_sources,
    plan_stages,
    sdist_download_argv,
    stale_image_tags,
    tools_download_argv,
    tree_digest,
)
from socketlab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main contrib

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://src-only.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# comment
deb [signed-by=/usr/share/keyrings/x.gpg arch=amd64] http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb http://third.party/repo stable main
deb http://mirror.example/debian bookworm-updates contrib
"""


@pytest.mark.parametrize(
    ("present", "pullable", "image", "local"),
    [
        pytest.param(True, False, "python:3.11-slim", False, id="present"),
        pytest.param(False, True, "python:3.11-slim", False, id="pullable"),
        pytest.param(False, False, "socketlab/base:bookworm-abc", True, id="offline-fallback"),
    ],
)
def test_base_image_choice(present: bool, pullable: bool, image: str, local: bool) -> None:
    choice = choose_base_image(
        requested="python:3.11-slim",
        present=present,
        pullable=pullable,
        local_image="socketlab/base:bookworm-abc",
    )
    assert (choice.image, choice.build_local) == (image, local)
    assert choice.reason


def test_deb822_parsing_expands_uris_and_suites_and_skips_disabled() -> None:
    assert parse_deb822_sources(DEB822) == [
        AptSource(uri="http://deb.debian.org/debian", suite="bookworm", components=("main",)),
        AptSource(
            uri="http://deb.debian.org/debian", suite="bookworm-updates", components=("main",)
        ),
        AptSource(
            uri="http://deb.debian.org/debian-security",
            suite="bookworm-security",
            components=("main", "contrib"),
        ),
    ]


def test_one_line_parsing_drops_options_and_deb_src() -> None:
    sources = parse_one_line_sources(ONE_LINE)
    assert sources[0] == AptSource(
        uri="http://mirror.example/debian", suite="bookworm", components=("main", "contrib")
    )
    assert len(sources) == 3


def test_mirrors_keep_only_the_release_and_main() -> None:
    sources = parse_deb822_sources(DEB822) + parse_one_line_sources(ONE_LINE)
    assert base_mirror_lines(sources, "bookworm") == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
        "deb http://mirror.example/debian bookworm main",
    ]


def test_mmdebstrap_argv_lists_packages_and_mirrors() -> None:
    argv = mmdebstrap_argv(
        suite="bookworm",
        mirrors=["deb http://m/debian bookworm main"],
        packages=["python3", "iproute2"],
        output="/tmp/out.tar",
    )
    assert argv[0] == "mmdebstrap"
    assert "--include=iproute2,python3" in argv
    assert argv[-3:] == ["bookworm", "/tmp/out.tar", "deb http://m/debian bookworm main"]


def test_mmdebstrap_without_mirror_is_a_clear_error() -> None:
    with pytest.raises(ImageBuildError, match="no apt mirror"):
        mmdebstrap_argv(suite="bookworm", mirrors=[], packages=["python3"], output="x")


def test_local_base_tag_depends_on_the_package_set_not_its_order() -> None:
    assert local_base_tag("bookworm", ["a", "b"]) == local_base_tag("bookworm", ["b", "a"])
    assert local_base_tag("bookworm", ["a"]) != local_base_tag("bookworm", ["a", "b"])
    assert local_base_tag("bookworm", ["a"]).startswith("socketlab/base:bookworm-")


def test_tree_digest_changes_with_content_and_ignores_pycache(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    first = tree_digest(tmp_path, [package])
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert tree_digest(tmp_path, [package]) == first, "bytecode caches do not count"
    (package / "a.py").write_text("x = 2\n")
    assert tree_digest(tmp_path, [package]) != first
    assert tree_digest(tmp_path, [package], extra=["netkit"]) != tree_digest(tmp_path, [package])


def test_prune_keeps_the_current_images_those_in_use_and_other_repositories() -> None:
    tags = [
        "socketlab/runtime:new",
        "socketlab/netkit:new",
        "socketlab/runtime:old",
        "socketlab/netkit:old",
        "socketlab/runtime:running",
        "socketlab/base:bookworm-abc",
        "python:3.11-slim",
    ]
    stale = stale_image_tags(
        tags,
        keep=["socketlab/runtime:new", "socketlab/netkit:new"],
        in_use=["socketlab/runtime:running"],
    )
    assert stale == ["socketlab/netkit:old", "socketlab/runtime:old"]


def test_prune_only_touches_its_own_namespace() -> None:
    tags = ["socketlab/runtime:old", "fresh/runtime:old", "fresh/netkit:new"]
    stale = stale_image_tags(
        tags, keep=["fresh/netkit:new"], in_use=[], names=ImageNames(namespace="fresh")
    )
    assert stale == ["fresh/runtime:old"]


def test_image_names_follow_the_namespace() -> None:
    names = ImageNames(namespace="team/lab")
    assert (names.base, names.build_base, names.runtime, names.netkit) == (
        "team/lab/base",
        "team/lab/build-base",
        "team/lab/runtime",
        "team/lab/netkit",
    )
    assert local_base_tag("bookworm", ["a"], repo=names.build_base).startswith(
        "team/lab/build-base:bookworm-"
    )


@pytest.mark.parametrize("namespace", ["Upper", "a//b", "-x", "x y", ""])
def test_a_bad_namespace_is_a_config_error(namespace: str) -> None:
    with pytest.raises(ConfigError, match="SOCKETLAB_IMAGE_NAMESPACE"):
        ImagesConfig(namespace=namespace)


def test_images_config_reads_the_environment() -> None:
    config = ImagesConfig.from_env(
        {"SOCKETLAB_BASE_IMAGE": "python:3.12-slim", "SOCKETLAB_IMAGE_NAMESPACE": "fresh-1"}
    )
    assert (config.base_image, config.namespace) == ("python:3.12-slim", "fresh-1")
    assert ImagesConfig.from_env({}) == ImagesConfig()


# --------------------------------------------------------------------------- stages

LOCAL = BaseChoice(image="socketlab/base:bookworm-abc", build_local=True, reason="offline")
REGISTRY = BaseChoice(image="python:3.11-slim", build_local=False, reason="present")


def test_offline_the_builder_is_the_local_build_base_and_the_build_has_no_network() -> None:
    plan = plan_stages(
        LOCAL, local_base="socketlab/base:bookworm-abc", build_base="socketlab/build-base:b-1"
    )
    assert plan.runtime_base == plan.netkit_base == "socketlab/base:bookworm-abc"
    assert plan.builder_base == "socketlab/build-base:b-1"
    assert plan.network is False


def test_with_a_registry_every_stage_starts_from_the_base_image() -> None:
    plan = plan_stages(REGISTRY, local_base="", build_base="")
    assert plan.bases == ("python:3.11-slim",) * 3
    assert plan.network is True
    assert plan.build_packages == BUILD_PACKAGES
    assert plan.netkit_packages == NETKIT_PACKAGES


def test_build_args_carry_bases_packages_and_sources() -> None:
    plan = plan_stages(LOCAL, local_base="b:1", build_base="bb:1")
    args = plan.buildargs("build/sources/abc")
    assert args == {
        "BASE_IMAGE": "b:1",
        "NETKIT_BASE": "b:1",
        "BUILDER_BASE": "bb:1",
        "NETKIT_PACKAGES": " ".join(NETKIT_PACKAGES),
        "BUILD_PACKAGES": " ".join(BUILD_PACKAGES),
        "SOURCES": "build/sources/abc",
    }


def test_offline_bases_already_hold_every_package_the_stages_would_install() -> None:
    # Offline the build has no network: a package the stage would need to
    # install and the base lacks would fail the build.
    assert set(NETKIT_PACKAGES) <= set(BASE_PACKAGES)
    assert set(BUILD_PACKAGES) | {"python3-dev"} <= set(BUILD_BASE_PACKAGES)
    # the builder compiles for the runtime's python3: both bases have the same one
    assert {"python3", "python3-venv"} <= set(BASE_PACKAGES) & set(BUILD_BASE_PACKAGES)
    # and the runtime base stays free of compilers
    assert not {"gcc", "python3-dev", "libc6-dev"} & set(BASE_PACKAGES)


def dockerfile_default(name: str) -> str:
    text = (REPO / "services/Dockerfile").read_text()
    match = re.search(rf'^ARG {name}="([^"]*)"$', text, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_dockerfile_package_defaults_match_the_controller() -> None:
    assert dockerfile_default("NETKIT_PACKAGES").split() == list(NETKIT_PACKAGES)
    assert dockerfile_default("BUILD_PACKAGES").split() == list(BUILD_PACKAGES)


def test_image_digest_covers_sources_bases_plan_and_target(tmp_path: Path) -> None:
    for name in images.IMAGE_INPUTS:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("socketlab"):
            path.mkdir(exist_ok=True)
            (path / "a.py").write_text("x = 1\n")
        else:
            path.write_text(name)
    sources = tmp_path / "build/sources/k"
    sources.mkdir(parents=True)
    (sources / "feedparser-6.0.14.tar.gz").write_bytes(b"one")
    plan = plan_stages(LOCAL, local_base="b:1", build_base="bb:1")

    def key(**changes: object) -> str:
        options: dict[str, object] = {
            "target": "runtime",
            "sources": sources,
            "plan": plan,
            "base_ids": ["sha256:1", "sha256:1", "sha256:2"],
        }
        options.update(changes)
        return image_digest(checkout_inputs(tmp_path), **options)  # type: ignore[arg-type]

    first = key()
    assert key() == first, "same inputs, same tag: a second lab up builds nothing"
    assert key(target="netkit") != first
    assert key(base_ids=["sha256:1", "sha256:1", "sha256:3"]) != first
    assert key(plan=plan_stages(REGISTRY, local_base="", build_base="")) != first
    (sources / "feedparser-6.0.14.tar.gz").write_bytes(b"two")
    assert key() != first
    (sources / "feedparser-6.0.14.tar.gz").write_bytes(b"one")
    (tmp_path / "services/build-wheels.sh").write_text("changed")
    assert key() != first


# --------------------------------------------------------------------------- locks and pip


def test_lock_lines_must_be_pinned() -> None:
    text = "# comment\n\nfeedparser==6.0.14  # why\nFeedparser_SGMLlib == 2.1.0\n"
    assert parse_lock(text, source="r.txt") == [
        Pin(name="feedparser", version="6.0.14"),
        Pin(name="Feedparser_SGMLlib", version="2.1.0"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("feedparser>=6.0.10", id="range"),
        pytest.param("feedparser", id="bare"),
        pytest.param("-r other.txt", id="option"),
        pytest.param("https://example.org/x.tar.gz", id="url"),
        pytest.param("feedparser[extra]==6.0.14", id="extra"),
        pytest.param('feedparser==6.0.14; python_version < "3.12"', id="marker"),
    ],
)
def test_unpinned_lock_lines_are_refused_with_file_and_line(line: str) -> None:
    with pytest.raises(ImageBuildError, match=r"^r\.txt:2: .* is not pinned as name==version$"):
        parse_lock(f"defusedxml==0.7.1\n{line}\n", source="r.txt")


def test_a_package_pinned_twice_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="pinned twice"):
        parse_lock("a-b==1\nA_B==2\n", source="r.txt")


def locked(name: str) -> list[Pin]:
    return parse_lock((REPO / name).read_text(), source=name)


def test_the_repositorys_locks_pin_everything_and_meet_pyprojects_bounds() -> None:
    pins = {pin.key: pin for name in LOCK_FILES for pin in locked(name)}
    assert {"feedparser", "feedparser-sgmllib", "defusedxml"} <= set(pins)
    # the shaping engine speaks netlink itself: no compiled binding, nothing to Cythonize
    assert not {"netfilterqueue"} & set(pins)
    assert "cython" not in {pin.key for pin in locked(BUILD_TOOLS_FILE)}
    assert "setuptools" in {pin.key for pin in locked(BUILD_TOOLS_FILE)}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        pin = pins.get(images.normalize_name(requirement.name))
        if pin is not None:
            assert requirement.specifier.contains(pin.version), (spec, pin)


PINS = [Pin(name="feedparser", version="6.0.14"), Pin(name="NetfilterQueue", version="1.1.0")]
TOOLS = [Pin(name="setuptools", version="84.2.1"), Pin(name="cython", version="3.3.1")]


def test_sdists_are_downloaded_without_deps_and_only_pinned_names_forced_to_source() -> None:
    argv = sdist_download_argv("/venv/python", dest="/d", lock_files=["a.txt", "b.txt"], pins=PINS)
    assert argv[:4] == ["/venv/python", "-m", "pip", "download"]
    assert "--no-deps" in argv
    assert argv[argv.index("--no-binary") + 1] == "feedparser,netfilterqueue"
    assert argv[-4:] == ["-r", "a.txt", "-r", "b.txt"]
    assert "wheel" not in argv, "pip download, never pip wheel: nothing compiles on the host"


def test_build_tools_are_downloaded_as_pure_wheels_whatever_the_hosts_python() -> None:
    argv = tools_download_argv("/venv/python", dest="/d", tools_file="t.txt")
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--only-binary"] == ":all:"
    assert (pairs["--platform"], pairs["--implementation"], pairs["--abi"]) == ("any", "py", "none")
    assert "--python-version" not in argv


GOOD_FILES = [
    "feedparser-6.0.14.tar.gz",
    "NetfilterQueue-1.1.0.tar.gz",
    "setuptools-84.2.1-py3-none-any.whl",
    "cython-3.3.1-py3-none-any.whl",
    "requirements.txt",
]


def test_downloads_with_every_sdist_and_pure_tool_pass() -> None:
    check_downloads(GOOD_FILES, sdists=PINS, tools=TOOLS)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            [f for f in GOOD_FILES if f != "NetfilterQueue-1.1.0.tar.gz"],
            "no sdist downloaded for NetfilterQueue==1.1.0",
            id="missing-sdist",
        ),
        pytest.param(
            [
                *(f for f in GOOD_FILES if not f.startswith("feedparser")),
                "feedparser-6.0.14-py3-none-any.whl",
            ],
            "no sdist downloaded for feedparser==6.0.14",
            id="wheel-instead-of-sdist",
        ),
        pytest.param(
            [
                *(f for f in GOOD_FILES if not f.startswith("cython")),
                "cython-3.3.1-cp313-cp313-manylinux_2_17_x86_64.whl",
            ],
            "no pure wheel",
            id="compiled-tool",
        ),
        pytest.param(
            [f for f in GOOD_FILES if not f.startswith("setuptools")],
            "no wheel downloaded for build tool setuptools==84.2.1",
            id="missing-tool",
        ),
    ],
)
def test_bad_downloads_are_refused(files: Sequence[str], message: str) -> None:
    with pytest.raises(ImageBuildError, match=re.escape(message)):
        check_downloads(files, sdists=PINS, tools=TOOLS)


def fake_checkout(root: Path) -> None:
    (root / "services").mkdir(parents=True)
    (root / "services/requirements.txt").write_text("feedparser==6.0.14\n")
    (root / "services/requirements-netkit.txt").write_text("NetfilterQueue==1.1.0\n")
    (root / "services/requirements-build.txt").write_text("setuptools==84.2.1\n")


def test_sources_are_downloaded_once_per_set_of_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_checkout(tmp_path)
    calls: list[list[str]] = []

    def download(argv: Sequence[str], what: str) -> None:
        calls.append(list(argv))
        dest = Path(argv[argv.index("--dest") + 1])
        if "--no-binary" in argv:
            (dest / "feedparser-6.0.14.tar.gz").write_bytes(b"f")
            (dest / "NetfilterQueue-1.1.0.tar.gz").write_bytes(b"n")
        else:
            (dest / "setuptools-84.2.1-py3-none-any.whl").write_bytes(b"s")

    monkeypatch.setattr(images, "_pip_download", download)
    folder = ensure_sources(tmp_path, lambda _m: None, python="py")
    assert len(calls) == 2
    assert folder.parent == tmp_path / "build/sources"
    assert {p.name for p in folder.iterdir()} == {
        "feedparser-6.0.14.tar.gz",
        "NetfilterQueue-1.1.0.tar.gz",
        "setuptools-84.2.1-py3-none-any.whl",
        "requirements.txt",
        "requirements-netkit.txt",
        "requirements-build.txt",
        ".complete",
    }
    assert ensure_sources(tmp_path, lambda _m: None, python="py") == folder
    assert len(calls) == 2, "an unchanged lock downloads nothing"
    (tmp_path / "services/requirements.txt").write_text("feedparser==6.0.13\n")
    with pytest.raises(
        ImageBuildError, match=re.escape("no sdist downloaded for feedparser==6.0.13")
    ):
        ensure_sources(tmp_path, lambda _m: None, python="py")
    assert len(calls) == 4


def test_an_unpinned_lock_stops_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_checkout(tmp_path)
    (tmp_path / "services/requirements.txt").write_text("feedparser>=6\n")
    monkeypatch.setattr(images, "_pip_download", lambda *_a: pytest.fail("downloaded"))
    with pytest.raises(ImageBuildError, match=re.escape("requirements.txt:1")):
        ensure_sources(tmp_path, lambda _m: None, python="py")


def test_a_failed_pip_download_is_one_line_without_the_command(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match=r"^downloading x failed \(pip download exited 3;"):
        images._pip_download([sys.executable, "-c", "import sys; sys.exit(3)"], "x")
    with pytest.raises(ImageBuildError, match=r"^cannot run pip to download x"):
        images._pip_download([str(tmp_path / "no-such-python")], "x")


def test_stable_names_point_at_the_current_runtime_and_the_local_base() -> None:
    from lab.images import ImageSet, stable_tags  # noqa: PLC0415 - only this test

    images = ImageSet(
        runtime="socketlab/runtime:abc",
        netkit="socketlab/netkit:def",
        base="socketlab/base:bookworm-1",
    )
    assert stable_tags(images, ImageNames()) == [
        ("socketlab/runtime:abc", "socketlab/runtime:latest"),
        ("socketlab/base:bookworm-1", "socketlab/base:latest"),
    ]
    # pruning old sources never removes the stable names a project's Dockerfile builds FROM
    tags = ["socketlab/runtime:latest", "socketlab/runtime:old", "socketlab/netkit:latest"]
    assert stale_image_tags(tags, keep=[], in_use=[]) == ["socketlab/runtime:old"]
