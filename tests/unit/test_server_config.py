"""``ServerConfig``: the same variables and defaults as before, read once, one-line errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from socketlab import server
from socketlab.config import registered_configs, settings_of
from socketlab.errors import ConfigError
from socketlab.server import ServerConfig

VARIABLES = {
    "SOCKETLAB_PORT": "4571",
    "SOCKETLAB_DATA_ROOT": "/srv/socketlab/data",
    "SOCKETLAB_PICKLE_KEY": "(unset)",
    "SOCKETLAB_PICKLE_KEY_FILE": "/run/secrets/socketlab/pickle-key",  # issue 20
    "SOCKETLAB_MAX_PICKLE": "65536",
    "SOCKETLAB_MAX_CONNECTIONS": "256",
    "SOCKETLAB_MAX_PER_PEER": "64",  # issue 20
    "SOCKETLAB_HEADER_TIMEOUT": "10",
    "SOCKETLAB_STALL_TIMEOUT": "15",
    "SOCKETLAB_IDLE_TIMEOUT": "60",
    "SOCKETLAB_MIN_RATE": "4096",
    "SOCKETLAB_MAX_HEADER": "16384",
    "SOCKETLAB_MAX_CONTENT": "1048576",
}


def test_every_variable_is_documented_with_its_default() -> None:
    rows = {row.name: row for row in settings_of(ServerConfig)}
    assert {name: row.default for name, row in rows.items()} == VARIABLES
    assert all(row.help and "\n" not in row.help for row in rows.values())
    assert ServerConfig in registered_configs()


def test_defaults_when_the_environment_says_nothing() -> None:
    config = ServerConfig.from_env({})
    assert config == ServerConfig()
    assert config.pickle_key is None
    assert config.data_root == Path("/srv/socketlab/data")
    assert (config.host, config.poll_interval, config.max_stall) == ("0.0.0.0", 0.5, 60.0)


def test_every_variable_is_read() -> None:
    config = ServerConfig.from_env(
        {
            "SOCKETLAB_PORT": "5000",
            "SOCKETLAB_DATA_ROOT": "/data",
            "SOCKETLAB_PICKLE_KEY": "s3cret",
            "SOCKETLAB_MAX_PICKLE": "100",
            "SOCKETLAB_MAX_CONNECTIONS": "3",
            "SOCKETLAB_HEADER_TIMEOUT": "1.5",
            "SOCKETLAB_STALL_TIMEOUT": "2.5",
            "SOCKETLAB_IDLE_TIMEOUT": "3.5",
            "SOCKETLAB_MIN_RATE": "10",
            "SOCKETLAB_MAX_HEADER": "2048",
            "SOCKETLAB_MAX_CONTENT": "4096",
        }
    )
    assert config == ServerConfig(
        port=5000,
        data_root=Path("/data"),
        pickle_key=b"s3cret",
        max_pickle=100,
        max_connections=3,
        header_timeout=1.5,
        stall_timeout=2.5,
        idle_timeout=3.5,
        min_rate=10.0,
        max_header=2048,
        max_content=4096,
    )
    limits = config.limits()
    assert (limits.max_header, limits.default_max_content) == (2048, 4096)
    assert limits.content_cap("application/x-python-pickle") == 100
    deadlines = config.deadlines()
    assert (deadlines.header_timeout, deadlines.stall_timeout) == (1.5, 2.5)
    assert (deadlines.idle_timeout, deadlines.min_rate) == (3.5, 10.0)


def test_an_empty_pickle_key_disables_pickle() -> None:
    assert ServerConfig.from_env({"SOCKETLAB_PICKLE_KEY": ""}).pickle_key is None


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        pytest.param(
            "SOCKETLAB_PORT", "http", "SOCKETLAB_PORT='http' is not an integer", id="port"
        ),
        pytest.param(
            "SOCKETLAB_IDLE_TIMEOUT",
            "soon",
            "SOCKETLAB_IDLE_TIMEOUT='soon' is not a number",
            id="t",
        ),
        pytest.param("SOCKETLAB_MIN_RATE", "inf", "is not a finite number", id="inf"),
    ],
)
def test_bad_values_are_one_line_config_errors(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        ServerConfig.from_env({name: raw})
    assert "\n" not in str(caught.value)


def test_serve_reads_the_environment_when_called_not_on_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOCKETLAB_MAX_CONNECTIONS", "many")
    with pytest.raises(ConfigError, match="SOCKETLAB_MAX_CONNECTIONS='many'"):
        server.serve(threading.Event())
