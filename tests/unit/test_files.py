"""Path safety under the data root, listing, and the .part/verify/rename/resume logic."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab import files
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
    assert download._fd is not None
    # The disk "fails" under the writer thread: its descriptor now refuses writes.
    read_only = os.open(tmp_path / "other", os.O_RDONLY | os.O_CREAT)
    os.dup2(read_only, download._fd)
    os.close(read_only)
    download.write(b"x" * 10)
    with pytest.raises(TransferError, match=r"writing .*f\.bin\.part failed"):
        download.finish(size=10, sha256="0")
    assert not (tmp_path / "f.bin").exists()


class Pieces:
    """A ``recv_into`` over ``data``: at most ``sizes[i]`` bytes per call, 0 at the end."""

    def __init__(self, data: bytes, sizes: list[int], *, fail_after: int | None = None) -> None:
        self.data, self.sizes, self.pos, self.calls = data, sizes or [1], 0, 0
        self.fail_after = fail_after
        self.buffers: set[int] = set()

    def __call__(self, view: memoryview) -> int:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise TimeoutError("the peer went quiet")
        self.buffers.add(id(view.obj))
        size = min(len(view), self.sizes[self.calls % len(self.sizes)], len(self.data) - self.pos)
        if self.fail_after is not None:
            size = min(size, self.fail_after - self.pos)
        self.calls += 1
        view[:size] = self.data[self.pos : self.pos + size]
        self.pos += size
        return size


def receive_all(download: PartialDownload, source: Pieces, size: int) -> None:
    left = size
    while left:
        got = download.receive(source, left)
        assert 0 < got <= min(left, download.chunk_size)
        left -= got


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=20_000),
    sizes=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=8),
    chunk=st.integers(min_value=1, max_value=4096),
    depth=st.integers(min_value=0, max_value=3),
    head=st.integers(min_value=0, max_value=100),
)
def test_received_pieces_arrive_whole_and_verified(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    data: bytes,
    sizes: list[int],
    chunk: int,
    depth: int,
    head: int,
) -> None:
    dest = tmp_path_factory.mktemp("dl")
    download = PartialDownload(dest, "f.bin", writer_depth=depth, chunk_size=chunk)
    download.prefix_state()
    download.open(offset=0)
    head = min(head, len(data))
    download.write(data[:head])  # what came with the header, already decoded
    source = Pieces(data[head:], sizes)
    receive_all(download, source, len(data) - head)
    assert download.receive(source, 10) == 0  # EOF: nothing more, nothing lost
    final = download.finish(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert final.read_bytes() == data
    # memory stays bounded: the same few buffers go round
    assert len(source.buffers) <= max(depth, 1)


def test_received_bytes_before_a_failure_stay_in_the_part(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    download = PartialDownload(tmp_path, "f.bin", writer_depth=2, chunk_size=4096)
    download.prefix_state()
    download.open(offset=0)
    source = Pieces(data, [1000], fail_after=6500)
    with pytest.raises(TimeoutError):
        receive_all(download, source, len(data))
    assert download.offset == 6500
    download.close()  # as fetch does when the peer fails: keep what we have
    assert (tmp_path / "f.bin.part").read_bytes() == data[:6500]
    again = PartialDownload(tmp_path, "f.bin", writer_depth=2, chunk_size=4096)
    assert again.prefix_state() == (6500, hashlib.sha256(data[:6500]).hexdigest())
    again.open(offset=6500)
    receive_all(again, Pieces(data[6500:], [777]), len(data) - 6500)
    assert again.finish(size=len(data), sha256=hashlib.sha256(data).hexdigest()).read_bytes() == (
        data
    )


def _write_resumed_in_chunks(tmp_path: Path) -> bytes:
    """A download resumed at 1000, written in 4000-byte chunks: 1000, 5000, 9000 (1000)."""
    data = os.urandom(10_000)
    (tmp_path / "f.bin.part").write_bytes(data[:1000])
    download = PartialDownload(
        tmp_path, "f.bin", writer_depth=2, chunk_size=4000, write_behind=True
    )
    download.prefix_state()
    download.open(offset=1000)
    receive_all(download, Pieces(data[1000:], [4000]), 9000)
    download.finish(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    return data


def _record_fadvise(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[Any, ...]]) -> None:
    real = os.posix_fadvise

    def record(fd: int, offset: int, length: int, what: int) -> None:
        calls.append(("fadvise", offset, length, what))
        real(fd, offset, length, what)

    monkeypatch.setattr(os, "posix_fadvise", record)


def test_write_behind_writes_each_chunk_out_then_waits_for_and_drops_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = files.sync_file_range()
    assert real is not None  # Linux's libc has it: the test runs the real call too
    calls: list[tuple[Any, ...]] = []

    def record(fd: int, offset: int, length: int, flags: int) -> None:
        calls.append(("sync", offset, length, flags))
        real(fd, offset, length, flags)

    monkeypatch.setattr(files, "sync_file_range", lambda: record)
    _record_fadvise(monkeypatch, calls)
    data = _write_resumed_in_chunks(tmp_path)
    start, wait_all, dontneed = files.SYNC_FILE_RANGE_WRITE, 7, os.POSIX_FADV_DONTNEED
    assert wait_all == files.SYNC_FILE_RANGE_WAIT_ALL
    assert calls == [
        ("sync", 1000, 4000, start),
        ("sync", 5000, 4000, start),
        ("sync", 1000, 4000, wait_all),
        ("fadvise", 1000, 4000, dontneed),
        ("sync", 9000, 1000, start),
        ("sync", 5000, 4000, wait_all),
        ("fadvise", 5000, 4000, dontneed),
    ]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_without_sync_file_range_write_behind_falls_back_to_dontneed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(files, "sync_file_range", lambda: None)
    _record_fadvise(monkeypatch, calls)
    data = _write_resumed_in_chunks(tmp_path)
    dontneed = os.POSIX_FADV_DONTNEED
    assert calls == [
        ("fadvise", 1000, 4000, dontneed),
        ("fadvise", 5000, 4000, dontneed),
        ("fadvise", 1000, 4000, dontneed),
        ("fadvise", 9000, 1000, dontneed),
        ("fadvise", 5000, 4000, dontneed),
    ]
    assert (tmp_path / "f.bin").read_bytes() == data


@pytest.mark.parametrize("code", [errno.EPERM, errno.ENOSYS, errno.EINVAL])
def test_a_refused_sync_file_range_falls_back_to_dontneed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls: list[tuple[Any, ...]] = []

    def refused(fd: int, offset: int, length: int, flags: int) -> None:
        raise OSError(code, os.strerror(code))  # a seccomp profile, a file system without it

    monkeypatch.setattr(files, "sync_file_range", lambda: refused)
    _record_fadvise(monkeypatch, calls)
    data = _write_resumed_in_chunks(tmp_path)  # the download completes, verified
    assert [c[1:3] for c in calls] == [
        (1000, 4000),
        (5000, 4000),
        (1000, 4000),
        (9000, 1000),
        (5000, 4000),
    ]
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_writeback_error_stops_the_download_and_keeps_no_final_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int, offset: int, length: int, flags: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(files, "sync_file_range", lambda: failing)
    with pytest.raises(TransferError, match="Input/output error"):
        _write_resumed_in_chunks(tmp_path)
    assert not (tmp_path / "f.bin").exists()


def test_sync_file_range_reports_errors_as_oserror(tmp_path: Path) -> None:
    sync = files.sync_file_range()
    assert sync is not None
    with pytest.raises(OSError, match="Bad file descriptor") as caught:
        sync(-1, 0, 0, files.SYNC_FILE_RANGE_WRITE)
    assert caught.value.errno == errno.EBADF


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"writer_depth": -1}, id="depth"),
        pytest.param({"chunk_size": 0}, id="chunk"),
    ],
)
def test_download_options_are_checked(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PartialDownload(tmp_path, "f.bin", **kwargs)


def test_receive_before_open_and_without_a_count(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin")
    with pytest.raises(TransferError, match="before open"):
        download.receive(Pieces(b"x", [1]), 1)
    download.prefix_state()
    download.open(offset=0)
    with pytest.raises(ValueError, match="positive count"):
        download.receive(Pieces(b"x", [1]), 0)
    download.close()


def test_abort_stops_the_pipeline_and_keeps_the_part(tmp_path: Path) -> None:
    download = PartialDownload(tmp_path, "f.bin", writer_depth=2, chunk_size=100)
    download.prefix_state()
    download.open(offset=0)
    download.write(b"a" * 250)
    threads = download._threads
    download.abort()
    assert all(not thread.is_alive() for thread in threads)
    assert download._fd is None
    assert (tmp_path / "f.bin.part").read_bytes() == b"a" * 250
    download.abort()  # twice is harmless
