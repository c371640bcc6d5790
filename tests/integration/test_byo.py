"""Bring your own program: ``lab`` installed from a wheel, ``lab init`` outside the checkout,
examples/byo-echo both ways, daemons, the reaper, and a killed run's faults undone.

* A wheel built from HEAD goes into a fresh virtualenv outside the checkout; there ``lab
  init`` makes a project, and ``lab up``, ``lab run example`` and ``pytest`` (the generated
  test, through the installed plugin) pass. Its images are the checkout's, by tag.
* examples/byo-echo (one lab for the module): ``lab run clean sliced`` passes clean and
  fails sliced on exactly the naive client's check; its pytest test (a lab of its own)
  passes; a crashing daemon fails its scenario with the crash output, a good one runs
  beside its client and is stopped with SIGTERM (exit 143).
* A ``lab run`` killed with ``kill -9`` during a partition: its reaper heals it and the next
  run names the dead run in one warning; with the reaper killed too, the partition stays,
  ``--keep-network`` refuses, and the next run undoes it with one warning.
* pytest with the plugin, ``kill -9``'d mid-test while shaped: nothing labelled with its
  project within 60 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.api import Lab
from lab.errors import DockerUnavailable
from lab.init import FILES, templates
from lab.shaping import link_status
from lab.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BYO = REPO / "examples" / "byo-echo"
LAB = [sys.executable, "-m", "lab"]
UP_TIMEOUT = "240"
REAPED_WITHIN = 60.0


def report(capsys: pytest.CaptureFixture[str], message: str) -> None:
    with capsys.disabled():
        print(f"\n{message}")


def run(
    argv: list[str], *, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` to its end; ``env`` replaces the environment when given."""
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env=env if env is not None else dict(os.environ),
    )  # fmt: skip


def ok(
    argv: list[str], *, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> str:
    done = run(argv, cwd=cwd, timeout=timeout, env=env)
    assert done.returncode == 0, (
        f"{' '.join(argv[-4:])} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


def nothing_left(lab: Lab) -> bool:
    return lab.leftovers() == {"containers": [], "networks": [], "volumes": []}


# --------------------------------------------------------------------------- installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv outside the checkout with socketlab from a wheel of HEAD, and pytest."""
    where = tmp_path_factory.mktemp("installed")
    source = where / "source"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True, timeout=120
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True, timeout=120)
    ok(
        [
            str(REPO / ".venv" / "bin" / "pip"),
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(where / "dist"),
            str(source),
        ],
        cwd=where,
    )
    (wheel,) = (where / "dist").glob("socketlab-*.whl")
    ok([sys.executable, "-m", "venv", str(where / "venv")], cwd=where)
    ok(
        [str(where / "venv" / "bin" / "pip"), "install", "--quiet", str(wheel), "pytest"],
        cwd=where,
        timeout=900,
    )
    return where / "venv" / "bin"


def test_lab_init_up_run_and_pytest_with_the_installed_package(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project_dir = tmp_path / "my-project"
    assert not project_dir.resolve().is_relative_to(REPO)
    # the installed package, not the checkout: its lab package lives in the venv
    where = ok(
        [
            str(installed / "python"),
            "-c",
            "import lab, socketlab; print(lab.__file__, socketlab.__file__)",
        ],
        cwd=tmp_path,
    )
    assert str(REPO) not in where
    ok([str(installed / "lab"), "init", str(project_dir)], cwd=tmp_path)
    assert sorted(
        str(p.relative_to(project_dir)) for p in project_dir.rglob("*") if p.is_file()
    ) == sorted([*FILES, "README.md"])
    project = f"socketlab-test-byo-wheel-{uuid.uuid4().hex[:6]}"
    # Nothing of the checkout in the environment; the installed lab shares the checkout's
    # downloaded sources (no second download), every file of the build comes from the wheel.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SOCKETLAB_ROOT", "PYTHONPATH", "VIRTUAL_ENV"}
    }
    env |= {
        "SOCKETLAB_CACHE_DIR": str(REPO / "build" / "sources"),
        "PATH": f"{installed}:{os.environ['PATH']}",
    }
    lab_cli = [str(installed / "lab"), "-p", project]
    try:
        started = time.monotonic()
        built = ok([*lab_cli, "build"], cwd=project_dir, env=env)
        tags = dict(re.findall(r"^(runtime|netkit):\s+(\S+)$", built, re.MULTILINE))
        checkout = Lab(project=project).build()
        assert tags == {"runtime": checkout.runtime, "netkit": checkout.netkit}, (
            "same sources, same image tags"
        )
        ok([*lab_cli, "up", "--timeout", UP_TIMEOUT], cwd=project_dir, env=env)
        # from a folder inside the project too
        listing = ok([*lab_cli, "scenarios"], cwd=project_dir / "tests", env=env)
        assert "example" in listing
        out = ok([*lab_cli, "run", "example"], cwd=project_dir, env=env)
        assert re.search(r"example\s*│\s*PASS\s*│\s*4/4", out), out
        tested = ok(
            [
                str(installed / "pytest"),
                "-q",
                "-p",
                "no:cacheprovider",
                "--lab-project",
                "socketlab-test-byo-wheel",
            ],
            cwd=project_dir,
            env=env,
            timeout=900,
        )
        assert re.search(r"\b5 passed\b", tested), tested
        report(
            capsys,
            f"installed wheel: lab init, up, run example, pytest (5 tests) in {time.monotonic() - started:.0f} s",
        )
    finally:
        run([*lab_cli, "down"], cwd=project_dir, env=env)
    assert nothing_left(Lab(project=project))


# --------------------------------------------------------------------------- byo-echo


@dataclass
class Echo:
    """examples/byo-echo up under a project of its own; ``lab(...)`` runs the CLI there."""

    project: str
    handle: Lab

    def lab(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run([*LAB, "-p", self.project, *argv], cwd=BYO, timeout=timeout)

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*LAB, "-p", self.project, *argv], cwd=BYO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    project = f"socketlab-test-byo-echo-{uuid.uuid4().hex[:6]}"
    handle = Lab(project=project, repo_root=BYO)
    try:
        handle.docker  # noqa: B018 - fail clearly without an engine
    except DockerUnavailable as exc:
        pytest.fail(f"integration tests need a Docker engine: {exc}", pytrace=False)
    lab = Echo(project=project, handle=handle)
    try:
        up = lab.lab("up", "--timeout", UP_TIMEOUT)
        assert up.returncode == 0, up.stderr[-2000:]
        yield lab
    finally:
        lab.lab("down")
        assert nothing_left(handle)


def test_byo_echo_is_what_lab_init_writes_plus_two_clients() -> None:
    texts, section = templates()
    for name, text in texts.items():
        assert (BYO / name).read_text() == text, f"{name} is not lab init's"
    assert section.strip() in (BYO / "README.md").read_text()
    assert (BYO / "naive_client.py").is_file()
    assert (BYO / "framed_client.py").is_file()


def test_byo_echo_scenarios_clean_passes_sliced_fails_on_the_naive_client_only(
    echo: Echo, tmp_path: Path
) -> None:
    done = echo.lab("run", "clean", "sliced", "--results", str(tmp_path))
    assert done.returncode == 1, done.stdout[-2000:]  # sliced fails: that is the lesson
    (run_folder,) = tmp_path.iterdir()
    results = {
        s["name"]: s for s in json.loads((run_folder / "results.json").read_text())["scenarios"]
    }
    assert results["clean"]["passed"], results["clean"]["reason"]
    failed = [c for c in results["sliced"]["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["naive client, sliced link - reply differs from request"]
    assert "matched 1 time(s), expected exactly 0" in failed[0]["detail"]
    framed = next(c for c in results["sliced"]["checks"] if c["name"].startswith("framed"))
    assert framed["passed"]
    (link,) = results["sliced"]["links"]
    # the seed the link ran with is part of its text (one is picked when none is given)
    assert re.fullmatch(r"server -> client: mss=88 slice-delay=5ms seed=\d+ \(engine \w+\)", link)


def test_byo_echo_pytest_shows_the_lesson_through_the_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    out = ok(
        [
            str(REPO / ".venv" / "bin" / "pytest"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--lab-project",
            "socketlab-test-byo-plugin",
            "tests/test_slicing.py",
        ],
        cwd=BYO,
        timeout=900,
    )
    assert re.search(r"\b3 passed\b", out), out
    report(capsys, f"byo-echo through the plugin: 3 tests in {time.monotonic() - started:.0f} s")


DAEMONS = """\
name: daemons
description: a crashing daemon fails its scenario with its output; then a good one
steps:
  - name: crashy
    service: server
    run: [python3, -c, "import sys; print('reading config'); sys.exit('bad config: no port given')"]
    timeout: 30
    daemon: true
  - name: up
    wait_for: {log: "^listening", daemon: crashy}
    timeout: 20
  - name: never
    service: client
    run: [python3, echo_client.py, server, "7007", hi]
    timeout: 10
checks:
  - {kind: duration, step: crashy, min: 0}
"""

GOOD_DAEMON = """\
name: good-daemon
description: a second echo server as a daemon, used by the client, stopped with SIGTERM
steps:
  - name: second
    service: server
    run: [python3, -u, echo_server.py, "7100"]
    timeout: 60
    daemon: true
    capture: second
    expect_exit: 143
  - name: up
    wait_for: {log: "^listening on 7100$", daemon: second}
    timeout: 20
  - name: use
    service: client
    run: [python3, echo_client.py, server, "7100", "to the daemon"]
    timeout: 20
    capture: use
checks:
  - {kind: stdout_matches, capture: use, regex: "^reply: to the daemon$", count: 1}
  - {kind: stdout_matches, capture: second, regex: "^echoed 13 bytes to ", count: 1}
"""


def test_a_crashing_daemon_fails_its_scenario_with_the_crash_output(
    echo: Echo, tmp_path: Path
) -> None:
    (tmp_path / "daemons.yaml").write_text(DAEMONS)
    (tmp_path / "good.yaml").write_text(GOOD_DAEMON)
    done = echo.lab(
        "run",
        str(tmp_path / "daemons.yaml"),
        str(tmp_path / "good.yaml"),
        "--results",
        str(tmp_path / "r"),
    )
    (run_folder,) = (tmp_path / "r").iterdir()
    results = {
        s["name"]: s for s in json.loads((run_folder / "results.json").read_text())["scenarios"]
    }
    crashed = results["daemons"]
    assert not crashed["passed"]
    check = next(
        c for c in crashed["checks"] if c["name"] == "daemon crashy runs until the other steps end"
    )
    assert not check["passed"]
    assert "exited 1 at" in check["detail"]
    assert "bad config: no port given" in check["detail"]  # its output, shown
    up = next(s for s in crashed["steps"] if s["name"] == "up")
    assert up["error"].startswith(
        "gave up waiting for log /^listening/ in daemon crashy: daemon crashy ended first"
    )
    assert up["duration"] < 20  # not its whole deadline
    never = next(s for s in crashed["steps"] if s["name"] == "never")
    assert never["error"] == "not run: daemon crashy ended"
    good = results["good-daemon"]
    assert good["passed"], good["reason"]
    second = next(s for s in good["steps"] if s["name"] == "second")
    assert (second["exit_code"], second["note"]) == (143, "stopped by SIGTERM")
    assert done.returncode == 1  # the crashing one failed the run


# a partition, then a step long enough to be killed during it (tests/swarm runs it too)
KILLED = (Path(__file__).resolve().parent / "scenarios" / "killed-partition.yaml").read_text()


def _killed_mid_partition(echo: Echo, scenario: Path, *, kill_reaper_too: bool) -> str:
    """Start ``lab run`` on the scenario, wait for the partition, kill -9 it; its run id."""
    process = echo.popen("run", str(scenario), "--results", str(scenario.parent / "r"))
    try:

        def partitioned() -> bool:
            return any(s.shaping == "partition" for s in link_status(echo.handle))

        wait_for(partitioned, timeout=120, what="the run's partition", interval=1.0)
        reapers = echo.handle.helpers("reaper")
        (reaper,) = [h for h in reapers if h.status == "running"]
        run_id = reaper.labels["io.socketlab.run"]
        if kill_reaper_too:
            reaper.signal("SIGKILL")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return run_id


def test_a_killed_runs_partition_is_healed_by_its_reaper_and_named_by_the_next_run(
    echo: Echo, tmp_path: Path
) -> None:
    scenario = tmp_path / "killed.yaml"
    scenario.write_text(KILLED)
    run_id = _killed_mid_partition(echo, scenario, kill_reaper_too=False)

    def healed() -> bool:
        return not any(s.shaping == "partition" for s in link_status(echo.handle))

    started = time.monotonic()
    wait_for(healed, timeout=REAPED_WITHIN, what="the reaper to heal the partition", interval=1.0)
    took = time.monotonic() - started
    done = echo.lab("run", "clean", "--results", str(tmp_path / "next"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, done.stderr
    assert f"run {run_id} (lab run killed-partition" in done.stderr
    assert "died; its reaper undid partition client server" in re.sub(r"\s+", " ", done.stderr)
    assert echo.handle.helpers("reaper") == []  # the dead run's record is forgotten
    print(f"reaper healed the killed run's partition in {took:.1f} s")


def test_a_partition_left_by_a_killed_run_and_its_reaper_is_refused_then_undone(
    echo: Echo, tmp_path: Path
) -> None:
    scenario = tmp_path / "killed.yaml"
    scenario.write_text(KILLED)
    run_id = _killed_mid_partition(echo, scenario, kill_reaper_too=True)
    assert any(s.shaping == "partition" for s in link_status(echo.handle)), "nobody healed it"

    refused = echo.lab("run", "clean", "--keep-network", "--results", str(tmp_path / "refused"))
    assert refused.returncode == 1
    message = re.sub(r"\s+", " ", refused.stderr)
    assert (
        "the lab's network is not as the scenarios declare: partition client <-> server" in message
    )
    assert f"left by run {run_id}" in message
    assert "run without --keep-network to undo it" in message
    assert not (tmp_path / "refused").exists()  # nothing ran

    done = echo.lab("run", "clean", "--results", str(tmp_path / "next"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, done.stderr
    joined = re.sub(r"\s+", " ", done.stderr)
    assert f"undoing what was left on the lab's network by run {run_id}" in joined
    assert joined.count("partition client <-> server") >= 1
    assert not any(s.shaping == "partition" for s in link_status(echo.handle))


# --------------------------------------------------------------------------- the reaper


BLOCKING_TEST = """
import threading
from pathlib import Path

MARKER = Path({marker!r})


def test_killed_while_shaped(lab):
    with lab.shaped("server", "client", delay="10ms"):
        MARKER.write_text(lab.project)
        threading.Event().wait(600)  # until pytest is killed
"""


def test_a_killed_pytest_leaves_nothing_labelled_within_a_minute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "project"
    (tmp_path / "test_blocking.py").write_text(
        textwrap.dedent(BLOCKING_TEST.format(marker=str(marker)))
    )
    argv = [str(REPO / ".venv" / "bin" / "pytest"), "-q", "-s", "-p", "no:cacheprovider",
            "--lab-file", str(BYO / "compose.lab.yml"), "--lab-project", "socketlab-test-byo-reaped",
            str(tmp_path / "test_blocking.py")]  # fmt: skip
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(
            lambda: marker.is_file() and marker.read_text(),
            timeout=600,
            what="the test to be shaped",
            interval=0.5,
        )
        project = marker.read_text()
        lab = Lab(project=project, compose_files=[BYO / "compose.lab.yml"])
        before = lab.leftovers()
        assert any("shaper" in name for name in before["containers"]), before
        assert any("reaper" in name for name in before["containers"]), before
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        killed = time.monotonic()
        wait_for(
            lambda: nothing_left(lab), timeout=REAPED_WITHIN, what="nothing labelled", interval=1.0
        )
        took = time.monotonic() - killed
    finally:
        if process.poll() is None:
            process.kill()
    report(capsys, f"reaper: pytest killed with {len(before['containers'])} containers, "
                   f"{len(before['networks'])} networks up; nothing labelled {took:.1f} s later")  # fmt: skip
    assert took <= REAPED_WITHIN
