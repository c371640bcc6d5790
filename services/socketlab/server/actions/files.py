"""The file actions: ``ls`` and ``fetch`` of the files under the data root.

A fetch is prepared on a worker thread (it may create the big sample file and
hashes whole files) and streamed by the loop with ``os.sendfile``. A request
may resume from ``offset`` if its ``prefix_sha256`` matches our file's first
``offset`` bytes; otherwise the answer starts from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

from socketlab import sampledata
from socketlab.files import list_files, resolve_name
from socketlab.protocol import BINARY_TYPE, RemoteProtocolError, encode_header
from socketlab.server.hashes import HashCache
from socketlab.server.outcomes import Call, Deferred, Handler, Outcome, SendFile, reply


def ls(call: Call) -> Outcome:
    entries = list_files(call.services.config.data_root)
    return reply([{"name": e.name, "size": e.size} for e in entries])


def fetch(call: Call) -> Outcome:
    """``{"name": str, "offset"?: int, "prefix_sha256"?: str}`` -> header, then the bytes."""
    value = call.value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise RemoteProtocolError(
            'fetch needs {"name": str, "offset"?: int, "prefix_sha256"?: str}'
        )
    name: str = value["name"]
    offset = value.get("offset", 0)
    prefix = value.get("prefix_sha256")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise RemoteProtocolError("fetch offset must be a non-negative integer")
    root, hashes = call.services.config.data_root, call.services.hashes
    return Deferred(lambda: prepare_fetch(root, hashes, name, offset=offset, prefix=prefix))


def prepare_fetch(
    root: Path, hashes: HashCache, name: str, *, offset: int, prefix: object
) -> SendFile:
    """Resolve, hash and pick the start of a fetch (blocking: run it off the loop)."""
    if name == sampledata.BIG_NAME and not (root / name).exists():
        sampledata.ensure_sample_data(root, big=True)
    path = resolve_name(root, name)
    size = path.stat().st_size
    digest = hashes.sha256(path)
    start = offset
    if start > size or (start and hashes.sha256(path, limit=start) != prefix):
        start = 0  # the client's prefix is not ours: restart from scratch
    header = encode_header(
        BINARY_TYPE,
        size - start,
        extra={"status": "ok", "name": name, "size": size, "sha256": digest, "offset": start},
    )
    return SendFile(
        header=header, path=path, offset=start, count=size - start, name=name, size=size
    )


ACTIONS: Final[Mapping[str, Handler]] = {"ls": ls, "fetch": fetch}
