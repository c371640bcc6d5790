"""A lab's topology, in Compose's own words: services, replicas, networks, addresses, routers.

Pure. Nothing here parses a user's Compose file; two recorded inputs are joined:

* **Compose's normalised config** -> :class:`ProjectModel` (:func:`model_from_config`):
  v2 prints it with ``config --format json``, v1.29 with ``config`` (YAML).
  v2's JSON leaves out ``x-*`` keys of services (docker/compose#11528), so
  those are taken from v2's YAML rendering (:func:`merge_service_extensions`).
* **the project's containers** as ``docker inspect`` shows them ->
  :class:`ContainerFacts` (:func:`container_facts`): Compose's labels
  (``com.docker.compose.service``, ``container-number``, ``project``) and
  ``NetworkSettings.Networks`` (IPv4 and ``GlobalIPv6Address``).

:func:`build_topology` makes the :class:`Topology` every command works from:
which containers a name means (:mod:`lab.addressing`), which network a link
is on, the addresses of each family, health, and the routes that a service
marked ``x-socketlab: {router: true}`` gives everyone else (:meth:`Topology.routes`).
``x-socketlab: {tcp_congestion: cubic}`` names the TCP congestion control a
service's connections use (:mod:`lab.congestion` sets it in its namespace).

Errors are :class:`TopologyError` (a one-line :class:`~lab.errors.LabError`).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import yaml

from lab.addressing import Target, UnknownTarget, display_name, parse_target, select_replicas
from lab.errors import LabError

Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)
EXTENSION = "x-socketlab"
EXTENSION_KEYS = frozenset({"router", "tcp_congestion"})
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_NUMBER_LABEL = "com.docker.compose.container-number"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_ONEOFF_LABEL = "com.docker.compose.oneoff"
# What a container's health reads when its service has no healthcheck: ready once running.
NO_HEALTHCHECK = "running"


class TopologyError(LabError):
    """Compose's config or the containers do not make a lab we can work with."""


class NoSharedNetwork(TopologyError):
    """Two containers share no network, or several and none was chosen."""


class NoIPv6(TopologyError):
    """An IPv6 request on a network (or a container) without IPv6."""


# --------------------------------------------------------------------------- the config


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """One network of the Compose file: its key there and Docker's name for it."""

    key: str
    name: str
    ipv6: bool = False
    subnets: tuple[str, ...] = ()  # as configured (ipam.config); Docker may pick others
    external: bool = False


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """One service of the Compose file, as Compose normalised it."""

    name: str
    networks: tuple[str, ...] = ()  # keys, in the order Compose prints them
    replicas: int = 1
    router: bool = False
    tcp_congestion: str | None = None  # x-socketlab.tcp_congestion (None: the namespace's default)
    healthcheck: bool = False
    depends_on: tuple[str, ...] = ()
    image: str | None = None
    build: bool = False


@dataclass(frozen=True, kw_only=True)
class ProjectModel:
    """What Compose says the project declares (services ordered dependencies first)."""

    project: str
    services: tuple[ServiceSpec, ...]
    networks: tuple[NetworkSpec, ...] = ()

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(service.name for service in self.services)

    def service(self, name: str) -> ServiceSpec:
        for service in self.services:
            if service.name == name:
                return service
        raise UnknownTarget(
            f"no service {name!r} in the lab (services: {', '.join(self.service_names)})"
        )

    def network(self, key: str) -> NetworkSpec:
        for network in self.networks:
            if network.key == key:
                return network
        known = ", ".join(n.key for n in self.networks) or "none"
        raise TopologyError(f"no network {key!r} in the lab (networks: {known})")

    @property
    def has_builds(self) -> bool:
        return any(service.build for service in self.services)

    @property
    def routers(self) -> tuple[str, ...]:
        return tuple(service.name for service in self.services if service.router)


def parse_config_json(text: str) -> dict[str, Any]:
    """Compose v2's ``config --format json`` output."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TopologyError(f"Compose printed a config that is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise TopologyError("Compose printed a config that is not a mapping")
    return data


def parse_config_yaml(text: str) -> dict[str, Any]:
    """Compose's normalised YAML (v1's ``config``; v2's without ``--format``)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise TopologyError(f"Compose printed a config that is not YAML: {reason}") from exc
    if not isinstance(data, dict):
        raise TopologyError("Compose printed a config that is not a mapping")
    return data


def merge_service_extensions(
    data: Mapping[str, Any], rendered: Mapping[str, Any]
) -> dict[str, Any]:
    """``data`` (v2's JSON) with each service's ``x-*`` keys taken from ``rendered`` (its YAML)."""
    merged = dict(data)
    services = {name: dict(spec or {}) for name, spec in (data.get("services") or {}).items()}
    for name, spec in (rendered.get("services") or {}).items():
        if name in services and isinstance(spec, Mapping):
            services[name] |= {k: v for k, v in spec.items() if str(k).startswith("x-")}
    merged["services"] = services
    return merged


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a mapping, Compose gave {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _Extension:
    router: bool = False
    tcp_congestion: str | None = None


def _extension(name: str, raw: Mapping[str, Any]) -> _Extension:
    """A service's ``x-socketlab`` (unknown keys are refused)."""
    ext = _mapping(raw.get(EXTENSION), f"service {name}: {EXTENSION}")
    unknown = sorted(set(map(str, ext)) - EXTENSION_KEYS)
    if unknown:
        raise TopologyError(
            f"service {name}: {EXTENSION} has no key {unknown[0]!r} "
            f"(known: {', '.join(sorted(EXTENSION_KEYS))})"
        )
    router = ext.get("router", False)
    if not isinstance(router, bool):
        raise TopologyError(f"service {name}: {EXTENSION}.router must be true or false")
    congestion = ext.get("tcp_congestion")
    if congestion is not None:
        # imported here: lab.shaping imports this module
        from lab.shaping.congestion import parse_congestion  # noqa: PLC0415
        from lab.shaping.errors import SpecError  # noqa: PLC0415

        try:
            congestion = parse_congestion(str(congestion), option=f"{EXTENSION}.tcp_congestion")
        except SpecError as exc:
            raise TopologyError(f"service {name}: {exc}") from exc
    return _Extension(router=router, tcp_congestion=congestion)


def _replicas(name: str, raw: Mapping[str, Any]) -> int:
    deploy = _mapping(raw.get("deploy"), f"service {name}: deploy")
    value = deploy.get("replicas", raw.get("scale", 1))
    try:
        replicas = int(value if value is not None else 1)
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"service {name}: replicas {value!r} is not a number") from exc
    if replicas < 0:
        raise TopologyError(f"service {name}: replicas {replicas} is below 0")
    return replicas


def has_healthcheck(check: Any) -> bool:
    """Whether Compose's normalised ``healthcheck`` makes Docker run a probe: a ``test``
    of CMD or CMD-SHELL (a string is CMD-SHELL); not [NONE] (v1 writes ``disable: true``
    so), an empty test, ``disable`` or none at all."""
    if not isinstance(check, Mapping) or check.get("disable"):
        return False
    test = check.get("test")
    if isinstance(test, str):
        return bool(test.strip()) and test.strip() != "NONE"
    if isinstance(test, list | tuple) and test:
        return str(test[0]) != "NONE"
    return False


def image_has_healthcheck(check: Any) -> bool:
    """Whether an image's ``Config.Healthcheck`` (a Dockerfile ``HEALTHCHECK``) runs a
    probe: a test other than ``NONE``."""
    if not isinstance(check, Mapping):
        return False
    test = check.get("Test")
    return isinstance(test, list | tuple) and bool(test) and str(test[0]) != "NONE"


def runs_healthcheck(check: Any, *, image_has_one: bool) -> bool:
    """Whether the container runs a probe, given Compose's ``healthcheck`` and whether
    the image has one: Compose's decides when it disables or names a test; otherwise
    (none, or only ``interval`` and the like) Docker runs the image's."""
    if isinstance(check, Mapping):
        test = check.get("test")
        names_test = bool(test.strip()) if isinstance(test, str) else bool(test)
        if check.get("disable") or names_test:
            return has_healthcheck(check)
    return image_has_one


def _service_networks(raw: Mapping[str, Any]) -> tuple[str, ...]:
    if raw.get("network_mode"):
        return ()  # host, none, or another container's namespace: no network of the project
    networks = raw.get("networks")
    if networks is None:
        return ("default",)
    if isinstance(networks, Mapping):
        return tuple(str(key) for key in networks)
    return tuple(str(key) for key in networks)


def _depends_on(raw: Mapping[str, Any]) -> tuple[str, ...]:
    value = raw.get("depends_on") or ()
    return tuple(sorted(str(key) for key in value))


def _network_spec(key: str, raw: Mapping[str, Any], project: str) -> NetworkSpec:
    ipam = _mapping(raw.get("ipam"), f"network {key}: ipam")
    subnets = tuple(
        str(entry["subnet"])
        for entry in ipam.get("config") or ()
        if isinstance(entry, Mapping) and entry.get("subnet")
    )
    external = raw.get("external")
    is_external = bool(external.get("name", True) if isinstance(external, Mapping) else external)
    default_name = key if is_external else f"{project}_{key}"
    return NetworkSpec(
        key=key,
        name=str(raw.get("name") or default_name),
        ipv6=bool(raw.get("enable_ipv6", False)),
        subnets=subnets,
        external=is_external,
    )


def _dependency_order(services: Mapping[str, ServiceSpec]) -> list[ServiceSpec]:
    """Dependencies first (by depth of the depends_on chain), then by name: for the
    default lab this is the order of its file (server, udp-listener, client, rss-poller)."""
    depth: dict[str, int] = {}

    def depth_of(name: str, seen: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        if name in seen:
            raise TopologyError(f"services depend on each other in a cycle through {name!r}")
        parents = [d for d in services[name].depends_on if d in services]
        depth[name] = 1 + max((depth_of(d, seen | {name}) for d in parents), default=-1)
        return depth[name]

    for name in services:
        depth_of(name, frozenset())
    return sorted(services.values(), key=lambda s: (depth[s.name], s.name))


def model_from_config(data: Mapping[str, Any], *, project: str) -> ProjectModel:
    """Compose's normalised config (JSON or YAML, already loaded) -> :class:`ProjectModel`."""
    raw_services = _mapping(data.get("services"), "services")
    if not raw_services:
        raise TopologyError("the Compose project has no services")
    project = str(data.get("name") or project)
    specs: dict[str, ServiceSpec] = {}
    for name, raw_spec in raw_services.items():
        raw = _mapping(raw_spec, f"service {name}")
        extension = _extension(str(name), raw)
        specs[str(name)] = ServiceSpec(
            name=str(name),
            networks=_service_networks(raw),
            replicas=_replicas(str(name), raw),
            router=extension.router,
            tcp_congestion=extension.tcp_congestion,
            healthcheck=has_healthcheck(raw.get("healthcheck")),
            depends_on=_depends_on(raw),
            image=str(raw["image"]) if raw.get("image") else None,
            build=raw.get("build") is not None,
        )
    raw_networks = dict(_mapping(data.get("networks"), "networks"))
    used = {key for spec in specs.values() for key in spec.networks}
    for key in sorted(used - set(raw_networks)):
        raw_networks[key] = {}  # v1 leaves the implicit "default" network out
    networks = tuple(
        _network_spec(str(key), _mapping(raw, f"network {key}"), project)
        for key, raw in sorted(raw_networks.items())
        if str(key) in used
    )
    return ProjectModel(
        project=project, services=tuple(_dependency_order(specs)), networks=networks
    )


# --------------------------------------------------------------------------- the containers


@dataclass(frozen=True, kw_only=True)
class EndpointFacts:
    """One container's attachment to one Docker network, as Docker reports it."""

    ipv4: str | None = None
    prefix4: int | None = None
    ipv6: str | None = None
    prefix6: int | None = None
    mac: str | None = None


@dataclass(frozen=True, kw_only=True)
class ContainerFacts:
    """What ``docker inspect`` says about one container of the project."""

    id: str
    name: str
    project: str
    service: str
    number: int
    state: str
    health: str | None  # Docker's health status, None when the container has no healthcheck
    image: str = ""
    started_at: str = ""
    restarts: int = 0  # Docker's RestartCount (restart: on-failure)
    oneoff: bool = False
    endpoints: Mapping[str, EndpointFacts] = field(default_factory=dict)  # Docker network name
    node: str = ""  # the Swarm node running it ("" for a Compose container)
    problem: str = ""  # why it cannot run, as its orchestrator says ("": none known)
    exit_code: int | None = None  # once it has exited
    health_output: str = ""  # the last line its last healthcheck printed ("": none)


HEALTH_OUTPUT_CHARS: Final = 200  # of a healthcheck's output kept for an error message


def last_health_output(health: Any) -> str:
    """The last non-empty line Docker kept of the latest healthcheck, bounded: why a
    service is unhealthy, in its own words (``State.Health.Log[-1].Output``)."""
    log = health.get("Log") if isinstance(health, Mapping) else None
    if not isinstance(log, list) or not log or not isinstance(log[-1], Mapping):
        return ""
    output = log[-1].get("Output")
    lines = [line.strip() for line in str(output or "").splitlines() if line.strip()]
    return lines[-1][:HEALTH_OUTPUT_CHARS] if lines else ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in {None, ""} else None
    except (TypeError, ValueError):
        return None


def container_facts(attrs: Mapping[str, Any]) -> ContainerFacts:
    """A container's ``docker inspect`` document -> :class:`ContainerFacts`."""
    config = _mapping(attrs.get("Config"), "container Config")
    labels = _mapping(config.get("Labels"), "container labels")
    state = _mapping(attrs.get("State"), "container State")
    health = state.get("Health")
    networks = _mapping(
        _mapping(attrs.get("NetworkSettings"), "NetworkSettings").get("Networks"), "Networks"
    )
    endpoints = {
        str(name): EndpointFacts(
            ipv4=settings.get("IPAddress") or None,
            prefix4=_int_or_none(settings.get("IPPrefixLen")),
            ipv6=settings.get("GlobalIPv6Address") or None,
            prefix6=_int_or_none(settings.get("GlobalIPv6PrefixLen")),
            mac=settings.get("MacAddress") or None,
        )
        for name, settings in networks.items()
        if isinstance(settings, Mapping)
    }
    number = _int_or_none(labels.get(COMPOSE_NUMBER_LABEL)) or 1
    return ContainerFacts(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        project=str(labels.get(COMPOSE_PROJECT_LABEL, "")),
        service=str(labels.get(COMPOSE_SERVICE_LABEL, "")),
        number=number,
        state=str(state.get("Status", "?")),
        health=str(health["Status"]) if isinstance(health, Mapping) else None,
        image=str(config.get("Image", "")),
        started_at=str(state.get("StartedAt", "")),
        restarts=_int_or_none(attrs.get("RestartCount")) or 0,
        oneoff=str(labels.get(COMPOSE_ONEOFF_LABEL, "False")).lower() == "true",
        endpoints=endpoints,
        exit_code=(
            _int_or_none(state.get("ExitCode"))
            if str(state.get("Status", "")) in {"exited", "dead"}
            else None
        ),
        health_output=last_health_output(health),
    )


# --------------------------------------------------------------------------- the topology


@dataclass(frozen=True, kw_only=True)
class Address:
    """A container's addresses on one network of the project (by its Compose key)."""

    network: str
    ipv4: str | None = None
    prefix4: int | None = None
    ipv6: str | None = None
    prefix6: int | None = None
    mac: str | None = None

    def ip(self, family: Family) -> str | None:
        return self.ipv4 if family == 4 else self.ipv6

    def subnet(self, family: Family) -> str | None:
        """The subnet this address lives in (from its prefix length), or None."""
        ip, prefix = (self.ipv4, self.prefix4) if family == 4 else (self.ipv6, self.prefix6)
        if ip is None or prefix is None:
            return None
        return str(ipaddress.ip_interface(f"{ip}/{prefix}").network)

    def describe(self) -> str:
        return " ".join([self.network, *(ip for ip in (self.ipv4, self.ipv6) if ip)])


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One container of a service: its names, state, health and addresses."""

    service: str
    number: int
    name: str  # how status and links show it: "client", or "client.2" among replicas
    container_id: str
    container_name: str
    state: str
    health: str  # Docker's health, or "running" for a running service without healthcheck
    image: str = ""
    started_at: str = ""
    restarts: int = 0
    router: bool = False
    addresses: tuple[Address, ...] = ()
    node: str = ""  # the Swarm node running it ("" for a Compose container)
    problem: str = ""  # why it cannot run, as its orchestrator says ("": none known)
    exit_code: int | None = None  # once it has exited
    health_output: str = ""  # the last line its last healthcheck printed

    @property
    def key(self) -> str:
        """``service.N``: names this container whatever the replica count."""
        return f"{self.service}.{self.number}"

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in {"healthy", NO_HEALTHCHECK}

    @property
    def networks(self) -> tuple[str, ...]:
        return tuple(address.network for address in self.addresses)

    def address_on(self, network: str) -> Address | None:
        return next((a for a in self.addresses if a.network == network), None)

    def ips(self) -> tuple[str, ...]:
        return tuple(ip for a in self.addresses for ip in (a.ipv4, a.ipv6) if ip)


@dataclass(frozen=True, kw_only=True)
class Network:
    """A network of the lab with the subnets its containers really are in."""

    key: str
    name: str
    ipv6: bool
    subnets4: tuple[str, ...] = ()
    subnets6: tuple[str, ...] = ()

    def families(self) -> tuple[Family, ...]:
        if self.ipv6 and self.subnets6:
            return (4, 6)
        return (4,)


@dataclass(frozen=True, kw_only=True)
class Route:
    """``destination`` reached from ``instance`` via ``router``'s address ``via`` on ``network``."""

    instance: str  # the key (service.N) of the container the route is installed in
    destination: str
    via: str
    router: str  # the router's key
    network: str  # the network the router is reached on
    family: Family


@dataclass(frozen=True, kw_only=True)
class LinkEnd:
    """One container at one end of a link, with its addresses on the link's network."""

    instance: Instance
    address: Address


@dataclass(frozen=True, kw_only=True)
class Link:
    """A pair of containers on a network they share (one direction: source -> dest)."""

    source: LinkEnd
    dest: LinkEnd
    network: str

    @property
    def name(self) -> str:
        return f"{self.source.instance.name} -> {self.dest.instance.name}"


@dataclass(frozen=True, kw_only=True)
class Topology:
    """The lab now: the model Compose gave and the containers running it."""

    model: ProjectModel
    instances: tuple[Instance, ...]
    networks: tuple[Network, ...]

    @property
    def project(self) -> str:
        return self.model.project

    @property
    def services(self) -> tuple[str, ...]:
        return self.model.service_names

    @property
    def running(self) -> dict[str, list[int]]:
        """Service -> its container numbers, ascending."""
        numbers: dict[str, list[int]] = {}
        for instance in self.instances:
            numbers.setdefault(instance.service, []).append(instance.number)
        return {service: sorted(found) for service, found in numbers.items()}

    def target_names(self) -> tuple[str, ...]:
        """Every name a command accepts: each service and each ``service.N`` that exists."""
        keys = [instance.key for instance in self.instances]
        return tuple(dict.fromkeys([*self.services, *keys]))

    def network(self, key: str) -> Network:
        for network in self.networks:
            if network.key == key:
                return network
        known = ", ".join(n.key for n in self.networks) or "none"
        raise TopologyError(f"no network {key!r} in the lab (networks: {known})")

    # ------------------------------------------------------------------ names

    def target(self, text: str) -> Target:
        return parse_target(text, self.services)

    def select(self, text: str) -> tuple[Instance, ...]:
        """Every container ``text`` names (a bare service: all its replicas)."""
        target = self.target(text)
        numbers = select_replicas(target, self.running)
        return tuple(
            i for i in self.instances if i.service == target.service and i.number in numbers
        )

    def one(self, text: str) -> Instance:
        """The container ``text`` names; a bare service with replicas means its first."""
        return self.select(text)[0]

    def by_key(self, key: str) -> Instance:
        return self.one(key)

    def instance_named(self, name: str) -> Instance | None:
        """The container shown as ``name`` (display name or key), if any."""
        return next((i for i in self.instances if name in {i.name, i.key}), None)

    # ------------------------------------------------------------------ links

    def shared_networks(self, a: Instance, b: Instance) -> tuple[str, ...]:
        theirs = set(b.networks)
        return tuple(network for network in a.networks if network in theirs)

    def link_network(self, a: Instance, b: Instance, network: str | None = None) -> str:
        """The network a link between ``a`` and ``b`` is on (``network`` picks among several)."""
        shared = self.shared_networks(a, b)
        if network is not None:
            self.network(network)
            if network not in shared:
                raise NoSharedNetwork(
                    f"{a.name} and {b.name} are not both on network {network!r} "
                    f"({_where(a)}; {_where(b)})"
                )
            return network
        if not shared:
            hint = ""
            if any(route.instance == a.key for route in self.routes()):
                hint = ": traffic between them goes through a router; shape or cut a hop to it"
            raise NoSharedNetwork(
                f"{a.name} and {b.name} share no network ({_where(a)}; {_where(b)}){hint}"
            )
        if len(shared) > 1:
            raise NoSharedNetwork(
                f"{a.name} and {b.name} share networks {', '.join(shared)}: "
                "pick one with --network NET"
            )
        return shared[0]

    def links(self, source: str, dest: str, *, network: str | None = None) -> tuple[Link, ...]:
        """Every directed link ``source`` -> ``dest`` names (replicas expanded, never a
        container to itself), each on the network the pair shares (``network`` picks)."""
        sources, dests = self.select(source), self.select(dest)
        links = []
        for a in sources:
            for b in dests:
                if a.key == b.key:
                    continue
                on = self.link_network(a, b, network)
                address_a, address_b = a.address_on(on), b.address_on(on)
                assert address_a is not None  # noqa: S101 - on a network they share
                assert address_b is not None  # noqa: S101
                links.append(
                    Link(
                        source=LinkEnd(instance=a, address=address_a),
                        dest=LinkEnd(instance=b, address=address_b),
                        network=on,
                    )
                )
        if not links:
            raise TopologyError(f"a link needs two different containers, not {source!r} twice")
        return tuple(links)

    def families(self, network: str, requested: Family | None = None) -> tuple[Family, ...]:
        """The address families of ``network`` (``requested``: just that one, or NoIPv6)."""
        found = self.network(network)
        available = found.families()
        if requested is None:
            return available
        if requested not in available:
            raise NoIPv6(
                f"network {network!r} has no IPv6 (it needs enable_ipv6: true and an IPv6 "
                "subnet in its ipam config)"
            )
        return (requested,)

    def address(self, instance: Instance, network: str, family: Family = 4) -> str:
        """``instance``'s address of ``family`` on ``network``; NoIPv6 / TopologyError."""
        found = instance.address_on(network)
        if found is None:
            raise NoSharedNetwork(f"{instance.name} is not on network {network!r}")
        ip = found.ip(family)
        if ip is None:
            if family == 6:
                raise NoIPv6(f"{instance.name} has no IPv6 address on network {network!r}")
            raise TopologyError(f"{instance.name} has no IPv4 address on network {network!r}")
        return ip

    def default_network(self, instance: Instance) -> str:
        if not instance.addresses:
            raise TopologyError(f"{instance.name} is on no network of the lab")
        return instance.addresses[0].network

    # ------------------------------------------------------------------ routers

    def routers(self) -> tuple[Instance, ...]:
        """The first container of each router service (the one that forwards)."""
        first: dict[str, Instance] = {}
        for instance in self.instances:
            if instance.router and instance.state == "running":
                first.setdefault(instance.service, instance)
        return tuple(first.values())

    def routes(self) -> tuple[Route, ...]:
        """For every other container on a router's networks: a route to each network of
        the router it is not on itself, through the router's address on a network they
        share. The first router to reach a network wins; one hop only."""
        routes: list[Route] = []
        routers = self.routers()
        for instance in self.instances:
            if instance.router or not instance.addresses:
                continue
            own = set(instance.networks)
            own_subnets = {
                subnet for a in instance.addresses for f in FAMILIES if (subnet := a.subnet(f))
            }
            reached: set[str] = set()
            for router in routers:
                hops = [n for n in router.networks if n in own]
                if not hops:
                    continue
                hop = router.address_on(hops[0])
                assert hop is not None  # noqa: S101 - one of its own networks
                for far in router.addresses:
                    if far.network in own:
                        continue
                    for family in FAMILIES:
                        destination, via = far.subnet(family), hop.ip(family)
                        if destination is None or via is None:
                            continue
                        if destination in reached or destination in own_subnets:
                            continue
                        reached.add(destination)
                        routes.append(
                            Route(
                                instance=instance.key,
                                destination=destination,
                                via=via,
                                router=router.key,
                                network=hops[0],
                                family=family,
                            )
                        )
        return tuple(routes)

    def routed_via(self, instance: Instance, router: Instance) -> tuple[str, ...]:
        """The subnets ``instance`` reaches through ``router`` (empty: none, or not a router)."""
        return tuple(
            route.destination
            for route in self.routes()
            if route.instance == instance.key and route.router == router.key
        )


def _where(instance: Instance) -> str:
    networks = ", ".join(instance.networks) or "no network"
    return f"{instance.name}: {networks}"


def _instance(
    facts: ContainerFacts, spec: ServiceSpec, replicas: int, by_docker_name: Mapping[str, str]
) -> Instance:
    addresses = []
    order = {key: index for index, key in enumerate(spec.networks)}
    for docker_name, endpoint in facts.endpoints.items():
        key = by_docker_name.get(docker_name)
        if key is None:
            continue  # a network the project does not declare (connected by hand)
        addresses.append(
            Address(
                network=key,
                ipv4=endpoint.ipv4,
                prefix4=endpoint.prefix4,
                ipv6=endpoint.ipv6,
                prefix6=endpoint.prefix6,
                mac=endpoint.mac,
            )
        )
    addresses.sort(key=lambda a: (order.get(a.network, len(order)), a.network))
    if facts.health is not None:
        health = facts.health
    else:
        health = NO_HEALTHCHECK if facts.state == "running" else "none"
    return Instance(
        service=facts.service,
        number=facts.number,
        name=display_name(facts.service, facts.number, replicas),
        container_id=facts.id,
        container_name=facts.name,
        state=facts.state,
        health=health,
        image=facts.image,
        started_at=facts.started_at,
        restarts=facts.restarts,
        router=spec.router,
        addresses=tuple(addresses),
        node=facts.node,
        problem=facts.problem,
        exit_code=facts.exit_code,
        health_output=facts.health_output,
    )


def build_topology(model: ProjectModel, containers: Iterable[ContainerFacts]) -> Topology:
    """Join the model with the project's containers (one-off ``run`` containers and
    containers of services the model does not declare are left out)."""
    declared = {spec.name: spec for spec in model.services}
    mine = [
        facts
        for facts in containers
        if not facts.oneoff and facts.service in declared and facts.project == model.project
    ]
    counts: dict[str, int] = {}
    for facts in mine:
        counts[facts.service] = counts.get(facts.service, 0) + 1
    by_docker_name = {network.name: network.key for network in model.networks}
    order = {name: index for index, name in enumerate(model.service_names)}
    instances = sorted(
        (_instance(f, declared[f.service], counts[f.service], by_docker_name) for f in mine),
        key=lambda i: (order[i.service], i.number),
    )
    networks = []
    for spec in model.networks:
        on = [a for i in instances for a in i.addresses if a.network == spec.key]
        observed4 = [s for a in on if (s := a.subnet(4))]
        observed6 = [s for a in on if (s := a.subnet(6))]
        configured = [ipaddress.ip_network(s, strict=False) for s in spec.subnets]
        networks.append(
            Network(
                key=spec.key,
                name=spec.name,
                ipv6=spec.ipv6,
                subnets4=_unique([*(str(n) for n in configured if n.version == 4), *observed4]),
                subnets6=_unique([*(str(n) for n in configured if n.version == 6), *observed6]),
            )
        )
    return Topology(model=model, instances=tuple(instances), networks=tuple(networks))


def _unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
