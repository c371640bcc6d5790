"""The chat hub and clients over 127.0.0.1 (no Docker): real sockets, short timers."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from socketlab.chat import wire
from socketlab.chat.client import (
    ChatClient,
    ClientConfig,
    Transcript,
    describe,
    json_line,
    run_steps,
)
from socketlab.chat.core import HubConfig
from socketlab.chat.errors import ChatRefused
from socketlab.chat.hub import HubServer, HubServerConfig
from socketlab.chat.script import parse_script
from socketlab.chat.swarm import Swarm, SwarmConfig
from socketlab.protocol import encode_message
from socketlab.protocol.messages import JSON_TYPE

DEADLINE = 30.0  # generous: the machine is shared

CORE = HubConfig(heartbeat_interval=0.5, peer_timeout=1.5)
BASE = HubServerConfig(host="127.0.0.1", port=0, poll_interval=0.01, core=CORE)  # quick teardown


class RunningHub:
    """A hub serving on a loopback port, and the clients a test made against it."""

    def __init__(self, config: HubServerConfig, serve: Callable[..., Any]) -> None:
        self.server = HubServer(config)
        self.port = self.server.bind()
        self.thread = serve(self.server.run, name="hub", stop_within=DEADLINE)
        self.clients: list[ChatClient] = []

    def client(self, name: str, **kwargs: Any) -> ChatClient:
        config = ClientConfig(host="127.0.0.1", port=self.port, hub_timeout=5.0, keepalive=0.3)
        client = ChatClient(name, config=config, **kwargs)
        self.clients.append(client)
        return client

    def joined(self, name: str, **kwargs: Any) -> ChatClient:
        client = self.client(name, **kwargs)
        client.join()
        return client

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.thread.close()


@pytest.fixture
def hub_factory(serve: Callable[..., Any]) -> Iterator[Callable[[HubServerConfig], RunningHub]]:
    started: list[RunningHub] = []

    def start(config: HubServerConfig = BASE) -> RunningHub:
        running = RunningHub(config, serve)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture
def hub(hub_factory: Callable[[HubServerConfig], RunningHub]) -> RunningHub:
    return hub_factory(BASE)


def read_events(
    sock: socket.socket, stream: wire.ChatStream, until: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE
    while not until(events):
        assert time.monotonic() < deadline, f"timed out; got {events}"
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = sock.recv(65536)
        events += stream.receive_data(data)
        if not data:
            break
    return events


def test_two_clients_converse_and_transcripts_match(hub: RunningHub, tmp_path: Path) -> None:
    files = {
        name: (tmp_path / f"{name}.jsonl").open("w", encoding="utf-8") for name in ("alice", "bob")
    }
    alice = hub.joined("alice", transcript=Transcript(files["alice"]))
    bob = hub.joined("bob", transcript=Transcript(files["bob"]))
    alice_lines = [f"alice says {i} ✓" for i in range(5)]
    bob_lines = [f"bob says {i}" for i in range(5)]
    script_a = [
        "wait-for bob",
        *(f"say {t}" for t in alice_lines),
        *(f"expect bob: {t}" for t in bob_lines),
    ]
    script_b = [
        "wait-for alice",
        *(f"say {t}" for t in bob_lines),
        *(f"expect alice: {t}" for t in alice_lines),
    ]
    results: dict[str, list[str]] = {}
    threads = [
        threading.Thread(
            target=lambda c=c, s=s: results.__setitem__(c.name, run_steps(c, parse_script(s)))
        )
        for c, s in ((alice, script_a), (bob, script_b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert results == {"alice": [], "bob": []}
    alice.leave()
    bob.wait_until(lambda: "alice" in bob.left, timeout=DEADLINE)
    bob.leave()
    for handle in files.values():
        handle.close()
    records = {
        name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        for name in files
    }
    for me, other in (("alice", "bob"), ("bob", "alice")):
        sent = [
            r["event"]["text"]
            for r in records[me]
            if r["dir"] == "out" and r["event"]["type"] == "say"
        ]
        got = [
            r["event"]["text"]
            for r in records[other]
            if r["dir"] == "in" and r["event"]["type"] == "message"
        ]
        assert sent == got
        assert all(isinstance(r["t"], float) for r in records[me])
    assert {"type": "left", "name": "alice", "reason": "bye"} in [
        r["event"] for r in records["bob"]
    ]


def test_taken_name_is_refused_clearly(hub: RunningHub) -> None:
    hub.joined("alice")
    with pytest.raises(ChatRefused) as info:
        hub.joined("alice")
    assert info.value.code == "name-taken"
    assert "alice" in info.value.detail


def test_many_participants_in_process(hub: RunningHub) -> None:
    swarm = Swarm(
        SwarmConfig(
            host="127.0.0.1",
            port=hub.port,
            participants=40,
            messages=10,
            deadline=DEADLINE,
            join_deadline=DEADLINE,
        )
    )
    swarm.connect()
    report = swarm.run()
    assert report["ok"], report
    assert report["complete"] == 40
    assert report["missing"] == 0
    assert report["order_errors"] == 0
    assert report["delivered"] == 40 * 39 * 10


def test_observers_mode_scales_the_count(hub: RunningHub) -> None:
    config = SwarmConfig(
        host="127.0.0.1",
        port=hub.port,
        participants=30,
        messages=5,
        observers=4,
        deadline=DEADLINE,
        join_deadline=DEADLINE,
    )
    swarm = Swarm(config)
    swarm.connect()
    report = swarm.run()
    assert report["ok"], report
    assert report["observers"] == 4
    assert report["complete"] == 4
    assert report["delivered_estimated"] is True
    assert report["delivered"] == 30 * 29 * 5
    assert report["sink_bytes"] > 0


def test_slow_reader_overflows_alone(hub_factory: Callable[[HubServerConfig], RunningHub]) -> None:
    core = replace(CORE, max_queue_frames=50, peer_timeout=30.0, heartbeat_interval=10.0)
    running = hub_factory(replace(BASE, core=core, send_buffer=4096))
    slow = running.raw()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(wire.join("slow"))
    talker = running.joined("talker")
    listener = running.joined("listener")
    assert talker.wait_until(lambda: "slow" in talker.present, timeout=DEADLINE)
    # slow never reads: kernel buffers fill, then its bounded outbox overflows.
    for i in range(2000):
        talker.say(f"{i:04d} " + "x" * 200)
        # listener keeps up (one message in flight); slow never reads at all.
        assert listener.wait_until(lambda n=i + 1: len(listener.messages) == n, timeout=DEADLINE)
        if "slow" in listener.left:
            break
    assert listener.wait_until(lambda: "slow" in listener.left, timeout=DEADLINE)
    assert "overflow" in listener.left["slow"]
    assert listener.wait_until(lambda: len(listener.messages) == i + 1, timeout=DEADLINE)
    assert [m["seq"] for m in listener.messages] == list(range(1, i + 2))
    assert talker.gone is None
    assert listener.gone is None
    # What slow finally reads ends with the reason, then the hub closes it.
    slow.settimeout(DEADLINE)
    events = read_events(slow, wire.ChatStream(), lambda ev: any(e["type"] == "error" for e in ev))
    assert events[-1]["code"] == "overflow"
    slow.close()


def test_silent_peer_is_announced_left_within_the_timeout(
    hub_factory: Callable[[HubServerConfig], RunningHub],
) -> None:
    core = replace(CORE, peer_timeout=1.0)  # still well above the watcher's 0.3 s keepalive
    hub = hub_factory(replace(BASE, core=core))
    watcher = hub.joined("watcher")
    silent = hub.raw()
    started = time.monotonic()  # before the join: the hub's clock starts there, not when seen
    silent.sendall(wire.join("silent"))  # and then never a byte more, never reads
    assert watcher.wait_until(lambda: "silent" in watcher.present, timeout=DEADLINE)
    assert watcher.wait_until(lambda: "silent" in watcher.left, timeout=DEADLINE)
    took = time.monotonic() - started
    assert watcher.left["silent"] == "heartbeat timeout"
    assert took >= core.peer_timeout - 0.3  # not before the configured timeout
    assert watcher.gone is None  # the watcher's own keepalive kept it in
    silent.close()


@pytest.mark.parametrize(
    ("payload", "code", "closes"),
    [
        pytest.param(
            encode_message(
                JSON_TYPE, b'{"type":"say","text":"\xc3\x28"}', content_encoding="utf-8"
            ),
            "invalid-utf8",
            False,
            id="invalid-utf8",
        ),
        pytest.param(wire.say("x" * 5000), "too-long", False, id="oversize-text"),
        pytest.param(
            encode_message(JSON_TYPE, b"x" * 70_000, content_encoding="utf-8"),
            "protocol",
            True,
            id="oversize-frame",
        ),
        pytest.param(b"\x00\x03abc", "protocol", True, id="garbage"),
    ],
)
def test_bad_input_errors_that_client_only(
    hub: RunningHub, payload: bytes, code: str, closes: bool
) -> None:
    other = hub.joined("other")
    bad = hub.raw()
    stream = wire.ChatStream()
    bad.sendall(wire.join("bad"))
    read_events(bad, stream, lambda ev: any(e["type"] == "welcome" for e in ev))
    bad.sendall(payload)
    events = read_events(bad, stream, lambda ev: any(e["type"] == "error" for e in ev))
    assert [e["code"] for e in events if e["type"] == "error"] == [code]
    if closes:
        assert read_events(bad, stream, lambda ev: False) == []  # then EOF
        assert stream.closed
        assert other.wait_until(lambda: "bad" in other.left, timeout=DEADLINE)
    else:
        bad.sendall(wire.say("still here"))
        assert other.wait_until(lambda: len(other.messages) == 1, timeout=DEADLINE)
        assert other.messages[0]["text"] == "still here"
    assert other.errors == []
    assert other.gone is None
    bad.close()


def test_stopping_the_hub_tells_clients(hub: RunningHub) -> None:
    alice = hub.joined("alice")
    hub.thread.close()  # fails unless the hub's loop ends
    assert alice.wait_until(lambda: alice.gone is not None, timeout=DEADLINE)
    assert [e["code"] for e in alice.errors] == ["shutdown"]


def _read_pty(fd: int, until: Callable[[str], bool], buffer: list[str]) -> str:
    deadline = time.monotonic() + DEADLINE
    while not until("".join(buffer)):
        assert time.monotonic() < deadline, f"pty output so far: {''.join(buffer)!r}"
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            buffer.append(chunk.decode(errors="replace"))
    return "".join(buffer)


def test_interactive_in_a_real_pty(hub: RunningHub) -> None:
    bob = hub.joined("bob")
    pid, fd = pty.fork()
    if pid == 0:  # the child: a human's terminal running socketlab chat
        os.execv(  # noqa: S606 - argv list, no shell
            sys.executable,
            [
                sys.executable,
                "-m",
                "socketlab",
                "chat",
                "--name",
                "alice",
                "--host",
                "127.0.0.1",
                "--port",
                str(hub.port),
            ],
        )
    out: list[str] = []
    try:
        _read_pty(fd, lambda text: "alice> " in text, out)
        assert bob.wait_until(lambda: "alice" in bob.present, timeout=DEADLINE)
        os.write(fd, b"hello from a terminal\r")
        assert bob.wait_until(lambda: len(bob.messages) == 1, timeout=DEADLINE)
        assert bob.messages[0]["from"] == "alice"
        assert bob.messages[0]["text"] == "hello from a terminal"
        # alice is half-way through a line when bob speaks: the line is redrawn intact.
        out.clear()
        _read_pty(fd, lambda text: text.endswith("alice> "), out)  # readline reads again
        os.write(fd, b"half a li")
        _read_pty(fd, lambda text: text.endswith("half a li"), out)
        bob.say("interrupting!")
        screen = _read_pty(
            fd, lambda text: "bob: interrupting!" in text and text.endswith("alice> half a li"), out
        )
        assert "\r\x1b[2Kbob: interrupting!" in screen
        os.write(fd, b"ne\r")
        assert bob.wait_until(lambda: len(bob.messages) == 2, timeout=DEADLINE)
        assert bob.messages[1]["text"] == "half a line"
        # Ctrl-D at an empty prompt leaves; typed once readline is reading again
        # (a ^D typed between two input() calls is eaten by the cooked-mode tty).
        out.clear()
        _read_pty(fd, lambda text: text.endswith("alice> "), out)
        # A bidi override is relayed (no control character) but shown escaped, not obeyed.
        bob.say("look \u202eevil")
        screen = _read_pty(
            fd, lambda text: "bob: look \\u202eevil" in text and text.endswith("alice> "), out
        )
        assert "\u202e" not in screen
        os.write(fd, b"\x04")
        assert bob.wait_until(lambda: "alice" in bob.left, timeout=DEADLINE)
        assert bob.left["alice"] == "bye"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_scripted_cli_writes_a_transcript_and_fails_on_a_missed_expectation(
    hub: RunningHub, tmp_path: Path
) -> None:
    bob = hub.joined("bob")
    script = tmp_path / "alice.chat"
    script.write_text("wait-for bob\nsay hi bob\ndeadline 0.3\nexpect bob: never said\n")
    transcript = tmp_path / "alice.jsonl"
    argv = [
        "--name",
        "alice",
        "--host",
        "127.0.0.1",
        "--port",
        str(hub.port),
        "--script",
        str(script),
        "--transcript",
        str(transcript),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "socketlab", "chat", *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 1
    assert "message bob: 'never said' not seen within 0.3 s" in result.stderr
    assert bob.wait_until(lambda: [m["text"] for m in bob.messages] == ["hi bob"], timeout=DEADLINE)
    kinds = [
        (r["dir"], r["event"]["type"]) for r in map(json.loads, transcript.read_text().splitlines())
    ]
    assert kinds[:2] == [("out", "join"), ("in", "welcome")]
    assert ("out", "say") in kinds
    assert kinds[-1] == ("in", "bye")
    taken = subprocess.run(
        [
            sys.executable,
            "-m",
            "socketlab",
            "chat",
            "--name",
            "bob",
            "--host",
            "127.0.0.1",
            "--port",
            str(hub.port),
            "--say",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert taken.returncode == 1, "a refusal is a failure, not a usage error"
    assert "the name 'bob' is taken" in taken.stderr


HUB_SCRIPT = """
import sys, threading
from socketlab.chat.hub import HubServer, HubServerConfig
server = HubServer(HubServerConfig(host="127.0.0.1", port=0, poll_interval=0.05))
print(server.bind(), flush=True)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
server.run(stop)
"""


def test_hub_out_of_file_descriptors_keeps_serving() -> None:
    import resource  # noqa: PLC0415 - only this test limits a child's descriptors

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    proc = subprocess.Popen(
        [sys.executable, "-c", HUB_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_fd_limit,  # noqa: PLW1509 - a plain setrlimit, no locks involved
    )
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        config = ClientConfig(host="127.0.0.1", port=port, hub_timeout=5.0, keepalive=0.3)
        first = ChatClient("first", config=config)
        first.join()
        # More connections than the hub has descriptors: the excess waits in the backlog.
        socks = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(60)]
        for sock in socks:
            sock.sendall(wire.join(f"crowd-{sock.getsockname()[1]}"))
        assert first.wait_until(lambda: len(first.present) > 10, timeout=DEADLINE)
        for sock in socks:
            sock.close()
        socks = []
        # Descriptors are free again: a newcomer gets in, and the first one never noticed.
        late = ChatClient("late", config=config)
        late.join()
        assert first.wait_until(lambda: "late" in first.present, timeout=DEADLINE)
        assert first.gone is None
        late.leave()
        first.leave()
        assert proc.poll() is None, "the hub died"
    finally:
        for sock in socks:
            sock.close()
        proc.kill()
        _, errors = proc.communicate(timeout=DEADLINE)
    assert "event=chat_accept_failed" in errors  # the limit was really hit


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": "message", "from": "m\x1b[2J", "text": "hi\n* alice left (bye)"}),
        pytest.param({"type": "joined", "name": "\x1b]0;pwned\x07"}),
        pytest.param({"type": "left", "name": "x", "reason": "bye\r* alice left"}),
        pytest.param({"type": "welcome", "name": "me", "participants": ["me", "\u202eevil"]}),
        pytest.param({"type": "participants", "names": ["a\x9b", "b"]}),
        pytest.param({"type": "error", "code": "x\x07", "detail": "\x1b[31mred"}),
    ],
)
def test_printed_lines_never_carry_control_or_bidi_characters(event: dict[str, Any]) -> None:
    # What a hostile hub (or a peer through an old hub) sends is shown, not obeyed.
    line = describe(event)
    assert line is not None
    assert line.isprintable(), repr(line)
    assert "\\x" in line or "\\u" in line


def test_transcript_lines_are_terminal_safe_and_decode_unchanged() -> None:
    record = {"t": 1.0, "dir": "in", "event": {"text": "a\x1b\x9b\x7f\u202eb é ✓"}}
    line = json_line(record)
    assert line.isprintable()
    assert json.loads(line) == record
