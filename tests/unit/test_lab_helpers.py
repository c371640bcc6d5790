"""Helper containers, against a fake Docker client: ``Lab.start_helper`` (image, namespace,
capabilities, labels, readiness, cleanup), ``netkit_run`` on top of it, ``wait_for_log``,
the one Docker error boundary, and the shared iperf3 server."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests.exceptions

from lab.api import Lab
from lab.config import LabConfig
from lab.engine import docker_errors
from lab.errors import (
    CommandTimeout,
    DockerError,
    DockerNotFound,
    HelperNotReady,
    LabError,
    NotReady,
)
from lab.helpers import single_file
from lab.images import ImageSet
from lab.interface import ExecResult
from lab.iperf3 import SERVER_ROLE, client_argv, run_iperf3, server_argv
from lab.shaping.selfcheck import measure_rate
from lab.waiting import wait_for_log

NETKIT = "socketlab/netkit:abc"


class FakeContainer:
    """A Docker SDK container: its status and logs follow a script, one step per reload."""

    def __init__(
        self,
        *,
        name: str = "helper-1",
        statuses: list[str] | None = None,
        stdout: list[bytes] | None = None,
        stderr: bytes = b"",
        labels: dict[str, str] | None = None,
        wait: Any = None,
    ) -> None:
        self.name, self.id = name, f"id-{name}"
        self.statuses = statuses or ["running"]
        self.outputs = stdout or [b""]
        self.stderr = stderr
        self.labels = labels or {}
        self.attrs = {"State": {"StartedAt": "2026-01-01T10:00:00Z"}}
        self.reloads = 0
        self.removed = 0
        self._wait = wait if wait is not None else {"StatusCode": 0}

    @property
    def status(self) -> str:
        return self.statuses[min(self.reloads, len(self.statuses) - 1)]

    def reload(self) -> None:
        self.reloads += 1

    def logs(self, *, stdout: bool = True, stderr: bool = True, **_: Any) -> bytes:
        out = self.outputs[min(self.reloads, len(self.outputs) - 1)] if stdout else b""
        return out + (self.stderr if stderr else b"")

    def wait(self, *, timeout: float) -> dict[str, int]:
        if isinstance(self._wait, BaseException):
            raise self._wait
        return dict(self._wait)

    def remove(self, *, force: bool) -> None:
        assert force
        self.removed += 1


class FakeContainers:
    def __init__(self, started: list[FakeContainer], listed: list[FakeContainer]) -> None:
        self.started = started
        self.listed = listed
        self.runs: list[tuple[str, list[str], dict[str, Any]]] = []
        self.list_filters: list[dict[str, Any]] = []
        self.run_error: BaseException | None = None

    def run(self, image: str, command: list[str], **options: Any) -> FakeContainer:
        self.runs.append((image, command, options))
        if self.run_error is not None:
            raise self.run_error
        return self.started[len(self.runs) - 1]

    def list(self, *, all: bool, filters: dict[str, Any]) -> list[FakeContainer]:
        self.list_filters.append(filters)
        labels = filters["label"]
        if any(label.startswith("com.docker.compose.service=") for label in labels):
            service = next(label.split("=", 1)[1] for label in labels if "service=" in label)
            return [FakeContainer(name=f"proj-1-{service}-1")]
        # Docker's label filter: every label asked for (key=value, or a bare key) is on it.
        return [
            c
            for c in self.listed
            if not [label for label in labels
                    if label not in c.labels and label not in {f"{k}={v}" for k, v in c.labels.items()}]
        ]  # fmt: skip


class FakeDocker:
    def __init__(self, *started: FakeContainer, listed: list[FakeContainer] | None = None) -> None:
        self.containers = FakeContainers(list(started), listed or [])


def make_lab(tmp_path: Path, docker_client: FakeDocker) -> Lab:
    lab = Lab(project="proj-1", repo_root=tmp_path, config=LabConfig())
    lab.__dict__["docker"] = docker_client  # the cached Docker client, faked
    lab._images = ImageSet(runtime="socketlab/runtime:abc", netkit=NETKIT)
    return lab


# --- start_helper -------------------------------------------------------------------------


def test_a_helper_joins_the_service_namespace_with_exactly_its_caps_and_labels(
    tmp_path: Path,
) -> None:
    client = FakeDocker(FakeContainer())
    lab = make_lab(tmp_path, client)

    helper = lab.start_helper(
        "server",
        ("iperf3", "-s"),
        role="probe",
        caps=("NET_ADMIN",),
        name="proj-1-probe",
        # extra labels cannot take a helper out of its project or role
        labels={"io.socketlab.link": "a->b", "io.socketlab.project": "other"},
    )

    ((image, command, options),) = client.containers.runs
    assert (image, command) == (NETKIT, ["iperf3", "-s"])
    assert options == {
        "network_mode": "container:id-proj-1-server-1",
        "cap_add": ["NET_ADMIN"],
        "labels": {
            "io.socketlab.link": "a->b",
            "io.socketlab.project": "proj-1",
            "io.socketlab.role": "probe",
        },
        "detach": True,
        "name": "proj-1-probe",
    }
    assert helper.name == "helper-1"
    assert helper.started_at == "2026-01-01T10:00:00Z"


def test_without_caps_a_helper_gets_none(tmp_path: Path) -> None:
    client = FakeDocker(FakeContainer())
    make_lab(tmp_path, client).start_helper("client", ["sleep", "1"], role="r")
    ((_, _, options),) = client.containers.runs
    assert options["cap_add"] == []
    assert "name" not in options
    assert "cpu_shares" not in options


def test_a_timing_critical_helper_gets_its_cpu_weight(tmp_path: Path) -> None:
    client = FakeDocker(FakeContainer())
    make_lab(tmp_path, client).start_helper("client", ["sleep", "1"], role="r", cpu_shares=8192)
    ((_, _, options),) = client.containers.runs
    assert options["cpu_shares"] == 8192


@pytest.mark.parametrize("access", ["ro", "rw"])
def test_a_helper_can_mount_the_service_volumes(tmp_path: Path, access: str) -> None:
    client = FakeDocker(FakeContainer())
    make_lab(tmp_path, client).start_helper(
        "client",
        ["tee", "/var/tmp/x"],
        role="r",
        volumes=access,  # type: ignore[arg-type]
    )
    ((_, _, options),) = client.containers.runs
    assert options["volumes_from"] == [f"id-proj-1-client-1:{access}"]
    assert options["network_mode"] == "container:id-proj-1-client-1"


def test_a_helper_volume_access_is_ro_or_rw(tmp_path: Path) -> None:
    client = FakeDocker(FakeContainer())
    with pytest.raises(ValueError, match="volume access must be one of"):
        make_lab(tmp_path, client).start_helper(
            "client",
            ["true"],
            role="r",
            volumes="all",  # type: ignore[arg-type]
        )
    assert client.containers.runs == []


def test_start_helper_waits_until_the_helper_logs_it_is_ready(tmp_path: Path) -> None:
    container = FakeContainer(stdout=[b"", b"starting\n", b"starting\nlistening\n"])
    lab = make_lab(tmp_path, FakeDocker(container))

    lab.start_helper("server", ["iperf3", "-s"], role="r", ready="listening", ready_timeout=5)

    assert container.reloads >= 2  # polled until the line appeared
    assert container.removed == 0


def test_a_helper_that_exits_before_it_is_ready_is_removed(tmp_path: Path) -> None:
    container = FakeContainer(statuses=["exited"], stdout=[b"iperf3: error - bind failed\n"])
    lab = make_lab(tmp_path, FakeDocker(container))

    with pytest.raises(HelperNotReady) as caught:
        lab.start_helper("server", ["iperf3", "-s"], role="r", ready="listening", ready_timeout=5)

    assert caught.value.exited
    assert caught.value.last_line == "iperf3: error - bind failed"
    assert container.removed == 1


def test_docker_refusing_to_start_a_helper_is_a_lab_error_with_the_cause(tmp_path: Path) -> None:
    client = FakeDocker(FakeContainer())
    client.containers.run_error = docker.errors.APIError("boom", explanation="no such image")
    lab = make_lab(tmp_path, client)

    with pytest.raises(DockerError, match="cannot start a probe helper in server: no such image"):
        lab.start_helper("server", ["true"], role="probe")


def test_helpers_are_found_by_project_and_role(tmp_path: Path) -> None:
    project = {"io.socketlab.project": "proj-1"}
    shaper = FakeContainer(name="s", labels={**project, "io.socketlab.role": "shaper"})
    other_role = FakeContainer(name="c", labels={**project, "io.socketlab.role": "x"})
    other_lab = FakeContainer(
        name="o", labels={"io.socketlab.project": "other", "io.socketlab.role": "shaper"}
    )
    client = FakeDocker(listed=[shaper, other_role, other_lab])
    lab = make_lab(tmp_path, client)

    assert [helper.name for helper in lab.helpers("shaper")] == ["s"]
    assert client.containers.list_filters[-1] == {
        "label": ["io.socketlab.project=proj-1", "io.socketlab.role=shaper"]
    }


# --- netkit_run is a helper too -------------------------------------------------------------


@pytest.mark.parametrize(
    ("net_admin", "caps"),
    [pytest.param(False, ["NET_RAW"], id="raw-only"), pytest.param(True, ["NET_ADMIN", "NET_RAW"])],
)
def test_netkit_run_runs_to_completion_and_removes_its_helper(
    tmp_path: Path, net_admin: bool, caps: list[str]
) -> None:
    container = FakeContainer(stdout=[b"out\n"], stderr=b"err\n", wait={"StatusCode": 3})
    client = FakeDocker(container)
    lab = make_lab(tmp_path, client)

    result = lab.netkit_run("client", ["ping", "-c1", "x"], timeout=7, net_admin=net_admin)

    assert result == ExecResult(exit_code=3, stdout="out\n", stderr="err\n")
    ((_, command, options),) = client.containers.runs
    assert command == ["timeout", "-k", "5", "7", "ping", "-c1", "x"]
    assert options["cap_add"] == caps
    assert options["labels"]["io.socketlab.role"] == "netkit-run"
    assert container.removed == 1


def test_a_netkit_command_that_never_ends_is_a_command_timeout(tmp_path: Path) -> None:
    container = FakeContainer(wait=requests.exceptions.ReadTimeout("read timed out"))
    lab = make_lab(tmp_path, FakeDocker(container))

    with pytest.raises(CommandTimeout, match="netkit command in client did not finish"):
        lab.netkit_run("client", ["sleep", "1000"], timeout=1)
    assert container.removed == 1


# --- the Docker error boundary --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        pytest.param(docker.errors.NotFound("gone"), DockerNotFound, id="not-found"),
        pytest.param(docker.errors.APIError("500", explanation="conflict"), DockerError, id="api"),
        pytest.param(requests.exceptions.ConnectionError("reset"), DockerError, id="http"),
        pytest.param(docker.errors.DockerException("odd"), DockerError, id="sdk"),
    ],
)
def test_docker_errors_become_lab_errors_keeping_the_cause(
    raised: Exception, expected: type[LabError]
) -> None:
    with pytest.raises(expected) as caught, docker_errors("reading x"):
        raise raised
    assert str(caught.value).startswith("reading x: ")
    assert caught.value.__cause__ is raised


def test_an_http_timeout_can_be_a_command_timeout() -> None:
    with pytest.raises(CommandTimeout), docker_errors("waiting", http_error=CommandTimeout):
        raise requests.exceptions.ReadTimeout("slow")


# --- wait_for_log -----------------------------------------------------------------------------


class Watched:
    def __init__(self, *, status: str = "running", stdout: str = "", stderr: str = "") -> None:
        self.name = "w"
        self.status, self.stdout, self.stderr = status, stdout, stderr
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1

    def logs(self, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> str:
        return (self.stdout if stdout else "") + (self.stderr if stderr else "")


def test_wait_for_log_returns_the_output_once_the_text_is_there() -> None:
    watched = Watched(stdout="a\nlistening on 5201\n")
    assert wait_for_log(watched, "listening", timeout=1) == "a\nlistening on 5201\n"


def test_wait_for_log_reads_only_the_stream_asked_for() -> None:
    watched = Watched(stdout="listening on", stderr="")
    with pytest.raises(HelperNotReady) as caught:
        wait_for_log(watched, "listening on", timeout=0.05, stream="stderr", interval=0.01)
    assert not caught.value.exited
    assert "timed out after 0.05 s waiting for 'listening on' in the output of w" in str(
        caught.value
    )
    assert isinstance(caught.value, NotReady)
    assert watched.reloads >= 2, "polled until the deadline"


def test_wait_for_log_with_no_text_waits_until_it_runs() -> None:
    assert wait_for_log(Watched(), "", timeout=1) == ""
    with pytest.raises(HelperNotReady, match="w to run"):
        wait_for_log(Watched(status="created"), "", timeout=0.02, interval=0.01)


def test_wait_for_log_gives_up_at_once_when_the_container_ended() -> None:
    watched = Watched(status="exited", stderr="tcpdump: permission denied\n")
    with pytest.raises(HelperNotReady) as caught:
        wait_for_log(watched, "listening", timeout=60)
    assert caught.value.exited
    assert str(caught.value) == "w exited: tcpdump: permission denied"
    assert watched.reloads == 1


# --- iperf3: one server helper for the self-check and the bench -----------------------------


IPERF_REPORT = json.dumps(
    {"end": {"sum_received": {"bytes": 10, "seconds": 1.0, "bits_per_second": 8e6}}}
)


def iperf3_client(lab: Any, service: str, argv: list[str]) -> ExecResult:
    assert argv[:2] == ["iperf3", "-c"]
    return ExecResult(exit_code=0, stdout=IPERF_REPORT, stderr="")


def test_run_iperf3_serves_in_one_namespace_and_measures_from_the_other(fake_lab: Any) -> None:
    server = fake_lab.queue_helper(stdout="Server listening on 5999\n")
    fake_lab.commands = iperf3_client

    result = run_iperf3(
        fake_lab, server="server", client="client", port=5999, args=["-t", "1"],
        timeout=30, ready_timeout=1,
    )  # fmt: skip

    assert result.stdout == IPERF_REPORT
    (started,) = fake_lab.started
    assert (started["service"], started["argv"], started["role"]) == (
        "server", server_argv(5999), SERVER_ROLE,
    )  # fmt: skip
    assert started["caps"] == ()  # the server needs no privileges
    (run,) = fake_lab.netkit_runs
    assert run == (
        "client",
        tuple(client_argv(fake_lab.ip("server"), port=5999, args=["-t", "1"])),
        False,
    )
    assert server.removed, "the server helper is removed after the test"


def test_an_iperf3_server_that_does_not_listen_is_named(fake_lab: Any) -> None:
    fake_lab.queue_helper(stdout="iperf3: error - unable to start listener\n", status="exited")
    fake_lab.commands = iperf3_client
    with pytest.raises(HelperNotReady, match="iperf3 server in server did not start listening"):
        run_iperf3(
            fake_lab, server="server", client="client", port=1, args=[], timeout=1,
            ready_timeout=1,
        )  # fmt: skip
    assert fake_lab.netkit_runs == []  # no client against a server that is not there


def test_the_shaping_rate_check_uses_the_shared_iperf3_with_its_own_port(fake_lab: Any) -> None:
    fake_lab.queue_helper(stdout="Server listening\n")
    fake_lab.commands = iperf3_client

    assert measure_rate(fake_lab, "client", "server") == 8e6

    shaping = fake_lab.config.shaping
    (started,) = fake_lab.started
    assert started["argv"] == server_argv(shaping.iperf_port)
    ((_, argv, _),) = fake_lab.netkit_runs
    assert argv[argv.index("-t") + 1] == str(shaping.check_rate_seconds)


# --- copying a file out of a container -------------------------------------------------------


def tar_of(name: str, data: bytes | None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        if data is None:
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        else:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_single_file_unpacks_the_one_regular_file() -> None:
    assert single_file(tar_of("capture.pcap", b"\xd4\xc3\xb2\xa1"), what="x") == b"\xd4\xc3\xb2\xa1"


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        pytest.param(tar_of("d", None), "x is not a regular file", id="a-directory"),
        pytest.param(b"", "x: unreadable archive", id="empty"),
        pytest.param(b"not a tar at all" * 64, "x: unreadable archive", id="garbage"),
    ],
)
def test_single_file_refuses_anything_else_as_a_lab_error(archive: bytes, message: str) -> None:
    with pytest.raises(LabError, match=message) as caught:
        single_file(archive, what="x")
    assert "\n" not in str(caught.value)


# --- netkit_image ---------------------------------------------------------------------------


class FakeNetwork:
    def __init__(self, labels: dict[str, str]) -> None:
        self.attrs = {"Labels": labels}


def test_the_netkit_image_is_the_newest_containers_not_the_networks(tmp_path: Path) -> None:
    """A second `lab up` with new netkit sources recreates the containers (their label
    changed) but keeps the network, which still names the old image."""
    label = "io.socketlab.netkit-image"
    project = {"io.socketlab.project": "proj-1"}
    old = FakeContainer(name="proj-1-client-1", labels={**project, label: "socketlab/netkit:old"})
    new = FakeContainer(name="proj-1-server-1", labels={**project, label: "socketlab/netkit:new"})
    old.attrs["Created"] = "2026-01-01T09:00:00Z"
    new.attrs["Created"] = "2026-01-01T10:00:00Z"
    client = FakeDocker(listed=[old, new])
    client.networks = SimpleNamespace(  # type: ignore[attr-defined]
        list=lambda filters: [FakeNetwork({**project, label: "socketlab/netkit:old"})]
    )
    lab = make_lab(tmp_path, client)
    lab._images = None
    assert lab.netkit_image == "socketlab/netkit:new"
