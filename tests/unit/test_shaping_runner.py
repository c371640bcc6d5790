"""Shaping against the shared fake lab: the helper of a shaped link is started through
``Lab.start_helper`` (role, capabilities, link labels, namespace, readiness) and is
stopped and removed by ``unshape``."""

from __future__ import annotations

from typing import Any

import pytest

from lab.interface import ExecResult
from lab.shaping import ShapingError, shape, unshape
from lab.shaping.builders import LABEL_DEST, LABEL_ENGINE, LABEL_SOURCE, LABEL_SPEC
from lab.shaping.helpers import SHAPER_ROLE, SHAPER_STARTED, helper_name
from lab.shaping.spec import LinkSpec


def namespace_shell(lab: Any, service: str, argv: list[str]) -> ExecResult:
    """A namespace that has netem and a route via eth0; every rule change succeeds."""
    assert argv[:2] == ["sh", "-c"], argv
    script = argv[2]
    out = "route=10.0.0.3 dev eth0 src 10.0.0.2\nnetem=ok\n" if "route get" in script else ""
    return ExecResult(exit_code=0, stdout=out, stderr="")


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    fake_lab.commands = namespace_shell
    return fake_lab


def test_a_netem_link_gets_a_recording_helper_in_the_source_namespace(lab: Any) -> None:
    result = shape(lab, "client", "server", LinkSpec(delay=0.04), engine="netem")

    (started,) = lab.started
    assert started["service"] == "client"  # netem needs no verdict loop: stays with the source
    assert started["role"] == SHAPER_ROLE
    assert set(started["caps"]) == {"NET_ADMIN", "NET_RAW"}
    assert started["name"] == result.helper == helper_name("fake", "client", "server")
    assert started["argv"] == ["socketlab", "idle"]
    assert started["cpu_shares"] is None  # it only idles
    labels = started["labels"]
    assert (labels[LABEL_SOURCE], labels[LABEL_DEST], labels[LABEL_ENGINE]) == (
        "client",
        "server",
        "netem",
    )
    assert labels[LABEL_SPEC] == "delay=40ms"
    # every namespace command had NET_ADMIN, none ran in the service containers
    assert lab.netkit_runs
    assert all(net_admin for _, _, net_admin in lab.netkit_runs)
    assert lab.execs == []


def test_unshape_stops_and_removes_the_helper(lab: Any) -> None:
    shape(lab, "client", "server", LinkSpec(delay=0.04), engine="netem")
    (helper,) = lab.started_helpers

    assert unshape(lab, "client", "server") == ["client -> server"]

    assert helper.calls[-2:] == ["stop", "remove"]
    assert lab.helpers(SHAPER_ROLE) == []


def test_an_nfqueue_link_waits_for_the_verdict_loop_in_the_dest_namespace(lab: Any) -> None:
    lab.queue_helper(stdout=f"{SHAPER_STARTED} queue=1 impairment=loss\n")

    shape(lab, "client", "server", LinkSpec(loss=0.02), engine="nfqueue")

    (started,) = lab.started
    assert started["service"] == "server"
    # the loop's wake-up latency is the link's delay error: it goes first on a busy host
    assert started["cpu_shares"] == lab.config.shaping.helper_cpu_shares == 8192
    # counters every stats_interval (lab watch reads them), then the loop itself
    interval = lab.config.shaping.stats_interval
    assert started["argv"][:4] == [
        "env",
        f"SOCKETLAB_SHAPER_STATS_INTERVAL={interval:g}",
        "socketlab",
        "shaper",
    ]


def test_a_verdict_loop_that_dies_is_a_shaping_error_and_its_helper_is_gone(lab: Any) -> None:
    dead = lab.queue_helper(stderr="netfilterqueue: cannot bind queue 1\n", status="exited")

    with pytest.raises(ShapingError, match="stopped: netfilterqueue: cannot bind queue 1"):
        shape(lab, "client", "server", LinkSpec(loss=0.02), engine="nfqueue")

    assert dead.removed
