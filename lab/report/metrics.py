"""The metrics a ``pcap`` check can test, with units, meanings and capture points.

Counts cover both directions of the captured link; RTTs are in milliseconds and
measured from the capture point (see :mod:`lab.report.analysis`).

Where a link ``[from, to]`` is captured for a metric (:mod:`lab.scenario.capture`):

* ``sent``: in ``from``'s namespace, on its interfaces. TCP's own repairs are
  plainest there: a resent segment covers bytes the capture already saw (the
  NFQUEUE engine drops at ``to``'s ingress, after this tap), or fills a hole a
  round trip after the data above it left (netem drops before it). Seen from the
  receiver, the same repair looks like a hole filled a little under an RTT after
  the data above it arrived, which the analysis may call reordering.
* ``delivered``: in ``to``'s namespace, after its ingress shaping. A lost datagram
  is a gap only there (both engines drop before ``to``'s application, but the
  NFQUEUE engine after every interface tap), and the round trip includes both
  directions' delay under either engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str
    unit: str  # "" for plain counts
    meaning: str
    point: str = "delivered"  # where its link is captured: "sent" or "delivered"


PCAP_METRICS: Final[dict[str, Metric]] = {
    metric.name: metric
    for metric in (
        Metric(
            name="tcp.retransmissions",
            unit="",
            meaning="TCP segments that resend sequence space already seen or acknowledged",
            point="sent",
        ),
        Metric(
            name="tcp.max_segment",
            unit="bytes",
            meaning="largest TCP payload in one captured segment (GSO/TSO can exceed the MSS)",
            point="sent",
        ),
        Metric(name="tcp.rtt_p50", unit="ms", meaning="median TCP round-trip time sample"),
        Metric(name="tcp.rtt_p99", unit="ms", meaning="99th percentile TCP round-trip time"),
        Metric(
            name="tcp.zero_windows",
            unit="",
            meaning="TCP segments advertising a zero receive window",
            point="sent",
        ),
        Metric(
            name="udp.lost",
            unit="",
            meaning="sequence numbers of the lab's UDP datagrams missing from the capture",
        ),
        Metric(
            name="udp.reordered",
            unit="",
            meaning="lab UDP datagrams that arrived after a higher sequence number",
        ),
        Metric(name="bytes", unit="bytes", meaning="IP bytes captured, both directions"),
    )
}

METRIC_NAMES: Final = tuple(PCAP_METRICS)
CAPTURE_POINTS: Final = ("sent", "delivered")


def capture_point(name: str) -> str:
    """Where a metric's link is captured (module docstring); ``delivered`` if unknown."""
    metric = PCAP_METRICS.get(name)
    return metric.point if metric is not None else "delivered"


def format_value(name: str, value: float | None) -> str:
    """``10.4 ms``, ``12``; ``None`` reads as "no value"."""
    if value is None:
        return "no value"
    metric = PCAP_METRICS.get(name)
    unit = f" {metric.unit}" if metric is not None and metric.unit else ""
    if isinstance(value, int) or value.is_integer():
        return f"{value:.0f}{unit}"
    return f"{value:.3f}".rstrip("0").rstrip(".") + unit


def format_metric(name: str, value: float | None) -> str:
    """``tcp.rtt_p50 = 10.4 ms``; ``None`` reads as "no value in the capture"."""
    if value is None:
        return f"{name}: no value in the capture"
    return f"{name} = {format_value(name, value)}"
