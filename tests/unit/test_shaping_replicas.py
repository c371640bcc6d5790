"""Shaping replicas through the shared fake lab: a bare service shapes every replica's link,
``client.2`` only its own; helpers are named and labelled with replica and network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.addressing import UnknownTarget
from lab.interface import ExecResult
from lab.shaping import ShapingError, partition, shape, unshape
from lab.shaping.builders import (
    LABEL_DEST,
    LABEL_DEST_REPLICA,
    LABEL_NETWORK,
    LABEL_SOURCE,
    LABEL_SOURCE_REPLICA,
)
from lab.shaping.helpers import SHAPER_ROLE, helper_name
from lab.shaping.spec import LinkSpec
from lab.topology import NoIPv6


def namespace_shell(lab: Any, service: str, argv: list[str]) -> ExecResult:
    """Namespaces with netem and a route via eth0; every rule change succeeds."""
    script = argv[2]
    out = "route=10.0.0.2 dev eth0 src 10.0.0.3\nnetem=ok\n" if "route get" in script else ""
    return ExecResult(exit_code=0, stdout=out, stderr="")


@pytest.fixture
def lab(tmp_path: Path, fake_lab: Any) -> Any:
    # the shared fake, with three clients
    fake = type(fake_lab)(tmp_path, services=("server", "client"), replicas={"client": 3})
    fake.commands = namespace_shell
    return fake


def test_the_names_of_replicas(lab: Any) -> None:
    topology = lab.topology()
    assert [i.name for i in topology.instances] == ["server", "client.1", "client.2", "client.3"]
    assert topology.target_names() == (
        "server",
        "client",
        "server.1",
        "client.1",
        "client.2",
        "client.3",
    )


def test_a_bare_service_shapes_the_link_of_every_replica(lab: Any) -> None:
    result = shape(lab, "client", "server", LinkSpec(delay=0.1), engine="netem")

    assert [(r.source, r.dest) for r in result.shaped] == [
        ("client.1", "server"),
        ("client.2", "server"),
        ("client.3", "server"),
    ]
    assert [s["service"] for s in lab.started] == ["client.1", "client.2", "client.3"]
    assert [s["name"] for s in lab.started] == [
        helper_name("fake", f"client.{n}", "server") for n in (1, 2, 3)
    ]
    labels = [s["labels"] for s in lab.started]
    assert [(x[LABEL_SOURCE], x[LABEL_SOURCE_REPLICA]) for x in labels] == [
        ("client", "1"),
        ("client", "2"),
        ("client", "3"),
    ]
    assert {(x[LABEL_DEST], x[LABEL_DEST_REPLICA], x[LABEL_NETWORK]) for x in labels} == {
        ("server", "1", "lab")
    }
    # three links, three queue numbers
    assert len({r.queue for r in result.shaped}) == 3


def test_one_replica_is_shaped_alone_and_unshaped_alone(lab: Any) -> None:
    shape(lab, "client", "server", LinkSpec(delay=0.01), engine="netem")
    result = shape(lab, "client.2", "server", LinkSpec(delay=0.1), engine="netem")

    assert [(r.source, r.dest) for r in result.shaped] == [("client.2", "server")]
    # the earlier shaping of client.2's link was replaced, the others kept
    live = sorted(h.name for h in lab.helpers(SHAPER_ROLE))
    assert live == [helper_name("fake", f"client.{n}", "server") for n in (1, 2, 3)]
    assert unshape(lab, "client.2", "server") == ["client.2 -> server"]
    assert sorted(h.name for h in lab.helpers(SHAPER_ROLE)) == [
        helper_name("fake", "client.1", "server"),
        helper_name("fake", "client.3", "server"),
    ]
    assert unshape(lab, "client", "server") == ["client.1 -> server", "client.3 -> server"]


def test_a_replica_to_its_own_service_leaves_itself_out(lab: Any) -> None:
    result = shape(lab, "client.1", "client", LinkSpec(delay=0.01), engine="netem")
    assert [(r.source, r.dest) for r in result.shaped] == [
        ("client.1", "client.2"),
        ("client.1", "client.3"),
    ]


def test_a_partition_of_a_bare_service_cuts_every_replica(lab: Any) -> None:
    pairs = partition(lab, "client", "server")
    assert pairs == ["client.1 <-> server", "client.2 <-> server", "client.3 <-> server"]
    cut = [(service, argv[2]) for service, argv, _ in lab.netkit_runs]
    # one script per namespace, however many peers it drops
    assert [service for service, _ in cut] == ["client.1", "server", "client.2", "client.3"]
    # each replica drops the server; the server drops each replica
    assert all("10.0.0.2/32 -j DROP" in script for service, script in cut if service != "server")
    (server_drops,) = [script for service, script in cut if service == "server"]
    assert all(f"10.0.0.{n}/32 -j DROP" in server_drops for n in (3, 4, 5))
    assert server_drops.count("-N SOCKETLAB") == 1


def test_bad_names_and_families_are_errors_before_anything_runs(lab: Any) -> None:
    with pytest.raises(UnknownTarget, match=r"no replica client.4 \(running: client.1, client.2"):
        shape(lab, "client.4", "server", LinkSpec(delay=0.01))
    with pytest.raises(NoIPv6, match="network 'lab' has no IPv6"):
        shape(lab, "client", "server", LinkSpec(delay=0.01), family=6)
    with pytest.raises(ShapingError, match="two different services"):
        shape(lab, "server", "server", LinkSpec(delay=0.01))
    assert lab.netkit_runs == []
    assert lab.started == []
