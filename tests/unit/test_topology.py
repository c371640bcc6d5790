"""The topology of running labs, from recorded ``docker inspect`` of each example's
containers (Compose v1.29 and v2.40) joined with its recorded config: names and
replicas, networks and addresses of both families, health, links, routes."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from lab.addressing import UnknownTarget
from lab.topology import (
    NO_HEALTHCHECK,
    NoIPv6,
    NoSharedNetwork,
    Topology,
    TopologyError,
    build_topology,
    container_facts,
    merge_service_extensions,
    model_from_config,
    parse_config_json,
    parse_config_yaml,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
VERSIONS = ("v1", "v2")


def inspected(name: str, version: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(
        (FIXTURES / f"{name}.containers.{version}.json").read_text()
    )
    return data


def topology(name: str, version: str, containers: list[dict[str, Any]] | None = None) -> Topology:
    if version == "v1":
        data = parse_config_yaml((FIXTURES / f"{name}.v1.yml").read_text())
    else:
        data = merge_service_extensions(
            parse_config_json((FIXTURES / f"{name}.v2.json").read_text()),
            parse_config_yaml((FIXTURES / f"{name}.v2.yml").read_text()),
        )
    model = model_from_config(data, project="lab14")
    found = inspected(name, version) if containers is None else containers
    return build_topology(model, [container_facts(attrs) for attrs in found])


def in_subnet(ip: str | None, subnet: str) -> bool:
    return ip is not None and ipaddress.ip_address(ip) in ipaddress.ip_network(subnet)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_default_lab(version: str) -> None:
    lab = topology("default", version)
    assert [i.name for i in lab.instances] == ["server", "udp-listener", "client", "rss-poller"]
    assert all(i.ready and i.health == "healthy" for i in lab.instances)
    assert all(i.networks == ("lab",) and i.addresses[0].ipv4 for i in lab.instances)
    assert [n.key for n in lab.networks] == ["lab"]
    assert lab.networks[0].families() == (4,)
    assert lab.routes() == ()
    (link,) = lab.links("client", "server")
    assert (link.name, link.network) == ("client -> server", "lab")


@pytest.mark.parametrize("version", VERSIONS)
def test_replicas_are_named_by_number_and_a_bare_name_means_all(version: str) -> None:
    lab = topology("replicas", version)
    assert [i.name for i in lab.instances] == ["server", "client.1", "client.2", "client.3"]
    assert [i.key for i in lab.select("client")] == ["client.1", "client.2", "client.3"]
    assert lab.one("client").key == "client.1"
    assert lab.one("client.3").number == 3
    assert "client.2" in lab.target_names()
    # the clients have no healthcheck: ready once running
    assert [i.health for i in lab.select("client")] == [NO_HEALTHCHECK] * 3
    assert all(i.ready for i in lab.instances)
    assert len({i.addresses[0].ipv4 for i in lab.instances}) == 4
    links = lab.links("client", "server")
    assert [link.name for link in links] == [f"client.{n} -> server" for n in (1, 2, 3)]
    with pytest.raises(UnknownTarget, match=r"running: client\.1, client\.2, client\.3"):
        lab.select("client.4")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_router_gives_each_side_a_route_to_the_other(version: str) -> None:
    lab = topology("routed", version)
    client, router, server = lab.one("client"), lab.one("router"), lab.one("server")
    assert router.router
    assert not client.router
    net_a, net_b = (router.address_on(n) for n in ("net-a", "net-b"))
    assert net_a is not None
    assert net_b is not None
    routes = {(r.instance, r.destination, r.via, r.network) for r in lab.routes()}
    assert routes == {
        ("client.1", net_b.subnet(4), net_a.ipv4, "net-a"),
        ("server.1", net_a.subnet(4), net_b.ipv4, "net-b"),
    }
    assert lab.routed_via(client, router) == (net_b.subnet(4),)
    assert lab.routed_via(router, client) == ()
    assert in_subnet(server.addresses[0].ipv4, net_b.subnet(4) or "")
    # a link is a pair on a network they share: client and server share none
    with pytest.raises(NoSharedNetwork, match=r"share no network .*through a router"):
        lab.links("client", "server")
    (hop,) = lab.links("client", "router")
    assert hop.network == "net-a"


@pytest.mark.parametrize("version", VERSIONS)
def test_dual_stack_addresses_and_an_ipv4_only_network(version: str) -> None:
    lab = topology("ipv6", version)
    client, server, legacy = lab.one("client"), lab.one("server"), lab.one("legacy")
    assert in_subnet(lab.address(client, "dual", 6), "fd00:5c:14::/64")
    assert in_subnet(lab.address(server, "dual", 6), "fd00:5c:14::/64")
    assert lab.families("dual") == (4, 6)
    assert lab.families("dual", 6) == (6,)
    assert lab.families("plain") == (4,)
    with pytest.raises(NoIPv6, match="network 'plain' has no IPv6"):
        lab.families("plain", 6)
    with pytest.raises(NoIPv6, match="legacy has no IPv6 address on network 'plain'"):
        lab.address(legacy, "plain", 6)
    assert server.networks == ("dual", "plain")
    assert lab.link_network(client, server) == "dual"
    assert lab.link_network(legacy, server) == "plain"
    with pytest.raises(NoSharedNetwork, match="share no network"):
        lab.link_network(client, legacy)
    with pytest.raises(NoSharedNetwork, match="not both on network 'plain'"):
        lab.link_network(client, server, "plain")
    assert lab.network("dual").subnets6 == ("fd00:5c:14::/64",)


def test_two_shared_networks_need_a_choice() -> None:
    containers = copy.deepcopy(inspected("ipv6", "v2"))
    legacy = next(
        c for c in containers if c["Config"]["Labels"]["com.docker.compose.service"] == "legacy"
    )
    legacy["NetworkSettings"]["Networks"]["lab14_dual"] = {
        "IPAddress": "10.99.0.9",
        "IPPrefixLen": 24,
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "02:42:0a:63:00:09",
    }
    lab = topology("ipv6", "v2", containers)
    with pytest.raises(
        NoSharedNetwork, match="share networks plain, dual: pick one with --network"
    ):
        lab.links("legacy", "server")
    (link,) = lab.links("legacy", "server", network="dual")
    assert link.network == "dual"
    with pytest.raises(
        TopologyError, match=r"no network 'nope' in the lab \(networks: dual, plain\)"
    ):
        lab.links("legacy", "server", network="nope")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_service_of_its_own_image_without_healthcheck_is_ready_when_running(version: str) -> None:
    lab = topology("own-image", version)
    echo = lab.one("echo")
    assert (echo.state, echo.health, echo.ready) == ("running", NO_HEALTHCHECK, True)
    assert "echo" in echo.image


def test_stopped_unhealthy_one_off_and_foreign_containers() -> None:
    containers = copy.deepcopy(inspected("replicas", "v1"))
    by_name = {c["Name"]: c for c in containers}
    by_name["/lab14_client_2"]["State"]["Status"] = "exited"
    by_name["/lab14_server_1"]["State"]["Health"] = {"Status": "unhealthy"}
    one_off = copy.deepcopy(by_name["/lab14_client_1"])
    one_off["Name"] = "/lab14_client_run_1"
    one_off["Config"]["Labels"]["com.docker.compose.oneoff"] = "True"
    foreign = copy.deepcopy(by_name["/lab14_client_3"])
    foreign["Config"]["Labels"]["com.docker.compose.service"] = "not-in-the-files"
    lab = topology("replicas", "v1", [*containers, one_off, foreign])
    assert [i.name for i in lab.instances] == ["server", "client.1", "client.2", "client.3"]
    states = {i.name: (i.state, i.health, i.ready) for i in lab.instances}
    assert states["client.2"] == ("exited", "none", False)
    assert states["server"] == ("running", "unhealthy", False)
    assert states["client.1"] == ("running", NO_HEALTHCHECK, True)


def test_a_replica_alone_is_named_by_its_service() -> None:
    containers = [
        c
        for c in inspected("replicas", "v2")
        if c["Config"]["Labels"]["com.docker.compose.container-number"] in {"1"}
    ]
    lab = topology("replicas", "v2", containers)
    assert [i.name for i in lab.instances] == ["server", "client"]
    assert lab.one("client.1").name == "client"
