"""Benchmarks and sweeps: ``lab bench`` (ours vs iperf3) and ``lab sweep`` (grid, plots, HTML).

Modules: ``throughput`` (Mathis bound, ratios, targets; pure), ``grid`` (sweep
grid parsing; pure), ``records`` (frozen result records and their JSON; pure),
``report`` (plots and the self-contained HTML report from records),
``runner`` (the I/O: containers, iperf3, shaping), ``cli`` (subcommands).
"""

from lab.bench.errors import BenchError, GridError

__all__ = ["BenchError", "GridError"]
