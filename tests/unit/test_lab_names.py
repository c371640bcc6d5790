"""Names and addresses where commands and scenarios meet the topology: routes installed
per namespace, scenario names and variables for replicas, captures of every address,
``lab up --scale`` and the status table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.cli import parse_scale, status_rows
from lab.errors import LabError
from lab.interface import ExecResult, ServiceStatus
from lab.routing import ensure_routes, route_rows
from lab.scenario.capture import tcpdump_argv
from lab.scenario.plan import known_name
from lab.scenario.session import lab_variables
from lab.topology import build_topology, container_facts, model_from_config, parse_config_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


def routed_topology():  # type: ignore[no-untyped-def]
    model = model_from_config(
        parse_config_yaml((FIXTURES / "routed.v1.yml").read_text()), project="lab14"
    )
    attrs = json.loads((FIXTURES / "routed.containers.v1.json").read_text())
    return build_topology(model, [container_facts(a) for a in attrs])


def test_routes_are_installed_in_every_namespace_but_the_routers(
    tmp_path: Path, fake_lab: Any
) -> None:
    lab = type(fake_lab)(tmp_path, services=("client", "router", "server"))
    lab.commands = lambda _lab, _service, _argv: ExecResult(exit_code=0, stdout="", stderr="")
    topology = routed_topology()

    installed = ensure_routes(lab, topology)

    assert sorted(r.instance for r in installed) == ["client.1", "server.1"]
    runs = {service: argv[2] for service, argv, net_admin in lab.netkit_runs if net_admin}
    assert set(runs) == {"client", "server"}
    router = topology.one("router")
    via_a = router.address_on("net-a").ipv4  # type: ignore[union-attr]
    net_b = router.address_on("net-b").subnet(4)  # type: ignore[union-attr]
    assert f"ip route replace {net_b} via {via_a}" in runs["client"]
    assert [row["service"] for row in route_rows(topology)] == ["client", "server"]


def test_a_failing_route_is_an_error_naming_the_service(tmp_path: Path, fake_lab: Any) -> None:
    lab = type(fake_lab)(tmp_path, services=("client", "router", "server"))
    lab.commands = lambda _lab, _service, _argv: ExecResult(
        exit_code=2, stdout="", stderr="RTNETLINK answers: Network is unreachable"
    )
    with pytest.raises(LabError, match="installing routes in client failed: RTNETLINK"):
        ensure_routes(lab, routed_topology())


def test_scenario_names_replicas_known_or_taken_on_trust() -> None:
    running = ("client", "server", "client.1", "client.2", "server.1")
    assert known_name("client.2", running)
    assert not known_name("client.3", running)  # the lab runs two
    assert known_name("client.3", ("client", "server"))  # no running lab: on trust
    assert not known_name("ghost.1", ("client", "server"))
    assert not known_name("ghost", ("client",))


def test_each_replica_has_its_address_variable(tmp_path: Path, fake_lab: Any) -> None:
    lab = type(fake_lab)(tmp_path, services=("server", "client"), replicas={"client": 2})
    variables = lab_variables(lab)
    assert variables["IP_server"] == "10.0.0.2"
    assert variables["IP_client"] == "10.0.0.3"  # the first replica
    assert (variables["IP_client_1"], variables["IP_client_2"]) == ("10.0.0.3", "10.0.0.4")
    assert variables["IP_server_1"] == "10.0.0.2"


def test_a_capture_covers_every_address_of_the_peer() -> None:
    argv = tcpdump_argv(peer_ip="172.20.0.3", snaplen=96, also=["fd00:5c::3", "172.21.0.3"])
    assert argv[-8:] == [
        "host", "172.20.0.3", "or", "host", "fd00:5c::3", "or", "host", "172.21.0.3",
    ]  # fmt: skip


def test_scale_values() -> None:
    assert parse_scale(["client=3", "server=1"]) == {"client": 3, "server": 1}
    assert parse_scale([]) == {}
    for bad in ("client", "client=", "=3", "client=-1", "client=x"):
        with pytest.raises(LabError, match="use SERVICE=N"):
            parse_scale([bad])


def test_status_shows_networks_when_there_are_several() -> None:
    row = ServiceStatus(
        service="server",
        state="running",
        health="running",
        ip="172.20.0.3",
        container="abc",
        image="img",
        addresses=("dual 172.20.0.3 fd00::3", "plain 172.21.0.3"),
    )
    assert status_rows([row], networks=False)[0]["ip"] == "172.20.0.3"
    wide = status_rows([row], networks=True)[0]
    assert wide["networks"] == "dual 172.20.0.3 fd00::3; plain 172.21.0.3"
    assert "ip" not in wide
    assert row.ready
