"""Files under a data root: safe names, listing, hashing, and the client's `.part` logic.

Server side, every name a peer sends goes through :func:`resolve_name`, which
refuses anything that could leave the root: empty names, NUL bytes,
backslashes, absolute paths, ``..`` components, and (after resolving) symlinks
that point outside. Client side, a download is written to ``NAME.part``,
fsynced, verified against the SHA-256 the server announced, and only then
renamed to ``NAME``; an interrupted download resumes from the ``.part`` length
once the server has confirmed the prefix hash.

::

    SocketlabError
    ├── PathRefused      a name that escapes the data root or is not a regular file
    └── TransferError    a transfer could not be completed or verified
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from socketlab.errors import SocketlabError

PART_SUFFIX: Final = ".part"
HASH_CHUNK: Final = 1024 * 1024
MAX_NAME: Final = 255


class PathRefused(SocketlabError):
    """A file name that escapes the data root, or names no regular file."""


class TransferError(SocketlabError):
    """A transfer could not be completed or verified."""


@dataclass(frozen=True)
class FileEntry:
    """One file the server offers."""

    name: str
    size: int


def check_name(name: str) -> PurePosixPath:
    """Lexical checks on a peer-supplied relative name; returns it as a path."""
    if not isinstance(name, str) or not name:
        raise PathRefused("file name is empty")
    if len(name) > MAX_NAME:
        raise PathRefused("file name is too long")
    if "\x00" in name:
        raise PathRefused("file name contains a NUL byte")
    if "\\" in name:
        raise PathRefused("file name contains a backslash")
    if any(ord(ch) < 32 for ch in name):
        raise PathRefused("file name contains a control character")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise PathRefused(f"absolute path {name!r} refused")
    if any(part in {"..", "."} for part in name.split("/")) or not path.parts:
        raise PathRefused(f"path {name!r} escapes the data root")
    return path


def resolve_name(root: Path, name: str) -> Path:
    """The real path of ``name`` under ``root``; PathRefused if it is anything else."""
    relative = check_name(name)
    real_root = root.resolve(strict=True)
    try:
        real = (real_root / relative).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise PathRefused(f"no such file: {name!r}") from exc
    except (OSError, RuntimeError) as exc:  # symlink loops raise RuntimeError/OSError
        raise PathRefused(f"cannot resolve {name!r}: {exc}") from exc
    if not real.is_relative_to(real_root):
        raise PathRefused(f"{name!r} leads outside the data root")
    if not stat.S_ISREG(real.stat().st_mode):
        raise PathRefused(f"{name!r} is not a regular file")
    return real


def list_files(root: Path) -> list[FileEntry]:
    """Regular files under ``root`` (recursively), skipping hidden, partial and escaping ones."""
    real_root = root.resolve(strict=True)
    entries: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(real_root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith(".") or filename.endswith((PART_SUFFIX, ".tmp")):
                continue
            name = (Path(dirpath) / filename).relative_to(real_root).as_posix()
            try:
                path = resolve_name(real_root, name)
            except PathRefused:
                continue
            entries.append(FileEntry(name=name, size=path.stat().st_size))
    return entries


def iter_chunks(handle: BinaryIO, *, limit: int | None = None) -> Iterator[bytes]:
    """Chunks from ``handle``'s position, up to ``limit`` bytes when given."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = HASH_CHUNK if remaining is None else min(HASH_CHUNK, remaining)
        chunk = handle.read(size)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def sha256_file(path: Path, *, limit: int | None = None) -> str:
    """Hex SHA-256 of ``path`` (of its first ``limit`` bytes when given)."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter_chunks(handle, limit=limit):
            hasher.update(chunk)
    return hasher.hexdigest()


def local_name(name: str) -> str:
    """The file name a download of ``name`` is saved under: its last component, tamed.

    The client asks the server for any name (the server decides what is
    allowed); locally it only ever writes a plain file name inside ``dest``.
    """
    last = PurePosixPath(name.replace("\\", "/")).name
    tamed = "".join("_" if ord(ch) < 32 else ch for ch in last)
    if tamed in {"", ".", ".."} or len(tamed) > MAX_NAME:
        raise PathRefused(f"cannot save {name!r} under a safe local name")
    return tamed


@dataclass
class PartialDownload:
    """The client's side of a fetch: ``NAME.part`` grows, is verified, then renamed.

    Call :meth:`open` (which reports where to resume), :meth:`write` the
    content, then :meth:`finish`. Nothing ever appears under the final name
    unless its SHA-256 matched.

    With ``writer_depth`` > 0 the disk writes run in a background thread
    (hashing stays with the caller), so receiving, hashing and writing overlap;
    at most ``writer_depth`` chunks wait in memory, and :meth:`close` drains
    them before it fsyncs.
    """

    dest: Path
    name: str
    writer_depth: int = 0
    _handle: BinaryIO | None = None
    _hasher: hashlib._Hash | None = None
    offset: int = 0
    _queue: queue.Queue[bytes | None] | None = None
    _writer: threading.Thread | None = None
    _writer_error: OSError | ValueError | None = None

    @property
    def final_path(self) -> Path:
        return self.dest / local_name(self.name)

    @property
    def part_path(self) -> Path:
        return self.dest / (local_name(self.name) + PART_SUFFIX)

    def prefix_state(self) -> tuple[int, str]:
        """Length and SHA-256 of what a previous attempt left in ``.part`` (0 if none)."""
        self._hasher = hashlib.sha256()
        self.offset = 0
        if self.part_path.exists():
            with self.part_path.open("rb") as handle:
                for chunk in iter_chunks(handle):
                    self._hasher.update(chunk)
                    self.offset += len(chunk)
        return self.offset, self._hasher.hexdigest()

    def open(self, *, offset: int) -> None:
        """Start writing at ``offset``: the resume point the server agreed to (0 = restart)."""
        self.dest.mkdir(parents=True, exist_ok=True)
        if offset not in {0, self.offset}:
            raise TransferError(f"server resumes at {offset}, we hold {self.offset} bytes")
        if offset == 0:
            self._hasher = hashlib.sha256()
            self.offset = 0
        handle = self.part_path.open("r+b" if self.part_path.exists() else "w+b")
        handle.truncate(offset)
        handle.seek(offset)
        self._handle = handle
        if self.writer_depth > 0:
            self._queue = queue.Queue(maxsize=self.writer_depth)
            self._writer = threading.Thread(
                target=self._write_loop, args=(self._queue, handle), name="part-writer", daemon=True
            )
            self._writer.start()

    def write(self, data: bytes) -> None:
        if self._handle is None or self._hasher is None:
            raise TransferError("write before open")
        self._hasher.update(data)
        self.offset += len(data)
        if self._queue is None:
            self._handle.write(data)
            return
        self._check_writer()
        self._queue.put(data)  # blocks when the disk is behind: back-pressure to the socket

    def _write_loop(self, chunks: queue.Queue[bytes | None], handle: BinaryIO) -> None:
        while (item := chunks.get()) is not None:
            if self._writer_error is None:
                try:
                    handle.write(item)
                except (OSError, ValueError) as exc:  # ValueError: the file was closed
                    self._writer_error = exc  # reported to the caller by _check_writer

    def _check_writer(self) -> None:
        if self._writer_error is not None:
            raise TransferError(f"writing {self.part_path} failed: {self._writer_error}") from (
                self._writer_error
            )

    def _stop_writer(self) -> None:
        if self._writer is not None and self._queue is not None:
            self._queue.put(None)
            self._writer.join()
        self._writer, self._queue = None, None

    def flush(self) -> None:
        """Make what arrived so far durable, so a later run can resume from it."""
        self._stop_writer()
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        self._check_writer()

    def close(self) -> None:
        if self._handle is not None:
            try:
                self.flush()
            finally:
                self._handle.close()
                self._handle = None

    def finish(self, *, size: int, sha256: str) -> Path:
        """fsync, verify size and hash, rename to the final name; returns it."""
        self.close()
        if self.offset != size:
            raise TransferError(f"got {self.offset} of {size} bytes; kept {self.part_path.name}")
        actual = self._hasher.hexdigest() if self._hasher else ""
        if actual != sha256:
            # A corrupt .part must not seed a resume either.
            self.part_path.unlink(missing_ok=True)
            raise TransferError(f"SHA-256 mismatch for {self.name}: got {actual}, want {sha256}")
        os.replace(self.part_path, self.final_path)
        _fsync_dir(self.dest)
        return self.final_path


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
