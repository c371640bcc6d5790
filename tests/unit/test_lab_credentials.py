"""The lab's secrets reach only the services that use them, as files, never the environment;
and docker-compose.yml carries the hardening (limits, read-only roots, restarts, cheap checks)."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.api import Lab, admin_token, find_repo_root, pickle_key
from lab.config import LabConfig
from lab.credentials import SECRETS_MOUNT, SERVICE_UID, secret_files, secrets_tar

COMPOSE: dict[str, Any] = yaml.safe_load((find_repo_root() / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_each_volume_holds_only_what_its_service_uses() -> None:
    files = secret_files(pickle_key="k" * 64, admin_token="t" * 64)
    assert files == {
        "secrets-server": {"pickle-key": b"k" * 64 + b"\n", "admin-token": b"t" * 64 + b"\n"},
        "secrets-client": {"pickle-key": b"k" * 64 + b"\n", "admin-token": b"t" * 64 + b"\n"},
        "secrets-udp": {"admin-token": b"t" * 64 + b"\n"},
    }
    disabled = secret_files(pickle_key="", admin_token="t")  # noqa: S106 - a test value
    assert disabled["secrets-server"]["pickle-key"] == b"", "an empty key disables pickle"


def test_the_tar_makes_files_only_the_service_user_can_read() -> None:
    data = secrets_tar({"admin-token": b"secret\n", "pickle-key": b"key\n"})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert sorted(members) == ["admin-token", "pickle-key"]
        for member in members.values():
            assert (member.uid, member.gid, member.mode) == (SERVICE_UID, SERVICE_UID, 0o400)
        extracted = archive.extractfile(members["admin-token"])
        assert extracted is not None
        assert extracted.read() == b"secret\n"


def test_admin_token_is_made_once_per_checkout_with_mode_0600(tmp_path: Path) -> None:
    token = admin_token(tmp_path)
    path = tmp_path / "build" / "admin-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) == 64
    assert admin_token(tmp_path) == token, "stable across lab up runs"
    assert admin_token(tmp_path, configured="mine") == "mine"
    assert pickle_key(tmp_path) != token, "two different secrets"


def test_compose_gets_no_secret_in_its_environment(tmp_path: Path) -> None:
    lab = Lab(
        project="p",
        repo_root=find_repo_root(),
        config=LabConfig(compose="docker-compose", pickle_key="a-key", admin_token="a-token"),  # noqa: S106
    )
    env = lab.compose().env
    assert "SOCKETLAB_PICKLE_KEY" not in env
    assert "SOCKETLAB_ADMIN_TOKEN" not in env
    assert "a-key" not in repr(env)
    assert "a-token" not in repr(env)


@pytest.mark.parametrize(
    ("service", "volume"),
    [
        ("server", "secrets-server"),
        ("client", "secrets-client"),
        ("udp-listener", "secrets-udp"),
        ("rss-poller", None),
    ],
)
def test_secrets_are_mounted_read_only_where_used_and_nowhere_else(
    service: str, volume: str | None
) -> None:
    mounts = [m for m in SERVICES[service].get("volumes", []) if m.startswith("secrets-")]
    assert mounts == ([f"{volume}:{SECRETS_MOUNT}:ro"] if volume else [])
    environment = SERVICES[service].get("environment") or COMPOSE["x-service"]["environment"]
    assert not any("KEY" in name or "TOKEN" in name for name in environment)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_is_hardened(service: str) -> None:
    spec = SERVICES[service]
    assert spec["read_only"] is True
    assert spec["restart"] == "on-failure"
    assert spec["cap_drop"] == ["ALL"]
    for limit in ("mem_limit", "cpus"):
        value = str(spec[limit])
        assert value.startswith("${SOCKETLAB_"), f"{limit} is overridable"
        assert ":-" in value, f"{limit} has a default"
    # Compose v1 passes an interpolated pids_limit on as a string, which Docker refuses.
    assert isinstance(spec["pids_limit"], int)
    assert spec["pids_limit"] >= 128
    test = spec["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "/opt/socketlab/src/socketlab/healthcheck.sh"]
    assert "socketlab" not in test[3:], "no Python interpreter per check"


def test_the_server_healthcheck_says_hello() -> None:
    assert SERVICES["server"]["healthcheck"]["test"][3:6] == ["hello", "127.0.0.1", "4571"]
