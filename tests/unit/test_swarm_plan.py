"""The stack a Compose project becomes (lab.swarm.plan), from Compose's own recorded
``config`` of the example projects, v1's YAML and v2's JSON alike: overlay networks,
images, labels, dnsrr, restart policies, waves for depends_on, what stack deploy ignores
left out with a note, what a task cannot be refused with the key named, the service key
tmpfs (which stack deploy drops) as tmpfs mounts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.helpers import PROJECT_LABEL
from lab.overlay import NETKIT_LABEL
from lab.swarm.errors import StackPlanError
from lab.swarm.placement import Placement
from lab.swarm.plan import (
    IGNORED,
    dependency_waves,
    escape_dollars,
    placed_services,
    restart_policy,
    stack_plan,
    stack_port,
    tmpfs_mounts,
)
from lab.topology import (
    ProjectModel,
    has_healthcheck,
    image_has_healthcheck,
    merge_service_extensions,
    model_from_config,
    parse_config_json,
    parse_config_yaml,
    runs_healthcheck,
)

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
CHECKOUT = Path(__file__).resolve().parents[2]
FLAVOURS = ("v1", "v2")
RUNTIME = "socketlab/runtime:latest"  # what the recorded configs name
NETKIT = "socketlab/netkit:abc123"


def recorded(name: str, flavour: str) -> dict[str, Any]:
    if flavour == "v1":
        return parse_config_yaml((FIXTURES / f"{name}.v1.yml").read_text())
    data = parse_config_json((FIXTURES / f"{name}.v2.json").read_text())
    return merge_service_extensions(
        data, parse_config_yaml((FIXTURES / f"{name}.v2.yml").read_text())
    )


def model_of(config: dict[str, Any]) -> ProjectModel:
    return model_from_config(config, project="lab14")


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_default_lab_becomes_a_stack_on_one_attachable_overlay(flavour: str) -> None:
    config = recorded("default", flavour)
    plan = stack_plan(config, model=model_of(config), netkit_image=NETKIT)
    document = plan.document

    assert document["version"] == "3.8"
    assert set(document["services"]) == {"server", "udp-listener", "client", "rss-poller"}
    network = document["networks"]["lab"]
    assert (network["driver"], network["attachable"]) == ("overlay", True)
    assert network["labels"][PROJECT_LABEL] == "lab14"
    assert network["labels"][NETKIT_LABEL] == NETKIT  # helpers find their image here
    assert "name" not in network  # lab14_lab is what stack deploy calls it anyway
    for name, service in document["services"].items():
        assert service["image"] == RUNTIME, name
        assert service["networks"] == {"lab": None}
        assert service["cap_drop"] == ["ALL"]
        assert service["init"] is True
        deploy = service["deploy"]
        # names resolve to task addresses, as on a Compose network: shaping sees them
        assert deploy["endpoint_mode"] == "dnsrr"
        assert deploy["replicas"] == 1
        # restart: "no" (Compose's default too) means an exited task stays down
        assert deploy["restart_policy"] == {"condition": "none"}
        assert deploy["labels"] == {PROJECT_LABEL: "lab14"}
        assert service["labels"][PROJECT_LABEL] == "lab14"
        assert service["labels"][NETKIT_LABEL] == NETKIT
        for ignored in ("security_opt", "depends_on", "restart", "expose", "container_name"):
            assert ignored not in service, (name, ignored)
    server = document["services"]["server"]
    assert server["healthcheck"]["retries"] == 30
    assert server["healthcheck"]["test"][0] == "CMD-SHELL"
    assert document["volumes"]["server-data"]["labels"] == {PROJECT_LABEL: "lab14"}
    assert set(document["volumes"]) == {"server-data", "feed-state", "rss-state"}
    assert plan.images == (RUNTIME,)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_depends_on_becomes_waves_dependencies_first(flavour: str) -> None:
    config = recorded("default", flavour)
    plan = stack_plan(config, model=model_of(config))
    assert plan.waves == (("server", "udp-listener"), ("client", "rss-poller"))
    first = plan.wave_document(1)
    assert set(first["services"]) == {"server", "udp-listener"}
    assert first["networks"] == plan.document["networks"]  # every network from the start
    assert set(plan.wave_document(2)["services"]) == set(plan.document["services"])


def test_what_stack_deploy_ignores_is_one_note_per_key_naming_the_services() -> None:
    config = recorded("default", "v2")
    plan = stack_plan(config, model=model_of(config))
    security = [note for note in plan.notes if note.startswith("security_opt ")]
    assert security == [
        "security_opt (server, udp-listener, client, rss-poller): " + IGNORED["security_opt"]
    ]
    assert any(note.startswith("depends_on (client, rss-poller): ") for note in plan.notes)
    assert any(note.startswith("expose (server, udp-listener): ") for note in plan.notes)


def test_both_composes_give_the_same_services_but_for_mount_syntax() -> None:
    documents = []
    for flavour in FLAVOURS:
        config = recorded("default", flavour)
        document = copy.deepcopy(stack_plan(config, model=model_of(config)).document)
        for service in document["services"].values():
            service.pop("volumes", None)
        documents.append(document)
    assert documents[0]["services"] == documents[1]["services"]
    assert documents[0]["networks"] == documents[1]["networks"]


def test_v2_long_volume_syntax_keeps_what_a_stack_file_takes() -> None:
    config = recorded("default", "v2")
    server = stack_plan(config, model=model_of(config)).document["services"]["server"]
    assert server["volumes"] == [
        {"type": "volume", "source": "server-data", "target": "/srv/socketlab/data"},
        {"type": "volume", "source": "feed-state", "target": "/var/lib/socketlab/feeds"},
    ]


def test_scale_images_placement_and_the_users_own_placement() -> None:
    config = recorded("default", "v1")
    config["services"]["rss-poller"]["deploy"] = {
        "placement": {"constraints": ["node.role == manager"]}
    }
    model = model_of(config)
    assert placed_services(model, config) == frozenset({"rss-poller"})
    plan = stack_plan(
        config,
        model=model,
        scale={"client": 3},
        placements={"server": Placement(constraints=("node.id == abc",), node="node-1")},
        image_refs={RUNTIME: "registry.lab:5000/socketlab/runtime:latest"},
    )
    services = plan.document["services"]
    assert services["client"]["deploy"]["replicas"] == 3
    assert services["server"]["deploy"]["placement"] == {"constraints": ["node.id == abc"]}
    assert services["rss-poller"]["deploy"]["placement"] == {
        "constraints": ["node.role == manager"]
    }
    assert "placement" not in services["client"]["deploy"]
    assert {s["image"] for s in services.values()} == {"registry.lab:5000/socketlab/runtime:latest"}
    assert plan.images == ("registry.lab:5000/socketlab/runtime:latest",)


def test_a_built_service_runs_the_image_the_lab_built() -> None:
    config = recorded("own-image", "v2")
    model = model_of(config)
    built = {spec.name: f"lab14-{spec.name}" for spec in model.services if spec.build}
    assert built  # the example builds its own image
    plan = stack_plan(config, model=model, built_images=built)
    for name, image in built.items():
        assert plan.document["services"][name]["image"] == image
        assert "build" not in plan.document["services"][name]
    assert any(note.startswith("build (") for note in plan.notes)
    # its scripts are bind-mounted from the checkout: only a node with that path can run it
    assert any(
        note.startswith("volumes (") and "needs that path on the task's node" in note
        for note in plan.notes
    ), plan.notes


def test_ipv6_networks_are_refused_with_the_network_named() -> None:
    config = recorded("ipv6", "v1")
    with pytest.raises(StackPlanError, match=r"network \w+: IPv6 on a Swarm overlay"):
        stack_plan(config, model=model_of(config))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("network_mode", "host", id="network_mode"),
        pytest.param("privileged", True, id="privileged"),
        pytest.param("devices", ["/dev/net/tun"], id="devices"),
        pytest.param("pid", "host", id="pid"),
    ],
)
def test_what_a_task_cannot_be_is_refused_naming_service_and_key(key: str, value: Any) -> None:
    config = recorded("default", "v1")
    config["services"]["client"][key] = value
    with pytest.raises(StackPlanError, match=rf"^service client: {key} cannot run on a Swarm"):
        stack_plan(config, model=model_of(config))


def test_privileged_false_and_no_devices_are_fine() -> None:
    config = recorded("default", "v1")
    config["services"]["client"] |= {"privileged": False, "devices": []}
    assert (
        "privileged"
        not in stack_plan(config, model=model_of(config)).document["services"]["client"]
    )


def test_an_unknown_key_is_left_out_with_a_note() -> None:
    config = recorded("default", "v1")
    config["services"]["client"]["mem_swappiness"] = 10
    plan = stack_plan(config, model=model_of(config))
    assert "mem_swappiness" not in plan.document["services"]["client"]
    assert "mem_swappiness (client): not a Swarm service option: left out" in plan.notes


def test_dollars_are_escaped_so_stack_deploy_interpolates_nothing() -> None:
    config = recorded("default", "v1")
    config["services"]["client"]["command"] = ["sh", "-c", "echo $HOME ${X}"]
    config["services"]["client"]["environment"]["PRICE"] = "5$"
    service = stack_plan(config, model=model_of(config)).document["services"]["client"]
    assert service["command"] == ["sh", "-c", "echo $$HOME $${X}"]
    assert service["environment"]["PRICE"] == "5$$"
    assert escape_dollars({"a": ("$", 1, None)}) == {"a": ["$$", 1, None]}


@pytest.mark.parametrize(
    ("restart", "policy"),
    [
        pytest.param(None, {"condition": "none"}, id="absent"),
        pytest.param("no", {"condition": "none"}, id="no"),
        pytest.param("always", {"condition": "any"}, id="always"),
        pytest.param("unless-stopped", {"condition": "any"}, id="unless-stopped"),
        pytest.param("on-failure", {"condition": "on-failure"}, id="on-failure"),
        pytest.param("on-failure:3", {"condition": "on-failure", "max_attempts": 3}, id="n"),
    ],
)
def test_restart_becomes_a_restart_policy(restart: str | None, policy: dict[str, Any]) -> None:
    assert restart_policy(restart) == policy


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_on_failure_with_a_healthcheck_restarts_any_exit(flavour: str) -> None:
    # Swarm stops an unhealthy task with SIGTERM; one that exits 0 then is "complete",
    # and on-failure left its slot empty (tests/swarm: the poller).
    config = recorded("default", flavour)
    services = config["services"]
    for name in services:
        services[name]["restart"] = "on-failure"
    services["client"]["healthcheck"] = {"disable": True}
    services["udp-listener"].pop("healthcheck")
    services["rss-poller"]["restart"] = "on-failure:3"
    plan = stack_plan(config, model=model_of(config))
    conditions = {
        name: service["deploy"]["restart_policy"]
        for name, service in plan.document["services"].items()
    }
    assert conditions == {
        "server": {"condition": "any"},
        "udp-listener": {"condition": "on-failure"},
        "client": {"condition": "on-failure"},
        "rss-poller": {"condition": "any", "max_attempts": 3},
    }
    assert (
        "restart (server, rss-poller): on-failure with a healthcheck became condition any "
        "(Swarm stops an unhealthy task with SIGTERM, and on-failure would not replace one "
        "that then exits 0)"
    ) in plan.notes


@pytest.mark.parametrize(
    ("check", "runs"),
    [
        (None, False),
        ({"disable": True, "test": ["CMD", "true"]}, False),
        ({"test": ["NONE"]}, False),
        ({"test": []}, False),
        ({"test": ["CMD-SHELL", "true"]}, True),
        ({"test": "true"}, True),
        ({"test": ["CMD", "true"]}, True),
        ({"test": "NONE"}, False),
        ({"test": "  "}, False),
        ({"test": ["NONE", "x"]}, False),
    ],
)
def test_which_healthchecks_run(check: Any, runs: bool) -> None:
    assert has_healthcheck(check) is runs


@pytest.mark.parametrize(
    ("check", "image_has_one", "runs"),
    [
        (None, True, True),  # none in Compose: the image's
        (None, False, False),
        ({"interval": "5s"}, True, True),  # Docker merges the interval onto the image's test
        ({"test": []}, True, True),  # an empty test inherits the image's
        ({"disable": True}, True, False),
        ({"test": ["NONE"]}, True, False),
        ({"test": "NONE"}, True, False),
        ({"test": ["CMD", "true"]}, False, True),
        ({"test": "  "}, True, True),
    ],
)
def test_which_healthchecks_run_with_the_images(
    check: Any, image_has_one: bool, runs: bool
) -> None:
    assert runs_healthcheck(check, image_has_one=image_has_one) is runs


@pytest.mark.parametrize(
    ("check", "runs"),
    [
        (None, False),
        ({}, False),
        ({"Test": []}, False),
        ({"Test": ["NONE"]}, False),  # HEALTHCHECK NONE
        ({"Test": ["CMD-SHELL", "probe"]}, True),
        ({"Test": ["CMD", "probe"], "Interval": 5_000_000_000}, True),
    ],
)
def test_which_image_healthchecks_run(check: Any, runs: bool) -> None:
    assert image_has_healthcheck(check) is runs


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_an_images_healthcheck_counts_unless_compose_disables_it(flavour: str) -> None:
    config = recorded("default", flavour)
    services = config["services"]
    for name, raw in services.items():
        raw["restart"] = "on-failure"
        raw.pop("healthcheck", None)
        if name != "udp-listener":
            raw["image"] = "user/checked:1"
    services["client"]["healthcheck"] = {"disable": True}
    services["rss-poller"]["healthcheck"] = {"interval": "5s"}
    checked = frozenset({"user/checked:1"})
    plan = stack_plan(config, model=model_of(config), image_healthchecks=checked)
    conditions = {
        name: service["deploy"]["restart_policy"]["condition"]
        for name, service in plan.document["services"].items()
    }
    assert conditions == {
        "server": "any",
        "udp-listener": "on-failure",  # its image has none
        "client": "on-failure",  # Compose disables the image's
        "rss-poller": "any",  # Compose only sets the interval of the image's
    }
    assert any(note.startswith("restart (server, rss-poller): on-failure") for note in plan.notes)
    unknown = stack_plan(config, model=model_of(config))
    assert {
        service["deploy"]["restart_policy"]["condition"]
        for service in unknown.document["services"].values()
    } == {"on-failure"}


def test_a_bad_restart_is_refused() -> None:
    with pytest.raises(StackPlanError, match="'sometimes' is not no, always"):
        restart_policy("sometimes")
    with pytest.raises(StackPlanError, match="must be a number"):
        restart_policy("on-failure:x")


@pytest.mark.parametrize(
    ("port", "entry"),
    [
        pytest.param("80", {"target": 80, "protocol": "tcp", "mode": "host"}, id="target"),
        pytest.param(
            "8080:80/udp",
            {"target": 80, "published": 8080, "protocol": "udp", "mode": "host"},
            id="short",
        ),
        pytest.param(
            "127.0.0.1:8080:80",
            {"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"},
            id="host-ip",
        ),
        pytest.param(
            {"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"},
            {"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"},
            id="v2-long",
        ),
    ],
)
def test_published_ports_become_host_mode(port: Any, entry: dict[str, Any]) -> None:
    assert stack_port(port, "service web: ports") == entry


@pytest.mark.parametrize("port", ["8000-8010:80", "eighty", "1:2:3:4"])
def test_a_port_we_cannot_read_is_refused(port: str) -> None:
    with pytest.raises(StackPlanError, match="service web: ports: port"):
        stack_port(port, "service web: ports")


def test_vip_endpoint_mode_becomes_dnsrr_with_a_note() -> None:
    config = recorded("default", "v1")
    config["services"]["server"]["deploy"] = {"endpoint_mode": "vip"}
    plan = stack_plan(config, model=model_of(config))
    assert plan.document["services"]["server"]["deploy"]["endpoint_mode"] == "dnsrr"
    assert any(note.startswith("endpoint_mode (server): vip became dnsrr") for note in plan.notes)


def test_waves_follow_depends_on_chains() -> None:
    config = recorded("routed", "v2")
    model = model_of(config)
    waves = dependency_waves(model)
    assert [name for wave in waves for name in wave] == list(model.service_names)
    for index, wave in enumerate(waves):
        for name in wave:
            earlier = {n for w in waves[:index] for n in w}
            assert set(model.service(name).depends_on) <= earlier


def test_the_plan_is_json_a_cli_can_read() -> None:
    config = recorded("replicas", "v2")
    plan = stack_plan(config, model=model_of(config))
    assert json.loads(json.dumps(plan.document)) == plan.document


def test_container_limits_become_deploy_resource_limits() -> None:
    config = recorded("default", "v1")
    config["services"]["server"] |= {"mem_limit": "512m", "cpus": 2.0, "pids_limit": 256}
    config["services"]["client"] |= {"mem_limit": 1073741824}
    config["services"]["client"]["deploy"] = {"resources": {"limits": {"memory": "2g"}}}
    plan = stack_plan(config, model=model_of(config))
    services = plan.document["services"]
    assert services["server"]["deploy"]["resources"] == {
        "limits": {"memory": "512m", "cpus": "2.0"}
    }
    assert services["client"]["deploy"]["resources"] == {"limits": {"memory": "2g"}}
    for key in ("mem_limit", "cpus", "pids_limit"):
        assert key not in services["server"]
    assert any(
        note.startswith("pids_limit (server): no per-service pids limit") for note in plan.notes
    )
    assert not any(note.startswith(("mem_limit", "cpus")) for note in plan.notes)


def checkout_tmpfs() -> dict[str, list[str]]:
    """Each service's ``tmpfs`` in the checkout's docker-compose.yml, as both Composes'
    ``config`` gives it (measured: the same ``PATH:OPTIONS`` strings, v1 and v2)."""
    raw = parse_config_yaml((CHECKOUT / "docker-compose.yml").read_text())
    return {name: spec["tmpfs"] for name, spec in raw["services"].items() if spec.get("tmpfs")}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_default_labs_tmpfs_become_tmpfs_mounts_stack_deploy_keeps(flavour: str) -> None:
    # stack deploy drops the service key tmpfs: the poller's heartbeat directory was
    # then on its read-only root, it turned unhealthy and Swarm stopped it (issue 19).
    tmpfs = checkout_tmpfs()
    assert set(tmpfs) == {"server", "udp-listener", "rss-poller"}
    config = recorded("default", flavour)
    for name, entries in tmpfs.items():
        config["services"][name]["tmpfs"] = entries
    plan = stack_plan(config, model=model_of(config))
    services = plan.document["services"]
    for name, service in services.items():
        assert "tmpfs" not in service, name
    mounts = {
        name: [
            m for m in service.get("volumes") or () if isinstance(m, dict) and m["type"] == "tmpfs"
        ]
        for name, service in services.items()
    }
    assert mounts == {
        "server": [{"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 64 * 1024**2}}],
        "udp-listener": [{"type": "tmpfs", "target": "/tmp", "tmpfs": {"size": 16 * 1024**2}}],
        "client": [],
        "rss-poller": [{"type": "tmpfs", "target": "/run/socketlab", "tmpfs": {"size": 1024**2}}],
    }
    # the services' volumes are still there, before the tmpfs
    without = stack_plan(recorded("default", flavour), model=model_of(config)).document
    for name, service in services.items():
        kept = without["services"][name].get("volumes") or []
        assert service.get("volumes", []) == [*kept, *mounts[name]], name
    assert (
        "tmpfs (rss-poller): /run/socketlab without uid=10001,gid=10001,mode=0700: a Swarm "
        "tmpfs is root's, mode 1777 (the service's user can still write it)"
    ) in plan.notes
    assert not any(note.startswith("tmpfs (server") for note in plan.notes)  # mode=1777 is kept


@pytest.mark.parametrize(
    ("value", "mounts", "left_out"),
    [
        ("/run", [{"type": "tmpfs", "target": "/run"}], None),
        (["/a:size=10k", "/b:size=2G"], [
            {"type": "tmpfs", "target": "/a", "tmpfs": {"size": 10240}},
            {"type": "tmpfs", "target": "/b", "tmpfs": {"size": 2 * 1024**3}},
        ], None),
        (["/c:size=4096,mode=01777,nosuid,nodev,noexec,rw"], [
            {"type": "tmpfs", "target": "/c", "tmpfs": {"size": 4096}},
        ], None),
        (["/d:ro,size=1m"], [
            {"type": "tmpfs", "target": "/d", "tmpfs": {"size": 1024**2}, "read_only": True},
        ], None),
        (["/e:mode=0700,exec"], [{"type": "tmpfs", "target": "/e"}], "mode=0700,exec"),
    ],
)  # fmt: skip
def test_tmpfs_entries_as_mounts(value: Any, mounts: list[Any], left_out: str | None) -> None:
    notes: list[tuple[str, str]] = []
    assert tmpfs_mounts(value, "service s", name="s", notes=notes) == mounts
    if left_out is None:
        assert notes == []
    else:
        ((note, service),) = notes
        assert service == "s"
        assert note.startswith(f"tmpfs: {mounts[0]['target']} without {left_out}: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["/x:size=50%"], "service s: tmpfs /x: tmpfs size '50%' is not bytes or a number with k, m, g"),
        (["/x:size="], "service s: tmpfs /x: tmpfs size '' is not bytes"),
        (["/x:size=1t"], "tmpfs size '1t' is not bytes"),
        (["run:size=1m"], "service s: tmpfs 'run:size=1m' does not start with an absolute path"),
    ],
)  # fmt: skip
def test_a_tmpfs_a_swarm_cannot_have_is_refused_naming_it(value: Any, message: str) -> None:
    with pytest.raises(StackPlanError) as caught:
        tmpfs_mounts(value, "service s", name="s", notes=[])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_long_syntax_tmpfs_size_may_have_a_unit() -> None:
    config = recorded("default", "v1")
    config["services"]["client"]["volumes"] = [
        {"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": "8m"}}
    ]
    plan = stack_plan(config, model=model_of(config))
    assert plan.document["services"]["client"]["volumes"] == [
        {"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": 8 * 1024**2}}
    ]
    config["services"]["client"]["volumes"][0]["tmpfs"]["size"] = "lots"
    with pytest.raises(StackPlanError, match="service client: volumes: tmpfs size 'lots'"):
        stack_plan(config, model=model_of(config))
