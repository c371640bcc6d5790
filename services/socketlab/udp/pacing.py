"""Send pacing for the UDP sender (sans-IO: pure arithmetic on a monotonic clock).

At high rates a sleep per datagram is far too coarse (a sleep overshoots by
tens of microseconds), so the sender paces in batches: it compares how many
datagrams are *due* by now, counted from one fixed start on a monotonic
clock, with how many it has sent, sends the difference in one burst (capped),
and sleeps only until the next datagram's deadline. Errors do not accumulate:
every deadline is computed from the start, never from the previous send.
With ``batch`` (a sender handing the kernel several datagrams per call), a
burst waits until that many are due (or all that are left), so each call
carries a full batch; a datagram then leaves at most ``batch / rate`` late.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BURST = 1024


@dataclass(frozen=True, kw_only=True)
class Pacing:
    """``rate`` datagrams per second (0 means as fast as possible), ``count`` in all (0: no end)."""

    rate: float
    count: int
    batch: int = 1

    def due(self, elapsed: float) -> int:
        """How many datagrams should have gone ``elapsed`` seconds after the first."""
        if self.rate <= 0:
            wanted = self.count if self.count else 1 << 62
        else:
            wanted = int(elapsed * self.rate) + 1  # the first one goes at once
        return min(wanted, self.count) if self.count else wanted

    def _least(self, sent: int) -> int:
        """The fewest datagrams worth a burst after ``sent``: a batch, or what is left."""
        return max(1, min(self.batch, self.count - sent) if self.count else self.batch)

    def burst(self, *, sent: int, elapsed: float) -> int:
        """How many to send now (0: wait until :meth:`deadline`)."""
        ready = self.due(elapsed) - sent
        return 0 if ready < self._least(sent) else min(ready, MAX_BURST)

    def deadline(self, sent: int) -> float:
        """Seconds after the start at which the next burst is due (datagram number
        ``sent + 1`` without batches)."""
        return (sent + self._least(sent) - 1) / self.rate if self.rate > 0 else 0.0

    def finished(self, sent: int) -> bool:
        return bool(self.count) and sent >= self.count
