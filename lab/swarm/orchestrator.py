"""The lab as a stack on a Docker Swarm: :class:`SwarmOrchestrator` (the I/O).

Every decision is made by the pure modules next to this one; this one talks
to engines:

* the **manager** (``DOCKER_HOST``, :attr:`Lab.docker <lab.api.Lab.docker>`):
  its Swarm state, nodes, services, tasks, networks and configs, and
  ``docker stack deploy`` (the CLI: stack deploy is a client-side feature);
* each **node's engine** (:mod:`lab.swarm.nodes`), reached only when something
  must happen on that node: a helper or an exec in a task it runs, logs,
  image loads, and the sweep of ``lab down``;
* the **build engine**, where the images are built or found
  (:mod:`lab.swarm.distribution`).

``lab up --swarm``: the manager is checked; images are built and distributed
(a registry push, or one ``docker save`` and a ``docker load`` per node that
lacks them, recorded in a Swarm config); the stack plan
(:func:`lab.swarm.plan.stack_plan`) is deployed wave by wave, each wave healthy
before the next, and ``lab up`` goes on once every task runs. ``lab down --swarm`` removes the services, waits until every
node has removed their containers, removes the stack's networks, every
labelled helper and volume on each node, the loaded images' tags and the record.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lab import engine
from lab.config import OrchestratorKind
from lab.engine import docker_errors
from lab.errors import DockerNotFound, DockerUnavailable, LabError, NotReady, ServiceNotFound
from lab.helpers import PROJECT_LABEL, ROLE_LABEL
from lab.images import ImageSet
from lab.orchestrator import Action
from lab.overlay import lab_override, override_file
from lab.swarm.distribution import (
    DistributionPlan,
    distribution_plan,
    parse_record,
    receiving_nodes,
    record_document,
)
from lab.swarm.errors import NodeUnreachable, NotASwarmManager, SwarmError
from lab.swarm.nodes import (
    Node,
    check_identity,
    manager_problem,
    node_from_attrs,
    resolve_endpoint,
    unknown_endpoint_names,
)
from lab.swarm.placement import spread
from lab.swarm.plan import (
    STACK_LABEL,
    StackPlan,
    placed_services,
    service_replicas,
    stack_plan,
)
from lab.swarm.tasks import (
    STOPPED_LABEL,
    StackService,
    not_started,
    stack_facts,
    stack_services,
)
from lab.topology import ContainerFacts, ProjectModel, image_has_healthcheck
from lab.waiting import wait_for

if TYPE_CHECKING:
    from lab.api import Lab

log = logging.getLogger("lab.swarm")

RECORD_ROLE = "image-record"
EVERY_NODE = "*"  # in a record: every node that ran the stack (images pulled from a registry)
EXEC_TIMEOUT = 24 * 3600.0  # exec calls block for the whole command (bounded inside)
SAVE_CHUNK = 1024 * 1024
CLI_TAIL = 6  # lines of a failed docker CLI's output in the error
START_POLL = 0.5  # seconds between two looks at the last wave's tasks


class SwarmOrchestrator:
    """The project as the stack ``<project>`` on the Swarm the manager runs."""

    kind: OrchestratorKind = "swarm"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.settings = lab.config.swarm
        self._clients: dict[tuple[str, bool], Any] = {}  # (node ID, long) -> client
        self._node_of_client: dict[int, Node] = {}
        self._hostnames: dict[str, str] = {}
        self._sweep: set[str] | None = None  # node IDs lab down sweeps (fixed before removal)

    # ------------------------------------------------------------------ the manager and nodes

    @cached_property
    def manager_info(self) -> Mapping[str, Any]:
        """``docker info`` of the manager; NotASwarmManager saying how to make one."""
        with docker_errors("cannot ask Docker for its Swarm state"):
            info = self.lab.docker.info()
        problem = manager_problem(info, host=self.lab.config.docker_host)
        if problem is not None:
            raise NotASwarmManager(problem)
        return dict(info)

    @property
    def self_id(self) -> str:
        return str((self.manager_info.get("Swarm") or {}).get("NodeID") or "")

    def nodes(self) -> list[Node]:
        self.manager_info  # noqa: B018 - refuses an engine that is not a manager
        with docker_errors("cannot list the Swarm's nodes"):
            found = [node_from_attrs(attrs) for attrs in self.lab.docker.api.nodes()]
        self._hostnames = {node.id: node.hostname for node in found}
        return found

    def node(self, key: str) -> Node:
        """The node with hostname or ID ``key``."""
        for node in self.nodes():
            if key in {node.hostname, node.id}:
                return node
        raise NodeUnreachable(f"the Swarm has no node {key!r}")

    def node_client(self, node: Node, *, purpose: str, long: bool = False) -> Any:
        """A client of ``node``'s own engine (checked to be that node), cached."""
        cached = self._clients.get((node.id, long))
        if cached is not None:
            return cached
        settings = self.settings
        url = resolve_endpoint(
            node,
            endpoints=settings.endpoints,
            template=settings.node_host,
            self_id=self.self_id,
            self_host=self.lab.config.docker_host,
            purpose=purpose,
        )
        if node.id == self.self_id and url == self.lab.config.docker_host:
            client = self.lab.exec_docker if long else self.lab.docker
        else:
            try:
                client = engine.connect_url(
                    url, timeout=EXEC_TIMEOUT if long else settings.api_timeout
                )
            except DockerUnavailable as exc:
                raise NodeUnreachable(f"node {node.hostname} (for {purpose}): {exc}") from exc
            with docker_errors(f"cannot ask node {node.hostname}'s engine at {url} who it is"):
                info = client.info()
            check_identity(node, url, info)
        self._clients[(node.id, long)] = client
        self._node_of_client[id(client)] = node
        return client

    def prepare(self) -> None:
        self.manager_info  # noqa: B018 - refuses an engine that is not a manager

    def build_engine(self) -> Any:
        if self.settings.build_host is None:
            return self.lab.docker
        return self._build_client

    @cached_property
    def _build_client(self) -> Any:
        url = self.settings.build_host or self.lab.config.docker_host
        try:
            return engine.connect_url(url, timeout=self.settings.load_timeout)
        except DockerUnavailable as exc:
            raise SwarmError(f"the build engine (SOCKETLAB_SWARM_BUILD_HOST): {exc}") from exc

    # ------------------------------------------------------------------ the stack

    def _services(self) -> list[StackService]:
        project = self.lab.project
        with docker_errors(f"cannot list the services of stack {project!r}"):
            listed = self.lab.docker.api.services(filters={"label": f"{STACK_LABEL}={project}"})
        return stack_services(listed, project=project)

    def _tasks(self, services: Sequence[StackService]) -> list[Mapping[str, Any]]:
        if not services:
            return []
        with docker_errors(f"cannot list the tasks of stack {self.lab.project!r}"):
            return list(self.lab.docker.api.tasks(filters={"service": [s.id for s in services]}))

    def container_facts(self) -> list[ContainerFacts]:
        self.manager_info  # noqa: B018
        services = self._services()
        tasks = self._tasks(services)
        if any(str(t.get("NodeID") or "") not in self._hostnames for t in tasks if t.get("NodeID")):
            self.nodes()  # a node we have not seen: refresh the hostnames
        return stack_facts(
            model=self.lab.model, services=services, tasks=tasks, nodes=self._hostnames
        )

    def containers(self, service: str) -> list[Any]:
        found = []
        for instance in self.lab.topology().select(service):
            if not instance.container_id:
                why = f": {instance.problem}" if instance.problem else ""
                raise ServiceNotFound(
                    f"{instance.name} has no container yet (its task is {instance.state}{why})"
                )
            node = self.node(instance.node)
            client = self.node_client(node, purpose=f"reaching {instance.name}")
            with docker_errors(f"cannot look up {instance.name} on node {node.hostname}"):
                found.append(client.containers.get(instance.container_id))
        return found

    def engine_of(self, container: Any) -> Any:
        return container.client

    def exec_engine(self, container: Any) -> Any:
        node = self._node_of_client.get(id(container.client))
        if node is None:
            return container.client
        return self.node_client(node, purpose="an exec", long=True)

    def engines(self) -> list[Any]:
        """The manager and every node that runs (or ran) a task of the stack."""
        nodes = {node.id: node for node in self.nodes()}
        runs: dict[str, list[str]] = {}  # node ID -> the services it runs a task of
        if self._sweep is not None:
            wanted = set(self._sweep)
        else:
            services = self._services()
            names = {service.id: service.name for service in services}
            tasks = self._tasks(services)
            wanted = {str(t.get("NodeID")) for t in tasks if t.get("NodeID")}
            for task in tasks:
                name = names.get(str(task.get("ServiceID")))
                if task.get("DesiredState") == "running" and task.get("NodeID") and name:
                    listed = runs.setdefault(str(task["NodeID"]), [])
                    listed += [name] if name not in listed else []
        wanted.add(self.self_id)
        return [
            self.node_client(nodes[node_id], purpose=_helpers_purpose(runs.get(node_id, [])))
            for node_id in sorted(wanted)
            if node_id in nodes
        ]

    def act(self, service: str, action: Action) -> None:
        if action == "stop":
            self._stop(service)
            return
        if action in {"start", "restart"}:
            # A task that ended stays ended: Swarm makes a new one (a new container,
            # perhaps a new address) when the service is scaled back or updated with --force.
            topology = self.lab.topology()
            chosen = topology.select(service)
            names = list(dict.fromkeys(i.service for i in chosen))
            stopped = {name for name in names if self._scale_back(name)}
            rest = [i for i in chosen if i.service not in stopped]
            if action == "start" and all(i.state == "running" for i in rest):
                return
            for name in dict.fromkeys(i.service for i in rest):
                full = f"{self.lab.project}_{name}"
                with docker_errors(f"cannot {action} {name} (service {full})"):
                    self.lab.docker.services.get(full).force_update()
            return
        for container in self.containers(service):
            with docker_errors(f"cannot {action} {service}"):
                getattr(container, action)()

    def _stop(self, service: str) -> None:
        """Scale the services ``service`` names to 0 and wait until their tasks are down.

        Stopping a task's container would not do: its restart policy (``any`` for
        a service with a healthcheck, see :mod:`lab.swarm.plan`) starts another
        after 5 s. A task Swarm shut down itself is restarted by no policy, and
        the service's label says how many replicas ``start`` brings back.
        """
        topology = self.lab.topology()
        chosen = topology.select(service)
        for name in dict.fromkeys(i.service for i in chosen):
            every = [i for i in topology.instances if i.service == name]
            if len([i for i in chosen if i.service == name]) < len(every):
                raise LabError(
                    f"cannot stop {service} alone: on a Swarm, stop scales a whole service to 0 "
                    f"({name} has {len(every)} replicas: stop {name})"
                )
            full = f"{self.lab.project}_{name}"
            with docker_errors(f"cannot stop {name} (service {full})"):
                found = self.lab.docker.services.get(full)
                spec = found.attrs["Spec"]
                replicated = (spec.get("Mode") or {}).get("Replicated")
                if replicated is None:
                    raise LabError(
                        f"cannot stop {name}: it is a global service, one task on every node, "
                        "and on a Swarm stop scales a replicated service to 0"
                    )
                replicas = int(replicated.get("Replicas", 1))
                if replicas == 0:
                    continue  # stopped already
                labels = {**(spec.get("Labels") or {}), STOPPED_LABEL: str(replicas)}
                self._set_replicas(found, 0, labels)

        def down() -> bool:
            return not any(i.state == "running" for i in self.lab.topology().select(service))

        wait_for(down, timeout=self.settings.api_timeout, what=f"{service} to stop")

    def _scale_back(self, name: str) -> bool:
        """Give a service a ``stop`` scaled to 0 its replicas back; False if it was not."""
        full = f"{self.lab.project}_{name}"
        with docker_errors(f"cannot start {name} (service {full})"):
            found = self.lab.docker.services.get(full)
            spec = found.attrs["Spec"]
            labels = dict(spec.get("Labels") or {})
            replicas = str(labels.pop(STOPPED_LABEL, ""))
            if not replicas.isdigit():
                return False
            self._set_replicas(found, int(replicas), labels)
        return True

    def _set_replicas(self, found: Any, replicas: int, labels: Mapping[str, str]) -> None:
        """One update of a service's replica count and labels, the rest of its spec as
        it is: neither is part of the task template, so no other task is replaced."""
        self.lab.docker.api.update_service(
            found.id,
            found.version,
            mode={"Replicated": {"Replicas": replicas}},
            labels=dict(labels),
            fetch_current_spec=True,
        )

    # ------------------------------------------------------------------ up

    def start(
        self,
        model: ProjectModel,
        *,
        images: ImageSet,
        scale: Mapping[str, int],
        timeout: float,
    ) -> ImageSet:
        lab = self.lab
        deadline = time.monotonic() + timeout
        nodes = self.nodes()
        for name in unknown_endpoint_names(nodes, self.settings.endpoints):
            lab.progress(f"SOCKETLAB_SWARM_NODES names {name!r}, which is no node of this Swarm")
        lab.progress(
            f"Swarm of {len(nodes)} nodes: " + ", ".join(node.describe() for node in nodes)
        )
        built = self._build_project_images(model, images) if model.has_builds else {}
        document = lab_override(model, project=lab.project, netkit_image=images.netkit)
        with override_file(document, project=lab.project) as extra:
            config = lab.compose(images, extra=(extra,)).config(major=lab.compose_version)
        first = stack_plan(config, model=model, scale=scale, built_images=built)
        checked = _images_with_healthchecks(self.build_engine(), first.images)
        placements = None
        targets = None
        if self.settings.spread:
            result = spread(
                service_replicas(model, scale), nodes, fixed=placed_services(model, config)
            )
            lab.progress(f"spread: {result.describe()}")
            if result.shared:
                lab.progress("spread: fewer usable nodes than services, so some share a node")
            placements, targets = result.placements, result.nodes
        distribution = self._distribute([*first.images, images.netkit], nodes, targets=targets)
        netkit = distribution.refs.get(images.netkit, images.netkit)
        plan = stack_plan(
            config,
            model=model,
            scale=scale,
            placements=placements,
            image_refs=distribution.refs,
            built_images=built,
            netkit_image=netkit,
            image_healthchecks=checked,
        )
        for note in plan.notes:
            lab.progress(f"swarm: {note}")
        runtime = distribution.refs.get(images.runtime, images.runtime)
        self._install_secrets(runtime, receiving_nodes(nodes, targets))
        self._deploy(plan, deadline=deadline)
        self._wait_started(dict(service_replicas(model, scale)), deadline=deadline)
        return dataclasses.replace(
            images, runtime=distribution.refs.get(images.runtime, images.runtime), netkit=netkit
        )

    def _install_secrets(self, runtime: str, nodes: Sequence[Node]) -> None:
        """The secrets volumes on every node that may run a task: stack deploy creates
        a task's volumes on its own node, and adopts ones that already exist there."""
        for node in nodes:
            client = self.node_client(node, purpose="installing the lab's secrets")
            if self.settings.registry and not _has_image(client, runtime):
                with docker_errors(f"cannot pull {runtime} on {node.hostname}"):
                    client.images.pull(runtime)
            self.lab.install_secrets(runtime, engine=client)

    def _build_project_images(self, model: ProjectModel, images: ImageSet) -> dict[str, str]:
        """Build the project's own images with Compose on the build engine (stack
        deploy ignores ``build``); service -> image name."""
        lab = self.lab
        compose = lab.compose(images)
        host = self.settings.build_host or lab.config.docker_host
        compose = dataclasses.replace(compose, env={**compose.env, "DOCKER_HOST": host})
        lab.progress("building the project's own images with Compose on the build engine")
        compose.run("build")
        separator = "-" if lab.compose_version >= 2 else "_"
        return {
            spec.name: spec.image or f"{lab.project}{separator}{spec.name}"
            for spec in model.services
            if spec.build
        }

    def _deploy(self, plan: StackPlan, *, deadline: float) -> None:
        lab = self.lab
        for count in range(1, len(plan.waves) + 1):
            wave = plan.waves[count - 1]
            lab.progress(f"deploying stack {lab.project!r}: {', '.join(wave)}")
            self._stack_deploy(plan.wave_document(count))
            if count < len(plan.waves):
                # depends_on: the next wave starts once this one is healthy.
                remaining = max(1.0, deadline - time.monotonic())
                lab.wait_healthy(timeout=remaining, only=wave)

    def _wait_started(self, wanted: Mapping[str, int], *, deadline: float) -> None:
        """Until every task runs (what ``compose up`` gives ``lab up``): stack deploy
        returns before the last wave's tasks are even placed, and routes and congestion
        control are set only in namespaces that exist."""
        waiting: list[str] = []

        def started() -> bool:
            waiting[:] = not_started(self.lab.topology().instances, wanted)
            return not waiting

        remaining = max(1.0, deadline - time.monotonic())
        try:
            wait_for(started, timeout=remaining, what="the stack's tasks", interval=START_POLL)
        except NotReady as exc:
            raise NotReady(f"not running after {remaining:.0f} s: {', '.join(waiting)}") from exc

    def _stack_deploy(self, document: Mapping[str, Any]) -> None:
        settings = self.settings
        with tempfile.TemporaryDirectory(prefix=f"socketlab-{self.lab.project}-") as folder:
            path = Path(folder) / "stack.json"
            path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
            # --resolve-image never: nodes run the images the lab gave them, and no
            # registry is asked for digests (there may be none).
            argv = [
                *settings.docker_cli.split(),
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "-c",
                str(path),
                self.lab.project,
            ]
            log.info("event=stack_deploy argv=%s", " ".join(argv))
            try:
                result = subprocess.run(
                    argv,
                    env={**os.environ, "DOCKER_HOST": self.lab.config.docker_host},
                    capture_output=True,
                    text=True,
                    timeout=settings.deploy_timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise SwarmError(
                    f"docker stack deploy did not finish in {settings.deploy_timeout:g} s"
                ) from exc
            except OSError as exc:
                raise SwarmError(f"cannot run {argv[0]!r} for docker stack deploy: {exc}") from exc
        output = "\n".join(part for part in (result.stderr, result.stdout) if part).strip()
        if result.returncode != 0:
            tail = " | ".join(output.splitlines()[-CLI_TAIL:]) or "no output"
            raise SwarmError(f"docker stack deploy failed (exit {result.returncode}): {tail}")
        for line in output.splitlines():
            if line.startswith("Ignoring unsupported options"):
                self.lab.progress(f"swarm: docker stack deploy: {line}")

    # ------------------------------------------------------------------ images

    def _distribute(
        self, images: Sequence[str], nodes: Sequence[Node], *, targets: frozenset[str] | None
    ) -> DistributionPlan:
        lab = self.lab
        builder = self.build_engine()
        local = frozenset(image for image in dict.fromkeys(images) if _has_image(builder, image))
        registry = self.settings.registry
        present: dict[str, frozenset[str]] = {}
        if not registry:
            for node in receiving_nodes(nodes, targets):
                client = self.node_client(node, purpose="loading the lab's images")
                present[node.id] = frozenset(i for i in local if _has_image(client, i))
        plan = distribution_plan(
            images, local=local, nodes=nodes, present=present, registry=registry, targets=targets
        )
        lab.progress(f"images: {plan.describe()}")
        if plan.push:
            self._push(builder, plan.push)
            self._record({EVERY_NODE: [ref for _, ref in plan.push]})
        if plan.loads:
            loaded = self._load(builder, plan)
            self._record(loaded)
        return plan

    def _push(self, builder: Any, pushes: Sequence[tuple[str, str]]) -> None:
        started = time.monotonic()
        for image, ref in pushes:
            repository, _, tag = ref.rpartition(":")
            with docker_errors(f"cannot push {image} as {ref}"):
                builder.images.get(image).tag(repository, tag)
                for line in builder.images.push(repository, tag, stream=True, decode=True):
                    if "error" in line:
                        raise SwarmError(f"pushing {ref} failed: {line['error']}")
        self.lab.progress(
            f"pushed {len(pushes)} images to {self.settings.registry} in "
            f"{time.monotonic() - started:.1f} s"
        )

    def _load(self, builder: Any, plan: DistributionPlan) -> dict[str, list[str]]:
        lab = self.lab
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="socketlab-images-") as folder:
            tarball = Path(folder) / "images.tar"
            with tarball.open("wb") as out:
                size = _save(builder, plan.saved, out)
            saved_in = time.monotonic() - started
            lab.progress(
                f"saved {len(plan.saved)} images ({size / 1e6:.0f} MB) in {saved_in:.1f} s"
            )
            loads_started = time.monotonic()

            def load_one(index: int) -> tuple[str, list[str], float]:
                load = plan.loads[index]
                client = self.node_client(load.node, purpose="loading the lab's images")
                began = time.monotonic()
                with tarball.open("rb") as data:  # each load reads the one file itself
                    _load_into(client, data, node=load.node.hostname)
                missing = [i for i in load.images if not _has_image(client, i)]
                if missing:
                    raise SwarmError(
                        f"node {load.node.hostname}: docker load did not give {', '.join(missing)}"
                    )
                return load.node.id, list(load.images), time.monotonic() - began

            with ThreadPoolExecutor(max_workers=self.settings.load_parallel) as pool:
                results = list(pool.map(load_one, range(len(plan.loads))))
        for node_id, _, took in results:
            lab.progress(f"loaded into {self._hostnames.get(node_id, node_id)} in {took:.1f} s")
        lab.progress(
            f"images on {len(results)} nodes in {time.monotonic() - started:.1f} s "
            f"(save {saved_in:.1f} s, loads {time.monotonic() - loads_started:.1f} s)"
        )
        return {node_id: refs for node_id, refs, _ in results}

    def _record(self, loaded: Mapping[str, Sequence[str]]) -> None:
        """Keep what was loaded where in a Swarm config, for ``lab down``."""
        data = record_document(loaded)
        name = f"{self.lab.project}_socketlab-images-{hashlib.sha256(data).hexdigest()[:12]}"
        labels = {PROJECT_LABEL: self.lab.project, ROLE_LABEL: RECORD_ROLE}
        with docker_errors("cannot record the loaded images"):
            existing = self.lab.docker.configs.list(filters={"name": name})
            if not any(config.name == name for config in existing):
                self.lab.docker.configs.create(name=name, data=data, labels=labels)

    def _records(self) -> tuple[list[Any], dict[str, set[str]]]:
        filters = {"label": [f"{PROJECT_LABEL}={self.lab.project}", f"{ROLE_LABEL}={RECORD_ROLE}"]}
        with docker_errors("cannot read the records of loaded images"):
            configs = self.lab.docker.configs.list(filters=filters)
        merged: dict[str, set[str]] = {}
        for config in configs:
            raw = base64.b64decode((config.attrs.get("Spec") or {}).get("Data") or "")
            for node_id, refs in parse_record(raw).items():
                merged.setdefault(node_id, set()).update(refs)
        return configs, merged

    # ------------------------------------------------------------------ down

    def remove(self) -> dict[str, int]:
        lab = self.lab
        project = lab.project
        nodes = {node.id: node for node in self.nodes()}
        services = self._services()
        ran = {str(t.get("NodeID")) for t in self._tasks(services) if t.get("NodeID")}
        configs, loaded = self._records()
        self._sweep = ran | (set(loaded) - {EVERY_NODE})
        removed = {"services": 0, "images": 0}
        for service in services:
            with (
                contextlib.suppress(DockerNotFound),
                docker_errors(f"cannot remove {service.full_name}"),
            ):
                lab.docker.api.remove_service(service.id)
            removed["services"] += 1
        reachable, unreachable = self._sweep_clients(nodes)
        if services:
            self._wait_gone(reachable)
        self._remove_stack_networks()
        lab.progress(f"removed stack {project!r}: {removed['services']} services")
        # Helpers and volumes on every node first: a helper still uses the netkit image.
        left = lab.remove_labelled()
        removed["images"] = self._remove_loaded(loaded, reachable, ran)
        for config in configs:
            with contextlib.suppress(DockerNotFound), docker_errors("cannot remove a record"):
                config.remove()
        if unreachable:
            # What is on those nodes stays: say which, after doing the rest.
            raise SwarmError(
                "; ".join(str(exc) for exc in unreachable)
                + ": their helpers, volumes and loaded images were not removed"
            )
        return {**left, **removed}

    def _sweep_clients(self, nodes: Mapping[str, Node]) -> tuple[dict[str, Any], list[LabError]]:
        clients: dict[str, Any] = {}
        problems: list[LabError] = []
        for node_id in sorted((self._sweep or set()) | {self.self_id}):
            node = nodes.get(node_id)
            if node is None:
                continue  # left the Swarm: nothing to reach
            try:
                clients[node_id] = self.node_client(node, purpose="lab down")
            except LabError as exc:
                problems.append(exc)
        self._sweep = set(clients)
        return clients, problems

    def _wait_gone(self, clients: Mapping[str, Any]) -> None:
        label = {"label": f"{STACK_LABEL}={self.lab.project}"}
        left: list[str] = []

        def gone() -> bool:
            left.clear()
            for node_id, client in clients.items():
                try:
                    with docker_errors("cannot list the stack's containers"):
                        found = client.containers.list(all=True, filters=label)
                except DockerNotFound:
                    return False  # one went between the list and its inspect: look again
                left.extend(f"{c.name} on {self._hostnames.get(node_id, node_id)}" for c in found)
            return not left

        try:
            wait_for(
                gone, timeout=self.settings.remove_timeout, what="the stack's containers to go"
            )
        except NotReady as exc:
            raise SwarmError(f"{exc}: {', '.join(left[:5])} still there") from exc

    def _remove_stack_networks(self) -> None:
        label = {"label": f"{STACK_LABEL}={self.lab.project}"}

        def removed() -> bool:
            with docker_errors("cannot list the stack's networks"):
                networks = self.lab.docker.networks.list(filters=label)
            for network in networks:
                with contextlib.suppress(LabError), docker_errors("removing a network"):
                    network.remove()  # "active endpoints" while a node lags: tried again
            return not networks

        with contextlib.suppress(NotReady):
            wait_for(removed, timeout=self.settings.remove_timeout, what="the stack's networks")

    def _remove_loaded(
        self, loaded: Mapping[str, set[str]], clients: Mapping[str, Any], ran: set[str]
    ) -> int:
        count = 0
        for node_id, client in clients.items():
            refs = set(loaded.get(node_id, set()))
            if node_id in ran:
                refs |= loaded.get(EVERY_NODE, set())
            for ref in sorted(refs):
                with contextlib.suppress(DockerNotFound), docker_errors(f"cannot untag {ref}"):
                    client.images.remove(ref)
                    count += 1
        return count


# --------------------------------------------------------------------------- image I/O


def _helpers_purpose(services: Sequence[str]) -> str:
    """Why the lab reaches a node's engine to list its helpers (named in an error):
    shaping lists them all first, whatever node the shaped service is on."""
    runs = f"; it runs {', '.join(services)}" if services else ""
    return f"the lab's helpers and leftovers there{runs}"


def _images_with_healthchecks(client: Any, images: Sequence[str]) -> frozenset[str]:
    """The images whose own config has a healthcheck, on the build engine (where the
    lab builds and from where it sends images). One it does not have is left out: a
    node pulls it, and its healthcheck stays unknown (the restart policy is Compose's)."""
    checked = set()
    for ref in images:
        try:
            with docker_errors(f"cannot look up image {ref}"):
                attrs = client.images.get(ref).attrs
        except DockerNotFound:
            continue
        if image_has_healthcheck((attrs.get("Config") or {}).get("Healthcheck")):
            checked.add(ref)
    return frozenset(checked)


def _has_image(client: Any, ref: str) -> bool:
    try:
        with docker_errors(f"cannot look up image {ref}"):
            client.images.get(ref)
    except DockerNotFound:
        return False
    return True


def _save(client: Any, images: Sequence[str], out: IO[bytes]) -> int:
    """``docker save IMAGE...`` into ``out``: one tarball, shared layers once; its size."""
    api = client.api
    size = 0
    with docker_errors(f"cannot save {', '.join(images)}"):
        # docker-py saves one image per call; the Engine API's /images/get takes several.
        response = api._get(api._url("/images/get"), params={"names": list(images)}, stream=True)
        api._raise_for_status(response)
        for chunk in response.iter_content(SAVE_CHUNK):
            out.write(chunk)
            size += len(chunk)
    return size


def _load_into(client: Any, data: IO[bytes], *, node: str) -> None:
    """``docker load`` of ``data`` into ``client``'s engine; a reported error is a SwarmError."""
    with docker_errors(f"cannot load the lab's images into node {node}"):
        for line in _stream(client.api.load_image(data=data)):
            if "error" in line:
                raise SwarmError(f"node {node}: docker load failed: {line['error']}")


def _stream(lines: Any) -> Iterator[Mapping[str, Any]]:
    for line in lines or ():
        if isinstance(line, Mapping):
            yield line
