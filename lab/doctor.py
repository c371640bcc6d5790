"""``lab doctor``: can this machine run the lab? One row per prerequisite.

Each row says ``ok``, ``warn`` or ``missing``, what was found, and the one
command that fixes it. A *required* row that is missing means the lab cannot
run: ``lab doctor`` exits 1, and ``lab up`` (``Lab.up``) refuses to start with
that row instead of failing later in a build. The other rows describe the
machine (which shaping engine, IPv6, congestion control, ...) and never stop
the lab.

Every check is a pure function of a :class:`HostProbe` (what the machine
answers) and a :class:`LabConfig`; :class:`LiveProbe` asks the real machine,
tests pass fakes. README's "Requirements" lists exactly :data:`CHECKS` (a unit
test keeps them in step).

Errors (part of ``lab.errors.LabError``)::

    LabError
    └── PrerequisiteMissing     a required row is missing (lab up stops before building)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from lab import engine
from lab.compose import detect_compose_command
from lab.config import LabConfig
from lab.errors import ComposeError, DockerUnavailable, LabError
from lab.images import (
    BASE_PACKAGES,
    BUILD_BASE_PACKAGES,
    AptSource,
    ImageNames,
    base_mirror_lines,
    codename_of,
    host_apt_sources,
    local_base_tag,
)

GIB = 1024**3
# A cold build needs about 1.5 GiB (two local bases, builder, runtime, netkit).
MIN_FREE_DISK = 2 * GIB
LOW_FREE_DISK = 5 * GIB
MIN_PYTHON = (3, 11)
MIN_COMPOSE_V1 = (1, 29)
MIN_ENGINE = (20, 10)
PROBE_TIMEOUT = 20.0  # seconds for one probe command (iptables --version, compose version)
# What the lab's Compose file gives every service (x-socketlab.tcp_congestion).
LAB_CONGESTION = "cubic"


class PrerequisiteMissing(LabError):
    """A required prerequisite is missing: the lab cannot run on this machine."""


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    MISSING = "missing"


@dataclass(frozen=True, kw_only=True)
class Row:
    """One prerequisite as the doctor found it."""

    name: str
    title: str
    status: Status
    found: str
    fix: str = ""
    required: bool = False

    @property
    def blocks(self) -> bool:
        """True when the lab cannot run because of this row."""
        return self.required and self.status is Status.MISSING

    def line(self) -> str:
        """The row as one line (what ``lab up`` prints when it stops)."""
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.title}: {self.status}: {self.found}{fix}"


class HostProbe(Protocol):
    """What the checks ask the machine. Fakes implement it in tests."""

    def python(self) -> tuple[tuple[int, int, int], bool]:
        """The running Python's version, and whether it has venv + ensurepip."""

    def docker_info(self) -> Mapping[str, Any]:
        """The engine's ``docker info``; raises DockerUnavailable."""

    def docker_host(self) -> str: ...

    def which(self, name: str) -> str | None: ...

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        """Exit code and output (127 when the command does not exist)."""

    def read_text(self, path: str) -> str | None:
        """A file's text, None when it cannot be read."""

    def exists(self, path: str) -> bool: ...

    def disk_free(self, path: str) -> int | None:
        """Bytes free for unprivileged use on the filesystem of ``path``."""

    def image_present(self, ref: str) -> bool: ...

    def registry_error(self, ref: str) -> str | None:
        """None when a registry serves ``ref``; else why not."""

    def kernel_release(self) -> str: ...

    def kernel_config(self) -> str | None:
        """The running kernel's config (``/proc/config.gz``, ``/boot/config-*``)."""

    def codename(self) -> str | None:
        """The host's Debian-like release codename, None elsewhere."""

    def apt_sources(self) -> list[AptSource]: ...


# --------------------------------------------------------------------------- checks


def _info(probe: HostProbe) -> Mapping[str, Any] | None:
    try:
        return probe.docker_info()
    except DockerUnavailable:
        return None


def _version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def _foreign_kernel(probe: HostProbe) -> str | None:
    """Why the host's kernel files do not describe the engine's kernel, or None."""
    info = _info(probe)
    engine_kernel = str(info.get("KernelVersion", "")) if info else ""
    if engine_kernel and engine_kernel != probe.kernel_release():
        return f"the engine runs kernel {engine_kernel}, not this host's {probe.kernel_release()}"
    return None


def check_python(probe: HostProbe, config: LabConfig) -> Row:
    version, has_venv = probe.python()
    text = ".".join(str(part) for part in version)
    row = _row("python", status=Status.OK, found=f"Python {text} with venv")
    if version[:2] < MIN_PYTHON:
        return _replace(
            row,
            status=Status.MISSING,
            found=f"Python {text} is older than 3.11",
            fix="sudo apt-get install python3 python3-venv  (3.11 or newer)",
        )
    if not has_venv:
        return _replace(
            row,
            status=Status.MISSING,
            found=f"Python {text} without venv/ensurepip",
            fix="sudo apt-get install python3-venv",
        )
    return row


def _engine_fix(probe: HostProbe, error: str) -> str:
    if probe.which("docker") is None and probe.which("dockerd") is None:
        return "sudo apt-get install docker.io"
    if "permission denied" in error.lower():
        return "sudo usermod -aG docker $USER  (then log in again)"
    return "sudo systemctl start docker"


def check_engine(probe: HostProbe, config: LabConfig) -> Row:
    try:
        info = probe.docker_info()
    except DockerUnavailable as exc:
        return _row(
            "engine", status=Status.MISSING, found=str(exc), fix=_engine_fix(probe, str(exc))
        )
    version = str(info.get("ServerVersion", "") or "")
    parsed = _version(version)
    where = f"at {probe.docker_host()}"
    if parsed is None:
        return _row(
            "engine",
            status=Status.WARN,
            found=f"an engine answers {where} but reports no version ({version!r})",
        )
    system = info.get("OperatingSystem")
    found = f"Docker {version} {where}" + (f", {system}" if system else "")
    if parsed[:2] < MIN_ENGINE:
        return _row(
            "engine",
            status=Status.WARN,
            found=f"{found}: older than 20.10, the oldest the lab is tried with",
            fix="sudo apt-get install docker.io  (or Docker's own packages)",
        )
    return _row("engine", status=Status.OK, found=found)


def check_compose(probe: HostProbe, config: LabConfig) -> Row:
    try:
        argv = detect_compose_command(
            which=probe.which, run=lambda a: probe.run(a)[0], override=config.compose or None
        )
    except ComposeError:
        return _row(
            "compose",
            status=Status.MISSING,
            found="neither 'docker compose' (v2) nor 'docker-compose' (v1.29) answers",
            fix="sudo apt-get install docker-compose",
        )
    command = " ".join(argv)
    code, out = probe.run([*argv, "version", "--short"])
    if code != 0:
        detail = out.strip().splitlines()[-1] if out.strip() else f"exit code {code}"
        return _row(
            "compose",
            status=Status.MISSING,
            found=f"'{command} version' fails: {detail}",
            fix="sudo apt-get install docker-compose",
        )
    version = _version(out)
    if version is None:
        return _row(
            "compose",
            status=Status.WARN,
            found=f"'{command}' answers, but its version is unreadable: {out.strip()[:60]!r}",
        )
    text = ".".join(str(part) for part in version)
    if version[0] >= 2:
        return _row("compose", status=Status.OK, found=f"Compose v2 {text} ({command})")
    if version[:2] < MIN_COMPOSE_V1:
        return _row(
            "compose",
            status=Status.MISSING,
            found=f"Compose v1 {text} ({command}) is older than 1.29",
            fix="sudo apt-get install docker-compose-plugin  (Compose v2)",
        )
    return _row("compose", status=Status.OK, found=f"Compose v1 {text} ({command})")


def check_images(probe: HostProbe, config: LabConfig) -> Row:  # noqa: PLR0911 - a return per answer
    requested = config.images.base_image
    names = ImageNames(namespace=config.images.namespace)
    if probe.image_present(requested):
        return _row("images", status=Status.OK, found=f"{requested} is present")
    codename = probe.codename()
    if codename is not None:
        cached = [
            local_base_tag(codename, BASE_PACKAGES, repo=names.base),
            local_base_tag(codename, BUILD_BASE_PACKAGES, repo=names.build_base),
        ]
        if all(probe.image_present(tag) for tag in cached):
            return _row(
                "images", status=Status.OK, found=f"local bases cached: {', '.join(cached)}"
            )
    error = probe.registry_error(requested)
    if error is None:
        return _row("images", status=Status.OK, found=f"a registry serves {requested}")
    no_registry = f"no registry serves {requested} ({error})"
    if codename is None:
        return _row(
            "images",
            status=Status.MISSING,
            found=f"{no_registry}, and this host has no Debian release to build a base from",
            fix="export SOCKETLAB_BASE_IMAGE=IMAGE  (a Debian-based Python image a registry serves)",
        )
    if probe.which("mmdebstrap") is None:
        return _row(
            "images",
            status=Status.MISSING,
            found=f"mmdebstrap is not installed, {no_registry} and no base image is cached",
            fix="sudo apt-get install mmdebstrap",
        )
    mirrors = base_mirror_lines(probe.apt_sources(), codename)
    if not mirrors:
        return _row(
            "images",
            status=Status.MISSING,
            found=f"no apt mirror for {codename} in /etc/apt, {no_registry}",
            fix=f"echo 'deb http://deb.debian.org/debian {codename} main' "
            "| sudo tee /etc/apt/sources.list.d/socketlab.list",
        )
    return _row(
        "images",
        status=Status.OK,
        found=f"{no_registry}: mmdebstrap builds the bases from {mirrors[0]}"
        + (f" (+{len(mirrors) - 1} more)" if len(mirrors) > 1 else ""),
    )


def check_disk(probe: HostProbe, config: LabConfig) -> Row:
    info = _info(probe)
    if info is not None and _foreign_kernel(probe) is not None:
        return _row(
            "disk",
            status=Status.WARN,
            found="the engine runs on another machine or VM: its free disk cannot be read here",
        )
    path = str(info.get("DockerRootDir") or "") if info else ""
    path = path or "."
    free = probe.disk_free(path)
    if free is None:
        return _row("disk", status=Status.WARN, found=f"cannot measure the free space at {path}")
    found = f"{free / GIB:.1f} GiB free at {path}"
    if free < MIN_FREE_DISK:
        return _row(
            "disk",
            status=Status.MISSING,
            found=f"{found}; a first build needs about 1.5 GiB",
            fix="docker image prune",
        )
    if free < LOW_FREE_DISK:
        return _row(
            "disk",
            status=Status.WARN,
            found=f"{found}: enough for one build, tight for more",
            fix="docker image prune",
        )
    return _row("disk", status=Status.OK, found=found)


def _config_option(config: str | None, option: str) -> bool | None:
    """``CONFIG_X=y/m`` → True, ``# CONFIG_X is not set`` → False, unknown → None."""
    if config is None:
        return None
    if re.search(rf"^{option}=[ym]$", config, re.MULTILINE):
        return True
    if re.search(rf"^# {option} is not set$", config, re.MULTILINE):
        return False
    return None


def _kernel_has(probe: HostProbe, option: str, module: str, *evidence: str) -> bool | None:
    """Whether the running kernel has ``option`` (built in or a module), None when unknown."""
    if any(probe.exists(path) for path in (f"/sys/module/{module}", *evidence)):
        return True
    modules = f"/lib/modules/{probe.kernel_release()}"
    builtin = probe.read_text(f"{modules}/modules.builtin") or ""
    listed = probe.read_text(f"{modules}/modules.dep") or ""
    if re.search(rf"/{module}\.ko", builtin + listed):
        return True
    return _config_option(probe.kernel_config(), option)


def check_shaping(probe: HostProbe, config: LabConfig) -> Row:
    if (note := _foreign_kernel(probe)) is not None:
        return _row(
            "shaping",
            status=Status.WARN,
            found=f"{note}: lab shape probes that kernel when it runs (netem, else NFQUEUE)",
        )
    netem = _kernel_has(probe, "CONFIG_NET_SCH_NETEM", "sch_netem")
    queue = _kernel_has(
        probe,
        "CONFIG_NETFILTER_NETLINK_QUEUE",
        "nfnetlink_queue",
        "/proc/net/netfilter/nfnetlink_queue",
    )
    target = _config_option(probe.kernel_config(), "CONFIG_NETFILTER_XT_TARGET_NFQUEUE")
    nfqueue = queue if target is not False else False
    if netem:
        return _row("shaping", status=Status.OK, found="sch_netem present: the netem engine")
    if nfqueue:
        netem_text = "no sch_netem" if netem is False else "sch_netem not found"
        return _row(
            "shaping",
            status=Status.OK,
            found=f"{netem_text}; NFQUEUE usable: the nfqueue engine (userspace verdict loop)",
        )
    if netem is False and nfqueue is False:
        return _row(
            "shaping",
            status=Status.MISSING,
            found="neither sch_netem nor NFQUEUE: the lab runs, but cannot shape links",
            fix="sudo modprobe sch_netem",
        )
    return _row(
        "shaping",
        status=Status.WARN,
        found="cannot tell from this kernel's files: lab shape probes netem, else NFQUEUE",
    )


_IPTABLES = re.compile(r"iptables v(?P<version>[\d.]+)(?: \((?P<backend>nf_tables|legacy)\))?")


def check_iptables(probe: HostProbe, config: LabConfig) -> Row:
    for command in ("iptables", "/usr/sbin/iptables", "/sbin/iptables"):
        code, out = probe.run([command, "--version"])
        if code != 127:
            break
    else:
        return _row(
            "iptables",
            status=Status.WARN,
            found="no iptables on this host: cannot tell which backend Docker's rules use",
            fix="sudo apt-get install iptables",
        )
    match = _IPTABLES.search(out)
    if code != 0 or match is None:
        return _row(
            "iptables", status=Status.WARN, found=f"unexpected answer: {out.strip()[:80]!r}"
        )
    backend = match["backend"] or "legacy"
    found = f"{backend} (iptables v{match['version']} on this host)"
    if _config_option(probe.kernel_config(), "CONFIG_NF_TABLES") is False:
        return _row(
            "iptables",
            status=Status.WARN,
            found=f"{found}; the kernel has no nf_tables, which the helper's iptables-nft needs",
        )
    return _row(
        "iptables",
        status=Status.OK,
        found=f"{found}; the shaping helper uses iptables-nft in the lab's own namespaces",
    )


def check_ipv6(probe: HostProbe, config: LabConfig) -> Row:
    if (note := _foreign_kernel(probe)) is not None:
        return _row("ipv6", status=Status.WARN, found=f"{note}: cannot read its IPv6 setting")
    value = probe.read_text("/proc/sys/net/ipv6/conf/all/disable_ipv6")
    if value is None:
        return _row(
            "ipv6",
            status=Status.WARN,
            found="this kernel runs without IPv6 (no /proc/sys/net/ipv6)",
            fix="remove ipv6.disable=1 from the kernel command line",
        )
    if value.strip() == "0":
        return _row("ipv6", status=Status.OK, found="enabled (net.ipv6.conf.all.disable_ipv6=0)")
    if value.strip() == "1":
        return _row(
            "ipv6",
            status=Status.WARN,
            found="disabled (net.ipv6.conf.all.disable_ipv6=1): lab networks get no IPv6",
            fix="sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0",
        )
    return _row("ipv6", status=Status.WARN, found=f"unexpected disable_ipv6 value {value!r}")


MATHIS = "rate ≈ MSS/RTT·1.22/√p"


def check_congestion(probe: HostProbe, config: LabConfig) -> Row:
    """Whether the lab can give its services cubic: the host's default no longer matters,
    since ``lab up`` sets each service's algorithm per route in its own namespace."""
    if (note := _foreign_kernel(probe)) is not None:
        return _row("congestion", status=Status.WARN, found=f"{note}: cannot read what it offers")
    available = (
        probe.read_text("/proc/sys/net/ipv4/tcp_available_congestion_control") or ""
    ).split()
    default = (probe.read_text("/proc/sys/net/ipv4/tcp_congestion_control") or "").strip()
    host = f"the host's default ({default or 'unreadable'})"
    if not available:
        return _row(
            "congestion",
            status=Status.WARN,
            found="cannot read net.ipv4.tcp_available_congestion_control: the lab's cubic "
            "may not be settable",
        )
    if LAB_CONGESTION not in available:
        return _row(
            "congestion",
            status=Status.WARN,
            found=f"{LAB_CONGESTION} is not in this kernel (available: {' '.join(available)}): "
            f"lab up cannot give services the lab's default, and they keep {host}, whose "
            f"TCP need not follow the Mathis bound ({MATHIS}) under loss",
            fix=f"sudo modprobe tcp_{LAB_CONGESTION}",
        )
    return _row(
        "congestion",
        status=Status.OK,
        found=f"the lab sets {LAB_CONGESTION} per service in its own namespace "
        f"(x-socketlab.tcp_congestion), so TCP under loss follows the Mathis bound ({MATHIS}); "
        f"{host} does not matter for the lab (available: {' '.join(available)})",
    )


def check_cgroup(probe: HostProbe, config: LabConfig) -> Row:
    info = _info(probe)
    if info is not None:
        version = str(info.get("CgroupVersion", "") or "")
        driver = info.get("CgroupDriver")
        if version in {"1", "2"}:
            detail = f" ({driver} driver)" if driver else ""
            return _row("cgroup", status=Status.OK, found=f"cgroup v{version}{detail}")
        if version:
            return _row(
                "cgroup", status=Status.WARN, found=f"the engine reports cgroup {version!r}"
            )
    if probe.exists("/sys/fs/cgroup/cgroup.controllers"):
        return _row("cgroup", status=Status.OK, found="cgroup v2 (this host's /sys/fs/cgroup)")
    if probe.exists("/sys/fs/cgroup"):
        return _row("cgroup", status=Status.OK, found="cgroup v1 (this host's /sys/fs/cgroup)")
    return _row(
        "cgroup", status=Status.WARN, found="cannot tell: no engine answer, no /sys/fs/cgroup"
    )


@dataclass(frozen=True, kw_only=True)
class Check:
    """One prerequisite: its row name, title, whether the lab needs it, and its check."""

    name: str
    title: str
    required: bool
    run: Callable[[HostProbe, LabConfig], Row]


CHECKS: tuple[Check, ...] = (
    Check(name="python", title="Python", required=True, run=check_python),
    Check(name="engine", title="Docker engine", required=True, run=check_engine),
    Check(name="compose", title="Compose", required=True, run=check_compose),
    Check(name="images", title="Base images", required=True, run=check_images),
    Check(name="disk", title="Free disk", required=True, run=check_disk),
    Check(name="shaping", title="Shaping engine", required=False, run=check_shaping),
    Check(name="iptables", title="iptables backend", required=False, run=check_iptables),
    Check(name="ipv6", title="IPv6", required=False, run=check_ipv6),
    Check(name="congestion", title="TCP congestion control", required=False, run=check_congestion),
    Check(name="cgroup", title="cgroup version", required=False, run=check_cgroup),
)
_BY_NAME = {check.name: check for check in CHECKS}


def _row(name: str, *, status: Status, found: str, fix: str = "") -> Row:
    check = _BY_NAME[name]
    return Row(
        name=name,
        title=check.title,
        status=status,
        found=found,
        fix=fix,
        required=check.required,
    )


def _replace(row: Row, **changes: Any) -> Row:
    return Row(**{**asdict(row), **changes})


def run_checks(probe: HostProbe, config: LabConfig, *, required_only: bool = False) -> list[Row]:
    """Every check's row, in :data:`CHECKS` order (only the required ones if asked)."""
    return [check.run(probe, config) for check in CHECKS if check.required or not required_only]


def lab_can_run(rows: Sequence[Row]) -> bool:
    return not any(row.blocks for row in rows)


# --------------------------------------------------------------------------- the machine


class _NoAnswer(LabError):
    """The engine did not answer a registry question in time."""


class LiveProbe:
    """:class:`HostProbe` answered by this machine and its Docker engine."""

    def __init__(self, *, registry_timeout: float, docker_host: str) -> None:
        self._registry_timeout = registry_timeout
        self._docker_host = docker_host
        self._client: Any = None
        self._info: Mapping[str, Any] | None = None
        self._error: DockerUnavailable | None = None

    def _docker(self) -> Any:
        if self._error is not None:
            raise self._error
        if self._client is None:
            try:
                self._client = engine.connect(
                    engine.client_factory(timeout=self._registry_timeout),
                    host=self._docker_host,
                )
            except DockerUnavailable as exc:
                self._error = exc
                raise
        return self._client

    def python(self) -> tuple[tuple[int, int, int], bool]:
        has_venv = all(importlib.util.find_spec(name) for name in ("venv", "ensurepip"))
        major, minor, micro = sys.version_info[:3]
        return (major, minor, micro), has_venv

    def docker_info(self) -> Mapping[str, Any]:
        if self._info is None:
            try:
                with engine.docker_errors("docker info failed"):
                    self._info = dict(self._docker().info())
            except DockerUnavailable:
                raise
            except LabError as exc:
                self._error = DockerUnavailable(str(exc))
                raise self._error from exc
        return self._info

    def docker_host(self) -> str:
        return self._docker_host

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        try:
            result = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
            )
        except FileNotFoundError:
            return 127, ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 126, str(exc)
        return result.returncode, result.stdout + result.stderr

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def disk_free(self, path: str) -> int | None:
        # /var/lib/docker is often unreadable for users: its parent is the same disk.
        for candidate in (Path(path), *Path(path).resolve().parents):
            with contextlib.suppress(OSError):
                stats = os.statvfs(candidate)
                return stats.f_bavail * stats.f_frsize
        return None

    def image_present(self, ref: str) -> bool:
        try:
            with engine.docker_errors(f"image {ref}"):
                self._docker().images.get(ref)
        except LabError:  # no engine, no such image, or no answer: not present
            return False
        return True

    def registry_error(self, ref: str) -> str | None:
        try:
            with engine.docker_errors("registry", http_error=_NoAnswer):
                self._docker().api.inspect_distribution(ref)
        except DockerUnavailable:
            return "no Docker engine to ask"
        except _NoAnswer as exc:
            cause = type(exc.__cause__).__name__
            return _short(f"no answer in {self._registry_timeout:g} s ({cause})")
        except LabError as exc:
            return _short(str(exc).removeprefix("registry: "))
        return None

    def kernel_release(self) -> str:
        return os.uname().release

    def kernel_config(self) -> str | None:
        with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
            return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
        return self.read_text(f"/boot/config-{self.kernel_release()}")

    def codename(self) -> str | None:
        return codename_of(self.read_text("/etc/os-release") or "")

    def apt_sources(self) -> list[AptSource]:
        try:
            return host_apt_sources()
        except OSError:
            return []


def _short(text: str) -> str:
    """A registry error without its URL noise: the DNS or TCP reason is what matters."""
    text = " ".join(text.split())
    match = re.search(r"lookup (\S+)(?: on \S+)?: (.+)$", text)
    if match:
        return f"cannot resolve {match.group(1)}: {match.group(2)}"
    return text if len(text) <= 120 else text[:117] + "..."


def diagnose(*, probe: HostProbe | None = None, config: LabConfig | None = None) -> list[Row]:
    """Every row for this machine."""
    config = config or LabConfig.from_env()
    probe = probe or LiveProbe(
        registry_timeout=config.images.registry_timeout, docker_host=config.docker_host
    )
    return run_checks(probe, config)


def require_prerequisites(
    *, probe: HostProbe | None = None, config: LabConfig | None = None
) -> list[Row]:
    """Run the required checks; PrerequisiteMissing naming each missing row and its fix."""
    config = config or LabConfig.from_env()
    probe = probe or LiveProbe(
        registry_timeout=config.images.registry_timeout, docker_host=config.docker_host
    )
    rows = run_checks(probe, config, required_only=True)
    blocking = [row for row in rows if row.blocks]
    if blocking:
        raise PrerequisiteMissing(
            "; ".join(row.line() for row in blocking) + "  (lab doctor shows every check)"
        )
    return rows


# --------------------------------------------------------------------------- CLI

_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.MISSING: "bold red"}


def rows_json(rows: Sequence[Row]) -> str:
    document = {
        "can_run": lab_can_run(rows),
        "rows": [{**asdict(row), "status": str(row.status)} for row in rows],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def print_rows(rows: Sequence[Row]) -> None:
    from rich.console import Console  # noqa: PLC0415 - keep `lab --help` fast
    from rich.table import Table  # noqa: PLC0415

    console = Console(emoji=False, highlight=False, width=None if sys.stdout.isatty() else 160)
    table = Table(title="lab doctor", title_justify="left")
    for column in ("check", "status", "found", "fix"):
        table.add_column(column, no_wrap=column in {"check", "status"})
    for row in rows:
        title = row.title + ("" if row.required else " ·")
        table.add_row(title, f"[{_STYLE[row.status]}]{row.status}[/]", row.found, row.fix)
    console.print(table)
    verdict = "the lab can run here" if lab_can_run(rows) else "the lab cannot run here"
    console.print(f"{verdict} (· marks rows that never stop the lab)", markup=False)


def cmd_doctor(args: argparse.Namespace) -> int:
    rows = diagnose(config=args.config)
    if args.json:
        sys.stdout.write(rows_json(rows) + "\n")
    else:
        print_rows(rows)
    return 0 if lab_can_run(rows) else 1


def register(subparsers: Any) -> None:
    """Add ``lab doctor [--json]``."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check this machine's prerequisites (exit 1 when the lab cannot run)",
        description="One row per prerequisite: ok / warn / missing, what was found, the fix.",
    )
    doctor.add_argument("--json", action="store_true", help="print the rows as JSON")
    doctor.set_defaults(func=cmd_doctor)
