"""Throughput arithmetic: the Mathis et al. bound, ratios to iperf3, the issue's targets.

Pure: numbers in, numbers out, unit-tested without Docker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True, kw_only=True)
class Target:
    """A ratio the issue asks for under a condition (reported, never asserted)."""

    measurement: str
    condition: str
    minimum: float

    def met(self, value: float | None) -> bool | None:
        """True/False against ``minimum``; None when there is no value to judge."""
        return None if value is None else value >= self.minimum


# The targets: our verified transfer against iperf3 on the same link.
TARGETS: Final = (
    Target(measurement="fetch", condition="none", minimum=0.6),
    Target(measurement="fetch", condition="delay=20ms loss=1%", minimum=0.9),
)


def target_for(measurement: str, condition: str) -> Target | None:
    """The target for ``measurement`` under ``condition`` (a LinkSpec description)."""
    return next(
        (t for t in TARGETS if (t.measurement, t.condition) == (measurement, condition)), None
    )
