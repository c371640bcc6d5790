"""Steps that are not one command run to its end: daemons, readiness waits, copies (pure).

* **Daemons** (``daemon: true``): the command starts in its container and keeps
  running while the other steps run; then it is stopped, SIGTERM first and
  SIGKILL after ``grace`` seconds. A Docker exec cannot be signalled, so the
  command runs under a small ``sh`` wrapper (:func:`daemon_argv`) that writes
  its process id and sends its output to files in a folder of its own
  (``SOCKETLAB_SCENARIO_DAEMON_DIR``, default ``/tmp``); the runner signals
  that process (:func:`signal_argv`) and reads the files (:func:`output_argv`)
  while it runs (a ``wait_for`` on its log) and when it has stopped. The
  image needs ``sh``, ``kill``, ``cat`` and ``tail`` (any Debian, Alpine or
  busybox image has them).
* **Waits** (``wait_for``): :class:`Wait`, one of ``tcp``, ``udp``, ``http``
  (probed from a netkit helper in a namespace: :func:`probe_argv`, which runs
  ``socketlab wait``, the whole wait in one helper), ``log`` (a regex in a
  service's log or a daemon's output) and ``file`` (a file exists), each
  within the step's ``timeout``.
* **Copies** (``copy``): :class:`Copy`, host -> ``service[.N]:path`` (a host
  path relative to the scenario's folder, never outside the project) or
  ``service[.N]:path`` -> the scenario's results folder (``copied/``).

:func:`build_wait` and :func:`build_copy` turn a step's YAML into these,
adding located problems through the plan's collector.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from lab.addressing import is_file_target

DEFAULT_GRACE: Final = 5.0
DEFAULT_INTERVAL: Final = 0.2
DEFAULT_COPY_TIMEOUT: Final = 120.0
NETWORK_WAITS: Final = frozenset({"tcp", "udp", "http"})
# How long one try of a network wait may take, at most.
TRY_TIMEOUT: Final = 1.0
COPIED: Final = "copied"  # the folder under a scenario's results that copies go to

# What each wait kind may be qualified with (beyond interval).
_WAIT_OPTIONS: Final[Mapping[str, frozenset[str]]] = {
    "tcp": frozenset({"from"}),
    "udp": frozenset({"from", "send", "expect"}),
    "http": frozenset({"from", "status"}),
    "log": frozenset({"service", "daemon", "stream"}),
    "file": frozenset(),
}
_SAFE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")
_URL_HOST = re.compile(r"^https?://(\[[^\]]+\]|[^/:?#]+)")

AddProblem = Callable[[Sequence[str | int], str], None]


# --------------------------------------------------------------------------- daemons

_DAEMON_SCRIPT: Final = (
    'mkdir -p "$0" && echo $$ > "$0/pid" && exec "$@" > "$0/stdout" 2> "$0/stderr"'
)
# Waits (bounded: 50 tries, 5 s) for the pid file of a daemon that was stopped at once.
_SIGNAL_SCRIPT: Final = (
    'i=0; while [ ! -s "$0/pid" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done; '
    'kill -"$1" "$(cat "$0/pid")"'
)


def daemon_folder(base: str, token: str, step: str) -> str:
    """Where one daemon's pid and output go: ``BASE/socketlab-daemon-TOKEN-STEP``."""
    folder = f"{base.rstrip('/')}/socketlab-daemon-{token}-{step}"
    if not _SAFE_DIR.match(folder) or ".." in folder.split("/"):
        raise ValueError(f"{folder!r} is not a plain absolute folder")
    return folder


def daemon_argv(folder: str, run: Sequence[str]) -> list[str]:
    """``run`` under the wrapper that records its pid and output in ``folder``; the
    program replaces the shell (``exec``), so the pid is the program's."""
    return ["sh", "-c", _DAEMON_SCRIPT, folder, *run]


def signal_argv(folder: str, signal: str) -> list[str]:
    """Send ``signal`` (``TERM``, ``KILL``) to the daemon of ``folder``."""
    if signal not in {"TERM", "KILL", "INT"}:
        raise ValueError(f"{signal!r}: a daemon is stopped with TERM, INT or KILL")
    return ["sh", "-c", _SIGNAL_SCRIPT, folder, signal]


def output_argv(folder: str, stream: str, *, limit: int) -> list[str]:
    """The last ``limit`` bytes of the daemon's ``stdout`` or ``stderr``."""
    if stream not in {"stdout", "stderr"}:
        raise ValueError(f"{stream!r} is not stdout or stderr")
    return ["tail", "-c", str(limit), f"{folder}/{stream}"]


def cleanup_argv(folder: str) -> list[str]:
    return ["rm", "-rf", folder]


# --------------------------------------------------------------------------- waits


@dataclass(frozen=True, kw_only=True)
class Wait:
    """What a ``wait_for`` step waits for; ``origin`` is where it looks from.

    ``tcp``/``udp``: ``host``, ``port``; ``http``: ``target`` is the URL and
    ``status`` the answer wanted; ``log``: ``target`` is the regex, ``origin``
    the service (or, with ``daemon``, that daemon step's service); ``file``:
    ``origin`` is the container, ``path`` the file. Network waits probe from
    ``origin``'s namespace: the named ``from`` service, else the target's own.
    """

    kind: str
    target: str
    origin: str
    host: str = ""
    port: int = 0
    status: int = 200
    send: str = "ping"
    expect: str | None = None
    daemon: str | None = None
    stream: str = "both"
    path: str = ""
    interval: float = DEFAULT_INTERVAL

    def describe(self) -> str:
        """``tcp server:7007 (from client)``, ``log /ready/ in server``, ``file client:/x``."""
        match self.kind:
            case "log":
                where = f"daemon {self.daemon}" if self.daemon else self.origin
                return f"log /{self.target}/ in {where}"
            case "file":
                return f"file {self.origin}:{self.path}"
            case "http":
                return f"http {self.target} {self.status} (from {self.origin})"
        return f"{self.kind} {self.target} (from {self.origin})"


def probe_argv(wait: Wait, *, timeout: float) -> list[str]:
    """``socketlab wait ...`` for a network wait, run in ``wait.origin``'s namespace."""
    if wait.kind not in NETWORK_WAITS:
        raise ValueError(f"a {wait.kind} wait is not probed over the network")
    argv = ["socketlab", "wait", "--timeout", f"{timeout:g}", "--interval", f"{wait.interval:g}"]
    argv += ["--try-timeout", f"{min(TRY_TIMEOUT, timeout):g}", wait.kind]
    if wait.kind == "http":
        return [*argv, wait.target, "--status", str(wait.status)]
    argv += [wait.host, str(wait.port)]
    if wait.kind == "udp":
        argv += ["--send", wait.send]
        if wait.expect is not None:
            argv += ["--expect", wait.expect]
    return argv


def split_endpoint(text: str) -> tuple[str, int]:
    """``server:7007`` -> ("server", 7007); ``[fd00::3]:80`` -> ("fd00::3", 80)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def url_host(url: str) -> str:
    match = _URL_HOST.match(url)
    return match[1].strip("[]") if match else ""


def _compile(pattern: str, path: Sequence[str | int], add: AddProblem) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        add(path, f"{pattern!r} is not a regular expression: {exc}")


def _origin(
    kind: str,
    raw: Mapping[str, Any],
    *,
    target_host: str,
    services: Collection[str] | None,
    path: tuple[str | int, ...],
    add: AddProblem,
) -> str:
    """Where a network wait probes from: ``from``, else the target when it is a service."""
    if "from" in raw:
        return str(raw["from"])
    if services is None or target_host in services or _is_replica(target_host, services):
        return target_host
    add((*path, kind), f"{target_host!r} is not a service of the lab: say where to probe from")
    return target_host


def _is_replica(name: str, services: Collection[str]) -> bool:
    service, dot, number = name.rpartition(".")
    return bool(dot) and number.isdigit() and service in services


@dataclass(frozen=True, kw_only=True)
class _WaitContext:
    path: tuple[str | int, ...]
    daemons: Mapping[str, str]
    services: Collection[str] | None
    add: AddProblem


def _endpoint_wait(kind: str, raw: Mapping[str, Any], context: _WaitContext) -> Wait:
    target = str(raw[kind])
    host, port = split_endpoint(target)
    if not 1 <= port <= 65535:
        context.add((*context.path, kind), f"port {port} is not between 1 and 65535")
    if "expect" in raw:
        _compile(str(raw["expect"]), (*context.path, "expect"), context.add)
    origin = _origin(kind, raw, target_host=host, services=context.services,
                     path=context.path, add=context.add)  # fmt: skip
    return Wait(kind=kind, target=target, origin=origin, host=host, port=port,
                send=str(raw.get("send", "ping")), expect=raw.get("expect"),
                interval=float(raw.get("interval", DEFAULT_INTERVAL)))  # fmt: skip


def _http_wait(kind: str, raw: Mapping[str, Any], context: _WaitContext) -> Wait:
    target = str(raw[kind])
    origin = _origin(kind, raw, target_host=url_host(target), services=context.services,
                     path=context.path, add=context.add)  # fmt: skip
    return Wait(kind=kind, target=target, origin=origin, status=int(raw.get("status", 200)),
                interval=float(raw.get("interval", DEFAULT_INTERVAL)))  # fmt: skip


def _log_wait(kind: str, raw: Mapping[str, Any], context: _WaitContext) -> Wait | None:
    target = str(raw[kind])
    _compile(target, (*context.path, "log"), context.add)
    given = [key for key in ("service", "daemon") if key in raw]
    if len(given) != 1:
        context.add(
            context.path,
            "a log wait reads one of: service (its log) or daemon (a daemon step's output)",
        )
        return None
    daemon = raw.get("daemon")
    if daemon is not None and daemon not in context.daemons:
        known = ", ".join(context.daemons) or "none"
        context.add(
            (*context.path, "daemon"),
            f"no daemon step {daemon!r} before this one (daemons: {known})",
        )
        return None
    origin = context.daemons[daemon] if daemon is not None else str(raw["service"])
    return Wait(kind=kind, target=target, origin=origin, daemon=daemon,
                stream=str(raw.get("stream", "both")),
                interval=float(raw.get("interval", DEFAULT_INTERVAL)))  # fmt: skip


def _file_wait(kind: str, raw: Mapping[str, Any], context: _WaitContext) -> Wait:
    target = str(raw[kind])
    service, _, file_path = target.partition(":")
    return Wait(kind=kind, target=target, origin=service, path=file_path,
                interval=float(raw.get("interval", DEFAULT_INTERVAL)))  # fmt: skip


_WAIT_BUILDERS: Final[
    Mapping[str, Callable[[str, Mapping[str, Any], _WaitContext], Wait | None]]
] = {
    "tcp": _endpoint_wait,
    "udp": _endpoint_wait,
    "http": _http_wait,
    "log": _log_wait,
    "file": _file_wait,
}


def build_wait(
    raw: Mapping[str, Any],
    *,
    path: tuple[str | int, ...],
    daemons: Mapping[str, str],
    services: Collection[str] | None,
    add: AddProblem,
) -> Wait | None:
    """The :class:`Wait` of a step's ``wait_for`` mapping (``path`` points at it);
    ``daemons``: the daemon steps before this one, by name, with their service."""
    kinds = [kind for kind in _WAIT_OPTIONS if kind in raw]
    if len(kinds) != 1:
        add(path, f"waits for exactly one of: {', '.join(_WAIT_OPTIONS)} (got {len(kinds)})")
        return None
    kind = kinds[0]
    allowed = _WAIT_OPTIONS[kind] | {kind, "interval"}
    for key in sorted(set(raw) - allowed):
        add((*path, key), f"'{key}' does not go with a {kind} wait")
    context = _WaitContext(path=path, daemons=daemons, services=services, add=add)
    return _WAIT_BUILDERS[kind](kind, raw, context)


# --------------------------------------------------------------------------- copies


@dataclass(frozen=True, kw_only=True)
class Copy:
    """A copy between the host and a container (``into``: host -> container)."""

    source: str
    dest: str
    into: bool

    @property
    def container(self) -> str:
        """``service[.N]:path`` of the container side."""
        return self.dest if self.into else self.source

    @property
    def service(self) -> str:
        return self.container.partition(":")[0]

    def describe(self) -> str:
        return f"copy {self.source} -> {self.dest}"


def _looks_like_target(text: str, services: Collection[str] | None) -> bool:
    if services is not None:
        return is_file_target(text, services)
    name, sep, rest = text.partition(":")
    return bool(sep) and "/" not in name and rest.startswith("/")


def host_relative(text: str) -> PurePosixPath | None:
    """A host path of a copy, relative and without ``..``, else None (refused)."""
    candidate = PurePosixPath(text)
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts:
        return None
    return candidate


def build_copy(
    raw: Mapping[str, Any],
    *,
    path: tuple[str | int, ...],
    services: Collection[str] | None,
    add: AddProblem,
) -> Copy | None:
    """The :class:`Copy` of a step's ``copy`` mapping; exactly one side is in a container."""
    source, dest = str(raw["from"]), str(raw["to"])
    source_in = _looks_like_target(source, services)
    dest_in = _looks_like_target(dest, services)
    if source_in == dest_in:
        add(path, "a copy goes between the host and a container: one side is SERVICE[.N]:/PATH")
        return None
    host_side, key = (source, "from") if dest_in else (dest, "to")
    if host_relative(host_side) is None:
        where = "the scenario's folder" if dest_in else "the scenario's results"
        add((*path, key), f"{host_side!r} must be a relative path inside {where} (no '..')")
        return None
    return Copy(source=source, dest=dest, into=dest_in)


def describe_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)
