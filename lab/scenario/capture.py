"""``lab run --capture``: a pcap per shaped link, kept under ``results/<run-id>/pcap/``.

What to capture is pure (:func:`capture_targets`, :func:`tcpdump_argv`); the thin
I/O part (:class:`Capturer`) runs ``tcpdump -w`` in a netkit helper joined to the
source service's network namespace (the service image has no tcpdump and no
capabilities), waits until tcpdump is listening, and at the end of the scenario
stops it with SIGINT (so it flushes and closes the file properly), copies the
file out and removes the helper. Helpers carry the project label, so ``lab down``
removes any that a crash left behind.

A link ``a -> b`` is captured in ``a``'s network namespace, filtered to traffic
with ``b``'s addresses (IPv4 and IPv6; both directions, as ``a`` sees them). With no shaped link,
the client's traffic is captured instead. A service that a fault restarts gets a
new namespace: its capture ends there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from lab.errors import HelperNotReady, LabError
from lab.interface import HelperContainer, Lab
from lab.scenario.plan import Scenario
from lab.scenario.report import PcapRecord

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


class CaptureError(LabError):
    """A capture could not be started, stopped or copied out."""


@dataclass(frozen=True, kw_only=True)
class CaptureTarget:
    """Capture in ``service``'s network namespace; only traffic with ``peer`` if given."""

    service: str
    peer: str | None = None

    @property
    def label(self) -> str:
        return f"{self.service} -> {self.peer}" if self.peer else f"{self.service} (all traffic)"

    @property
    def file_name(self) -> str:
        return f"{self.service}-to-{self.peer}.pcap" if self.peer else f"{self.service}.pcap"


def capture_targets(
    scenario: Scenario, *, default_service: str = DEFAULT_SERVICE
) -> list[CaptureTarget]:
    """One target per shaped direction (declared links, then ``shape`` faults), in
    order and without repeats; the default service's traffic when nothing is shaped."""
    pairs = [(link.source, link.dest) for link in scenario.links]
    pairs += [(f.services[0], f.services[1]) for f in scenario.faults if f.action == "shape"]
    targets = [CaptureTarget(service=source, peer=dest) for source, dest in dict.fromkeys(pairs)]
    return targets or [CaptureTarget(service=default_service)]


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
        for target in targets:
            try:
                self.helpers.append((target, self._start_one(target)))
            except LabError as exc:
                self.failed.append(PcapRecord(link=target.label, error=f"not started: {exc}"))

    def _start_one(self, target: CaptureTarget) -> HelperContainer:
        peer_ip = self.lab.ip(target.peer) if target.peer else None
        others: list[str] = []
        if target.peer:
            # Every address of the peer: its IPv6 ones too, and those on other networks.
            with contextlib.suppress(LabError):
                peer = self.lab.topology().one(target.peer)
                others = [ip for ip in peer.ips() if ip != peer_ip]
        argv = tcpdump_argv(peer_ip=peer_ip, snaplen=self.config.snaplen, also=others)
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
                return PcapRecord(link=target.label, error="tcpdump wrote no pcap header")
            path = self.folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return PcapRecord(link=target.label, file=str(relative), size=len(data))
        except (LabError, OSError) as exc:
            return PcapRecord(link=target.label, error=f"not kept: {exc}")
        finally:
            # The pcap is kept or reported either way; a helper that will not go is
            # left for `lab down` (it carries the project label).
            with contextlib.suppress(LabError):
                helper.remove()
