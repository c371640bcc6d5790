"""What a shaped link should produce: loss share, burst lengths, delay quantiles, reorder share.

Pure arithmetic behind ``lab shape --check`` (:mod:`lab.shaping.measure`
compares these with what was measured). The models are the engines' own
(:mod:`socketlab.shaper.models`, netem's meaning):

* Loss chains. Random loss, Gilbert-Elliott and netem's four-state model
  are each a Markov chain whose state decides the chance that the current
  packet is lost. From the chain come, exactly: the long-run share lost, the
  mean and variance of a burst (a run of consecutive losses), and the
  *dispersion* of a loss count (its variance over a binomial's, which bursts
  raise). A round trip is the product of both directions' chains, as if the
  reverse one advanced on every probe; it really advances only on replies,
  which are rarer by the forward loss share, a small error at the losses
  a link is checked with.
* netem's correlated random loss (``loss random P C``) is not a finite
  chain; its figures come from simulating netem's generator with a fixed
  seed (so they do not change from run to run). netem's correlation pulls the
  uniform draw towards 0.5: with P below 50 % it loses fewer than P.
* Delay quantiles: ``max(0, delay + jitter * x(q))`` with ``x`` from the
  distribution's table; packets sent at once by ``reorder`` add a point
  mass at 0. A round trip adds two independent one-way delays: its quantiles
  are taken over a grid of both directions' quantiles (deterministic).
* Reorder: with netem's gap N and share P, the share of packets sent at once
  is ``1 / (N - 1 + 1/P)`` (N-1 certain delays, then a geometric wait).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from lab.shaping.spec import LinkSpec
from socketlab.shaper.models import (
    Distribution,
    FourState,
    GilbertElliott,
    LossModel,
    loss_process,
    standard_quantile,
)

Matrix = tuple[tuple[float, ...], ...]
Vector = tuple[float, ...]

# Figures for netem's correlated loss come from this many simulated packets.
SIMULATED_PACKETS = 200_000
SIMULATION_SEED = 16
# Points per direction when adding two delay distributions.
QUANTILE_GRID = 400
# A chain power this high has forgotten where it started (2**40 packets).
_SQUARINGS = 40


# --------------------------------------------------------------------------- linear algebra


def _matmul(a: Matrix, b: Matrix) -> Matrix:
    columns = list(zip(*b, strict=True))
    return tuple(
        tuple(sum(x * y for x, y in zip(row, col, strict=True)) for col in columns) for row in a
    )


def _vecmat(v: Vector, m: Matrix) -> Vector:
    return tuple(sum(v[i] * m[i][j] for i in range(len(v))) for j in range(len(m[0])))


def _matvec(m: Matrix, v: Vector) -> Vector:
    return tuple(sum(x * y for x, y in zip(row, v, strict=True)) for row in m)


def _normalised(row: Vector) -> Vector:
    total = sum(row)
    return tuple(x / total for x in row) if total > 0 else row


def _identity(n: int) -> Matrix:
    return tuple(tuple(1.0 if i == j else 0.0 for j in range(n)) for i in range(n))


def _inverse(m: Matrix) -> Matrix | None:
    """Gauss-Jordan with partial pivoting; None when (numerically) singular."""
    n = len(m)
    rows = [[*row, *ident] for row, ident in zip(m, _identity(n), strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-13:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        lead = rows[col][col]
        rows[col] = [x / lead for x in rows[col]]
        for r in range(n):
            if r != col and rows[r][col]:
                factor = rows[r][col]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[col], strict=True)]
    return tuple(tuple(row[n:]) for row in rows)


# --------------------------------------------------------------------------- loss chains


@dataclass(frozen=True)
class LossChain:
    """Packet n is in state S_n, lost with chance ``loss[S_n]``; then S_(n+1) ~ ``moves[S_n]``."""

    loss: Vector
    moves: Matrix
    start: Vector

    @property
    def size(self) -> int:
        return len(self.loss)

    def with_extra_loss(self, share: float) -> LossChain:
        """Also lose an independent ``share`` (corruption: the receiver's checksum drops it)."""
        if not share:
            return self
        return LossChain(
            loss=tuple(1.0 - (1.0 - x) * (1.0 - share) for x in self.loss),
            moves=self.moves,
            start=self.start,
        )

    def times(self, other: LossChain) -> LossChain:
        """Both chains side by side; a packet is lost when either loses it."""
        pairs = [(i, j) for i in range(self.size) for j in range(other.size)]
        return LossChain(
            loss=tuple(1.0 - (1.0 - self.loss[i]) * (1.0 - other.loss[j]) for i, j in pairs),
            moves=tuple(
                tuple(self.moves[i][k] * other.moves[j][m] for k, m in pairs) for i, j in pairs
            ),
            start=tuple(self.start[i] * other.start[j] for i, j in pairs),
        )

    def long_run(self) -> Vector:
        """Long-run share of packets in each state, from ``start`` (also for reducible chains).

        The average of two consecutive high powers, because netem's chains
        can have period 2 (state 1 -> 4 -> 1 with p14 = 100 %).
        """
        power = self.moves
        for _ in range(_SQUARINGS):
            # renormalised: rounding would otherwise compound with every squaring
            power = tuple(_normalised(row) for row in _matmul(power, power))
        after = _matmul(power, self.moves)
        ends = _vecmat(self.start, power), _vecmat(self.start, after)
        return tuple((a + b) / 2 for a, b in zip(*ends, strict=True))


def bernoulli_chain(share: float) -> LossChain:
    return LossChain(loss=(share,), moves=((1.0,),), start=(1.0,))


def gilbert_elliott_chain(model: GilbertElliott) -> LossChain:
    """netem's GE: the packet's loss uses the state it finds, which then moves (Good first)."""
    p, r = model.p, model.r
    return LossChain(
        loss=(model.good_loss, model.bad_loss),
        moves=((1.0 - p, p), (r, 1.0 - r)),
        start=(1.0, 0.0),
    )


def four_state_chain(model: FourState) -> LossChain:
    """netem's GI chain. The state that decides a packet is the one it moves to, from state 1."""
    m = model
    moves = (
        (1.0 - m.p13 - m.p14, 0.0, m.p13, m.p14),
        (0.0, 1.0 - m.p23, m.p23, 0.0),
        (m.p31, m.p32, 1.0 - m.p31 - m.p32, 0.0),
        (1.0, 0.0, 0.0, 0.0),
    )
    return LossChain(loss=(0.0, 0.0, 1.0, 1.0), moves=moves, start=moves[0])


def loss_chain(spec: LinkSpec | None) -> LossChain | None:
    """The chain of one direction (corruption included); None for netem's correlated loss."""
    if spec is None:
        return bernoulli_chain(0.0)
    model = spec.effective_loss_model
    if isinstance(model, GilbertElliott):
        chain = gilbert_elliott_chain(model)
    elif isinstance(model, FourState):
        chain = four_state_chain(model)
    elif spec.loss_correlation and spec.loss:
        return None
    else:
        chain = bernoulli_chain(spec.loss)
    return chain.with_extra_loss(spec.corrupt)


@dataclass(frozen=True)
class LossProfile:
    """What a loss process does in the long run.

    ``mean_burst``/``burst_sd``: of runs of consecutive losses (None when no
    run ever starts, inf when one never ends). ``dispersion``: variance of a
    count of losses over the binomial variance with the same share (1 for
    independent loss; bursts make it larger).
    """

    share: float
    mean_burst: float | None
    burst_sd: float | None
    dispersion: float


def chain_profile(chain: LossChain) -> LossProfile:
    """Exact figures from the chain's long-run distribution."""
    pi = chain.long_run()
    ell = chain.loss
    n = chain.size
    share = sum(p * x for p, x in zip(pi, ell, strict=True))
    # dispersion: 1 + 2 * sum_k Cov(L_0, L_k) / Var(L), the sum by the fundamental matrix
    variance = share * (1.0 - share)
    dispersion = 1.0
    if variance > 1e-15:
        fundamental = _inverse(
            tuple(
                tuple((1.0 if i == j else 0.0) - chain.moves[i][j] + pi[j] for j in range(n))
                for i in range(n)
            )
        )
        if fundamental is not None:
            ahead = _matvec(fundamental, ell)
            covariance = sum(pi[i] * ell[i] * (ahead[i] - ell[i]) for i in range(n))
            dispersion = max(0.0, 1.0 + 2.0 * covariance / variance)
    # bursts: where a run starts (kept after a delivered packet), then how long it lasts
    starts = [
        sum(pi[u] * (1.0 - ell[u]) * chain.moves[u][s] for u in range(n)) * ell[s] for s in range(n)
    ]
    total = sum(starts)
    if total <= 1e-15:
        return LossProfile(share=share, mean_burst=None, burst_sd=None, dispersion=dispersion)
    start = tuple(x / total for x in starts)
    staying = tuple(tuple(chain.moves[s][t] * ell[t] for t in range(n)) for s in range(n))
    inverse = _inverse(
        tuple(tuple((1.0 if i == j else 0.0) - staying[i][j] for j in range(n)) for i in range(n))
    )
    if inverse is None:
        return LossProfile(
            share=share, mean_burst=math.inf, burst_sd=math.inf, dispersion=dispersion
        )
    ones = (1.0,) * n
    first = _matvec(inverse, ones)
    mean = sum(a * x for a, x in zip(start, first, strict=True))
    # E[R^2] = a (2 M^2 - M) 1 with M = (I - staying)^-1
    second = _matvec(inverse, first)
    square = sum(a * (2.0 * y - x) for a, x, y in zip(start, first, second, strict=True))
    return LossProfile(
        share=share,
        mean_burst=mean,
        burst_sd=math.sqrt(max(0.0, square - mean * mean)),
        dispersion=dispersion,
    )


@dataclass(frozen=True)
class _LossKey:
    """The loss part of a spec: what the simulation depends on (hashable, for the cache)."""

    share: float
    correlation: float
    model: LossModel | None
    corrupt: float


def _spec_key(spec: LinkSpec | None) -> _LossKey | None:
    if spec is None:
        return None
    return _LossKey(spec.loss, spec.loss_correlation, spec.effective_loss_model, spec.corrupt)


@lru_cache(maxsize=64)
def _simulated(forward: _LossKey | None, reverse: _LossKey | None) -> LossProfile:
    rng = random.Random(SIMULATION_SEED)  # noqa: S311 - a model's figures, not crypto
    processes = []
    extra = []
    for key in (forward, reverse):
        if key is None:
            continue
        processes.append(
            loss_process(share=key.share, correlation=key.correlation, model=key.model, rng=rng)
        )
        extra.append(key.corrupt)
    lost = []
    for _ in range(SIMULATED_PACKETS):
        gone = False
        for process, corrupt in zip(processes, extra, strict=True):
            # every direction draws for every packet, so none skips ahead of the others
            dropped = process is not None and process.lost(rng)
            damaged = bool(corrupt) and rng.random() < corrupt
            gone = gone or dropped or damaged
        lost.append(gone)
    return sequence_profile(lost)


def sequence_profile(lost: Sequence[bool], *, batch: int = 1000) -> LossProfile:
    """The same figures estimated from one loss sequence (dispersion by batch means)."""
    n = len(lost)
    share = sum(lost) / n if n else 0.0
    runs = burst_lengths(lost)
    mean = sum(runs) / len(runs) if runs else None
    sd = math.sqrt(sum((r - mean) ** 2 for r in runs) / len(runs)) if runs and mean else None
    dispersion = 1.0
    batches = [sum(lost[i : i + batch]) for i in range(0, n - batch + 1, batch)]
    variance = share * (1.0 - share)
    if len(batches) > 1 and variance > 0:
        average = sum(batches) / len(batches)
        spread = sum((b - average) ** 2 for b in batches) / (len(batches) - 1)
        dispersion = spread / (batch * variance)
    return LossProfile(share=share, mean_burst=mean, burst_sd=sd, dispersion=dispersion)


def burst_lengths(lost: Sequence[bool]) -> list[int]:
    """Lengths of the runs of consecutive losses, in order."""
    runs: list[int] = []
    current = 0
    for gone in lost:
        if gone:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


def loss_profile(forward: LinkSpec, reverse: LinkSpec | None = None) -> LossProfile:
    """Long-run loss of probes over ``forward`` (and back over ``reverse``, if shaped)."""
    there = loss_chain(forward)
    back = loss_chain(reverse) if reverse is not None else bernoulli_chain(0.0)
    if there is None or back is None:
        return _simulated(_spec_key(forward), _spec_key(reverse))
    return chain_profile(there.times(back) if reverse is not None else there)


def loss_share(spec: LinkSpec | None) -> float:
    """Long-run share one direction loses: dropped, or corrupted (the checksum drops it)."""
    if spec is None:
        return 0.0
    return loss_profile(spec).share


# --------------------------------------------------------------------------- reorder and delay


def immediate_share(spec: LinkSpec) -> float:
    """Share of packets sent at once by netem's ``reorder P gap N`` (``1 / (N - 1 + 1/P)``)."""
    if not spec.reorder:
        return 0.0
    gap = spec.reorder_gap or 1
    return 1.0 / (gap - 1 + 1.0 / spec.reorder)


def _distribution(spec: LinkSpec) -> Distribution:
    return spec.delay_distribution or Distribution.UNIFORM


def one_way_quantile(spec: LinkSpec | None, q: float) -> float:
    """The ``q`` quantile (0 <= q < 1) of the delay ``spec`` adds, in seconds."""
    if spec is None:
        return 0.0
    immediate = immediate_share(spec)
    if q < immediate:
        return 0.0
    level = (q - immediate) / (1.0 - immediate)
    if not spec.jitter:
        return spec.delay
    return max(0.0, spec.delay + spec.jitter * standard_quantile(_distribution(spec), level))


def _spread(spec: LinkSpec | None) -> bool:
    return spec is not None and bool(spec.jitter or spec.reorder)


def added_delay_quantiles(
    forward: LinkSpec, reverse: LinkSpec | None, levels: Sequence[float]
) -> list[float]:
    """Quantiles of the delay added to a round trip (forward plus reverse), in seconds."""
    if not (_spread(forward) and _spread(reverse)):
        # one side is a constant: the sum's quantile is the other's plus it
        fixed, varying = (reverse, forward) if not _spread(reverse) else (forward, reverse)
        base = one_way_quantile(fixed, 0.5) if fixed is not None else 0.0
        return [base + one_way_quantile(varying, q) for q in levels]
    grid = [(i + 0.5) / QUANTILE_GRID for i in range(QUANTILE_GRID)]
    there = [one_way_quantile(forward, u) for u in grid]
    back = [one_way_quantile(reverse, u) for u in grid]
    sums = sorted(a + b for a in there for b in back)
    return [sums[min(len(sums) - 1, max(0, math.ceil(q * len(sums)) - 1))] for q in levels]


def quantile_level(values: Sequence[float], value: float) -> float:
    """Share of sorted ``values`` at or below ``value`` (a sample's empirical CDF)."""
    return bisect.bisect_right(values, value) / len(values) if values else 0.0


def reorder_window(spec: LinkSpec, interval: float) -> int:
    """How many earlier packets are still held when one is sent ``interval`` after each other.

    The shortest delay a delayed packet gets, in whole intervals. An
    immediate packet overtakes if any of those earlier packets was delayed.
    """
    if interval <= 0:
        raise ValueError("the probe interval must be positive")
    shortest = spec.delay
    if spec.jitter:
        shortest = max(0.0, spec.delay + spec.jitter * standard_quantile(_distribution(spec), 0.0))
    return max(0, math.ceil(shortest / interval) - 1)


def overtaking_share(spec: LinkSpec, interval: float) -> float:
    """Expected share of probes (sent ``interval`` apart) that arrive before an earlier one.

    With gap 1, an immediate packet overtakes unless every packet in the
    window before it was immediate too (chance ``P**window``); with a larger
    gap the one before it is always delayed. Only meaningful when jitter
    cannot reorder delayed packets by itself: see :func:`reorder_unclear`.
    """
    window = reorder_window(spec, interval)
    if window == 0:
        return 0.0
    share = immediate_share(spec)
    gap = spec.reorder_gap or 1
    return share if gap > 1 else share * (1.0 - spec.reorder**window)


def reorder_unclear(spec: LinkSpec, interval: float) -> str | None:
    """Why a reorder share cannot be checked with probes ``interval`` apart (None: it can)."""
    if not spec.reorder:
        return "no --reorder asked"
    if reorder_window(spec, interval) == 0:
        return f"probes {interval * 1000:g}ms apart outrun the delay: nothing is overtaken"
    distribution = _distribution(spec)
    width = spec.jitter * (
        standard_quantile(distribution, 1.0) - standard_quantile(distribution, 0.0)
    )
    if width >= interval:
        return "jitter wider than the probe interval reorders delayed packets too"
    return None


def queue_delay(spec: LinkSpec, *, frame_bytes: int) -> float | None:
    """Seconds a full ``--queue-limit`` buffer takes to drain at ``--rate`` (None: no limit)."""
    if spec.queue_limit is None or spec.rate is None:
        return None
    limit = spec.queue_limit
    size = limit.size * frame_bytes if limit.packets else limit.size
    return size * 8 / spec.rate
