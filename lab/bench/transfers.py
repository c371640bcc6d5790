"""Ours, run in the client (figures named as in :mod:`lab.bench.ceiling`):

* **fetch**: ``socketlab client fetch`` (framed, SHA-256 verified, fsynced);
* **naive**: ``socketlab naive-transfer`` (the tutorials' ``recv(1024)`` loop,
  a labelled teaching baseline) of a smaller file;
* **udp**: the same payload, datagram size and rate as iperf3 UDP from the
  client to the udp-listener, through ``socketlab tcp-vs-udp`` (which
  ``lab sweep`` runs at every grid point: :func:`tcp_vs_udp`).
"""

from __future__ import annotations

import threading
from typing import Any

from lab.bench import ceiling
from lab.bench.errors import BenchError
from lab.bench.records import Measurement
from lab.bench.storage import DATA_ROOT, Dest, scratch_dir
from lab.bench.throughput import bit_rate
from lab.bench.tool_output import figure, last_json
from lab.errors import LabError
from lab.interface import ExecResult, Lab
from socketlab.naive import NAIVE_PORT


def fetch(lab_: Lab, name: str, sha256: str, dest: Dest | None = None) -> Measurement:
    """Our verified transfer: ``socketlab client fetch``, first content byte to verified file."""
    base = dest.path if dest else "/tmp"  # noqa: S108 - inside the client container
    with scratch_dir(lab_, "client", base) as folder:
        argv = ["socketlab", "client", "fetch", name, "--dest", folder, "--quiet", "--json"]
        result = lab_.exec("client", argv, timeout=lab_.config.bench.step_timeout).check("fetch")
    report = last_json(result.stdout, what="fetch")
    moved = int(figure(report, "size", what="fetch") - figure(report, "resumed_from", what="fetch"))
    seconds = figure(report, "transfer_seconds", what="fetch")
    return Measurement(
        name=ceiling.OURS,
        label="fetch (verified)",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=bit_rate(moved, seconds),
        verified=report.get("sha256") == sha256,
        note=f"framed, SHA-256 checked, fsynced, renamed, at {base}",
    )


def naive(lab_: Lab, name: str, sha256: str, size: int, dest: Dest | None = None) -> Measurement:
    """The teaching baseline: ``naive-transfer send`` on the server, ``receive`` on the client."""
    config = lab_.config.bench
    outcome: dict[str, ExecResult | BaseException] = {}

    def serve() -> None:
        argv = ["socketlab", "naive-transfer", "send", f"{DATA_ROOT}/{name}",
                "--port", str(NAIVE_PORT), "--accept-timeout", f"{config.ready_timeout + 30:g}"]  # fmt: skip
        try:
            outcome["send"] = lab_.exec("server", argv, timeout=config.step_timeout)
        except LabError as exc:  # reported by the caller's thread below
            outcome["send"] = exc

    sender = threading.Thread(target=serve, name="naive-send")
    sender.start()
    try:
        base = dest.path if dest else "/tmp"  # noqa: S108 - inside the client container
        with scratch_dir(lab_, "client", base) as folder:
            argv = ["socketlab", "naive-transfer", "receive", f"{folder}/{name}",
                    "--host", "server", "--port", str(NAIVE_PORT),
                    "--connect-deadline", f"{config.ready_timeout:g}", "--json"]  # fmt: skip
            received = lab_.exec("client", argv, timeout=config.step_timeout)
    finally:
        sender.join(timeout=config.step_timeout + 30)
    sent = outcome.get("send")
    if isinstance(sent, BaseException):
        raise BenchError(f"naive sender failed: {sent}") from sent
    received.check("naive receive")
    report = last_json(received.stdout, what="naive receive")
    moved, seconds = int(report["bytes"]), float(report["seconds"])
    return Measurement(
        name=ceiling.NAIVE,
        label="naive recv(1024)",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=bit_rate(moved, seconds),
        verified=moved == size and report["sha256"] == sha256,
        note="teaching baseline: no framing, no size, no checksum",
    )


def tcp_vs_udp(
    lab_: Lab,
    *,
    total: int,
    size: int,
    rate: float,
    timeout: float | None = None,
    offer: int | None = None,
) -> dict[str, dict[str, Any]]:
    """``socketlab tcp-vs-udp --json`` in the client: protocol -> its row, and ``meaning``
    -> ``{"text": its sentence}`` (``timeout`` defaults to the configured step timeout;
    ``offer``: UDP's offered bit/s instead of ``rate`` datagrams per second)."""
    timeout = lab_.config.bench.step_timeout if timeout is None else timeout
    argv = ["socketlab", "tcp-vs-udp", "--json", "--bytes", str(total),
            "--size", str(size), "--rate", f"{rate:g}"]  # fmt: skip
    if offer is not None:
        argv += ["--offer", str(offer)]
    env = {"SOCKETLAB_TRANSFER_TIMEOUT": f"{timeout:g}"}
    result = lab_.exec("client", argv, timeout=timeout + 30, env=env).check("tcp-vs-udp")
    document = last_json(result.stdout, what="tcp-vs-udp")
    rows = document.get("rows", [])
    found = {row["protocol"]: row for row in rows if isinstance(row, dict)}
    if set(found) != {"tcp", "udp"}:
        raise BenchError(f"tcp-vs-udp gave rows for {sorted(found)}, expected tcp and udp")
    found["meaning"] = {"text": str(document.get("meaning", ""))}
    return found


def udp(lab_: Lab, *, total: int, size: int, rate: float) -> Measurement:
    """Our UDP sender to the listener, counted by the listener (through tcp-vs-udp)."""
    row = tcp_vs_udp(lab_, total=total, size=size, rate=rate)["udp"]
    return Measurement(
        name=ceiling.UDP,
        label="udp-send",
        transport="udp",
        bytes=int(row["bytes_delivered"]),
        seconds=float(row["duration_s"]),
        bits_per_second=float(row["goodput_mbit_s"]) * 1e6,
        loss=float(row["loss"]),
        note=f"{size}-byte datagrams at {rate:g}/s; listener kernel drops {row['kernel_drops']}",
    )
