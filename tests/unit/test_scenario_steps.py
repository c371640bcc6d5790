"""Daemon, ``wait_for`` and ``copy`` steps, and the ``stdout_matches`` check.

The plan (what each step means, every mistake located), the daemon wrapper run
by a real ``sh`` here (pid file, output files, SIGTERM), and the runner against
the shared fake lab: a daemon's life cycle and the order daemons stop in, one
that ends early, one that ignores SIGTERM, each wait kind and its timeout, and
copies both ways.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab.interface import ExecResult
from lab.scenario.checks import Observations, TextFacts, evaluate
from lab.scenario.errors import ScenarioError
from lab.scenario.loader import parse_text
from lab.scenario.plan import CheckKind, Scenario, Source, build_scenario
from lab.scenario.runner import ScenarioRunner
from lab.scenario.steps import (
    cleanup_argv,
    daemon_argv,
    daemon_folder,
    output_argv,
    probe_argv,
    signal_argv,
)

SERVICES = ["server", "client", "udp-listener", "rss-poller"]
WAIT = 5.0


def plan(text: str, *, folder: str = "") -> Scenario:
    document = parse_text(text, file="scenarios/t.yaml")
    return build_scenario(document, services=SERVICES, variables={"RUN_ID": "r1"}, folder=folder)


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        plan(text)
    return caught.value.problems


# --------------------------------------------------------------------------- plan


def test_daemon_wait_and_copy_steps_are_planned_with_their_implicit_checks() -> None:
    scenario = plan(
        """\
name: t
description: every kind of step
steps:
  - {name: srv, service: server, run: [python3, s.py], timeout: 60, daemon: true, grace: 2,
     capture: srv}
  - {name: up, wait_for: {tcp: "server:7007"}, timeout: 10}
  - {name: ready, wait_for: {log: "listening on \\\\d+", daemon: srv}, timeout: 5}
  - {name: web, wait_for: {http: "http://server:8080/health", from: client, status: 204},
     timeout: 5}
  - {name: put, copy: {from: data/in.bin, to: "client:/tmp/in.bin"}}
  - {name: use, service: client, run: [cat, /tmp/in.bin], timeout: 5}
  - {name: get, copy: {from: "server:/tmp/out.log", to: logs/out.log}, timeout: 9}
checks:
  - {kind: stdout_matches, capture: srv, regex: "^echoed \\\\d+ bytes$", count: 2}
"""
    )
    kinds = [step.kind for step in scenario.steps]
    assert kinds == ["daemon", "wait", "wait", "wait", "copy", "run", "copy"]
    srv, up, ready, web, put, _, get = scenario.steps
    assert (srv.grace, srv.expect_exit) == (2.0, None)  # a daemon's exit is checked if asked
    assert (up.wait.origin, up.wait.host, up.wait.port) == ("server", "server", 7007)
    assert (ready.wait.daemon, ready.service) == ("srv", "server")
    assert (web.wait.origin, web.wait.status) == ("client", 204)
    assert (put.copy.into, put.service, put.timeout) == (True, "client", 120.0)
    assert (get.copy.into, get.service, get.timeout) == (False, "server", 9.0)
    implicit = [c.name for c in scenario.checks if c.implicit]
    assert implicit == [
        "daemon srv runs until the other steps end",
        "step up: wait for tcp server:7007 (from server) within 10 s",
        "step ready: wait for log /listening on \\d+/ in daemon srv within 5 s",
        "step web: wait for http http://server:8080/health 204 (from client) within 5 s",
        "step put: copy data/in.bin -> client:/tmp/in.bin",
        "step use exits 0",
        "step get: copy server:/tmp/out.log -> logs/out.log",
    ]
    matches = scenario.checks[-1]
    assert (matches.kind, matches.regex, matches.count) == (
        CheckKind.STDOUT_MATCHES,
        "^echoed \\d+ bytes$",
        2,
    )


def test_a_daemon_with_expect_exit_gets_an_exit_check_at_stop() -> None:
    scenario = plan(
        """\
name: t
description: d
steps:
  - {name: srv, service: server, run: [x], timeout: 60, daemon: true, expect_exit: 0}
  - {service: client, run: [y], timeout: 5}
checks:
  - {kind: duration, step: srv, min: 0}
"""
    )
    assert "step srv exits 0 when stopped" in [c.name for c in scenario.checks]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        pytest.param(
            "{service: server, run: [x], timeout: 5, daemon: true, parallel: g}",
            "steps[0].daemon: a daemon runs beside every later step",
            id="daemon-in-a-group",
        ),
        pytest.param(
            "{service: server, run: [x], timeout: 5, grace: 3}",
            "steps[0].grace: 'grace' goes with daemon: true only",
            id="grace-without-daemon",
        ),
        pytest.param(
            "{wait_for: {tcp: 'server:1', log: x}, timeout: 5}",
            "steps[0].wait_for: waits for exactly one of: tcp, udp, http, log, file (got 2)",
            id="two-kinds",
        ),
        pytest.param(
            "{wait_for: {log: x, daemon: nope}, timeout: 5}",
            "steps[0].wait_for.daemon: no daemon step 'nope' before this one (daemons: none)",
            id="unknown-daemon",
        ),
        pytest.param(
            "{wait_for: {log: '(', service: server}, timeout: 5}",
            "steps[0].wait_for.log: '(' is not a regular expression",
            id="bad-regex",
        ),
        pytest.param(
            "{wait_for: {tcp: '10.0.0.9:80'}, timeout: 5}",
            "'10.0.0.9' is not a service of the lab: say where to probe from",
            id="address-needs-from",
        ),
        pytest.param(
            "{wait_for: {tcp: 'server:70000'}, timeout: 5}",
            "port 70000 is not between 1 and 65535",
            id="port",
        ),
        pytest.param(
            "{wait_for: {tcp: 'server:80', status: 200}, timeout: 5}",
            "steps[0].wait_for.status: 'status' does not go with a tcp wait",
            id="option-of-another-kind",
        ),
        pytest.param(
            "{wait_for: {tcp: 'server:80'}}",
            "steps[0]: missing required key 'timeout'",
            id="wait-needs-a-deadline",
        ),
        pytest.param(
            "{copy: {from: a.txt, to: b.txt}}",
            "steps[0].copy: a copy goes between the host and a container",
            id="copy-host-to-host",
        ),
        pytest.param(
            "{copy: {from: ../secret, to: 'client:/tmp/x'}}",
            "steps[0].copy.from: '../secret' must be a relative path inside the scenario's folder",
            id="copy-escape",
        ),
        pytest.param(
            "{copy: {from: 'server:/etc/passwd', to: /tmp/x}}",
            "steps[0].copy.to: '/tmp/x' must be a relative path inside the scenario's results",
            id="copy-out-absolute",
        ),
        pytest.param(
            "{service: client, timeout: 5}",
            "steps[0]: needs 'run' or 'wait_for' or 'copy'",
            id="no-kind",
        ),
    ],
)
def test_step_mistakes_are_located(step: str, message: str) -> None:
    text = f"name: t\ndescription: d\nsteps:\n  - {step}\nchecks:\n  - {{kind: duration, step: x, min: 0}}\n"
    found = problems(text)
    assert any(message in problem for problem in found), found
    assert all(problem.startswith("scenarios/t.yaml:") for problem in found)


def test_a_bad_regex_in_stdout_matches_is_located() -> None:
    found = problems(
        "name: t\ndescription: d\nsteps:\n  - {service: client, run: [x], timeout: 5, capture: c}\n"
        "checks:\n  - {kind: stdout_matches, capture: c, regex: '[a-'}\n"
    )
    assert found[0].startswith("scenarios/t.yaml:6: checks[0].regex: '[a-' is not a regular")


def test_stdout_matches_counts_non_overlapping_matches_line_by_line() -> None:
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n  - {service: client, run: [x], timeout: 5, capture: c}\n"
        "checks:\n  - {kind: stdout_matches, capture: c, regex: '^ok \\d+$', count: 2}\n"
        "  - {kind: stdout_matches, capture: c, regex: 'differs', count: 0,"
        " name: reply equals request}\n"
    )
    exact, absent = scenario.checks[1:]
    key = Source(kind="capture", name="c").key
    seen = Observations(texts={key: TextFacts(text="ok 1\nok 22\nnot ok 3\n")})
    assert evaluate(exact, seen).passed
    assert evaluate(exact, seen).detail == "/^ok \\d+$/ matched 2 time(s)"
    assert evaluate(absent, seen).passed
    bad = Observations(texts={key: TextFacts(text="reply differs from request (88 of 400)\n")})
    result = evaluate(absent, bad)
    assert not result.passed
    assert result.name == "reply equals request"
    assert "matched 1 time(s), expected exactly 0 time(s); first match 'differs'" in result.detail


# --------------------------------------------------------------------------- pure builders


def test_the_daemon_wrapper_records_its_pid_and_output_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """The wrapper and the signal command run in a real sh: the pid is the program's."""
    folder = str(tmp_path / "d")
    program = [sys.executable, "-c",
               "import sys, time\nprint('listening', flush=True)\n"
               "print('warn', file=sys.stderr, flush=True)\ntime.sleep(30)\n"]  # fmt: skip
    process = subprocess.Popen(daemon_argv(folder, program))
    try:
        pid_file = Path(folder) / "pid"
        deadline = time.monotonic() + WAIT
        while not (pid_file.exists() and (Path(folder) / "stdout").read_text()):
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.02)  # polling the wrapper's files with a deadline
        assert int(pid_file.read_text()) == process.pid  # exec: the shell became the program
        subprocess.run(signal_argv(folder, "TERM"), check=True, timeout=WAIT)
        assert process.wait(timeout=WAIT) == -15
    finally:
        process.kill()
    out = subprocess.run(output_argv(folder, "stdout", limit=5), capture_output=True, check=True)
    assert out.stdout == b"ning\n"  # the last bytes only
    assert (Path(folder) / "stderr").read_text() == "warn\n"
    subprocess.run(cleanup_argv(folder), check=True)
    assert not os.path.exists(folder)


def test_daemon_folders_and_signals_are_refused_when_odd() -> None:
    assert daemon_folder("/tmp/", "ab12", "srv") == "/tmp/socketlab-daemon-ab12-srv"
    with pytest.raises(ValueError, match="plain absolute folder"):
        daemon_folder("/tmp", "x y", "srv")
    with pytest.raises(ValueError, match="TERM, INT or KILL"):
        signal_argv("/tmp/x", "HUP; rm -rf /")


def test_network_waits_become_one_socketlab_wait_command() -> None:
    scenario = plan(
        """\
name: t
description: d
steps:
  - {wait_for: {udp: "udp-listener:37020", from: client, send: hi, expect: "^ok"}, timeout: 7}
  - {wait_for: {http: "http://server:8080/health"}, timeout: 3}
checks:
  - {kind: duration, step: step-1, min: 0}
"""
    )
    udp, web = (step.wait for step in scenario.steps)
    assert probe_argv(udp, timeout=7) == [
        "socketlab", "wait", "--timeout", "7", "--interval", "0.2", "--try-timeout", "1",
        "udp", "udp-listener", "37020", "--send", "hi", "--expect", "^ok",
    ]  # fmt: skip
    assert web.origin == "server"  # probed from the target's own namespace by default
    assert probe_argv(web, timeout=3)[-3:] == ["http://server:8080/health", "--status", "200"]


# --------------------------------------------------------------------------- runner


class Daemons:
    """The fake lab's answers to the daemon wrapper: each daemon blocks until signalled."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, str]] = []  # (folder, signal) in order
        self.released: dict[str, threading.Event] = {}
        self.output: dict[str, str] = {}
        self.ignore_term: set[str] = set()
        self.crash: dict[str, tuple[int, str]] = {}  # folder suffix -> (exit, stderr)
        self.crash_after = 0.0  # seconds a crashing daemon runs first
        self.lock = threading.Lock()

    def event(self, folder: str) -> threading.Event:
        with self.lock:
            return self.released.setdefault(folder, threading.Event())

    def answer(self, argv: list[str]) -> ExecResult | None:
        if argv[:2] != ["sh", "-c"] or len(argv) < 4:
            return None
        folder = argv[3]
        if 'exec "$@"' in argv[2]:
            for suffix, (code, stderr) in self.crash.items():
                if folder.endswith(suffix):
                    threading.Event().wait(self.crash_after)  # it runs a little, then dies
                    self.output[f"{folder}/stderr"] = stderr
                    return ExecResult(exit_code=code, stdout="", stderr="")
            self.output.setdefault(f"{folder}/stdout", f"started {folder}\n")
            released = self.event(folder).wait(WAIT)
            signal = "KILL" if (folder, "KILL") in self.signals else "TERM"
            code = (137 if signal == "KILL" else 143) if released else 124
            return ExecResult(exit_code=code, stdout="", stderr="")
        if "kill -" in argv[2]:
            signal = argv[4]
            self.signals.append((folder, signal))
            if not (signal == "TERM" and any(folder.endswith(s) for s in self.ignore_term)):
                self.event(folder).set()
            return ExecResult(exit_code=0, stdout="", stderr="")
        return None


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    daemons = Daemons()
    fake_lab.daemons = daemons
    files: set[str] = set()
    fake_lab.existing = files
    fake_lab.probes = []

    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        answer = daemons.answer(argv)
        if answer is not None:
            return answer
        match argv:
            case ["tail", "-c", _, path]:
                return ExecResult(exit_code=0, stdout=daemons.output.get(path, ""), stderr="")
            case ["rm", "-rf", _]:
                return ExecResult(exit_code=0, stdout="", stderr="")
            case ["test", "-e", path]:
                found = f"{service}:{path}" in files
                return ExecResult(exit_code=0 if found else 1, stdout="", stderr="")
            case ["socketlab", "wait", *_]:
                lab.probes.append((service, argv))
                return lab.probe_answer
            case ["echo", *words]:
                return ExecResult(exit_code=0, stdout=" ".join(words) + "\n", stderr="")
        raise AssertionError(f"unexpected command {argv}")

    fake_lab.commands = commands
    fake_lab.probe_answer = ExecResult(exit_code=0, stdout="", stderr="")
    return fake_lab


def run(lab: Any, scenario: Scenario, tmp_path: Path) -> Any:
    runner = ScenarioRunner(lab, folder=tmp_path / "out", progress=lambda _: None)
    return runner.run(scenario)


def test_daemons_run_beside_the_steps_and_stop_last_started_first(lab: Any, tmp_path: Path) -> None:
    scenario = plan(
        """\
name: t
description: two daemons and a client
steps:
  - {name: db, service: server, run: [db], timeout: 30, daemon: true, capture: db}
  - {name: web, service: server, run: [web], timeout: 30, daemon: true, expect_exit: 143}
  - {name: use, service: client, run: [echo, used], timeout: 5}
checks:
  - {kind: stdout_contains, capture: db, text: started}
"""
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    # both were still running when the client ended, then stopped in reverse order
    stops = [(folder.rsplit("-", 1)[-1], signal) for folder, signal in lab.daemons.signals]
    assert stops == [("web", "TERM"), ("db", "TERM")]
    db, _web, use = result.steps
    assert (db.kind, db.exit_code, db.note) == ("daemon", 143, "stopped by SIGTERM")
    assert db.stdout.startswith("started /tmp/socketlab-daemon-")  # its output, checkable
    assert use.exit_code == 0
    assert db.started <= use.started
    assert [c.name for c in result.checks if c.implicit] == [
        "daemon db runs until the other steps end",
        "daemon web runs until the other steps end",
        "step web exits 143 when stopped",
        "step use exits 0",
    ]
    # the wrapper's folders were removed afterwards
    removed = [argv for _, argv in lab.execs if argv[:2] == ("rm", "-rf")]
    assert len(removed) == 2


def test_a_daemon_that_ignores_sigterm_gets_sigkill_after_its_grace(
    lab: Any, tmp_path: Path
) -> None:
    lab.daemons.ignore_term.add("-stubborn")
    scenario = plan(
        """\
name: t
description: d
steps:
  - {name: stubborn, service: server, run: [x], timeout: 30, daemon: true, grace: 0.2}
  - {service: client, run: [echo, hi], timeout: 5}
checks:
  - {kind: exit_code, step: stubborn, equals: 137}
"""
    )
    started = time.monotonic()
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    assert [signal for _, signal in lab.daemons.signals] == ["TERM", "KILL"]
    assert result.steps[0].note == "stopped by SIGKILL"
    assert time.monotonic() - started < WAIT


def test_a_daemon_that_dies_early_fails_the_scenario_with_its_output(
    lab: Any, tmp_path: Path
) -> None:
    lab.daemons.crash["-srv"] = (1, "Traceback (most recent call last):\nValueError: bad port\n")
    scenario = plan(
        """\
name: t
description: a server that crashes
steps:
  - {name: srv, service: server, run: [python3, s.py], timeout: 30, daemon: true}
  - {name: up, wait_for: {file: "server:/tmp/never"}, timeout: 0.5}
  - {name: use, service: client, run: [echo, hi], timeout: 5}
checks:
  - {kind: duration, step: use, min: 0}
"""
    )
    result = run(lab, scenario, tmp_path)
    assert not result.passed
    daemon_check = next(c for c in result.checks if c.name.startswith("daemon srv"))
    assert not daemon_check.passed
    assert "exited 1 at" in daemon_check.detail
    assert "before the other steps ended" in daemon_check.detail
    assert "ValueError: bad port" in daemon_check.detail  # its output, shown
    # nothing was signalled (it was gone), and the client never ran
    assert lab.daemons.signals == []
    use = next(step for step in result.steps if step.name == "use")
    assert use.error == "not run: daemon srv ended"
    assert ("client", ("echo", "hi")) not in lab.execs


def test_a_tcp_wait_runs_one_probe_in_the_origin_namespace(lab: Any, tmp_path: Path) -> None:
    answer = {"ok": True, "tries": 3, "waited": 0.41, "last": "connected"}
    lab.probe_answer = ExecResult(exit_code=0, stdout=json.dumps(answer) + "\n", stderr="")
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: up, wait_for: {tcp: 'server:7007', from: client}, timeout: 10}\n"
        "checks:\n  - {kind: duration, step: up, max: 10}\n"
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    ((service, argv),) = lab.probes
    assert service == "client"
    assert argv[-3:] == ["tcp", "server", "7007"]
    assert result.steps[0].note == "tcp server:7007 (from client): connected after 0.41 s (3 tries)"
    # a helper, not the service's own image
    assert [name for name, argv, _ in lab.netkit_runs if "wait" in argv] == ["client"]


def test_a_network_wait_that_times_out_says_what_it_last_saw(lab: Any, tmp_path: Path) -> None:
    answer = {"ok": False, "tries": 25, "waited": 5.0, "last": "connection refused"}
    lab.probe_answer = ExecResult(exit_code=1, stdout=json.dumps(answer), stderr="")
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: up, wait_for: {tcp: 'server:7007'}, timeout: 5}\n"
        "  - {name: use, service: client, run: [echo, hi], timeout: 5}\n"
        "checks:\n  - {kind: duration, step: use, min: 0}\n"
    )
    result = run(lab, scenario, tmp_path)
    assert not result.passed
    check = next(c for c in result.checks if c.name.startswith("step up"))
    assert check.detail == (
        "timed out after 5 s waiting for tcp server:7007 (from server); "
        "last seen: connection refused"
    )


def test_a_log_wait_polls_the_service_log_until_the_line_appears(lab: Any, tmp_path: Path) -> None:
    lab.stdout_logs["server"] = "booting\n"

    def later() -> None:
        time.sleep(0.2)  # the service logs its line a little later
        lab.stdout_logs["server"] = "booting\nlistening on 7007\n"

    threading.Thread(target=later, daemon=True).start()
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: up, wait_for: {log: 'listening on \\d+', service: server, interval: 0.05},"
        " timeout: 5}\n"
        "checks:\n  - {kind: duration, step: up, min: 0.1}\n"
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    assert result.steps[0].note == "log /listening on \\d+/ in server: 'listening on 7007'"


def test_a_log_wait_that_times_out_shows_the_last_lines(lab: Any, tmp_path: Path) -> None:
    lab.stdout_logs["server"] = "one\ntwo\nthree\nfour\n"
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: up, wait_for: {log: ready, service: server, interval: 0.05}, timeout: 0.3}\n"
        "checks:\n  - {kind: duration, step: up, min: 0}\n"
    )
    result = run(lab, scenario, tmp_path)
    check = next(c for c in result.checks if c.name.startswith("step up"))
    assert not check.passed
    assert check.detail.endswith("last seen: output ends: two | three | four")


def test_a_log_wait_reads_a_daemons_output(lab: Any, tmp_path: Path) -> None:
    scenario = plan(
        """\
name: t
description: d
steps:
  - {name: srv, service: server, run: [x], timeout: 30, daemon: true}
  - {name: up, wait_for: {log: "^started ", daemon: srv, interval: 0.05}, timeout: 5}
checks:
  - {kind: duration, step: up, min: 0}
"""
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    tails = [argv for service, argv in lab.execs if argv[0] == "tail"]
    assert tails[0][-1].endswith("-srv/stdout")


def test_a_file_wait_sees_the_file_appear(lab: Any, tmp_path: Path) -> None:
    def later() -> None:
        time.sleep(0.2)
        lab.existing.add("client:/tmp/ready")

    threading.Thread(target=later, daemon=True).start()
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: up, wait_for: {file: 'client:/tmp/ready', interval: 0.05}, timeout: 5}\n"
        "checks:\n  - {kind: duration, step: up, min: 0}\n"
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    assert result.steps[0].note == "file client:/tmp/ready: it exists"


def test_copies_go_from_the_scenario_folder_and_into_the_results(lab: Any, tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "in.bin").write_bytes(b"\x00payload")
    lab.files["server:/tmp/out.log"] = b"served 3\n"
    scenario = plan(
        """\
name: t
description: d
steps:
  - {name: put, copy: {from: data/in.bin, to: "client:/tmp/in.bin"}}
  - {name: get, copy: {from: "server:/tmp/out.log", to: logs/out.log}}
checks:
  - {kind: duration, step: put, min: 0}
""",
        folder=str(folder),
    )
    result = run(lab, scenario, tmp_path)
    assert result.passed, result.reason()
    assert lab.files["client:/tmp/in.bin"] == b"\x00payload"
    copied = tmp_path / "out" / "t" / "copied" / "logs" / "out.log"
    assert copied.read_bytes() == b"served 3\n"


def test_a_copy_through_a_link_out_of_the_scenario_folder_is_refused(
    lab: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (tmp_path / "secret").write_text("key")
    (folder / "innocent").symlink_to(tmp_path / "secret")
    scenario = plan(
        "name: t\ndescription: d\nsteps:\n"
        "  - {name: put, copy: {from: innocent, to: 'client:/tmp/x'}}\n"
        "checks:\n  - {kind: duration, step: put, min: 0}\n",
        folder=str(folder),
    )
    result = run(lab, scenario, tmp_path)
    assert not result.passed
    assert "is outside the scenario's folder" in result.steps[0].error
    assert lab.copies == []


def test_a_log_wait_on_a_daemon_that_died_gives_up_at_once(lab: Any, tmp_path: Path) -> None:
    lab.daemons.crash["-srv"] = (1, "OSError: [Errno 98] Address already in use\n")
    lab.daemons.crash_after = 0.3  # dies once the wait has begun
    scenario = plan(
        """\
name: t
description: d
steps:
  - {name: srv, service: server, run: [x], timeout: 30, daemon: true}
  - {name: up, wait_for: {log: "^listening", daemon: srv, interval: 0.05}, timeout: 10}
  - {name: use, service: client, run: [echo, hi], timeout: 5}
checks:
  - {kind: duration, step: up, max: 5}
"""
    )
    started = time.monotonic()
    result = run(lab, scenario, tmp_path)
    assert time.monotonic() - started < 5, "not the wait's whole deadline"
    up = next(step for step in result.steps if step.name == "up")
    assert up.error is not None
    assert up.error.startswith(
        "gave up waiting for log /^listening/ in daemon srv: daemon srv ended"
    )
    assert "Address already in use" in up.error
    assert next(step for step in result.steps if step.name == "use").error == (
        "not run: daemon srv ended"
    )
