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

import ctypes
import errno
import functools
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from socketlab.errors import SocketlabError

PART_SUFFIX: Final = ".part"
HASH_CHUNK: Final = 1024 * 1024
# One receive buffer: big enough that per-chunk costs (a queue hand-off, a write
# call, a writeback request) vanish at 10 Gbit/s, small enough that the ring of
# them a download keeps stays in the CPU's cache (see socketlab.client.fetch).
CHUNK_SIZE: Final = 2 * 1024 * 1024
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


ReadInto = Callable[[memoryview], int]


Filled = tuple[bytearray, int]  # a buffer and how many of its bytes are content


@dataclass
class PartialDownload:
    """The client's side of a fetch: ``NAME.part`` grows, is verified, then renamed.

    Call :meth:`open` (which reports where to resume), feed the content with
    :meth:`receive` (straight from the socket into our buffers) or
    :meth:`write` (bytes already in hand), then :meth:`finish`. Nothing ever
    appears under the final name unless its SHA-256 matched.

    Content lands in ``chunk_size`` buffers and is hashed and written from
    that same memory: no copy between the socket and the file but the
    kernel's. With ``writer_depth`` > 0 the buffers (that many, allocated once)
    go round a pipeline, receiver -> hasher thread -> writer thread -> back to
    the receiver, so receiving, hashing and the disk overlap, memory is bounded,
    and a slow disk slows the receiver (and through TCP the sender).
    :meth:`close` drains the pipeline before it fsyncs. With ``write_behind``
    the writer asks the kernel to write each chunk out at once (and to forget
    the ones already on disk), so the disk works while the transfer runs
    instead of during the final fsync, and a big download does not crowd the
    page cache. With ``writer_depth`` 0 the caller hashes and writes each
    buffer itself.
    """

    dest: Path
    name: str
    writer_depth: int = 0
    chunk_size: int = CHUNK_SIZE
    write_behind: bool = False
    offset: int = 0
    _fd: int | None = None
    _hasher: hashlib._Hash | None = None
    _free: queue.Queue[bytearray] | None = None  # buffers the receiver may fill
    _to_hash: queue.Queue[Filled | None] | None = None
    _inline: bytearray | None = None  # the one buffer without a pipeline
    _threads: tuple[threading.Thread, ...] = ()
    _writer_error: OSError | None = None

    def __post_init__(self) -> None:
        if self.writer_depth < 0 or self.chunk_size < 1:
            raise ValueError("writer_depth must be >= 0 and chunk_size >= 1")

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
        fd = os.open(self.part_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        if self.writer_depth == 0:
            self._inline = bytearray(self.chunk_size)
            return
        free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(self.writer_depth):
            free.put(bytearray(self.chunk_size))
        to_hash: queue.Queue[Filled | None] = queue.Queue()
        to_write: queue.Queue[Filled | None] = queue.Queue()
        self._free, self._to_hash = free, to_hash
        self._threads = (
            threading.Thread(
                target=self._hash_loop, args=(to_hash, to_write), name="part-hasher", daemon=True
            ),
            threading.Thread(
                target=self._write_loop, args=(to_write, free, fd), name="part-writer", daemon=True
            ),
        )
        for thread in self._threads:
            thread.start()

    def receive(self, read_into: ReadInto, count: int) -> int:
        """Read up to ``count`` content bytes (one buffer at most) with ``read_into``.

        ``read_into(view)`` fills the start of ``view`` and returns how many
        bytes it put there, 0 at EOF (``socket.recv_into``). Returns the bytes
        received: fewer than asked only at EOF. What arrived is kept for the
        ``.part`` even when ``read_into`` raises (a timeout, a reset), so the
        next run resumes after it.
        """
        self._require_open()
        if count < 1:
            raise ValueError(f"receive needs a positive count, not {count}")
        buffer = self._take()
        view = memoryview(buffer)
        want = min(count, len(buffer))
        filled = 0
        try:
            while filled < want:
                got = read_into(view[filled:want])
                if not got:
                    break
                filled += got
        finally:
            view.release()
            self._give(buffer, filled)
        return filled

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hash and write ``data`` (any length): content already in hand."""
        self._require_open()
        source = memoryview(data).cast("B")
        while source:
            buffer = self._take()
            count = min(len(source), len(buffer))
            buffer[:count] = source[:count]
            self._give(buffer, count)
            source = source[count:]

    def _require_open(self) -> None:
        if self._fd is None or self._hasher is None:
            raise TransferError("write before open")
        self._check_writer()

    def _take(self) -> bytearray:
        """A buffer to fill: waits for the writer to hand one back (back-pressure)."""
        if self._free is not None:
            return self._free.get()
        if self._inline is None:
            raise TransferError("write before open")
        return self._inline

    def _give(self, buffer: bytearray, count: int) -> None:
        """Hash and write ``count`` bytes of ``buffer``: down the pipeline, or now."""
        self.offset += count
        if self._to_hash is not None and self._free is not None:
            if count:
                self._to_hash.put((buffer, count))
            else:
                self._free.put(buffer)
        elif count and self._fd is not None and self._hasher is not None:
            view = memoryview(buffer)[:count]
            self._hasher.update(view)
            _write_all(self._fd, view)

    def _hash_loop(
        self, to_hash: queue.Queue[Filled | None], to_write: queue.Queue[Filled | None]
    ) -> None:
        hasher = self._hasher
        if hasher is None:  # pragma: no cover - open() set it before starting us
            raise TransferError("hasher started before open")
        while (item := to_hash.get()) is not None:
            buffer, count = item
            hasher.update(memoryview(buffer)[:count])
            to_write.put(item)
        to_write.put(None)

    def _write_loop(
        self, to_write: queue.Queue[Filled | None], free: queue.Queue[bytearray], fd: int
    ) -> None:
        position = previous = os.lseek(fd, 0, os.SEEK_CUR)
        while (item := to_write.get()) is not None:
            buffer, count = item
            if self._writer_error is None:
                try:
                    _write_all(fd, memoryview(buffer)[:count])
                    if self.write_behind:
                        write_behind(fd, previous, position, count)
                    previous, position = position, position + count
                except OSError as exc:
                    self._writer_error = exc  # reported to the caller by _check_writer
            free.put(buffer)  # even after an error: the receiver must never wait forever

    def _check_writer(self) -> None:
        if self._writer_error is not None:
            raise TransferError(f"writing {self.part_path} failed: {self._writer_error}") from (
                self._writer_error
            )

    def _stop_writer(self) -> None:
        if self._to_hash is not None:
            self._to_hash.put(None)  # the hasher passes it on to the writer
            for thread in self._threads:
                thread.join()
        self._threads, self._to_hash, self._free, self._inline = (), None, None, None

    def flush(self) -> None:
        """Make what arrived so far durable, so a later run can resume from it."""
        self._stop_writer()
        if self._fd is not None:
            os.fsync(self._fd)
        self._check_writer()

    def close(self) -> None:
        if self._fd is not None:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = None

    def abort(self) -> None:
        """Stop the pipeline and close the file, leaving ``.part`` as it is; raises nothing
        of its own (the caller is already handling the error that brought it here)."""
        self._stop_writer()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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


# sync_file_range(2)'s flags (linux/fs.h)
SYNC_FILE_RANGE_WAIT_BEFORE: Final = 1
SYNC_FILE_RANGE_WRITE: Final = 2
SYNC_FILE_RANGE_WAIT_AFTER: Final = 4
SYNC_FILE_RANGE_WAIT_ALL: Final = (
    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
)

SyncFileRange = Callable[[int, int, int, int], None]
# sync_file_range refused, not failed: a seccomp profile or a file system without it.
# Writeback is only a hint, so these fall back to DONTNEED; what the disk says stays fatal.
HINT_REFUSED: Final = frozenset(
    {errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP}
)


@functools.cache
def sync_file_range() -> SyncFileRange | None:
    """libc's ``sync_file_range(fd, offset, length, flags)``, raising ``OSError``; None
    where there is none (Python wraps it nowhere; ctypes releases the GIL while it waits)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int, flags: int) -> None:
        if function(fd, offset, length, flags) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return call


def write_behind(fd: int, previous: int, position: int, count: int) -> None:
    """Keep a streaming write's page cache to about two chunks (fetch's writer and the
    bench's write-behind probe call it after each chunk).

    The chunk just written (``position``, ``count``) goes to the disk now; the one
    before (``previous`` up to ``position``), started a chunk ago, is waited for
    and dropped. posix_fadvise alone cannot drop pages still under writeback:
    under the client's memory limit they piled up until the cgroup reclaimed,
    which cost up to twice the kernel CPU and made the rate swing 5.6-9.4 Gbit/s
    from run to run. On tmpfs both calls do nothing.
    """
    sync = sync_file_range()
    if sync is not None:
        try:
            sync(fd, position, count, SYNC_FILE_RANGE_WRITE)
        except OSError as exc:
            if exc.errno not in HINT_REFUSED:
                raise
            sync = None
    if sync is None:  # no sync_file_range: DONTNEED starts writeback (Linux), drops clean
        os.posix_fadvise(fd, position, count, os.POSIX_FADV_DONTNEED)
        if previous < position:
            os.posix_fadvise(fd, previous, position - previous, os.POSIX_FADV_DONTNEED)
        return
    if previous < position:
        sync(fd, previous, position - previous, SYNC_FILE_RANGE_WAIT_ALL)
        os.posix_fadvise(fd, previous, position - previous, os.POSIX_FADV_DONTNEED)


def _write_all(fd: int, view: memoryview) -> None:
    # os.write may write less than asked (a signal, a nearly full disk): loop.
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, "no progress writing the file")
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
