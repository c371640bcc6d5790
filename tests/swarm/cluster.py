"""A real multi-node Docker Swarm on one machine, as kind makes Kubernetes clusters.

Each node is a container of the *node image* (the lab's local Debian base plus
``docker.io``) running its own dockerd, on a bridge network of the cluster's own.
What such a node needs was measured on the CI machines (the shared
ENVIRONMENT notes): ``--privileged`` fails there (the host lacks
``CAP_SYS_RESOURCE``), so a node gets every capability Docker 20.10 knows but
that one, seccomp and AppArmor unconfined, tmpfs on ``/run``, the host's cgroup
tree read-write, and a volume for ``/var/lib/docker``.

Storage, measured (loading the lab's 287 MB of images, then one container):
``overlay2`` on the volume: load 5.4 s, run 3.9 s, 300 MB on disk;
``vfs``: 24.3 s, 12.3 s, 2.8 GB (vfs copies every layer whole). So overlay2.

Each node's API is a unix socket bind-mounted out (no TCP port at all); the
first node runs ``swarm init`` with an address pool inside 172.16.0.0/12, the
others join. The node image is tagged by a digest of its Dockerfile and base
image, so it is built once. Everything carries ``io.socketlab.project=<name>``;
:meth:`Cluster.remove` removes it all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from lab.waiting import wait_for

PROJECT_LABEL = "io.socketlab.project"
NODE_REPO = "socketlab-ci/swarm-node"
API_DIR = "/socketlab-api"  # where a node's dockerd puts its second socket
# Inside 172.16.0.0/12, clear of the 172.17-172.20 bridges each node's own dockerd makes.
ADDRESS_POOL = "172.28.0.0/16"
POOL_MASK = 24
STORAGE_DRIVER = "overlay2"
READY_TIMEOUT = 90.0
# Every capability Docker 20.10 knows, but SYS_RESOURCE (the host lacks it).
NODE_CAPS = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "CHOWN", "DAC_OVERRIDE",
    "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
    "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYSLOG",
    "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
)  # fmt: skip
NODE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
USER root
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends docker.io iptables iproute2 ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
"""

Progress = Callable[[str], None]
# Figures measured during a session (printed at its end by the conftest).
FIGURES: dict[str, str] = {}


def node_image_tag(base_image_id: str) -> str:
    """The node image's tag: a digest of its Dockerfile and its base image."""
    digest = hashlib.sha256(f"{NODE_DOCKERFILE}\n{base_image_id}".encode()).hexdigest()
    return f"{NODE_REPO}:{digest[:16]}"


def dockerd_argv() -> list[str]:
    return [
        "dockerd",
        f"--storage-driver={STORAGE_DRIVER}",
        "-H",
        "unix:///var/run/docker.sock",
        "-H",
        f"unix://{API_DIR}/docker.sock",
    ]


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """One node container of a cluster."""

    cluster: str
    index: int
    socket_dir: Path

    @property
    def hostname(self) -> str:
        return f"node-{self.index}"

    @property
    def container(self) -> str:
        return f"{self.cluster}-{self.hostname}"

    @property
    def volume(self) -> str:
        return f"{self.container}-docker"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_dir / self.hostname / 'docker.sock'}"

    def run_options(self, network: str) -> dict[str, Any]:
        """The ``containers.run`` options of this node (pure)."""
        return {
            "name": self.container,
            "hostname": self.hostname,
            "command": dockerd_argv(),
            "detach": True,
            "network": network,
            "labels": {PROJECT_LABEL: self.cluster},
            "cap_add": list(NODE_CAPS),
            "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
            "tmpfs": {"/run": "", "/var/run": ""},
            "volumes": {
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                self.volume: {"bind": "/var/lib/docker", "mode": "rw"},
                str(self.socket_dir / self.hostname): {"bind": API_DIR, "mode": "rw"},
            },
        }


class Cluster:
    """A Swarm of ``size`` node containers on the host engine ``host``."""

    def __init__(self, host: Any, *, name: str, size: int, progress: Progress) -> None:
        self.host = host
        self.name = name
        self.progress = progress
        self.socket_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.nodes = [
            NodeSpec(cluster=name, index=i, socket_dir=self.socket_dir) for i in range(1, size + 1)
        ]
        self.clients: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    @property
    def manager(self) -> NodeSpec:
        return self.nodes[0]

    def client(self, node: NodeSpec) -> Any:
        return self.clients[node.hostname]

    # ------------------------------------------------------------------ up

    def ensure_node_image(self, base_image: str) -> str:
        """Build the node image once per base image (apt reaches the mirror in a build)."""
        tag = node_image_tag(self.host.images.get(base_image).id)
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.host.images.get(tag)
            return tag
        self.progress(f"building the Swarm node image {tag} from {base_image}")
        started = time.monotonic()
        self.host.images.build(
            fileobj=io.BytesIO(NODE_DOCKERFILE.encode()),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            labels={"io.socketlab.inputs": tag.rsplit(":", 1)[1]},
            rm=True,
            forcerm=True,
        )
        self.timings["node image build"] = time.monotonic() - started
        return tag

    def start(self, image: str) -> None:
        started = time.monotonic()
        network = self.host.networks.create(
            self.name, driver="bridge", labels={PROJECT_LABEL: self.name}
        )
        for node in self.nodes:
            (self.socket_dir / node.hostname).mkdir()
            self.host.volumes.create(node.volume, labels={PROJECT_LABEL: self.name})
            self.host.containers.run(image, **node.run_options(network.name))
        for node in self.nodes:
            self.clients[node.hostname] = wait_for(
                lambda node=node: _answering(node.url),
                timeout=READY_TIMEOUT,
                what=f"the dockerd of {node.container}",
                interval=0.5,
            )
        self.timings["nodes start"] = time.monotonic() - started
        self.form()

    def address(self, node: NodeSpec) -> str:
        container = self.host.containers.get(node.container)
        return str(container.attrs["NetworkSettings"]["Networks"][self.name]["IPAddress"])

    def form(self) -> None:
        """``swarm init`` on the first node, every other one joins; wait until all are ready."""
        started = time.monotonic()
        manager = self.client(self.manager)
        manager_ip = self.address(self.manager)
        manager.swarm.init(
            advertise_addr=manager_ip,
            listen_addr="0.0.0.0:2377",
            default_addr_pool=[ADDRESS_POOL],
            subnet_size=POOL_MASK,
        )
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for node in self.nodes[1:]:
            self.client(node).swarm.join(
                remote_addrs=[f"{manager_ip}:2377"],
                join_token=token,
                advertise_addr=self.address(node),
                listen_addr="0.0.0.0:2377",
            )

        def all_ready() -> bool:
            nodes = manager.nodes.list()
            return len(nodes) == len(self.nodes) and all(
                n.attrs["Status"]["State"] == "ready" for n in nodes
            )

        wait_for(all_ready, timeout=READY_TIMEOUT, what="every node to be ready", interval=0.5)
        self.timings["swarm init + join"] = time.monotonic() - started

    def environment(self, *, build_host: str) -> dict[str, str]:
        """What points the lab at this Swarm: the manager, every node, the build engine."""
        return {
            "DOCKER_HOST": self.manager.url,
            "SOCKETLAB_ORCHESTRATOR": "swarm",
            "SOCKETLAB_SWARM_NODES": ",".join(f"{n.hostname}={n.url}" for n in self.nodes),
            "SOCKETLAB_SWARM_BUILD_HOST": build_host,
        }

    # ------------------------------------------------------------------ down

    def remove(self) -> None:
        """Remove every node, volume and network of the cluster, and the socket folder."""
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.close()
        remove_labelled(self.host, self.name)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def remove_labelled(host: Any, name: str) -> None:
    """Remove the containers, volumes and networks labelled with cluster ``name``."""
    label = {"label": f"{PROJECT_LABEL}={name}"}
    for container in host.containers.list(all=True, filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    for volume in host.volumes.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            volume.remove(force=True)
    for network in host.networks.list(filters=label):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def _answering(url: str) -> Any:
    """A client of the engine at ``url`` once it answers, else None (ask again)."""
    try:
        # the client asks for the API version as it is made: that fails too until dockerd runs
        client = docker.DockerClient(base_url=url, timeout=60)
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except Exception:  # not up yet: any error means ask again
        client.close()
        return None
    return client


@contextlib.contextmanager
def running_cluster(
    host: Any, *, name: str, size: int, base_image: str, progress: Progress
) -> Iterator[Cluster]:
    """A formed Swarm for the length of the block; removed however the block ends."""
    cluster = Cluster(host, name=name, size=size, progress=progress)
    try:
        image = cluster.ensure_node_image(base_image)
        cluster.start(image)
        yield cluster
    finally:
        cluster.remove()
