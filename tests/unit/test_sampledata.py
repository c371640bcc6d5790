"""Sample data: deterministic, the right sizes, and a PNG that decodes."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

from socketlab import sampledata


def test_text_is_deterministic_english_like_and_about_450_kb() -> None:
    text = sampledata.text_bytes()
    assert text == sampledata.text_bytes()
    assert 440 * 1024 <= len(text) <= 470 * 1024
    decoded = text.decode("ascii")
    words = decoded.split()
    assert len(words) > 60_000
    assert max(len(line) for line in decoded.splitlines()) <= 100
    assert {"the", "and", "socket"} <= {w.strip(".,!?").lower() for w in words}


def test_png_is_valid() -> None:
    data = sampledata.png_bytes(width=64, height=48)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
        assert zlib.crc32(kind + body) == crc
        chunks[kind] = body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack_from(">IIBB", chunks[b"IHDR"])
    assert (width, height, depth, colour) == (64, 48, 8, 2)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)


def test_big_blocks_are_deterministic_and_distinct() -> None:
    blocks = list(sampledata.big_blocks(size=3 * sampledata.BLOCK + 10))
    assert [len(b) for b in blocks] == [sampledata.BLOCK] * 3 + [10]
    assert len({hashlib.sha256(b).digest() for b in blocks}) == 4
    assert blocks == list(sampledata.big_blocks(size=3 * sampledata.BLOCK + 10))


def test_ensure_creates_once(tmp_path: Path) -> None:
    created = sampledata.ensure_sample_data(tmp_path, big=True, big_size=1000)
    assert {p.name for p in created} == {"sample-text.txt", "sample-image.png", "large-1g.bin"}
    assert (tmp_path / "large-1g.bin").stat().st_size == 1000
    assert sampledata.ensure_sample_data(tmp_path, big=True, big_size=1000) == []
    assert not list(tmp_path.glob(".*.tmp"))
