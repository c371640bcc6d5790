"""The typed settings layer: parsing, defaults, one-line errors, the docs table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from socketlab.config import (
    EnvConfig,
    conflicting_defaults,
    env_config,
    env_field,
    settings_table,
)
from socketlab.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Inner(EnvConfig):
    port: int = env_field("SOCKETLAB_T_PORT", 4571, "a port")


@dataclass(frozen=True, kw_only=True)
class Outer(EnvConfig):
    timeout: float = env_field("SOCKETLAB_T_TIMEOUT", 5.0, "seconds | to wait")
    name: str = env_field("SOCKETLAB_T_NAME", "server", "a host")
    verbose: bool = env_field("SOCKETLAB_T_VERBOSE", False, "log more")
    root: Path = env_field("SOCKETLAB_T_ROOT", Path("/srv"), "a folder")
    key: bytes | None = env_field("SOCKETLAB_T_KEY", None, "a secret")
    urls: tuple[str, ...] = env_field("SOCKETLAB_T_URLS", ("a",), "a list")
    inner: Inner = field(default_factory=Inner)
    not_a_setting: int = 3


def test_defaults_when_unset_or_blank() -> None:
    config = Outer.from_env({"SOCKETLAB_T_TIMEOUT": "  "})
    assert config == Outer()
    assert config.inner.port == 4571


def test_every_type_parses() -> None:
    config = Outer.from_env(
        {
            "SOCKETLAB_T_TIMEOUT": "2.5",
            "SOCKETLAB_T_NAME": "other",
            "SOCKETLAB_T_VERBOSE": "yes",
            "SOCKETLAB_T_ROOT": "/data",
            "SOCKETLAB_T_KEY": "k3y",
            "SOCKETLAB_T_URLS": "x, y,,z",
            "SOCKETLAB_T_PORT": "99",
        }
    )
    assert config.timeout == 2.5
    assert config.name == "other"
    assert config.verbose is True
    assert config.root == Path("/data")
    assert config.key == b"k3y"
    assert config.urls == ("x", "y", "z")
    assert config.inner.port == 99


def test_overrides_win_over_environment() -> None:
    config = Outer.from_env({"SOCKETLAB_T_TIMEOUT": "abc"}, timeout=1.0)
    assert config.timeout == 1.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param(
            {"SOCKETLAB_T_TIMEOUT": "abc"}, "SOCKETLAB_T_TIMEOUT='abc' is not a number", id="float"
        ),
        pytest.param({"SOCKETLAB_T_TIMEOUT": "nan"}, "is not a finite number", id="nan"),
        pytest.param(
            {"SOCKETLAB_T_PORT": "4.5"}, "SOCKETLAB_T_PORT='4.5' is not an integer", id="int"
        ),
        pytest.param({"SOCKETLAB_T_VERBOSE": "maybe"}, "is not a boolean", id="bool"),
    ],
)
def test_bad_values_are_one_line_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Outer.from_env(env)
    assert "\n" not in str(caught.value)


def test_settings_must_be_named_socketlab() -> None:
    with pytest.raises(ValueError, match="SOCKETLAB_"):
        env_field("TIMEOUT", 1.0, "no prefix")


def test_registry_and_table() -> None:
    env_config(Outer)
    table = settings_table([Outer])
    assert "| `SOCKETLAB_T_PORT` | `4571` | a port |" in table
    assert "| `SOCKETLAB_T_KEY` | `(unset)` | a secret |" in table
    assert "seconds \\| to wait" in table  # pipes escaped
    assert table.index("SOCKETLAB_T_KEY") < table.index("SOCKETLAB_T_VERBOSE")  # sorted


def test_conflicting_defaults_are_found() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Other(EnvConfig):
        port: int = env_field("SOCKETLAB_T_PORT", 1, "a port")

    assert conflicting_defaults([Inner, Other]) == {"SOCKETLAB_T_PORT": {"4571", "1"}}
    assert conflicting_defaults([Inner, Outer]) == {}
