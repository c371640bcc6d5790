"""The verdict loop's command line as data: :class:`ShaperInvocation` to and from argv.

Pure. The controller builds ``socketlab shaper`` + :meth:`ShaperInvocation.argv`
for a helper (``lab.shaping.builders.shaper_command``); the helper turns its
argv back with :func:`parse_invocation`. Values are plain numbers (seconds,
shares 0..1) written with ``repr``, so a round trip is exact; the controller
already did the units. A link with only today's options gives today's flags.

Errors are :class:`ShaperUsageError`, one line naming the flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from socketlab.errors import ConfigError
from socketlab.shaper.core import Impairment
from socketlab.shaper.models import Distribution, loss_model_from_text

# 64-bit seeds: what netem's ``seed`` takes, and plenty for random.Random.
MAX_SEED = 2**64 - 1
MAX_QUEUE_NUMBER = 0xFFFF


class ShaperUsageError(ConfigError):
    """The shaper's command line has a flag or value it cannot use."""


@dataclass(frozen=True, kw_only=True)
class ShaperInvocation:
    """Everything ``socketlab shaper`` needs: which queue, what to do, which seed."""

    queue: int
    impairment: Impairment
    seed: int | None = None

    def argv(self) -> list[str]:
        """``--queue N`` and a flag for every impairment value that is set (then ``--seed``)."""
        argv = ["--queue", str(self.queue)]
        imp = self.impairment
        for field in fields(Impairment):
            value = getattr(imp, field.name)
            if value == getattr(_DEFAULT, field.name):
                continue
            flag = "--" + field.name.replace("_", "-")
            if field.name == "loss_model":
                argv += [flag, value.to_text()]
            elif field.name in {"delay_distribution", "reorder_gap"}:
                argv += [flag, str(value)]
            else:
                argv += [flag, repr(value)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        return argv


_DEFAULT = Impairment()


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ShaperUsageError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ShaperUsageError(f"{flag}: {text!r} is not a finite number")
    return value


def _seconds(flag: str, text: str) -> float:
    value = _number(flag, text)
    if value < 0:
        raise ShaperUsageError(f"{flag}: {text!r} must not be negative (seconds)")
    return value


def _share(flag: str, text: str) -> float:
    value = _number(flag, text)
    if not 0.0 <= value <= 1.0:
        raise ShaperUsageError(f"{flag}: {text!r} is not a share between 0 and 1")
    return value


def _integer(flag: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ShaperUsageError(f"{flag}: {text!r} is not an integer") from None
    if not low <= value <= high:
        raise ShaperUsageError(f"{flag}: {text!r} is outside {low}..{high}")
    return value


def _loss_model(flag: str, text: str) -> Any:
    try:
        return loss_model_from_text(text)
    except ValueError as exc:
        raise ShaperUsageError(f"{flag}: {exc}") from None


def _distribution(flag: str, text: str) -> Distribution:
    try:
        return Distribution(text)
    except ValueError:
        raise ShaperUsageError(
            f"{flag}: {text!r} is not one of {', '.join(Distribution)}"
        ) from None


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "delay": _seconds,
    "jitter": _seconds,
    "loss": _share,
    "duplicate": _share,
    "reorder": _share,
    "corrupt": _share,
    "loss_correlation": _share,
    "loss_model": _loss_model,
    "delay_distribution": _distribution,
    "delay_correlation": _share,
    "reorder_gap": lambda flag, text: _integer(flag, text, 0, 2**31 - 1),
    "slice_delay": _seconds,
}


def parse_invocation(argv: Sequence[str]) -> ShaperInvocation:
    """Read ``--queue N [--flag value]...``; every flag at most once, ``--queue`` required."""
    values: dict[str, Any] = {}
    queue: int | None = None
    seed: int | None = None
    seen: set[str] = set()
    args = list(argv)
    if len(args) % 2:
        raise ShaperUsageError(f"{args[-1]}: expected a value after it")
    for flag, text in zip(args[::2], args[1::2], strict=True):
        if flag in seen:
            raise ShaperUsageError(f"{flag}: given twice")
        seen.add(flag)
        name = flag.removeprefix("--").replace("-", "_")
        if not flag.startswith("--"):
            raise ShaperUsageError(f"{flag!r}: expected --FLAG VALUE pairs")
        if name == "queue":
            queue = _integer(flag, text, 0, MAX_QUEUE_NUMBER)
        elif name == "seed":
            seed = _integer(flag, text, 0, MAX_SEED)
        elif name in _PARSERS:
            values[name] = _PARSERS[name](flag, text)
        else:
            known = ", ".join("--" + n.replace("_", "-") for n in ("queue", *_PARSERS, "seed"))
            raise ShaperUsageError(f"{flag}: unknown flag (known: {known})")
    if queue is None:
        raise ShaperUsageError("--queue: required (the NFQUEUE number)")
    try:
        impairment = Impairment(**values)
    except ValueError as exc:
        raise ShaperUsageError(f"impairment: {exc}") from None
    return ShaperInvocation(queue=queue, impairment=impairment, seed=seed)
