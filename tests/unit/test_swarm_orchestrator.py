"""The Swarm orchestrator under a Lab, against fake engines replaying the recorded Swarm:
an engine that is no manager is refused before anything is built, a task Swarm cannot
place stops the health wait with Swarm's reason, helpers and execs go to the engine of
the node that runs the task (checked to be that node), a node without an endpoint is
named (with what it runs when helpers are listed), ``lab up`` goes on to routes and congestion control only once every task runs,
and ``--swarm``/``--spread`` reach the lab from any command."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import docker.errors
import pytest

import lab.engine
import lab.swarm.orchestrator
from lab.api import Lab
from lab.cli import build_parser, status_rows
from lab.commands import make_lab
from lab.config import LabConfig
from lab.errors import LabError, NotReady, ServiceBlocked
from lab.images import ImageSet
from lab.interface import ServiceStatus
from lab.orchestrator import ComposeOrchestrator
from lab.swarm.config import SwarmConfig
from lab.swarm.distribution import DistributionPlan
from lab.swarm.errors import NodeUnreachable, NotASwarmManager
from lab.swarm.orchestrator import SwarmOrchestrator
from lab.swarm.tasks import STOPPED_LABEL
from lab.topology import NetworkSpec, ProjectModel, ServiceSpec

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "swarm" / "recorded.json").read_text())
IDS = {attrs["Description"]["Hostname"]: attrs["ID"] for attrs in RECORDED["nodes"]}
NETKIT = "socketlab/netkit:3155f8eb6eccbd41"
MANAGER_HOST = "unix:///run/node-1.sock"

MODEL = ProjectModel(
    project="h19exp",
    services=(
        ServiceSpec(name="server", networks=("lab",), healthcheck=True),
        ServiceSpec(name="udp-listener", networks=("lab",), healthcheck=True),
        ServiceSpec(name="client", networks=("lab",), healthcheck=True, replicas=2),
        ServiceSpec(name="rss-poller", networks=("lab",), healthcheck=True),
    ),
    networks=(NetworkSpec(key="lab", name="h19exp_lab"),),
)


class FakeContainer:
    def __init__(self, container_id: str, engine: FakeEngine) -> None:
        self.id = container_id
        self.client = engine
        self.name = f"c-{container_id[:6]}"
        self.labels: dict[str, str] = {}


class FakeContainers:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.runs: list[tuple[str, list[str], dict[str, Any]]] = []

    def get(self, container_id: str) -> FakeContainer:
        self.engine.gets.append(container_id)
        return FakeContainer(container_id, self.engine)

    def run(self, image: str, argv: list[str], **options: Any) -> FakeContainer:
        self.runs.append((image, argv, options))
        return FakeContainer("helper0000000", self.engine)

    def list(self, **_: Any) -> list[FakeContainer]:
        return []


class FakeApi:
    """The manager's API on the recorded stack; a scale shuts down or adds tasks, as
    Swarm would (a task scaled away is "shutdown", one scaled back a new "running")."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.stack = copy.deepcopy(RECORDED[f"{project}.services"])
        self.all_tasks = copy.deepcopy(RECORDED[f"{project}.tasks"])
        self.updates: list[tuple[str, int, dict[str, str]]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return list(RECORDED["nodes"])

    def services(self, *, filters: dict[str, Any]) -> list[dict[str, Any]]:
        assert filters == {"label": f"com.docker.stack.namespace={self.project}"}
        return copy.deepcopy(self.stack)

    def tasks(self, *, filters: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = set(filters["service"])
        return [copy.deepcopy(t) for t in self.all_tasks if t["ServiceID"] in wanted]

    def update_service(
        self, service_id: str, version: int, *, mode: Any, labels: Any, fetch_current_spec: bool
    ) -> None:
        assert fetch_current_spec  # nothing of the spec but what is named may change
        attrs = next(a for a in self.stack if a["ID"] == service_id)
        assert version == attrs["Version"]["Index"]
        replicas = int(mode["Replicated"]["Replicas"])
        self.updates.append((attrs["Spec"]["Name"], replicas, dict(labels)))
        attrs["Spec"]["Mode"] = {"Replicated": {"Replicas": replicas}}
        attrs["Spec"]["Labels"] = dict(labels)
        attrs["Version"]["Index"] += 1
        mine = [t for t in self.all_tasks if t["ServiceID"] == service_id]
        for task in mine:
            if task["DesiredState"] == "running" and int(task["Slot"]) > replicas:
                task["DesiredState"] = "shutdown"
                task["Status"]["State"] = "shutdown"
                task["Version"]["Index"] = attrs["Version"]["Index"]
        for slot in range(1, replicas + 1):
            if not any(t["DesiredState"] == "running" and t["Slot"] == slot for t in mine):
                recorded = RECORDED[f"{self.project}.tasks"]
                model = next(
                    t for t in recorded if t["ServiceID"] == service_id and t["Slot"] == slot
                )
                new = copy.deepcopy(model)
                new["ID"] = f"{model['ID']}-again"
                new["DesiredState"] = "running"
                new["Status"]["State"] = "running"
                new["Version"]["Index"] = attrs["Version"]["Index"] + 1
                self.all_tasks.append(new)


class FakeService:
    def __init__(self, api: FakeApi, name: str) -> None:
        attrs = next(a for a in api.services(filters=api_filter(api)) if a["Spec"]["Name"] == name)
        self.attrs = attrs
        self.id = attrs["ID"]
        self.version = attrs["Version"]["Index"]


def api_filter(api: FakeApi) -> dict[str, Any]:
    return {"label": f"com.docker.stack.namespace={api.project}"}


class FakeServices:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def get(self, name: str) -> FakeService:
        return FakeService(self.api, name)


class FakeImage:
    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs


class FakeImages:
    """The images an engine has: reference -> ``attrs`` (``Config`` as Docker reports it)."""

    def __init__(self) -> None:
        self.attrs: dict[str, dict[str, Any]] = {}

    def get(self, ref: str) -> FakeImage:
        if ref not in self.attrs:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return FakeImage(self.attrs[ref])


class FakeEngine:
    """One node's engine (or the manager, which also answers the Swarm API)."""

    def __init__(self, info: dict[str, Any], *, project: str = "h19exp") -> None:
        self._info = info
        self.api = FakeApi(project)
        self.services = FakeServices(self.api)
        self.containers = FakeContainers(self)
        self.images = FakeImages()
        self.gets: list[str] = []

    def info(self) -> dict[str, Any]:
        return self._info

    def ping(self) -> bool:
        return True


def node_info(hostname: str) -> dict[str, Any]:
    return {"Name": hostname, "Swarm": {"NodeID": IDS[hostname], "LocalNodeState": "active"}}


def swarm_lab(
    tmp_path: Path,
    *,
    endpoints: tuple[str, ...] = (),
    project: str = "h19exp",
    model: ProjectModel = MODEL,
    manager_info: dict[str, Any] | None = None,
) -> Lab:
    config = LabConfig(
        orchestrator="swarm", docker_host=MANAGER_HOST, swarm=SwarmConfig(nodes=endpoints)
    )
    handle = Lab(project=project, repo_root=tmp_path, config=config)
    handle.__dict__["docker"] = FakeEngine(
        manager_info or RECORDED["info.manager"], project=project
    )
    handle.__dict__["model"] = model
    handle._images = ImageSet(runtime="socketlab/runtime:x", netkit=NETKIT)
    return handle


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeEngine]:
    """The node engines a lab connects to, by URL (unix:///run/node-N.sock is node N)."""
    made: dict[str, FakeEngine] = {}

    def connect_url(url: str, *, timeout: float) -> FakeEngine:
        hostname = url.removeprefix("unix:///run/").removesuffix(".sock")
        return made.setdefault(url, FakeEngine(node_info(hostname)))

    monkeypatch.setattr(lab.engine, "connect_url", connect_url)
    return made


ALL_NODES = (
    "node-2=unix:///run/node-2.sock",
    "node-3=unix:///run/node-3.sock",
)


def test_an_engine_that_is_no_manager_is_refused_before_anything_is_built(
    tmp_path: Path,
) -> None:
    handle = swarm_lab(tmp_path, manager_info=RECORDED["info.inactive"])
    assert isinstance(handle.orchestrator, SwarmOrchestrator)
    with pytest.raises(NotASwarmManager, match=r"is not a Swarm manager .*docker swarm init"):
        handle.orchestrator.prepare()


def test_status_comes_from_the_manager_alone_and_names_each_tasks_node(
    tmp_path: Path, engines: dict[str, FakeEngine]
) -> None:
    handle = swarm_lab(tmp_path)
    rows = [(s.service, s.node, s.ready) for s in handle.status()]
    assert rows == [
        ("server", "node-1", True),
        ("udp-listener", "node-2", True),
        ("client.1", "node-2", True),
        ("client.2", "node-3", True),
        ("rss-poller", "node-3", True),
    ]
    assert engines == {}  # no node was contacted
    handle.wait_healthy(timeout=1.0)


def test_stop_scales_the_service_to_0_and_start_brings_its_replicas_back(
    tmp_path: Path, engines: dict[str, FakeEngine]
) -> None:
    # Stopping the task's container would not do: its restart policy starts another.
    handle = swarm_lab(tmp_path)
    api = handle.docker.api
    handle.stop("client")
    assert api.updates == [("h19exp_client", 0, {**api.updates[0][2]})]
    assert api.updates[0][2][STOPPED_LABEL] == "2"
    rows = {s.service: (s.state, s.restarts) for s in handle.status()}
    # shown as stopped containers, not counted as restarts (Swarm shut them down)
    assert rows["client.1"] == rows["client.2"] == ("exited", 0)
    assert rows["server"] == ("running", 0)
    # Swarm deletes the tasks of slots scaled away soon after: still shown as stopped
    client_id = next(a["ID"] for a in api.stack if a["Spec"]["Name"] == "h19exp_client")
    api.all_tasks = [t for t in api.all_tasks if t["ServiceID"] != client_id]
    shown = {i.name: i for i in handle.topology().instances}
    assert (shown["client.1"].state, shown["client.2"].state) == ("exited", "exited")
    assert shown["client.2"].problem == "stopped (scaled to 0 by lab; lab start brings it back)"
    handle.stop("client")  # stopped already: nothing to do
    assert len(api.updates) == 1
    handle.start("client")
    name, replicas, labels = api.updates[-1]
    assert (name, replicas) == ("h19exp_client", 2)
    assert STOPPED_LABEL not in labels
    assert labels == {k: v for k, v in api.updates[0][2].items() if k != STOPPED_LABEL}
    rows = {s.service: (s.state, s.restarts) for s in handle.status()}
    assert rows["client.1"] == rows["client.2"] == ("running", 0)
    assert engines == {}  # the manager alone did it


def test_one_replica_cannot_be_stopped_alone(tmp_path: Path) -> None:
    handle = swarm_lab(tmp_path)
    with pytest.raises(LabError) as caught:
        handle.stop("client.2")
    assert str(caught.value) == (
        "cannot stop client.2 alone: on a Swarm, stop scales a whole service to 0 "
        "(client has 2 replicas: stop client)"
    )
    assert handle.docker.api.updates == []


def test_a_task_swarm_cannot_place_stops_the_wait_with_its_reason(tmp_path: Path) -> None:
    model = ProjectModel(
        project="h19bad", services=(ServiceSpec(name="nowhere"), ServiceSpec(name="ghost"))
    )
    handle = swarm_lab(tmp_path, project="h19bad", model=model)
    with pytest.raises(ServiceBlocked) as caught:
        handle.wait_healthy(timeout=30.0)
    assert str(caught.value) == (
        "nowhere: cannot be placed: no suitable node (scheduling constraints not satisfied "
        "on 3 nodes); ghost on node node-1: rejected: No such image: socketlab/runtime:nope"
    )


def test_a_helper_starts_on_the_engine_of_the_node_running_its_target(
    tmp_path: Path, engines: dict[str, FakeEngine]
) -> None:
    handle = swarm_lab(tmp_path, endpoints=ALL_NODES)
    client2 = handle.topology().one("client.2")
    assert client2.node == "node-3"

    handle.start_helper("client.2", ["tc", "qdisc", "show"], role="probe", caps=["NET_ADMIN"])

    node3 = engines["unix:///run/node-3.sock"]
    ((image, argv, options),) = node3.containers.runs
    assert (image, argv) == (NETKIT, ["tc", "qdisc", "show"])
    assert options["network_mode"] == f"container:{client2.container_id}"
    assert node3.gets == [client2.container_id]
    assert set(engines) == {"unix:///run/node-3.sock"}  # no other node was contacted


def test_the_managers_own_tasks_need_no_endpoint(
    tmp_path: Path, engines: dict[str, FakeEngine]
) -> None:
    handle = swarm_lab(tmp_path)  # no endpoints at all
    handle.start_helper("server", ["true"], role="probe")
    manager = handle.docker
    assert isinstance(manager, FakeEngine)
    assert len(manager.containers.runs) == 1
    assert engines == {}


def test_a_node_without_an_endpoint_is_named_when_a_helper_needs_it(
    tmp_path: Path, engines: dict[str, FakeEngine]
) -> None:
    handle = swarm_lab(tmp_path, endpoints=ALL_NODES[:1])  # node-2 only
    with pytest.raises(NodeUnreachable) as caught:
        handle.start_helper("client.2", ["tc"], role="shaper", caps=["NET_ADMIN"])
    assert str(caught.value).startswith(
        "node node-3 has no Docker endpoint for reaching client.2: "
        "set SOCKETLAB_SWARM_NODES=node-3=tcp://HOST:PORT"
    )


def test_an_endpoint_that_answers_as_another_node_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        lab.engine, "connect_url", lambda url, *, timeout: FakeEngine(node_info("node-2"))
    )
    handle = swarm_lab(tmp_path, endpoints=("node-3=unix:///run/swapped.sock",))
    with pytest.raises(NodeUnreachable, match="is node-2, not node node-3"):
        handle.exec("client.2", ["true"], timeout=5)


def test_an_unreachable_node_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, *, timeout: float) -> FakeEngine:
        raise lab.engine.DockerUnavailable(f"cannot reach Docker at {url}: is the daemon running?")

    monkeypatch.setattr(lab.engine, "connect_url", refuse)
    handle = swarm_lab(tmp_path, endpoints=ALL_NODES)
    with pytest.raises(
        NodeUnreachable, match=r"^node node-3 \(for reaching client.2\): cannot reach"
    ):
        handle.netkit_run("client.2", ["ping", "-c1", "server"], timeout=5)


def test_a_node_unreachable_while_helpers_are_listed_is_named_with_what_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lab shape lists the lab's helpers on every node first (one queue number space)
    def connect_url(url: str, *, timeout: float) -> FakeEngine:
        if url == "unix:///run/node-3.sock":
            raise lab.engine.DockerUnavailable(f"cannot reach Docker at {url}: is it running?")
        return FakeEngine(node_info("node-2"))

    monkeypatch.setattr(lab.engine, "connect_url", connect_url)
    handle = swarm_lab(tmp_path, endpoints=ALL_NODES)
    with pytest.raises(NodeUnreachable) as caught:
        handle.helpers("shaper")
    assert str(caught.value) == (
        "node node-3 (for the lab's helpers and leftovers there; it runs client, rss-poller): "
        "cannot reach Docker at unix:///run/node-3.sock: is it running?"
    )


# --------------------------------------------------------------------------- lab up

CONFIG = {
    "services": {
        spec.name: {"image": "socketlab/runtime:x", "networks": {"lab": None}}
        for spec in MODEL.services
    },
    "networks": {"lab": {}},
}


class FakeCompose:
    def config(self, *, major: int) -> dict[str, Any]:
        return CONFIG


def starting(tasks: list[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    """The recorded tasks with client.2's in ``state`` and no container yet."""
    client2 = next(t for t in tasks if t["ID"] == CLIENT2_TASK)
    changed = json.loads(json.dumps(client2))
    changed["Status"] |= {"State": state, "ContainerStatus": {}}
    return [changed if t is client2 else t for t in tasks]


CLIENT2_TASK = next(
    t["ID"] for t in RECORDED["h19exp.tasks"] if t["Slot"] == 2 and t["DesiredState"] == "running"
)


def deployable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: list[list[dict[str, Any]]]
) -> tuple[Lab, list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """A lab whose ``start`` deploys into fakes; the manager answers the task lists
    ``answers`` in turn (the last one from then on). Returns it, the stack documents
    deployed and the task lists it was given."""
    handle = swarm_lab(tmp_path)
    handle.__dict__["compose_version"] = 2
    monkeypatch.setattr(handle, "compose", lambda *_, **__: FakeCompose())
    orchestrator = handle.orchestrator
    assert isinstance(orchestrator, SwarmOrchestrator)
    deployed: list[dict[str, Any]] = []
    given: list[list[dict[str, Any]]] = []
    monkeypatch.setattr(orchestrator, "_stack_deploy", deployed.append)
    monkeypatch.setattr(orchestrator, "_install_secrets", lambda *_: None)
    monkeypatch.setattr(orchestrator, "_distribute", lambda *_, **__: DistributionPlan(refs={}))
    api = handle.docker.api
    assert isinstance(api, FakeApi)

    def tasks(*, filters: dict[str, Any]) -> list[dict[str, Any]]:
        answer = answers[min(len(given), len(answers) - 1)]
        given.append(answer)
        return [t for t in answer if t["ServiceID"] in set(filters["service"])]

    monkeypatch.setattr(api, "tasks", tasks)
    monkeypatch.setattr(lab.swarm.orchestrator, "START_POLL", 0.01)
    return handle, deployed, given


def test_lab_up_goes_on_only_once_every_task_of_the_last_wave_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stack deploy returns before Swarm even places the tasks; lab up then sets routes
    # and congestion control in the namespaces that exist, so it must wait (issue 19:
    # the last wave's client and rss-poller kept bbr where the Compose file says cubic).
    recorded = RECORDED["h19exp.tasks"]
    answers = [starting(recorded, "pending"), starting(recorded, "preparing"), recorded]
    handle, deployed, given = deployable(tmp_path, monkeypatch, answers)
    assert handle._images is not None
    handle.orchestrator.start(MODEL, images=handle._images, scale={}, timeout=30.0)
    assert len(deployed) == 1  # one wave: nothing depends on anything in MODEL
    assert given[:3] == answers  # asked until client.2 ran
    assert len(given) == 3


def test_an_images_own_healthcheck_makes_on_failure_restart_any_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Dockerfile HEALTHCHECK and none in the Compose file: Swarm still ends the task
    # when it turns unhealthy, so on-failure would leave its slot empty.
    monkeypatch.setitem(
        CONFIG,
        "services",
        {
            "server": {
                "image": "user/checked:1",
                "restart": "on-failure",
                "networks": {"lab": None},
            },
            **{
                name: {"image": image, "restart": "on-failure", "networks": {"lab": None}}
                for name, image in [
                    ("udp-listener", "user/unchecked:1"),
                    ("client", "user/disabled:1"),
                    ("rss-poller", "user/absent:1"),
                ]
            },
        },
    )
    handle, deployed, _ = deployable(tmp_path, monkeypatch, [RECORDED["h19exp.tasks"]])
    images = handle.docker.images
    assert isinstance(images, FakeImages)
    images.attrs["user/checked:1"] = {"Config": {"Healthcheck": {"Test": ["CMD", "probe"]}}}
    images.attrs["user/unchecked:1"] = {"Config": {"Healthcheck": None}}
    images.attrs["user/disabled:1"] = {"Config": {"Healthcheck": {"Test": ["NONE"]}}}
    assert handle._images is not None
    handle.orchestrator.start(MODEL, images=handle._images, scale={}, timeout=30.0)
    (document,) = deployed
    conditions = {
        name: service["deploy"]["restart_policy"]["condition"]
        for name, service in document["services"].items()
    }
    assert conditions == {
        "server": "any",
        "udp-listener": "on-failure",
        "client": "on-failure",
        "rss-poller": "on-failure",  # not on the controller's engine: unknown, Compose's
    }


def test_a_task_that_never_starts_is_named_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = [starting(RECORDED["h19exp.tasks"], "preparing")]
    handle, _, given = deployable(tmp_path, monkeypatch, answers)
    assert handle._images is not None
    with pytest.raises(NotReady) as caught:
        handle.orchestrator.start(MODEL, images=handle._images, scale={}, timeout=0.1)
    assert str(caught.value) == "not running after 1 s: client.2 (preparing)"
    assert len(given) > 1


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("argv", "environ", "swarm", "spread"),
    [
        pytest.param(["status"], {}, False, False, id="default-compose"),
        pytest.param(["--swarm", "status"], {}, True, False, id="before"),
        pytest.param(["status", "--swarm"], {}, True, False, id="after"),
        pytest.param(["up", "--swarm"], {}, True, False, id="up"),
        pytest.param(["up", "--spread"], {}, True, True, id="spread-implies-swarm"),
        pytest.param(
            ["shape", "client", "server", "--delay", "5ms", "--swarm"], {}, True, False, id="shape"
        ),
        pytest.param(["down"], {"SOCKETLAB_ORCHESTRATOR": "swarm"}, True, False, id="env"),
        pytest.param(
            ["up"],
            {"SOCKETLAB_SWARM_SPREAD": "1", "SOCKETLAB_ORCHESTRATOR": "swarm"},
            True,
            True,
            id="env-spread",
        ),
    ],
)
def test_swarm_and_spread_reach_the_lab_from_any_command(
    argv: list[str], environ: dict[str, str], swarm: bool, spread: bool
) -> None:
    args = build_parser(LabConfig.from_env(environ)).parse_args(argv)
    if argv[0] == "up" and getattr(args, "spread", False):
        args.swarm = True  # what cmd_up does
    handle = make_lab(args)
    assert (handle.config.orchestrator == "swarm") is swarm
    assert handle.config.swarm.spread is spread
    kind = SwarmOrchestrator if swarm else ComposeOrchestrator
    assert isinstance(handle.orchestrator, kind)


def test_status_shows_a_node_column_only_on_a_swarm() -> None:
    row = ServiceStatus(
        service="client",
        state="running",
        health="healthy",
        ip="172.30.4.7",
        container="51d0711b15b8",
        image="x",
        node="node-3",
    )
    (with_node,) = status_rows([row], networks=False)
    assert list(with_node) == [
        "service",
        "state",
        "health",
        "restarts",
        "node",
        "ip",
        "container",
        "image",
    ]
    assert with_node["node"] == "node-3"
    (compose,) = status_rows([ServiceStatus(**{**row.__dict__, "node": ""})], networks=False)
    assert "node" not in compose
