"""Benchmarks and sweeps: ``lab bench`` (ours vs iperf3) and ``lab sweep`` (grid, plots, HTML).

Modules, lowest layer first; each imports only from the layers before its own, but
the sans-IO modules also import each other (``tests/unit/test_lab_imports.py``):

* the sans-IO halves and records: ``throughput`` (bit rates, Mathis bound, ratios),
  ``ceiling`` (the ceiling, ratios, targets), ``grid`` (sweep grid parsing), ``records``
  (frozen result records and their JSON), ``tool_output`` (what the tools print, parsed),
  ``idle`` (given a lab, it samples its idle CPU), ``capacity``, ``engine``, and ``report``
  (plots and the self-contained HTML report from records);
* the lab's state and storage: ``lab_state`` (readiness, shaping in force, RTT, load,
  versions), ``storage`` (the server's data root, the client's destination, scratch folders);
* the measurements: ``iperf3_runs``, ``client_probes`` (SHA-256, write+fsync),
  ``peer`` (socat | tee | openssl), ``transfers`` (ours: fetch, naive, udp, tcp-vs-udp);
* the runners: ``bench_runner`` (``lab bench``), ``sweep_runner`` (``lab sweep``),
  ``engine_runner`` and ``capacity_runner``; then ``cli`` (the subcommands).
"""

from lab.bench.errors import BenchError, GridError

__all__ = ["BenchError", "GridError"]
