"""The verdict loop's I/O shell, against a fake kernel queue on a fake netlink socket."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from lab.bench.engine import LoopFigures
from lab.report.watch import parse_shaper_stats
from socketlab.errors import ConfigError
from socketlab.shaper import loop
from socketlab.shaper import nfnetlink as nl
from socketlab.shaper.core import Impairment
from socketlab.shaper.invocation import ShaperInvocation
from socketlab.shaper.models import GilbertElliott

WAIT = 5.0  # generous deadline for the loop thread to act
SOURCE, DEST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9])


def ipv4(number: int) -> bytes:
    body = b"z" * 40
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), number, 0, 64, 17, 0,
                       SOURCE, DEST) + body  # fmt: skip


def packet_message(queue: int, packet_id: int, payload: bytes) -> bytes:
    body = nl.attribute(nl.ATTR_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 0))
    if payload:
        body += nl.attribute(nl.ATTR_PAYLOAD, payload)
    inner = struct.pack("!BBH", socket.AF_INET, 0, queue) + body
    return struct.pack("=IHHII", 16 + len(inner), 0x0300, 0, 0, 0) + inner


def ack_message(sequence: int, error: int) -> bytes:
    body = struct.pack("=i", error) + struct.pack("=IHHII", 16, 0x0302, 5, sequence, 0)
    return struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, sequence, 0) + body


class FakeKernel:
    """A netlink socket whose other end is a fake nfnetlink_queue.

    Packets the test queues are read one message per recv, as from the kernel;
    verdicts the loop sends are applied like the kernel does (a batch accepts
    every queued id up to its own), and when each packet got its verdict is
    recorded. A socketpair gives the loop a file descriptor to poll.
    """

    def __init__(self, *, bind_error: int = 0, copy: bool = True) -> None:
        self.waker, self._wake = socket.socketpair()
        self.lock = threading.Lock()
        self.inbound: list[bytes] = []
        self.bind_error = bind_error
        self.copy = copy
        self.config: bytes | None = None
        self.options: dict[int, int] = {}
        self.blocking = True
        self.queue = 0
        self.queued: list[int] = []
        self.queued_at: dict[int, float] = {}
        self.verdicts: dict[int, tuple[int, float, bytes | None]] = {}
        self.messages: list[nl.Verdict] = []
        self.sends = 0
        self.closed = False
        self.next_id = 1
        self.fail_reads: list[int] = []

    # --- the socket the loop sees
    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[option] = value

    def bind(self, address: tuple[int, int]) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        self.blocking = True

    def setblocking(self, flag: bool) -> None:
        self.blocking = flag

    def fileno(self) -> int:
        return self.waker.fileno()

    def close(self) -> None:
        self.closed = True

    def send(self, data: bytes) -> int:
        self.sends += 1
        if self.config is None:
            self.config = data
            self.queue = struct.unpack_from("!H", data, 18)[0]
            sequence = struct.unpack_from("=I", data, 8)[0]
            self._push(ack_message(sequence, self.bind_error))
            return len(data)
        now = time.monotonic()
        with self.lock:
            for message in nl.parse_verdicts(data):
                self.messages.append(message)
                if message.batch:
                    while self.queued and self.queued[0] <= message.packet_id:
                        self._decide(self.queued[0], message.decision, now, None)
                else:
                    assert message.packet_id in self.queued, "a verdict for an unqueued id"
                    self._decide(message.packet_id, message.decision, now, message.payload)
        return len(data)

    def recv_into(self, buffer: bytearray) -> int:
        with self.lock:
            if self.fail_reads:
                raise OSError(self.fail_reads.pop(0), "fake")
            if not self.inbound:
                if self.blocking:
                    raise TimeoutError("fake: nothing to read")
                raise BlockingIOError
            data = self.inbound.pop(0)
        with contextlib.suppress(BlockingIOError):
            self.waker.recv(1, socket.MSG_DONTWAIT)
        buffer[: len(data)] = data
        return len(data)

    # --- the test's side
    def _push(self, data: bytes) -> None:
        self.inbound.append(data)
        self._wake.send(b"!")

    def _decide(self, packet_id: int, decision: int, at: float, payload: bytes | None) -> None:
        self.queued.remove(packet_id)
        self.verdicts[packet_id] = (decision, at, payload)

    def feed(self, payload: bytes) -> int:
        with self.lock:
            packet_id = self.next_id
            self.next_id += 1
            self.queued.append(packet_id)
            self.queued_at[packet_id] = time.monotonic()
            self._push(packet_message(self.queue, packet_id, payload if self.copy else b""))
        return packet_id

    def wait_decided(self, *ids: int) -> None:
        deadline = time.monotonic() + WAIT
        while not all(i in self.verdicts for i in ids):
            assert time.monotonic() < deadline, f"no verdict for {ids} in {WAIT} s"
            time.sleep(0.002)  # poll interval of a deadline-bounded wait

    def close_test_side(self) -> None:
        self.waker.close()
        self._wake.close()


class FakeInjector:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False

    def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        self.sent.append((data, address))
        return len(data)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def injector(monkeypatch: pytest.MonkeyPatch) -> FakeInjector:
    fake = FakeInjector()
    monkeypatch.setattr(loop, "_injector", lambda timeout: fake)
    return fake


@contextlib.contextmanager
def running(impairment: Impairment, kernel: FakeKernel, seed: int = 3) -> Iterator[FakeKernel]:
    stop = threading.Event()
    failure: list[BaseException] = []
    invocation = ShaperInvocation(queue=4, impairment=impairment, seed=seed)

    def target() -> None:
        try:
            loop.run(invocation, stop=stop, netlink=lambda: kernel)  # type: ignore[arg-type, return-value]
        except BaseException as exc:  # handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + WAIT
    while kernel.config is None or kernel.blocking:  # bound and non-blocking: serving
        assert not failure, failure
        assert time.monotonic() < deadline
        time.sleep(0.002)  # poll interval of a deadline-bounded wait
    try:
        yield kernel
    finally:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        kernel.close_test_side()
    if failure:
        raise failure[0]


def test_a_fixed_delay_binds_in_metadata_mode_with_gso_and_batches() -> None:
    kernel = FakeKernel(copy=False)
    with running(Impairment(delay=0.03), kernel):
        ids = [kernel.feed(ipv4(n)) for n in range(20)]
        kernel.wait_decided(*ids)
    assert kernel.config is not None
    assert struct.pack("!IB", 0, nl.COPY_META) in kernel.config
    assert nl.attribute(nl.CFG_FLAGS, struct.pack("!I", nl.FLAG_GSO)) in kernel.config
    assert kernel.options[loop.SO_RCVBUFFORCE] == loop.ShaperConfig().receive_buffer
    for packet_id in ids:
        decision, at, _ = kernel.verdicts[packet_id]
        assert decision == nl.NF_ACCEPT
        assert at - kernel.queued_at[packet_id] >= 0.03
    assert all(m.batch for m in kernel.messages)  # in-order releases: batch verdicts only
    assert len(kernel.messages) < len(ids)
    assert kernel.closed


def test_reordered_packets_overtake_with_single_verdicts() -> None:
    kernel = FakeKernel(copy=False)
    with running(Impairment(delay=0.05, reorder=0.5), kernel, seed=5):
        ids = [kernel.feed(ipv4(n)) for n in range(30)]
        kernel.wait_decided(*ids)
    held = [i for i in ids if kernel.verdicts[i][1] - kernel.queued_at[i] >= 0.05]
    overtaking = [i for i in ids if i not in held]
    assert held, "half of the packets keep the delay"
    assert overtaking, "half of them skip it"
    assert all(kernel.verdicts[i][0] == nl.NF_ACCEPT for i in ids)
    singles = {m.packet_id for m in kernel.messages if not m.batch}
    passing = {i for i in overtaking if any(h < i for h in held)}
    assert passing
    assert passing <= singles  # sent past a held packet: one verdict each


def test_lost_packets_are_dropped_and_the_rest_accepted() -> None:
    kernel = FakeKernel(copy=False)
    # Gilbert-Elliott with a bad state that never ends: after the first move, all lost
    model = GilbertElliott(p=0.5, r=0.0)
    with running(Impairment(loss_model=model, delay=0.001), kernel, seed=11):
        ids = [kernel.feed(ipv4(n)) for n in range(40)]
        kernel.wait_decided(*ids)
    decisions = [kernel.verdicts[i][0] for i in ids]
    assert nl.NF_DROP in decisions
    assert nl.NF_ACCEPT in decisions
    first_drop = decisions.index(nl.NF_DROP)
    assert decisions[first_drop:] == [nl.NF_DROP] * (len(ids) - first_drop)


def test_duplicates_are_injected_towards_the_packets_destination(injector: FakeInjector) -> None:
    kernel = FakeKernel()
    with running(Impairment(duplicate=1.0), kernel):
        packet_id = kernel.feed(ipv4(7))
        kernel.wait_decided(packet_id)
    assert kernel.config is not None
    assert struct.pack("!IB", nl.MAX_COPY_RANGE, nl.COPY_PACKET) in kernel.config
    assert nl.attribute(nl.CFG_FLAGS, struct.pack("!I", 0)) in kernel.config
    assert injector.sent == [(ipv4(7), ("10.0.0.9", 0))]
    assert injector.closed


def test_a_corrupted_packet_gets_its_new_payload_in_its_own_verdict() -> None:
    kernel = FakeKernel()
    with running(Impairment(corrupt=1.0), kernel):
        packet_id = kernel.feed(ipv4(3))
        kernel.wait_decided(packet_id)
    decision, _, payload = kernel.verdicts[packet_id]
    assert decision == nl.NF_ACCEPT
    assert payload is not None
    assert payload != ipv4(3)
    assert len(payload) == len(ipv4(3))
    assert [m.batch for m in kernel.messages] == [False]


def test_stopping_releases_held_packets_instead_of_losing_them() -> None:
    kernel = FakeKernel(copy=False)
    with running(Impairment(delay=3600.0), kernel):
        packet_id = kernel.feed(ipv4(2))
        deadline = time.monotonic() + WAIT
        while kernel.inbound:  # the loop has not read it yet
            assert time.monotonic() < deadline
            time.sleep(0.002)  # poll interval of a deadline-bounded wait
        assert packet_id not in kernel.verdicts
    assert kernel.verdicts[packet_id][0] == nl.NF_ACCEPT


def test_a_refused_bind_is_a_one_line_shaper_error() -> None:
    kernel = FakeKernel(bind_error=-errno.EBUSY)
    invocation = ShaperInvocation(queue=4, impairment=Impairment(delay=0.01))
    with pytest.raises(loop.ShaperError, match=r"^cannot bind NFQUEUE 4: EBUSY \(") as caught:
        loop.run(invocation, stop=threading.Event(), netlink=lambda: kernel)  # type: ignore[arg-type, return-value]
    assert "\n" not in str(caught.value)
    assert kernel.closed
    kernel.close_test_side()


def test_a_full_socket_buffer_is_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    kernel = FakeKernel(copy=False)
    config = loop.ShaperConfig(stats_interval=0.0)
    stop = threading.Event()
    invocation = ShaperInvocation(queue=4, impairment=Impairment(delay=0.001), seed=1)
    thread = threading.Thread(
        target=loop.run,
        args=(invocation,),
        kwargs={"stop": stop, "config": config, "netlink": lambda: kernel},
    )
    with caplog.at_level("INFO", logger="socketlab.shaper"):
        thread.start()
        deadline = time.monotonic() + WAIT
        while kernel.config is None or kernel.blocking:
            assert time.monotonic() < deadline
            time.sleep(0.002)  # poll interval of a deadline-bounded wait
        with kernel.lock:
            kernel.fail_reads = [errno.ENOBUFS]  # the next read meets ENOBUFS, then the packet
        packet_id = kernel.feed(ipv4(1))
        kernel.wait_decided(packet_id)
        stop.set()
        thread.join(WAIT)
    kernel.close_test_side()
    stopped = [r.getMessage() for r in caplog.records if "event=shaper_stopped" in r.getMessage()]
    assert stopped
    assert " enobufs=1 " in stopped[0]
    assert "seed=1" in caplog.text
    # what lab bench reads back from the helper's log
    figures = LoopFigures.from_stats(parse_shaper_stats(stopped[0])[4])
    assert figures is not None
    assert figures.packets == 1


def test_queue_modes() -> None:
    assert loop.queue_mode(Impairment(delay=0.02)).name == "copy=meta gso=on"
    assert loop.queue_mode(Impairment(loss=0.1)).name == "copy=meta gso=on"
    assert loop.queue_mode(Impairment(duplicate=0.1)).name == "copy=packet gso=off"
    assert loop.queue_mode(Impairment(corrupt=0.1)).name == "copy=packet gso=off"


def test_main_turns_a_bad_flag_into_one_usage_line() -> None:
    with pytest.raises(ConfigError, match=r"^shaper: --loss: '2' is not a share") as caught:
        loop.main(["--queue", "1", "--loss", "2"])
    assert "\n" not in str(caught.value)


def test_main_passes_every_model_and_a_drawn_seed_to_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[ShaperInvocation] = []
    monkeypatch.setattr(loop, "run", lambda invocation, **kwargs: seen.append(invocation))
    argv = ["--queue", "2", "--delay", "0.01", "--jitter", "0.002",
            "--delay-distribution", "pareto", "--loss-model", "gemodel:0.1,0.5,1.0,0.0"]  # fmt: skip
    assert loop.main(argv) == 0
    [invocation] = seen
    assert invocation.impairment.loss_model == GilbertElliott(p=0.1, r=0.5)
    assert str(invocation.impairment.delay_distribution) == "pareto"
    assert invocation.seed is not None
