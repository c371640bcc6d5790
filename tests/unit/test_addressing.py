"""The one addressing syntax: ``client``, ``client.2``, ``client.2:/path``."""

from __future__ import annotations

import pytest

from lab.addressing import (
    Target,
    UnknownTarget,
    display_name,
    is_file_target,
    parse_file_target,
    parse_target,
    select_replicas,
)
from lab.errors import ServiceNotFound

SERVICES = ("client", "server", "udp-listener", "web.v2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("client", Target("client"), id="bare"),
        pytest.param("client.2", Target("client", 2), id="replica"),
        pytest.param(" client.10 ", Target("client", 10), id="spaces-and-two-digits"),
        pytest.param("udp-listener.1", Target("udp-listener", 1), id="dash"),
        pytest.param("web.v2", Target("web.v2"), id="a-dot-in-the-service-name"),
        pytest.param("web.v2.3", Target("web.v2", 3), id="replica-of-a-dotted-name"),
    ],
)
def test_names(text: str, expected: Target) -> None:
    assert parse_target(text, SERVICES) == expected


def test_a_service_named_like_a_replica_wins_over_the_replica() -> None:
    assert parse_target("client.2", ("client", "client.2")) == Target("client.2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "clinet", r"no service 'clinet' in the lab \(services: client, server", id="typo"
        ),
        pytest.param("client.0", r"numbered from 1 \(client.1\)", id="zero"),
        pytest.param("nope.2", r"no service 'nope.2'", id="replica-of-nothing"),
        pytest.param("client.x", r"no service 'client.x'", id="not-a-number"),
        pytest.param("", r"no service ''", id="empty"),
    ],
)
def test_unknown_names_list_what_exists(text: str, message: str) -> None:
    with pytest.raises(UnknownTarget, match=message):
        parse_target(text, SERVICES)


def test_an_unknown_name_is_a_service_not_found_error() -> None:
    with pytest.raises(ServiceNotFound):
        parse_target("x", SERVICES)


def test_str_round_trips() -> None:
    for text in ("client", "client.3", "web.v2.1"):
        assert str(parse_target(text, SERVICES)) == text


def test_file_targets() -> None:
    assert parse_file_target("client.2:/tmp/x.bin", SERVICES) == (Target("client", 2), "/tmp/x.bin")
    assert parse_file_target("server:/a:b", SERVICES) == (Target("server"), "/a:b")
    with pytest.raises(UnknownTarget, match="must be absolute"):
        parse_file_target("client:tmp/x", SERVICES)
    with pytest.raises(UnknownTarget, match=r"is not SERVICE\[.N\]:PATH"):
        parse_file_target("client", SERVICES)
    with pytest.raises(UnknownTarget, match="no service 'ghost'"):
        parse_file_target("ghost:/x", SERVICES)


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        pytest.param("client:/tmp/x", True, id="service"),
        pytest.param("client.3:/tmp/x", True, id="replica"),
        pytest.param("./client:/x", False, id="a-host-path-with-a-colon"),
        pytest.param("notes.txt", False, id="host-file"),
        pytest.param("ghost:/x", False, id="no-such-service-is-a-host-path"),
    ],
)
def test_which_side_of_a_copy_is_the_container(text: str, inside: bool) -> None:
    assert is_file_target(text, SERVICES) is inside


def test_a_bare_service_selects_every_replica_and_a_replica_itself() -> None:
    running = {"client": [1, 2, 3], "server": [1]}
    assert select_replicas(Target("client"), running) == (1, 2, 3)
    assert select_replicas(Target("client", 2), running) == (2,)


def test_a_replica_that_does_not_run_names_those_that_do() -> None:
    with pytest.raises(UnknownTarget, match=r"no replica client.4 \(running: client.1, client.2\)"):
        select_replicas(Target("client", 4), {"client": [1, 2]})
    with pytest.raises(UnknownTarget, match="has no container"):
        select_replicas(Target("server"), {"client": [1]})


def test_display_names() -> None:
    assert display_name("client", 1, 1) == "client"
    assert display_name("client", 2, 3) == "client.2"
    assert display_name("client", 1, 3) == "client.1"
