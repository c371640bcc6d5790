"""The stack a Compose project becomes on a Swarm (pure): :func:`stack_plan`.

Input is Compose's own normalised config of the project (``compose config``,
v1's YAML or v2's JSON, already loaded, with the lab's override and image
names in it), so anchors, ``extends``, variables and several ``-f`` files are
Compose's business, not ours. Output is a Compose file of format 3.8, which
``docker stack deploy`` (20.10 and later) reads: every service on attachable
overlay networks, the lab's labels on services, containers, networks and
volumes, the images the nodes have (:mod:`lab.swarm.distribution`), the
placement :mod:`lab.swarm.placement` chose, and ``$`` escaped so the CLI
interpolates nothing a second time.

What ``docker stack deploy`` ignores gets a lab-side equivalent (measured on
Engine 20.10.24 with CLIs 20.10 and 28; :data:`IGNORED` carries the notes
``lab up`` prints):

* ``depends_on`` (ordering, ``condition: service_healthy``): services are
  deployed in **waves**, dependencies first (:attr:`StackPlan.waves`), each
  wave healthy before the next is added; ``lab up`` waits for every task's
  health at the end.
* ``restart`` becomes ``deploy.restart_policy`` (``no``, Compose's default, is
  ``condition: none``: a task that exits stays down, as a container would).
  ``on-failure`` on a service with a healthcheck becomes ``condition: any``,
  with a note: Swarm ends a task that turns unhealthy with SIGTERM, and one that
  then exits 0 (the lab's services, most servers) is "complete", which
  ``on-failure`` never replaces (measured on 20.10: the slot stayed empty).
  The healthcheck may be the image's own (a Dockerfile ``HEALTHCHECK``): the
  orchestrator looks the images up and says which have one.
  A ``stop`` fault therefore scales the service to 0 (:mod:`lab.swarm.orchestrator`).
* ``security_opt`` (``no-new-privileges``) has no field in a 20.10 service
  spec: left out, with a note. Our services also drop every capability,
  which empties the bounding set, so a setuid binary still gains none.
* ``build``: the lab builds with Compose on its build engine and distributes
  the image like its own (the plan gets the image name).
* ``container_name``, ``links``, ``expose``: Swarm names tasks itself, service
  names resolve on the overlay, every port is reachable there: left out.

* ``tmpfs`` (the service key): stack deploy drops it without a word (measured
  with CLI 28: the task had no mount at all, so a service writing there met its
  read-only root). Each entry becomes a ``type: tmpfs`` entry of ``volumes``,
  with its ``size``. A Swarm tmpfs is root's with mode 1777 (the CLI sets no
  mode, a 20.10 spec no owner), so the service's user can still write it;
  ``uid``/``gid``/another ``mode`` are left out with a note.

``cap_add``/``cap_drop``, ``init``, ``sysctls`` and ``healthcheck`` are honoured
by stack deploy on 20.10 and pass through. Every service gets
``endpoint_mode: dnsrr``: a service name then resolves to its tasks'
addresses, as on a Compose network, so shaping and partitions (which match
task addresses) see the traffic; a VIP would hide it behind IPVS. Published
ports become ``mode: host`` (dnsrr has no routing mesh). Keys that change what
a container is (``network_mode``, ``privileged``, ``devices``, host ``pid``/``ipc``,
IPv6 networks) are refused with a :class:`~lab.swarm.errors.StackPlanError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from lab.helpers import PROJECT_LABEL
from lab.overlay import NETKIT_LABEL
from lab.swarm.errors import StackPlanError
from lab.swarm.placement import Placement
from lab.topology import ProjectModel, runs_healthcheck

STACK_FILE_VERSION = "3.8"
STACK_LABEL = "com.docker.stack.namespace"

# Service keys a 3.8 stack file takes as Compose normalised them (some reshaped below).
PASSED_KEYS = frozenset(
    {
        "cap_add",
        "cap_drop",
        "command",
        "deploy",
        "dns",
        "dns_search",
        "entrypoint",
        "environment",
        "extra_hosts",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "labels",
        "logging",
        "networks",
        "ports",
        "read_only",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "sysctls",
        "tty",
        "ulimits",
        "user",
        "volumes",
        "working_dir",
    }
)

# Keys docker stack deploy ignores, and what the lab does instead (printed by lab up).
IGNORED: Mapping[str, str] = {
    "build": "built by the lab with Compose on its build engine, then sent to the nodes",
    "depends_on": "deployed in waves, dependencies first, each wave healthy before the next",
    "restart": "became deploy.restart_policy",
    "security_opt": "no such field in a 20.10 service spec: left out "
    "(cap_drop: [ALL] still empties the bounding set)",
    "container_name": "Swarm names tasks itself: left out",
    "links": "service names resolve on the overlay network anyway: left out",
    "expose": "every port is reachable on an overlay network: left out",
    "scale": "became deploy.replicas",
    "env_file": "Compose already put its variables in environment: left out",
    "profiles": "Compose already chose the services: left out",
    "pull_policy": "nodes use the image the lab distributed: left out",
    "mem_limit": "became deploy.resources.limits.memory",
    "cpus": "became deploy.resources.limits.cpus",
    "pids_limit": "no per-service pids limit on a 20.10 Swarm: left out",
}

# Container limits that have a deploy.resources.limits equivalent.
LIMIT_KEYS: Mapping[str, str] = {"mem_limit": "memory", "cpus": "cpus"}

# Keys that make a container something a Swarm task cannot be.
REFUSED: Mapping[str, str] = {
    "network_mode": "a task is always on the stack's overlay networks",
    "privileged": "Swarm services cannot be privileged",
    "devices": "Swarm services cannot map host devices",
    "pid": "Swarm services cannot share a PID namespace",
    "ipc": "Swarm services cannot share an IPC namespace",
    "volumes_from": "Swarm services cannot mount another container's volumes",
}

# Boolean options whose false is the default (Compose v2 prints none of them).
DEFAULT_FALSE = frozenset({"init", "read_only", "stdin_open", "tty"})

RESTART_CONDITIONS: Mapping[str, str] = {
    "no": "none",
    "always": "any",
    "unless-stopped": "any",
    "on-failure": "on-failure",
}

DEPLOY_KEYS = frozenset(
    {
        "mode",
        "replicas",
        "placement",
        "resources",
        "restart_policy",
        "labels",
        "update_config",
        "rollback_config",
        "endpoint_mode",
    }
)
# What a Swarm tmpfs mount is, whatever was asked: root's, world-writable, sticky.
SWARM_TMPFS_MODE = 0o1777
_TMPFS_SIZE = re.compile(r"^(?P<number>\d+)(?P<unit>[kmg]?)$", re.IGNORECASE)
TMPFS_UNITS: Mapping[str, int] = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "retries", "start_period", "disable"})
VOLUME_MOUNT_KEYS = frozenset({"type", "source", "target", "read_only", "consistency"})
TOP_VOLUME_KEYS = frozenset({"driver", "driver_opts", "external", "labels", "name"})
_PORT = re.compile(
    r"^(?:(?P<ip>\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:]+\]):)?(?:(?P<published>\d+):)?(?P<target>\d+)"
    r"(?:/(?P<protocol>tcp|udp|sctp))?$"
)


@dataclass(frozen=True, kw_only=True)
class StackPlan:
    """A stack file and how to deploy it."""

    project: str
    document: Mapping[str, Any]
    waves: tuple[tuple[str, ...], ...]  # service names, dependencies first
    images: tuple[str, ...]  # image references the services run, as deployed
    notes: tuple[str, ...] = ()  # what was left out or changed, one line each

    def wave_document(self, count: int) -> dict[str, Any]:
        """The stack file with the services of the first ``count`` waves only."""
        keep = {name for wave in self.waves[:count] for name in wave}
        services = {k: v for k, v in self.document["services"].items() if k in keep}
        return {**self.document, "services": services}


def escape_dollars(value: Any) -> Any:
    """Every ``$`` doubled in the strings of ``value`` (stack deploy interpolates ``$x``;
    Compose already did, so ``$$`` gives back a literal ``$``)."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, Mapping):
        return {str(k): escape_dollars(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_dollars(item) for item in value]
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    raise StackPlanError(f"{where}: expected a mapping, Compose gave {type(value).__name__}")


def _pairs(value: Any, where: str) -> dict[str, Any]:
    """A mapping or a list of ``KEY=VALUE`` strings (labels, environment) as a dict."""
    if isinstance(value, list | tuple):
        result: dict[str, Any] = {}
        for item in value:
            key, sep, rest = str(item).partition("=")
            result[key] = rest if sep else None
        return result
    return dict(_mapping(value, where))


def restart_policy(restart: str | None) -> dict[str, Any]:
    """Compose's ``restart`` as a ``deploy.restart_policy`` (absent means ``no``, as in Compose)."""
    word, _, attempts = (restart or "no").partition(":")
    condition = RESTART_CONDITIONS.get(word.strip())
    if condition is None:
        raise StackPlanError(
            f"restart: {restart!r} is not no, always, unless-stopped or on-failure"
        )
    policy: dict[str, Any] = {"condition": condition}
    if attempts.strip():
        if not attempts.strip().isdigit():
            raise StackPlanError(f"restart: {restart!r}: the attempts after ':' must be a number")
        policy["max_attempts"] = int(attempts)
    return policy


def stack_port(port: Any, where: str) -> dict[str, Any]:
    """One published port, short (``8080:80/udp``) or long syntax, as a ``mode: host`` entry."""
    target: Any
    published: Any
    if isinstance(port, Mapping):
        target = port.get("target")
        published = port.get("published")
        protocol = port.get("protocol") or "tcp"
    else:
        match = _PORT.match(str(port).strip())
        if match is None or "-" in str(port):
            raise StackPlanError(f"{where}: port {port!r} is not [IP:][PUBLISHED:]TARGET[/PROTO]")
        target, published, protocol = match["target"], match["published"], match["protocol"]
        protocol = protocol or "tcp"
    try:
        entry: dict[str, Any] = {"target": int(target), "protocol": str(protocol), "mode": "host"}
        if published not in {None, ""}:
            entry["published"] = int(published)
    except (TypeError, ValueError) as exc:
        raise StackPlanError(f"{where}: port {port!r} has no numeric target") from exc
    return entry


def tmpfs_size(size: Any, where: str) -> int:
    """A tmpfs ``size`` (bytes, or a number with k, m or g as the kernel reads it) in bytes."""
    match = _TMPFS_SIZE.match(str(size).strip())
    if match is None:
        raise StackPlanError(f"{where}: tmpfs size {size!r} is not bytes or a number with k, m, g")
    return int(match["number"]) * TMPFS_UNITS[match["unit"].lower()]


def _swarm_mode(mode: Any) -> bool:
    """Whether the tmpfs ``mode`` asked is what a Swarm tmpfs is anyway (1777)."""
    try:
        return (int(mode, 8) if isinstance(mode, str) else int(mode)) == SWARM_TMPFS_MODE
    except (TypeError, ValueError):
        return False


def tmpfs_mounts(
    value: Any, where: str, *, name: str, notes: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The service key ``tmpfs`` (``PATH[:OPTIONS]``, one or a list) as ``volumes`` entries
    of type tmpfs, the one form of it stack deploy keeps; options it cannot keep noted."""
    mounts = []
    for item in [value] if isinstance(value, str) else list(value):
        target, _, options = str(item).strip().partition(":")
        if not target.startswith("/"):
            raise StackPlanError(f"{where}: tmpfs {item!r} does not start with an absolute path")
        entry: dict[str, Any] = {"type": "tmpfs", "target": target}
        left_out = []
        for option in filter(None, (part.strip() for part in options.split(","))):
            key, _, setting = option.partition("=")
            if key == "size":
                entry["tmpfs"] = {"size": tmpfs_size(setting, f"{where}: tmpfs {target}")}
            elif key == "mode" and _swarm_mode(setting):
                continue
            elif key == "ro":
                entry["read_only"] = True
            elif key not in {"rw", "nosuid", "nodev", "noexec"}:  # a Swarm tmpfs has these
                left_out.append(option)
        if left_out:
            notes.append(
                (
                    f"tmpfs: {target} without {','.join(left_out)}: a Swarm tmpfs is root's, "
                    "mode 1777 (the service's user can still write it)",
                    name,
                )
            )
        mounts.append(entry)
    return mounts


def _volume_mount(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return value
    mount = _mapping(value, where)
    entry = {k: v for k, v in mount.items() if k in VOLUME_MOUNT_KEYS and v is not None}
    nocopy = _mapping(mount.get("volume"), where).get("nocopy")
    if nocopy:
        entry["volume"] = {"nocopy": True}
    size = _mapping(mount.get("tmpfs"), where).get("size")
    if size:
        entry["tmpfs"] = {"size": tmpfs_size(size, where)}
    return entry


def _named_volumes(mounts: Iterable[Any]) -> set[str]:
    names = set()
    for mount in mounts:
        if isinstance(mount, str):
            source = mount.split(":", 1)[0] if ":" in mount else ""
            if source and not source.startswith(("/", ".", "~")):
                names.add(source)
        elif (
            isinstance(mount, Mapping)
            and mount.get("type", "volume") == "volume"
            and mount.get("source")
        ):
            names.add(str(mount["source"]))
    return names


def _bind_sources(mounts: Iterable[Any]) -> list[str]:
    """Host paths the mounts bind (they must exist on whichever node runs the task)."""
    sources = []
    for mount in mounts:
        if isinstance(mount, str):
            source = mount.split(":", 1)[0] if ":" in mount else ""
            if source.startswith(("/", ".", "~")):
                sources.append(source)
        elif isinstance(mount, Mapping) and mount.get("type") == "bind" and mount.get("source"):
            sources.append(str(mount["source"]))
    return sources


UNHEALTHY_ON_FAILURE: Final = (
    "restart: on-failure with a healthcheck became condition any (Swarm stops an "
    "unhealthy task with SIGTERM, and on-failure would not replace one that then exits 0)"
)


def _healthcheck(value: Any, where: str) -> dict[str, Any]:
    check = _mapping(value, where)
    return {k: v for k, v in check.items() if k in HEALTHCHECK_KEYS and v is not None}


def _service_networks(value: Any, where: str) -> Any:
    if isinstance(value, list | tuple):
        return [str(key) for key in value]
    result: dict[str, Any] = {}
    for key, settings in _mapping(value, where).items():
        aliases = _mapping(settings, f"{where}.{key}").get("aliases")
        result[str(key)] = {"aliases": [str(a) for a in aliases]} if aliases else None
    return result


def _resources(value: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, limits in _mapping(value, where).items():
        entry = {}
        for key, amount in _mapping(limits, f"{where}.{kind}").items():
            if key in {"cpus", "memory"} and amount is not None:
                entry[key] = str(amount)  # the 3.8 schema wants strings
        if entry:
            out[str(kind)] = entry
    return out


def _deploy(
    raw: Mapping[str, Any],
    *,
    name: str,
    project: str,
    replicas: int,
    placement: Placement | None,
    image_healthcheck: bool,
    notes: list[tuple[str, str]],
) -> dict[str, Any]:
    given = _mapping(raw.get("deploy"), f"service {name}: deploy")
    deploy: dict[str, Any] = {k: v for k, v in given.items() if k in DEPLOY_KEYS and v is not None}
    for key in sorted(set(given) - DEPLOY_KEYS):
        notes.append((f"deploy.{key}: has no meaning on this Swarm: left out", name))
    if deploy.get("mode", "replicated") != "global":
        deploy["replicas"] = replicas
    limits = {LIMIT_KEYS[k]: raw[k] for k in LIMIT_KEYS if raw.get(k) not in {None, 0, "0"}}
    if limits:
        resources = dict(_mapping(deploy.get("resources"), f"service {name}: deploy.resources"))
        given_limits = _mapping(resources.get("limits"), f"service {name}: deploy.resources")
        resources["limits"] = {**limits, **given_limits}  # deploy.resources wins
        deploy["resources"] = resources
    if "resources" in deploy:
        deploy["resources"] = _resources(deploy["resources"], f"service {name}: deploy.resources")
    if deploy.get("endpoint_mode") == "vip":
        notes.append(("endpoint_mode: vip became dnsrr (shaping matches task addresses)", name))
    deploy["endpoint_mode"] = "dnsrr"
    if "restart_policy" not in deploy:
        policy = restart_policy(raw.get("restart"))
        checked = runs_healthcheck(raw.get("healthcheck"), image_has_one=image_healthcheck)
        if policy["condition"] == "on-failure" and checked:
            policy["condition"] = "any"
            notes.append((UNHEALTHY_ON_FAILURE, name))
        deploy["restart_policy"] = policy
    if placement is not None:
        deploy["placement"] = placement.deploy_entry()
    labels = _pairs(deploy.get("labels"), f"service {name}: deploy.labels")
    deploy["labels"] = {**labels, PROJECT_LABEL: project}
    return deploy


def _refuse(name: str, key: str, value: Any) -> None:
    if key == "privileged" and not value:
        return
    if key in {"devices", "volumes_from"} and not value:
        return
    raise StackPlanError(f"service {name}: {key} cannot run on a Swarm ({REFUSED[key]})")


def _service(
    name: str,
    raw: Mapping[str, Any],
    *,
    project: str,
    replicas: int,
    placement: Placement | None,
    image: str | None,
    image_healthcheck: bool,
    netkit_image: str,
    notes: list[tuple[str, str]],
) -> dict[str, Any]:
    where = f"service {name}"
    out: dict[str, Any] = {}
    tmpfs: list[dict[str, Any]] = []
    for key, value in raw.items():
        if value is None or key in {"deploy", "image"}:
            continue
        if value is False and key in DEFAULT_FALSE:
            continue  # v2 leaves these out when false: the same stack either way
        if key.startswith("x-"):
            continue  # the lab's own (x-socketlab) were read from the model already
        if key in REFUSED:
            _refuse(name, key, value)
            continue
        if key in IGNORED:
            if key not in {"restart", "scale", "profiles", *LIMIT_KEYS}:
                notes.append((f"{key}: {IGNORED[key]}", name))
            continue
        if key == "tmpfs":
            tmpfs.extend(tmpfs_mounts(value, where, name=name, notes=notes))
            continue
        if key not in PASSED_KEYS:
            notes.append((f"{key}: not a Swarm service option: left out", name))
            continue
        out[key] = _passed(key, value, where)
    if tmpfs:
        out["volumes"] = [*(out.get("volumes") or ()), *tmpfs]
    for source in _bind_sources(out.get("volumes") or ()):
        notes.append(
            (f"volumes: a bind mount of {source} needs that path on the task's node", name)
        )
    if image is None:
        raise StackPlanError(f"{where} has no image (and no build the lab could make one from)")
    out["image"] = image
    labels = _pairs(out.get("labels"), f"{where}: labels")
    out["labels"] = {
        **labels,
        PROJECT_LABEL: project,
        **({NETKIT_LABEL: netkit_image} if netkit_image else {}),
    }
    out["deploy"] = _deploy(
        raw,
        name=name,
        project=project,
        replicas=replicas,
        placement=placement,
        image_healthcheck=image_healthcheck,
        notes=notes,
    )
    return out


def _passed(key: str, value: Any, where: str) -> Any:  # noqa: PLR0911 - a return per key
    if key == "volumes":
        return [_volume_mount(item, f"{where}: volumes") for item in value]
    if key == "networks":
        return _service_networks(value, f"{where}: networks")
    if key == "healthcheck":
        return _healthcheck(value, f"{where}: healthcheck")
    if key == "ports":
        return [stack_port(item, f"{where}: ports") for item in value]
    if key in {"environment", "labels", "sysctls"}:
        return _pairs(value, f"{where}: {key}")
    if key == "extra_hosts":
        items = value.items() if isinstance(value, Mapping) else [(h, None) for h in value]
        return [f"{h}:{ip}" if ip is not None else str(h).replace("=", ":", 1) for h, ip in items]
    return value


def _network(
    key: str, raw: Mapping[str, Any], *, default_name: str, project: str, netkit_image: str
) -> dict[str, Any]:
    where = f"network {key}"
    if raw.get("enable_ipv6"):
        raise StackPlanError(
            f"{where}: IPv6 on a Swarm overlay network is not supported by the lab's Swarm mode"
        )
    external = raw.get("external")
    if external:
        name = raw.get("name") or (external.get("name") if isinstance(external, Mapping) else key)
        return {"external": True, "name": str(name or key)}
    labels = _pairs(raw.get("labels"), f"{where}: labels")
    labels[PROJECT_LABEL] = project
    if netkit_image:
        labels[NETKIT_LABEL] = netkit_image
    entry: dict[str, Any] = {"driver": "overlay", "attachable": True, "labels": labels}
    if raw.get("name") and raw["name"] != default_name:
        entry["name"] = str(raw["name"])
    if raw.get("internal"):
        entry["internal"] = True
    options = _mapping(raw.get("driver_opts"), f"{where}: driver_opts")
    if options:
        entry["driver_opts"] = dict(options)
    ipam = _mapping(raw.get("ipam"), f"{where}: ipam")
    subnets = [
        {"subnet": str(item["subnet"])}
        for item in ipam.get("config") or ()
        if isinstance(item, Mapping) and item.get("subnet")
    ]
    if subnets:
        entry["ipam"] = {"config": subnets}
    return entry


def _volume(key: str, raw: Mapping[str, Any], *, default_name: str, project: str) -> dict[str, Any]:
    entry = {k: v for k, v in raw.items() if k in TOP_VOLUME_KEYS and v is not None}
    if entry.get("name") == default_name:
        del entry["name"]
    if entry.get("external"):
        return {"external": True, **({"name": entry["name"]} if "name" in entry else {})}
    labels = _pairs(entry.get("labels"), f"volume {key}: labels")
    entry["labels"] = {**labels, PROJECT_LABEL: project}
    return entry


def grouped_notes(notes: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """(note, service) pairs -> one line per note naming its services, in first-seen order."""
    services: dict[str, list[str]] = {}
    for note, service in notes:
        listed = services.setdefault(note, [])
        if service not in listed:
            listed.append(service)
    lines = []
    for note, names in services.items():
        key, sep, text = note.partition(": ")
        lines.append(f"{key} ({', '.join(names)})" + (f": {text}" if sep else ""))
    return tuple(lines)


def dependency_waves(model: ProjectModel) -> tuple[tuple[str, ...], ...]:
    """Services grouped by the depth of their ``depends_on`` chain (the model's order)."""
    depth: dict[str, int] = {}
    known = set(model.service_names)
    for spec in model.services:  # dependencies come first in the model
        parents = [d for d in spec.depends_on if d in known]
        depth[spec.name] = 1 + max((depth[d] for d in parents), default=-1)
    count = max(depth.values(), default=-1) + 1
    return tuple(
        tuple(spec.name for spec in model.services if depth[spec.name] == level)
        for level in range(count)
    )


def stack_plan(
    config: Mapping[str, Any],
    *,
    model: ProjectModel,
    scale: Mapping[str, int] | None = None,
    placements: Mapping[str, Placement] | None = None,
    image_refs: Mapping[str, str] | None = None,
    built_images: Mapping[str, str] | None = None,
    netkit_image: str = "",
    image_healthchecks: frozenset[str] = frozenset(),
) -> StackPlan:
    """The stack of the project ``config`` describes (see the module docstring).

    ``scale``: replicas per service (``lab up --scale``); ``placements``: from
    ``--spread``; ``image_refs``: local image -> the reference nodes run
    (a registry's); ``built_images``: service -> image the lab built for it;
    ``image_healthchecks``: the local images whose own config has a healthcheck.
    """
    project = model.project
    scale = dict(scale or {})
    placements = dict(placements or {})
    image_refs = dict(image_refs or {})
    built = dict(built_images or {})
    raw_services = _mapping(config.get("services"), "services")
    notes: list[tuple[str, str]] = []
    services: dict[str, Any] = {}
    images: list[str] = []
    for spec in model.services:
        raw = _mapping(raw_services.get(spec.name), f"service {spec.name}")
        local = built.get(spec.name) or (str(raw["image"]) if raw.get("image") else None)
        image = image_refs.get(local, local) if local is not None else None
        replicas = scale.get(spec.name, spec.replicas)
        services[spec.name] = _service(
            spec.name,
            raw,
            project=project,
            replicas=replicas,
            placement=placements.get(spec.name),
            image=image,
            image_healthcheck=local in image_healthchecks,
            netkit_image=netkit_image,
            notes=notes,
        )
        if image is not None and image not in images:
            images.append(image)
    raw_networks = _mapping(config.get("networks"), "networks")
    networks = {
        spec.key: _network(
            spec.key,
            _mapping(raw_networks.get(spec.key), f"network {spec.key}"),
            default_name=f"{project}_{spec.key}",
            project=project,
            netkit_image=netkit_image,
        )
        for spec in model.networks
    }
    raw_volumes = _mapping(config.get("volumes"), "volumes")
    used = {
        name for entry in services.values() for name in _named_volumes(entry.get("volumes") or ())
    }
    volumes = {
        str(key): _volume(
            str(key),
            _mapping(raw_volumes.get(key), f"volume {key}"),
            default_name=f"{project}_{key}",
            project=project,
        )
        for key in sorted(used)
        if key in raw_volumes
    }
    document: dict[str, Any] = {"version": STACK_FILE_VERSION, "services": services}
    if networks:
        document["networks"] = networks
    if volumes:
        document["volumes"] = volumes
    return StackPlan(
        project=project,
        document=escape_dollars(document),
        waves=dependency_waves(model),
        images=tuple(images),
        notes=grouped_notes(notes),
    )


def placed_services(model: ProjectModel, config: Mapping[str, Any]) -> frozenset[str]:
    """Services whose Compose file gives their own ``deploy.placement``."""
    raw_services = _mapping(config.get("services"), "services")
    fixed = set()
    for spec in model.services:
        deploy = _mapping(_mapping(raw_services.get(spec.name), spec.name).get("deploy"), "deploy")
        if _mapping(deploy.get("placement"), "placement"):
            fixed.add(spec.name)
    return frozenset(fixed)


def service_replicas(model: ProjectModel, scale: Mapping[str, int]) -> Sequence[tuple[str, int]]:
    """(service, replicas) in deployment order, ``scale`` applied."""
    return [(spec.name, scale.get(spec.name, spec.replicas)) for spec in model.services]
