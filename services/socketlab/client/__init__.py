"""The client side of the TCP demos (``socketlab client ...``, see :mod:`.cli`).

Split the way chat is: :mod:`.connection` (a blocking lab-protocol connection),
:mod:`.output` (what is printed), one module per family of demos
(:mod:`.demos`, :mod:`.fetch`, :mod:`.blast`, :mod:`.timeouts`, :mod:`.swarm`)
and :mod:`.cli` (the parser and :func:`main`). The names below are the
package's public API.
"""

from socketlab.client.blast import BlastStats
from socketlab.client.cli import COMMANDS, LabClientConfig, build_parser, main
from socketlab.client.connection import CLIENT_LIMITS, RECV_SIZE, Endpoint, LabConnection
from socketlab.client.errors import CommandFailed
from socketlab.client.fetch import FetchResult, Pacer, fetch
from socketlab.client.output import Output, Progress
from socketlab.client.swarm import SwarmReport, percentile, run_swarm, swarm_payload

# How a client reads an answer; re-exported for callers of LabConnection.
from socketlab.protocol.messages import response_result

__all__ = [
    "CLIENT_LIMITS",
    "COMMANDS",
    "RECV_SIZE",
    "BlastStats",
    "CommandFailed",
    "Endpoint",
    "FetchResult",
    "LabClientConfig",
    "LabConnection",
    "Output",
    "Pacer",
    "Progress",
    "SwarmReport",
    "build_parser",
    "fetch",
    "main",
    "percentile",
    "response_result",
    "run_swarm",
    "swarm_payload",
]
