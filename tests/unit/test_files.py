"""Path safety under the data root, listing, and the .part/verify/rename/resume logic."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from socketlab.files import (
    PartialDownload,
    PathRefused,
    TransferError,
    list_files,
    resolve_name,
    sha256_file,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_bytes(b"hello")
    (data / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    (tmp_path / "secret").write_text("outside")
    (data / "link-out").symlink_to(tmp_path / "secret")
    (data / "link-in").symlink_to(data / "a.txt")
    (data / "dir-out").symlink_to(tmp_path)
    (data / "x.part").write_bytes(b"partial")
    return data


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("../secret", "escapes", id="dotdot"),
        pytest.param("sub/../../secret", "escapes", id="dotdot-inner"),
        pytest.param("./a.txt", "escapes", id="dot"),
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("a.txt\x00.png", "NUL", id="nul"),
        pytest.param("..\\secret", "backslash", id="backslash"),
        pytest.param("sub\\b.bin", "backslash", id="backslash-sep"),
        pytest.param("a\nb", "control", id="control-char"),
        pytest.param("link-out", "outside", id="symlink-out"),
        pytest.param("dir-out/secret", "outside", id="symlink-dir-out"),
        pytest.param("sub", "not a regular file", id="directory"),
        pytest.param("missing.txt", "no such file", id="missing"),
        pytest.param("x" * 300, "too long", id="too-long"),
    ],
)
def test_names_that_escape_or_miss_are_refused(root: Path, name: str, match: str) -> None:
    with pytest.raises(PathRefused, match=match):
        resolve_name(root, name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a.txt", id="plain"),
        pytest.param("sub/b.bin", id="subdir"),
        pytest.param("link-in", id="symlink-in"),
    ],
)
def test_names_inside_resolve(root: Path, name: str) -> None:
    assert resolve_name(root, name).is_relative_to(root.resolve())


def test_list_skips_partials_and_escapes(root: Path) -> None:
    names = {entry.name: entry.size for entry in list_files(root)}
    assert names == {"a.txt": 5, "sub/b.bin": 10, "link-in": 5}


def test_sha256_file_with_limit(root: Path) -> None:
    assert sha256_file(root / "a.txt") == hashlib.sha256(b"hello").hexdigest()
    assert sha256_file(root / "a.txt", limit=2) == hashlib.sha256(b"he").hexdigest()


@pytest.mark.parametrize(
    "depth", [pytest.param(0, id="inline"), pytest.param(2, id="writer-thread")]
)
def test_download_verifies_then_renames(tmp_path: Path, depth: int) -> None:
    data = os.urandom(5000)
    download = PartialDownload(tmp_path, "dir/file.bin", writer_depth=depth)
    assert download.prefix_state() == (0, hashlib.sha256().hexdigest())
    download.open(offset=0)
    download.write(data[:3000])
    assert not download.final_path.exists()
    download.write(data[3000:])
    final = download.finish(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert final == tmp_path / "file.bin"
    assert final.read_bytes() == data
    assert not download.part_path.exists()


@pytest.mark.parametrize(
    "depth", [pytest.param(0, id="inline"), pytest.param(2, id="writer-thread")]
)
def test_download_resumes_from_part(tmp_path: Path, depth: int) -> None:
    data = os.urandom(5000)
    first = PartialDownload(tmp_path, "f.bin", writer_depth=depth)
    first.prefix_state()
    first.open(offset=0)
    first.write(data[:1234])
    first.close()  # interrupted
    second = PartialDownload(tmp_path, "f.bin")
    assert second.prefix_state() == (1234, hashlib.sha256(data[:1234]).hexdigest())
    second.open(offset=1234)
    second.write(data[1234:])
    assert second.finish(size=5000, sha256=hashlib.sha256(data).hexdigest()).read_bytes() == data


def test_download_restart_when_server_rejects_prefix(tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(b"garbage")
    download = PartialDownload(tmp_path, "f.bin")
    download.prefix_state()
    download.open(offset=0)
    download.write(b"good")
    assert (
        download.finish(size=4, sha256=hashlib.sha256(b"good").hexdigest()).read_bytes() == b"good"
    )


def test_corrupt_download_never_reaches_final_name(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin")
    download.prefix_state()
    download.open(offset=0)
    download.write(b"evil")
    with pytest.raises(TransferError, match="SHA-256 mismatch"):
        download.finish(size=4, sha256=hashlib.sha256(b"good").hexdigest())
    assert not (tmp_path / "f.bin").exists()
    assert not (tmp_path / "f.bin.part").exists()


def test_short_download_keeps_part_for_resume(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin")
    download.prefix_state()
    download.open(offset=0)
    download.write(b"go")
    with pytest.raises(TransferError, match="got 2 of 4"):
        download.finish(size=4, sha256="x")
    assert (tmp_path / "f.bin.part").read_bytes() == b"go"
    assert not (tmp_path / "f.bin").exists()


def test_unexpected_resume_offset_is_an_error(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin")
    download.prefix_state()
    with pytest.raises(TransferError, match="resumes at 10"):
        download.open(offset=10)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("..", id="dotdot"),
        pytest.param("/", id="root"),
        pytest.param("a/..", id="trailing-dotdot"),
    ],
)
def test_download_refuses_unsafe_local_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(PathRefused):
        _ = PartialDownload(tmp_path, name).final_path


@pytest.mark.parametrize(
    ("name", "local"),
    [
        pytest.param("../evil", "evil", id="dotdot"),
        pytest.param("/etc/passwd", "passwd", id="absolute"),
        pytest.param("..\\x", "x", id="backslash"),
        pytest.param("a\x00b", "a_b", id="nul"),
    ],
)
def test_download_local_name_stays_in_dest(tmp_path: Path, name: str, local: str) -> None:
    assert PartialDownload(tmp_path, name).final_path == tmp_path / local


def test_writer_thread_error_surfaces(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin", writer_depth=1)
    download.prefix_state()
    download.open(offset=0)
    assert download._handle is not None
    download._handle.close()  # the disk "fails" under the writer thread
    download.write(b"x" * 10)
    with pytest.raises((TransferError, ValueError)):
        download.finish(size=10, sha256="0")
