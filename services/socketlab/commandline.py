"""What every ``socketlab COMMAND`` parser shares: its preamble and options backed by settings.

A command reads its ``...Config`` once (``XConfig.from_env()``), then builds its
parser from that object: an option's default is the setting's value, so a
command-line option overrides the environment, which overrides the built-in
default; and ``--help`` names the variable behind each option.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from socketlab.config import ENV_METADATA, EnvSetting

_OPTION_TYPES: dict[Any, Any] = {int: int, float: float, str: str, Path: Path}


def command_parser(
    command: str, description: str | None, *, raw: bool = False
) -> argparse.ArgumentParser:
    """The parser of ``socketlab COMMAND``; ``raw`` keeps the description's layout."""
    return argparse.ArgumentParser(
        prog=f"socketlab {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter,
    )


def env_setting(config_type: type, name: str) -> EnvSetting:
    """The environment variable behind field ``name`` of a config class."""
    for spec in dataclasses.fields(config_type):
        if spec.name == name and ENV_METADATA in spec.metadata:
            setting: EnvSetting = spec.metadata[ENV_METADATA]
            return setting
    raise KeyError(f"{config_type.__name__}.{name} is not an environment setting")


def add_setting(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *flags: str,
    config: object,
    name: str,
    **kwargs: Any,
) -> None:
    """Add an option whose default is ``config.<name>``; its help names the variable.

    The option's type follows the field's (int, float, str, Path) unless
    ``type=`` is given; other keyword arguments go to ``add_argument``.
    """
    config_type = type(config)
    setting = env_setting(config_type, name)
    if "type" not in kwargs:
        hint = typing.get_type_hints(config_type)[name]
        if hint not in _OPTION_TYPES:
            raise TypeError(f"{config_type.__name__}.{name}: give type= for {hint!r}")
        kwargs["type"] = _OPTION_TYPES[hint]
    value = getattr(config, name)
    kwargs.setdefault("default", value)
    shown = "unset" if value in (None, "", b"") else str(value).replace("%", "%%")
    kwargs["help"] = f"{kwargs.get('help') or setting.help} (default {shown}, ${setting.name})"
    parser.add_argument(*flags, **kwargs)
