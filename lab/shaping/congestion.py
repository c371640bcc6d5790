"""TCP congestion control per service: names, and the steps that set it in a namespace.

Pure. Measured on this lab's host (kernel 6.18, 2026-12): the default is
``bbr``, ``tcp_available_congestion_control`` is ``reno bbr cubic`` and
``tcp_allowed_congestion_control`` is ``reno bbr``. A network namespace
other than the host's may only *default* to an allowed algorithm: writing
``net.ipv4.tcp_congestion_control=cubic`` in a container's namespace fails
with EPERM, both through Compose/``docker run --sysctl`` (runc reports
"operation not permitted") and from a NET_ADMIN helper (its ``/proc/sys``
is read-only anyway). An unprivileged process may not pick cubic with
``setsockopt(TCP_CONGESTION)`` either. What works, and needs only
NET_ADMIN in the namespace, is a **per-route** algorithm:
``ip route change ROUTE congctl cubic`` makes every new TCP connection over
that route use cubic (checked with ``getsockopt(TCP_CONGESTION)`` in an
unprivileged service: ``cubic``), and the host is left alone. So
:func:`congestion_steps` rewrites each route of the main table with
``congctl``; :func:`congestion_sysctls` is there for algorithms the host
allows (Compose ``sysctls:``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from lab.shaping.builders import Step
from lab.shaping.errors import ShapingError, SpecError

# Linux's TCP congestion control modules (net/ipv4/tcp_*.c), by the name they register.
KNOWN_ALGORITHMS = (
    "reno",
    "cubic",
    "bbr",
    "bic",
    "cdg",
    "dctcp",
    "highspeed",
    "htcp",
    "hybla",
    "illinois",
    "lp",
    "nv",
    "scalable",
    "vegas",
    "veno",
    "westwood",
    "yeah",
)
SYSCTL = "net.ipv4.tcp_congestion_control"
AVAILABLE_FILE = "/proc/sys/net/ipv4/tcp_available_congestion_control"
_DEFAULT = "/proc/sys/net/ipv4/tcp_congestion_control"
# TCP_CA_NAME_MAX is 16 bytes with the terminating NUL
_NAME = re.compile(r"[a-z][a-z0-9_]{0,14}")


def parse_congestion(text: str, *, option: str = "--congestion") -> str:
    """``cubic`` -> ``cubic``; anything but a Linux algorithm's name is a one-line SpecError."""
    name = text.strip().lower()
    if not _NAME.fullmatch(name) or name not in KNOWN_ALGORITHMS:
        raise SpecError(
            f"{option}: {text!r} is not a TCP congestion control "
            f"(one of: {', '.join(KNOWN_ALGORITHMS)})"
        )
    return name


def parse_congestion_list(text: str, *, option: str = "--congestion") -> tuple[str, ...]:
    """``cubic,bbr`` -> ("cubic", "bbr") for a sweep; order kept, repeats dropped."""
    names = [part for part in text.split(",") if part.strip()]
    if not names:
        raise SpecError(f"{option}: give at least one algorithm, e.g. cubic,bbr")
    return tuple(dict.fromkeys(parse_congestion(name, option=option) for name in names))


def check_available(name: str, available: str, *, service: str) -> None:
    """ShapingError unless ``name`` is in the namespace's ``tcp_available_congestion_control``."""
    offered = available.split()
    if name not in offered:
        raise ShapingError(
            f"{service}: TCP congestion control {name!r} is not available in this kernel "
            f"(available: {' '.join(offered) or 'none'})"
        )


def _route_script(congctl: str) -> str:
    # Each route of the main table is changed in place, minus any congctl it had.
    return (
        "set -f\n"
        "ip -o route show table main"
        " | sed -e 's/ congctl \\(lock \\)\\{0,1\\}[^ ]*//' -e 's/ *$//'"
        " | while read -r route; do\n"
        f"  ip route change $route{congctl} || exit 1\n"
        "done\n"
    )


def congestion_steps(name: str | None, *, available_file: str = AVAILABLE_FILE) -> list[Step]:
    """In a service's namespace (NET_ADMIN helper): new TCP connections use ``name``.

    ``None`` removes the per-route setting, back to the namespace's default.
    The name is checked against the kernel's available list first, so a
    missing module gives one clear line instead of ``ip``'s error.
    """
    if name is None:
        return [Step(("sh", "-c", _route_script("")))]
    algorithm = parse_congestion(name)
    check = (
        f"available=$(cat {shlex.quote(available_file)})\n"
        'case " $available " in *" $1 "*) ;; *)\n'
        '  echo "TCP congestion control $1 is not available (available: $available)" >&2\n'
        "  exit 3;;\n"
        "esac\n"
    )
    return [
        Step(("sh", "-c", check, "sh", algorithm)),
        Step(("sh", "-c", _route_script(f" congctl {shlex.quote(algorithm)}"))),
    ]


STATE_SCRIPT = (
    f'echo "default=$(cat {_DEFAULT})"\n'
    f'echo "available=$(cat {AVAILABLE_FILE})"\n'
    'ip -o route show table main | sed -e "s/^/route=/"\n'
)


@dataclass(frozen=True)
class CongestionState:
    """What a namespace uses: its default, what the kernel offers, the routes' congctl."""

    default: str
    available: tuple[str, ...]
    routes: tuple[str | None, ...]

    @property
    def in_use(self) -> str:
        """The algorithm new lab connections get: the routes' one if they all agree, else default."""
        chosen = {route for route in self.routes if route is not None}
        if len(chosen) == 1 and None not in self.routes:
            return chosen.pop()
        if not chosen:
            return self.default
        return "mixed: " + ", ".join(
            sorted(chosen | ({self.default} if None in self.routes else set()))
        )


_CONGCTL = re.compile(r"\bcongctl (?:lock )?(\S+)")


def parse_state(text: str) -> CongestionState:
    """Read :data:`STATE_SCRIPT`'s output."""
    default = ""
    available: tuple[str, ...] = ()
    routes: list[str | None] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "default":
            default = value.strip()
        elif key == "available":
            available = tuple(value.split())
        elif key == "route":
            match = _CONGCTL.search(value)
            routes.append(match.group(1) if match else None)
    if not default:
        raise ShapingError(f"could not read the congestion control state: {text.strip()[:200]!r}")
    return CongestionState(default=default, available=available, routes=tuple(routes))


def congestion_sysctls(name: str) -> dict[str, str]:
    """Compose ``sysctls:`` for a service that defaults to ``name``.

    Only for algorithms in the host's ``tcp_allowed_congestion_control``
    (here reno and bbr): for any other, container creation fails with EPERM
    and :func:`congestion_steps` is the way.
    """
    return {SYSCTL: parse_congestion(name)}
