"""Helper containers: throwaway netkit containers joined to a service's network namespace.

:meth:`lab.api.Lab.start_helper` is the one place that starts them; this module
holds what it is built from: the pure run options (namespace, capabilities,
labels), :class:`DockerHelper` (a helper whose Docker errors come out as
LabErrors) and the tar unpacking that copies a file out of a container.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from lab.engine import docker_errors
from lab.errors import CommandTimeout, DockerNotFound, LabError
from lab.interface import VOLUME_ACCESS, VolumeAccess

PROJECT_LABEL = "io.socketlab.project"
ROLE_LABEL = "io.socketlab.role"


def single_file(archive_bytes: bytes, *, what: str) -> bytes:
    """The one regular file in a ``get_archive`` tar stream; LabError naming ``what``."""
    try:
        # Docker sends a plain tar stream: no guessing among compressions.
        with tarfile.open(fileobj=io.BytesIO(archive_bytes), mode="r:") as archive:
            member = archive.next()
            extracted = archive.extractfile(member) if member and member.isfile() else None
            if extracted is None:
                raise LabError(f"{what} is not a regular file")
            return extracted.read()
    except tarfile.TarError as exc:
        reason = " ".join(str(exc).split())  # one line
        raise LabError(f"{what}: unreadable archive ({reason})") from exc


def helper_run_options(
    *,
    project: str,
    role: str,
    target_id: str,
    caps: Sequence[str],
    name: str | None,
    labels: Mapping[str, str] | None,
    volumes: VolumeAccess | None = None,
    cpu_shares: int | None = None,
) -> dict[str, Any]:
    """The ``containers.run`` options of a helper (pure): joined to the target's
    network namespace, with exactly ``caps``, labelled so ``lab down`` finds it;
    with ``volumes`` (``"ro"`` or ``"rw"``) it also mounts the target's volumes
    at the same paths (Docker's ``volumes_from``); ``cpu_shares``: its CPU weight
    (Docker's default is 1024), when given."""
    options: dict[str, Any] = {
        "network_mode": f"container:{target_id}",
        "cap_add": list(caps),
        # The project and role labels come last: extra labels cannot hide a helper.
        "labels": {**(labels or {}), PROJECT_LABEL: project, ROLE_LABEL: role},
        "detach": True,
    }
    if name is not None:
        options["name"] = name
    if volumes is not None:
        if volumes not in VOLUME_ACCESS:
            raise ValueError(f"volume access must be one of {VOLUME_ACCESS}, not {volumes!r}")
        options["volumes_from"] = [f"{target_id}:{volumes}"]
    if cpu_shares is not None:
        options["cpu_shares"] = cpu_shares
    return options


class DockerHelper:
    """A helper container (see :class:`lab.interface.HelperContainer`); Docker errors
    come out as LabErrors. ``with`` removes it at the end of the block."""

    def __init__(self, container: Any) -> None:
        self._container = container

    @property
    def name(self) -> str:
        return str(self._container.name)

    @property
    def id(self) -> str:
        return str(self._container.id)

    @property
    def labels(self) -> Mapping[str, str]:
        return dict(self._container.labels)

    @property
    def attrs(self) -> Mapping[str, Any]:
        """Docker's ``inspect`` of the helper as of the last :meth:`reload`."""
        return dict(self._container.attrs)

    @property
    def status(self) -> str:
        return str(self._container.status)

    @property
    def started_at(self) -> str:
        return str(self._container.attrs.get("State", {}).get("StartedAt", ""))

    def reload(self) -> None:
        with docker_errors(f"cannot inspect helper {self.name}"):
            self._container.reload()

    def logs(self, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> str:
        kwargs: dict[str, Any] = {"stdout": stdout, "stderr": stderr}
        if tail is not None:
            kwargs["tail"] = tail
        with docker_errors(f"cannot read logs of helper {self.name}"):
            raw = self._container.logs(**kwargs)
        return bytes(raw).decode(errors="replace")

    def signal(self, signal: str) -> None:
        with docker_errors(f"cannot signal helper {self.name}"):
            self._container.kill(signal=signal)

    def wait(self, *, timeout: float) -> int:
        what = f"helper {self.name} did not finish"
        with docker_errors(what, http_error=CommandTimeout):
            result = self._container.wait(timeout=timeout)
        return int(result["StatusCode"])

    def read_file(self, path: str) -> bytes:
        with docker_errors(f"cannot copy {path} out of helper {self.name}"):
            chunks, _ = self._container.get_archive(path)
            data = b"".join(chunks)
        return single_file(data, what=f"{self.name}:{path}")

    def stop(self, *, timeout: float) -> None:
        with docker_errors(f"cannot stop helper {self.name}"):
            self._container.stop(timeout=max(0, round(timeout)))

    def remove(self) -> None:
        with contextlib.suppress(DockerNotFound), docker_errors(f"cannot remove {self.name}"):
            self._container.remove(force=True)

    def __enter__(self) -> DockerHelper:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.remove()
            return
        # Already failing: a helper that will not go must not hide why.
        with contextlib.suppress(LabError):
            self.remove()


@contextlib.contextmanager
def helper_removed_on_error(helper: DockerHelper) -> Iterator[None]:
    """Remove ``helper`` when the block raises (then re-raise)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(LabError):
            helper.remove()
        raise
