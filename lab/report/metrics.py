"""The metrics a ``pcap`` check can test, with units and meanings (no dependencies).

Counts cover both directions of the captured link; RTTs are in milliseconds and
measured from the capture point (see :mod:`lab.report.analysis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, kw_only=True)
class Metric:
    name: str
    unit: str  # "" for plain counts
    meaning: str


PCAP_METRICS: Final[dict[str, Metric]] = {
    metric.name: metric
    for metric in (
        Metric(
            name="tcp.retransmissions",
            unit="",
            meaning="TCP segments that resend sequence space already seen or acknowledged",
        ),
        Metric(
            name="tcp.max_segment",
            unit="bytes",
            meaning="largest TCP payload in one captured segment (GSO/TSO can exceed the MSS)",
        ),
        Metric(name="tcp.rtt_p50", unit="ms", meaning="median TCP round-trip time sample"),
        Metric(name="tcp.rtt_p99", unit="ms", meaning="99th percentile TCP round-trip time"),
        Metric(
            name="tcp.zero_windows",
            unit="",
            meaning="TCP segments advertising a zero receive window",
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
