"""Shaping specs: option parsing (``40ms``, ``2%``, ``20mbit``), LinkSpec, profiles.

Pure: no Docker, no subprocess. Units follow ``tc`` where they are unambiguous;
byte-per-second spellings (``mbps``) are refused because half the world reads
them as megabits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from lab.shaping.errors import SpecError
from socketlab.shaper.core import Impairment

PROFILES_FILE = Path(__file__).resolve().parent.parent / "profiles.yaml"

_NUMBER = r"(?P<number>\d+(?:\.\d+)?|\.\d+)"
_DURATION = re.compile(_NUMBER + r"\s*(?P<unit>us|µs|ms|s)", re.IGNORECASE)
_PERCENT = re.compile(_NUMBER + r"\s*%")
_RATE = re.compile(_NUMBER + r"\s*(?P<unit>[a-z]+)", re.IGNORECASE)

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_BYTE_RATE_UNITS = {"bps", "kbps", "mbps", "gbps"}

SHARE_OPTIONS = ("loss", "duplicate", "reorder", "corrupt")
DURATION_OPTIONS = ("delay", "jitter")
OPTIONS = (*DURATION_OPTIONS, *SHARE_OPTIONS, "rate")


def _fullmatch(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    return pattern.fullmatch(text.strip())


def parse_duration(option: str, text: str) -> float:
    """``40ms`` -> 0.04 (seconds). Units: us, ms, s."""
    match = _fullmatch(_DURATION, text)
    if not match:
        raise SpecError(f"--{option}: {text!r} is not a duration (use e.g. 40ms, 1.5s, 250us)")
    return float(match["number"]) * _DURATION_UNITS[match["unit"].lower()]


def parse_percent(option: str, text: str) -> float:
    """``2%`` -> 0.02 (a share). The ``%`` is required so 2 cannot mean 200 %."""
    match = _fullmatch(_PERCENT, text)
    if not match:
        raise SpecError(f"--{option}: {text!r} is not a percentage (use e.g. 2%, 0.5%)")
    share = float(match["number"]) / 100.0
    if share > 1.0:
        raise SpecError(f"--{option}: {text!r} is more than 100%")
    return share


def parse_rate(option: str, text: str) -> int:
    """``20mbit`` -> 20_000_000 (bits per second). Units: bit, kbit, mbit, gbit."""
    match = _fullmatch(_RATE, text)
    unit = match["unit"].lower() if match else ""
    if match and unit in _BYTE_RATE_UNITS:
        raise SpecError(
            f"--{option}: {text!r} is ambiguous (bytes or bits?): write bits, e.g. 20mbit"
        )
    if not match or unit not in _RATE_UNITS:
        raise SpecError(f"--{option}: {text!r} is not a rate (use e.g. 512kbit, 20mbit, 1.5gbit)")
    bits = round(float(match["number"]) * _RATE_UNITS[unit])
    if bits < 8:
        raise SpecError(f"--{option}: {text!r} is too slow to shape (at least 8bit)")
    return bits


def format_duration(seconds: float) -> str:
    """0.04 -> ``40ms``; the inverse of :func:`parse_duration` (to the microsecond)."""
    micros = round(seconds * 1e6)
    if micros % 1000:
        return f"{micros}us"
    if micros % 1_000_000:
        return f"{micros // 1000}ms"
    return f"{micros // 1_000_000}s"


def format_percent(share: float) -> str:
    return f"{share * 100:.6g}%"


def format_rate(bits: int) -> str:
    """20_000_000 -> ``20mbit``: the largest unit that still says the exact number."""
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        text = f"{bits / size:.12g}"
        if bits >= size and round(float(text) * size) == bits:
            return f"{text}{unit}"
    return f"{bits}bit"


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """What to do to one direction of one link (source service -> destination).

    Durations in seconds, shares in 0..1, rate in bit/s (None: unlimited).
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    rate: int | None = None

    def __post_init__(self) -> None:
        for name in DURATION_OPTIONS:
            if getattr(self, name) < 0:
                raise SpecError(f"--{name}: must not be negative")
        for name in SHARE_OPTIONS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SpecError(f"--{name}: must be between 0% and 100%")
        if self.rate is not None and self.rate < 8:
            raise SpecError("--rate: must be at least 8bit")
        if self.reorder and not self.delay:
            # As with netem: reordering means some packets skip a delay; with no
            # delay there is nothing to skip, and silently doing nothing would lie.
            raise SpecError("--reorder: needs a --delay (reordered packets skip the delay)")

    @property
    def impairment(self) -> Impairment:
        """The per-packet part, as the verdict loop takes it."""
        return Impairment(
            delay=self.delay,
            jitter=self.jitter,
            loss=self.loss,
            duplicate=self.duplicate,
            reorder=self.reorder,
            corrupt=self.corrupt,
        )

    @property
    def is_empty(self) -> bool:
        return self.impairment.is_noop and self.rate is None

    def describe(self) -> str:
        """``delay=40ms jitter=5ms loss=2% rate=20mbit``: only what is set; parseable."""
        parts = []
        for name in DURATION_OPTIONS:
            if value := getattr(self, name):
                parts.append(f"{name}={format_duration(value)}")
        for name in SHARE_OPTIONS:
            if value := getattr(self, name):
                parts.append(f"{name}={format_percent(value)}")
        if self.rate is not None:
            parts.append(f"rate={format_rate(self.rate)}")
        return " ".join(parts) or "none"

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """Inverse of :meth:`describe`."""
        if text.strip() in {"", "none"}:
            return cls()
        options: dict[str, str] = {}
        for part in text.split():
            name, sep, value = part.partition("=")
            if not sep:
                raise SpecError(f"{part!r}: expected NAME=VALUE")
            options[name] = value
        return spec_from_options(options)


def spec_from_options(
    options: Mapping[str, Any], *, base: LinkSpec | None = None, where: str = ""
) -> LinkSpec:
    """Build a LinkSpec from option strings (``{"delay": "40ms"}``), over ``base``.

    Options that are None are left as in ``base``; unknown names are an error.
    """
    prefix = f"{where}: " if where else ""
    values: dict[str, Any] = {}
    for name, raw in options.items():
        if raw is None:
            continue
        if name not in OPTIONS:
            raise SpecError(
                f"{prefix}unknown shaping option {name!r} (known: {', '.join(OPTIONS)})"
            )
        text = str(raw)
        try:
            if name in DURATION_OPTIONS:
                values[name] = parse_duration(name, text)
            elif name in SHARE_OPTIONS:
                values[name] = parse_percent(name, text)
            else:
                values[name] = parse_rate(name, text)
        except SpecError as exc:
            raise SpecError(f"{prefix}{exc}") from None
    try:
        return replace(base or LinkSpec(), **values)
    except SpecError as exc:
        raise SpecError(f"{prefix}{exc}") from None


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, LinkSpec]:
    """Read the named profiles (``lan``, ``3g``, ...) from the profiles file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read shaping profiles from {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise SpecError(f"{path}: expected a top-level 'profiles:' mapping")
    profiles = {}
    for name, options in data["profiles"].items():
        if not isinstance(options, dict):
            raise SpecError(f"{path}: profile {name!r} must be a mapping of options")
        profiles[str(name)] = spec_from_options(options, where=f"{path.name}: profile {name!r}")
    return profiles


def resolve_spec(
    *,
    profile: str | None = None,
    options: Mapping[str, Any] | None = None,
    profiles: Mapping[str, LinkSpec] | None = None,
) -> LinkSpec:
    """A profile (if named) with explicit options laid over it."""
    base = LinkSpec()
    if profile is not None:
        known = profiles if profiles is not None else load_profiles()
        if profile not in known:
            raise SpecError(
                f"--profile: no profile {profile!r} (known: {', '.join(sorted(known))})"
            )
        base = known[profile]
    return spec_from_options(options or {}, base=base)


SPEC_FIELDS = tuple(f.name for f in fields(LinkSpec))
