"""iperf3 as the bench runs it, read into Measurements (named as in :mod:`lab.bench.ceiling`):

* **iperf3 TCP**: ``iperf3 -s -1`` in a netkit helper joined to the server's
  namespace, ``iperf3 -c SERVER -R -J`` in one joined to the client's, so the
  data flows server -> client like our file transfer;
* **iperf3 UDP**: the same payload, datagram size and rate as our
  :func:`lab.bench.transfers.udp`, from the client to the udp-listener.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lab import iperf3 as iperf3_tool
from lab.bench.errors import BenchError
from lab.bench.records import Measurement
from lab.bench.tool_output import parse_iperf3_json
from lab.interface import Lab


def iperf3(
    lab_: Lab, *, server: str, client: str, args: Sequence[str], timeout: float
) -> dict[str, Any]:
    """Run an iperf3 client in ``client``'s namespace against ``server``; the JSON report.

    The port is the configured ``SOCKETLAB_BENCH_IPERF_PORT``: not the shaping
    self-check's, so a bench may run while someone checks a link.
    """
    config = lab_.config.bench
    result = iperf3_tool.run_iperf3(
        lab_,
        server=server,
        client=client,
        port=config.iperf_port,
        args=args,
        timeout=timeout,
        ready_timeout=config.ready_timeout,
    )
    report = parse_iperf3_json(result.stdout)
    if not result.ok:
        raise BenchError(f"iperf3 exited with {result.exit_code}: {result.stderr.strip()[-300:]}")
    return report


def iperf3_tcp(
    lab_: Lab, *, server: str = "server", client: str = "client", seconds: int = 5
) -> Measurement:
    """iperf3 TCP goodput server -> client (``-R``), ``-O 1`` omitting slow start's first second."""
    report = iperf3(
        lab_,
        server=server,
        client=client,
        args=["-R", "-t", str(seconds), "-O", "1"],
        timeout=seconds + 60,
    )
    received = report["end"]["sum_received"]
    return Measurement(
        name="iperf3-tcp",
        label="iperf3 TCP",
        transport="tcp",
        bytes=int(received["bytes"]),
        seconds=float(received["seconds"]),
        bits_per_second=float(received["bits_per_second"]),
        note=str(report.get("start", {}).get("version", "")),
    )


def iperf3_udp(
    lab_: Lab,
    *,
    server: str = "udp-listener",
    client: str = "client",
    total: int,
    size: int,
    rate: float,
) -> Measurement:
    """iperf3 UDP client -> server: ``total`` bytes as ``size``-byte datagrams at ``rate``/s."""
    bitrate = round(rate * size * 8)
    report = iperf3(
        lab_,
        server=server,
        client=client,
        args=["-u", "-b", str(bitrate), "-l", str(size), "-n", str(total)],
        timeout=total / (rate * size) + 60,
    )
    received = report["end"]["sum_received"]
    return Measurement(
        name="iperf3-udp",
        label="iperf3 UDP",
        transport="udp",
        bytes=int(received["bytes"]),
        seconds=float(received["seconds"]),
        bits_per_second=float(received["bits_per_second"]),
        loss=float(received.get("lost_percent", 0.0)) / 100,
        note=f"{size}-byte datagrams at {rate:g}/s",
    )
