"""Base-image choice, apt mirror discovery and image input digests (no Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import ImageBuildError
from lab.images import (
    AptSource,
    base_mirror_lines,
    choose_base_image,
    local_base_tag,
    mmdebstrap_argv,
    parse_deb822_sources,
    parse_one_line_sources,
    stale_image_tags,
    tree_digest,
)

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


def test_stable_names_point_at_the_current_runtime_and_the_local_base() -> None:
    from lab.images import ImageSet, stable_tags  # noqa: PLC0415

    images = ImageSet(
        runtime="socketlab/runtime:abc",
        netkit="socketlab/netkit:def",
        base="socketlab/base:bookworm-1",
    )
    assert stable_tags(images) == [
        ("socketlab/runtime:abc", "socketlab/runtime:latest"),
        ("socketlab/base:bookworm-1", "socketlab/base:latest"),
    ]
    # pruning old sources never removes the stable names a project's Dockerfile builds FROM
    tags = ["socketlab/runtime:latest", "socketlab/runtime:old", "socketlab/netkit:latest"]
    assert stale_image_tags(tags, keep=[], in_use=[]) == ["socketlab/runtime:old"]
