"""``lab watch``'s poller against the shared fake lab: counter helpers, link counters from
their samples and the verdict loop, the UDP listener's stats (a loopback server, hostile
answers too), chat participants from the server's log, the loop and the CLI's Ctrl-C."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rich.console import Console

from lab import watch
from lab.cli import main
from lab.errors import LabError
from lab.interface import ExecResult
from lab.report.watch import (
    ChatRoster,
    LinkCounters,
    ShapedLink,
    WatchSnapshot,
    last_sample,
    link_rates,
    sampler_script,
)
from lab.scenario.session import RunReport
from lab.shaping import builders
from lab.watch import LABEL_SERVICE, WATCH_CAPS, WATCH_ROLE, Watcher, docker_time, run_watch

SERVICES = ("server", "client", "udp-listener", "rss-poller")
# The fake's helpers start at 2026-01-01T10:00:00Z; samples read after that.
SHAPED = 1_767_261_600.0


def sample_block(at: float, *, nfqueue: str = "", tc: str = "") -> str:
    """One block as the counter helper prints it (the real commands' formats)."""
    return (
        f"@@sample {at}\n%%iptables\n-N SOCKETLAB\n%%raw\n-N SOCKETLAB\n{nfqueue}"
        f"%%tc\n%%tcstats\n{tc}@@end\n"
    )


def nfqueue_rule(source_ip: str, packets: int, size: int, queue: int = 1) -> str:
    return (
        f"-A SOCKETLAB -s {source_ip}/32 -c {packets} {size} "
        f"-j NFQUEUE --queue-num {queue} --queue-bypass\n"
    )


SHAPER_LOG = (
    "event=shaper_started queue=1 impairment=Impairment(loss=0.05)\n"
    "event=shaper_stats queue=1 held=0 received=200 dropped=11 duplicated=0 corrupted=0 "
    "reordered=0 released=189 injected=0 untouchable=0\n"
)
SERVER_LOG = (
    "event=chat_listening port=4572\n"
    "event=chat_joined conn=1 name=alice participants=1\n"
    "event=chat_joined conn=2 name=[bold]bob participants=2\n"
    "event=chat_joined conn=3 name=carol participants=3\n"
    "event=chat_disconnect conn=1 name=alice reason='bye'\n"
)


def shaper(fake_lab: Any, *, source: str = "client", dest: str = "udp-listener") -> Any:
    """A shaping helper as lab.shaping leaves it: the link's labels, the loop's log."""
    helper = fake_lab.queue_helper(stdout=SHAPER_LOG)
    fake_lab.start_helper(
        dest,
        ["socketlab", "shaper"],
        role="shaper",
        labels={
            builders.LABEL_KIND: "shape",
            builders.LABEL_SOURCE: source,
            builders.LABEL_DEST: dest,
            builders.LABEL_SOURCE_IP: fake_lab.ip(source),
            builders.LABEL_DEST_IP: fake_lab.ip(dest),
            builders.LABEL_NETNS: dest,
            builders.LABEL_SPEC: "loss=5%",
            builders.LABEL_ENGINE: "nfqueue",
            builders.LABEL_QUEUE: "1",
            builders.LABEL_DEV: "eth0",
        },
    )
    return helper


class StatsHandler(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/stats" else 404)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def stats_server() -> Iterator[Callable[[bytes], int]]:
    """``start(body)``: a loopback HTTP server answering GET /stats; returns its port."""
    servers: list[http.server.HTTPServer] = []

    def start(body: bytes) -> int:
        handler = type("Handler", (StatsHandler,), {"body": body})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()  # a short poll: shutdown() waits for it
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    """The fake lab with the listener on loopback (its stats server is the test's)."""
    addresses = {service: f"10.0.0.{index + 2}" for index, service in enumerate(SERVICES)}
    addresses["udp-listener"] = "127.0.0.1"
    fake_lab.ip = addresses.__getitem__
    fake_lab.stderr_logs["server"] = SERVER_LOG
    return fake_lab


def queue_samplers(lab: Any, blocks: dict[str, str]) -> dict[str, Any]:
    return {
        service: lab.queue_helper(stdout=blocks.get(service, sample_block(SHAPED + 1)))
        for service in SERVICES
    }


# --------------------------------------------------------------------------- pure parts


def test_the_sampler_script_prints_marked_blocks_of_rules_and_counters() -> None:
    script = sampler_script(interval=1.0)
    assert script.startswith("while :; do\n")
    assert 'echo "@@sample $(date +%s.%N)"' in script
    assert "iptables -w 5 -t raw -S SOCKETLAB -v 2>/dev/null" in script  # rules and counters
    assert script.count("-t raw -S SOCKETLAB -v") == 1  # counters read once per sample
    assert 'tc -s qdisc show dev "$dev"; tc -s class show dev "$dev"' in script
    assert "echo '@@end'\nsleep 1\ndone\n" in script


def test_the_last_complete_sample_is_read_and_a_half_written_one_ignored() -> None:
    rule = nfqueue_rule("10.0.0.3", 200, 14092)
    text = sample_block(5.0, nfqueue=nfqueue_rule("10.0.0.3", 10, 700)) + sample_block(
        6.5, nfqueue=rule
    )
    text += "@@sample 7.5\n%%iptables\n"  # the helper is writing the next block
    sample = last_sample(text)
    assert sample is not None
    assert sample.at == 6.5
    assert sample.nfqueue["10.0.0.3"].packets == 200
    assert sample.rules.queues == {"10.0.0.3": 1}  # rules in force, for lab status's truth
    assert last_sample("@@sample 1.0\n%%iptables\n") is None
    assert last_sample("@@sample soon\n@@end\n") is None


def test_the_chat_roster_follows_joins_and_leaves_and_replays_change_nothing() -> None:
    roster = ChatRoster()
    roster.feed(SERVER_LOG)
    assert roster.participants == ("[bold]bob", "carol")
    roster.feed(SERVER_LOG.splitlines(keepends=True)[-1])  # a second of overlap, read again
    roster.feed("event=chat_closing conn=3 name=carol reason='timeout'\n")
    assert roster.participants == ("[bold]bob",)
    roster.feed(
        "event=chat_listening port=4572\nevent=chat_joined conn=1 name=dave participants=1\n"
    )
    assert roster.participants == ("dave",)  # the hub restarted: the old room is gone


def test_rates_use_the_counters_own_read_times() -> None:
    def snapshot(at: float, sampled: float, packets: int) -> WatchSnapshot:
        counters = LinkCounters(packets=packets, bytes=packets * 100, sampled_at=sampled)
        return WatchSnapshot(
            at=at,
            links=(
                ShapedLink(link="a -> b", shaping="", engine="", state="active", counters=counters),
            ),
        )

    # polled 1 s apart, but the helper's samples were 2 s apart: 100 packets in 2 s
    rates = link_rates(snapshot(11.0, 10.0, 300), snapshot(10.0, 8.0, 100))
    assert rates["a -> b"].packets_per_second == 100.0


# --------------------------------------------------------------------------- the poller


def test_a_snapshot_has_services_link_counters_udp_and_chat(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    port = stats_server(json.dumps({"datagrams": 189, "valid": 189, "lost": 11}).encode())
    shaper(lab)
    rule = nfqueue_rule(lab.ip("client"), 200, 14092)
    samplers = queue_samplers(lab, {"udp-listener": sample_block(SHAPED + 7, nfqueue=rule)})

    with Watcher(lab, udp_port=port) as watcher:
        snap = watcher.snapshot()
        started = [entry for entry in lab.started if entry["role"] == WATCH_ROLE]

    assert [s.service for s in snap.services] == list(SERVICES)
    assert snap.problems == ()
    (link,) = snap.links
    assert (link.link, link.engine, link.state, link.healthy) == (
        "client -> udp-listener",
        "nfqueue",
        "active",
        True,
    )
    assert (link.counters.packets, link.counters.bytes, link.counters.dropped) == (200, 14092, 11)
    assert link.counters.sampled_at == SHAPED + 7
    assert snap.udp is not None
    assert (snap.udp.datagrams, snap.udp.lost) == (189, 11)
    assert snap.chat is not None
    assert snap.chat.participants == ("[bold]bob", "carol")
    # one counter helper per running service, labelled, removed at the end
    assert [entry["service"] for entry in started] == list(SERVICES)
    assert all(set(entry["caps"]) == set(WATCH_CAPS) for entry in started)
    assert all(entry["labels"][LABEL_SERVICE] == entry["service"] for entry in started)
    assert all(helper.removed for helper in samplers.values())


def test_a_missing_nfqueue_rule_shows_as_not_impaired(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    shaper(lab)
    queue_samplers(lab, {})  # no namespace has the rule
    with Watcher(lab, udp_port=stats_server(b"{}")) as watcher:
        (link,) = watcher.snapshot().links
    assert not link.healthy
    assert "NFQUEUE rule missing: not impaired" in link.state


def test_rules_read_before_the_link_was_shaped_do_not_make_it_broken(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    shaper(lab)
    queue_samplers(lab, {"udp-listener": sample_block(SHAPED - 1)})  # no rule yet
    with Watcher(lab, udp_port=stats_server(b"{}")) as watcher:
        (link,) = watcher.snapshot().links
    assert (link.state, link.healthy) == ("just shaped", True)


def test_a_restarted_service_gets_a_new_counter_helper(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    first = queue_samplers(lab, {})
    with Watcher(lab, udp_port=stats_server(b"{}")) as watcher:
        watcher.snapshot()
        lab.started_at = lambda service: "2026-01-01T11:00:00Z"  # after the helpers started
        second = queue_samplers(lab, {})
        watcher.snapshot()
        assert all(helper.removed for helper in first.values())
        assert not any(helper.removed for helper in second.values())
    assert all(helper.removed for helper in second.values())


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(b"x" * 5000, "udp-listener stats: answer over 4096 bytes", id="too-big"),
        pytest.param(b"not json", "udp-listener stats: Expecting value", id="not-json"),
        pytest.param(b"[1, 2]", "udp-listener stats: not a JSON object", id="not-an-object"),
    ],
)
def test_a_hostile_stats_answer_is_a_problem_line_not_a_crash(
    lab: Any, stats_server: Callable[[bytes], int], body: bytes, problem: str
) -> None:
    queue_samplers(lab, {})
    config = dataclasses.replace(lab.config.watch, max_stats_bytes=4096)
    with Watcher(lab, config, udp_port=stats_server(body)) as watcher:
        snap = watcher.snapshot()
    assert snap.udp is None
    assert any(line.startswith(problem) for line in snap.problems), snap.problems


def test_a_lab_that_cannot_be_read_is_one_problem(lab: Any) -> None:
    def down() -> list[Any]:
        raise LabError("no Docker engine answers")

    lab.status = down
    with Watcher(lab) as watcher:
        snap = watcher.snapshot()
    assert snap.problems == ("lab status: no Docker engine answers",)


def test_when_the_host_cannot_reach_the_listener_its_stats_come_through_exec(
    lab: Any, free_port: Callable[..., int]
) -> None:
    execs: list[tuple[str, list[str]]] = []

    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        execs.append((service, argv))
        return ExecResult(exit_code=0, stdout='{"valid": 7, "lost": 1}', stderr="")

    lab.commands = commands
    queue_samplers(lab, {})
    with Watcher(lab, udp_port=free_port()) as watcher:  # nothing listens there
        first, second = watcher.snapshot(), watcher.snapshot()
    assert first.udp is not None
    assert second.udp is not None
    assert (second.udp.valid, second.udp.lost) == (7, 1)
    assert execs == [("udp-listener", ["socketlab", "udp-stats"])] * 2


# --------------------------------------------------------------------------- the loop and CLI


def test_without_a_tty_each_refresh_is_one_plain_line(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    shaper(lab)
    queue_samplers(lab, {})
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=400)
    with Watcher(lab, udp_port=stats_server(b'{"valid": 3}')) as watcher:
        shown = run_watch(watcher, console=console, count=3, interval=0.0)
    lines = out.getvalue().splitlines()
    assert shown == 3
    assert len(lines) == 3
    assert all(
        "services 4/4 ok" in line and "client -> udp-listener [nfqueue]" in line for line in lines
    )
    assert all("udp valid=3" in line for line in lines)


def test_on_a_tty_the_live_view_is_drawn_and_a_set_stop_ends_it(
    lab: Any, stats_server: Callable[[bytes], int]
) -> None:
    queue_samplers(lab, {})
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    stop = threading.Event()
    with Watcher(lab, udp_port=stats_server(b"{}")) as watcher:
        original = watcher.snapshot

        def snapshot_then_stop() -> WatchSnapshot:
            stop.set()
            return original()

        watcher.snapshot = snapshot_then_stop  # type: ignore[method-assign]
        shown = run_watch(watcher, console=console, stop=stop, interval=30.0)
    assert shown == 1  # the 30 s pause was cut short by the stop
    assert "socketlab watch" in out.getvalue()
    assert "shaped links" in out.getvalue() or "no shaped links" in out.getvalue()


def test_ctrl_c_ends_lab_watch_cleanly_and_removes_the_helpers(
    lab: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stats_server: Callable[[bytes], int],
) -> None:
    monkeypatch.setattr(watch, "Watcher", functools.partial(Watcher, udp_port=stats_server(b"{}")))
    samplers = queue_samplers(lab, {})
    calls: list[int] = []

    def interrupted(watcher: Watcher, **_: Any) -> int:
        watcher.snapshot()  # the helpers are running now
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(watch, "run_watch", interrupted)
    monkeypatch.setattr(watch, "make_lab", lambda args: lab)

    code = main(["watch"])

    assert (code, calls) == (0, [1])
    assert all(helper.removed for helper in samplers.values())
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "watch stopped" in captured.out


@pytest.mark.parametrize(
    "outcome",
    [pytest.param("returns", id="run-ends"), pytest.param("raises", id="run-interrupted")],
)
def test_lab_run_watch_shows_the_watch_while_the_run_lasts_and_stops_it_after(
    lab: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, outcome: str
) -> None:
    (tmp_path / "s.yaml").write_text(
        "name: s\ndescription: d\nsteps:\n  - {name: e, service: client, run: [echo], timeout: 5}\n"
        "checks:\n  - {kind: exit_code, step: e, equals: 0}\n"
    )
    watching = threading.Event()
    seen: dict[str, Any] = {}

    def fake_run_watch(watcher: Watcher, *, console: Any, stop: threading.Event) -> int:
        seen["watcher"] = watcher
        watching.set()
        seen["stopped"] = stop.wait(10)
        return 0

    def fake_run_files(*_: Any, **__: Any) -> RunReport:
        assert watching.wait(10), "the watch did not start before the run"
        seen["during"] = not seen.get("stopped", False)
        if outcome == "raises":
            raise KeyboardInterrupt
        return RunReport(run_id="r", folder=tmp_path)

    closed: list[bool] = []
    monkeypatch.setattr(watch, "run_watch", fake_run_watch)
    monkeypatch.setattr(Watcher, "close", lambda self: closed.append(True))
    monkeypatch.setattr("lab.scenario.session.run_files", fake_run_files)
    monkeypatch.setattr("lab.scenario.cli.make_lab", lambda args: lab)
    lab.repo_root = tmp_path

    code = main(["run", "s", "--dir", str(tmp_path), "--watch"])

    assert code == (130 if outcome == "raises" else 1)  # no checks ran: not a pass
    assert seen["during"] is True
    assert seen["stopped"] is True  # the run's end stopped the watch
    assert closed == [True]  # and its helpers were removed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2026-01-01T10:00:00Z", SHAPED, id="whole-seconds"),
        pytest.param("2026-01-01T10:00:00.250000123Z", SHAPED + 0.25, id="nanoseconds"),
        pytest.param("", None, id="empty"),
        pytest.param("yesterday", None, id="not-a-time"),
    ],
)
def test_docker_times(text: str, expected: float | None) -> None:
    assert docker_time(text) == expected
