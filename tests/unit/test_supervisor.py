"""``run_components``: parts of a container process stop together, and failures are reported."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from socketlab.errors import ServiceError
from socketlab.supervisor import (
    Component,
    ComponentFailed,
    Heartbeat,
    HeartbeatConfig,
    run_components,
)

DEADLINE = 10.0


def until_stopped(log: list[str], name: str) -> Component:
    def component(stop: threading.Event) -> None:
        log.append(f"{name} started")
        stop.wait(DEADLINE)
        log.append(f"{name} stopped" if stop.is_set() else f"{name} timed out")

    return component


def failing(error: BaseException, started: threading.Event | None = None) -> Component:
    def component(stop: threading.Event) -> None:
        if started is not None:
            started.wait(DEADLINE)
        raise error

    return component


def test_one_failure_stops_the_others_and_is_reported() -> None:
    log: list[str] = []
    error = ServiceError("port in use")
    stopped = run_components(
        {"steady": until_stopped(log, "steady"), "broken": failing(error)}, signals=()
    )
    assert not stopped.ok
    assert stopped.failures == {"broken": error}
    assert "steady stopped" in log
    assert stopped.still_running == ()
    with pytest.raises(ComponentFailed, match="broken failed: port in use") as caught:
        stopped.raise_for_failures()
    assert caught.value.__cause__ is error


def test_an_unexpected_crash_is_a_failure_too(caplog: pytest.LogCaptureFixture) -> None:
    stopped = run_components({"buggy": failing(RuntimeError("bug"))}, signals=())
    assert list(stopped.failures) == ["buggy"]
    assert "event=component_crashed component=buggy" in caplog.text
    assert "Traceback" in caplog.text  # an unexpected error keeps its stack


def test_an_expected_failure_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    run_components({"shaper": failing(ServiceError("no queue"))}, signals=())
    assert "event=component_failed component=shaper error=no queue" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_component_that_returns_stops_the_rest_without_failing() -> None:
    log: list[str] = []
    stopped = run_components(
        {"once": lambda stop: None, "steady": until_stopped(log, "steady")}, signals=()
    )
    assert stopped.ok
    stopped.raise_for_failures()  # nothing to raise
    assert "steady stopped" in log


def test_stop_from_outside_stops_everything() -> None:
    log: list[str] = []
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    stopped = run_components(
        {"a": until_stopped(log, "a"), "b": until_stopped(log, "b")}, stop=stop, signals=()
    )
    assert stopped.ok
    assert sorted(line for line in log if "stopped" in line) == ["a stopped", "b stopped"]


def test_run_for_ends_the_run() -> None:
    log: list[str] = []
    started = time.monotonic()
    stopped = run_components({"a": until_stopped(log, "a")}, run_for=0.2, signals=())
    assert stopped.ok
    assert log == ["a started", "a stopped"]
    assert time.monotonic() - started < DEADLINE


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_everything_and_the_handler_is_restored(
    signum: signal.Signals,
) -> None:
    log: list[str] = []
    before = signal.getsignal(signum)

    def sends_the_signal(stop: threading.Event) -> None:
        signal.raise_signal(signum)  # delivered to the process; handled in the main thread
        stop.wait(DEADLINE)

    stopped = run_components({"a": until_stopped(log, "a"), "kill": sends_the_signal})
    assert stopped.ok
    assert stopped.signal == signum.name
    assert "a stopped" in log
    assert signal.getsignal(signum) is before


def test_off_the_main_thread_no_signal_handler_is_touched() -> None:
    results: list[object] = []
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)

    def supervise() -> None:
        results.append(run_components({"a": lambda s: s.wait(DEADLINE)}, stop=stop))

    thread = threading.Thread(target=supervise)
    thread.start()
    stop.set()
    thread.join(DEADLINE)
    assert len(results) == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_component_ignoring_stop_is_named_not_waited_for_forever() -> None:
    release = threading.Event()

    def stubborn(stop: threading.Event) -> None:
        release.wait(DEADLINE)

    stop = threading.Event()
    stop.set()
    try:
        stopped = run_components({"stubborn": stubborn}, stop=stop, signals=(), join_timeout=0.1)
    finally:
        release.set()
    assert stopped.still_running == ("stubborn",)


def test_nothing_to_supervise_is_a_programming_error() -> None:
    components: dict[str, Callable[[threading.Event], None]] = {}
    with pytest.raises(ValueError, match="nothing to supervise"):
        run_components(components, signals=())


def test_a_heartbeat_is_kept_fresh_while_running_and_removed_after(tmp_path: Path) -> None:
    beat = tmp_path / "run" / "heartbeat"
    seen: list[float] = []

    def watcher(stop: threading.Event) -> None:
        deadline = time.monotonic() + DEADLINE
        while len(seen) < 3 and time.monotonic() < deadline:
            if beat.exists() and (not seen or beat.stat().st_mtime_ns != seen[-1]):
                seen.append(beat.stat().st_mtime_ns)
            stop.wait(0.01)

    stopped = run_components(
        {"watcher": watcher}, signals=(), heartbeat=Heartbeat(beat, every=0.05)
    )
    assert stopped.ok
    assert len(seen) == 3, "touched again and again"
    assert not beat.exists(), "gone once the components stopped"


def test_heartbeat_config() -> None:
    assert HeartbeatConfig.from_env({}).heartbeat() is None
    config = HeartbeatConfig.from_env(
        {"SOCKETLAB_HEARTBEAT": "/run/x", "SOCKETLAB_HEARTBEAT_EVERY": "2"}
    )
    heartbeat = config.heartbeat()
    assert heartbeat is not None
    assert (heartbeat.path, heartbeat.every) == (Path("/run/x"), 2.0)


def test_a_heartbeat_that_cannot_be_written_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    heartbeat = Heartbeat(blocker / "heartbeat", every=1.0)
    heartbeat.beat()
    heartbeat.beat()
    assert [r.getMessage().split()[0] for r in caplog.records] == ["event=heartbeat_failed"]
