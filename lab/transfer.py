"""``lab exec`` and ``lab cp`` without I/O: Docker's multiplexed stream, and tar archives.

Pure; :mod:`lab.access` does the I/O.

* :class:`StreamDecoder` reads the stream Docker sends for an exec without a
  TTY: frames of an 8-byte header (stream 1 stdout / 2 stderr, then a 32-bit
  big-endian length) and the payload. It hands payload on as it arrives, so it
  never holds more than one header and one received chunk, whatever the
  frame sizes claim.
* :func:`extraction_plan` decides, before anything is written, where each
  member of an archive copied out of a container goes on the host, and
  refuses what would escape the destination: absolute names, ``..``,
  symbolic links pointing outside, hard links to names not in the archive,
  devices and FIFOs. A refused archive writes nothing.
* :func:`archive_member_name` and :func:`container_destination` give
  ``docker cp``'s meaning to a destination inside a container.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from lab.errors import LabError

HEADER_SIZE = 8
STDOUT, STDERR = 1, 2


class TransferError(LabError):
    """A copy that would escape its destination, or a stream Docker should not send."""


class StreamDecoder:
    """Sans-IO decoder of Docker's multiplexed exec stream: ``feed(bytes)`` returns
    ``(stream, payload)`` pieces; ``feed(b"")`` is the end (mid-frame: TransferError)."""

    def __init__(self) -> None:
        self._header = b""
        self._remaining = 0
        self._stream = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if not data:
            if self._header or self._remaining:
                raise TransferError("the exec stream ended in the middle of a frame")
            return []
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(data)
        while view:
            if self._remaining:
                take = view[: self._remaining]
                pieces.append((self._stream, bytes(take)))
                self._remaining -= len(take)
                view = view[len(take) :]
                continue
            need = HEADER_SIZE - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) < HEADER_SIZE:
                break
            stream, size = self._header[0], int.from_bytes(self._header[4:8], "big")
            self._header = b""
            if stream not in {0, STDOUT, STDERR}:
                raise TransferError(f"the exec stream has a frame of unknown stream {stream}")
            self._stream, self._remaining = (STDOUT if stream == 0 else stream), size
        return pieces


# --------------------------------------------------------------------------- out of a container


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where one archive member goes, relative to the host destination folder."""

    member: str  # its name in the archive
    target: PurePosixPath  # relative to the folder extracted into
    kind: str  # "dir", "file", "symlink" or "hardlink"
    link: str = ""  # a link's target (hardlink: the placed target path)
    mode: int = 0o644


def _kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    raise TransferError(f"{member.name}: refusing to copy a device, FIFO or other special file")


def _relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise TransferError(f"{name}: refusing an absolute path in the archive")
    parts = [part for part in path.parts if part not in {"", "."}]
    if not parts or ".." in parts:
        raise TransferError(f"{name}: refusing a path that leaves the destination")
    return PurePosixPath(*parts)


def extraction_plan(
    members: Iterable[tarfile.TarInfo], *, rename_to: str | None = None
) -> list[Placement]:
    """Place every member under the destination folder, or refuse the whole archive.

    ``rename_to``: the archive's top entry gets this name (``lab cp svc:/a/x
    ./y`` where ``./y`` does not exist: ``x`` becomes ``y``). Modes keep the
    permission bits only (no set-uid, set-gid or sticky bit).
    """
    placements: list[Placement] = []
    placed: dict[str, PurePosixPath] = {}
    links: set[PurePosixPath] = set()
    top: str | None = None
    for member in members:
        kind = _kind(member)
        relative = _relative(member.name)
        # Through an earlier symbolic link, a later member could land anywhere.
        if any(parent in links for parent in relative.parents):
            raise TransferError(f"{member.name}: refusing a path through a symbolic link")
        top = top or relative.parts[0]
        if relative.parts[0] != top:
            raise TransferError(f"{member.name}: the archive has more than one top entry")
        if rename_to is not None:
            relative = PurePosixPath(rename_to, *relative.parts[1:])
        link = ""
        if kind == "symlink":
            link = member.linkname
            if posixpath.isabs(link):
                raise TransferError(f"{member.name}: refusing a symbolic link to {link}")
            resolved = posixpath.normpath(posixpath.join(str(relative.parent), link))
            if resolved == ".." or resolved.startswith("../"):
                raise TransferError(f"{member.name}: refusing a symbolic link out of it ({link})")
        elif kind == "hardlink":
            if member.linkname not in placed:
                raise TransferError(
                    f"{member.name}: refusing a hard link to {member.linkname}, not in the archive"
                )
            link = str(placed[member.linkname])
        if kind == "symlink":
            links.add(_relative(member.name))
        placed[member.name.rstrip("/")] = relative
        placed[member.name] = relative
        placements.append(
            Placement(
                member=member.name, target=relative, kind=kind, link=link, mode=member.mode & 0o777
            )
        )
    if not placements:
        raise TransferError("the archive is empty")
    return placements


# --------------------------------------------------------------------------- into a container


def container_destination(dest: str, *, dest_is_dir: bool, source_name: str) -> tuple[str, str]:
    """``docker cp`` into a container: (folder to unpack in, name of the copy there).

    Into an existing folder the copy keeps ``source_name``; otherwise ``dest``
    names the copy itself, in its parent folder.
    """
    path = PurePosixPath(dest)
    if not path.is_absolute():
        raise TransferError(f"{dest}: the path in a container must be absolute")
    if dest_is_dir or dest.endswith("/"):
        return str(path), source_name
    if path.name in {"", ".", ".."}:
        raise TransferError(f"{dest}: not a file name")
    return str(path.parent), path.name


def archive_member_name(name: str) -> str:
    """The top name of a copy in the archive sent into a container (one plain name)."""
    if not name or "/" in name or name in {".", ".."}:
        raise TransferError(f"{name!r} is not a plain file name")
    return name
