"""The default lab as a stack on a real 3-node Swarm (nodes are containers, each with its
own dockerd): client, server and udp-listener on three different nodes, traffic across
the overlay (VXLAN seen between the nodes), the scenarios a user runs (hello, the image
fetch verified by SHA-256, udp-basic, the shaped large-file, a partition), a shaping
self-check on the overlay, the bad inputs (no Swarm, a node unreachable for helpers, a
service that cannot be placed), a killed run's partition undone by the next run on
every node (a Swarm run has no reaper), a stopped service staying down until started, a task
that turns unhealthy replaced by Swarm and counted as a restart, and ``lab down``
leaving nothing labelled on any node.

CI runs this module on its own (``.ci/run``, JUnit suite ``swarm``); the tests run in
file order, ``lab down`` last.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker
import pytest
from cluster import FIGURES, PROJECT_LABEL, Cluster

from lab.api import Lab
from lab.cli import main
from lab.congestion import congestion_in_use
from lab.credentials import SECRET_VOLUMES, SECRETS_MOUNT, SERVICE_UID
from lab.shaping import link_status
from lab.swarm.distribution import has_registry_host
from lab.swarm.tasks import STOPPED_LABEL
from lab.waiting import wait_for

SCENARIOS = ("hello", "image", "udp-basic", "large-file", "timeouts")
LAB_NETWORK_MTU = 1450  # VXLAN's 50 bytes off the nodes' 1500
# docker-compose.yml's tmpfs (KiB, as /proc/mounts says), which stack deploy would drop
TMPFS_KIB = {"server": {"/tmp": 65536}, "udp-listener": {"/tmp": 16384}, "rss-poller": {"/run/socketlab": 1024}}  # fmt: skip
SECRETS_OF = {"server": "secrets-server", "client": "secrets-client", "udp-listener": "secrets-udp"}
HARDENING_PROBE = (
    "id -u; touch /probe 2>/dev/null && echo root-writable; "
    "while read -r _ target kind options _; do "
    '[ "$kind" = tmpfs ] && echo "tmpfs $target $options"; done </proc/mounts; '
    f"ls {SECRETS_MOUNT} 2>/dev/null | sed 's/^/secret /'"
)


def node_client(cluster: Cluster, hostname: str) -> Any:
    return next(cluster.client(node) for node in cluster.nodes if node.hostname == hostname)


def test_client_server_and_listener_sit_on_three_nodes(swarm_lab: Lab) -> None:
    nodes = {status.service: status.node for status in swarm_lab.status()}
    assert set(nodes) == {"server", "udp-listener", "client", "rss-poller"}
    assert len({nodes["client"], nodes["server"], nodes["udp-listener"]}) == 3, nodes
    assert all(status.ready for status in swarm_lab.status())


def test_every_task_keeps_the_hardening_of_the_compose_file(swarm_lab: Lab) -> None:
    # Its tmpfs (stack deploy drops the service key: the poller's heartbeat had
    # nowhere to go and Swarm stopped it as unhealthy), a read-only root, the
    # service user, and the secrets lab up wrote into each node's volumes.
    for status in swarm_lab.status():
        assert (status.state, status.health) == ("running", "healthy"), status
    for service in ("server", "udp-listener", "client", "rss-poller"):
        out = swarm_lab.exec(service, ["sh", "-c", HARDENING_PROBE], timeout=30).check().stdout
        lines = out.splitlines()
        assert lines[0] == str(SERVICE_UID), (service, out)
        assert "root-writable" not in lines, service
        sizes = {}
        for line in lines:
            if line.startswith("tmpfs "):
                _, target, options = line.split(" ")
                size = re.search(r"(?:^|,)size=(\d+)k(?:,|$)", options)
                if target in TMPFS_KIB.get(service, {}):
                    assert size is not None, (service, line)
                    sizes[target] = int(size[1])
        assert sizes == TMPFS_KIB.get(service, {}), (service, out)
        secrets = {line.removeprefix("secret ") for line in lines if line.startswith("secret ")}
        assert secrets == set(SECRET_VOLUMES.get(SECRETS_OF.get(service, ""), ())), service
    heartbeat = swarm_lab.exec(
        "rss-poller", ["stat", "-c", "%u %s", "/run/socketlab/heartbeat"], timeout=10
    ).check()
    assert heartbeat.stdout.split() == [str(SERVICE_UID), "0"]


def test_every_task_runs_the_congestion_control_the_compose_file_asks(swarm_lab: Lab) -> None:
    # lab up sets it only in namespaces that exist: it waits for the last wave's tasks
    wanted = {spec.name: spec.tcp_congestion for spec in swarm_lab.model.services}
    assert set(wanted.values()) == {"cubic"}
    assert congestion_in_use(swarm_lab, list(wanted)) == wanted


def test_lab_status_shows_the_node_of_each_task(
    swarm_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["-p", swarm_lab.project, "status"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if "│" in line]
    header = next(line for line in out.splitlines() if "service" in line and "node" in line)
    assert "node" in header
    for status in swarm_lab.status():
        row = next(line for line in table if f"│ {status.service} " in line)
        assert f" {status.node} " in row


def test_every_node_got_the_images_and_no_registry_was_needed(
    swarm_lab: Lab, cluster: Cluster
) -> None:
    assert swarm_lab._images is not None
    wanted = {swarm_lab._images.runtime, swarm_lab._images.netkit}
    for node in cluster.nodes:
        tags = {tag for image in cluster.client(node).images.list() for tag in image.tags}
        assert wanted <= tags, node.hostname
        assert not any(has_registry_host(tag) for tag in tags)  # docker load, not a pull


def test_traffic_between_nodes_crosses_the_overlay_in_vxlan(
    swarm_lab: Lab, cluster: Cluster, host: docker.DockerClient
) -> None:
    topology = swarm_lab.topology()
    client, server = topology.one("client"), topology.one("server")
    mtu = swarm_lab.exec("client", ["cat", "/sys/class/net/eth0/mtu"], timeout=10).check()
    assert int(mtu.stdout) == LAB_NETWORK_MTU
    client_node = next(n for n in cluster.nodes if n.hostname == client.node)
    server_node = next(n for n in cluster.nodes if n.hostname == server.node)
    # tcpdump in the client node's own namespace (the node container's eth0): the
    # overlay's packets between the two nodes are VXLAN on UDP 4789.
    sniffer = host.containers.run(
        swarm_lab.netkit_image,
        ["timeout", "60", "tcpdump", "-n", "-l", "-c", "4", "-i", "eth0", "udp", "port", "4789"],
        network_mode=f"container:{client_node.container}",
        cap_add=["NET_ADMIN", "NET_RAW"],
        labels={PROJECT_LABEL: cluster.name},
        detach=True,
    )
    try:
        deadline = time.monotonic() + 30
        while b"listening on" not in sniffer.logs(stdout=False, stderr=True):
            assert time.monotonic() < deadline, "tcpdump did not start"
            sniffer.reload()
            assert sniffer.status in {"created", "running"}
            time.sleep(0.2)  # polling tcpdump's start, bounded by the deadline
        hello = swarm_lab.exec("client", ["socketlab", "client", "hello"], timeout=30).check()
        assert "Hello" in hello.stdout
        assert sniffer.wait(timeout=60)["StatusCode"] == 0
        captured = sniffer.logs(stdout=True, stderr=False).decode()
    finally:
        sniffer.remove(force=True)
    client_ip, server_ip = cluster.address(client_node), cluster.address(server_node)
    lines = [line for line in captured.splitlines() if "VXLAN" in line]
    assert lines, captured
    between = re.compile(
        rf"IP ({re.escape(client_ip)}\.\d+ > {re.escape(server_ip)}|"
        rf"{re.escape(server_ip)}\.\d+ > {re.escape(client_ip)})\.4789: VXLAN"
    )
    assert any(between.search(line) for line in lines), captured


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_passes_on_the_swarm(swarm_lab: Lab, tmp_path: Path, name: str) -> None:
    started = time.monotonic()
    code = main(["-p", swarm_lab.project, "run", name, "--results", str(tmp_path)])
    FIGURES[f"scenario {name}"] = f"{time.monotonic() - started:.1f} s"

    (folder,) = tmp_path.iterdir()
    document = json.loads((folder / "results.json").read_text())
    (scenario,) = document["scenarios"]
    assert scenario["name"] == name
    assert scenario["passed"], scenario["reason"]
    assert scenario["checks"]
    assert all(check["passed"] for check in scenario["checks"])
    assert code == 0


def test_a_shaping_self_check_holds_across_the_overlay(
    swarm_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    project = swarm_lab.project
    try:
        code = main(["-p", project, "shape", "client", "server", "--delay", "30ms", "--check"])
        out = capsys.readouterr().out
        assert code == 0, out
        measured = re.search(r"added RTT\s+│\s+30ms\s+│\s+([\d.]+)ms", out)
        assert measured is not None, out
        FIGURES["self-check on the overlay, 30 ms asked"] = f"{measured[1]} ms added RTT"
        baseline = re.search(r"baseline ([\d.]+)ms", out)
        if baseline is not None:
            FIGURES["overlay RTT (ICMP, unshaped baseline)"] = f"{baseline[1]} ms"
    finally:
        assert main(["-p", project, "unshape"]) == 0


def test_a_node_unreachable_for_helpers_fails_shaping_naming_it(
    swarm_lab: Lab,
    cluster: Cluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client_node = swarm_lab.topology().one("client").node
    endpoints = [
        f"{n.hostname}={'unix:///nonexistent/docker.sock' if n.hostname == client_node else n.url}"
        for n in cluster.nodes
    ]
    monkeypatch.setenv("SOCKETLAB_SWARM_NODES", ",".join(endpoints))
    capsys.readouterr()
    code = main(["-p", swarm_lab.project, "shape", "client", "server", "--delay", "10ms"])
    err = capsys.readouterr().err
    assert code == 1
    # shaping lists the lab's helpers on every node first: that is where it meets the node
    named = re.search(
        rf"^lab: error: node {client_node} \(for the lab's helpers and leftovers there; "
        r"it runs ([^)]*)\): cannot reach Docker at ",
        err,
    )
    assert named is not None, err
    assert "client" in named[1].split(", "), err
    assert "unix:///nonexistent/docker.sock" in err
    assert not swarm_lab.helpers("shaper")


def test_no_swarm_says_this_engine_is_no_manager_and_how_to_make_one(
    host_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", host_url)  # the host engine: no Swarm there
    capsys.readouterr()
    code = main(["-p", "socketlab-test-noswarm", "up", "--swarm"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"lab: error: the Docker engine at {host_url} is not a Swarm manager" in err
    assert "docker swarm init" in err


def test_a_service_that_cannot_be_placed_is_named_with_swarms_error(
    swarm_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        "  lonely:\n"
        "    image: ${SOCKETLAB_IMAGE:-socketlab/runtime:latest}\n"
        "    command: [socketlab, idle]\n"
        "    deploy:\n"
        "      placement:\n"
        "        constraints: [node.labels.zone == mars]\n"
    )
    project = "socketlab-test-unplaced"
    capsys.readouterr()
    try:
        code = main(["-p", project, "-f", str(compose), "up", "--timeout", "60"])
        err = capsys.readouterr().err
        assert code == 1
        assert (
            "lab: error: lonely: cannot be placed: no suitable node "
            "(scheduling constraints not satisfied on 3 nodes)"
        ) in err
    finally:
        assert main(["-p", project, "-f", str(compose), "down"]) == 0


# the byo tests' killed run: a partition, then a long step
KILLED = (
    Path(__file__).resolve().parents[1] / "integration" / "scenarios" / "killed-partition.yaml"
).read_text()


def test_a_killed_runs_partition_is_undone_by_the_next_run_on_every_node(
    swarm_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "killed.yaml"
    scenario.write_text(KILLED)
    argv = [sys.executable, "-m", "lab", "-p", swarm_lab.project, "run", str(scenario),
            "--results", str(tmp_path / "r")]  # fmt: skip
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:

            def partitioned() -> bool:
                return any(s.shaping == "partition" for s in link_status(swarm_lab))

            wait_for(partitioned, timeout=120, what="the run's partition", interval=1.0)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    # A reaper needs the engine's socket on the controller's machine: there is none on a
    # Swarm, and the run said so (its helpers, rules and tasks are on the nodes).
    said = re.sub(r"\s+", " ", log.read_text())
    assert "warning: this run has no reaper" in said, said[-2000:]
    assert "if it dies, the next run undoes its faults" in said
    assert any(s.shaping == "partition" for s in link_status(swarm_lab)), "nobody healed it"

    def drops_in(service: str) -> list[str]:
        """The partition rules in ``service``'s namespace (the filter table's DROPs)."""
        argv = ["iptables-save", "-t", "filter"]
        saved = swarm_lab.netkit_run(service, argv, timeout=60, net_admin=True)
        lines = saved.check(f"iptables-save in {service}").stdout.splitlines()
        return [line for line in lines if line.startswith("-A SOCKETLAB ") and "DROP" in line]

    assert drops_in("client"), "the partition's rules, on the client's node"

    capsys.readouterr()
    code = main(["-p", swarm_lab.project, "run", "hello", "--results", str(tmp_path / "next")])
    next_run = re.sub(r"\s+", " ", capsys.readouterr().err)
    assert code == 0, next_run[-2000:]
    assert (
        "undoing what was left on the lab's network by hand (no run recorded it): "
        "partition client <-> server"
    ) in next_run
    assert not link_status(swarm_lab)  # on every node: no helper, no rule left
    for service in ("client", "server"):
        assert drops_in(service) == [], service


def test_a_stopped_service_stays_down_until_started(swarm_lab: Lab, cluster: Cluster) -> None:
    # Its restart policy is any (it has a healthcheck): a stopped container would be
    # replaced after Swarm's 5 s restart delay, so stop scales the service to 0.
    before = swarm_lab.topology().one("udp-listener")
    swarm_lab.stop("udp-listener")
    stopped = swarm_lab.topology().one("udp-listener")
    assert (stopped.state, stopped.restarts) == ("exited", before.restarts)
    until = time.monotonic() + 8.0  # well past the restart delay

    def stays_down() -> bool:
        state = swarm_lab.topology().one("udp-listener").state
        assert state == "exited", f"udp-listener came back by itself ({state})"
        return time.monotonic() >= until

    wait_for(stays_down, timeout=30, what="8 s with udp-listener stopped", interval=0.5)
    swarm_lab.start("udp-listener")
    swarm_lab.wait_healthy(timeout=120)
    started = swarm_lab.topology().one("udp-listener")
    assert started.container_id != before.container_id  # a new task, as start says
    assert started.restarts == before.restarts  # Swarm shut it down: no restart
    manager = cluster.client(cluster.manager)
    labels = manager.services.get(f"{swarm_lab.project}_udp-listener").attrs["Spec"]["Labels"]
    assert STOPPED_LABEL not in labels


def poller_task(manager: Any, service_id: str, accept: Any) -> dict[str, Any] | None:
    """The poller's running task, once ``accept(task)`` says it is the one awaited."""
    for task in manager.api.tasks(filters={"service": service_id}):
        running = (task.get("Status") or {}).get("State") == "running"
        if running and task.get("DesiredState") == "running" and accept(task):
            return dict(task)
    return None


def test_a_task_that_turns_unhealthy_is_replaced_and_counted_as_a_restart(
    swarm_lab: Lab, cluster: Cluster
) -> None:
    # restart: on-failure with a healthcheck became condition any in the stack. Swarm
    # stops a task whose healthcheck turns unhealthy with SIGTERM and, whatever it
    # exits with, starts another in its slot: lab status counts it as a restart, as
    # Docker's RestartCount would.
    manager = cluster.client(cluster.manager)
    service = manager.services.get(f"{swarm_lab.project}_rss-poller")
    check = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]
    # the compose file's 12 retries 5 s apart would take a minute: 2, 1 s apart. This
    # update replaces the task too, but as shut down, not failed: no restart.
    fast = check | {"Interval": 10**9, "Retries": 2, "StartPeriod": 0}
    manager.api.update_service(
        service.id,
        service.version,
        task_template={"ContainerSpec": {"Healthcheck": fast}},
        fetch_current_spec=True,
    )

    def updated(task: dict[str, Any]) -> bool:
        return bool(task["Spec"]["ContainerSpec"].get("Healthcheck", {}).get("Retries") == 2)

    earlier = swarm_lab.topology().one("rss-poller").restarts  # a fault may have made some
    first = wait_for(
        lambda: poller_task(manager, service.id, updated), timeout=90, what="the updated poller"
    )
    assert swarm_lab.topology().one("rss-poller").restarts == earlier
    hostname = manager.nodes.get(first["NodeID"]).attrs["Description"]["Hostname"]
    container = node_client(cluster, hostname).containers.get(
        first["Status"]["ContainerStatus"]["ContainerID"]
    )
    # The poller keeps running, but its heartbeat can no longer be touched: root (with
    # no capabilities, as the task's bounding set is empty) owns Swarm's tmpfs and puts
    # a stale directory of its own in the heartbeat's place.
    heartbeat = "/run/socketlab/heartbeat"
    broke = container.exec_run(
        ["sh", "-c", f"rm -f {heartbeat} && mkdir {heartbeat} && touch -d @1 {heartbeat}"],
        user="0",
    )
    assert broke.exit_code == 0, broke.output
    started = time.monotonic()
    second = wait_for(
        lambda: poller_task(manager, service.id, lambda t: t["ID"] != first["ID"]),
        timeout=90,
        what="Swarm to replace the unhealthy poller",
    )
    FIGURES["unhealthy poller replaced"] = f"{time.monotonic() - started:.1f} s"
    assert second["Slot"] == first["Slot"]
    # Swarm stopped it as unhealthy, and it exited 0 on the SIGTERM: "complete", the
    # state on-failure never replaces (the slot stayed empty before the plan said any)
    container.reload()
    assert container.attrs["State"]["Health"]["Status"] == "unhealthy"
    ended = manager.api.inspect_task(first["ID"])["Status"]
    assert (ended["State"], ended["ContainerStatus"]["ExitCode"]) == ("complete", 0), ended
    poller = swarm_lab.topology().one("rss-poller")
    assert (poller.state, poller.health, poller.restarts) == ("running", "healthy", earlier + 1)
    assert poller.container_id == second["Status"]["ContainerStatus"]["ContainerID"]


def test_lab_down_leaves_nothing_labelled_on_any_node(swarm_lab: Lab, cluster: Cluster) -> None:
    assert swarm_lab._images is not None
    images = {swarm_lab._images.runtime, swarm_lab._images.netkit}
    started = time.monotonic()
    removed = swarm_lab.down()
    FIGURES["lab down --swarm"] = f"{time.monotonic() - started:.1f} s"
    assert removed["services"] == 4
    assert removed["images"] == 2 * len(cluster.nodes)  # the tags the lab loaded
    project = swarm_lab.project
    manager = cluster.client(cluster.manager)
    assert manager.services.list() == []
    assert manager.configs.list() == []  # the record of loaded images too
    for node in cluster.nodes:
        client = cluster.client(node)
        for label in (f"{PROJECT_LABEL}={project}", f"com.docker.stack.namespace={project}"):
            found = {
                "containers": client.containers.list(all=True, filters={"label": label}),
                "networks": client.networks.list(filters={"label": label}),
                "volumes": client.volumes.list(filters={"label": label}),
            }
            assert found == {"containers": [], "networks": [], "volumes": []}, node.hostname
        tags = {tag for image in client.images.list() for tag in image.tags}
        assert not tags & images, node.hostname
