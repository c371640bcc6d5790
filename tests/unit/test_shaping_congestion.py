"""TCP congestion control: names, the per-route steps (run against a fake ip), state parsing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.shaping.builders import Step, render_script
from lab.shaping.congestion import (
    KNOWN_ALGORITHMS,
    CongestionState,
    check_available,
    congestion_steps,
    congestion_sysctls,
    parse_congestion,
    parse_congestion_list,
    parse_state,
)
from lab.shaping.errors import ShapingError, SpecError

ROUTES = (
    "default via 172.21.0.1 dev eth0 \n"
    "172.21.0.0/16 dev eth0 proto kernel scope link src 172.21.0.2 congctl lock bbr \n"
)
FAKE_IP = """#!/bin/sh
if [ "$*" = "-o route show table main" ]; then printf '%s' "$ROUTES"; exit 0; fi
echo "$*" >> "$LOG"
[ -z "$FAIL" ]
"""


@pytest.mark.parametrize("name", ["cubic", "bbr", "reno", " CUBIC "])
def test_known_names(name: str) -> None:
    assert parse_congestion(name) == name.strip().lower()


@pytest.mark.parametrize("name", ["cubicc", "", "bbr2; reboot", "a" * 20])
def test_unknown_names_list_the_known_ones(name: str) -> None:
    with pytest.raises(
        SpecError,
        match=r"^--congestion: .* is not a TCP congestion control \(one of: reno, cubic, bbr",
    ):
        parse_congestion(name)


def test_sweep_lists() -> None:
    assert parse_congestion_list("cubic,bbr,cubic") == ("cubic", "bbr")
    with pytest.raises(SpecError, match="at least one"):
        parse_congestion_list(",")
    assert set(KNOWN_ALGORITHMS) >= {"reno", "cubic", "bbr"}


def test_check_available() -> None:
    check_available("cubic", "reno bbr cubic\n", service="server")
    with pytest.raises(
        ShapingError,
        match=r"^client: TCP congestion control 'vegas' is not available in this kernel \(available: reno bbr cubic\)",
    ):
        check_available("vegas", "reno bbr cubic", service="client")


def run_steps(
    tmp_path: Path, steps: list[Step], *, fail: bool = False
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = tmp_path / "ip"
    fake.write_text(FAKE_IP)
    fake.chmod(0o755)
    (tmp_path / "available").write_text("reno bbr cubic\n")
    log = tmp_path / "log"
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "ROUTES": ROUTES,
        "LOG": str(log),
    }
    if fail:
        env["FAIL"] = "1"
    result = subprocess.run(
        ["sh", "-c", render_script(steps)], env=env, capture_output=True, text=True, check=False
    )
    return result, log.read_text().splitlines() if log.exists() else []


def test_steps_set_the_algorithm_on_every_route(tmp_path: Path) -> None:
    result, calls = run_steps(
        tmp_path, congestion_steps("cubic", available_file=str(tmp_path / "available"))
    )
    assert result.returncode == 0, result.stderr
    assert calls == [
        "route change default via 172.21.0.1 dev eth0 congctl cubic",
        # an earlier congctl (locked or not) is replaced, the rest of the route kept
        "route change 172.21.0.0/16 dev eth0 proto kernel scope link src 172.21.0.2 congctl cubic",
    ]


def test_none_goes_back_to_the_namespace_default(tmp_path: Path) -> None:
    result, calls = run_steps(tmp_path, congestion_steps(None))
    assert result.returncode == 0, result.stderr
    assert calls == [
        "route change default via 172.21.0.1 dev eth0",
        "route change 172.21.0.0/16 dev eth0 proto kernel scope link src 172.21.0.2",
    ]


def test_an_unavailable_algorithm_stops_before_any_route(tmp_path: Path) -> None:
    result, calls = run_steps(
        tmp_path, congestion_steps("vegas", available_file=str(tmp_path / "available"))
    )
    assert result.returncode != 0
    assert (
        "TCP congestion control vegas is not available (available: reno bbr cubic)" in result.stderr
    )
    assert calls == []


def test_a_failing_route_change_fails_the_script(tmp_path: Path) -> None:
    result, calls = run_steps(
        tmp_path, congestion_steps("cubic", available_file=str(tmp_path / "available")), fail=True
    )
    assert result.returncode != 0
    assert len(calls) == 1  # stopped at the first failure


def test_steps_refuse_bad_names_before_building() -> None:
    with pytest.raises(SpecError):
        congestion_steps("cubic; rm -rf /")


def test_state_reads_default_and_routes() -> None:
    text = "default=bbr\navailable=reno bbr cubic\nroute=default via 172.21.0.1 dev eth0 congctl cubic \nroute=172.21.0.0/16 dev eth0 scope link congctl lock cubic\n"
    state = parse_state(text)
    assert state == CongestionState(
        default="bbr", available=("reno", "bbr", "cubic"), routes=("cubic", "cubic")
    )
    assert state.in_use == "cubic"
    assert (
        parse_state("default=bbr\navailable=reno bbr\nroute=default via 1.2.3.4 dev eth0\n").in_use
        == "bbr"
    )
    mixed = CongestionState(default="bbr", available=(), routes=("cubic", None))
    assert mixed.in_use == "mixed: bbr, cubic"
    with pytest.raises(ShapingError, match="could not read"):
        parse_state("cat: No such file\n")


def test_sysctls_for_compose() -> None:
    assert congestion_sysctls("bbr") == {"net.ipv4.tcp_congestion_control": "bbr"}
