"""The truth table behind `lab status`: helpers compared with rules in force."""

from __future__ import annotations

import dataclasses

from lab.shaping.builders import Engine, RulesInForce, needs_verdict_loop
from lab.shaping.helpers import Helper
from lab.shaping.spec import spec_from_options
from lab.shaping.status import evaluate_links
from socketlab.shaper.nfnetlink import QueueStats

CLIENT, SERVER, LISTENER = "172.20.0.2", "172.20.0.3", "172.20.0.4"
NAMES = {CLIENT: "client", SERVER: "server", LISTENER: "udp-listener"}


def helper(options: dict[str, str], *, state: str = "running", engine: Engine = Engine.NFQUEUE,
           started: str = "2026-01-01T10:00:00Z") -> Helper:  # fmt: skip
    link = spec_from_options(options)
    return Helper(
        name="lab-shaper-client-server",
        source="client",
        dest="server",
        source_ip=CLIENT,
        dest_ip=SERVER,
        netns="server" if needs_verdict_loop(link, engine) else "client",
        spec=link,
        engine=engine,
        queue=1,
        dev="eth0",
        state=state,
        started_at=started,
        container=None,
    )


def evaluate(
    helpers: list[Helper],
    in_client: RulesInForce,
    in_server: RulesInForce | None = None,
    **started: str,
) -> list[dict[str, str]]:
    rules = {
        "client": in_client,
        "server": in_server or RulesInForce(),
        "udp-listener": RulesInForce(),
    }
    states = evaluate_links(helpers, rules, NAMES, source_started=started)
    return [state.as_row() for state in states]


def test_active_link() -> None:
    rows = evaluate([helper({"delay": "40ms"})], RulesInForce(), RulesInForce(queues={CLIENT: 1}))
    assert rows == [
        {
            "link": "client -> server",
            "shaping": "delay=40ms",
            "engine": "nfqueue",
            "state": "active",
            "queue drops": "-",
            "helper": "lab-shaper-client-server: running",
        }
    ]


def test_queue_drops_are_the_kernels_counters_of_the_links_queue() -> None:
    stats = QueueStats(queue=1, port=77, waiting=3, copy_mode=1, copy_range=0,
                       queue_dropped=12, user_dropped=4, last_id=9000)  # fmt: skip
    other = dataclasses.replace(stats, queue=2, queue_dropped=99)
    in_server = RulesInForce(queues={CLIENT: 1}, queue_stats={1: stats, 2: other})
    [row] = evaluate([helper({"delay": "40ms"})], RulesInForce(), in_server)
    assert row["queue drops"] == "queue full 12, socket full 4"
    [unbound] = evaluate([helper({"delay": "40ms"})], RulesInForce(), RulesInForce())
    assert unbound["queue drops"] == "-"
    rate_only = helper({"rate": "1mbit"})
    counters_only = RulesInForce(queue_stats={1: stats})
    [no_loop] = evaluate([rate_only], RulesInForce(classes={SERVER: 1}), counters_only)
    assert no_loop["queue drops"] == "-"


def test_dead_verdict_loop_is_reported_as_failing_open() -> None:
    rows = evaluate(
        [helper({"delay": "40ms"}, state="exited")],
        RulesInForce(),
        RulesInForce(queues={CLIENT: 1}),
    )
    assert "fails open" in rows[0]["state"]
    assert "helper dead" in rows[0]["helper"]


def test_missing_rules_are_reported() -> None:
    rows = evaluate([helper({"delay": "40ms", "rate": "1mbit"})], RulesInForce())
    assert "NFQUEUE rule missing" in rows[0]["state"]
    assert "tc class/filter missing" in rows[0]["state"]


def test_rate_only_and_netem_links_do_not_need_a_live_helper() -> None:
    rate_only = helper({"rate": "1mbit"}, state="exited")
    assert evaluate([rate_only], RulesInForce(classes={SERVER: 1}))[0]["state"] == "active"
    netem = helper({"delay": "5ms"}, state="exited", engine=Engine.NETEM)
    assert evaluate([netem], RulesInForce(classes={SERVER: 1}))[0]["state"] == "active"


def test_source_restarted_after_shaping() -> None:
    rows = evaluate(
        [helper({"delay": "40ms"})],
        RulesInForce(),
        RulesInForce(queues={CLIENT: 1}),
        server="2026-01-01T11:00:00Z",
    )
    assert "restarted after shaping" in rows[0]["state"]


def test_rules_without_a_helper_are_orphans() -> None:
    rows = evaluate([], RulesInForce(queues={SERVER: 3}, classes={LISTENER: 4}))
    assert [row["link"] for row in rows] == ["server -> client", "client -> udp-listener"]
    assert all("orphan" in row["state"] for row in rows)


def test_partitions_both_ways_and_half() -> None:
    rules = {
        "client": RulesInForce(drops=frozenset({SERVER, LISTENER})),
        "server": RulesInForce(drops=frozenset({CLIENT})),
        "udp-listener": RulesInForce(),
    }
    rows = [s.as_row() for s in evaluate_links([], rules, NAMES, source_started={})]
    assert [(row["link"], row["state"]) for row in rows] == [
        ("client <-> server", "blocked both ways"),
        ("client <-> udp-listener", "half: only udp-listener -> client blocked"),
    ]
