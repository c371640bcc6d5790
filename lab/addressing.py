"""How every ``lab`` command names a container: ``client``, ``client.2``, ``client.2:/path``.

Pure; the one parser behind ``lab status``, ``shape``, ``partition``, ``exec``,
``cp``, ``ping``, a scenario's ``service:`` and a check's ``service:/path``.

* ``SERVICE`` names a Compose service: all its replicas where that makes sense
  (shaping, partitions, faults), the first one where only one fits (``exec``,
  ``cp``, reading a file);
* ``SERVICE.N`` names replica ``N`` (Compose's ``container-number``, from 1);
* ``SERVICE[.N]:PATH`` a path inside that container.

A Compose service name may itself contain dots, so a name is first looked up
whole; only when no service has that name is a trailing ``.N`` a replica.
Errors (:class:`UnknownTarget`) name the services, or the replicas, that exist.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from lab.errors import ServiceNotFound

REPLICA_NAME = re.compile(r"^(?P<service>.+)\.(?P<number>[0-9]{1,6})$")


class UnknownTarget(ServiceNotFound):
    """A name that is no service of the lab, or a replica it does not run."""


@dataclass(frozen=True, order=True)
class Target:
    """A service, or one replica of it (``replica`` None: the whole service)."""

    service: str
    replica: int | None = None

    def __str__(self) -> str:
        return self.service if self.replica is None else f"{self.service}.{self.replica}"


def _listing(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def parse_target(text: str, services: Collection[str]) -> Target:
    """``client`` or ``client.2`` -> :class:`Target`; UnknownTarget names the services."""
    name = text.strip()
    if name in services:
        return Target(name)
    match = REPLICA_NAME.match(name)
    if match and match["service"] in services:
        number = int(match["number"])
        if number < 1:
            raise UnknownTarget(f"{name!r}: replicas are numbered from 1 ({match['service']}.1)")
        return Target(match["service"], number)
    raise UnknownTarget(f"no service {name!r} in the lab (services: {_listing(services)})")


def parse_file_target(text: str, services: Collection[str]) -> tuple[Target, str]:
    """``client.2:/tmp/x`` -> (Target, "/tmp/x"); the path must be absolute."""
    name, sep, path = text.partition(":")
    if not sep or not path:
        raise UnknownTarget(f"{text!r} is not SERVICE[.N]:PATH")
    if not path.startswith("/"):
        raise UnknownTarget(f"{text!r}: the path in a container must be absolute ({name}:/{path})")
    return parse_target(name, services), path


def is_file_target(text: str, services: Collection[str]) -> bool:
    """Whether ``text`` reads as ``SERVICE[.N]:PATH`` of this lab (else: a host path)."""
    name, sep, _ = text.partition(":")
    if not sep or "/" in name:
        return False
    try:
        parse_target(name, services)
    except UnknownTarget:
        return False
    return True


def select_replicas(target: Target, running: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The replica numbers ``target`` means among ``running`` (service -> numbers, ascending).

    A bare service means all of them; ``SERVICE.N`` just ``N``. UnknownTarget
    when nothing of it runs, or names the replicas that do.
    """
    numbers = tuple(sorted(running.get(target.service, ())))
    if not numbers:
        raise UnknownTarget(f"service {target.service!r} has no container (is the lab up?)")
    if target.replica is None:
        return numbers
    if target.replica not in numbers:
        present = ", ".join(f"{target.service}.{n}" for n in numbers)
        raise UnknownTarget(f"no replica {target} (running: {present})")
    return (target.replica,)


def display_name(service: str, number: int, replicas: int) -> str:
    """How status and links name a container: ``client`` when it is the service's only
    one, else ``client.N``."""
    return service if replicas == 1 else f"{service}.{number}"
