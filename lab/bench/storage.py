"""Where the bench's bytes are: the server's data root, the client's destination, and
fresh scratch folders under it.

The destination (``--dest``) is one of the client's volumes in ``docker-compose.yml``:
``disk`` (``/var/tmp``, on the Docker host's disk) or ``tmpfs`` (``/mnt/tmpfs``).
The peer's helper mounts it too, so the peer and our fetch write to the same place.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from lab.bench.errors import BenchError
from lab.bench.tool_output import last_json
from lab.errors import LabError
from lab.interface import Lab

DATA_ROOT: Final = "/srv/socketlab/data"


# What is mounted at the destination, and how much room it has.
_DEST_PROBE: Final = """
import json, os, sys
path = sys.argv[1]
fs = ""
with open("/proc/self/mountinfo") as mounts:
    for line in mounts:
        fields = line.split()
        if fields[4] == path:
            fs = fields[fields.index("-") + 1]
st = os.statvfs(path)
memory = None  # the container's memory limit (cgroup v2, then v1); tmpfs pages count against it
for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
        text = open(limit_file).read().strip()
    except OSError:
        continue
    memory = None if text == "max" or int(text) >= 1 << 60 else int(text)
    break
print(json.dumps({"fs": fs, "free": st.f_bavail * st.f_frsize, "writable": os.access(path, os.W_OK),
                  "memory_limit": memory}))
"""


@dataclass(frozen=True, kw_only=True)
class Dest:
    """Where the client writes in a bench: a volume of the client (``docker-compose.yml``),
    which the peer's helper mounts too."""

    name: str  # disk | tmpfs
    path: str
    fs: str = ""  # the file system type found there


DEST_PATHS: Final = {"disk": "/var/tmp", "tmpfs": "/mnt/tmpfs"}  # noqa: S108 - in the client


DEST_ROOM: Final = 64 * 2**20  # spare bytes beyond the file the destination must have


# What the client needs in memory beside a tmpfs file: fetch's buffers, Python, the probes.
TMPFS_HEADROOM: Final = 384 * 2**20
# What the server needs beside the bench file in its page cache: its own memory.
SERVER_CACHE_HEADROOM: Final = 256 * 2**20


def check_dest(lab_: Lab, name: str, *, size: int) -> Dest:
    """The destination ``name``, mounted in the client with room for ``size`` bytes."""
    if name not in DEST_PATHS:
        raise BenchError(f"no bench destination {name!r} (known: {', '.join(DEST_PATHS)})")
    path = DEST_PATHS[name]
    result = lab_.exec(
        "client", ["python3", "-c", _DEST_PROBE, path], timeout=lab_.config.bench.ready_timeout
    )
    info = last_json(result.check(f"inspecting {path} in the client").stdout, what="dest probe")
    if not info.get("fs"):
        raise BenchError(
            f"the client has no volume at {path} (--dest {name}): the lab was started from an "
            f"older docker-compose.yml; run `lab -p {lab_.project} down` and `up` again"
        )
    if not info.get("writable"):
        raise BenchError(f"the client cannot write to {path} (--dest {name})")
    free = int(info.get("free", 0))
    if free < size + DEST_ROOM:
        raise BenchError(
            f"--dest {name} ({path}) has {free / 2**20:.0f} MiB free; the bench file needs "
            f"{(size + DEST_ROOM) / 2**20:.0f} MiB: choose a smaller --file-size"
        )
    limit = info.get("memory_limit")
    if info["fs"] == "tmpfs" and isinstance(limit, int) and limit < size + TMPFS_HEADROOM:
        raise BenchError(
            f"--dest {name} ({path}) is RAM, charged to the client's memory limit of "
            f"{limit / 2**20:.0f} MiB; a {size / 2**20:.0f} MiB file needs "
            f"{(size + TMPFS_HEADROOM) / 2**20:.0f} MiB: start the lab with "
            f"SOCKETLAB_CLIENT_MEM_LIMIT={_gib_up(size + TMPFS_HEADROOM)}g, or choose a smaller "
            "--file-size"
        )
    return Dest(name=name, path=path, fs=str(info["fs"]))


def server_cache_warning(lab_: Lab, *, size: int) -> str | None:
    """Why the server may read the bench file from its disk at every try, or None.

    The page cache of the file the server sends is charged to the server's cgroup:
    under a memory limit below the file's size it cannot stay cached, so fetch
    and the peer would be bounded by the server's disk reads, which no ceiling
    row measures (on this kind of host: ~4 Gbit/s against 12 from the cache).
    """
    result = lab_.exec(
        "server", ["python3", "-c", _DEST_PROBE, DATA_ROOT], timeout=lab_.config.bench.ready_timeout
    )
    info = last_json(result.check("inspecting the server's memory").stdout, what="server probe")
    limit = info.get("memory_limit")
    if not isinstance(limit, int) or limit >= size + SERVER_CACHE_HEADROOM:
        return None
    return (
        f"the server's memory limit of {limit / 2**20:.0f} MiB cannot keep the "
        f"{size / 2**20:.0f} MiB bench file in its page cache: fetch and the peer may read it "
        "from the server's disk, which no ceiling row measures; start the lab with "
        f"SOCKETLAB_SERVER_MEM_LIMIT={_gib_up(size + SERVER_CACHE_HEADROOM)}g (make bench does)"
    )


def _gib_up(size: int) -> int:
    return -(-size // 2**30)


@contextlib.contextmanager
def scratch_dir(lab_: Lab, service: str, base: str = "/tmp") -> Iterator[str]:  # noqa: S108
    """A fresh folder under ``base`` in ``service`` (so nothing resumes from an old
    ``.part``), removed after."""
    path = f"{base}/socketlab-bench-{uuid.uuid4().hex[:8]}"
    lab_.exec(service, ["mkdir", "-p", path], timeout=30).check(f"mkdir {path}")
    try:
        yield path
    finally:
        with contextlib.suppress(LabError):
            lab_.exec(service, ["rm", "-rf", path], timeout=60)
