"""The controller's settings: every variable parses, defaults are kept, a bad value is
one line and exit code 2 from any ``lab`` command, and nothing reads them at import."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from source_tree import parsed, python_files

import lab
from lab.cli import main
from lab.config import LabConfig
from socketlab.config import ENV_METADATA
from socketlab.errors import ConfigError

LAB_PACKAGE = Path(lab.__file__).parent


def settings(
    cls: type = LabConfig, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str, Any]]:
    """(attribute path, variable, type) of every setting of ``cls``, nested ones too."""
    hints = typing.get_type_hints(cls)
    found = []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        setting = spec.metadata.get(ENV_METADATA)
        if setting is not None:
            found.append(((*path, spec.name), setting.name, hints[spec.name]))
        elif dataclasses.is_dataclass(hints[spec.name]):
            found += settings(hints[spec.name], (*path, spec.name))
    return found


SETTINGS = settings()
NUMERIC = [(name, hint) for _, name, hint in SETTINGS if hint in {int, float}]


def attribute(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


# The values the modules had before they moved into LabConfig: a changed default is a bug.
DEFAULTS = {
    "SOCKETLAB_PROJECT": "socketlab",
    "SOCKETLAB_COMPOSE": None,
    "SOCKETLAB_ROOT": None,
    "SOCKETLAB_PICKLE_KEY": None,
    "SOCKETLAB_ADMIN_TOKEN": None,  # new in issue 20
    "DOCKER_HOST": "unix:///var/run/docker.sock",
    "SOCKETLAB_REAPER": True,
    "SOCKETLAB_SHAPING_TIMEOUT": 30.0,
    "SOCKETLAB_SHAPER_READY_TIMEOUT": 20.0,
    "SOCKETLAB_SHAPER_STOP_TIMEOUT": 3,
    "SOCKETLAB_CHECK_PINGS": 50,
    "SOCKETLAB_BASELINE_PROBES": 50,
    "SOCKETLAB_CHECK_LOSS_PROBES": 1000,
    "SOCKETLAB_CHECK_RATE_SECONDS": 4,
    "SOCKETLAB_CHECK_MAX_PROBES": 20000,
    "SOCKETLAB_CHECK_REORDER_PROBES": 1000,
    "SOCKETLAB_CHECK_STREAM_PORT": 5299,
    "SOCKETLAB_CHECK_LOAD_PROBES": 100,
    "SOCKETLAB_CHECK_HOST_SLACK": 0.002,
    "SOCKETLAB_IPERF_PORT": 5201,
    "SOCKETLAB_SCENARIO_EXEC_GRACE": 30.0,
    "SOCKETLAB_SCENARIO_READY_TIMEOUT": 30.0,
    "SOCKETLAB_SCENARIO_RECOVER_TIMEOUT": 120.0,
    "SOCKETLAB_SCENARIO_READ_TIMEOUT": 30.0,
    "SOCKETLAB_SCENARIO_CHECK_POLL": 0.5,
    "SOCKETLAB_SCENARIO_FILE_COPY_LIMIT": 16 * 1024 * 1024,
    "SOCKETLAB_SCENARIO_DAEMON_DIR": "/tmp",
    "SOCKETLAB_SCENARIO_DAEMON_OUTPUT_LIMIT": 1024 * 1024,
    "SOCKETLAB_CAPTURE_SNAPLEN": 256,
    "SOCKETLAB_CAPTURE_START_TIMEOUT": 30.0,
    "SOCKETLAB_CAPTURE_STOP_TIMEOUT": 20.0,
    "SOCKETLAB_CAPTURE_MAX_SECONDS": 3600.0,
    "SOCKETLAB_BENCH_IPERF_PORT": 5202,
    "SOCKETLAB_BENCH_PEER_PORT": 5203,
    "SOCKETLAB_BENCH_READY_TIMEOUT": 20.0,
    "SOCKETLAB_BENCH_STEP_TIMEOUT": 300.0,
    "SOCKETLAB_BENCH_RTT_PINGS": 10,
    "SOCKETLAB_BASE_IMAGE": "python:3.11-slim",
    "SOCKETLAB_IMAGE_NAMESPACE": "socketlab",
    "SOCKETLAB_REGISTRY_TIMEOUT": 20.0,
    "SOCKETLAB_CACHE_DIR": None,
    "SOCKETLAB_SHAPER_CPU_SHARES": 8192,
    "SOCKETLAB_SHAPER_STATS_INTERVAL": 1.0,
    "SOCKETLAB_REPORT_MAX_PACKETS": 1_000_000,
    "SOCKETLAB_REPORT_MAX_RECORD": 262_144,
    "SOCKETLAB_REPORT_MAX_FLOWS": 1024,
    "SOCKETLAB_REPORT_MAX_IN_FLIGHT": 1024,
    "SOCKETLAB_REPORT_MAX_RTT_SAMPLES": 100_000,
    "SOCKETLAB_REPORT_UDP_WINDOW": 4096,
    "SOCKETLAB_REPORT_MAX_BINS": 100_000,
    "SOCKETLAB_REPORT_BIN_SECONDS": 0.1,
    "SOCKETLAB_REPORT_PLOT_BINS": 200,
    "SOCKETLAB_REPORT_OUTPUT_CHARS": 4000,
    "SOCKETLAB_WATCH_INTERVAL": 1.0,
    "SOCKETLAB_WATCH_READ_TIMEOUT": 2.0,
    "SOCKETLAB_WATCH_HELPER_TIMEOUT": 20.0,
    "SOCKETLAB_WATCH_MAX_STATS_BYTES": 1024 * 1024,
    "SOCKETLAB_WATCH_LOG_TAIL": 400,
    # new with issue 14 (any Compose project), not moved from a module
    "SOCKETLAB_COMPOSE_FILE": None,
    "SOCKETLAB_EXEC_TIMEOUT": 3600.0,
    "SOCKETLAB_COPY_LIMIT": 4 * 1024**3,
    # new with issue 19 (the lab on a Swarm)
    "SOCKETLAB_ORCHESTRATOR": "compose",
    "SOCKETLAB_SWARM_NODES": (),
    "SOCKETLAB_SWARM_NODE_HOST": None,
    "SOCKETLAB_SWARM_REGISTRY": None,
    "SOCKETLAB_SWARM_BUILD_HOST": None,
    "SOCKETLAB_SWARM_SPREAD": False,
    "SOCKETLAB_SWARM_API_TIMEOUT": 60.0,
    "SOCKETLAB_SWARM_DEPLOY_TIMEOUT": 120.0,
    "SOCKETLAB_SWARM_LOAD_TIMEOUT": 900.0,
    "SOCKETLAB_SWARM_LOAD_PARALLEL": 4,
    "SOCKETLAB_SWARM_REMOVE_TIMEOUT": 120.0,
    "SOCKETLAB_SWARM_DOCKER_CLI": "docker",
}

# A valid text per type and the value it must become.
SAMPLES: dict[Any, tuple[str, Any]] = {
    int: ("7", 7),
    float: ("2.5", 2.5),
    str: ("other", "other"),
    str | None: ("other", "other"),
    Path | None: ("/srv/checkout", Path("/srv/checkout")),
    bool: ("yes", True),
    typing.Literal["compose", "swarm"]: ("swarm", "swarm"),
    tuple[str, ...]: ("node-2=tcp://10.0.0.2:2375", ("node-2=tcp://10.0.0.2:2375",)),
}


def test_every_controller_variable_is_a_setting_with_its_old_default() -> None:
    config = LabConfig()
    assert {name: attribute(config, path) for path, name, _ in SETTINGS} == DEFAULTS


@pytest.mark.parametrize(
    ("path", "name", "hint"), [pytest.param(*row, id=row[1]) for row in SETTINGS]
)
def test_every_variable_parses_into_its_field(path: tuple[str, ...], name: str, hint: Any) -> None:
    raw, expected = SAMPLES[hint]
    config = LabConfig.from_env({name: raw})
    assert attribute(config, path) == expected
    others = [other for other_path, other, _ in SETTINGS if other_path != path]
    assert all(attribute(config, p) == DEFAULTS[n] for p, n, _ in SETTINGS if n in others)


@pytest.mark.parametrize(("name", "hint"), [pytest.param(*row, id=row[0]) for row in NUMERIC])
def test_a_bad_number_is_one_line_naming_the_variable(name: str, hint: type) -> None:
    kind = "an integer" if hint is int else "a number"
    with pytest.raises(ConfigError) as caught:
        LabConfig.from_env({name: "abc"})
    assert str(caught.value) == f"{name}='abc' is not {kind}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="unset-a-key-per-checkout"),
        pytest.param("", "", id="empty-disables-pickle"),
        pytest.param("  ", "", id="blank-disables-pickle"),
        pytest.param("k3y", "k3y", id="given"),
    ],
)
def test_an_empty_pickle_key_is_kept_not_unset(raw: str | None, expected: str | None) -> None:
    env = {} if raw is None else {"SOCKETLAB_PICKLE_KEY": raw}
    assert LabConfig.from_env(env).pickle_key == expected


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--help"], id="help"),
        pytest.param(["status"], id="status"),
        pytest.param(["shape", "client", "server", "--delay", "40ms"], id="shape"),
        pytest.param(["run", "--all"], id="run"),
        pytest.param(["feed", "stats"], id="feed"),
    ],
)
def test_any_lab_command_with_a_bad_setting_prints_one_line_and_exits_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCKETLAB_SHAPING_TIMEOUT", "abc")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == "lab: SOCKETLAB_SHAPING_TIMEOUT='abc' is not a number\n"
    assert captured.out == ""


def test_the_installed_entry_point_says_it_in_one_line() -> None:
    env = {**os.environ, "SOCKETLAB_SHAPING_TIMEOUT": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "lab", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "lab: SOCKETLAB_SHAPING_TIMEOUT='abc' is not a number\n"


def test_the_cli_passes_its_settings_to_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab.cli import build_parser  # noqa: PLC0415
    from lab.commands import make_lab  # noqa: PLC0415

    monkeypatch.setenv("SOCKETLAB_PROJECT", "from-env")
    monkeypatch.setenv("SOCKETLAB_CHECK_PINGS", "9")
    config = LabConfig.from_env()
    monkeypatch.setenv("SOCKETLAB_CHECK_PINGS", "11")  # read once: later changes do not count
    args = build_parser(config).parse_args(["status"])
    made = make_lab(args)
    assert (made.project, made.config.shaping.check_pings) == ("from-env", 9)
    assert build_parser(config).parse_args(["-p", "mine", "status"]).project == "mine"


# Names whose call reads settings: only entry points may call them, never at import time.
READERS = frozenset({"env_int", "env_float", "env_str", "getenv", "from_env"})


def import_time_reads(tree: ast.Module) -> list[str]:
    """Calls of settings readers and uses of ``os.environ`` outside function bodies."""
    found: list[tuple[int, str]] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # runs when called, not when imported
        if isinstance(node, ast.Call):
            callee = node.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            if name in READERS:
                found.append((node.lineno, f"{name}()"))
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            found.append((node.lineno, "os.environ"))
        pending.extend(ast.iter_child_nodes(node))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_no_lab_module_reads_settings_at_import_time() -> None:
    offenders = {}
    for path in python_files(LAB_PACKAGE):
        reads = import_time_reads(parsed(path))
        if reads:
            offenders[str(path.relative_to(LAB_PACKAGE))] = reads
    assert offenders == {}


def test_the_import_time_check_finds_a_read() -> None:
    tree = ast.parse("import os\nTIMEOUT = env_float('X', 1.0)\nHOST = os.environ.get('Y')\n")
    assert import_time_reads(tree) == ["line 2: env_float()", "line 3: os.environ"]
    assert import_time_reads(ast.parse("def f():\n    return env_int('X', 1)\n")) == []
