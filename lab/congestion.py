"""TCP congestion control per service, set in each container's namespace by a helper.

What a service uses comes from its ``x-socketlab: {tcp_congestion: NAME}``
(:class:`lab.topology.ServiceSpec`; the lab's own Compose file says ``cubic``
for every service), or from a scenario's or a sweep's ``congestion`` for the
time it runs. :func:`lab.shaping.congestion.congestion_steps` turns a name into
per-route ``congctl`` changes (pure; namespaces other than the host's may not
default to cubic here), and this module runs them with a NET_ADMIN netkit
helper in each namespace, so the services stay unprivileged. A restarted
container gets a fresh namespace with fresh routes and loses the setting: ``lab
up`` and the scenario runner call :func:`ensure_congestion` again after
:func:`lab.routing.ensure_routes`, whose routes must exist first.

:func:`congestion_in_use` reads back what each namespace's new TCP connections
get, for the reports (results.json, ``lab bench``, ``lab sweep``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from lab.errors import LabError
from lab.interface import Lab
from lab.shaping.builders import render_script
from lab.shaping.congestion import STATE_SCRIPT, congestion_steps, parse_state
from lab.shaping.errors import ShapingError
from lab.topology import Instance, Topology

log = logging.getLogger("lab.congestion")

# What a namespace nobody asked anything of reports, beside its default.
UNSET = "default"


def configured(topology: Topology, service: str) -> str | None:
    """The algorithm ``service``'s Compose file asks for (None: none)."""
    for spec in topology.model.services:
        if spec.name == service:
            return spec.tcp_congestion
    return None


def wanted(
    topology: Topology,
    overrides: Mapping[str, str | None] | None = None,
    *,
    names: Iterable[str] | None = None,
) -> dict[str, str | None]:
    """Running container name -> the algorithm it should use (pure).

    ``overrides`` by service (or container) name win over the Compose file;
    ``names`` limits the answer to those containers (their services' every replica
    for a bare service name).
    """
    overrides = overrides or {}
    chosen = None if names is None else {i.name for name in names for i in topology.select(name)}
    result: dict[str, str | None] = {}
    for instance in topology.instances:
        if instance.state != "running" or not instance.addresses:
            continue
        if chosen is not None and instance.name not in chosen:
            continue
        if instance.name in overrides:
            result[instance.name] = overrides[instance.name]
        elif instance.service in overrides:
            result[instance.name] = overrides[instance.service]
        else:
            result[instance.name] = configured(topology, instance.service)
    return result


def _run(lab: Lab, instance: str, script: str, *, what: str) -> str:
    timeout = lab.config.shaping.netns_timeout
    result = lab.netkit_run(instance, ["sh", "-c", script], timeout=timeout, net_admin=True)
    if not result.ok:
        detail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ShapingError(f"{what} in {instance} failed: {detail}")
    return result.stdout


def set_congestion(lab: Lab, instance: str, algorithm: str | None) -> None:
    """New TCP connections of ``instance`` use ``algorithm`` (None: the namespace's default)."""
    script = render_script(congestion_steps(algorithm))
    _run(lab, instance, script, what=f"setting TCP congestion control {algorithm or UNSET}")
    log.info("event=congestion instance=%s algorithm=%s", instance, algorithm or UNSET)


def ensure_congestion(
    lab: Lab,
    topology: Topology | None = None,
    *,
    overrides: Mapping[str, str | None] | None = None,
    names: Iterable[str] | None = None,
    reset: bool = False,
) -> dict[str, str]:
    """Set every running container's algorithm as :func:`wanted` says; returns those set.

    Containers with nothing asked are left alone, unless ``reset`` (then their
    per-route setting is removed: back to the namespace's default).
    """
    topology = topology or lab.topology()
    applied: dict[str, str] = {}
    for name, algorithm in wanted(topology, overrides, names=names).items():
        if algorithm is None and not reset:
            continue
        set_congestion(lab, name, algorithm)
        applied[name] = algorithm or UNSET
    return applied


def read_congestion(lab: Lab, instance: Instance | str) -> str:
    """The algorithm ``instance``'s new TCP connections get now (``mixed: ...`` if routes differ)."""
    name = instance if isinstance(instance, str) else instance.name
    return parse_state(_run(lab, name, STATE_SCRIPT, what="reading TCP congestion control")).in_use


def congestion_in_use(lab: Lab, names: Iterable[str]) -> dict[str, str]:
    """Container name -> algorithm in use, for ``names`` (a bare service: each replica);
    a container that cannot be read says why, instead of failing the report."""
    topology = lab.topology()
    found: dict[str, str] = {}
    for name in names:
        for instance in topology.select(name):
            if instance.state != "running":
                found[instance.name] = f"unknown ({instance.state})"
                continue
            try:
                found[instance.name] = read_congestion(lab, instance)
            except LabError as exc:
                found[instance.name] = f"unknown ({exc})"
    return found
