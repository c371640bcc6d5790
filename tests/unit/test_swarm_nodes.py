"""Swarm nodes (lab.swarm.nodes, lab.swarm.placement): the recorded node list, each node's
Docker endpoint (explicit, the manager itself, a template, none: what to set), an engine
that is another node, a manager or not, and --spread placement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.config import LabConfig
from lab.swarm.config import SwarmConfig, parse_node_endpoints
from lab.swarm.errors import NodeUnreachable, StackPlanError
from lab.swarm.nodes import (
    Node,
    check_identity,
    manager_problem,
    node_endpoint,
    node_from_attrs,
    resolve_endpoint,
    sorted_nodes,
    unknown_endpoint_names,
)
from lab.swarm.placement import Placement, spread
from socketlab.errors import ConfigError

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "swarm" / "recorded.json").read_text())
NODES = sorted_nodes([node_from_attrs(attrs) for attrs in RECORDED["nodes"]])
MANAGER_ID = RECORDED["info.manager"]["Swarm"]["NodeID"]
SELF_HOST = "unix:///run/manager.sock"


def by_name(name: str) -> Node:
    return next(node for node in NODES if node.hostname == name)


def test_the_recorded_node_list() -> None:
    assert [(n.hostname, n.role, n.state, n.availability) for n in NODES] == [
        ("node-1", "manager", "ready", "active"),
        ("node-2", "worker", "ready", "active"),
        ("node-3", "worker", "ready", "active"),
    ]
    assert all(node.usable for node in NODES)
    assert by_name("node-1").id == MANAGER_ID
    # every node has an address; a manager's own 0.0.0.0 is replaced by its manager address
    assert all(node.addr and node.addr != "0.0.0.0" for node in NODES)


def test_a_manager_reporting_0000_gets_its_manager_address() -> None:
    node = node_from_attrs(
        {
            "ID": "abc",
            "Description": {"Hostname": "m"},
            "Status": {"State": "ready", "Addr": "0.0.0.0"},
            "ManagerStatus": {"Addr": "10.1.2.3:2377"},
            "Spec": {"Role": "manager", "Availability": "drain"},
        }
    )
    assert (node.addr, node.usable) == ("10.1.2.3", False)


def endpoint(node: Node, **settings: Any) -> str | None:
    options: dict[str, Any] = {
        "endpoints": {},
        "template": None,
        "self_id": MANAGER_ID,
        "self_host": SELF_HOST,
    }
    return node_endpoint(node, **(options | settings))


def test_endpoints_by_hostname_or_id_win_then_the_manager_then_the_template() -> None:
    worker, manager = by_name("node-2"), by_name("node-1")
    assert endpoint(worker, endpoints={"node-2": "tcp://a:2375"}) == "tcp://a:2375"
    assert endpoint(worker, endpoints={worker.id: "ssh://b"}) == "ssh://b"
    assert endpoint(manager) == SELF_HOST
    # an explicit entry wins even for the manager (another way in)
    assert endpoint(manager, endpoints={"node-1": "tcp://m:2375"}) == "tcp://m:2375"
    assert endpoint(worker, template="ssh://admin@{addr}") == f"ssh://admin@{worker.addr}"
    assert endpoint(worker, template="unix:///s/{hostname}.sock") == "unix:///s/node-2.sock"
    assert endpoint(manager, template="ssh://{id}") == SELF_HOST
    assert endpoint(worker) is None


def test_a_node_without_an_endpoint_is_named_with_what_to_set() -> None:
    with pytest.raises(NodeUnreachable) as caught:
        resolve_endpoint(
            by_name("node-3"),
            endpoints={"node-2": "tcp://a:2375"},
            template=None,
            self_id=MANAGER_ID,
            self_host=SELF_HOST,
            purpose="a shaper helper in client",
        )
    message = str(caught.value)
    assert message.startswith(
        "node node-3 has no Docker endpoint for a shaper helper in client: "
        "set SOCKETLAB_SWARM_NODES=node-3=tcp://HOST:PORT"
    )
    assert "SOCKETLAB_SWARM_NODE_HOST" in message


def test_a_typo_in_the_endpoint_list_is_found() -> None:
    assert unknown_endpoint_names(NODES, {"node-2": "x", "nod-3": "y"}) == ["nod-3"]


def test_an_engine_that_is_another_node_is_refused() -> None:
    worker_info = RECORDED["info.worker"]
    check_identity(by_name("node-2"), "unix:///n2.sock", worker_info)
    with pytest.raises(NodeUnreachable, match=r"is node-2, not node node-3"):
        check_identity(by_name("node-3"), "unix:///n2.sock", worker_info)


def test_only_a_manager_can_run_a_stack_and_the_others_say_how() -> None:
    assert manager_problem(RECORDED["info.manager"], host="unix:///m.sock") is None
    inactive = manager_problem(RECORDED["info.inactive"], host="unix:///var/run/docker.sock")
    assert inactive == (
        "the Docker engine at unix:///var/run/docker.sock is not a Swarm manager "
        "(Swarm: inactive): make it one with `docker swarm init` (others join with "
        "`docker swarm join`), or point DOCKER_HOST at a manager"
    )
    worker = manager_problem(RECORDED["info.worker"], host="unix:///n2.sock")
    assert worker is not None
    assert worker.startswith(
        "the Docker engine at unix:///n2.sock is a Swarm worker, not a manager"
    )


def test_node_endpoints_parse_and_bad_ones_are_one_line() -> None:
    assert parse_node_endpoints(("node-1=unix:///a.sock", " node-2 = tcp://b:2375 ")) == {
        "node-1": "unix:///a.sock",
        "node-2": "tcp://b:2375",
    }
    config = LabConfig.from_env(
        {"SOCKETLAB_SWARM_NODES": "node-1=unix:///a.sock,node-2=ssh://me@b"}
    )
    assert config.swarm.endpoints == {"node-1": "unix:///a.sock", "node-2": "ssh://me@b"}
    for raw, message in [
        ("node-1", "is not NODE=URL"),
        ("node-1=b:2375", "has no scheme"),
        ("a=unix:///x,a=unix:///y", "names 'a' twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            LabConfig.from_env({"SOCKETLAB_SWARM_NODES": raw})


def test_a_template_may_only_use_the_node_fields() -> None:
    assert SwarmConfig(node_host="ssh://{hostname}").node_host == "ssh://{hostname}"
    with pytest.raises(ConfigError, match=r"may only use \{hostname\}, \{addr\}, \{id\}"):
        LabConfig.from_env({"SOCKETLAB_SWARM_NODE_HOST": "tcp://{ip}:2375"})
    with pytest.raises(ConfigError, match="LOAD_PARALLEL=0 is below 1"):
        SwarmConfig(load_parallel=0)


# --------------------------------------------------------------------------- placement

DEFAULT_LAB = [("server", 1), ("udp-listener", 1), ("client", 1), ("rss-poller", 1)]


def test_spread_puts_client_server_and_listener_on_three_nodes() -> None:
    result = spread(DEFAULT_LAB, NODES)
    nodes = {name: placement.node for name, placement in result.placements.items()}
    assert nodes == {
        "server": "node-1",
        "udp-listener": "node-2",
        "client": "node-3",
        "rss-poller": "node-1",  # four services, three nodes: round robin
    }
    assert result.shared
    # every task is pinned: only these nodes need the images
    assert result.nodes == frozenset(node.id for node in NODES)
    assert result.placements["client"].constraints == (f"node.id == {by_name('node-3').id}",)
    assert result.describe().startswith("server -> node-1, udp-listener -> node-2")


def test_with_enough_nodes_every_service_has_its_own() -> None:
    many = [Node(id=f"id{i}", hostname=f"n{i}", state="ready") for i in range(5)]
    result = spread(DEFAULT_LAB, many)
    assert not result.shared
    assert len({p.node for p in result.placements.values()}) == 4


def test_replicas_spread_over_nodes_and_fixed_or_empty_services_are_left_alone() -> None:
    result = spread(
        [("server", 1), ("client", 3), ("rss-poller", 0), ("udp-listener", 1)],
        NODES,
        fixed=frozenset({"udp-listener"}),
    )
    assert result.placements == {
        "server": Placement(
            constraints=(f"node.id == {by_name('node-1').id}",),
            node="node-1",
            node_id=by_name("node-1").id,
        ),
        "client": Placement(spread_over=("node.id",)),
    }
    assert result.placements["client"].deploy_entry() == {"preferences": [{"spread": "node.id"}]}


def test_nodes_that_are_down_or_drained_get_nothing() -> None:
    nodes = [
        Node(id="a", hostname="a", state="down"),
        Node(id="b", hostname="b", state="ready", availability="drain"),
        Node(id="c", hostname="c", state="ready"),
    ]
    result = spread(DEFAULT_LAB[:2], nodes)
    assert {p.node for p in result.placements.values()} == {"c"}
    assert result.nodes == frozenset({"c"})
    with pytest.raises(
        StackPlanError, match=r"no Swarm node is ready and active .*a \(worker, down"
    ):
        spread(DEFAULT_LAB, nodes[:2])
