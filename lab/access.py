"""``lab exec SERVICE[.N] -- ARGV`` and ``lab cp``: into the lab's containers, whatever image.

Both go through the Docker SDK (no ``docker`` CLI): an exec streams its
output as it comes and returns the command's exit code (``-i`` passes our
stdin, closed at its end); ``cp`` uses the archive API both ways, with the
pure checks of :mod:`lab.transfer` (nothing escapes the destination on the
host, nothing is written from an archive that fails them) and a size bound
(``SOCKETLAB_COPY_LIMIT``). Reads from Docker's socket time out after
``SOCKETLAB_EXEC_TIMEOUT`` seconds.

Registered by ``lab.cli``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from lab.addressing import is_file_target, parse_file_target
from lab.api import Lab
from lab.commands import EXIT_USAGE, make_lab
from lab.console import out_console
from lab.engine import docker_errors
from lab.errors import CommandTimeout, DockerNotFound, LabError
from lab.transfer import (
    STDERR,
    StreamDecoder,
    TransferError,
    archive_member_name,
    container_destination,
    extraction_plan,
)

CHUNK = 64 * 1024


# --------------------------------------------------------------------------- exec


def _raw_socket(hijacked: Any) -> socket.socket:
    # docker-py hands back the SocketIO wrapper of the hijacked connection
    raw = getattr(hijacked, "_sock", hijacked)
    if not isinstance(raw, socket.socket):
        raise LabError("Docker did not hand over an exec socket")
    return raw


def _pump_stdin(source: BinaryIO, sink: socket.socket) -> None:
    """Copy our stdin to the exec until it ends, then close the exec's stdin."""
    try:
        fd = source.fileno()
        while chunk := os.read(fd, CHUNK):
            sink.sendall(chunk)
    except OSError:
        pass  # the command ended and closed its side first
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def exec_stream(
    lab: Lab,
    name: str,
    argv: Sequence[str],
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO,
    stderr: BinaryIO,
    user: str | None = None,
    workdir: str | None = None,
) -> int:
    """Run ``argv`` in the container ``name`` means (its first replica for a bare
    service), stream its output, and return its exit code."""
    container = lab.container(name)
    # a client of the engine holding the container (a Swarm node's), with no HTTP timeout
    api = lab.orchestrator.exec_engine(container).api
    with docker_errors(f"exec in {name} failed"):
        created = api.exec_create(
            container.id,
            list(argv),
            stdout=True,
            stderr=True,
            stdin=stdin is not None,
            tty=False,
            user=user or "",
            workdir=workdir,
        )
        hijacked = api.exec_start(created["Id"], socket=True)
    raw = _raw_socket(hijacked)
    raw.settimeout(lab.config.exec_timeout)
    pump = None
    if stdin is not None:
        pump = threading.Thread(target=_pump_stdin, args=(stdin, raw), daemon=True)
        pump.start()
    decoder = StreamDecoder()
    try:
        while True:
            try:
                data = raw.recv(CHUNK)
            except TimeoutError as exc:
                raise CommandTimeout(
                    f"{name}: no output for {lab.config.exec_timeout:g} s "
                    "(SOCKETLAB_EXEC_TIMEOUT); stopped waiting"
                ) from exc
            for stream, payload in decoder.feed(data):
                out = stderr if stream == STDERR else stdout
                out.write(payload)
                out.flush()
            if not data:
                break
    finally:
        with contextlib.suppress(OSError):
            raw.close()
    with docker_errors(f"cannot read the exit code of the exec in {name}"):
        code = api.exec_inspect(created["Id"]).get("ExitCode")
    return int(code) if code is not None else 1


# --------------------------------------------------------------------------- cp


def _spooled_archive(chunks: Iterator[bytes], *, limit: int, what: str) -> IO[bytes]:
    """The archive stream in a temporary file, refused past ``limit`` bytes."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            spool.close()
            raise TransferError(f"{what} is larger than {limit} bytes (SOCKETLAB_COPY_LIMIT)")
        spool.write(chunk)
    spool.seek(0)
    return spool


def copy_from(lab: Lab, source: str, dest: Path) -> list[Path]:
    """``lab cp SERVICE[.N]:PATH DEST``: into DEST if it is a folder, else as DEST."""
    target, path = parse_file_target(source, lab.services)
    container = lab.container(str(target))
    try:
        with docker_errors(f"cannot copy {source}"):
            chunks, _ = container.get_archive(path)
            spool = _spooled_archive(iter(chunks), limit=lab.config.copy_limit, what=source)
    except DockerNotFound as exc:
        raise DockerNotFound(f"{source} does not exist") from exc
    into = dest if dest.is_dir() else dest.parent
    rename = None if dest.is_dir() else dest.name
    if not into.is_dir():
        raise TransferError(f"{into} is not a folder on the host")
    written = []
    with spool, tarfile.open(fileobj=spool, mode="r:") as archive:
        members = archive.getmembers()
        plan = extraction_plan(members, rename_to=rename)  # refuses before writing anything
        by_name = {member.name: member for member in members}
        for placement in plan:
            target_path = into.joinpath(*placement.target.parts)
            if placement.kind == "dir":
                target_path.mkdir(parents=True, exist_ok=True)
            elif placement.kind == "file":
                target_path.parent.mkdir(parents=True, exist_ok=True)
                extracted = archive.extractfile(by_name[placement.member])
                assert extracted is not None  # noqa: S101 - a regular file
                with extracted, target_path.open("wb") as out:
                    shutil.copyfileobj(extracted, out, CHUNK)
                target_path.chmod(placement.mode)
            elif placement.kind == "symlink":
                target_path.parent.mkdir(parents=True, exist_ok=True)
                target_path.unlink(missing_ok=True)
                target_path.symlink_to(placement.link)
            else:  # hardlink to a file placed before
                target_path.unlink(missing_ok=True)
                os.link(into.joinpath(*Path(placement.link).parts), target_path)
            written.append(target_path)
    return written


def _tar_of(source: Path, name: str, *, limit: int) -> IO[bytes]:
    if source.is_dir():
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    else:
        size = source.stat().st_size
    if size > limit:
        raise TransferError(f"{source} is larger than {limit} bytes (SOCKETLAB_COPY_LIMIT)")
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    with tarfile.open(fileobj=spool, mode="w:") as archive:
        archive.add(str(source), arcname=archive_member_name(name))
    spool.seek(0)
    return spool


def _is_dir_in(container: Any, path: str) -> bool:
    try:
        with docker_errors(f"cannot look at {path}"):
            chunks, stat = container.get_archive(path)
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # only the stat was wanted
    except DockerNotFound:
        return False
    # Go's os.ModeDir bit in the mode Docker reports
    return bool(int(stat.get("mode", 0)) & (1 << 31))


def copy_to(lab: Lab, source: Path, dest: str) -> str:
    """``lab cp SRC SERVICE[.N]:PATH``: into PATH if it is a folder, else as PATH."""
    if not source.exists():
        raise TransferError(f"{source} does not exist on the host")
    target, path = parse_file_target(dest, lab.services)
    container = lab.container(str(target))
    folder, name = container_destination(
        path, dest_is_dir=_is_dir_in(container, path), source_name=source.name
    )
    with _tar_of(source, name, limit=lab.config.copy_limit) as archive:
        try:
            with docker_errors(f"cannot copy into {dest}"):
                done = container.put_archive(folder, archive.read())
        except DockerNotFound as exc:
            raise DockerNotFound(f"{target}:{folder} is not a folder in the container") from exc
    if not done:
        raise LabError(f"Docker refused the copy into {dest}")
    return f"{target}:{folder.rstrip('/')}/{name}"


# --------------------------------------------------------------------------- commands


def cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        sys.stderr.write("lab exec: give the command after --, e.g. lab exec client -- ls /\n")
        return EXIT_USAGE
    lab = make_lab(args)
    stdout = sys.stdout.buffer
    stderr = sys.stderr.buffer
    sys.stdout.flush()
    return exec_stream(
        lab,
        args.service,
        argv,
        stdin=sys.stdin.buffer if args.interactive else None,
        stdout=stdout,
        stderr=stderr,
        user=args.user,
        workdir=args.workdir,
    )


def cmd_cp(args: argparse.Namespace) -> int:
    lab = make_lab(args)
    services = lab.services
    source_in = is_file_target(args.source, services)
    dest_in = is_file_target(args.dest, services)
    if source_in == dest_in:
        raise TransferError(
            "lab cp copies between the host and a container: one side is SERVICE[.N]:PATH"
        )
    if source_in:
        written = copy_from(lab, args.source, Path(args.dest))
        out_console.print(f"copied {args.source} -> {written[0]} ({len(written)} entries)")
    else:
        where = copy_to(lab, Path(args.source), args.dest)
        out_console.print(f"copied {args.source} -> {where}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``exec`` and ``cp`` to ``lab``'s subparsers."""
    run = subparsers.add_parser(
        "exec",
        help="run a command in a container; its exit code is lab's",
        description="Run ARGV in SERVICE (its first replica) or SERVICE.N, output streamed.",
    )
    run.add_argument("service", metavar="SERVICE[.N]")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- ARGV")
    run.add_argument("-i", "--interactive", action="store_true", help="pass stdin to the command")
    run.add_argument("-u", "--user", default=None, help="user (name or uid[:gid]) to run as")
    run.add_argument("-w", "--workdir", default=None, help="working folder in the container")
    run.set_defaults(func=cmd_exec)

    copy = subparsers.add_parser(
        "cp",
        help="copy files between the host and a container",
        description="Copy SRC to DEST; one of them is SERVICE[.N]:PATH. Into a folder when "
        "DEST is one, else as DEST.",
    )
    copy.add_argument("source", metavar="SRC")
    copy.add_argument("dest", metavar="DEST")
    copy.set_defaults(func=cmd_cp)


__all__ = ["copy_from", "copy_to", "exec_stream", "register"]
