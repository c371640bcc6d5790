"""Sweep grids: ``--loss 0,1,2,5,10 --delay 0,20,80`` -> the conditions to run.

Pure. Loss values are percentages (``2`` or ``2%``), delays milliseconds
(``20``, ``20ms`` or ``0.02s``). Every mistake names the option and the value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from lab.bench.errors import GridError
from lab.shaping.spec import LinkSpec

MAX_POINTS: Final = 100
_NUMBER: Final = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_LOSS: Final = re.compile(rf"(?P<number>{_NUMBER})\s*%?")
_DELAY: Final = re.compile(rf"(?P<number>{_NUMBER})\s*(?P<unit>ms|s)?", re.IGNORECASE)


def _items(option: str, text: str, example: str) -> list[str]:
    if not text.strip():
        raise GridError(f"{option}: give at least one value, e.g. {option} {example}")
    items = [item.strip() for item in text.split(",")]
    for position, item in enumerate(items, start=1):
        if not item:
            raise GridError(f"{option}: empty value at position {position} in {text!r}")
    return items


def _number(option: str, item: str, match: re.Match[str] | None, what: str) -> float:
    if match is None:
        raise GridError(f"{option}: {item!r} is not {what}")
    value = float(match["number"])
    if not math.isfinite(value):  # pragma: no cover - the pattern only admits digits
        raise GridError(f"{option}: {item!r} is not a finite number")
    if value < 0:
        raise GridError(f"{option}: {item!r} is negative")
    return value


def _no_repeats(option: str, values: list[float], items: list[str]) -> tuple[float, ...]:
    seen: dict[float, str] = {}
    for value, item in zip(values, items, strict=True):
        if value in seen:
            raise GridError(f"{option}: {item!r} repeats {seen[value]!r}")
        seen[value] = item
    return tuple(sorted(values))


def parse_losses(text: str, *, option: str = "--loss") -> tuple[float, ...]:
    """``"0,1,2.5%"`` -> (0.0, 0.01, 0.025): loss shares, sorted, each below 100 %."""
    items = _items(option, text, "0,1,2,5,10")
    values = []
    for item in items:
        percent = _number(option, item, _LOSS.fullmatch(item), "a percentage (e.g. 2 or 2%)")
        if percent >= 100:
            raise GridError(f"{option}: {item!r}: at 100% loss nothing gets through")
        values.append(percent / 100)
    return _no_repeats(option, values, items)


def parse_delays(text: str, *, option: str = "--delay") -> tuple[float, ...]:
    """``"0,20,0.08s"`` -> (0.0, 0.02, 0.08): one-way delays in seconds, sorted."""
    items = _items(option, text, "0,20,80")
    values = []
    for item in items:
        match = _DELAY.fullmatch(item)
        value = _number(option, item, match, "a delay in milliseconds (e.g. 20 or 20ms)")
        unit = (match["unit"] or "ms").lower() if match else "ms"
        values.append(value if unit == "s" else value / 1000)
    return _no_repeats(option, values, items)


@dataclass(frozen=True, kw_only=True)
class GridPoint:
    """One condition of a sweep: a one-way delay (s) and a loss share."""

    delay: float
    loss: float

    @property
    def spec(self) -> LinkSpec:
        return LinkSpec(delay=self.delay, loss=self.loss)

    def describe(self) -> str:
        return self.spec.describe()


@dataclass(frozen=True, kw_only=True)
class Grid:
    """Loss shares x delays (seconds), each sorted and without repeats."""

    losses: tuple[float, ...]
    delays: tuple[float, ...]

    @classmethod
    def parse(cls, *, loss: str, delay: str) -> Grid:
        """Both options at once; GridError when either is wrong or the grid is too big."""
        grid = cls(losses=parse_losses(loss), delays=parse_delays(delay))
        size = len(grid.losses) * len(grid.delays)
        if size > MAX_POINTS:
            raise GridError(
                f"the grid has {size} points ({len(grid.losses)} losses x "
                f"{len(grid.delays)} delays); at most {MAX_POINTS}"
            )
        return grid

    def points(self) -> list[GridPoint]:
        """Delay-major: every loss at the first delay, then the next delay."""
        return [GridPoint(delay=d, loss=p) for d in self.delays for p in self.losses]
