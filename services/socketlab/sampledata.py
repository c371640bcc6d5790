"""Deterministic sample files for the file-transfer demos, generated, never committed.

* ``sample-text.txt`` — about 450 KB of English-like prose (demo 5);
* ``sample-image.png`` — a real 320x240 RGB PNG built with zlib (demo 6);
* ``large-1g.bin`` — 1 GiB for the benchmark, created only on demand.

The same seed gives byte-identical files on every machine, so a file can be
regenerated after a container restart and still match a half-finished
download's prefix.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from socketlab.commandline import add_setting, command_parser
from socketlab.config import EnvConfig, env_config, env_field

log = logging.getLogger("socketlab.sampledata")

TEXT_NAME: Final = "sample-text.txt"
IMAGE_NAME: Final = "sample-image.png"
BIG_NAME: Final = "large-1g.bin"
TEXT_SIZE: Final = 450 * 1024
BIG_SIZE: Final = 1024**3
DEFAULT_DATA_ROOT: Final = "/srv/socketlab/data"
SEED: Final = 4571
BLOCK: Final = 1024 * 1024

_WORD_TEXT: Final = (
    "the of and to in is was that for it as with his on be at by had not are but from or have "
    "an they which one you were her all she there would their we him been has when who will more "
    "no if out so said what up its about into than them can only other new some could time these "
    "two may then do first any my now such like our over man me even most made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three socket network packet server client "
    "message stream buffer header frame latency window protocol host port address route signal "
    "river mountain garden letter morning evening harbour lantern journey quiet distant careful"
)
_WORDS: Final = tuple(_WORD_TEXT.split())


@env_config
@dataclass(frozen=True, kw_only=True)
class SampleDataConfig(EnvConfig):
    data_root: Path = env_field(
        "SOCKETLAB_DATA_ROOT",
        Path(DEFAULT_DATA_ROOT),
        "folder of the files the server lists and serves (sample files are made there)",
    )
    big_size: int = env_field(
        "SOCKETLAB_BIG_SIZE", BIG_SIZE, f"size of {BIG_NAME} in bytes, made on demand"
    )


def data_root() -> Path:
    """The server's data root (``SOCKETLAB_DATA_ROOT``), for callers without a config."""
    return SampleDataConfig.from_env().data_root


# Deterministic and a few hundred KB: made once per process (a server regenerates
# missing files after a restart, tests make many data roots).
@functools.cache
def text_bytes(*, size: int = TEXT_SIZE, seed: int = SEED) -> bytes:
    """English-like paragraphs, cut at a line end near ``size`` bytes."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sample text, not security
    out: list[str] = []
    total = 0
    while total < size:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
            if rng.random() < 0.3:
                words.insert(rng.randint(1, len(words) - 1), ",")
            sentence = " ".join(words).replace(" ,", ",")
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(".....?!"))
        paragraph = _wrap(" ".join(sentences)) + "\n\n"
        out.append(paragraph)
        total += len(paragraph)
    return "".join(out).encode("ascii")


def _wrap(text: str, width: int = 72) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bytes(*, width: int = 320, height: int = 240) -> bytes:
    """A valid truecolour PNG: colour gradients with concentric rings."""
    rows = bytearray()
    cx, cy = width / 2, height / 2
    for y in range(height):
        rows.append(0)  # filter type None for each scanline
        for x in range(width):
            ring = int(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5) // 12 % 2
            rows += bytes(
                (
                    (x * 255 // max(width - 1, 1)) ^ (0x40 * ring),
                    (y * 255 // max(height - 1, 1)),
                    (128 + 127 * ring) if (x // 40 + y // 40) % 2 else 96,
                )
            )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


def big_blocks(*, size: int = BIG_SIZE, seed: int = SEED) -> Iterator[bytes]:
    """Deterministic incompressible-looking blocks totalling ``size`` bytes.

    One random 1 MiB block, each copy stamped with its index, so no two blocks
    are equal (a resume at the wrong offset cannot go unnoticed).
    """
    base = bytearray(random.Random(seed).randbytes(BLOCK))  # noqa: S311 - test data
    written = 0
    index = 0
    while written < size:
        base[:8] = struct.pack(">Q", index)
        block = bytes(base[: min(BLOCK, size - written)])
        yield block
        written += len(block)
        index += 1


def _write_atomically(path: Path, chunks: Iterator[bytes] | list[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def ensure_sample_data(root: Path, *, big: bool = False, big_size: int | None = None) -> list[Path]:
    """Create the missing sample files under ``root``; returns the paths created."""
    root.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    text, image = root / TEXT_NAME, root / IMAGE_NAME
    if not text.exists():
        _write_atomically(text, [text_bytes()])
        created.append(text)
    if not image.exists():
        _write_atomically(image, [png_bytes()])
        created.append(image)
    if big:
        wanted = big_size if big_size is not None else SampleDataConfig.from_env().big_size
        path = root / BIG_NAME
        if not path.exists() or path.stat().st_size != wanted:
            _write_atomically(path, big_blocks(size=wanted))
            created.append(path)
    for path in created:
        log.info("event=sample_created path=%s size=%d", path, path.stat().st_size)
    return created


def main(argv: list[str]) -> int:
    """``socketlab sampledata [--root DIR] [--big]``: create the sample files."""
    config = SampleDataConfig.from_env()
    parser = command_parser("sampledata", __doc__, raw=True)
    add_setting(parser, "--root", config=config, name="data_root", dest="root")
    parser.add_argument("--big", action="store_true", help=f"also create {BIG_NAME}")
    add_setting(parser, "--big-size", config=config, name="big_size")
    args = parser.parse_args(argv)
    for path in ensure_sample_data(args.root, big=args.big, big_size=args.big_size):
        print(path)
    return 0
