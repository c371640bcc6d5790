"""The lab foundation, across real containers: health, hello, UDP count, RSS, teardown."""

from __future__ import annotations

import re
import uuid

from lab.api import Lab
from lab.waiting import wait_for


def test_all_four_services_are_up_and_healthy(lab: Lab) -> None:
    rows = {row.service: row for row in lab.status()}
    assert set(rows) == {"server", "client", "udp-listener", "rss-poller"}
    for row in rows.values():
        assert (row.state, row.health) == ("running", "healthy"), row
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", row.ip), row
    assert len({row.ip for row in rows.values()}) == 4, "each service has its own address"


def test_client_gets_hello_from_server_across_the_network(lab: Lab) -> None:
    result = lab.exec("client", ["socketlab", "client", "hello"], timeout=30)
    assert result.ok, result.stderr
    assert "Hello" in result.stdout
    # The server saw the client's lab-network address, not loopback: the
    # greeting crossed the network between two containers.
    client_ip = lab.ip("client")
    assert client_ip != lab.ip("server")
    assert not client_ip.startswith("127.")
    wait_for(
        lambda: client_ip in lab.logs("server"),
        timeout=10,
        what="the server's log line about the client's connection",
    )


def udp_datagram_total(lab: Lab) -> int:
    fetch = (
        "import json, urllib.request;"
        "print(json.load(urllib.request.urlopen('http://udp-listener:37021/stats', timeout=5))"
        "['datagrams'])"
    )
    result = lab.exec("client", ["python3", "-c", fetch], timeout=20).check("reading UDP stats")
    return int(result.stdout.strip())


def test_udp_listener_counts_datagrams_sent_from_client(lab: Lab) -> None:
    before = udp_datagram_total(lab)
    sent = lab.exec(
        "client", ["socketlab", "udp-send", "--count", "25", "--interval", "0.01"], timeout=60
    )
    assert sent.ok, sent.stderr
    total = wait_for(
        lambda: (n := udp_datagram_total(lab)) >= before + 25 and n,
        timeout=15,
        what="the listener to count 25 more datagrams",
    )
    assert total == before + 25


def test_rss_poller_prints_entries_of_the_servers_feed(lab: Lab) -> None:
    fetch = (
        "import urllib.request, feedparser;"
        "feed = feedparser.parse(urllib.request.urlopen("
        "'http://server:8080/feeds/news.rss', timeout=5).read());"
        "print('\\n'.join(e.title for e in feed.entries))"
    )
    titles = lab.exec("client", ["python3", "-c", fetch], timeout=30).check("fetching the feed")
    expected = [t for t in titles.stdout.splitlines() if t]
    assert expected, "the server's feed has entries"
    wait_for(
        lambda: all(title in lab.logs("rss-poller") for title in expected),
        timeout=30,
        what=f"the poller to print {expected}",
    )


def test_down_leaves_nothing_labelled_behind() -> None:
    scratch = Lab(project=f"socketlab-down-{uuid.uuid4().hex[:8]}")
    try:
        scratch.up(timeout=240)
        # a helper container started outside Compose, as shaping does
        helper = scratch.start_helper("client", ["sleep", "300"], role="test-helper", ready="")
        assert [h.name for h in scratch.helpers("test-helper")] == [helper.name]
        assert helper.name in scratch.leftovers()["containers"], "it carries the project label"
        assert scratch.leftovers()["containers"], "the lab is running before down"
    finally:
        scratch.down()
    assert scratch.leftovers() == {"containers": [], "networks": [], "volumes": []}
    compose_left = scratch.docker.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={scratch.project}"}
    )
    assert compose_left == []
