"""UDP across containers: client sends, udp-listener accounts for every datagram.

The seed's lessons, checked on the real lab: datagrams sent while the listener
is down are lost (its first sequence number says so), a restarted sender
starts again from 1 (a new session), plain text from other tools is counted
as foreign, and an unimpaired link loses nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from lab.api import ExecResult, Lab

pytestmark = pytest.mark.integration

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.3)  # polling interval of a deadline-bounded wait


def stats(lab: Lab) -> dict[str, Any]:
    result = lab.exec("client", ["socketlab", "udp-stats"], timeout=30).check("udp-stats")
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def reset(lab: Lab) -> None:
    lab.exec("client", ["socketlab", "udp-stats", "--reset"], timeout=30).check("udp-stats --reset")


def sessions_of(lab: Lab, sender_id: int) -> list[dict[str, Any]]:
    return [s for s in stats(lab)["sessions"] if s["sender_id"] == sender_id]


def send(lab: Lab, *args: str, timeout: float = 120) -> dict[str, Any]:
    result = lab.exec("client", ["socketlab", "udp-send", *args], timeout=timeout)
    return summary(result)


def summary(result: ExecResult) -> dict[str, Any]:
    result.check("udp-send")
    payload: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return payload


def test_ten_thousand_datagrams_unimpaired_are_all_counted(lab: Lab) -> None:
    reset(lab)
    sent = send(lab, "--count", "10000", "--rate", "2000", "--size", "200", "--sender-id", "0x100")
    assert sent["sent"] == 10_000

    def complete() -> dict[str, Any] | None:
        found = sessions_of(lab, 0x100)
        return found[0] if found and found[0]["received"] >= 10_000 else None

    session = wait_for(complete, timeout=30, what="10,000 datagrams at the listener")
    assert len(sessions_of(lab, 0x100)) == 1
    assert {
        name: session[name]
        for name in ("received", "lost", "duplicates", "reordered", "missed_at_start")
    } == {"received": 10_000, "lost": 0, "duplicates": 0, "reordered": 0, "missed_at_start": 0}
    assert (session["first_seq"], session["highest_seq"]) == (1, 10_000)
    assert session["bytes"] == 10_000 * 200
    totals = stats(lab)
    assert totals["kernel"]["RcvbufErrors"] == 0
    assert totals["malformed"] == 0


def test_datagrams_sent_while_listener_is_down_are_lost(lab: Lab) -> None:
    reset(lab)
    sender_id = "0x200"
    results: list[ExecResult] = []
    # 30 s of sending at 100/s: the listener is stopped and started again meanwhile.
    args = ["--count", "3000", "--rate", "100", "--sender-id", sender_id]
    thread = threading.Thread(
        target=lambda: results.append(
            lab.exec("client", ["socketlab", "udp-send", *args], timeout=120)
        ),
        daemon=True,
    )
    thread.start()
    try:
        wait_for(
            lambda: any(s["received"] >= 50 for s in sessions_of(lab, 0x200)),
            timeout=30,
            what="the listener to receive the first datagrams",
        )
        lab.stop("udp-listener")
    finally:
        lab.start("udp-listener")  # never leave the lab without its listener
        lab.wait_healthy(timeout=60)
    # The restarted listener process sees the stream from the middle.
    session = wait_for(
        lambda: (found := sessions_of(lab, 0x200)) and found[0],
        timeout=30,
        what="the restarted listener to see the sender",
    )
    assert session["first_seq"] > 50
    assert session["missed_at_start"] == session["first_seq"] - 1
    logs = lab.logs("udp-listener")
    assert f"first_seq={session['first_seq']} missed_at_start={session['missed_at_start']}" in logs
    thread.join(timeout=120)
    assert results, "the sender finished"
    sent = summary(results[0])
    assert sent["last_seq"] == 3000
    final = wait_for(
        lambda: (found := sessions_of(lab, 0x200)) and found[0]["highest_seq"] == 3000 and found[0],
        timeout=30,
        what="the last datagram at the listener",
    )
    # The loss is all at the start; after the restart the link lost nothing.
    assert final["lost"] == 0
    assert final["received"] == 3000 - final["missed_at_start"]


def test_restarted_sender_starts_from_one_as_a_new_session(lab: Lab) -> None:
    reset(lab)
    for _ in range(2):
        sent = send(lab, "--count", "20", "--rate", "200", "--sender-id", "0x300")
        assert (sent["first_seq"], sent["last_seq"]) == (1, 20)
    sessions = wait_for(
        lambda: (
            (found := sessions_of(lab, 0x300))
            and len(found) == 2
            and all(s["received"] == 20 for s in found)
            and found
        ),
        timeout=20,
        what="two complete sessions of the same sender",
    )
    assert [(s["number"], s["restarted"], s["first_seq"], s["lost"]) for s in sessions] == [
        (1, False, 1, 0),
        (2, True, 1, 0),
    ]
    assert [s["active"] for s in sessions] == [False, True]


def test_socat_text_datagrams_are_counted_as_foreign(lab: Lab) -> None:
    reset(lab)
    listener = lab.ip("udp-listener")
    script = (
        f'for i in 1 2 3; do echo "hello from socat $i" | socat -u - UDP:{listener}:37020; done'
    )
    lab.netkit_run("client", ["sh", "-c", script], timeout=60).check("socat")
    totals = wait_for(
        lambda: (s := stats(lab))["foreign"] >= 3 and s,
        timeout=20,
        what="three foreign datagrams",
    )
    assert totals["foreign"] == 3
    assert totals["malformed"] == 0
    assert totals["sessions"] == []
    client = lab.ip("client")
    assert all(source.startswith(f"{client}:") for source in totals["foreign_sources"])
    assert "event=foreign_datagram" in lab.logs("udp-listener")
    # The listener carries on with datagrams of its own kind.
    send(lab, "--count", "5", "--rate", "100", "--sender-id", "0x400")
    wait_for(
        lambda: (found := sessions_of(lab, 0x400)) and found[0]["received"] == 5,
        timeout=20,
        what="five valid datagrams after the foreign ones",
    )


def test_tcp_vs_udp_table_on_an_unimpaired_link(lab: Lab) -> None:
    result = lab.exec(
        "client",
        ["socketlab", "tcp-vs-udp", "--bytes", "3000000", "--size", "1200", "--json"],
        timeout=120,
    ).check("tcp-vs-udp")
    rows = {row["protocol"]: row for row in json.loads(result.stdout)["rows"]}
    assert rows["tcp"]["bytes_sent"] == rows["udp"]["bytes_sent"] == 3_000_000
    assert rows["tcp"]["bytes_delivered"] == 3_000_000
    assert rows["udp"]["datagrams_sent"] == 2500
    assert 0 < rows["udp"]["bytes_delivered"] <= 3_000_000
    assert rows["tcp"]["goodput_mbit_s"] > 0
    table = lab.exec("client", ["socketlab", "tcp-vs-udp", "--bytes", "120000"], timeout=60)
    assert "goodput Mbit/s" in table.check("tcp-vs-udp table").stdout
