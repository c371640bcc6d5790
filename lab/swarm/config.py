"""Settings of the lab on a Docker Swarm (``lab up --swarm``), read once with the lab's.

:class:`SwarmConfig` is ``LabConfig.swarm``. Each node's Docker endpoint comes from
``SOCKETLAB_SWARM_NODES`` (``NODE=URL`` pairs, NODE a hostname or node ID as
``docker node ls`` shows them), else from the template ``SOCKETLAB_SWARM_NODE_HOST``;
the manager ``DOCKER_HOST`` names needs neither (see :mod:`lab.swarm.nodes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from socketlab.config import EnvConfig, env_field
from socketlab.errors import ConfigError

# What a template may use: the node's hostname, its address (as Swarm reports it), its ID.
TEMPLATE_FIELDS = ("hostname", "addr", "id")


def parse_node_endpoints(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("node-1=unix:///a.sock", "node-2=tcp://10.0.0.2:2375")`` -> {node: URL}; a pair
    without ``=``, a name twice or a URL without a scheme is a ConfigError."""
    endpoints: dict[str, str] = {}
    for pair in pairs:
        name, sep, url = (part.strip() for part in pair.partition("="))
        if not sep or not name or not url:
            raise ConfigError(
                f"SOCKETLAB_SWARM_NODES: {pair!r} is not NODE=URL "
                "(e.g. node-2=tcp://10.0.0.2:2375, pairs separated by commas)"
            )
        if "://" not in url:
            raise ConfigError(
                f"SOCKETLAB_SWARM_NODES: {name}'s endpoint {url!r} has no scheme "
                "(unix://, tcp:// or ssh://)"
            )
        if name in endpoints:
            raise ConfigError(f"SOCKETLAB_SWARM_NODES names {name!r} twice")
        endpoints[name] = url
    return endpoints


@dataclass(frozen=True, kw_only=True)
class SwarmConfig(EnvConfig):
    """Where the nodes' engines are, how images reach them, and how long each step may take."""

    nodes: tuple[str, ...] = env_field(
        "SOCKETLAB_SWARM_NODES",
        (),
        "each Swarm node's Docker endpoint for helpers, exec and image loads: NODE=URL pairs "
        "separated by commas (NODE: hostname or ID; URL: unix://, tcp:// or ssh://); the "
        "manager DOCKER_HOST names needs none",
    )
    node_host: str | None = env_field(
        "SOCKETLAB_SWARM_NODE_HOST",
        None,
        "template of a node's endpoint for nodes SOCKETLAB_SWARM_NODES leaves out, with "
        "{hostname}, {addr} or {id}, e.g. ssh://admin@{addr}",
    )
    registry: str | None = env_field(
        "SOCKETLAB_SWARM_REGISTRY",
        None,
        "registry (HOST:PORT) the lab's images are pushed to and nodes pull from "
        "(default: none: `docker save` once, `docker load` into each node that lacks them)",
    )
    build_host: str | None = env_field(
        "SOCKETLAB_SWARM_BUILD_HOST",
        None,
        "engine that builds (or already holds) the lab's images before they go to the nodes "
        "(default: DOCKER_HOST, the manager)",
    )
    spread: bool = env_field(
        "SOCKETLAB_SWARM_SPREAD",
        False,
        "put each service on a different node when there are enough (`lab up --spread`)",
    )
    api_timeout: float = env_field(
        "SOCKETLAB_SWARM_API_TIMEOUT", 60.0, "seconds one Docker API call to a node may take"
    )
    deploy_timeout: float = env_field(
        "SOCKETLAB_SWARM_DEPLOY_TIMEOUT", 120.0, "seconds `docker stack deploy` may take"
    )
    load_timeout: float = env_field(
        "SOCKETLAB_SWARM_LOAD_TIMEOUT",
        900.0,
        "seconds to save the lab's images once and load (or push) them, per node",
    )
    load_parallel: int = env_field(
        "SOCKETLAB_SWARM_LOAD_PARALLEL", 4, "nodes loaded with images at the same time"
    )
    remove_timeout: float = env_field(
        "SOCKETLAB_SWARM_REMOVE_TIMEOUT",
        120.0,
        "seconds `lab down` waits for the nodes to remove the stack's containers",
    )
    docker_cli: str = env_field(
        "SOCKETLAB_SWARM_DOCKER_CLI", "docker", "the docker CLI that runs `docker stack deploy`"
    )

    def __post_init__(self) -> None:
        parse_node_endpoints(self.nodes)
        if self.node_host is not None:
            try:
                self.node_host.format(**dict.fromkeys(TEMPLATE_FIELDS, "x"))
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"SOCKETLAB_SWARM_NODE_HOST={self.node_host!r} may only use "
                    f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
                ) from exc
        if self.load_parallel < 1:
            raise ConfigError(f"SOCKETLAB_SWARM_LOAD_PARALLEL={self.load_parallel} is below 1")

    @property
    def endpoints(self) -> dict[str, str]:
        """``SOCKETLAB_SWARM_NODES`` as {node: URL}."""
        return parse_node_endpoints(self.nodes)
