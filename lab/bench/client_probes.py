"""The client's own limits, probed in the client container (figures named as in
:mod:`lab.bench.ceiling`):

* **SHA-256** and **write+fsync**: hashlib on one core, and writing the file's
  size at the destination then fsyncing it (plainly, and with write-behind as
  fetch's writer does it), all in the client container.
"""

from __future__ import annotations

from typing import Final

from lab.bench import ceiling
from lab.bench.records import Measurement
from lab.bench.storage import Dest, scratch_dir
from lab.bench.throughput import bit_rate
from lab.bench.tool_output import figure, last_json
from lab.interface import Lab
from socketlab.files import CHUNK_SIZE

# hashlib SHA-256 on one core, over a block already in memory: the hash's own speed,
# timed by the thread's CPU clock too (on a busy machine the wall clock times the queue).
_SHA_PROBE: Final = """
import hashlib, json, os, sys, time
size = int(sys.argv[1])
block = memoryview(os.urandom(1 << 20))
hasher = hashlib.sha256()
started, cpu = time.perf_counter(), time.thread_time()
for _ in range(size // len(block)):
    hasher.update(block)
hasher.update(block[: size % len(block)])
print(json.dumps({"bytes": size, "seconds": time.perf_counter() - started,
                  "cpu_seconds": time.thread_time() - cpu}))
"""


# Write ``size`` bytes in 1 MiB blocks, then fsync: what the disk at the destination takes.
# "behind": after each chunk (fetch's CHUNK_SIZE), socketlab.files.write_behind, the
# call fetch's writer makes: the chunk goes to the disk now, the one before is waited
# for and dropped from the page cache.
_WRITE_PROBE: Final = """
import json, os, sys, time
try:
    from socketlab.files import write_behind
except ImportError:
    sys.exit("the client's image predates this controller (no socketlab.files.write_behind): "
             "run lab down, then lab up, to rebuild it")
size, path, behind, chunk = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "behind", int(sys.argv[4])
block = memoryview(os.urandom(1 << 20))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
try:
    started = time.perf_counter()
    done = kicked = previous = 0
    while done < size:
        done += os.write(fd, block[: min(size - done, len(block))])
        if behind and (done - kicked >= chunk or done == size):
            write_behind(fd, previous, kicked, done - kicked)
            previous, kicked = kicked, done
    os.fsync(fd)
    seconds = time.perf_counter() - started
finally:
    os.close(fd)
    os.unlink(path)
print(json.dumps({"bytes": size, "seconds": seconds}))
"""


def sha256_rate(lab_: Lab, size: int) -> Measurement:
    """hashlib SHA-256 of ``size`` bytes on one core of the client.

    The rate is per second of the core's time (the thread's CPU clock), not of
    the wall clock: it is the capacity of one core, which a busy machine would
    otherwise understate by however long the probe waited for a core.
    """
    argv = ["python3", "-c", _SHA_PROBE, str(size)]
    result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout).check("sha256")
    report = last_json(result.stdout, what="sha256 probe")
    moved = int(figure(report, "bytes", what="sha256 probe"))
    wall = figure(report, "seconds", what="sha256 probe")
    cpu = figure(report, "cpu_seconds", what="sha256 probe")
    seconds = cpu if cpu > 0 else wall
    return Measurement(
        name=ceiling.HASH,
        label="SHA-256 (client, 1 core)",
        transport="local",
        bytes=moved,
        seconds=seconds,
        bits_per_second=bit_rate(moved, seconds),
        note=f"hashlib over an in-memory block; {cpu:.2f} s of CPU in {wall:.2f} s",
    )


def write_fsync_rate(lab_: Lab, dest: Dest, size: int, *, behind: bool = False) -> Measurement:
    """Writing ``size`` bytes at ``dest`` in the client and fsyncing them; with ``behind``,
    asking the kernel to write each chunk out at once, as fetch's writer does."""
    mode = "behind" if behind else "plain"
    with scratch_dir(lab_, "client", dest.path) as folder:
        argv = [
            "python3",
            "-c",
            _WRITE_PROBE,
            str(size),
            f"{folder}/write-probe.bin",
            mode,
            str(CHUNK_SIZE),
        ]
        result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout)
    report = last_json(result.check("write+fsync").stdout, what="write+fsync probe")
    moved = int(figure(report, "bytes", what="write+fsync probe"))
    seconds = figure(report, "seconds", what="write+fsync probe")
    how = (
        f"1 MiB writes, each {CHUNK_SIZE >> 20} MiB written out at once, then fsync"
        if behind
        else ("1 MiB writes then fsync")
    )
    return Measurement(
        name=ceiling.WRITE_BEHIND if behind else ceiling.WRITE,
        label=f"write+fsync{', write-behind' if behind else ''} ({dest.name})",
        transport="local",
        bytes=moved,
        seconds=seconds,
        bits_per_second=bit_rate(moved, seconds),
        note=f"{how} at {dest.path} ({dest.fs})",
    )
