"""Configuration: ports and hosts, and typed settings read once from the environment.

Every tunable of the lab (controller and containers alike) is a field of a
frozen ``...Config`` dataclass, declared with :func:`env_field`::

    @env_config
    @dataclass(frozen=True, kw_only=True)
    class PollerConfig(EnvConfig):
        interval: float = env_field("SOCKETLAB_POLL_INTERVAL", 30.0, "seconds between polls")

``PollerConfig.from_env()`` reads the environment **once**, at the entry
point, and the object is passed down; nothing reads ``os.environ`` at import
time. A value that does not parse is a :class:`ConfigError` whose message is
the one line a user sees (``SOCKETLAB_POLL_INTERVAL='abc' is not a number``).
Unset or empty variables keep the field's default.

:func:`env_config` records each class, so :func:`settings_table` can print the
README's table of every variable from the classes themselves.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from socketlab.errors import ConfigError

LAB_PROTOCOL_PORT = 4571
CHAT_PORT = 4572
FEED_HTTP_PORT = 8080
UDP_PORT = 37020
UDP_STATUS_PORT = 37021

SERVER_HOST = "server"
UDP_LISTENER_HOST = "udp-listener"

ENV_METADATA = "socketlab.env"

C = TypeVar("C", bound=type)


@dataclass(frozen=True, kw_only=True)
class EnvSetting:
    """One environment variable behind a config field."""

    name: str
    help: str


@dataclass(frozen=True, kw_only=True)
class SettingDoc:
    """A row of the settings table: variable, default as text, meaning, owner class."""

    name: str
    default: str
    help: str
    owner: str


def env_field(name: str, default: Any, help: str) -> Any:
    """A dataclass field read from environment variable ``name`` (``default`` when unset)."""
    if not name.startswith("SOCKETLAB_") and name not in _FOREIGN_VARIABLES:
        raise ValueError(f"{name}: lab settings are named SOCKETLAB_*")
    metadata = {ENV_METADATA: EnvSetting(name=name, help=help)}
    if isinstance(default, list | dict | set):
        raise TypeError(f"{name}: use a tuple or a frozen value as the default")
    return dataclasses.field(default=default, metadata=metadata)


# Variables of other tools that a config may still read (documented, not ours).
_FOREIGN_VARIABLES = frozenset({"DOCKER_HOST"})

_REGISTRY: list[type] = []


def env_config(cls: C) -> C:
    """Class decorator: list ``cls`` in :func:`registered_configs` (for the docs table)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    if cls not in _REGISTRY:
        _REGISTRY.append(cls)
    return cls


def registered_configs() -> tuple[type, ...]:
    return tuple(_REGISTRY)


# The modules that declare the container side's config classes; a unit test
# checks that importing every socketlab module finds no others.
CONTAINER_CONFIG_MODULES: tuple[str, ...] = (
    "socketlab.chat.client",
    "socketlab.chat.core",
    "socketlab.chat.hub",
    "socketlab.chat.swarm",
    "socketlab.client.cli",
    "socketlab.health",
    "socketlab.naive",
    "socketlab.rss.feed_server",
    "socketlab.rss.poller",
    "socketlab.rss.publish",
    "socketlab.sampledata",
    "socketlab.server",
    "socketlab.shaper.loop",
    "socketlab.shaper.probe",
    "socketlab.supervisor",
    "socketlab.udp.compare",
    "socketlab.udp.listener",
    "socketlab.udp.sender",
    "socketlab.udp.status",
    "socketlab.udp.tcp_sink",
)


def container_configs() -> tuple[type, ...]:
    """Every config class of the in-container package (for the settings table)."""
    for module in CONTAINER_CONFIG_MODULES:
        importlib.import_module(module)
    return tuple(cls for cls in _REGISTRY if cls.__module__.startswith("socketlab."))


class EnvConfig:
    """Mixin giving a config dataclass :meth:`from_env`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build from ``environ`` (default ``os.environ``); ``overrides`` win over both."""
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
            if spec.name in overrides or not spec.init:
                continue
            hint = hints[spec.name]
            setting = spec.metadata.get(ENV_METADATA)
            if setting is not None:
                raw = env.get(setting.name, "")
                if raw.strip():
                    values[spec.name] = parse_value(setting.name, raw.strip(), hint)
            elif isinstance(hint, type) and issubclass(hint, EnvConfig):
                values[spec.name] = hint.from_env(env)
        try:
            return cls(**values, **overrides)
        except ValueError as exc:  # a class's own check of how its values fit together
            raise ConfigError(f"{cls.__name__}: {exc}") from exc


# --------------------------------------------------------------------------- parsing

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(name: str, raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    return value


_SCALARS: dict[Any, Callable[[str, str], Any]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: lambda _name, raw: raw,
    Path: lambda _name, raw: Path(raw),
    bytes: lambda _name, raw: raw.encode(),
}


def parse_value(name: str, raw: str, hint: Any) -> Any:
    """Turn ``raw`` into a value of type ``hint``; :class:`ConfigError` names ``name``."""
    origin = typing.get_origin(hint)
    if origin in {typing.Union, types.UnionType}:
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"{name}: unions other than X | None are not settings")
        return parse_value(name, raw, members[0])
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{name}: only tuple[X, ...] settings are supported")
        items = [item.strip() for item in raw.split(",") if item.strip()]
        return tuple(parse_value(name, item, args[0]) for item in items)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(map(str, choices))}")
        return raw
    parser = _SCALARS.get(hint)
    if parser is None:
        raise TypeError(f"{name}: no parser for settings of type {hint!r}")
    return parser(name, raw)


# --------------------------------------------------------------------------- docs


def _default_text(value: Any) -> str:
    if value is None or value in {"", b"", ()}:
        return "(unset)"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_of(cls: type) -> list[SettingDoc]:
    """The documented settings of one config class (nested configs included)."""
    hints = typing.get_type_hints(cls)
    rows: list[SettingDoc] = []
    for spec in dataclasses.fields(cls):
        setting = spec.metadata.get(ENV_METADATA)
        hint = hints[spec.name]
        if setting is not None:
            default = spec.default
            if default is dataclasses.MISSING and spec.default_factory is not dataclasses.MISSING:
                default = spec.default_factory()
            rows.append(
                SettingDoc(
                    name=setting.name,
                    default=_default_text(default),
                    help=setting.help,
                    owner=cls.__name__,
                )
            )
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rows.extend(settings_of(hint))
    return rows


def settings_table(classes: Iterable[type]) -> str:
    """A Markdown table of every variable of ``classes``, one row per name, sorted.

    A variable read by several components (``SOCKETLAB_SERVER``) appears once;
    its defaults must agree, which :func:`conflicting_defaults` checks.
    """
    rows: dict[str, SettingDoc] = {}
    # Sorted by owner, so the row kept for a shared variable never depends on import order.
    for cls in sorted(classes, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        for row in settings_of(cls):
            rows.setdefault(row.name, row)
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name in sorted(rows):
        row = rows[name]
        help_text = row.help.replace("|", "\\|")
        lines.append(f"| `{name}` | `{row.default}` | {help_text} |")
    return "\n".join(lines) + "\n"


def conflicting_defaults(classes: Iterable[type]) -> dict[str, set[str]]:
    """Variables whose default differs between the classes that read them."""
    seen: dict[str, set[str]] = {}
    for cls in classes:
        for row in settings_of(cls):
            seen.setdefault(row.name, set()).add(row.default)
    return {name: defaults for name, defaults in seen.items() if len(defaults) > 1}
