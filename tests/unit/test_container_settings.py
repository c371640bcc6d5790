"""The container side's settings: every variable reaches its field, bad values are one-line
ConfigErrors (exit 2), CLI options override the environment, and nothing else reads it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from source_tree import parsed, python_files

import socketlab
from socketlab import client
from socketlab.__main__ import COMMANDS, exit_code
from socketlab.__main__ import main as socketlab_main
from socketlab.chat.core import HubConfig
from socketlab.chat.hub import HubServerConfig
from socketlab.config import (
    ENV_METADATA,
    conflicting_defaults,
    container_configs,
    registered_configs,
    settings_of,
)
from socketlab.errors import ConfigError, PeerUnavailable, SocketlabError
from socketlab.rss.poller import PollerConfig

PACKAGE = Path(socketlab.__file__).parent


def env_fields(cls: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """(field path, variable, type) of every setting of ``cls``, nested configs included."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        setting = spec.metadata.get(ENV_METADATA)
        hint = hints[spec.name]
        if setting is not None:
            yield (*path, spec.name), setting.name, hint
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from env_fields(hint, (*path, spec.name))


SETTINGS = [
    pytest.param(cls, field_path, variable, hint, id=f"{cls.__name__}.{'.'.join(field_path)}")
    for cls in container_configs()
    for field_path, variable, hint in env_fields(cls)
]

GOOD: dict[Any, tuple[str, Any]] = {
    int: ("7", 7),
    float: ("2.5", 2.5),
    str: ("some-value", "some-value"),
    Path: ("/some/where", Path("/some/where")),
    Path | None: ("/some/where", Path("/some/where")),
    bytes | None: ("k3y", b"k3y"),
    tuple[str, ...]: ("a, b", ("a", "b")),
    bool: ("no", False),  # a value other than the default: the boolean settings default on
}
BAD: dict[Any, tuple[str, str]] = {
    int: ("4.5", "is not an integer"),
    float: ("abc", "is not a number"),
}


def value_at(config: object, field_path: tuple[str, ...]) -> Any:
    for name in field_path:
        config = getattr(config, name)
    return config


def environment_for(variable: str, raw: str, cls: type) -> dict[str, str]:
    env: dict[str, str] = {}
    if cls is HubConfig or cls is HubServerConfig:
        # the hub's timers must stay ordered: heartbeat < peer timeout
        env = {"SOCKETLAB_CHAT_HEARTBEAT": "0.5", "SOCKETLAB_CHAT_PEER_TIMEOUT": "100"}
    return {**env, variable: raw}


@pytest.mark.parametrize(("cls", "field_path", "variable", "hint"), SETTINGS)
def test_every_variable_reaches_its_field(
    cls: type, field_path: tuple[str, ...], variable: str, hint: Any
) -> None:
    raw, expected = GOOD[hint]
    config = cls.from_env(environment_for(variable, raw, cls))  # type: ignore[attr-defined]
    assert value_at(config, field_path) == expected
    assert value_at(cls.from_env({}), field_path) == value_at(cls(), field_path)  # type: ignore[attr-defined]


NUMERIC = [case for case in SETTINGS if case.values[3] in BAD]


@pytest.mark.parametrize(("cls", "field_path", "variable", "hint"), NUMERIC)
def test_every_numeric_variable_refuses_a_bad_value_in_one_line(
    cls: type, field_path: tuple[str, ...], variable: str, hint: Any
) -> None:
    raw, reason = BAD[hint]
    with pytest.raises(ConfigError) as caught:
        cls.from_env({variable: raw})  # type: ignore[attr-defined]
    assert str(caught.value) == f"{variable}={raw!r} {reason}"


def test_values_that_do_not_fit_together_are_a_config_error_too() -> None:
    env = {"SOCKETLAB_CHAT_HEARTBEAT": "20", "SOCKETLAB_CHAT_PEER_TIMEOUT": "5"}
    with pytest.raises(ConfigError, match="heartbeat_interval < peer_timeout") as caught:
        HubServerConfig.from_env(env)
    assert "\n" not in str(caught.value)


def test_a_variable_read_by_several_components_has_one_default_and_one_meaning() -> None:
    classes = container_configs()
    assert conflicting_defaults(classes) == {}
    meanings: dict[str, set[str]] = {}
    for cls in classes:
        for row in settings_of(cls):
            meanings.setdefault(row.name, set()).add(row.help)
    assert {name: texts for name, texts in meanings.items() if len(texts) > 1} == {}
    assert all(text.strip() for texts in meanings.values() for text in texts)


def test_the_list_of_config_modules_is_complete() -> None:
    listed = set(container_configs())
    for module in pkgutil.walk_packages([str(PACKAGE)], prefix="socketlab."):
        if not module.name.endswith("__main__"):  # running those is their import
            importlib.import_module(module.name)
    found = {cls for cls in registered_configs() if cls.__module__.startswith("socketlab.")}
    assert found == listed


# Until the server split lands, server.py still reads the environment itself
# (its ServerConfig.from_env); the lead drops it from this list after the merge.
READERS_ALLOWED = {"config.py"}
ENV_READERS = {"env_str", "env_int", "env_float", "getenv", "environ"}


def test_only_the_config_layer_reads_the_environment() -> None:
    offenders = []
    for path in python_files(PACKAGE):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in READERS_ALLOWED:
            continue
        for node in ast.walk(parsed(path)):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.id
                if isinstance(node, ast.Name)
                else None
            )
            if name in ENV_READERS:
                offenders.append(f"{relative}:{node.lineno} {name}")  # type: ignore[attr-defined]
    assert offenders == []


# --- options override the environment ---------------------------------------------------


def test_client_options_override_the_environment_which_overrides_the_default() -> None:
    config = client.LabClientConfig.from_env({"SOCKETLAB_TIMEOUT": "9", "SOCKETLAB_SERVER": "h"})
    parser = client.build_parser(config)
    args = parser.parse_args(["hello"])
    assert (args.timeout, args.host, args.read_timeout) == (9.0, "h", 30.0)
    assert parser.parse_args(["--timeout", "2", "hello"]).timeout == 2.0
    assert parser.parse_args(["hello", "--timeout", "3"]).timeout == 3.0
    assert client.build_parser().parse_args(["hello"]).timeout == 5.0


def test_help_names_the_variable_behind_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        client.build_parser().parse_args(["--help"])
    assert "$SOCKETLAB_READ_TIMEOUT" in capsys.readouterr().out


# --- the exit-code map ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(ConfigError("bad"), 2, id="config"),
        pytest.param(PeerUnavailable("gone"), 1, id="failure"),
        pytest.param(SocketlabError("refused"), 1, id="socketlab-error"),
        pytest.param(KeyboardInterrupt(), 130, id="interrupted"),
    ],
)
def test_exit_code_map(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert socketlab_main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        pytest.param(["client", "hello"], "SOCKETLAB_TIMEOUT", id="client"),
        pytest.param(["udp-send", "--count", "1"], "SOCKETLAB_UDP_SEND_TIMEOUT", id="udp-send"),
        pytest.param(["chat", "--name", "x"], "SOCKETLAB_CHAT_HUB_TIMEOUT", id="chat"),
        pytest.param(["health", "tcp", "h", "1"], "SOCKETLAB_HEALTH_TIMEOUT", id="health"),
        pytest.param(["server"], "SOCKETLAB_FEED_TIMEOUT", id="server"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(
    argv: list[str],
    variable: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, "abc")
    assert socketlab_main(argv) == 2
    assert capsys.readouterr().err == f"socketlab: {variable}='abc' is not a number\n"


def test_a_bad_value_in_a_real_process_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "SOCKETLAB_POLL_INTERVAL": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "socketlab", "rss-poller", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "socketlab: SOCKETLAB_POLL_INTERVAL='abc' is not a number\n"


def test_every_command_is_importable_and_callable() -> None:
    for name, command in COMMANDS.items():
        function = getattr(importlib.import_module(command.module), command.function)
        assert callable(function), name


def test_poller_config_resolves_its_feeds() -> None:
    assert PollerConfig.from_env({"SOCKETLAB_FEED_URLS": "a,b"}).feeds() == ["a", "b"]
