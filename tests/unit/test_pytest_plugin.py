"""The pytest plugin with the fake lab: the session's life cycle (reaper before the lab,
released before it comes down), ``shaped`` and ``partitioned`` undone even when the block
fails, ``exec``, ``ip``, ``run_scenario``, the ``lab_links`` marker; and, in a pytest run of
its own, that the installed plugin registers its marker and applies it per test only."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lab.interface import ExecResult
from lab.pytest_plugin import LabSession, close_session, open_session, parse_links
from lab.shaping.helpers import SHAPER_ROLE


def namespace(lab: Any, service: str, argv: list[str]) -> ExecResult:
    if argv[:2] == ["sh", "-c"]:
        out = "route=10.0.0.3 dev eth0 src 10.0.0.2\nnetem=ok\n" if "route get" in argv[2] else ""
        return ExecResult(exit_code=0, stdout=out, stderr="")
    if argv[:1] == ["echo"]:
        return ExecResult(exit_code=0, stdout=" ".join(argv[1:]) + "\n", stderr="")
    raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def session(fake_lab: Any, tmp_path: Path) -> LabSession:
    fake_lab.commands = namespace
    reaper = fake_lab.start_reaper("session", run_id="fake", what="pytest session")
    return LabSession(fake_lab, reaper=reaper, results=tmp_path / "results", project_dir=tmp_path)


def test_links_are_read_from_arrows_or_pairs() -> None:
    assert parse_links({"client -> server": {"delay": "40ms"}, ("a", "b"): {"loss": 0.02}}) == [
        ("client", "server", {"delay": "40ms"}),
        ("a", "b", {"loss": "0.02"}),
    ]
    for bad in ([("a", "b")], {}, {"a b": {"delay": "1ms"}}, {"a -> b": {}}):
        with pytest.raises(ValueError, match="lab_links"):
            parse_links(bad)


def test_shaped_is_undone_when_the_block_fails(session: LabSession, fake_lab: Any) -> None:
    seen: list[str] = []

    def failing_test() -> None:
        with session.shaped("client", "server", delay="40ms", loss="2%"):
            seen.extend(
                h.labels["io.socketlab.shaping.spec"] for h in fake_lab.helpers(SHAPER_ROLE)
            )
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError):
        failing_test()
    assert seen == ["delay=40ms loss=2%"]
    assert fake_lab.helpers(SHAPER_ROLE) == []
    dids = [note.get("did") for note in session.reaper.notes]  # type: ignore[union-attr]
    assert dids[-2:] == [
        "shaping client -> server: delay=40ms loss=2%",
        "unshaped client -> server",
    ]


def test_slicing_options_reach_the_spec(session: LabSession, fake_lab: Any) -> None:
    with session.shaped("server", "client", mss=88, slice_delay="5ms") as result:
        assert (result.spec.mss, result.spec.slice_delay) == (88, 0.005)


def test_partitioned_is_healed_when_the_block_fails(session: LabSession, fake_lab: Any) -> None:
    # what the namespaces hold once cut (the fake lab does not run iptables)
    fake_lab.rules = {
        "client": f"%%iptables\n-A SOCKETLAB -s {fake_lab.ip('server')}/32 -j DROP\n",
        "server": f"%%iptables\n-A SOCKETLAB -s {fake_lab.ip('client')}/32 -j DROP\n",
    }

    def failing_test() -> None:
        with session.partitioned("client", "server"):
            raise AssertionError("the test failed")

    with pytest.raises(AssertionError):
        failing_test()
    scripts = [argv[2] for _, argv, _ in fake_lab.netkit_runs]
    assert len([s for s in scripts if "-A SOCKETLAB" in s and "-j DROP" in s]) == 2  # both cut
    assert len([s for s in scripts if "-D SOCKETLAB" in s and "-j DROP" in s]) == 2  # both healed
    dids = [note.get("did") for note in session.reaper.notes]  # type: ignore[union-attr]
    assert dids[-2:] == ["partition client server", "heal client server"]


def test_exec_ip_and_links(session: LabSession, fake_lab: Any) -> None:
    result = session.exec("client", ["echo", "hi"])
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    assert session.ip("server") == fake_lab.ip("server")
    with session.links(
        {"client -> server": {"delay": "10ms"}, "server -> client": {"delay": "20ms"}}
    ):
        assert len(fake_lab.helpers(SHAPER_ROLE)) == 2
    assert fake_lab.helpers(SHAPER_ROLE) == []


def test_run_scenario_returns_the_result_and_uses_the_sessions_reaper(
    session: LabSession, fake_lab: Any, tmp_path: Path
) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "e.yaml").write_text(
        "name: e\ndescription: d\nsteps:\n  - {service: client, run: [echo, ok], timeout: 5,"
        " capture: c}\nchecks:\n  - {kind: stdout_matches, capture: c, regex: '^ok$', count: 1}\n"
    )
    result = session.run_scenario("scenarios/e.yaml")
    assert result.passed, result.reason()
    assert (tmp_path / "results").is_dir()
    assert len(fake_lab.reapers) == 1  # no reaper of its own: the session's records it


class FakeConfig:
    """The pytest config the session reads: options and the rootdir."""

    def __init__(self, root: Path) -> None:
        self.rootpath = root
        self.options = {"lab_file": [], "lab_project": "pytest", "lab_up_timeout": 30.0}

    def getoption(self, name: str) -> Any:
        return self.options[name]


def test_the_session_starts_its_reaper_before_the_lab_and_releases_it_before_down(
    fake_lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "compose.lab.yml").write_text("services: {}\n")
    monkeypatch.delenv("SOCKETLAB_ROOT", raising=False)
    made: dict[str, Any] = {}

    def make_lab(**options: Any) -> Any:
        made.update(options)
        return fake_lab

    session = open_session(FakeConfig(tmp_path), make_lab=make_lab)  # type: ignore[arg-type]
    assert made["project"].startswith("pytest-")
    assert made["project"].endswith("-main")  # one project per xdist worker
    assert made["repo_root"] == tmp_path.resolve()
    (reaper,) = fake_lab.reapers
    assert reaper.scope == "session"
    assert [action for action, _ in fake_lab.actions] == ["build", "up"]
    close_session(session.lab, session.reaper)
    assert reaper.released
    assert fake_lab.actions[-1] == ("down", "")


def test_a_lab_that_does_not_come_up_is_still_taken_down(fake_lab: Any, tmp_path: Path) -> None:
    def broken_up(*, timeout: float = 0.0) -> Any:
        raise RuntimeError("compose failed")

    fake_lab.up = broken_up
    with pytest.raises(RuntimeError):
        open_session(FakeConfig(tmp_path), make_lab=lambda **_: fake_lab)  # type: ignore[arg-type]
    assert fake_lab.reapers[0].released
    assert fake_lab.actions[-1] == ("down", "")


# --------------------------------------------------------------------------- a pytest run


CONFTEST = '''
import contextlib
import pytest

ENTERED = []


class Recorder:
    """Stands for the plugin's session: records what the marker shapes."""

    @contextlib.contextmanager
    def links(self, links):
        ENTERED.append(("on", links))
        try:
            yield
        finally:
            ENTERED.append(("off", links))


@pytest.fixture(scope="session")
def lab():
    return Recorder()


def pytest_sessionfinish(session):
    print("ENTERED", ENTERED)
'''

TESTS = """
import pytest


@pytest.mark.lab_links({"client -> server": {"delay": "40ms"}})
def test_marked_fails(lab):
    assert False, "fails while shaped"


def test_unmarked():
    pass


@pytest.mark.lab_links({"server -> client": {"loss": "1%"}})
def test_marked_passes(lab):
    pass
"""


def test_the_installed_plugin_registers_and_applies_its_marker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_x.py").write_text(textwrap.dedent(TESTS))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "--strict-markers",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert "1 failed, 2 passed" in out, out + result.stderr
    # each marked test shaped once, and unshaped even when it failed; the unmarked not at all
    assert (
        "ENTERED [('on', {'client -> server': {'delay': '40ms'}}), "
        "('off', {'client -> server': {'delay': '40ms'}}), "
        "('on', {'server -> client': {'loss': '1%'}}), "
        "('off', {'server -> client': {'loss': '1%'}})]"
    ) in out
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest", "--markers"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    ).stdout
    assert "@pytest.mark.lab_links(links)" in help_text
