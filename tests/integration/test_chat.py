"""Chat across real containers: participants in the client container, hub in the server container.

Everything runs through ``socketlab chat`` / ``socketlab chat-swarm`` in the
client container (``lab.exec``), except the interactive test, which drives
``docker exec -it`` in a real pty on the host like a person in a terminal.
Deadlines are generous: the machine is shared and loaded.
"""

from __future__ import annotations

import json
import os
import pty
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lab.api import ExecResult, Lab
from lab.waiting import wait_for

pytestmark = pytest.mark.integration

CHAT_PORT = 4572
HEARTBEAT_DEADLINE = 15.0  # the bound for announcing a vanished peer


@pytest.fixture(scope="module")
def hub(chat_hub: Lab) -> Lab:
    return chat_hub


def chat(lab: Lab, name: str, *args: str, timeout: float = 120) -> ExecResult:
    return lab.exec("client", ["socketlab", "chat", "--name", name, *args], timeout=timeout)


def transcript(result: ExecResult) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def in_parallel(*calls: Callable[[], ExecResult]) -> list[ExecResult]:
    results: list[ExecResult | None] = [None] * len(calls)

    def run(index: int) -> None:
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert all(r is not None for r in results), "a chat participant did not finish"
    return [r for r in results if r is not None]


def swarm(lab: Lab, *args: str, timeout: float = 600) -> dict[str, Any]:
    result = lab.exec("client", ["socketlab", "chat-swarm", *args], timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"chat-swarm exit {result.exit_code}: {result.stderr.strip()}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def test_two_clients_converse_and_transcripts_match(hub: Lab) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    alice_says = [f"hello {bob}, this is line {i} ✓" for i in range(5)]
    bob_says = [f"hi {alice}: reply {i}" for i in range(5)]

    def participant(me: str, other: str, says: list[str], hears: list[str]) -> ExecResult:
        args = ["--wait-for", other, "--pause", "0.1", "--deadline", "90", "--transcript", "-"]
        args += [a for text in says for a in ("--say", text)]
        args += [a for text in hears for a in ("--expect", f"{other}:{text}")]
        return chat(hub, me, *args)

    res_a, res_b = in_parallel(
        lambda: participant(alice, bob, alice_says, bob_says),
        lambda: participant(bob, alice, bob_says, alice_says),
    )
    assert res_a.ok, res_a.stderr
    assert res_b.ok, res_b.stderr
    records = {alice: transcript(res_a), bob: transcript(res_b)}
    for me, other in ((alice, bob), (bob, alice)):
        sent = [
            r["event"]["text"]
            for r in records[me]
            if r["dir"] == "out" and r["event"]["type"] == "say"
        ]
        got = [
            r["event"]["text"]
            for r in records[other]
            if r["dir"] == "in" and r["event"]["type"] == "message" and r["event"]["from"] == me
        ]
        assert sent == got, f"{other}'s transcript differs from what {me} sent"
        seqs = [
            r["event"]["seq"]
            for r in records[other]
            if r["dir"] == "in" and r["event"]["type"] == "message"
        ]
        assert seqs == list(range(1, len(seqs) + 1))


def test_taken_name_gets_a_clear_error(hub: Lab) -> None:
    name = f"holder-{uuid.uuid4().hex[:6]}"
    holder_result: list[ExecResult] = []
    holder = threading.Thread(
        target=lambda: holder_result.append(
            chat(hub, name, "--expect-count", "1", "--deadline", "60", "--transcript", "-")
        )
    )
    holder.start()
    try:
        # The holder must own the name before the probe: a probe that joined first would
        # take it, speak and leave, and the holder would be the one refused.
        present = chat(hub, f"look-{name}", "--wait-for", name, "--deadline", "60", timeout=90)
        assert present.ok, f"the holder never joined: {present.stderr}"
        taken = wait_for(
            lambda: (
                (r := chat(hub, name, "--say", "me too", timeout=30)).exit_code == 1
                and "is taken" in r.stderr
                and r
            ),
            timeout=60,
            what="the second join to be refused",
        )
        assert f"the name '{name}' is taken" in taken.stderr
    finally:
        chat(hub, f"wake-{name}", "--wait-for", name, "--say", "done", timeout=60)
        holder.join(timeout=120)
    assert holder_result, "the first participant did not finish"
    assert holder_result[0].ok, holder_result[0].stderr


def test_200_participants_each_send_10_and_everyone_gets_everything_in_order(hub: Lab) -> None:
    report = swarm(
        hub,
        "-n",
        "200",
        "-m",
        "10",
        "--prefix",
        f"p{uuid.uuid4().hex[:4]}",
        "--join-deadline",
        "240",
        "--deadline",
        "400",
    )
    print(
        f"\n200 x 10: {json.dumps({k: report[k] for k in ('delivered', 'delivered_per_s', 'duration_s', 'latency')})}"
    )
    assert report["ok"], report
    assert report["complete"] == 200
    assert report["expected_per_participant"] == 1990
    assert report["missing"] == 0
    assert report["order_errors"] == 0
    assert report["delivered"] == 200 * 1990


def test_slow_reader_does_not_delay_the_others(hub: Lab) -> None:
    # 30 talkers, 40 messages each at 10/s; then the same with one more participant
    # that only listens, at 1 KiB/s. The talkers' delivery is measured both times.
    args = ["-m", "40", "--rate", "10", "--join-deadline", "120", "--deadline", "300"]
    baseline = swarm(hub, "-n", "30", *args, "--prefix", f"base{uuid.uuid4().hex[:4]}")
    with_slow = swarm(
        hub,
        "-n",
        "31",
        "--slow",
        "1",
        "--slow-rate",
        "1024",
        *args,
        "--prefix",
        f"slow{uuid.uuid4().hex[:4]}",
    )
    expected = 29 * 40
    print(
        "\nslow reader: talkers' latency without "
        f"{baseline['latency']} / with {with_slow['latency']}; the slow reader had "
        f"{with_slow['slow']['received']} of {30 * 40} when the talkers were done "
        f"({with_slow['last_complete_s']} s), its latency {with_slow['slow']['latency']}"
    )
    assert baseline["ok"], baseline
    assert with_slow["ok"], with_slow  # every talker got everything, in order
    assert with_slow["complete"] == 30
    assert with_slow["expected_per_participant"] == expected
    # The slow reader really was slow: still far behind when the talkers were done...
    assert with_slow["slow"]["received"][0] < 30 * 40
    # ...and the talkers were not held to its pace (generous bounds: the machine is loaded).
    slow_pace_s = 30 * 40 * 120 / 1024  # ~120-byte frames at 1 KiB/s
    assert with_slow["last_complete_s"] < slow_pace_s / 2
    bound_ms = 10 * max(baseline["latency"]["p99_ms"], 500.0)
    assert with_slow["latency"]["p99_ms"] < bound_ms


def test_stopped_participant_is_announced_left_within_the_deadline(hub: Lab) -> None:
    name = f"sleeper-{uuid.uuid4().hex[:6]}"
    script = f"/tmp/{name}.chat"
    log = f"/tmp/{name}.log"
    started = hub.exec(
        "client",
        [
            "sh",
            "-c",
            f"printf 'say about to freeze\\npause 600\\n' > {script} && "
            f"nohup socketlab chat --name {name} --script {script} > {log} 2>&1 & echo $!",
        ],
        timeout=30,
    )
    pid = started.stdout.strip()
    assert started.ok, started
    assert pid.isdigit(), started
    try:
        wait_for(
            lambda: "joined as" in hub.exec("client", ["cat", log], timeout=10).stdout,
            timeout=60,
            what=f"{name} to join",
        )
        # SIGSTOP: the process is frozen like a paused container; the kernel still ACKs.
        assert hub.exec("client", ["kill", "-STOP", pid], timeout=10).ok
        stopped_at = time.time()
        result = chat(
            hub,
            f"watcher-{name}",
            "--wait-for",
            name,
            "--expect-left",
            name,
            "--deadline",
            "90",
            "--transcript",
            "-",
        )
        assert result.ok, result.stderr
        left = [
            r
            for r in transcript(result)
            if r["event"]["type"] == "left" and r["event"]["name"] == name
        ]
        assert left, result.stdout
        assert left[0]["event"]["reason"] == "heartbeat timeout"
        took = left[0]["t"] - stopped_at
        print(f"\n{name} stopped -> announced left after {took:.1f} s")
        assert took <= HEARTBEAT_DEADLINE + 5  # + slack for a loaded machine
    finally:
        hub.exec(
            "client",
            ["sh", "-c", f"kill -CONT {pid}; kill -9 {pid}; rm -f {script} {log}"],
            timeout=10,
        )


def _pty_read(fd: int, until: Callable[[str], bool], buffer: list[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while not until("".join(buffer)):
        assert time.monotonic() < deadline, f"terminal so far: {''.join(buffer)!r}"
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buffer.append(chunk.decode(errors="replace"))
    return "".join(buffer)


@pytest.fixture
def terminal(hub: Lab) -> Iterator[Callable[[str], tuple[int, int]]]:
    children: list[tuple[int, int]] = []

    def spawn(name: str) -> tuple[int, int]:
        container = hub.container("client").id
        # lab-chat: the image's command for humans (docker compose exec client lab-chat ...)
        argv = ["docker", "exec", "-it", container, "lab-chat", "--name", name]
        pid, fd = pty.fork()
        if pid == 0:
            os.execvp("docker", argv)  # noqa: S606 - argv list, no shell
        children.append((pid, fd))
        return pid, fd

    yield spawn
    for pid, fd in children:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_interactive_chat_in_a_real_terminal(
    hub: Lab, terminal: Callable[[str], tuple[int, int]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    pid, fd = terminal(alice)
    screen: list[str] = []
    _pty_read(fd, lambda text: f"{alice}> " in text, screen)
    bob_result: list[ExecResult] = []
    bob_thread = threading.Thread(
        target=lambda: bob_result.append(
            chat(
                hub,
                bob,
                "--wait-for",
                alice,
                "--say",
                f"hi {alice}",
                "--expect",
                f"{alice}:hello from a terminal",
                "--deadline",
                "90",
                "--transcript",
                "-",
            )
        )
    )
    bob_thread.start()
    # bob's line arrives and alice's prompt is redrawn under it: then alice types.
    _pty_read(fd, lambda text: f"{bob}: hi {alice}\r\n{alice}> " in text, screen)
    os.write(fd, b"hello from a terminal\r")
    bob_thread.join(timeout=180)
    assert bob_result, "bob did not finish"
    assert bob_result[0].ok, bob_result[0].stderr
    got = [r["event"] for r in transcript(bob_result[0]) if r["event"]["type"] == "message"]
    assert got[0]["from"] == alice
    assert got[0]["text"] == "hello from a terminal"
    screen.clear()
    _pty_read(fd, lambda text: text.endswith(f"{alice}> "), screen)
    os.write(fd, b"\x04")  # Ctrl-D leaves cleanly
    _pty_read(fd, lambda text: "left the chat" in text, screen)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


_SERVER_PROC = (
    "import os, pathlib\n"
    "tick = os.sysconf('SC_CLK_TCK')\n"
    "for p in pathlib.Path('/proc').glob('[0-9]*'):\n"
    "    try:\n"
    "        cmd = (p / 'cmdline').read_bytes().split(b'\\0')\n"
    "        status = (p / 'status').read_text()\n"
    "        stat = (p / 'stat').read_text().rsplit(')', 1)[1].split()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if b'socketlab' in b' '.join(cmd) and b'server' in cmd:\n"
    "        rss = [l.split()[1] for l in status.splitlines() if l.startswith('VmRSS')][0]\n"
    "        print(rss, (int(stat[11]) + int(stat[12])) / tick)\n"
)


def _server_rss_and_cpu(lab: Lab) -> tuple[int, float]:
    """The server process's RSS (KiB) and CPU seconds so far; (-1, -1.0) if not found."""
    result = lab.exec("server", ["python3", "-c", _SERVER_PROC], timeout=30)
    rows = [line.split() for line in result.stdout.splitlines() if len(line.split()) == 2]
    if not rows:
        return -1, -1.0
    rss, cpu = max(rows, key=lambda row: int(row[0]))
    return int(rss), float(cpu)


def _bench_sizes() -> list[int]:
    """Participant counts of the fan-out benchmark: SOCKETLAB_BENCH_CHAT_N, comma-separated."""
    raw = os.environ.get("SOCKETLAB_BENCH_CHAT_N", "100,500,1000,2000")
    return [int(n) for n in raw.split(",") if n.strip()]


def _bench_observers() -> int:
    """Participants that decode and time what they receive: SOCKETLAB_BENCH_CHAT_OBSERVERS.

    Each decodes N messages a second (~15 us each in Python), so 20 observers at
    N = 2,000 keep the load generator near a full core: fewer observers keep it the
    hub that is measured (the generator's CPU is reported either way).
    """
    return int(os.environ.get("SOCKETLAB_BENCH_CHAT_OBSERVERS", "5"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "participants" in metafunc.fixturenames:
        sizes = _bench_sizes()
        metafunc.parametrize("participants", sizes, ids=[f"n{n}" for n in sizes])


@pytest.mark.benchmark
def test_benchmark_fan_out(hub: Lab, participants: int) -> None:
    """N participants, 1 msg/s each for 15 s; latency on a few observers (see chat-swarm).

    Reports p50/p99, loss, order, the hub's peak RSS and CPU, and the load
    generator's own CPU over the measured phase (the generator shares the
    machine: when it is near a full core, it and not the hub is the limit).
    """
    seconds = 15
    rss_before, cpu_before = _server_rss_and_cpu(hub)
    samples: list[int] = []
    done = threading.Event()

    def sample_rss() -> None:  # the hub's peak is during the run, not after it
        while not done.wait(2.0):
            samples.append(_server_rss_and_cpu(hub)[0])

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        report = swarm(
            hub,
            *("-n", str(participants), "-m", str(seconds), "--rate", "1"),
            *("--observers", str(_bench_observers())),
            *("--prefix", f"bench{uuid.uuid4().hex[:4]}"),
            *("--join-deadline", "600", "--deadline", "300"),
            timeout=1200,
        )
    finally:
        done.set()
        sampler.join(timeout=60)
    _, cpu_after = _server_rss_and_cpu(hub)
    load = os.getloadavg()
    figures = {
        "participants": participants,
        "rate": "1 msg/s each",
        "observers": _bench_observers(),
        "delivered_est": report["delivered"],
        "delivered_per_s": report["delivered_per_s"],
        "latency_observers": report["latency"],
        "missing": report["missing"],
        "order_errors": report["order_errors"],
        "observers_complete": f"{report['complete']}/{report['normal']}",
        "ended": sorted(set(report["ended"].values()))[:3],  # why observers stopped, if any
        "hub_rss_kib": {"before": rss_before, "peak": max(samples, default=-1)},
        "hub_cpu_s_whole_run": round(cpu_after - cpu_before, 2),
        "generator_cpu": report.get("generator_cpu"),
        "measured_s": report["duration_s"],
        "loadavg": [round(x, 2) for x in load],
    }
    print(f"\nchat fan-out benchmark: {json.dumps(figures)}")
    assert report["delivered"] > 0  # measured, not judged: see the printed figures
