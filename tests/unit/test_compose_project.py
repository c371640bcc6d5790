"""A project's Compose files (``-f``, ``SOCKETLAB_COMPOSE_FILE``, the default pair), the
argv with several files, Compose's own complaint about a file it rejects, and the
lab's own override (labels everywhere, forwarding for routers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lab.compose import (
    Compose,
    ComposeConfigError,
    compose_message,
    project_files,
    split_compose_files,
)
from lab.errors import ComposeError
from lab.overlay import FORWARD_V4, FORWARD_V6, NETKIT_LABEL, lab_override, override_file
from lab.topology import model_from_config, parse_config_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "compose"


def test_compose_file_lists_split_like_compose_file() -> None:
    assert split_compose_files("a.yml:b/c.yml") == ("a.yml", "b/c.yml")
    assert split_compose_files(" a.yml :: ") == ("a.yml",)
    assert split_compose_files("a.yml;b.yml", separator=";") == ("a.yml", "b.yml")


def test_default_files_are_the_checkouts_pair_when_the_override_exists(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    assert project_files(default_dir=tmp_path).files == (tmp_path / "docker-compose.yml",)
    (tmp_path / "docker-compose.override.yml").write_text("services: {}\n")
    assert project_files(default_dir=tmp_path).files == (
        tmp_path / "docker-compose.yml",
        tmp_path / "docker-compose.override.yml",
    )


def test_named_files_win_and_no_override_is_added(tmp_path: Path) -> None:
    for name in ("docker-compose.yml", "docker-compose.override.yml", "a.yml", "b.yml"):
        (tmp_path / name).write_text("services: {}\n")
    files = project_files(["a.yml", tmp_path / "b.yml"], default_dir=tmp_path, cwd=tmp_path)
    assert files.files == (tmp_path / "a.yml", tmp_path / "b.yml")
    assert files.directory == tmp_path
    configured = project_files(configured="b.yml:a.yml", default_dir=tmp_path, cwd=tmp_path)
    assert configured.files == (tmp_path / "b.yml", tmp_path / "a.yml")
    # -f wins over the setting
    both = project_files(["a.yml"], configured="b.yml", default_dir=tmp_path, cwd=tmp_path)
    assert both.files == (tmp_path / "a.yml",)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ComposeError, match=r"no Compose file .*nope\.yml"):
        project_files(["nope.yml"], default_dir=tmp_path, cwd=tmp_path)
    with pytest.raises(ComposeError, match=r"no docker-compose\.yml in"):
        project_files(default_dir=tmp_path)


def test_argv_passes_every_file_in_order() -> None:
    compose = Compose(
        project="p",
        compose_file=Path("/x/a.yml"),
        extra_files=(Path("/x/b.yml"), Path("/t/lab.json")),
        command=("docker", "compose"),
    )
    assert compose.argv("up")[2:9] == [
        "-f",
        "/x/a.yml",
        "-f",
        "/x/b.yml",
        "-f",
        "/t/lab.json",
        "-p",
    ]


def fake_compose(tmp_path: Path, *, stderr: str, code: int) -> tuple[str, ...]:
    script = tmp_path / "fake-compose.py"
    script.write_text(f"import sys\nsys.stderr.write({stderr!r})\nsys.exit({code})\n")
    return (sys.executable, str(script))


def test_a_file_compose_rejects_is_its_own_message_with_the_file_named(tmp_path: Path) -> None:
    # What Compose v2 printed for a misspelt key (recorded)
    said = "validating /p/docker-compose.yml: services.a additional properties 'networkz' not allowed\n"
    compose = Compose(
        project="p",
        compose_file=tmp_path / "docker-compose.yml",
        command=fake_compose(tmp_path, stderr=said, code=15),
    )
    with pytest.raises(ComposeConfigError) as caught:
        compose.config(major=2)
    message = str(caught.value)
    assert message.startswith(f"Compose rejects {tmp_path / 'docker-compose.yml'}: ")
    assert "additional properties 'networkz' not allowed" in message
    assert "\n" not in message


def test_compose_v1s_traceback_is_reduced_to_its_message() -> None:
    said = (
        "Traceback (most recent call last):\n"
        '  File "/usr/bin/docker-compose", line 33, in <module>\n'
        "    sys.exit(load_entry_point())\n"
        "yaml.parser.ParserError: while parsing a block mapping\n"
        '  in "./bad.yml", line 2, column 3\n'
    )
    assert compose_message(said) == (
        'yaml.parser.ParserError: while parsing a block mapping in "./bad.yml", line 2, column 3'
    )


def routed_model():  # type: ignore[no-untyped-def]
    data = parse_config_yaml((FIXTURES / "routed.v1.yml").read_text())
    return model_from_config(data, project="lab14")


def test_the_override_labels_every_service_and_makes_routers_forward() -> None:
    document = lab_override(routed_model(), project="lab14", netkit_image="socketlab/netkit:x")
    labels = {"io.socketlab.project": "lab14", NETKIT_LABEL: "socketlab/netkit:x"}
    assert set(document["services"]) == {"client", "router", "server"}
    assert all(entry["labels"] == labels for entry in document["services"].values())
    assert document["services"]["router"]["sysctls"] == {FORWARD_V4: "1"}
    assert "sysctls" not in document["services"]["client"]
    # Compose v1 would replace a network's definition (enable_ipv6, ipam) with ours
    assert "networks" not in document


def test_a_router_on_an_ipv6_network_forwards_ipv6_too() -> None:
    data = json.loads((FIXTURES / "ipv6.v2.json").read_text())
    data["services"]["server"]["x-socketlab"] = {"router": True}
    model = model_from_config(data, project="lab14")
    document = lab_override(model, project="lab14", netkit_image="")
    assert document["services"]["server"]["sysctls"] == {FORWARD_V4: "1", FORWARD_V6: "1"}
    assert NETKIT_LABEL not in document["services"]["server"]["labels"]


def test_the_override_file_exists_for_the_block_only() -> None:
    with override_file({"services": {}}, project="p") as path:
        assert json.loads(path.read_text()) == {"services": {}}
    assert not path.exists()
