"""Impairment models of the verdict loop, with netem's meaning; pure (no I/O, no clock).

Each model mirrors a part of Linux's ``sch_netem`` (read in the kernel's
``net/sched/sch_netem.c`` and iproute2's ``tc/q_netem.c`` and ``netem/*.c``)
so that a link means the same on both engines:

* **Random loss with correlation** (``loss random P C``). netem draws each
  packet's uniform number as ``u = (1 - C) * fresh + C * previous``
  (``get_crandom``) and loses the packet when ``u < P``. This is netem's own
  "approximation" of correlation: it also pulls ``u`` towards 0.5, so for
  P below 50 % the share lost falls below P as C rises (``lab.shaping.expected``
  computes by how much). :class:`CorrelatedUniform` is that generator.
* **Gilbert-Elliott** (``loss gemodel p r 1-h 1-k``): two states. A packet
  is lost with the loss probability of the state it finds (1-k in Good, 1-h
  in Bad); then the state moves (Good to Bad with p, Bad to Good with r).
  :meth:`GilbertElliott.from_mean` derives p and r from a mean loss and a
  mean burst length; the derivation is in its docstring.
* **Four-state Markov loss** (``loss state p13 p31 p32 p23 p14``): netem's
  "GI" model. The chain moves first; the packet is lost when the new state
  is 3 (burst loss) or 4 (isolated loss).
* **Delay distributions** (``delay D J distribution X``): delay is
  ``D + J * x`` where ``x`` comes from a standardised table: ``uniform`` is
  netem's default without a table (``x`` uniform in -1..1, so J is the
  half-width), ``normal`` is N(0, 1), ``pareto`` is netem's table
  ``((1-u)^(-1/3) - 1.5) * 4/3`` (Pareto a=3 moved to mean 0), and
  ``paretonormal`` is ``(normal(u) + 3 * pareto(u)) / 4`` at the same ``u``
  (what ``netem/paretonormal.c`` tabulates). Tables are 16-bit values
  scaled by 8192, so ``x`` is clipped to +/-4. Negative delays leave at once.
* **Delay correlation** (``delay D J C``): netem documents it as the share
  by which the previous delay biases the next, but takes the correlated
  value modulo the jitter range (or the table size), which in practice
  leaves successive delays uncorrelated. The NFQUEUE engine keeps the asked
  distribution exactly and correlates successive delays with coefficient
  about C (a Gaussian copula: a latent AR(1) series ``z`` with coefficient C,
  ``u = Phi(z)``), so ``lab.shaping`` refuses the option on netem.
* **Reordering with a gap** (``reorder P gap N``): after a packet that was
  sent at once, the next N-1 packets are delayed; from then on each packet
  is sent at once with probability P (which restarts the count), else it is
  delayed. ``gap 1`` (netem's default) is plain ``reorder P``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist
from typing import Protocol

# netem's distribution tables hold int16 values scaled by NETEM_DIST_SCALE (8192).
TABLE_LIMIT = 32767 / 8192
# netem's Pareto table: shape a = 3, shifted by its mean 1.5 and scaled by 4/3.
PARETO_SHAPE = 3.0
_PARETO_SHIFT = 1.5
_PARETO_SCALE = 4.0 / 3.0
_NORMAL = NormalDist()
# The smallest uniform draw we feed a quantile function (random() may return 0.0).
_TINY = 2.0**-53


class Distribution(StrEnum):
    """netem's delay distributions (``distribution X``); uniform is its default."""

    UNIFORM = "uniform"
    NORMAL = "normal"
    PARETO = "pareto"
    PARETONORMAL = "paretonormal"


def _pareto_table(u: float) -> float:
    return (float((1.0 - u) ** (-1.0 / PARETO_SHAPE)) - _PARETO_SHIFT) * _PARETO_SCALE


def standard_quantile(distribution: Distribution, u: float) -> float:
    """The standardised delay offset ``x`` at uniform level ``u`` (0 <= u < 1), as netem's tables.

    Delay is ``delay + jitter * x``. Monotonic in ``u``, so it is also the
    distribution's quantile function (``lab.shaping.expected`` uses it).
    """
    u = min(max(u, _TINY), 1.0 - _TINY)
    if distribution is Distribution.UNIFORM:
        return 2.0 * u - 1.0
    normal = _NORMAL.inv_cdf(u)
    if distribution is Distribution.NORMAL:
        return max(-TABLE_LIMIT, min(TABLE_LIMIT, normal))
    pareto = min(TABLE_LIMIT, _pareto_table(u))
    if distribution is Distribution.PARETO:
        return pareto
    return max(-TABLE_LIMIT, min(TABLE_LIMIT, (normal + 3.0 * pareto) / 4.0))


# --------------------------------------------------------------------------- loss models


def _check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a share between 0 and 1 (got {value!r})")


@dataclass(frozen=True, slots=True, kw_only=True)
class GilbertElliott:
    """netem's ``loss gemodel p r 1-h 1-k``; all shares 0..1.

    ``p``: Good -> Bad per packet; ``r``: Bad -> Good; ``bad_loss`` (1-h):
    loss probability in Bad; ``good_loss`` (1-k): loss probability in Good.
    """

    p: float
    r: float
    bad_loss: float = 1.0
    good_loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p", "r", "bad_loss", "good_loss"):
            _check_share(name, getattr(self, name))

    @classmethod
    def from_mean(cls, loss: float, burst: float) -> GilbertElliott:
        """Simple Gilbert model with mean loss ``loss`` and mean burst ``burst`` packets.

        Derivation: every packet in Bad is lost and none in Good (1-h = 1,
        1-k = 0), so a burst of losses is exactly one stay in Bad. A stay in
        Bad lasts k packets with probability (1-r)^(k-1) r, whose mean is
        1/r, so ``r = 1/burst``. The stationary share of packets in Bad is
        p / (p + r), which must equal ``loss``: ``p = loss * r / (1 - loss)``.
        It needs ``burst >= 1`` and ``p <= 1``, i.e.
        ``burst >= loss / (1 - loss)``. ``burst = 1 / (1 - loss)`` gives
        ``p = loss, r = 1 - loss``: independent loss, netem's own default r.
        """
        if not 0.0 < loss < 1.0:
            raise ValueError(f"loss must be above 0 and below 1 (got {loss!r})")
        if burst < 1.0:
            raise ValueError(f"burst must be at least 1 packet (got {burst!r})")
        r = 1.0 / burst
        p = loss * r / (1.0 - loss)
        if p > 1.0 + 1e-9:  # beyond rounding of the shortest allowed burst
            raise ValueError(
                f"a mean loss of {loss:.6g} needs bursts of at least {loss / (1.0 - loss):.6g}"
            )
        return cls(p=min(p, 1.0), r=r)

    def to_text(self) -> str:
        """``gemodel:p,r,bad_loss,good_loss`` (shares, exact), as the shaper's argv carries it."""
        return "gemodel:" + ",".join(
            repr(v) for v in (self.p, self.r, self.bad_loss, self.good_loss)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FourState:
    """netem's ``loss state p13 p31 p32 p23 p14`` (the GI model); shares 0..1.

    States: 1 good reception, 2 good reception within a burst, 3 burst
    loss, 4 isolated loss. ``p13 + p14`` and ``p31 + p32`` are at most 1.
    """

    p13: float
    p31: float
    p32: float = 0.0
    p23: float = 1.0
    p14: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p13", "p31", "p32", "p23", "p14"):
            _check_share(name, getattr(self, name))
        if self.p13 + self.p14 > 1.0 + 1e-12:
            raise ValueError("p13 + p14 must be at most 1 (both leave state 1)")
        if self.p31 + self.p32 > 1.0 + 1e-12:
            raise ValueError("p31 + p32 must be at most 1 (both leave state 3)")

    def to_text(self) -> str:
        values = (self.p13, self.p31, self.p32, self.p23, self.p14)
        return "state:" + ",".join(repr(v) for v in values)


LossModel = GilbertElliott | FourState


def loss_model_from_text(text: str) -> LossModel:
    """Inverse of ``to_text``: ``gemodel:...`` (4 shares) or ``state:...`` (5 shares)."""
    kind, sep, rest = text.partition(":")
    try:
        values = [float(part) for part in rest.split(",")] if sep else []
    except ValueError as exc:
        raise ValueError(f"{text!r}: the parameters must be numbers") from exc
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{text!r}: the parameters must be numbers")
    if kind == "gemodel" and len(values) == 4:
        return GilbertElliott(p=values[0], r=values[1], bad_loss=values[2], good_loss=values[3])
    if kind == "state" and len(values) == 5:
        p13, p31, p32, p23, p14 = values
        return FourState(p13=p13, p31=p31, p32=p32, p23=p23, p14=p14)
    raise ValueError(f"{text!r}: expected gemodel:p,r,1-h,1-k or state:p13,p31,p32,p23,p14")


# --------------------------------------------------------------------------- generators


class CorrelatedUniform:
    """netem's ``get_crandom``: ``u = (1 - rho) * fresh + rho * previous`` (rho 0: plain)."""

    def __init__(self, rho: float, rng: random.Random) -> None:
        self.rho = rho
        # netem starts from a random value too (init_crandom); ours comes from the seed.
        self.last = rng.random() if rho else 0.0

    def next(self, rng: random.Random) -> float:
        fresh = rng.random()
        if not self.rho:
            return fresh
        self.last = (1.0 - self.rho) * fresh + self.rho * self.last
        return self.last


class LossProcess(Protocol):
    """Decides, packet by packet, whether the next packet is lost."""

    def lost(self, rng: random.Random) -> bool: ...


class RandomLoss:
    """``loss random P C``: lost when netem's correlated uniform falls below P."""

    def __init__(self, share: float, correlation: float, rng: random.Random) -> None:
        self.share = share
        self._uniform = CorrelatedUniform(correlation, rng)

    def lost(self, rng: random.Random) -> bool:
        # one draw per packet, as today's engine: `rng.random() < share` when uncorrelated
        return self._uniform.next(rng) < self.share


_GOOD, _BAD = 0, 1


class GilbertElliottLoss:
    """The two-state chain, drawing in netem's order: transition, then loss (old state's)."""

    def __init__(self, model: GilbertElliott) -> None:
        self.model = model
        self.state = _GOOD

    def lost(self, rng: random.Random) -> bool:
        m = self.model
        if self.state == _GOOD:
            if rng.random() < m.p:
                self.state = _BAD
            return rng.random() < m.good_loss
        if rng.random() < m.r:
            self.state = _GOOD
        return rng.random() < m.bad_loss


# netem's state numbers, kept so the code reads like loss_4state()
_TX_GAP, _TX_BURST, _LOST_BURST, _LOST_GAP = 1, 2, 3, 4


class FourStateLoss:
    """The GI chain, as netem's ``loss_4state``: one draw moves the chain; 3 and 4 lose."""

    def __init__(self, model: FourState) -> None:
        self.model = model
        self.state = _TX_GAP

    def lost(self, rng: random.Random) -> bool:
        m, u = self.model, rng.random()
        if self.state == _TX_GAP:
            if u < m.p14:
                self.state = _LOST_GAP
            elif u < m.p13 + m.p14:
                self.state = _LOST_BURST
        elif self.state == _TX_BURST:
            if u < m.p23:
                self.state = _LOST_BURST
        elif self.state == _LOST_BURST:
            if u < m.p32:
                self.state = _TX_BURST
            elif u < m.p31 + m.p32:
                self.state = _TX_GAP
        else:  # an isolated loss is always followed by a good packet
            self.state = _TX_GAP
        return self.state in (_LOST_BURST, _LOST_GAP)


def loss_process(
    *, share: float, correlation: float, model: LossModel | None, rng: random.Random
) -> LossProcess | None:
    """The loss generator for a link, or None when it loses nothing."""
    if isinstance(model, GilbertElliott):
        return GilbertElliottLoss(model)
    if isinstance(model, FourState):
        return FourStateLoss(model)
    if share:
        return RandomLoss(share, correlation, rng)
    return None


class DelaySampler:
    """Per-packet delay: ``delay + jitter * x`` with ``x`` from the distribution (may be < 0)."""

    def __init__(
        self,
        *,
        delay: float,
        jitter: float,
        distribution: Distribution,
        correlation: float,
        rng: random.Random,
    ) -> None:
        self.delay = delay
        self.jitter = jitter
        self.distribution = distribution
        self.correlation = correlation
        self._plain = distribution is Distribution.UNIFORM and not correlation
        self._scale = math.sqrt(1.0 - correlation * correlation)
        self._z = _NORMAL.inv_cdf(max(rng.random(), _TINY)) if jitter and correlation else 0.0

    def sample(self, rng: random.Random) -> float:
        if not self.jitter:
            return self.delay
        if self._plain:
            # today's draw, kept so existing seeds keep their meaning
            return self.delay + rng.uniform(-self.jitter, self.jitter)
        if self.correlation:
            fresh = _NORMAL.inv_cdf(max(rng.random(), _TINY))
            self._z = self.correlation * self._z + self._scale * fresh
            u = _NORMAL.cdf(self._z)
        else:
            u = rng.random()
        return self.delay + self.jitter * standard_quantile(self.distribution, u)


class ReorderGate:
    """netem's reorder with gap: which packets skip the delay and leave at once."""

    def __init__(self, share: float, gap: int) -> None:
        self.share = share
        self.gap = max(1, gap)
        self.counter = 0  # packets delayed since the last one sent at once

    def immediate(self, rng: random.Random) -> bool:
        if not self.share:
            return False
        if self.counter < self.gap - 1 or rng.random() >= self.share:
            self.counter += 1
            return False
        self.counter = 0
        return True
