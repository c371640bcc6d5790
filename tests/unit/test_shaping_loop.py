"""The verdict loop's I/O shell, with a fake NetfilterQueue and a fake injector."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator

import pytest

from socketlab.shaper import loop
from socketlab.shaper.core import Impairment

WAIT = 5.0  # generous deadline for the loop thread to act


def ipv4(number: int) -> bytes:
    body = b"z" * 40
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), number, 0, 64, 17, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9])) + body  # fmt: skip


class FakePacket:
    def __init__(self, number: int) -> None:
        self.payload = ipv4(number)
        self.verdict: str | None = None
        self.decided = threading.Event()
        self.admitted_at = 0.0
        self.decided_at = 0.0

    def get_payload(self) -> bytes:
        return self.payload

    def set_payload(self, payload: bytes) -> None:
        self.payload = payload

    def _decide(self, verdict: str) -> None:
        assert self.verdict is None, "a packet gets exactly one verdict"
        self.verdict = verdict
        self.decided_at = time.monotonic()
        self.decided.set()

    def accept(self) -> None:
        self._decide("accept")

    def drop(self) -> None:
        self._decide("drop")


class FakeQueue:
    """NetfilterQueue stand-in: packets are handed over through a socketpair wake-up."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.pending: list[FakePacket] = []
        self.lock = threading.Lock()
        self.callback: Callable[[FakePacket], None] | None = None
        self.bound = threading.Event()
        self.unbound = False

    def bind(self, queue: int, callback: Callable[[FakePacket], None], max_len: int) -> None:
        self.callback = callback
        self.bound.set()

    def get_fd(self) -> int:
        return self.reader.fileno()

    def run(self, block: bool = True) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            packets, self.pending = self.pending, []
        for packet in packets:
            packet.admitted_at = time.monotonic()
            assert self.callback is not None
            self.callback(packet)

    def unbind(self) -> None:
        self.unbound = True

    def feed(self, packet: FakePacket) -> None:
        with self.lock:
            self.pending.append(packet)
        self.writer.send(b"!")


class FakeInjector:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True


Fakes = tuple[FakeQueue, FakeInjector]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fakes]:
    queue, injector = FakeQueue(), FakeInjector()
    module = types.SimpleNamespace(NetfilterQueue=lambda: queue)
    monkeypatch.setitem(sys.modules, "netfilterqueue", module)
    monkeypatch.setattr(loop, "_injector", lambda timeout: injector)
    yield queue, injector
    queue.reader.close()
    queue.writer.close()


def start(impairment: Impairment, queue: FakeQueue) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=loop.run, args=(1, impairment), kwargs={"stop": stop, "seed": 3}
    )
    thread.start()
    assert queue.bound.wait(WAIT)
    return thread, stop


def finish(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_delayed_packets_are_accepted_no_earlier_than_the_delay(fakes: Fakes) -> None:
    queue, _ = fakes
    thread, stop = start(Impairment(delay=0.02), queue)
    packets = [FakePacket(n) for n in range(5)]
    for packet in packets:
        queue.feed(packet)
    for packet in packets:
        assert packet.decided.wait(WAIT)
        assert packet.verdict == "accept"
        assert packet.decided_at - packet.admitted_at >= 0.02
    finish(thread, stop)
    assert queue.unbound


def test_lost_packets_are_dropped(fakes: Fakes) -> None:
    queue, _ = fakes
    thread, stop = start(Impairment(loss=1.0), queue)
    packet = FakePacket(1)
    queue.feed(packet)
    assert packet.decided.wait(WAIT)
    assert packet.verdict == "drop"
    finish(thread, stop)


def test_duplicates_are_injected_towards_the_packets_destination(fakes: Fakes) -> None:
    queue, injector = fakes
    thread, stop = start(Impairment(duplicate=1.0), queue)
    packet = FakePacket(7)
    queue.feed(packet)
    assert packet.decided.wait(WAIT)
    finish(thread, stop)
    assert injector.sent == [(packet.payload, ("10.0.0.9", 0))]
    assert injector.closed


def test_stopping_releases_held_packets_instead_of_losing_them(fakes: Fakes) -> None:
    queue, _ = fakes
    thread, stop = start(Impairment(delay=3600.0), queue)
    packet = FakePacket(2)
    queue.feed(packet)
    deadline = time.monotonic() + WAIT
    while packet.admitted_at == 0.0:  # the loop thread has not taken it yet
        assert time.monotonic() < deadline
        time.sleep(0.005)  # poll interval of a deadline-bounded wait
    assert packet.verdict is None
    finish(thread, stop)
    assert packet.verdict == "accept"


def test_a_missing_binding_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "netfilterqueue", None)
    with pytest.raises(loop.ShaperError, match="NetfilterQueue is not installed"):
        loop.run(1, Impairment(), stop=threading.Event())
