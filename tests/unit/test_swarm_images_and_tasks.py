"""How images reach the nodes (lab.swarm.distribution: load only where missing, or push
to a registry; the record lab down reads, hostile records refused) and a stack's recorded
tasks as the lab's containers (lab.swarm.tasks: node, slot, addresses, health, the error
of a task Swarm cannot place or rejected, the current task of each slot, what lab up
still waits for before it sets routes and congestion control)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lab.swarm.distribution import (
    MAX_RECORD_BYTES,
    distribution_plan,
    has_registry_host,
    parse_record,
    record_document,
    registry_ref,
)
from lab.swarm.errors import SwarmError
from lab.swarm.nodes import Node, node_from_attrs
from lab.swarm.tasks import (
    current_tasks,
    not_started,
    stack_facts,
    stack_services,
    task_problem,
    task_state,
)
from lab.topology import (
    NetworkSpec,
    ProjectModel,
    ServiceSpec,
    build_topology,
)

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "swarm" / "recorded.json").read_text())
NODES = [node_from_attrs(attrs) for attrs in RECORDED["nodes"]]
HOSTNAMES = {node.id: node.hostname for node in NODES}
RUNTIME = "socketlab/runtime:4aeaee0c06d12027"
NETKIT = "socketlab/netkit:3155f8eb6eccbd41"


def node(name: str, **changes: Any) -> Node:
    found = next(n for n in NODES if n.hostname == name)
    return Node(**{**found.__dict__, **changes})


# --------------------------------------------------------------------------- distribution


def test_without_a_registry_only_nodes_missing_an_image_get_a_load() -> None:
    n1, n2, n3 = (node(f"node-{i}") for i in (1, 2, 3))
    plan = distribution_plan(
        [RUNTIME, NETKIT, RUNTIME],
        local=frozenset({RUNTIME, NETKIT}),
        nodes=[n3, n1, n2],
        present={n1.id: frozenset({RUNTIME, NETKIT}), n2.id: frozenset({RUNTIME})},
        registry=None,
    )
    assert [(load.node.hostname, load.images) for load in plan.loads] == [
        ("node-2", (NETKIT,)),
        ("node-3", (RUNTIME, NETKIT)),
    ]
    assert plan.saved == (NETKIT, RUNTIME)  # one tarball for every load
    assert plan.refs == {RUNTIME: RUNTIME, NETKIT: NETKIT}
    assert plan.push == ()
    assert plan.pulled == ()
    assert plan.describe() == "load 1 images into node-2; load 2 images into node-3"


def test_nodes_that_have_everything_or_cannot_run_tasks_get_nothing() -> None:
    n1, n2 = node("node-1"), node("node-2", availability="drain")
    plan = distribution_plan(
        [RUNTIME],
        local=frozenset({RUNTIME}),
        nodes=[n1, n2],
        present={n1.id: frozenset({RUNTIME})},
        registry=None,
    )
    assert plan.loads == ()
    assert plan.describe() == "every node has every image already"


def test_with_every_service_pinned_only_the_chosen_nodes_get_images() -> None:
    n1, n2, n3 = (node(f"node-{i}") for i in (1, 2, 3))
    plan = distribution_plan(
        [RUNTIME, NETKIT],
        local=frozenset({RUNTIME, NETKIT}),
        nodes=[n1, n2, n3],
        present={},
        registry=None,
        targets=frozenset({n1.id, n3.id}),
    )
    assert [load.node.hostname for load in plan.loads] == ["node-1", "node-3"]


def test_images_the_build_engine_lacks_are_pulled_by_the_nodes() -> None:
    plan = distribution_plan(
        [RUNTIME, "redis:7"], local=frozenset({RUNTIME}), nodes=NODES, present={}, registry=None
    )
    assert plan.pulled == ("redis:7",)
    assert all(load.images == (RUNTIME,) for load in plan.loads)
    assert plan.refs["redis:7"] == "redis:7"


def test_with_a_registry_images_are_pushed_once_and_nodes_pull() -> None:
    plan = distribution_plan(
        [RUNTIME, NETKIT, "quay.io/x/y:1"],
        local=frozenset({RUNTIME, NETKIT, "quay.io/x/y:1"}),
        nodes=NODES,
        present={},
        registry="registry.lab:5000",
    )
    assert plan.loads == ()
    assert plan.push == (
        (RUNTIME, f"registry.lab:5000/{RUNTIME}"),
        (NETKIT, f"registry.lab:5000/{NETKIT}"),
    )
    # an image that already names its registry is left as it is
    assert plan.refs["quay.io/x/y:1"] == "quay.io/x/y:1"
    assert plan.refs[RUNTIME] == f"registry.lab:5000/{RUNTIME}"


@pytest.mark.parametrize(
    ("image", "named"),
    [
        ("socketlab/runtime:1", False),
        ("redis:7", False),
        ("localhost/x", True),
        ("reg:5000/x/y", True),
        ("ghcr.io/a/b", True),
    ],
)
def test_which_images_name_a_registry(image: str, named: bool) -> None:
    assert has_registry_host(image) is named
    assert registry_ref(image, "r:5000/") == (image if named else f"r:5000/{image}")


def test_the_record_of_loads_round_trips() -> None:
    data = record_document({"b": [NETKIT, RUNTIME, RUNTIME], "a": [RUNTIME]})
    assert parse_record(data) == {"a": [RUNTIME], "b": [NETKIT, RUNTIME]}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b'["a"]', id="a-list"),
        pytest.param(b'{"node": "image"}', id="not-a-list-of-images"),
        pytest.param(b'{"node": [1]}', id="not-strings"),
        pytest.param(b"{" + b" " * MAX_RECORD_BYTES + b"}", id="oversize"),
    ],
)
def test_a_record_that_is_not_ours_is_refused(data: bytes) -> None:
    with pytest.raises(SwarmError, match="record of loaded images"):
        parse_record(data)


# --------------------------------------------------------------------------- tasks

MODEL = ProjectModel(
    project="h19exp",
    services=(
        ServiceSpec(name="server", networks=("lab",), healthcheck=True),
        ServiceSpec(name="udp-listener", networks=("lab",), healthcheck=True),
        ServiceSpec(name="client", networks=("lab",), healthcheck=True, depends_on=("server",)),
        ServiceSpec(name="rss-poller", networks=("lab",), healthcheck=True),
    ),
    networks=(NetworkSpec(key="lab", name="h19exp_lab"),),
)


def recorded_topology(tasks: list[dict[str, Any]] | None = None) -> Any:
    services = stack_services(RECORDED["h19exp.services"], project="h19exp")
    facts = stack_facts(
        model=MODEL,
        services=services,
        tasks=RECORDED["h19exp.tasks"] if tasks is None else tasks,
        nodes=HOSTNAMES,
    )
    return build_topology(MODEL, facts)


def test_the_recorded_stack_is_five_containers_on_their_nodes() -> None:
    topology = recorded_topology()
    rows = [(i.name, i.node, i.state, i.health) for i in topology.instances]
    assert rows == [
        ("server", "node-1", "running", "healthy"),
        ("udp-listener", "node-2", "running", "healthy"),
        ("client.1", "node-2", "running", "healthy"),
        ("client.2", "node-3", "running", "healthy"),
        ("rss-poller", "node-3", "running", "healthy"),
    ]
    for instance in topology.instances:
        assert instance.container_id
        assert instance.ready
        assert not instance.problem
        (address,) = instance.addresses
        assert address.network == "lab"
        assert address.prefix4 == 24
        assert address.ipv4
        assert address.ipv4.startswith("172.30.")
        assert instance.image == RUNTIME
    links = topology.links("client", "server")
    assert {link.source.instance.node for link in links} == {"node-2", "node-3"}


def test_services_of_other_stacks_are_not_ours() -> None:
    assert stack_services(RECORDED["h19exp.services"], project="h19") == []
    names = [s.name for s in stack_services(RECORDED["h19exp.services"], project="h19exp")]
    assert sorted(names) == ["client", "rss-poller", "server", "udp-listener"]


def test_a_task_that_cannot_be_placed_and_one_rejected_carry_swarms_reason() -> None:
    services = stack_services(RECORDED["h19bad.services"], project="h19bad")
    model = ProjectModel(
        project="h19bad",
        services=(ServiceSpec(name="nowhere"), ServiceSpec(name="ghost")),
        networks=(),
    )
    facts = {
        f.service: f
        for f in stack_facts(
            model=model, services=services, tasks=RECORDED["h19bad.tasks"], nodes=HOSTNAMES
        )
    }
    assert facts["nowhere"].problem == (
        "cannot be placed: no suitable node (scheduling constraints not satisfied on 3 nodes)"
    )
    assert (facts["nowhere"].state, facts["nowhere"].node, facts["nowhere"].id) == (
        "pending",
        "",
        "",
    )
    assert facts["ghost"].problem == "rejected: No such image: socketlab/runtime:nope"
    assert facts["ghost"].state == "exited"


def with_task(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    task = copy.deepcopy(base)
    for path, value in changes.items():
        target = task
        *parents, last = path.split("__")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return task


def test_each_slot_is_its_current_task_not_its_history() -> None:
    tasks = RECORDED["h19exp.tasks"]
    server_id = next(
        s.id
        for s in stack_services(RECORDED["h19exp.services"], project="h19exp")
        if s.name == "server"
    )
    current = next(t for t in tasks if t["ServiceID"] == server_id)
    old = with_task(
        current,
        ID="oldtask",
        DesiredState="shutdown",
        Status__State="failed",
        Status__Err="task: non-zero exit (1)",
        Version__Index=1,
    )
    topology = recorded_topology([old, *tasks])
    server = topology.one("server")
    assert (server.state, server.problem) == ("running", "")
    # with no current task, the latest one shows why the slot is down
    topology = recorded_topology([old, *(t for t in tasks if t is not current)])
    server = topology.one("server")
    assert (server.state, server.problem) == ("exited", "failed: task: non-zero exit (1)")


def test_a_slots_earlier_failed_tasks_are_its_restarts() -> None:
    tasks = RECORDED["h19exp.tasks"]
    services = {s.name: s.id for s in stack_services(RECORDED["h19exp.services"], project="h19exp")}
    server = next(t for t in tasks if t["ServiceID"] == services["server"])
    client = next(t for t in tasks if t["ServiceID"] == services["client"] and t["Slot"] == 1)

    def earlier(base: dict[str, Any], name: str, state: str, index: int) -> dict[str, Any]:
        return with_task(
            base, ID=name, DesiredState="shutdown", Status__State=state, Version__Index=index
        )

    history = [
        earlier(server, "crashed", "failed", 2),  # a non-zero exit
        earlier(server, "unhealthy", "complete", 4),  # stopped as unhealthy, exited 0
        earlier(server, "rejected", "rejected", 1),  # its image was missing on the node
        earlier(server, "updated", "shutdown", 3),  # replaced by a service update: no restart
        earlier(client, "client-exit", "failed", 1),
    ]
    topology = recorded_topology([*history, *tasks])
    restarts = {i.name: i.restarts for i in topology.instances}
    assert restarts == {
        "server": 3,
        "udp-listener": 0,
        "client.1": 1,
        "client.2": 0,
        "rss-poller": 0,
    }
    # a slot whose latest task failed shows that task, and only the earlier ones as restarts
    down = [with_task(server, ID="latest", DesiredState="shutdown", Status__State="failed")]
    others = [t for t in tasks if t is not server]
    shown = recorded_topology([*down, *history, *others]).one("server")
    assert (shown.state, shown.restarts) == ("exited", 3)


def test_a_slot_scaled_away_is_gone() -> None:
    services = stack_services(RECORDED["h19exp.services"], project="h19exp")
    client = next(s for s in services if s.name == "client")
    assert [number for number, _ in current_tasks(RECORDED["h19exp.tasks"], client)] == [1, 2]
    fewer = type(client)(id=client.id, name=client.name, full_name=client.full_name, replicas=1)
    assert [number for number, _ in current_tasks(RECORDED["h19exp.tasks"], fewer)] == [1]


@pytest.mark.parametrize(
    ("state", "healthcheck", "shown"),
    [
        ("running", True, ("running", "healthy")),
        ("running", False, ("running", None)),
        ("starting", True, ("running", "starting")),
        ("preparing", True, ("preparing", None)),
        ("complete", True, ("exited", None)),
        ("rejected", False, ("exited", None)),
    ],
)
def test_task_states_as_container_states(
    state: str, healthcheck: bool, shown: tuple[str, str | None]
) -> None:
    assert task_state(state, healthcheck=healthcheck) == shown


def test_a_waiting_task_without_an_error_has_no_problem_yet() -> None:
    assert task_problem({"Status": {"State": "pending"}}) == ""
    assert task_problem({"Status": {"State": "preparing", "Err": "pulling"}}) == (
        "preparing: pulling"
    )
    assert task_problem({"Status": {"State": "failed"}}) == "failed: no reason given"


WANTED = {"server": 1, "udp-listener": 1, "client": 2, "rss-poller": 1}


def client_task(number: int) -> dict[str, Any]:
    client = next(
        s
        for s in stack_services(RECORDED["h19exp.services"], project="h19exp")
        if s.name == "client"
    )
    return dict(current_tasks(RECORDED["h19exp.tasks"], client))[number]


def replaced(task: dict[str, Any], **changes: Any) -> list[dict[str, Any]]:
    """The recorded tasks with ``task`` changed as ``with_task`` says."""
    return [with_task(t, **changes) if t is task else t for t in RECORDED["h19exp.tasks"]]


def test_every_task_running_is_started() -> None:
    assert not_started(recorded_topology().instances, WANTED) == []


@pytest.mark.parametrize("state", ["new", "pending", "assigned", "accepted", "preparing"])
def test_a_task_swarm_has_not_started_yet_is_waited_for(state: str) -> None:
    tasks = replaced(client_task(2), Status__State=state, Status__ContainerStatus={})
    assert not_started(recorded_topology(tasks).instances, WANTED) == [f"client.2 ({state})"]


def test_a_task_whose_container_runs_is_started_before_its_first_healthcheck() -> None:
    tasks = replaced(client_task(2), Status__State="starting")
    topology = recorded_topology(tasks)
    assert topology.one("client.2").health == "starting"
    assert not_started(topology.instances, WANTED) == []


def test_tasks_not_created_yet_are_counted() -> None:
    instances = recorded_topology().instances
    assert not_started(instances, {**WANTED, "client": 3}) == ["client (2 of 3 tasks)"]
    without = [i for i in instances if i.service != "rss-poller"]
    assert not_started(without, WANTED) == ["rss-poller (0 of 1 tasks)"]


def test_a_task_that_ended_or_cannot_run_is_not_waited_for() -> None:
    ended = replaced(client_task(1), Status__State="complete", DesiredState="shutdown")
    assert not_started(recorded_topology(ended).instances, WANTED) == []
    stuck = replaced(
        client_task(1),
        Status__State="pending",
        Status__Err="no suitable node",
        Status__ContainerStatus={},
    )
    instance = recorded_topology(stuck).one("client.1")
    assert (instance.state, instance.problem) == ("pending", "cannot be placed: no suitable node")
    assert not_started(recorded_topology(stuck).instances, WANTED) == []
