"""iperf3 between two services: a one-shot server in a helper, the client in another.

Both the shaping self-check (``lab shape --check``) and ``lab bench`` measure
this way; they differ only in ports, options and how they read the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from lab.errors import HelperNotReady
from lab.interface import ExecResult, HelperContainer, Lab

SERVER_ROLE = "iperf3-server"


def server_argv(port: int) -> list[str]:
    """``iperf3 -s -1``: serve one test, then exit; flush so "listening" shows at once."""
    return ["iperf3", "-s", "-1", "--forceflush", "-p", str(port)]


def client_argv(server_ip: str, *, port: int, args: Sequence[str]) -> list[str]:
    """An iperf3 client printing its JSON report (``-J``)."""
    return ["iperf3", "-c", server_ip, "-p", str(port), "-J", *args]


@contextlib.contextmanager
def iperf3_server(
    lab: Lab, service: str, *, port: int, ready_timeout: float
) -> Iterator[HelperContainer]:
    """``iperf3 -s -1`` in a helper joined to ``service``; yields once it listens,
    removes it after. :class:`HelperNotReady` if it does not start listening."""
    try:
        helper = lab.start_helper(
            service,
            server_argv(port),
            role=SERVER_ROLE,
            ready="listening",
            ready_timeout=ready_timeout,
        )
    except HelperNotReady as exc:
        raise HelperNotReady(
            f"iperf3 server in {service} did not start listening: {exc.output.strip()[-300:]!r}",
            exited=exc.exited,
            output=exc.output,
        ) from exc
    with helper:
        yield helper


def run_iperf3(
    lab: Lab,
    *,
    server: str,
    client: str,
    port: int,
    args: Sequence[str],
    timeout: float,
    ready_timeout: float,
    server_ip: str | None = None,
) -> ExecResult:
    """One iperf3 test from ``client``'s namespace to a server in ``server``'s.

    ``timeout`` bounds the client; the caller reads ``stdout`` (the JSON report).
    ``server_ip``: the server's address to use (default ``lab.ip(server)``).
    """
    with iperf3_server(lab, server, port=port, ready_timeout=ready_timeout):
        argv = client_argv(server_ip or lab.ip(server), port=port, args=args)
        return lab.netkit_run(client, argv, timeout=timeout)
