"""Captures of ``lab run``: pcaps kept under ``results/<run-id>/pcap/``.

What to capture is pure (:func:`capture_targets`, :func:`pcap_targets`,
:func:`run_targets`, :func:`tcpdump_argv`, :func:`delivered_script`); the thin
I/O part (:class:`Capturer`) runs ``tcpdump -w`` in a netkit helper joined to a
service's network namespace (the service image has no tcpdump and no
capabilities), waits until tcpdump is listening, and at the end of the scenario
stops it with SIGINT (so it flushes and closes the file properly), copies the
file out and removes the helper. Helpers carry the project label, so ``lab down``
removes any that a crash left behind.

Two capture points:

* **sent** (``--capture``, and TCP's ``pcap`` metrics): a shaped link ``a -> b`` is captured in ``a``'s
  namespace, filtered to traffic with ``b``'s addresses (IPv4 and IPv6; both directions, as
  ``a`` sees them), on the interfaces (``tcpdump -i any``). With no shaped link, the
  client's traffic is captured instead.
* **delivered**: in ``b``'s namespace, what ``b`` received from ``a`` *after*
  ``b``'s ingress shaping, and what ``b`` sent to ``a``. tcpdump's interface tap
  runs before netfilter, so it would see the packets the NFQUEUE engine drops
  and delays in ``b``'s raw PREROUTING; instead two NFLOG rules in ``b``'s
  mangle table (PREROUTING ``-s a``, after the verdict; POSTROUTING ``-d a``)
  hand the packets to ``tcpdump -i nflog:GROUP``. netem drops on ``a``'s egress,
  before either point, so this view is the same under both engines: a dropped
  datagram is a ``udp.lost`` gap, a delayed one arrives late, and a round trip
  spans both directions' delay. The helper removes its rules when it stops.

Every link a ``pcap`` check reads is captured, with or without ``--capture``, at
the point its metric needs (:mod:`lab.report.metrics`: TCP's retransmissions,
segment sizes and zero windows as sent, the rest as delivered).

A service that a fault restarts gets a new namespace: its capture ends there.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from lab.errors import HelperNotReady, LabError
from lab.interface import HelperContainer, Lab
from lab.report.metrics import capture_point
from lab.scenario.plan import CheckKind, Scenario
from lab.scenario.report import PcapRecord
from lab.shaping.builders import IPTABLES

CAPTURE_ROLE: Final = "capture"
CAPTURE_CAPS: Final = ("NET_RAW", "NET_ADMIN")
DEFAULT_SERVICE: Final = "client"
HELPER_PATH: Final = "/tmp/capture.pcap"  # noqa: S108 - inside the helper's own filesystem
# What tcpdump prints on stderr once it captures.
LISTENING: Final = "listening on"
# pcap magic numbers (microsecond / nanosecond resolution, either byte order)
PCAP_MAGICS: Final = frozenset(
    {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
)
# NFLOG groups of delivered captures: one per capture of a scenario, numbered from here
# (the kernel's groups are per namespace; 0 is the ulogd default, kept clear).
NFLOG_GROUP_BASE: Final = 5400
NFLOG_FRAME_OVERHEAD: Final = 512  # bytes of NFLOG header and TLVs beside the packet
MAX_NFLOG_GROUP: Final = 0xFFFF


class CaptureError(LabError):
    """A capture could not be started, stopped or copied out."""


@dataclass(frozen=True, kw_only=True)
class CaptureTarget:
    """Capture in ``service``'s network namespace; only traffic with ``peer`` if given.

    ``delivered``: the link ``peer -> service`` as ``service`` got it (see the module
    docstring); otherwise ``service -> peer`` as ``service`` sent it."""

    service: str
    peer: str | None = None
    delivered: bool = False

    @property
    def link(self) -> str | None:
        """The link ``a -> b`` this target shows, or None for all of a service's traffic."""
        if self.peer is None:
            return None
        return (
            f"{self.peer} -> {self.service}" if self.delivered else f"{self.service} -> {self.peer}"
        )

    @property
    def label(self) -> str:
        if self.link is None:
            return f"{self.service} (all traffic)"
        return f"{self.link} (delivered)" if self.delivered else self.link

    @property
    def file_name(self) -> str:
        if self.peer is None:
            return f"{self.service}.pcap"
        if self.delivered:
            return f"{self.peer}-to-{self.service}.delivered.pcap"
        return f"{self.service}-to-{self.peer}.pcap"


def capture_targets(
    scenario: Scenario, *, default_service: str = DEFAULT_SERVICE
) -> list[CaptureTarget]:
    """One target per shaped direction (declared links, then ``shape`` faults), in
    order and without repeats; the default service's traffic when nothing is shaped."""
    pairs = [(link.source, link.dest) for link in scenario.links]
    pairs += [(f.services[0], f.services[1]) for f in scenario.faults if f.action == "shape"]
    targets = [CaptureTarget(service=source, peer=dest) for source, dest in dict.fromkeys(pairs)]
    return targets or [CaptureTarget(service=default_service)]


def pcap_targets(scenario: Scenario) -> list[CaptureTarget]:
    """A capture for every link a ``pcap`` check reads, at its metric's point
    (:func:`lab.report.metrics.capture_point`), in check order, once each."""
    targets = []
    for check in scenario.checks:
        if check.kind is not CheckKind.PCAP or check.link is None:
            continue
        source, dest = check.link
        if capture_point(check.metric or "") == "sent":
            targets.append(CaptureTarget(service=source, peer=dest))
        else:
            targets.append(CaptureTarget(service=dest, peer=source, delivered=True))
    return list(dict.fromkeys(targets))


def run_targets(scenario: Scenario, *, capture: bool) -> list[CaptureTarget]:
    """What one scenario run captures: the ``--capture`` targets (when asked) and the
    links its ``pcap`` checks read, without repeats."""
    targets = capture_targets(scenario) if capture else []
    return list(dict.fromkeys([*targets, *pcap_targets(scenario)]))


def tcpdump_argv(
    *,
    peer_ip: str | None,
    snaplen: int,
    path: str = HELPER_PATH,
    also: Sequence[str] = (),
) -> list[str]:
    """``tcpdump`` writing a pcap: every interface of the namespace, numeric, as root
    (``-Z root``: no privilege drop that could not write ``path``), ``snaplen``
    bytes of each packet (headers and the start of the payload, not whole transfers).

    ``--immediate-mode``: without it the kernel hands packets over in blocks (up to
    1 s late), and the packets of a short scenario's last second are still in an
    unfinished block when SIGINT stops tcpdump: lost. ``-U`` then writes each
    packet at once, so the file is whole when tcpdump stops. ``also``: the
    peer's other addresses (IPv6, other networks), captured as well."""
    argv = ["tcpdump", "--immediate-mode", "-i", "any", "-n", "-U", "-Z", "root"]
    argv += ["-s", str(snaplen), "-w", path]
    # Only the lab network: loopback chatter inside the namespace is not the link.
    if not peer_ip:
        return [*argv, "not", "net", "127.0.0.0/8"]
    hosts = ["host", peer_ip]
    for other in also:
        hosts += ["or", "host", other]
    return argv + hosts


def nflog_rules(peer_ip: str, *, group: int, snaplen: int) -> list[tuple[str, ...]]:
    """The mangle-table rules of a delivered capture: ``(chain, rule...)`` after ``-t mangle``.

    PREROUTING's mangle hook runs after raw's, so what the NFQUEUE engine dropped or
    holds is not logged; POSTROUTING logs what the namespace sends back."""
    if not 0 < group <= MAX_NFLOG_GROUP:
        raise CaptureError(f"NFLOG group {group} is outside 1..{MAX_NFLOG_GROUP}")
    # Threshold 1: each packet goes to tcpdump at once (the kernel's default batches up
    # to 100 for a second, which the end of a scenario would cut off).
    target = ("-j", "NFLOG", "--nflog-group", str(group), "--nflog-size", str(snaplen),
              "--nflog-threshold", "1")  # fmt: skip
    return [("PREROUTING", "-s", peer_ip, *target), ("POSTROUTING", "-d", peer_ip, *target)]


def delivered_script(
    *, peer_ip: str, group: int, snaplen: int, path: str = HELPER_PATH
) -> list[str]:
    """``sh -c`` argv of a delivered capture: add the NFLOG rules, run tcpdump on the
    group until SIGINT/SIGTERM, remove the rules, exit with tcpdump's status.

    tcpdump runs in the background so the shell's trap can pass the signal on (a
    shell does not run traps while it waits for a foreground child); SIGTERM, since
    a background job of a non-interactive shell starts with SIGINT ignored."""
    iptables = shlex.join((*IPTABLES, "-t", "mangle"))
    rules = nflog_rules(peer_ip, group=group, snaplen=snaplen)
    add = " && ".join(f"{iptables} -I {chain} 1 {shlex.join(rule)}" for chain, *rule in rules)
    remove = "; ".join(f"{iptables} -D {chain} {shlex.join(rule)}" for chain, *rule in rules)
    tcpdump = ["tcpdump", "--immediate-mode", "-i", f"nflog:{group}", "-n", "-U", "-Z", "root"]
    # The rule already cut the packet to ``snaplen``; tcpdump keeps the NFLOG TLVs around it.
    tcpdump += ["-s", str(snaplen + NFLOG_FRAME_OVERHEAD), "-w", path]
    script = (
        f"{add} || {{ echo 'cannot add the NFLOG rules' >&2; {remove} 2>/dev/null; exit 3; }}\n"
        f"{shlex.join(tcpdump)} &\n"
        "pid=$!\n"
        "trap 'kill -TERM $pid 2>/dev/null' INT TERM\n"
        "wait $pid; status=$?\n"
        # Interrupted by the trap: wait again for tcpdump's own exit.
        "if kill -0 $pid 2>/dev/null; then wait $pid; status=$?; fi\n"
        f"{remove}\n"
        "exit $status\n"
    )
    return ["sh", "-c", script]


def is_pcap(head: bytes) -> bool:
    """Whether ``head`` starts with a pcap file's magic number."""
    return head[:4] in PCAP_MAGICS


class Capturer:
    """Runs one tcpdump helper per target for the length of a scenario.

    Settings come from ``lab.config.capture`` (:class:`lab.config.CaptureConfig`).
    """

    def __init__(self, lab: Lab, *, folder: Path, prefix: str) -> None:
        self.lab = lab
        self.config = lab.config.capture
        self.folder = folder  # results/<run-id>; pcaps go to folder/pcap/
        self.prefix = prefix  # the scenario's name: one run folder holds many scenarios
        self.helpers: list[tuple[CaptureTarget, HelperContainer]] = []
        self.failed: list[PcapRecord] = []

    def start(self, targets: Sequence[CaptureTarget]) -> None:
        """Start every helper and wait until each listens; a failure is recorded, not raised."""
        for index, target in enumerate(targets):
            try:
                self.helpers.append((target, self._start_one(target, NFLOG_GROUP_BASE + index)))
            except LabError as exc:
                self.failed.append(_record(target, error=f"not started: {exc}"))

    def _start_one(self, target: CaptureTarget, group: int) -> HelperContainer:
        peer_ip = self.lab.ip(target.peer) if target.peer else None
        snaplen = self.config.snaplen
        if target.delivered and peer_ip is not None:
            argv = delivered_script(peer_ip=peer_ip, group=group, snaplen=snaplen)
        else:
            others: list[str] = []
            if target.peer:
                # Every address of the peer: its IPv6 ones too, and those on other networks.
                with contextlib.suppress(LabError):
                    peer = self.lab.topology().one(target.peer)
                    others = [ip for ip in peer.ips() if ip != peer_ip]
            argv = tcpdump_argv(peer_ip=peer_ip, snaplen=snaplen, also=others)
        try:
            return self.lab.start_helper(
                target.service,
                # `timeout` passes our SIGINT on to tcpdump and ends a forgotten helper.
                ["timeout", "-s", "INT", f"{self.config.max_seconds:g}", *argv],
                role=CAPTURE_ROLE,
                caps=CAPTURE_CAPS,
                ready=LISTENING,
                ready_stream="stderr",
                ready_timeout=self.config.start_timeout,
            )
        except HelperNotReady as exc:
            state = "exited" if exc.exited else "not listening"
            raise CaptureError(f"tcpdump for {target.label} {state}: {exc.last_line}") from exc

    def stop(self) -> list[PcapRecord]:
        """SIGINT every helper, copy its pcap to ``pcap/``, remove it; what was kept."""
        records = list(self.failed)
        for target, helper in self.helpers:
            records.append(self._stop_one(target, helper))
        self.helpers, self.failed = [], []
        return records

    def _stop_one(self, target: CaptureTarget, helper: HelperContainer) -> PcapRecord:
        relative = PurePosixPath("pcap", f"{self.prefix}.{target.file_name}")
        try:
            with contextlib.suppress(LabError):  # it may have ended already
                helper.signal("SIGINT")
            helper.wait(timeout=self.config.stop_timeout)
            data = helper.read_file(HELPER_PATH)
            if not is_pcap(data):
                return _record(target, error="tcpdump wrote no pcap header")
            path = self.folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return _record(target, file=str(relative), size=len(data))
        except (LabError, OSError) as exc:
            return _record(target, error=f"not kept: {exc}")
        finally:
            # The pcap is kept or reported either way; a helper that will not go is
            # left for `lab down` (it carries the project label).
            with contextlib.suppress(LabError):
                helper.remove()


def _record(
    target: CaptureTarget, *, file: str | None = None, size: int = 0, error: str | None = None
) -> PcapRecord:
    return PcapRecord(
        link=target.label,
        service=target.service,
        delivered=target.delivered,
        file=file,
        size=size,
        error=error,
    )
