"""lab doctor: every check against fake machines (present, missing, odd answers), the
verdict, lab up's refusal, the CLI, and README's requirements staying in step."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import doctor
from lab.cli import main
from lab.config import LabConfig
from lab.doctor import (
    CHECKS,
    PrerequisiteMissing,
    Row,
    Status,
    check_cgroup,
    check_compose,
    check_congestion,
    check_disk,
    check_engine,
    check_images,
    check_iptables,
    check_ipv6,
    check_python,
    check_shaping,
    lab_can_run,
    require_prerequisites,
    run_checks,
)
from lab.errors import DockerUnavailable
from lab.images import (
    BASE_PACKAGES,
    BUILD_BASE_PACKAGES,
    AptSource,
    ImagesConfig,
    local_base_tag,
)

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3
KERNEL = "6.18.44"
UNREACHABLE = (
    "cannot reach Docker at unix:///var/run/docker.sock: is the daemon running? "
    "(No such file or directory)"
)
NO_REGISTRY = "cannot resolve registry-1.docker.io: no such host"
DEBIAN = [AptSource(uri="http://deb.debian.org/debian", suite="bookworm", components=("main",))]


def info(**changes: Any) -> dict[str, Any]:
    return {
        "ServerVersion": "20.10.24+dfsg1",
        "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
        "KernelVersion": KERNEL,
        "DockerRootDir": "/var/lib/docker",
        "CgroupVersion": "1",
        "CgroupDriver": "cgroupfs",
        **changes,
    }


@dataclass
class FakeProbe:
    """A machine as the checks see it: this one is this workplace's kind, all present."""

    version: tuple[int, int, int] = (3, 11, 7)
    venv: bool = True
    engine: dict[str, Any] | None = field(default_factory=info)
    engine_error: str = UNREACHABLE
    commands: dict[str, str] = field(
        default_factory=lambda: {
            "docker": "/usr/bin/docker",
            "docker-compose": "/usr/bin/docker-compose",
            "mmdebstrap": "/usr/bin/mmdebstrap",
        }
    )
    outputs: dict[tuple[str, ...], tuple[int, str]] = field(
        default_factory=lambda: {
            ("docker", "compose", "version"): (1, "docker: 'compose' is not a docker command."),
            ("docker-compose", "version", "--short"): (0, "1.29.2\n"),
            ("iptables", "--version"): (0, "iptables v1.8.9 (nf_tables)\n"),
        }
    )
    files: dict[str, str] = field(
        default_factory=lambda: {
            "/proc/sys/net/ipv6/conf/all/disable_ipv6": "0\n",
            "/proc/sys/net/ipv4/tcp_congestion_control": "cubic\n",
            "/proc/sys/net/ipv4/tcp_available_congestion_control": "reno cubic\n",
        }
    )
    paths: set[str] = field(default_factory=lambda: {"/sys/fs/cgroup"})
    free: int | None = 75 * GIB
    images: set[str] = field(default_factory=set)
    registry: str | None = NO_REGISTRY
    kernel: str = KERNEL
    config: str | None = (
        "# CONFIG_NET_SCH_NETEM is not set\n"
        "CONFIG_NETFILTER_NETLINK_QUEUE=y\n"
        "CONFIG_NETFILTER_XT_TARGET_NFQUEUE=y\n"
        "CONFIG_NF_TABLES=y\n"
    )
    release: str | None = "bookworm"
    sources: list[AptSource] = field(default_factory=lambda: list(DEBIAN))
    asked: list[str] = field(default_factory=list)
    disk_paths: list[str] = field(default_factory=list)

    def python(self) -> tuple[tuple[int, int, int], bool]:
        return self.version, self.venv

    def docker_info(self) -> Mapping[str, Any]:
        if self.engine is None:
            raise DockerUnavailable(self.engine_error)
        return self.engine

    def docker_host(self) -> str:
        return "unix:///var/run/docker.sock"

    def which(self, name: str) -> str | None:
        return self.commands.get(name)

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        return self.outputs.get(tuple(argv), (127, ""))

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def exists(self, path: str) -> bool:
        return path in self.paths

    def disk_free(self, path: str) -> int | None:
        self.disk_paths.append(path)
        return self.free

    def image_present(self, ref: str) -> bool:
        return ref in self.images

    def registry_error(self, ref: str) -> str | None:
        self.asked.append(ref)
        return self.registry

    def kernel_release(self) -> str:
        return self.kernel

    def kernel_config(self) -> str | None:
        return self.config

    def codename(self) -> str | None:
        return self.release

    def apt_sources(self) -> list[AptSource]:
        return self.sources


CONFIG = LabConfig()


def v2_compose(probe: FakeProbe, version: str = "2.40.3") -> FakeProbe:
    probe.outputs[("docker", "compose", "version")] = (0, f"Docker Compose version v{version}")
    probe.outputs[("docker", "compose", "version", "--short")] = (0, f"{version}\n")
    return probe


# --------------------------------------------------------------------------- python


def test_python_311_with_venv_is_ok() -> None:
    row = check_python(FakeProbe(), CONFIG)
    assert (row.status, row.found) == (Status.OK, "Python 3.11.7 with venv")
    assert row.required


def test_python_older_than_311_is_missing() -> None:
    row = check_python(FakeProbe(version=(3, 10, 12)), CONFIG)
    assert row.status is Status.MISSING
    assert "3.10.12" in row.found
    assert row.blocks


def test_python_without_venv_is_missing_with_the_package_to_install() -> None:
    row = check_python(FakeProbe(version=(3, 13, 1), venv=False), CONFIG)
    assert row.status is Status.MISSING
    assert row.fix == "sudo apt-get install python3-venv"


# --------------------------------------------------------------------------- engine


def test_engine_ok_names_version_and_address() -> None:
    row = check_engine(FakeProbe(), CONFIG)
    assert row.status is Status.OK
    assert "Docker 20.10.24+dfsg1 at unix:///var/run/docker.sock" in row.found


@pytest.mark.parametrize(
    ("error", "commands", "fix"),
    [
        pytest.param(
            UNREACHABLE, {"docker": "/usr/bin/docker"}, "sudo systemctl start docker", id="stopped"
        ),
        pytest.param(
            "cannot reach Docker at unix:///var/run/docker.sock: (Permission denied)",
            {"docker": "/usr/bin/docker"},
            "sudo usermod -aG docker $USER  (then log in again)",
            id="permission",
        ),
        pytest.param(UNREACHABLE, {}, "sudo apt-get install docker.io", id="not-installed"),
    ],
)
def test_engine_unreachable_is_missing_with_the_fix_for_its_cause(
    error: str, commands: dict[str, str], fix: str
) -> None:
    row = check_engine(FakeProbe(engine=None, engine_error=error, commands=commands), CONFIG)
    assert row.status is Status.MISSING
    assert row.found == error
    assert row.fix == fix
    assert row.blocks


@pytest.mark.parametrize(
    ("version", "says"),
    [
        pytest.param("", "reports no version", id="no-version"),
        pytest.param("19.03.15", "older than 20.10", id="old"),
    ],
)
def test_engine_odd_answers_warn(version: str, says: str) -> None:
    row = check_engine(FakeProbe(engine=info(ServerVersion=version)), CONFIG)
    assert row.status is Status.WARN
    assert says in row.found
    assert not row.blocks


# --------------------------------------------------------------------------- compose


def test_compose_v1_129_is_ok() -> None:
    row = check_compose(FakeProbe(), CONFIG)
    assert (row.status, row.found) == (Status.OK, "Compose v1 1.29.2 (docker-compose)")


def test_compose_v2_is_preferred_and_named() -> None:
    row = check_compose(v2_compose(FakeProbe()), CONFIG)
    assert (row.status, row.found) == (Status.OK, "Compose v2 2.40.3 (docker compose)")


def test_compose_override_is_what_gets_checked() -> None:
    probe = v2_compose(FakeProbe())
    row = check_compose(probe, dataclasses.replace(CONFIG, compose="docker-compose"))
    assert row.found == "Compose v1 1.29.2 (docker-compose)"


def test_no_compose_is_missing() -> None:
    probe = FakeProbe(commands={"docker": "/usr/bin/docker"})
    row = check_compose(probe, CONFIG)
    assert row.status is Status.MISSING
    assert row.fix == "sudo apt-get install docker-compose"
    assert row.blocks


def test_compose_v1_older_than_129_is_missing() -> None:
    probe = FakeProbe()
    probe.outputs[("docker-compose", "version", "--short")] = (0, "1.25.0\n")
    row = check_compose(probe, CONFIG)
    assert row.status is Status.MISSING
    assert "older than 1.29" in row.found


def test_compose_that_fails_its_version_is_missing() -> None:
    probe = FakeProbe()
    probe.outputs[("docker-compose", "version", "--short")] = (1, "Traceback...\nImportError: x\n")
    row = check_compose(probe, CONFIG)
    assert row.status is Status.MISSING
    assert "ImportError: x" in row.found


def test_compose_with_an_unreadable_version_warns() -> None:
    probe = FakeProbe()
    probe.outputs[("docker-compose", "version", "--short")] = (0, "dev-build\n")
    row = check_compose(probe, CONFIG)
    assert row.status is Status.WARN


# --------------------------------------------------------------------------- images


def cached_bases(namespace: str = "socketlab") -> set[str]:
    return {
        local_base_tag("bookworm", BASE_PACKAGES, repo=f"{namespace}/base"),
        local_base_tag("bookworm", BUILD_BASE_PACKAGES, repo=f"{namespace}/build-base"),
    }


def test_images_ok_when_the_base_image_is_present() -> None:
    probe = FakeProbe(images={"python:3.11-slim"}, commands={})
    row = check_images(probe, CONFIG)
    assert (row.status, row.found) == (Status.OK, "python:3.11-slim is present")
    assert probe.asked == []


def test_images_ok_when_both_local_bases_are_cached_without_asking_a_registry() -> None:
    probe = FakeProbe(images=cached_bases(), commands={})
    row = check_images(probe, CONFIG)
    assert row.status is Status.OK
    assert "local bases cached" in row.found
    assert probe.asked == []


def test_cached_bases_of_another_namespace_do_not_count() -> None:
    probe = FakeProbe(images=cached_bases(), commands={})
    config = dataclasses.replace(CONFIG, images=ImagesConfig(namespace="fresh"))
    row = check_images(probe, config)
    assert row.status is Status.MISSING
    assert probe.asked == ["python:3.11-slim"]


def test_images_ok_when_a_registry_serves_the_base() -> None:
    probe = FakeProbe(registry=None, commands={})
    row = check_images(probe, CONFIG)
    assert (row.status, row.found) == (Status.OK, "a registry serves python:3.11-slim")


def test_images_ok_offline_with_mmdebstrap_and_a_mirror() -> None:
    row = check_images(FakeProbe(), CONFIG)
    assert row.status is Status.OK
    assert NO_REGISTRY in row.found
    assert "deb http://deb.debian.org/debian bookworm main" in row.found


def test_offline_without_mmdebstrap_is_the_missing_mmdebstrap_row() -> None:
    probe = FakeProbe(commands={"docker": "/usr/bin/docker"})
    row = check_images(probe, CONFIG)
    assert row.status is Status.MISSING
    assert row.found.startswith("mmdebstrap is not installed")
    assert row.fix == "sudo apt-get install mmdebstrap"
    assert row.blocks


def test_offline_without_an_apt_mirror_is_missing() -> None:
    probe = FakeProbe(sources=[AptSource(uri="http://x", suite="stable", components=("contrib",))])
    row = check_images(probe, CONFIG)
    assert row.status is Status.MISSING
    assert "no apt mirror for bookworm" in row.found
    assert "deb http://deb.debian.org/debian bookworm main" in row.fix


def test_offline_on_a_host_that_is_not_debian_is_missing() -> None:
    row = check_images(FakeProbe(release=None), CONFIG)
    assert row.status is Status.MISSING
    assert "no Debian release" in row.found
    assert row.fix.startswith("export SOCKETLAB_BASE_IMAGE=")


def test_the_requested_base_comes_from_the_config() -> None:
    config = dataclasses.replace(CONFIG, images=ImagesConfig(base_image="python:3.12-slim"))
    probe = FakeProbe(images={"python:3.12-slim"})
    assert check_images(probe, config).found == "python:3.12-slim is present"


# --------------------------------------------------------------------------- disk


def test_disk_measures_the_engines_root_dir() -> None:
    probe = FakeProbe()
    row = check_disk(probe, CONFIG)
    assert (row.status, row.found) == (Status.OK, "75.0 GiB free at /var/lib/docker")
    assert probe.disk_paths == ["/var/lib/docker"]


@pytest.mark.parametrize(
    ("free", "status"),
    [
        pytest.param(3 * GIB, Status.WARN, id="low"),
        pytest.param(GIB, Status.MISSING, id="too-little"),
    ],
)
def test_disk_thresholds(free: int, status: Status) -> None:
    row = check_disk(FakeProbe(free=free), CONFIG)
    assert row.status is status
    assert row.fix == "docker image prune"


def test_disk_that_cannot_be_measured_warns() -> None:
    row = check_disk(FakeProbe(free=None), CONFIG)
    assert row.status is Status.WARN
    assert not row.blocks


def test_disk_of_an_engine_on_another_kernel_is_not_measured_here() -> None:
    probe = FakeProbe(engine=info(KernelVersion="6.10.14-linuxkit"))
    row = check_disk(probe, CONFIG)
    assert row.status is Status.WARN
    assert probe.disk_paths == []


def test_disk_without_an_engine_measures_the_current_folder() -> None:
    probe = FakeProbe(engine=None)
    check_disk(probe, CONFIG)
    assert probe.disk_paths == ["."]


# --------------------------------------------------------------------------- shaping


def test_netem_built_in_means_the_netem_engine() -> None:
    row = check_shaping(FakeProbe(config="CONFIG_NET_SCH_NETEM=y\n"), CONFIG)
    assert (row.status, row.found) == (Status.OK, "sch_netem present: the netem engine")


def test_netem_as_a_loaded_module_counts() -> None:
    row = check_shaping(FakeProbe(config=None, paths={"/sys/module/sch_netem"}), CONFIG)
    assert "netem engine" in row.found


def test_netem_as_a_module_file_counts() -> None:
    probe = FakeProbe(config=None)
    probe.files[f"/lib/modules/{KERNEL}/modules.dep"] = (
        "kernel/net/sched/sch_netem.ko.xz: kernel/net/sched/sch_x.ko\n"
    )
    assert "netem engine" in check_shaping(probe, CONFIG).found


def test_no_netem_but_nfqueue_means_the_nfqueue_engine() -> None:
    row = check_shaping(FakeProbe(), CONFIG)
    assert row.status is Status.OK
    assert "no sch_netem" in row.found
    assert "nfqueue engine" in row.found


def test_nfqueue_seen_in_proc_without_a_config() -> None:
    probe = FakeProbe(config=None, paths={"/proc/net/netfilter/nfnetlink_queue"})
    row = check_shaping(probe, CONFIG)
    assert "nfqueue engine" in row.found


def test_neither_engine_is_missing_but_never_stops_the_lab() -> None:
    config = (
        "# CONFIG_NET_SCH_NETEM is not set\n"
        "# CONFIG_NETFILTER_NETLINK_QUEUE is not set\n"
        "# CONFIG_NETFILTER_XT_TARGET_NFQUEUE is not set\n"
    )
    row = check_shaping(FakeProbe(config=config), CONFIG)
    assert row.status is Status.MISSING
    assert row.fix == "sudo modprobe sch_netem"
    assert not row.blocks


def test_nfqueue_without_its_iptables_target_is_not_usable() -> None:
    config = (
        "# CONFIG_NET_SCH_NETEM is not set\n"
        "CONFIG_NETFILTER_NETLINK_QUEUE=y\n"
        "# CONFIG_NETFILTER_XT_TARGET_NFQUEUE is not set\n"
    )
    assert check_shaping(FakeProbe(config=config), CONFIG).status is Status.MISSING


def test_shaping_unknown_without_any_kernel_information_warns() -> None:
    row = check_shaping(FakeProbe(config=None), CONFIG)
    assert row.status is Status.WARN


def test_shaping_on_an_engine_with_another_kernel_warns() -> None:
    probe = FakeProbe(engine=info(KernelVersion="6.10.14-linuxkit"))
    row = check_shaping(probe, CONFIG)
    assert row.status is Status.WARN
    assert "6.10.14-linuxkit" in row.found


# --------------------------------------------------------------------------- iptables


@pytest.mark.parametrize(
    ("answer", "backend"),
    [
        pytest.param("iptables v1.8.9 (nf_tables)", "nf_tables (iptables v1.8.9", id="nft"),
        pytest.param("iptables v1.8.7 (legacy)", "legacy (iptables v1.8.7", id="legacy"),
        pytest.param("iptables v1.6.1", "legacy (iptables v1.6.1", id="old-no-tag"),
    ],
)
def test_iptables_backend(answer: str, backend: str) -> None:
    probe = FakeProbe()
    probe.outputs[("iptables", "--version")] = (0, answer + "\n")
    row = check_iptables(probe, CONFIG)
    assert row.status is Status.OK
    assert row.found.startswith(backend)


def test_iptables_found_in_sbin_when_not_on_path() -> None:
    probe = FakeProbe()
    del probe.outputs[("iptables", "--version")]
    probe.outputs[("/usr/sbin/iptables", "--version")] = (0, "iptables v1.8.9 (legacy)\n")
    assert check_iptables(probe, CONFIG).found.startswith("legacy")


def test_no_iptables_warns() -> None:
    probe = FakeProbe()
    del probe.outputs[("iptables", "--version")]
    row = check_iptables(probe, CONFIG)
    assert row.status is Status.WARN
    assert row.fix == "sudo apt-get install iptables"


def test_iptables_odd_answer_warns() -> None:
    probe = FakeProbe()
    probe.outputs[("iptables", "--version")] = (0, "something else\n")
    assert check_iptables(probe, CONFIG).status is Status.WARN


def test_kernel_without_nf_tables_warns() -> None:
    row = check_iptables(FakeProbe(config="# CONFIG_NF_TABLES is not set\n"), CONFIG)
    assert row.status is Status.WARN
    assert "no nf_tables" in row.found


# --------------------------------------------------------------------------- ipv6


@pytest.mark.parametrize(
    ("value", "status", "fix"),
    [
        pytest.param("0\n", Status.OK, "", id="enabled"),
        pytest.param(
            "1\n", Status.WARN, "sudo sysctl -w net.ipv6.conf.all.disable_ipv6=0", id="off"
        ),
        pytest.param(
            None, Status.WARN, "remove ipv6.disable=1 from the kernel command line", id="no-ipv6"
        ),
        pytest.param("banana\n", Status.WARN, "", id="odd"),
    ],
)
def test_ipv6(value: str | None, status: Status, fix: str) -> None:
    probe = FakeProbe()
    probe.files.pop("/proc/sys/net/ipv6/conf/all/disable_ipv6")
    if value is not None:
        probe.files["/proc/sys/net/ipv6/conf/all/disable_ipv6"] = value
    row = check_ipv6(probe, CONFIG)
    assert (row.status, row.fix) == (status, fix)
    assert not row.blocks


# --------------------------------------------------------------------------- congestion


def test_a_bbr_host_is_fine_since_the_lab_sets_cubic_per_service() -> None:
    probe = FakeProbe()
    probe.files["/proc/sys/net/ipv4/tcp_congestion_control"] = "bbr\n"
    probe.files["/proc/sys/net/ipv4/tcp_available_congestion_control"] = "reno bbr cubic\n"
    row = check_congestion(probe, CONFIG)
    assert row.status is Status.OK
    assert "the lab sets cubic per service" in row.found
    assert "the host's default (bbr) does not matter for the lab" in row.found
    assert "available: reno bbr cubic" in row.found
    assert row.fix == ""
    assert not row.blocks


def test_a_kernel_without_cubic_warns_with_the_module_to_load() -> None:
    probe = FakeProbe()
    probe.files["/proc/sys/net/ipv4/tcp_congestion_control"] = "bbr\n"
    probe.files["/proc/sys/net/ipv4/tcp_available_congestion_control"] = "reno bbr\n"
    row = check_congestion(probe, CONFIG)
    assert row.status is Status.WARN
    assert "cubic is not in this kernel (available: reno bbr)" in row.found
    assert row.fix == "sudo modprobe tcp_cubic"
    assert not row.blocks


def test_unreadable_available_list_warns() -> None:
    probe = FakeProbe()
    probe.files.pop("/proc/sys/net/ipv4/tcp_available_congestion_control")
    assert check_congestion(probe, CONFIG).status is Status.WARN


# --------------------------------------------------------------------------- cgroup


@pytest.mark.parametrize(
    ("version", "driver", "found"),
    [
        pytest.param("1", "cgroupfs", "cgroup v1 (cgroupfs driver)", id="v1"),
        pytest.param("2", "systemd", "cgroup v2 (systemd driver)", id="v2"),
    ],
)
def test_cgroup_from_the_engine(version: str, driver: str, found: str) -> None:
    row = check_cgroup(FakeProbe(engine=info(CgroupVersion=version, CgroupDriver=driver)), CONFIG)
    assert (row.status, row.found) == (Status.OK, found)


def test_cgroup_odd_engine_answer_warns() -> None:
    assert check_cgroup(FakeProbe(engine=info(CgroupVersion="3")), CONFIG).status is Status.WARN


def test_cgroup_from_the_host_when_the_engine_is_away() -> None:
    probe = FakeProbe(engine=None, paths={"/sys/fs/cgroup", "/sys/fs/cgroup/cgroup.controllers"})
    assert check_cgroup(probe, CONFIG).found.startswith("cgroup v2")
    assert check_cgroup(FakeProbe(engine=None), CONFIG).found.startswith("cgroup v1")
    assert check_cgroup(FakeProbe(engine=None, paths=set()), CONFIG).status is Status.WARN


# --------------------------------------------------------------------------- verdict


def test_rows_come_in_check_order_and_this_kind_of_machine_can_run() -> None:
    rows = run_checks(FakeProbe(), CONFIG)
    assert [row.name for row in rows] == [check.name for check in CHECKS]
    assert lab_can_run(rows)


def test_a_missing_required_row_means_the_lab_cannot_run() -> None:
    rows = run_checks(FakeProbe(commands={"docker": "/usr/bin/docker"}), CONFIG)
    assert not lab_can_run(rows)
    assert [row.name for row in rows if row.blocks] == ["compose", "images"]


def test_a_missing_optional_row_does_not_stop_the_lab() -> None:
    rows = [
        Row(name="shaping", title="Shaping engine", status=Status.MISSING, found="x"),
        Row(name="python", title="Python", status=Status.OK, found="y", required=True),
    ]
    assert lab_can_run(rows)


class RequiredOnly(FakeProbe):
    def kernel_config(self) -> str | None:
        raise AssertionError("lab up must not wait for the descriptive rows")


def test_prerequisites_pass_quietly_and_check_only_required_rows() -> None:
    rows = require_prerequisites(probe=RequiredOnly(), config=CONFIG)
    assert [row.name for row in rows] == [c.name for c in CHECKS if c.required]


def test_prerequisites_name_the_missing_row_and_its_fix() -> None:
    probe = FakeProbe(commands={"docker": "/usr/bin/docker", "docker-compose": "/usr/bin/dc"})
    with pytest.raises(PrerequisiteMissing) as caught:
        require_prerequisites(probe=probe, config=CONFIG)
    message = str(caught.value)
    assert message.startswith("Base images: missing: mmdebstrap is not installed")
    assert "(fix: sudo apt-get install mmdebstrap)" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> FakeProbe:
    """`lab doctor` and `lab up` ask this fake machine, with the default settings."""
    for name in ("SOCKETLAB_COMPOSE", "SOCKETLAB_BASE_IMAGE", "SOCKETLAB_IMAGE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    probe = FakeProbe()
    monkeypatch.setattr(doctor, "LiveProbe", lambda **_kwargs: probe)
    return probe


def test_lab_doctor_json_lists_every_row_and_exits_0(
    machine: FakeProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["can_run"] is True
    assert [row["name"] for row in document["rows"]] == [check.name for check in CHECKS]
    assert set(document["rows"][0]) == {"name", "title", "status", "found", "fix", "required"}
    assert {row["status"] for row in document["rows"]} <= {"ok", "warn", "missing"}


def test_lab_doctor_table_exits_1_when_the_lab_cannot_run(
    machine: FakeProbe, capsys: pytest.CaptureFixture[str]
) -> None:
    machine.commands.pop("mmdebstrap")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "sudo apt-get install mmdebstrap" in out
    assert "the lab cannot run here" in out


def test_lab_up_stops_with_the_row_before_building(
    machine: FakeProbe, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lab.api import Lab  # noqa: PLC0415

    def build(self: Lab) -> None:
        raise AssertionError("lab up built images despite a missing prerequisite")

    monkeypatch.setattr(Lab, "build", build)
    machine.commands.pop("mmdebstrap")
    assert main(["-p", "socketlab-unit", "up"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Base images: missing: mmdebstrap is not installed" in err
    assert "sudo apt-get install mmdebstrap" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- README


def readme_requirements() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Requirements\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("- **")]


def test_readme_requirements_are_the_doctors_rows() -> None:
    items = readme_requirements()
    titles = [re.match(r"- \*\*(.+?)\*\*", item).group(1) for item in items]  # type: ignore[union-attr]
    assert titles == [check.title for check in CHECKS]
    for item, check in zip(items, CHECKS, strict=True):
        expected = "(required)" if check.required else "(reported)"
        assert expected in item, f"README says {item!r}; the doctor's row is {expected}"


def test_readme_no_longer_asks_for_compilers() -> None:
    section = "\n".join(readme_requirements())
    assert "gcc" not in section
    assert "libnetfilter-queue-dev" not in section


# --------------------------------------------------------------------------- live probe (no Docker)


def test_registry_errors_are_shortened_to_their_reason() -> None:
    explanation = (
        'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
        "on 10.255.255.53:53: no such host"
    )
    assert doctor._short(explanation) == "cannot resolve registry-1.docker.io: no such host"
    assert doctor._short("x" * 300).endswith("...")
    assert len(doctor._short("x" * 300)) == 120


def test_live_probe_answers_for_missing_things_without_raising(tmp_path: Path) -> None:
    probe = doctor.LiveProbe(registry_timeout=1, docker_host="unix:///nonexistent.sock")
    assert probe.run([str(tmp_path / "no-such-command"), "--version"]) == (127, "")
    assert probe.read_text(str(tmp_path / "absent")) is None
    assert not probe.exists(str(tmp_path / "absent"))
    # an unreadable or absent folder is measured on the nearest parent (same disk)
    free = probe.disk_free(str(tmp_path / "absent" / "deeper"))
    assert isinstance(free, int)
    assert free > 0
    version, has_venv = probe.python()
    assert version[:2] >= (3, 11)
    assert has_venv
