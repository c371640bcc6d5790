"""``socketlab udp-listener``: account for every datagram arriving on 37020/udp.

Three threads in one process:

* the receive loop: a large ``SO_RCVBUF``; one ``poll`` per batch, then the
  socket is drained without blocking, and the batch is accounted under one
  lock (:mod:`socketlab.udp.accounting`). With ``SOCKETLAB_UDP_GRO`` (on by
  default, where the kernel has it) the kernel may hand over several equal-size
  datagrams in one read (``UDP_GRO``, e.g. a GSO sender's batch): the read is
  split at the segment size it reports and every datagram accounted alone;
* the status server on 37021/tcp (HTTP, a
  :class:`~socketlab.bounded_http.BoundedHttpServer`: a few workers, whole-request
  deadlines of ``SOCKETLAB_STATUS_TIMEOUT``): ``GET /stats`` (JSON: top-level
  totals incl. ``datagrams``, per-session counters, the kernel's UDP drop
  counters of this network namespace beside the application's own loss),
  ``GET /health``, ``POST /reset`` (clear the counters, answer the last stats;
  it needs the lab's admin token, ``Authorization: Bearer``, else 401);
* the TCP sink (:mod:`socketlab.udp.tcp_sink`) for ``socketlab tcp-vs-udp``.

A log line ``event=stats ...`` is written every ``--log-interval`` seconds
while datagrams arrive, and ``event=session_start ...`` when a sender session
starts (with ``missed_at_start`` when its first sequence number is above 1).

``GET /stats`` fields (counts since start or the last ``POST /reset``)::

    datagrams, bytes             everything received, of any kind
    valid, foreign, malformed    by kind (see socketlab.udp.datagram)
    lost, missed_at_start,       summed over sessions (see socketlab.udp.accounting)
    duplicates, reordered, late,
    implausible_starts
    session_count                sessions seen (the list keeps the newest 256)
    sessions[]                   per session: session, source, sender_id, number,
                                 restarted, active, first_seq, highest_seq, expected,
                                 received, bytes, lost, loss_ratio, duplicates,
                                 reordered, late, jitter_ms, transit_ms_mean,
                                 transit_ms_max, first_sent_ns, first/last_arrival_ns
    foreign_sources, malformed_sources   {"ip:port": count}
    kernel                       /proc/net/snmp Udp counters of this namespace
                                 (InDatagrams, NoPorts, InErrors, RcvbufErrors,
                                 InCsumErrors)
    kernel_drops                 InErrors (Linux counts RcvbufErrors and checksum
                                 errors in it too): dropped inside this namespace
    rcvbuf                       receive buffer the kernel granted (bytes)
    gro                          coalesced reads (UDP_GRO) in use
    tcp_sink                     {"connections", "bytes"} of the TCP sink
    uptime_s, since_reset_s
"""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from socketlab.bounded_http import BoundedHttpServer, BoundedRequestHandler, HttpLimits
from socketlab.commandline import add_setting, command_parser
from socketlab.config import UDP_PORT, UDP_STATUS_PORT, EnvConfig, env_config, env_field
from socketlab.credentials import ADMIN_TOKEN_FILE, is_authorized, read_token
from socketlab.errors import ServiceError
from socketlab.supervisor import Component, HeartbeatConfig, run_components
from socketlab.udp import tcp_sink
from socketlab.udp.accounting import Accounting, Event, Rejected, kernel_delta, parse_udp_snmp
from socketlab.udp.datagram import MAX_DATAGRAM

log = logging.getLogger("socketlab.udp")

# Datagrams accounted per lock acquisition; bounds how long /stats waits.
BATCH = 512
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_GRO = getattr(socket, "UDP_GRO", 104)  # Linux: receive coalesced datagrams
GRO_READ = 65535  # a coalesced read carries at most one IP packet's worth
_GRO_CMSG = socket.CMSG_SPACE(4)


@env_config
@dataclass(frozen=True, kw_only=True)
class ListenerConfig(EnvConfig):
    """Where the listener binds, how it reports, and its TCP sink."""

    port: int = UDP_PORT
    status_port: int = UDP_STATUS_PORT
    rcvbuf: int = env_field(
        "SOCKETLAB_UDP_RCVBUF", 8 << 20, "receive buffer the UDP listener asks for, bytes"
    )
    log_interval: float = env_field(
        "SOCKETLAB_UDP_LOG_INTERVAL", 10.0, "seconds between the UDP listener's stats lines"
    )
    snmp_path: str = env_field(
        "SOCKETLAB_UDP_SNMP", "/proc/net/snmp", "where the kernel's UDP drop counters are read"
    )
    gro: bool = env_field(
        "SOCKETLAB_UDP_GRO",
        True,
        "let the kernel hand the UDP listener equal-size datagrams in one read (UDP_GRO), "
        "split and counted one by one",
    )
    recv_poll: float = env_field(
        "SOCKETLAB_UDP_POLL",
        0.5,
        "longest wait of the UDP receive loop, seconds (how soon it notices stop)",
    )
    status_timeout: float = env_field(
        "SOCKETLAB_STATUS_TIMEOUT", 5.0, "timeout of the UDP listener's status HTTP, seconds"
    )
    status_workers: int = 4  # status requests answered at once
    admin_token_file: Path = env_field(
        "SOCKETLAB_ADMIN_TOKEN_FILE",
        Path(ADMIN_TOKEN_FILE),
        "file holding the lab's admin token (feed admin and faults, UDP reset); "
        "absent: those requests are refused",
    )
    admin_token: str | None = None  # read from admin_token_file by :meth:`resolved`
    tcp_sink: tcp_sink.TcpSinkConfig = field(default_factory=tcp_sink.TcpSinkConfig)

    def resolved(self) -> ListenerConfig:
        """This config with the admin token read from its file (once, at the entry point)."""
        if self.admin_token is not None:
            return self
        return replace(self, admin_token=read_token(self.admin_token_file))

    def status_limits(self) -> HttpLimits:
        timeout = self.status_timeout
        return HttpLimits(
            workers=self.status_workers,
            queue=16,
            max_pending=64,
            head_timeout=timeout,
            body_timeout=timeout,
            io_timeout=timeout,
        )


def read_kernel_counters(path: str) -> dict[str, int]:
    """The ``Udp:`` counters of this network namespace, or {} where /proc is missing."""
    try:
        return parse_udp_snmp(Path(path).read_text())
    except OSError:
        return {}


def gro_segment(ancillary: list[tuple[int, int, bytes]], length: int) -> int:
    """The datagram size of a coalesced read of ``length`` bytes (its ``UDP_GRO`` control
    message), or ``length`` when it holds one datagram or the value makes no sense."""
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(value) in (2, 4):
            segment = int.from_bytes(value, sys.byteorder)
            return segment if 0 < segment < length else length
    return length


def enable_gro(sock: socket.socket) -> bool:
    """Ask for coalesced reads; False where the kernel does not offer them."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; return what the kernel granted.

    Plain ``SO_RCVBUF``: the kernel caps the request at ``net.core.rmem_max`` and
    doubles it for its own bookkeeping. ``SO_RCVBUFFORCE`` would pass the cap but
    needs CAP_NET_ADMIN, which only the netkit helpers have.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    return granted


class Listener:
    """The shared state of the receive loop, status server and TCP sink."""

    def __init__(self, options: ListenerConfig) -> None:
        self.options = options
        self._lock = threading.Lock()
        self.accounting = Accounting()
        self.kernel_baseline = read_kernel_counters(options.snmp_path)
        self.started = time.time()
        self.reset_at = self.started
        self.rcvbuf = 0
        self.gro = False
        self.sink = tcp_sink.SinkTotals()
        self._ready = {name: threading.Event() for name in ("udp", "status", "tcp-sink")}

    def wait_ready(self, timeout: float) -> bool:
        """Wait until all three components listen; False at the deadline."""
        deadline = time.monotonic() + timeout
        return all(
            event.wait(max(0.0, deadline - time.monotonic())) for event in self._ready.values()
        )

    def stats(self) -> dict[str, Any]:
        """Everything ``GET /stats`` answers."""
        with self._lock:
            snapshot = self.accounting.snapshot()
            baseline = self.kernel_baseline
            reset_at = self.reset_at
        kernel = kernel_delta(baseline, read_kernel_counters(self.options.snmp_path))
        now = time.time()
        return {
            **snapshot,
            "kernel": kernel,
            # InErrors already includes RcvbufErrors and InCsumErrors: do not add them.
            "kernel_drops": kernel.get("InErrors", kernel.get("RcvbufErrors", 0)),
            "rcvbuf": self.rcvbuf,
            "gro": self.gro,
            "tcp_sink": self.sink.snapshot(),
            "uptime_s": now - self.started,
            "since_reset_s": now - reset_at,
        }

    def reset(self) -> dict[str, Any]:
        """Clear every counter; return the stats as they were."""
        before = self.stats()
        baseline = read_kernel_counters(self.options.snmp_path)
        with self._lock:
            self.accounting = Accounting()
            self.kernel_baseline = baseline
            self.reset_at = time.time()
        self.sink.reset()
        log.info("event=reset datagrams_before=%d", before["datagrams"])
        return before

    def account(self, batch: list[tuple[bytes, tuple[str, int], int]]) -> list[Event]:
        events: list[Event] = []
        with self._lock:
            receive = self.accounting.receive
            for data, (host, port), arrival_ns in batch:
                event = receive(data, host=host, port=port, arrival_ns=arrival_ns)
                if event is not None:
                    events.append(event)
        return events

    def receive_batch(self, sock: socket.socket) -> list[Event]:
        """Drain up to BATCH datagrams from non-blocking ``sock`` and account each as it
        comes, under one lock: no per-datagram list or tuple on the hot path."""
        events: list[Event] = []
        recvfrom, clock = sock.recvfrom, time.time_ns
        with self._lock:
            receive = self.accounting.receive
            for _ in range(BATCH):
                try:
                    data, (host, port) = recvfrom(MAX_DATAGRAM)
                except (BlockingIOError, InterruptedError):
                    break
                event = receive(data, host=host, port=port, arrival_ns=clock())
                if event is not None:
                    events.append(event)
        return events

    def receive_coalesced(self, sock: socket.socket) -> list[Event]:
        """:meth:`receive_batch` for a ``UDP_GRO`` socket: a read may hold several
        datagrams of one size from one source, split here and accounted one by one."""
        events: list[Event] = []
        recvmsg, clock = sock.recvmsg, time.time_ns
        with self._lock:
            receive = self.accounting.receive
            count = 0
            while count < BATCH:
                try:
                    data, ancillary, _, (host, port) = recvmsg(GRO_READ, _GRO_CMSG)
                except (BlockingIOError, InterruptedError):
                    break
                arrival_ns = clock()
                length = len(data)
                segment = gro_segment(ancillary, length) if ancillary else length
                for offset in range(0, length, segment) if segment < length else (0,):
                    count += 1
                    piece = data if segment >= length else data[offset : offset + segment]
                    event = receive(piece, host=host, port=port, arrival_ns=arrival_ns)
                    if event is not None:
                        events.append(event)
        return events

    def serve_udp(self, stop: threading.Event) -> None:
        """Receive and account datagrams until ``stop`` is set."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            self.rcvbuf = set_receive_buffer(sock, self.options.rcvbuf)
            self.gro = self.options.gro and enable_gro(sock)
            drain = self.receive_coalesced if self.gro else self.receive_batch
            try:
                sock.bind(("0.0.0.0", self.options.port))
            except OSError as exc:
                raise ServiceError(f"cannot bind {self.options.port}/udp: {exc}") from exc
            # Non-blocking, with poll() carrying the timeout: one poll per batch
            # instead of one per datagram keeps up with high rates.
            sock.setblocking(False)
            self._ready["udp"].set()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            log.info(
                "event=listening port=%d rcvbuf=%d gro=%s status_port=%d tcp_port=%d",
                self.options.port,
                self.rcvbuf,
                str(self.gro).lower(),
                self.options.status_port,
                self.options.tcp_sink.port,
            )
            next_log = time.monotonic() + self.options.log_interval
            logged = 0
            while not stop.is_set():
                if poller.poll(self.options.recv_poll * 1000):
                    for event in drain(sock):
                        _log_event(event)
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + self.options.log_interval
                    logged = self._log_stats(logged)

    def _log_stats(self, logged: int) -> int:
        stats = self.stats()
        if stats["datagrams"] != logged:
            log.info(
                "event=stats datagrams=%d valid=%d lost=%d missed_at_start=%d duplicates=%d "
                "reordered=%d foreign=%d malformed=%d kernel_rcvbuf_errors=%d sessions=%d",
                stats["datagrams"],
                stats["valid"],
                stats["lost"],
                stats["missed_at_start"],
                stats["duplicates"],
                stats["reordered"],
                stats["foreign"],
                stats["malformed"],
                stats["kernel"].get("RcvbufErrors", 0),
                stats["session_count"],
            )
        count: int = stats["datagrams"]
        return count

    def serve_status(self, stop: threading.Event) -> None:
        """Serve ``/stats``, ``/health`` and ``/reset`` until ``stop`` is set."""
        server = BoundedHttpServer(
            ("0.0.0.0", self.options.status_port),
            _handler(self),
            limits=self.options.status_limits(),
            name="udp-status",
        )
        server.start()
        self._ready["status"].set()  # bound and listening since the constructor
        try:
            stop.wait()
        finally:
            server.close()

    def serve_tcp_sink(self, stop: threading.Event) -> None:
        tcp_sink.serve(
            stop, totals=self.sink, config=self.options.tcp_sink, ready=self._ready["tcp-sink"]
        )


def _log_event(event: Event) -> None:
    if isinstance(event, Rejected):
        log.info(
            "event=%s_datagram source=%s reason=%r sample=%r",
            event.kind.value,
            event.source,
            event.reason,
            event.sample[:32],
        )
        return
    log.info(
        "event=session_start session=%s source=%s sender_id=%08x first_seq=%d "
        "missed_at_start=%d restarted=%s",
        event.name,
        event.source,
        event.sender_id,
        event.first_seq,
        event.first_seq - 1,
        str(event.restarted).lower(),
    )


def _handler(listener: Listener) -> type[BoundedRequestHandler]:
    class Handler(BoundedRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path == "/stats":
                self._json(listener.stats())
            elif path == "/health":
                self._json({"status": "ok"})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0].rstrip("/") != "/reset":
                self.send_error(404)
                return
            token = listener.options.admin_token
            if not is_authorized(self.headers.get("Authorization"), token):
                log.warning("event=unauthorized path=/reset client=%s", self.client_address[0])
                why = "no admin token configured" if token is None else "admin token needed"
                self._json({"error": f"reset refused: {why}"}, status=401)
                return
            self._json(listener.reset())

        def _json(self, payload: dict[str, Any], *, status: int = 200) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="socketlab"')
            self.end_headers()
            self.wfile.write(body)

    return Handler


def run(
    options: ListenerConfig, stop: threading.Event, *, listener: Listener | None = None
) -> list[str]:
    """Run the three components until ``stop``; return the names of any that failed.

    Signals are the caller's business here (tests run this in a thread); ``main``
    lets the supervisor handle SIGTERM and SIGINT.
    """
    listener = listener or Listener(options.resolved())
    stopped = run_components(_components(listener), stop=stop, signals=())
    return list(stopped.failures)


def _components(listener: Listener) -> dict[str, Component]:
    return {
        "udp": listener.serve_udp,
        "status": listener.serve_status,
        "tcp-sink": listener.serve_tcp_sink,
    }


def main(argv: list[str]) -> int:
    config = ListenerConfig.from_env()
    parser = command_parser("udp-listener", __doc__, raw=True)
    parser.add_argument("--port", type=int, default=config.port)
    parser.add_argument("--status-port", type=int, default=config.status_port)
    parser.add_argument("--tcp-port", type=int, default=config.tcp_sink.port)
    add_setting(parser, "--rcvbuf", config=config, name="rcvbuf")
    add_setting(parser, "--log-interval", config=config, name="log_interval")
    args = parser.parse_args(argv)
    options = replace(
        config,
        port=args.port,
        status_port=args.status_port,
        tcp_sink=replace(config.tcp_sink, port=args.tcp_port),
        rcvbuf=args.rcvbuf,
        log_interval=args.log_interval,
    )
    heartbeat = HeartbeatConfig.from_env().heartbeat()
    run_components(
        _components(Listener(options.resolved())), heartbeat=heartbeat
    ).raise_for_failures()
    return 0
