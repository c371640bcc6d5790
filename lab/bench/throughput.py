"""Throughput arithmetic: the Mathis et al. bound and ratios (targets: ``lab.bench.ceiling``).

Pure: numbers in, numbers out, unit-tested without Docker.
"""

from __future__ import annotations

import math
from typing import Final

# Mathis, Semke, Mahdavi, Ott (1997): a Reno-style TCP losing a share p of its
# segments (periodic loss, no delayed ACKs) averages at most
#     rate <= (MSS / RTT) * C / sqrt(p),   C = sqrt(3/2) ~= 1.22.
# With delayed ACKs (b = 2) C is sqrt(3/4) ~= 0.87; random loss gives similar
# values. It is a model for reference on the plots, not a hard ceiling (CUBIC
# can beat it on long paths).
MATHIS_C: Final = math.sqrt(3 / 2)
# Payload of a full segment: 1500-byte MTU - 20 (IP) - 20 (TCP) - 12 (timestamps).
DEFAULT_MSS: Final = 1448


def mathis_bound(
    *, rtt: float, loss: float, mss: int = DEFAULT_MSS, constant: float = MATHIS_C
) -> float | None:
    """The Mathis bound in bit/s for ``rtt`` seconds and loss share ``loss`` (0..1).

    None when there is no loss (the model gives no bound); ValueError for an RTT
    that is not positive, a share outside (0, 1], or an MSS below 1.
    """
    if not rtt > 0:
        raise ValueError(f"RTT must be positive, not {rtt!r}")
    if not 0 <= loss <= 1:
        raise ValueError(f"loss must be a share between 0 and 1, not {loss!r}")
    if mss < 1:
        raise ValueError(f"MSS must be at least 1 byte, not {mss!r}")
    if loss == 0:
        return None
    return mss * 8 / rtt * constant / math.sqrt(loss)


def ratio(ours: float, reference: float) -> float | None:
    """``ours / reference``; None when the reference measured nothing."""
    if reference <= 0:
        return None
    return ours / reference


def bit_rate(moved: int, seconds: float) -> float:
    """``moved`` bytes over ``seconds`` in bit/s; 0 when no time passed."""
    return moved * 8 / seconds if seconds > 0 else 0.0
