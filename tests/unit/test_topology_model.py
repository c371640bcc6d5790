"""The project model from Compose's normalised config, recorded from Compose v1.29
(``config``, YAML) and v2.40 (``config --format json``, plus its YAML for ``x-*``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.addressing import UnknownTarget
from lab.topology import (
    ProjectModel,
    TopologyError,
    merge_service_extensions,
    model_from_config,
    parse_config_json,
    parse_config_yaml,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
PROJECTS = ("default", "routed", "replicas", "ipv6", "own-image")


def v1(name: str) -> ProjectModel:
    return model_from_config(
        parse_config_yaml((FIXTURES / f"{name}.v1.yml").read_text()), project="lab14"
    )


def v2(name: str) -> ProjectModel:
    data = parse_config_json((FIXTURES / f"{name}.v2.json").read_text())
    rendered = parse_config_yaml((FIXTURES / f"{name}.v2.yml").read_text())
    return model_from_config(merge_service_extensions(data, rendered), project="lab14")


@pytest.mark.parametrize("name", PROJECTS)
def test_both_composes_give_the_same_model(name: str) -> None:
    assert v1(name) == v2(name)


def test_the_default_lab_in_the_order_of_its_file() -> None:
    model = v2("default")
    assert model.service_names == ("server", "udp-listener", "client", "rss-poller")
    assert [n.key for n in model.networks] == ["lab"]
    assert model.networks[0].name == "lab14_lab"
    assert all(s.healthcheck and s.networks == ("lab",) and s.replicas == 1 for s in model.services)
    assert model.service("client").depends_on == ("server", "udp-listener")
    assert not model.routers
    assert not model.has_builds


def test_a_router_is_marked_and_sits_on_both_networks() -> None:
    model = v2("routed")
    assert model.routers == ("router",)
    assert model.service("router").networks == ("net-a", "net-b")
    assert model.service("client").networks == ("net-a",)
    assert not model.service("client").healthcheck
    assert model.service("server").healthcheck


def test_compose_v2s_json_alone_drops_the_router_mark() -> None:
    # docker/compose#11528: why the YAML rendering is read for x-* keys
    data = parse_config_json((FIXTURES / "routed.v2.json").read_text())
    assert "x-socketlab" not in data["services"]["router"]
    assert model_from_config(data, project="lab14").routers == ()


def test_replicas_from_deploy_and_the_implicit_default_network() -> None:
    model = v1("replicas")
    assert model.service("client").replicas == 3
    assert model.service("server").replicas == 1
    assert [n.key for n in model.networks] == ["default"]
    assert model.networks[0].name == "lab14_default"


def test_ipv6_networks_and_their_subnets() -> None:
    model = v2("ipv6")
    dual, plain = model.network("dual"), model.network("plain")
    assert (dual.ipv6, dual.subnets) == (True, ("fd00:5c:14::/64",))
    assert (plain.ipv6, plain.subnets) == (False, ())
    assert model.service("server").networks == ("dual", "plain")


def test_a_service_built_from_its_own_dockerfile() -> None:
    model = v1("own-image")
    assert model.has_builds
    assert model.service("echo").build
    assert not model.service("echo").healthcheck


def test_unknown_names_list_the_services() -> None:
    with pytest.raises(
        UnknownTarget, match=r"no service 'nope' in the lab \(services: client, echo\)"
    ):
        v2("own-image").service("nope")
    with pytest.raises(TopologyError, match=r"no network 'x' in the lab \(networks: dual, plain\)"):
        v2("ipv6").network("x")


def test_the_default_lab_asks_cubic_for_every_service_in_both_composes() -> None:
    for model in (v1("default"), v2("default")):
        assert {s.name: s.tcp_congestion for s in model.services} == dict.fromkeys(
            ("server", "udp-listener", "client", "rss-poller"), "cubic"
        )
    # the examples ask nothing: their services keep their namespace's default
    assert {s.tcp_congestion for s in v2("routed").services} == {None}


def with_service(**spec: Any) -> dict[str, Any]:
    return {"name": "p", "services": {"a": {"image": "x", **spec}}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"x-socketlab": {"routr": True}}, "has no key 'routr'", id="typo-in-extension"
        ),
        pytest.param({"x-socketlab": {"router": "yes"}}, "must be true or false", id="not-a-bool"),
        pytest.param({"x-socketlab": ["router"]}, "expected a mapping", id="not-a-mapping"),
        pytest.param(
            {"x-socketlab": {"tcp_congestion": "cubik"}},
            "service a: x-socketlab.tcp_congestion: 'cubik' is not a TCP congestion control",
            id="unknown-algorithm",
        ),
        pytest.param({"deploy": {"replicas": "many"}}, "is not a number", id="replicas-text"),
        pytest.param({"deploy": {"replicas": -1}}, "below 0", id="negative"),
    ],
)
def test_bad_extensions_and_replicas_are_one_line_errors(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        model_from_config(with_service(**spec), project="p")


def test_a_dependency_cycle_is_refused() -> None:
    data = {"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": {"a": {}}}}}
    with pytest.raises(TopologyError, match="cycle"):
        model_from_config(data, project="p")


def test_no_services_and_output_that_is_not_a_config() -> None:
    with pytest.raises(TopologyError, match="no services"):
        model_from_config({"services": {}}, project="p")
    with pytest.raises(TopologyError, match="not JSON"):
        parse_config_json("services:\n  a: {}\n")
    with pytest.raises(TopologyError, match="not a mapping"):
        parse_config_yaml("- a\n- b\n")


def test_network_mode_and_healthcheck_disable() -> None:
    data = {
        "services": {
            "a": {"network_mode": "host", "healthcheck": {"disable": True}},
            "b": {"healthcheck": {"test": ["NONE"]}},
        }
    }
    model = model_from_config(data, project="p")
    assert model.service("a").networks == ()
    assert not model.service("a").healthcheck
    assert not model.service("b").healthcheck
    assert model.service("b").networks == ("default",)


def test_external_networks_keep_their_name() -> None:
    data = {
        "services": {"a": {"networks": {"outside": None}}},
        "networks": {"outside": {"external": True, "name": "shared-net"}},
    }
    (network,) = model_from_config(data, project="p").networks
    assert (network.name, network.external) == ("shared-net", True)
    assert json.dumps(network.subnets) == "[]"
