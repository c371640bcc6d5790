"""Shaping specs: option parsing (``40ms``, ``2%``, ``20mbit``, ``64kb``), LinkSpec, profiles.

Pure: no Docker, no subprocess. Units follow ``tc`` where they are unambiguous;
byte-per-second spellings (``mbps``) are refused because half the world reads
them as megabits.

Options are named with underscores here (``loss_burst``, the YAML key) and
spelled with hyphens on the command line and in a spec's text form
(``--loss-burst``, ``loss-burst=3``); :func:`option_flag` converts. Every
contradiction is a one-line :class:`SpecError` naming the flag and what it
accepts. The text form (:meth:`LinkSpec.describe`, kept in helper labels)
parses back to the same spec, and labels written before the newer options
existed still parse.
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
from socketlab.shaper.models import Distribution, FourState, GilbertElliott, LossModel

PROFILES_FILE = Path(__file__).resolve().parent.parent / "profiles.yaml"

_NUMBER = r"(?P<number>\d+(?:\.\d+)?|\.\d+)"
_DURATION = re.compile(_NUMBER + r"\s*(?P<unit>us|µs|ms|s)", re.IGNORECASE)
_PERCENT = re.compile(_NUMBER + r"\s*%")
_RATE = re.compile(_NUMBER + r"\s*(?P<unit>[a-z]+)", re.IGNORECASE)

_DURATION_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}
_BYTE_RATE_UNITS = {"bps", "kbps", "mbps", "gbps"}

_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>b|kb|mb|p)", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2}  # tc's: k and m are powers of 1024

SHARE_OPTIONS = ("loss", "duplicate", "reorder", "corrupt")
DURATION_OPTIONS = ("delay", "jitter")
# The options `lab shape` has flags for today; SPEC_OPTIONS adds the newer ones.
OPTIONS = (*DURATION_OPTIONS, *SHARE_OPTIONS, "rate")
CORRELATION_OPTIONS = ("loss_correlation", "delay_correlation")
# Slicing (Toxiproxy's slicer, on real packets): a clamped TCP MSS cuts messages into
# small segments, and a gap between the segments makes each arrive on its own.
SLICING_OPTIONS = ("mss", "slice_delay")
SPEC_OPTIONS = (
    *OPTIONS,
    "loss_burst",
    "loss_model",
    "loss_correlation",
    "delay_distribution",
    "delay_correlation",
    "reorder_gap",
    "queue_limit",
    "seed",
    *SLICING_OPTIONS,
)
# One line each, for --help and docs (plain text: argparse needs % doubled).
OPTION_HELP: Mapping[str, str] = {
    "delay": "added one-way delay, e.g. 40ms",
    "jitter": "variation of the delay, e.g. 5ms (uniform: +/- jitter; other distributions: sigma)",
    "loss": "share of packets dropped, e.g. 2%",
    "duplicate": "share of packets sent twice, e.g. 1%",
    "reorder": "share of packets that skip the delay (needs --delay), e.g. 10%",
    "corrupt": "share of packets with one flipped bit, e.g. 0.1%",
    "rate": "rate limit in bits per second, e.g. 20mbit",
    "loss_burst": "with --loss: Gilbert-Elliott loss with this mean burst, in packets, e.g. 3",
    "loss_model": "netem's loss model: gemodel:p,r,1-h,1-k or state:p13,p31,p32,p23,p14 "
    "(percentages; trailing ones optional), e.g. gemodel:1%,30%,100%,0%",
    "loss_correlation": "with --loss: netem's correlation of successive losses, e.g. 25%",
    "delay_distribution": "with --delay and --jitter: uniform, normal, pareto or paretonormal",
    "delay_correlation": "with --jitter: correlation of successive delays, e.g. 25% "
    "(nfqueue engine only)",
    "reorder_gap": "with --reorder: delay N-1 packets after each reordered one (netem's gap)",
    "queue_limit": "with --rate: the bottleneck's buffer, bytes or packets, e.g. 64kb, 100p",
    "seed": "seed of the engine's random decisions (same seed, same packets: same verdicts)",
    "mss": "clamp the TCP MSS of the link's connections to N bytes, so messages arrive in "
    "many small segments, e.g. 88",
    "slice_delay": "space the link's packets (its segments) at least this far apart, so a "
    "reader gets a message piece by piece, e.g. 5ms",
}
MAX_LOSS_BURST = 1_000_000  # packets
MAX_REORDER_GAP = 1_000_000  # packets
MIN_QUEUE_BYTES = 1514  # one full-size Ethernet frame: less would drop every such frame
MAX_QUEUE_BYTES = 256 * 1024**2
MAX_QUEUE_PACKETS = 1_000_000
MAX_SEED = 2**64 - 1  # netem's seed is 64-bit
# Linux raises an advertised MSS below 48 bytes to 48 (net.ipv4.tcp_min_snd_mss); an
# MSS is a 16-bit option.
MIN_MSS = 48
MAX_MSS = 65535
MAX_SLICE_DELAY = 10.0  # seconds between two segments: beyond that no transfer ends


def option_flag(name: str) -> str:
    """``loss_burst`` -> ``--loss-burst``."""
    return "--" + name.replace("_", "-")


def _option_name(name: str) -> str:
    return name.replace("-", "_")


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


def format_percent(share: float, *, digits: int = 6) -> str:
    return f"{share * 100:.{digits}g}%"


def format_rate(bits: int) -> str:
    """20_000_000 -> ``20mbit``: the largest unit that still says the exact number."""
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        text = f"{bits / size:.12g}"
        if bits >= size and round(float(text) * size) == bits:
            return f"{text}{unit}"
    return f"{bits}bit"


def parse_burst(option: str, text: str) -> float:
    """``3`` -> 3.0 (a mean burst length in packets, at least 1)."""
    try:
        value = float(text)
    except ValueError:
        raise SpecError(
            f"--{option}: {text!r} is not a number of packets (use e.g. 3, 2.5)"
        ) from None
    if not 1.0 <= value <= MAX_LOSS_BURST:
        raise SpecError(f"--{option}: {text!r} must be between 1 and {MAX_LOSS_BURST} packets")
    return value


def parse_count(option: str, text: str, *, low: int, high: int, what: str) -> int:
    """A whole number in ``low..high`` (``what`` names its unit in the error)."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise SpecError(f"--{option}: {text!r} is not a whole number of {what}") from None
    if not low <= value <= high:
        raise SpecError(f"--{option}: {text!r} must be between {low} and {high} {what}")
    return value


_LOSS_MODEL_ARITY = {"gemodel": 4, "state": 5}


def parse_loss_model(option: str, text: str) -> LossModel:
    """``gemodel:1%,30%,100%,0%`` or ``state:...`` -> a model; omitted tails take netem's defaults.

    netem's defaults (iproute2 ``q_netem.c``): gemodel r = 1 - p, 1-h = 100 %,
    1-k = 0 %; state p31 = 1 - p13, p32 = 0, p23 = 100 %, p14 = 0.
    """
    kind, _, rest = text.strip().partition(":")
    usage = "use gemodel:p,r,1-h,1-k or state:p13,p31,p32,p23,p14 in %, e.g. gemodel:1%,30%"
    if kind not in _LOSS_MODEL_ARITY or not rest:
        raise SpecError(f"--{option}: {text!r} is not a loss model ({usage})")
    parts = rest.split(",")
    if len(parts) > _LOSS_MODEL_ARITY[kind]:
        raise SpecError(
            f"--{option}: {kind} takes at most {_LOSS_MODEL_ARITY[kind]} values ({usage})"
        )
    values = [parse_percent(option, part) for part in parts]
    try:
        if kind == "gemodel":
            p = values[0]
            r, bad, good = (*values[1:], *(1.0 - p, 1.0, 0.0)[len(values) - 1 :])
            return GilbertElliott(p=p, r=r, bad_loss=bad, good_loss=good)
        p13 = values[0]
        p31, p32, p23, p14 = (*values[1:], *(1.0 - p13, 0.0, 1.0, 0.0)[len(values) - 1 :])
        return FourState(p13=p13, p31=p31, p32=p32, p23=p23, p14=p14)
    except ValueError as exc:
        raise SpecError(f"--{option}: {exc}") from None


def format_loss_model(model: LossModel) -> str:
    """Inverse of :func:`parse_loss_model` (every value written out)."""
    values: tuple[float, ...]
    if isinstance(model, GilbertElliott):
        kind, values = "gemodel", (model.p, model.r, model.bad_loss, model.good_loss)
    else:
        kind = "state"
        values = (model.p13, model.p31, model.p32, model.p23, model.p14)
    return f"{kind}:" + ",".join(format_percent(v, digits=12) for v in values)


def parse_distribution(option: str, text: str) -> Distribution:
    try:
        return Distribution(text.strip().lower())
    except ValueError:
        raise SpecError(
            f"--{option}: {text!r} is not a distribution (one of: {', '.join(Distribution)})"
        ) from None


@dataclass(frozen=True)
class QueueLimit:
    """A bottleneck buffer: ``size`` bytes (bfifo) or ``size`` packets (pfifo)."""

    size: int
    packets: bool = False

    def __str__(self) -> str:
        if self.packets:
            return f"{self.size}p"
        for unit in ("mb", "kb"):
            if self.size % _SIZE_UNITS[unit] == 0:
                return f"{self.size // _SIZE_UNITS[unit]}{unit}"
        return f"{self.size}b"


def parse_queue_limit(option: str, text: str) -> QueueLimit:
    """``64kb`` -> 65536 bytes, ``100p`` -> 100 packets (tc's units: kb = 1024 bytes)."""
    match = _fullmatch(_SIZE, text)
    if not match:
        raise SpecError(
            f"--{option}: {text!r} is not a queue size (bytes: 1514b, 64kb, 1mb; packets: 100p)"
        )
    number, unit = int(match["number"]), match["unit"].lower()
    if unit == "p":
        if not 1 <= number <= MAX_QUEUE_PACKETS:
            raise SpecError(f"--{option}: {text!r} must be between 1p and {MAX_QUEUE_PACKETS}p")
        return QueueLimit(number, packets=True)
    size = number * _SIZE_UNITS[unit]
    if not MIN_QUEUE_BYTES <= size <= MAX_QUEUE_BYTES:
        raise SpecError(
            f"--{option}: {text!r} must be between {MIN_QUEUE_BYTES}b (one full frame) and 256mb"
        )
    return QueueLimit(size)


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    """What to do to one direction of one link (source service -> destination).

    Durations in seconds, shares in 0..1, rate in bit/s (None: unlimited).
    ``loss`` with ``loss_burst`` is Gilbert-Elliott loss (see
    :meth:`GilbertElliott.from_mean`); ``loss_model`` is netem's explicit
    form and replaces ``loss``. ``delay_distribution`` None means not asked
    (uniform, netem's default). ``seed`` None: the engine picks one.
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    rate: int | None = None
    loss_burst: float | None = None
    loss_model: LossModel | None = None
    loss_correlation: float = 0.0
    delay_distribution: Distribution | None = None
    delay_correlation: float = 0.0
    reorder_gap: int | None = None
    queue_limit: QueueLimit | None = None
    seed: int | None = None
    mss: int | None = None
    slice_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in DURATION_OPTIONS:
            if getattr(self, name) < 0:
                raise SpecError(f"--{name}: must not be negative")
        for name in (*SHARE_OPTIONS, *CORRELATION_OPTIONS):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SpecError(f"{option_flag(name)}: must be between 0% and 100%")
        if self.rate is not None and self.rate < 8:
            raise SpecError("--rate: must be at least 8bit")
        if self.reorder and not self.delay:
            # As with netem: reordering means some packets skip a delay; with no
            # delay there is nothing to skip, and silently doing nothing would lie.
            raise SpecError("--reorder: needs a --delay (reordered packets skip the delay)")
        self._check_loss()
        self._check_delay()
        if self.reorder_gap is not None:
            if not 1 <= self.reorder_gap <= MAX_REORDER_GAP:
                raise SpecError(f"--reorder-gap: must be between 1 and {MAX_REORDER_GAP} packets")
            if not self.reorder:
                raise SpecError(
                    "--reorder-gap: needs --reorder (the chance, after each gap, to skip the delay)"
                )
        if self.queue_limit is not None and self.rate is None:
            raise SpecError("--queue-limit: needs --rate (a queue fills only behind a bottleneck)")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise SpecError(f"--seed: must be between 0 and {MAX_SEED}")
        self._check_slicing()

    def _check_slicing(self) -> None:
        if self.mss is not None and not MIN_MSS <= self.mss <= MAX_MSS:
            raise SpecError(f"--mss: must be between {MIN_MSS} and {MAX_MSS} bytes")
        if not 0.0 <= self.slice_delay <= MAX_SLICE_DELAY:
            raise SpecError(f"--slice-delay: must be between 0 and {MAX_SLICE_DELAY:g}s")

    def _check_loss(self) -> None:
        if self.loss_model is not None:
            if not isinstance(self.loss_model, GilbertElliott | FourState):
                raise SpecError(f"--loss-model: {self.loss_model!r} is not a loss model")
            clash = [
                option_flag(name)
                for name in ("loss", "loss_burst", "loss_correlation")
                if getattr(self, name)
            ]
            if clash:
                raise SpecError(
                    f"--loss-model: replaces {', '.join(clash)} (give one way of losing packets)"
                )
        if self.loss_burst is not None:
            if not self.loss:
                raise SpecError("--loss-burst: needs --loss (the mean loss the bursts make up)")
            if self.loss >= 1.0:
                raise SpecError(
                    "--loss-burst: --loss must be below 100% (else nothing gets through)"
                )
            if not 1.0 <= self.loss_burst <= MAX_LOSS_BURST:
                raise SpecError(f"--loss-burst: must be between 1 and {MAX_LOSS_BURST} packets")
            shortest = self.loss / (1.0 - self.loss)
            if self.loss_burst < shortest * (1.0 - 1e-9):  # rounding in the text form
                raise SpecError(
                    f"--loss-burst: with --loss {format_percent(self.loss)} the mean burst must "
                    f"be at least {shortest:.3g} packets"
                )
            if self.loss_correlation:
                raise SpecError(
                    "--loss-correlation: does not combine with --loss-burst "
                    "(Gilbert-Elliott loss has its own memory)"
                )
        if self.loss_correlation and not self.loss:
            raise SpecError("--loss-correlation: needs --loss (the share it correlates)")

    def _check_delay(self) -> None:
        if self.delay_distribution is not None:
            if not isinstance(self.delay_distribution, Distribution):
                raise SpecError(
                    f"--delay-distribution: one of {', '.join(Distribution)}, "
                    f"not {self.delay_distribution!r}"
                )
            if not self.jitter:
                raise SpecError(
                    "--delay-distribution: needs --jitter (the spread the distribution shapes)"
                )
            if not self.delay:
                raise SpecError("--delay-distribution: needs --delay (the mean it spreads around)")
        if self.delay_correlation and not self.jitter:
            raise SpecError("--delay-correlation: needs --jitter (the variation it correlates)")

    @property
    def gilbert_elliott(self) -> GilbertElliott | None:
        """The Gilbert-Elliott model behind ``loss`` + ``loss_burst``, if that is the loss."""
        if self.loss_burst is None:
            return None
        return GilbertElliott.from_mean(self.loss, self.loss_burst)

    @property
    def effective_loss_model(self) -> LossModel | None:
        """The loss chain in force: explicit, derived from the burst, or None (random loss)."""
        return self.loss_model or self.gilbert_elliott

    @property
    def impairment(self) -> Impairment:
        """The per-packet part, as the verdict loop takes it."""
        model = self.effective_loss_model
        return Impairment(
            delay=self.delay,
            jitter=self.jitter,
            loss=0.0 if model is not None else self.loss,
            duplicate=self.duplicate,
            reorder=self.reorder,
            corrupt=self.corrupt,
            loss_correlation=self.loss_correlation,
            loss_model=model,
            delay_distribution=self.delay_distribution or Distribution.UNIFORM,
            delay_correlation=self.delay_correlation,
            reorder_gap=self.reorder_gap or 0,
            slice_delay=self.slice_delay,
        )

    @property
    def is_empty(self) -> bool:
        return self.impairment.is_noop and self.rate is None and self.mss is None

    def describe(self) -> str:
        """``delay=40ms jitter=5ms loss=2% rate=20mbit``: only what is set; parseable."""
        parts = []
        for name in _DESCRIBE_ORDER:
            value = getattr(self, name)
            if value is None or (value == 0 and name not in {"seed"}):
                continue
            parts.append(f"{name.replace('_', '-')}={_FORMATTERS[name](value)}")
        return " ".join(parts) or "none"

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """Inverse of :meth:`describe` (also reads labels written before the newer options)."""
        if text.strip() in {"", "none"}:
            return cls()
        options: dict[str, str] = {}
        for part in text.split():
            name, sep, value = part.partition("=")
            if not sep:
                raise SpecError(f"{part!r}: expected NAME=VALUE")
            options[name] = value
        return spec_from_options(options)


_DESCRIBE_ORDER = (
    "delay",
    "jitter",
    "delay_distribution",
    "delay_correlation",
    "loss",
    "loss_burst",
    "loss_correlation",
    "loss_model",
    "duplicate",
    "reorder",
    "reorder_gap",
    "corrupt",
    "rate",
    "queue_limit",
    "mss",
    "slice_delay",
    "seed",
)
_FORMATTERS: dict[str, Any] = {
    **dict.fromkeys(DURATION_OPTIONS, format_duration),
    **dict.fromkeys(SHARE_OPTIONS, format_percent),
    **dict.fromkeys(CORRELATION_OPTIONS, format_percent),
    "rate": format_rate,
    "loss_burst": lambda burst: f"{burst:.12g}",
    "loss_model": format_loss_model,
    "delay_distribution": str,
    "reorder_gap": str,
    "queue_limit": str,
    "seed": str,
    "mss": str,
    "slice_delay": format_duration,
}


_PARSERS: Mapping[str, Any] = {
    **dict.fromkeys(DURATION_OPTIONS, parse_duration),
    **dict.fromkeys((*SHARE_OPTIONS, *CORRELATION_OPTIONS), parse_percent),
    "rate": parse_rate,
    "loss_burst": parse_burst,
    "loss_model": parse_loss_model,
    "delay_distribution": parse_distribution,
    "reorder_gap": lambda flag, text: parse_count(
        flag, text, low=1, high=MAX_REORDER_GAP, what="packets"
    ),
    "queue_limit": parse_queue_limit,
    "seed": lambda flag, text: parse_count(flag, text, low=0, high=MAX_SEED, what="(a seed)"),
    "mss": lambda flag, text: parse_count(flag, text, low=MIN_MSS, high=MAX_MSS, what="bytes"),
    "slice_delay": parse_duration,
}


def _parse_option(name: str, text: str) -> Any:
    return _PARSERS[name](name.replace("_", "-"), text)


# An explicit option replaces the profile's options it cannot be combined with.
_REPLACES: Mapping[str, tuple[str, ...]] = {
    "loss_model": ("loss", "loss_burst", "loss_correlation"),
    "loss": ("loss_model",),
    "loss_burst": ("loss_model", "loss_correlation"),
    "loss_correlation": ("loss_model", "loss_burst"),
}
# An explicit zero also drops the base's options that only qualify it (--loss 0% on
# a bursty profile turns loss off instead of leaving a burst with nothing to burst).
_QUALIFIERS: Mapping[str, tuple[str, ...]] = {
    "loss": ("loss_burst", "loss_correlation"),
    "jitter": ("delay_distribution", "delay_correlation"),
    "delay": ("delay_distribution",),
    "reorder": ("reorder_gap",),
}
_CLEARED: Mapping[str, Any] = {
    "loss": 0.0,
    "loss_burst": None,
    "loss_correlation": 0.0,
    "loss_model": None,
    "delay_distribution": None,
    "delay_correlation": 0.0,
    "reorder_gap": None,
}


def spec_from_options(
    options: Mapping[str, Any], *, base: LinkSpec | None = None, where: str = ""
) -> LinkSpec:
    """Build a LinkSpec from option strings (``{"delay": "40ms"}``), over ``base``.

    Names may use ``_`` or ``-`` (``loss_burst``, ``loss-burst``). Options
    that are None are left as in ``base``; unknown names are an error. An
    explicit loss option drops the base's loss options it cannot combine
    with (``--loss-model`` over a profile's ``loss``), and an explicit zero
    drops what only qualified it (``--jitter 0ms`` drops the distribution).
    """
    prefix = f"{where}: " if where else ""
    values: dict[str, Any] = {}
    for raw_name, raw in options.items():
        if raw is None:
            continue
        name = _option_name(str(raw_name))
        if name not in SPEC_OPTIONS:
            known = ", ".join(n.replace("_", "-") for n in SPEC_OPTIONS)
            raise SpecError(f"{prefix}unknown shaping option {raw_name!r} (known: {known})")
        try:
            values[name] = _parse_option(name, str(raw))
        except SpecError as exc:
            raise SpecError(f"{prefix}{exc}") from None
    replaced = [other for name in values for other in _REPLACES.get(name, ())]
    replaced += [
        other for name, value in values.items() if value == 0 for other in _QUALIFIERS.get(name, ())
    ]
    cleared = {other: _CLEARED[other] for other in replaced if other not in values}
    try:
        return replace(base or LinkSpec(), **{**cleared, **values})
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
