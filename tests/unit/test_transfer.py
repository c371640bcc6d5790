"""``lab exec`` / ``lab cp`` without Docker: the exec stream decoder (byte at a time, hostile
frames) and the extraction plan that refuses archives escaping the destination."""

from __future__ import annotations

import io
import tarfile
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.transfer import (
    STDERR,
    STDOUT,
    StreamDecoder,
    TransferError,
    archive_member_name,
    container_destination,
    extraction_plan,
)


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def joined(pieces: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out: dict[int, bytes] = {STDOUT: b"", STDERR: b""}
    for stream, payload in pieces:
        out[stream] += payload
    return out


def test_frames_split_by_stream() -> None:
    data = frame(1, b"hello ") + frame(2, b"oops\n") + frame(1, b"world\n")
    assert joined(StreamDecoder().feed(data)) == {STDOUT: b"hello world\n", STDERR: b"oops\n"}


def test_one_byte_at_a_time_gives_the_same_output() -> None:
    data = frame(1, b"a" * 300) + frame(2, b"") + frame(2, b"err") + frame(1, b"z")
    decoder = StreamDecoder()
    pieces = [piece for byte in data for piece in decoder.feed(bytes([byte]))]
    assert decoder.feed(b"") == []
    assert joined(pieces) == {STDOUT: b"a" * 300 + b"z", STDERR: b"err"}


def test_a_huge_claimed_frame_is_passed_on_as_it_arrives_not_buffered() -> None:
    decoder = StreamDecoder()
    pieces = decoder.feed(bytes([1, 0, 0, 0]) + (2**31).to_bytes(4, "big") + b"x" * 10)
    assert pieces == [(STDOUT, b"x" * 10)]


def test_a_stream_that_ends_mid_frame_is_an_error() -> None:
    decoder = StreamDecoder()
    decoder.feed(frame(1, b"abc")[:-1])
    with pytest.raises(TransferError, match="middle of a frame"):
        decoder.feed(b"")


def test_an_unknown_stream_is_refused() -> None:
    with pytest.raises(TransferError, match="unknown stream 7"):
        StreamDecoder().feed(frame(7, b"x"))


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=40)), max_size=8), st.data())
def test_any_split_of_any_frames_round_trips(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    raw = b"".join(frame(s, p) for s, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    decoder = StreamDecoder()
    pieces = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        if end > start:
            pieces += decoder.feed(raw[start:end])
    assert decoder.feed(b"") == []
    expected = {STDOUT: b"", STDERR: b""}
    for stream, payload in frames:
        expected[stream] += payload
    assert joined(pieces) == expected


# --------------------------------------------------------------------------- archives


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644):  # type: ignore[no-untyped-def]
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    return info


def test_a_file_lands_in_the_folder_under_its_name_or_the_new_one() -> None:
    (placed,) = extraction_plan([member("report.txt")])
    assert (placed.target, placed.kind) == (PurePosixPath("report.txt"), "file")
    (renamed,) = extraction_plan([member("report.txt")], rename_to="copy.txt")
    assert renamed.target == PurePosixPath("copy.txt")


def test_a_folder_keeps_its_tree_and_links_inside_it() -> None:
    plan = extraction_plan(
        [
            member("data/", tarfile.DIRTYPE, mode=0o755),
            member("data/a.bin", mode=0o4755),
            member("data/sub/", tarfile.DIRTYPE),
            member("data/sub/up", tarfile.SYMTYPE, link="../a.bin"),
            member("data/hard", tarfile.LNKTYPE, link="data/a.bin"),
        ],
        rename_to="copy",
    )
    assert [str(p.target) for p in plan] == [
        "copy",
        "copy/a.bin",
        "copy/sub",
        "copy/sub/up",
        "copy/hard",
    ]
    assert plan[1].mode == 0o755  # no set-uid bit on the host
    assert plan[4].link == "copy/a.bin"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        pytest.param([member("/etc/passwd")], "absolute path", id="absolute"),
        pytest.param([member("../../.bashrc")], "leaves the destination", id="dotdot"),
        pytest.param(
            [member("d/", tarfile.DIRTYPE), member("d/../../x")], "leaves", id="dotdot-inside"
        ),
        pytest.param(
            [member("d/", tarfile.DIRTYPE), member("d/l", tarfile.SYMTYPE, link="/etc/shadow")],
            "symbolic link to /etc/shadow",
            id="absolute-symlink",
        ),
        pytest.param(
            [member("d/", tarfile.DIRTYPE), member("d/l", tarfile.SYMTYPE, link="../../etc")],
            "symbolic link out of it",
            id="symlink-out",
        ),
        pytest.param(
            [member("f", tarfile.LNKTYPE, link="/etc/passwd")], "hard link", id="hardlink-out"
        ),
        pytest.param(
            [
                member("d/", tarfile.DIRTYPE),
                member("d/a", tarfile.SYMTYPE, link="."),
                member("d/a/b", tarfile.SYMTYPE, link=".."),
            ],
            "through a symbolic link",
            id="symlink-chain",
        ),
        pytest.param([member("dev", tarfile.CHRTYPE)], "device", id="device"),
        pytest.param([member("fifo", tarfile.FIFOTYPE)], "FIFO", id="fifo"),
        pytest.param([member("a"), member("b")], "more than one top entry", id="two-tops"),
        pytest.param([], "empty", id="empty"),
    ],
)
def test_hostile_archives_are_refused_whole(members: list[tarfile.TarInfo], message: str) -> None:
    with pytest.raises(TransferError, match=message):
        extraction_plan(members)


def test_a_real_tar_stream_reads_back_into_a_plan() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as archive:
        data = b"payload"
        info = tarfile.TarInfo("sample.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:") as archive:
        (placed,) = extraction_plan(archive.getmembers())
    assert placed.target == PurePosixPath("sample.png")


def test_destinations_in_a_container_follow_docker_cp() -> None:
    assert container_destination("/tmp", dest_is_dir=True, source_name="a.txt") == ("/tmp", "a.txt")
    assert container_destination("/tmp/", dest_is_dir=False, source_name="a.txt") == (
        "/tmp",
        "a.txt",
    )
    assert container_destination("/tmp/b.txt", dest_is_dir=False, source_name="a.txt") == (
        "/tmp",
        "b.txt",
    )
    with pytest.raises(TransferError, match="absolute"):
        container_destination("tmp/b", dest_is_dir=False, source_name="a")
    with pytest.raises(TransferError, match="plain file name"):
        archive_member_name("../x")
