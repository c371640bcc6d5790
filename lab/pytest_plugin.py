"""socketlab's pytest plugin: the ``lab`` fixture, and the ``lab_links`` marker.

Installed with the package (entry point ``pytest11``: ``socketlab``), so any
project's tests can say::

    def test_echo(lab):
        result = lab.exec("client", ["python3", "echo_client.py", "server", "7007", "hi"])
        assert result.exit_code == 0
        with lab.shaped("server", "client", delay="40ms", loss="2%"):
            ...                                   # unshaped again on exit, pass or fail
        with lab.partitioned("client", "server"):
            ...                                   # healed on exit
        assert lab.run_scenario("scenarios/example.yaml").passed

    @pytest.mark.lab_links({"client -> server": {"delay": "40ms"}})
    def test_slow(lab): ...                      # shaped for this test only

``lab`` (session scope) brings up the project's lab once: the Compose files of
``--lab-file`` (repeatable), else the project found from the tests' folder (the
first path given to pytest, else where it was started; ``compose.lab.yml``, see
:mod:`lab.project`); under a project name of its own,
one per xdist worker (``pytest-<random>-<worker>``); and always takes it down.
Before the lab comes up a session reaper (:mod:`lab.reaper`) is started: if
pytest is killed, the reaper removes everything labelled with the project
within seconds (``SOCKETLAB_REAPER=0``: none).

Nothing here runs unless a test asks for ``lab`` (or carries ``lab_links``):
the plugin only registers its options and marker, so suites with a ``lab``
fixture of their own (socketlab's own integration tests) are not disturbed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from lab.images import ImageSet
    from lab.interface import ExecResult, Lab, Reaper, ServiceStatus
    from lab.scenario.report import ScenarioResult
    from lab.shaping import ShapeResult

    class SessionLab(Lab, Protocol):
        """A lab the session brings up and takes down (:class:`lab.api.Lab` is one)."""

        def build(self) -> ImageSet: ...

        def up(self, *, timeout: float = ...) -> list[ServiceStatus]: ...

        def down(self) -> dict[str, int]: ...


MARKER = "lab_links"
DEFAULT_EXEC_TIMEOUT = 120.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("socketlab", "socketlab network lab")
    group.addoption(
        "--lab-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a Compose file of the lab (repeatable; default: the project's compose.lab.yml)",
    )
    group.addoption(
        "--lab-project",
        default="pytest",
        metavar="PREFIX",
        help="prefix of the lab's Compose project name (default: pytest)",
    )
    group.addoption(
        "--lab-up-timeout",
        type=float,
        default=240.0,
        metavar="SECONDS",
        help="seconds the lab has to become healthy",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(links): shape links of the lab for one test, e.g. "
        "{'client -> server': {'delay': '40ms', 'loss': '2%'}}",
    )


def parse_links(links: Any) -> list[tuple[str, str, dict[str, str]]]:
    """``{"client -> server": {...}}`` or ``{("client", "server"): {...}}`` -> (source, dest,
    options) each; ValueError with the bad entry otherwise."""
    if not isinstance(links, Mapping) or not links:
        raise ValueError(f"{MARKER} takes a mapping of links to options, not {links!r}")
    parsed = []
    for key, options in links.items():
        if isinstance(key, tuple) and len(key) == 2:
            source, dest = key
        elif isinstance(key, str) and "->" in key:
            source, _, dest = key.partition("->")
        else:
            raise ValueError(f"{MARKER}: {key!r} is not 'source -> dest' nor (source, dest)")
        if not isinstance(options, Mapping) or not options:
            raise ValueError(f"{MARKER}: the options of {key!r} are not a mapping of settings")
        parsed.append(
            (str(source).strip(), str(dest).strip(), {str(k): str(v) for k, v in options.items()})
        )
    return parsed


class LabSession:
    """What a test gets as ``lab``: the running lab and the reaper holding it.

    ``lab`` is the :class:`lab.interface.Lab` for anything else (``lab.lab.logs(...)``).
    """

    def __init__(
        self,
        lab: SessionLab,
        *,
        reaper: Reaper | None = None,
        results: Path,
        project_dir: Path,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.lab = lab
        self.reaper = reaper
        self.results = results
        self.project_dir = project_dir
        self.progress = progress or (lambda _message: None)

    @property
    def project(self) -> str:
        return self.lab.project

    @property
    def services(self) -> Sequence[str]:
        return self.lab.services

    def ip(self, service: str, **options: Any) -> str:
        """The container's address (``network=``, ``family=6`` as :meth:`Lab.ip`)."""
        return self.lab.ip(service, **options)

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        timeout: float = DEFAULT_EXEC_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run ``argv`` in ``service`` (``client``, ``client.2``): exit code and output."""
        return self.lab.exec(service, list(argv), timeout=timeout, env=env)

    def _note(self, did: str) -> None:
        if self.reaper is not None:
            self.reaper.note({"did": did, "by": "pytest"})

    @contextlib.contextmanager
    def shaped(self, source: str, dest: str, **options: object) -> Iterator[ShapeResult]:
        """Shape ``source -> dest`` (``delay="40ms"``, ``loss="2%"``, ``mss=88``,
        ``slice_delay="5ms"``, ``profile="3g"``...) for the block; unshaped on the way
        out, whether the block passed or failed."""
        from lab import shaping  # noqa: PLC0415 - the plugin imports the controller lazily

        settings = {name: str(value) for name, value in options.items() if name != "profile"}
        profile = options.get("profile")
        spec = shaping.resolve_spec(profile=str(profile) if profile else None, options=settings)
        self._note(f"shaping {source} -> {dest}: {spec.describe()}")
        result = shaping.shape(self.lab, source, dest, spec)
        try:
            yield result
        finally:
            shaping.unshape(self.lab, source, dest)
            self._note(f"unshaped {source} -> {dest}")

    @contextlib.contextmanager
    def partitioned(self, a: str, b: str) -> Iterator[None]:
        """Cut ``a`` from ``b`` both ways for the block; healed on the way out."""
        from lab import shaping  # noqa: PLC0415

        self._note(f"partition {a} {b}")
        shaping.partition(self.lab, a, b)
        try:
            yield
        finally:
            shaping.heal(self.lab, a, b)
            self._note(f"heal {a} {b}")

    @contextlib.contextmanager
    def links(self, links: Any) -> Iterator[None]:
        """Every link of a ``lab_links`` mapping shaped for the block."""
        parsed = parse_links(links)
        with contextlib.ExitStack() as stack:
            for source, dest, options in parsed:
                stack.enter_context(self.shaped(source, dest, **options))
            yield

    def run_scenario(self, path: str | Path) -> ScenarioResult:
        """Run one scenario file (relative to the project's folder) and return its result
        (``.passed``, ``.reason()``, ``.checks``); reports under ``results/``."""
        from lab.scenario.session import run_files  # noqa: PLC0415

        file = Path(path)
        if not file.is_absolute():
            file = self.project_dir / file
        report = run_files(
            self.lab, [file], results_root=self.results, progress=self.progress, reaper=self.reaper
        )
        return report.results[0]


def tests_folder(config: pytest.Config) -> Path:
    """Where to look for the project: the first path pytest was given, else where it was
    started (a suite inside another project's tree finds its own compose.lab.yml)."""
    params = getattr(config, "invocation_params", None)
    invoked = Path(params.dir) if params is not None else Path(config.rootpath)
    for arg in getattr(config, "args", ()):
        path = Path(str(arg).split("::", 1)[0])
        path = path if path.is_absolute() else invoked / path
        if path.exists():
            return path if path.is_dir() else path.parent
    return invoked


def _worker(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else "main"


def open_session(
    config: pytest.Config,
    *,
    make_lab: Callable[..., SessionLab] | None = None,
    progress: Callable[[str], None] | None = None,
) -> LabSession:
    """Build, guard and start the session's lab (the ``lab`` fixture's set-up)."""
    from lab.api import Lab as DockerLab  # noqa: PLC0415
    from lab.config import LabConfig  # noqa: PLC0415
    from lab.project import find_project  # noqa: PLC0415

    settings = LabConfig.from_env()
    start = tests_folder(config)
    found = find_project(start, configured=settings.root)
    files = [Path(f) if Path(f).is_absolute() else start / f for f in config.getoption("lab_file")]
    project = f"{config.getoption('lab_project')}-{uuid.uuid4().hex[:6]}-{_worker(config)}"
    say = progress or (lambda message: None)
    lab = (make_lab or DockerLab)(
        project=project,
        repo_root=found.root,
        progress=say,
        config=settings,
        compose_files=files,
    )
    reaper = None
    if settings.reaper:
        lab.build()  # the reaper runs from the lab's netkit image
        reaper = lab.start_reaper("session", run_id=project, what="pytest session")
    try:
        lab.up(timeout=config.getoption("lab_up_timeout"))
    except BaseException:
        close_session(lab, reaper)
        raise
    return LabSession(
        lab, reaper=reaper, results=found.root / "results", project_dir=found.root, progress=say
    )


def close_session(lab: SessionLab, reaper: Reaper | None) -> None:
    """Take the lab down (and let its reaper go first, so it does not reap meanwhile)."""
    if reaper is not None:
        reaper.release()
    lab.down()


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[LabSession]:
    """The project's lab, up for the whole session, always taken down (see the module)."""
    from lab.errors import DockerUnavailable, LabError  # noqa: PLC0415

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None and request.config.getoption("verbose") > 0:
            reporter.write_line(f"[lab] {message}")

    try:
        session = open_session(request.config, progress=progress)
    except DockerUnavailable as exc:
        pytest.fail(f"the lab needs a Docker engine: {exc}", pytrace=False)
    except LabError as exc:
        pytest.fail(f"the lab did not come up: {exc}", pytrace=False)
    try:
        yield session
    finally:
        close_session(session.lab, session.reaper)


@pytest.fixture(autouse=True)
def _socketlab_links(request: pytest.FixtureRequest) -> Iterator[None]:
    """``@pytest.mark.lab_links({...})``: those links shaped for this test only."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        yield
        return
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(f"{MARKER} takes one mapping of links, e.g. "
                                "{'client -> server': {'delay': '40ms'}}")  # fmt: skip
    session = request.getfixturevalue("lab")
    with session.links(marker.args[0]):
        yield
