"""``client fetch``: download with ``.part``, fsync, SHA-256 check, rename, and resume."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from socketlab.client.connection import Endpoint, LabConnection
from socketlab.client.output import Output, Progress
from socketlab.errors import PeerUnavailable
from socketlab.files import PartialDownload, TransferError
from socketlab.protocol import (
    JSON_TYPE,
    Content,
    Header,
    Message,
    MessageCollector,
    MessageEnd,
    RemoteProtocolError,
    encode_request,
)
from socketlab.protocol.messages import response_result

# CHUNK_SIZE buffers going round receiver -> hasher -> writer: a 12 MiB ring. The
# hasher reads each buffer just after the receiver filled it on the other core;
# measured on 2 GiB, SHA-256 keeps its one-core rate (~1.1 s of CPU) while the
# ring fits in cache (<= 16 MiB), and loses 40 % of it at 24-32 MiB (the old 4 MiB
# x 8): by hand, fetch went from 8.4-9.1 to 11.8-13.4 Gbit/s.
WRITER_DEPTH: Final = 6
PACED_READ: Final = 64 * 1024  # smallest read of a paced fetch; it reads ~1/20 s at a time


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: str
    size: int
    sha256: str
    resumed_from: int
    seconds: float  # the whole command: connect, server's hashing, transfer, verify
    transfer_seconds: float  # first content byte to verified file on disk


def fetch(
    endpoint: Endpoint, name: str, dest: Path, *, progress: bool = True, max_rate: float = 0.0
) -> FetchResult:
    """Download ``name`` into ``dest`` (resuming a ``.part``), verified, then renamed."""
    download = PartialDownload(dest, name, writer_depth=WRITER_DEPTH, write_behind=True)
    offset, prefix = download.prefix_state()
    started = time.monotonic()
    with LabConnection.open(endpoint) as conn:
        conn.send(
            encode_request("fetch", {"name": name, "offset": offset, "prefix_sha256": prefix})
        )
        header = conn.next_event()
        if not isinstance(header, Header):
            raise RemoteProtocolError(f"expected a header, got {type(header).__name__}")
        if header.content_type == JSON_TYPE:
            response_result(_finish_message(conn, header))  # raises ServerRefused
            raise RemoteProtocolError("server answered a fetch with JSON but no error")
        size, digest, start = _fetch_fields(header)
        transfer_started = time.monotonic()
        download.open(offset=start)
        bar = Progress(name, size, start) if progress else None
        try:
            _receive_file(conn, download, bar, Pacer(max_rate))
        except (PeerUnavailable, RemoteProtocolError) as exc:
            download.close()  # keep (and fsync) what we have: the next run resumes from it
            raise TransferError(
                f"fetch of {name} interrupted at {download.offset} of {size} bytes "
                f"({exc}); run it again to resume"
            ) from exc
        except BaseException:
            download.abort()  # the disk failed, or we were interrupted: stop its threads
            raise
        if bar:
            bar.update(download.offset, final=True)
    path = download.finish(size=size, sha256=digest)
    now = time.monotonic()
    return FetchResult(name, str(path), size, digest, start, now - started, now - transfer_started)


class Pacer:
    """Caps a reader's average rate (a slow reader; TCP flow control slows the sender)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()
        self.done = 0

    def read_size(self, largest: int) -> int:
        """How much to read at once: all of ``largest`` unless paced (then ~1/20 s)."""
        if self.rate <= 0:
            return largest
        return max(PACED_READ, min(largest, int(self.rate / 20)))

    def account(self, size: int) -> None:
        if self.rate <= 0:
            return
        self.done += size
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)  # pacing, not waiting for readiness


def _receive_file(
    conn: LabConnection, download: PartialDownload, bar: Progress | None, pacer: Pacer
) -> None:
    """The content: what the decoder holds already, then straight off the socket.

    After the header the decoder may hold the content's first bytes; those come
    as events. The rest goes from ``recv_into`` into the download's buffers,
    hashed and written from there, and the decoder only counts it
    (``consume_content``), so it still ends the message and sees EOF.
    """
    decoder = conn.decoder
    while decoder.buffered and decoder.content_remaining:
        event = conn.next_event()
        if not isinstance(event, Content):  # pragma: no cover - content_remaining > 0
            raise RemoteProtocolError(f"unexpected {type(event).__name__} in a file")
        download.write(event.data)
        pacer.account(len(event.data))
    while remaining := decoder.content_remaining:
        want = min(remaining, pacer.read_size(download.chunk_size))
        got = download.receive(conn.recv_into, want)
        if got:
            decoder.consume_content(got)
            pacer.account(got)
            if bar:
                bar.update(download.offset)
        if got < want:
            decoder.receive_data(b"")  # EOF inside the content: the next event says so
            break
    event = conn.next_event()
    if not isinstance(event, MessageEnd):
        raise RemoteProtocolError(f"unexpected {type(event).__name__} after a file")


def _finish_message(conn: LabConnection, header: Header) -> Message:
    collector = MessageCollector()
    collector.feed(header)
    while True:
        message = collector.feed(conn.next_event())
        if message is not None:
            return message


def _fetch_fields(header: Header) -> tuple[int, str, int]:
    size, digest, start = header.get("size"), header.get("sha256"), header.get("offset")
    if not (isinstance(size, int) and isinstance(digest, str) and isinstance(start, int)):
        raise RemoteProtocolError("file header lacks size, sha256 or offset")
    if header.content_length != size - start:
        raise RemoteProtocolError("file header's content-length disagrees with size - offset")
    return size, digest, start


def cmd_fetch(endpoint: Endpoint, out: Output, args: argparse.Namespace) -> None:
    result = fetch(
        endpoint, args.name, Path(args.dest), progress=not args.quiet, max_rate=args.max_rate
    )
    moved = result.size - result.resumed_from
    rate = moved / result.transfer_seconds / 1e6 if result.transfer_seconds > 0 else 0.0
    resumed = f", resumed at {result.resumed_from}" if result.resumed_from else ""
    out.say(
        f"fetched {result.name} -> {result.path}: {result.size} bytes, sha256 {result.sha256} "
        f"verified ({result.seconds:.2f} s, {rate:.1f} MB/s{resumed})"
    )
    out.result("fetch", True, **result.__dict__, mb_s=round(rate, 2))
