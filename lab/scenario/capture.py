"""``lab run --capture``: a pcap per shaped link, kept under ``results/<run-id>/pcap/``.

What to capture is pure (:func:`capture_targets`, :func:`tcpdump_argv`); the thin
I/O part (:class:`Capturer`) runs ``tcpdump -w`` in a netkit helper joined to the
source service's network namespace (the service image has no tcpdump and no
capabilities), waits until tcpdump is listening, and at the end of the scenario
stops it with SIGINT (so it flushes and closes the file properly), copies the
file out and removes the helper. Helpers carry the project label, so ``lab down``
removes any that a crash left behind.

A link ``a -> b`` is captured in ``a``'s network namespace, filtered to traffic
with ``b``'s address (both directions, as ``a`` sees them). With no shaped link,
the client's traffic is captured instead. A service that a fault restarts gets a
new namespace: its capture ends there.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

import docker.errors
import requests.exceptions

from lab.api import PROJECT_LABEL, ROLE_LABEL, Lab
from lab.errors import LabError
from lab.scenario.plan import Scenario
from lab.scenario.report import PcapRecord
from socketlab.config import env_float, env_int

CAPTURE_ROLE: Final = "capture"
DEFAULT_SERVICE: Final = "client"
HELPER_PATH: Final = "/tmp/capture.pcap"  # noqa: S108 - inside the helper's own filesystem
# Bytes kept per packet: headers and the start of the payload, not whole bulk transfers.
SNAPLEN = env_int("SOCKETLAB_CAPTURE_SNAPLEN", 256)
START_TIMEOUT = env_float("SOCKETLAB_CAPTURE_START_TIMEOUT", 30.0)
STOP_TIMEOUT = env_float("SOCKETLAB_CAPTURE_STOP_TIMEOUT", 20.0)
# A helper that is never stopped (the controller died) ends by itself after this.
MAX_SECONDS = env_float("SOCKETLAB_CAPTURE_MAX_SECONDS", 3600.0)
POLL = 0.2
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
    *, peer_ip: str | None, path: str = HELPER_PATH, snaplen: int = SNAPLEN
) -> list[str]:
    """``tcpdump`` writing a pcap: every interface of the namespace, numeric, as root
    (``-Z root``: no privilege drop that could not write ``path``).

    ``--immediate-mode``: without it the kernel hands packets over in blocks (up to
    1 s late), and the packets of a short scenario's last second are still in an
    unfinished block when SIGINT stops tcpdump: lost. ``-U`` then writes each
    packet at once, so the file is whole when tcpdump stops."""
    argv = ["tcpdump", "--immediate-mode", "-i", "any", "-n", "-U", "-Z", "root"]
    argv += ["-s", str(snaplen), "-w", path]
    # Only the lab network: loopback chatter inside the namespace is not the link.
    argv += ["host", peer_ip] if peer_ip else ["not", "net", "127.0.0.0/8"]
    return argv


def is_pcap(head: bytes) -> bool:
    """Whether ``head`` starts with a pcap file's magic number."""
    return head[:4] in PCAP_MAGICS


def pcap_from_archive(archive_bytes: bytes) -> bytes:
    """The single regular file inside a ``get_archive`` tar stream."""
    with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as archive:
        member = archive.next()
        if member is None or not member.isfile():
            raise CaptureError("the capture archive holds no regular file")
        extracted = archive.extractfile(member)
        if extracted is None:  # pragma: no cover - isfile() rules it out
            raise CaptureError("the capture archive holds no regular file")
        return extracted.read()


class Capturer:
    """Runs one tcpdump helper per target for the length of a scenario."""

    def __init__(self, lab: Lab, *, folder: Path, prefix: str) -> None:
        self.lab = lab
        self.folder = folder  # results/<run-id>; pcaps go to folder/pcap/
        self.prefix = prefix  # the scenario's name: one run folder holds many scenarios
        self.helpers: list[tuple[CaptureTarget, Any]] = []
        self.failed: list[PcapRecord] = []

    def start(self, targets: Sequence[CaptureTarget]) -> None:
        """Start every helper and wait until each listens; a failure is recorded, not raised."""
        for target in targets:
            try:
                self.helpers.append((target, self._start_one(target)))
            except (LabError, docker.errors.APIError, requests.exceptions.RequestException) as exc:
                self.failed.append(PcapRecord(link=target.label, error=f"not started: {exc}"))

    def _start_one(self, target: CaptureTarget) -> Any:
        peer_ip = self.lab.ip(target.peer) if target.peer else None
        argv = tcpdump_argv(peer_ip=peer_ip)
        helper = self.lab.docker.containers.run(
            self.lab.netkit_image,
            # `timeout` passes our SIGINT on to tcpdump and ends a forgotten helper.
            ["timeout", "-s", "INT", f"{MAX_SECONDS:g}", *argv],
            network_mode=f"container:{self.lab.container(target.service).id}",
            cap_add=["NET_RAW", "NET_ADMIN"],
            labels={PROJECT_LABEL: self.lab.project, ROLE_LABEL: CAPTURE_ROLE},
            detach=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            helper.reload()
            err = helper.logs(stdout=False, stderr=True).decode(errors="replace")
            if "listening on" in err:
                return helper
            if helper.status in {"exited", "dead"} or time.monotonic() >= deadline:
                with contextlib.suppress(docker.errors.APIError):
                    helper.remove(force=True)
                why = err.strip().splitlines()[-1] if err.strip() else "no output"
                state = "exited" if helper.status in {"exited", "dead"} else "not listening"
                raise CaptureError(f"tcpdump for {target.label} {state}: {why}")
            time.sleep(POLL)  # polling interval of a deadline-bounded wait

    def stop(self) -> list[PcapRecord]:
        """SIGINT every helper, copy its pcap to ``pcap/``, remove it; what was kept."""
        records = list(self.failed)
        for target, helper in self.helpers:
            records.append(self._stop_one(target, helper))
        self.helpers, self.failed = [], []
        return records

    def _stop_one(self, target: CaptureTarget, helper: Any) -> PcapRecord:
        relative = PurePosixPath("pcap", f"{self.prefix}.{target.file_name}")
        try:
            with contextlib.suppress(docker.errors.APIError):  # it may have ended already
                helper.kill(signal="SIGINT")
            helper.wait(timeout=STOP_TIMEOUT)
            chunks, _ = helper.get_archive(HELPER_PATH)
            data = pcap_from_archive(b"".join(chunks))
            if not is_pcap(data):
                return PcapRecord(link=target.label, error="tcpdump wrote no pcap header")
            path = self.folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return PcapRecord(link=target.label, file=str(relative), size=len(data))
        except (
            CaptureError,
            OSError,
            tarfile.TarError,
            docker.errors.APIError,
            requests.exceptions.RequestException,
        ) as exc:
            return PcapRecord(link=target.label, error=f"not kept: {exc}")
        finally:
            with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
                helper.remove(force=True)
