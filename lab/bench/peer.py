"""The peer: the transfer a user would pick instead of our fetch (``ceiling.PEER``).

* **the peer**: ``socat`` from the server's data root into ``tee FILE | openssl
  dgst -sha256`` and ``sync FILE``, in netkit helpers joined to the server's and
  the client's namespaces and mounting their volumes (the same file, the same
  destination).
"""

from __future__ import annotations

from typing import Final

from lab.bench import ceiling
from lab.bench.errors import BenchError
from lab.bench.records import Measurement
from lab.bench.storage import DATA_ROOT, Dest, scratch_dir
from lab.bench.throughput import bit_rate
from lab.bench.tool_output import figure, last_json
from lab.interface import Lab

PEER_ROLE: Final = "bench-peer"


# The receiving half: connect, tee into the file, hash, then make the file durable
# (our fetch fsyncs too). Times itself, so container start-up is not counted.
_PEER_RECEIVE: Final = r"""
set -euo pipefail
host=$1 port=$2 out=$3 idle=$4 connect=$5
started=$(date +%s.%N)
digest=$(socat -u -T "$idle" "TCP:$host:$port,connect-timeout=$connect" STDOUT \
  | tee "$out" | openssl dgst -sha256 -r)
sync "$out"
ended=$(date +%s.%N)
size=$(stat -c %s "$out")
rm -f "$out"
printf '{"bytes": %s, "started": %s, "ended": %s, "sha256": "%s"}\n' \
  "$size" "$started" "$ended" "${digest%% *}"
"""


def peer_send_argv(path: str, *, port: int, idle: float) -> list[str]:
    """socat serving one connection with ``path``; ``-d -d`` logs "listening on" when ready."""
    return ["socat", "-d", "-d", "-u", "-T", f"{idle:g}",
            f"OPEN:{path},rdonly", f"TCP-LISTEN:{port},reuseaddr"]  # fmt: skip


def peer_receive_argv(host: str, *, port: int, out: str, idle: float, connect: float) -> list[str]:
    """The receiving pipeline: ``socat | tee out | openssl dgst -sha256``, then ``sync out``."""
    return ["bash", "-c", _PEER_RECEIVE, "peer", host, str(port), out, f"{idle:g}", f"{connect:g}"]


def peer(lab_: Lab, dest: Dest, name: str, sha256: str, size: int) -> Measurement:
    """The transfer a user would pick: socat -> tee FILE -> openssl dgst -sha256, sync FILE.

    Both halves run in netkit helpers joined to the server's and the client's
    namespaces and mounting their volumes (the server's read-only), so the
    peer reads the same file and writes to the same destination as our fetch.
    """
    config = lab_.config.bench
    send = peer_send_argv(f"{DATA_ROOT}/{name}", port=config.peer_port, idle=config.step_timeout)
    with (
        scratch_dir(lab_, "client", dest.path) as folder,
        lab_.start_helper(
            "server",
            send,
            role=PEER_ROLE,
            volumes="ro",
            ready="listening on",
            ready_timeout=config.ready_timeout,
        ),
        lab_.start_helper(
            "client",
            peer_receive_argv(
                lab_.ip("server"),
                port=config.peer_port,
                out=f"{folder}/peer.bin",
                idle=config.step_timeout,
                connect=config.ready_timeout,
            ),
            role=PEER_ROLE,
            volumes="rw",
        ) as receiver,
    ):
        code = receiver.wait(timeout=config.step_timeout)
        output = receiver.logs(stdout=True, stderr=False)
        if code != 0:
            errors = receiver.logs(stdout=False, stderr=True).strip()
            raise BenchError(f"the peer's receiver exited with {code}: {errors[-300:]!r}")
    report = last_json(output, what="peer")
    moved = int(figure(report, "bytes", what="peer"))
    seconds = figure(report, "ended", what="peer") - figure(report, "started", what="peer")
    return Measurement(
        name=ceiling.PEER,
        label="peer: socat | tee | openssl",
        transport="tcp",
        bytes=moved,
        seconds=seconds,
        bits_per_second=bit_rate(moved, seconds),
        verified=moved == size and report.get("sha256") == sha256,
        note=f"socat -> tee FILE -> openssl dgst -sha256, then sync FILE, at {dest.path}",
    )
