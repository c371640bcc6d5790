"""Per-sender accounting: gaps, reorder, duplicates, restarts, jitter, kernel counters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from socketlab.udp.accounting import (
    Accounting,
    Rejected,
    Session,
    SessionStarted,
    kernel_delta,
    parse_udp_snmp,
)
from socketlab.udp.datagram import Kind, encode

MS = 1_000_000
HOST = "10.0.0.5"


def feed(
    accounting: Accounting,
    seqs: list[int],
    *,
    sender_id: int = 1,
    port: int = 5000,
    sent_at: int = 0,
) -> None:
    """Deliver ``seqs`` in the given order; datagram n was sent at ``sent_at + n`` ms."""
    for arrival, seq in enumerate(seqs):
        data = encode(sender_id=sender_id, seq=seq, sent_ns=(sent_at + seq) * MS, size=64)
        accounting.receive(data, host=HOST, port=port, arrival_ns=(sent_at + 1000 + arrival) * MS)


def only_session(accounting: Accounting) -> dict[str, Any]:
    sessions = accounting.snapshot()["sessions"]
    assert len(sessions) == 1
    session: dict[str, Any] = sessions[0]
    return session


@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        pytest.param(
            [1, 2, 3, 4, 5],
            {"received": 5, "lost": 0, "reordered": 0, "duplicates": 0, "first_seq": 1},
            id="in-order",
        ),
        pytest.param(
            [1, 2, 5, 6],
            {"received": 4, "lost": 2, "reordered": 0, "duplicates": 0, "highest_seq": 6},
            id="gap",
        ),
        pytest.param(
            [1, 3, 2, 4],
            {"received": 4, "lost": 0, "reordered": 1, "duplicates": 0},
            id="swap-fills-gap",
        ),
        pytest.param(
            [1, 2, 2, 3, 1],
            {"received": 5, "lost": 0, "reordered": 0, "duplicates": 2},
            id="duplicates",
        ),
        pytest.param(
            [1, 5, 3, 3, 6],
            {"received": 5, "lost": 2, "reordered": 1, "duplicates": 1, "expected": 6},
            id="mixed",
        ),
        pytest.param(
            [4, 5, 6],
            {"first_seq": 4, "missed_at_start": 3, "lost": 0, "received": 3},
            id="listener-started-late",
        ),
        pytest.param(
            [3, 1, 2, 4],
            {"first_seq": 1, "missed_at_start": 0, "lost": 0, "reordered": 2},
            id="early-datagram-overtaken",
        ),
    ],
)
def test_sequence_accounting(seqs: list[int], expected: dict[str, int]) -> None:
    accounting = Accounting()
    feed(accounting, seqs)
    session = only_session(accounting)
    for name, value in expected.items():
        assert session[name] == value, name


def test_restarted_sender_is_a_new_session() -> None:
    accounting = Accounting()
    feed(accounting, [1, 2, 3, 4])
    feed(accounting, [1, 2], sent_at=10_000)  # same id and port, sent later, seq back to 1
    sessions = accounting.snapshot()["sessions"]
    assert [(s["number"], s["received"], s["active"]) for s in sessions] == [
        (1, 4, False),
        (2, 2, True),
    ]
    assert sessions[1]["restarted"] is True
    assert sessions[1]["lost"] == 0


def test_new_source_port_is_a_new_session_even_if_seq_continues() -> None:
    accounting = Accounting()
    feed(accounting, [1, 2], port=5000)
    feed(accounting, [3, 4], port=5001, sent_at=10_000)
    assert [s["source"] for s in accounting.snapshot()["sessions"]] == [
        f"{HOST}:5000",
        f"{HOST}:5001",
    ]


def test_late_duplicate_of_seq_one_is_not_a_restart() -> None:
    accounting = Accounting()
    feed(accounting, [1, 2, 3, 1])  # the second 1 was sent at the original time
    assert only_session(accounting)["duplicates"] == 1


def test_senders_are_separate_sessions() -> None:
    accounting = Accounting()
    feed(accounting, [1, 2], sender_id=1)
    feed(accounting, [1, 3], sender_id=2)
    snapshot = accounting.snapshot()
    assert [s["lost"] for s in snapshot["sessions"]] == [0, 1]
    assert snapshot["lost"] == 1
    assert snapshot["valid"] == 4


def test_session_started_events() -> None:
    accounting = Accounting()
    first = accounting.receive(
        encode(sender_id=9, seq=3, sent_ns=MS), host=HOST, port=1, arrival_ns=2 * MS
    )
    again = accounting.receive(
        encode(sender_id=9, seq=4, sent_ns=2 * MS), host=HOST, port=1, arrival_ns=3 * MS
    )
    assert isinstance(first, SessionStarted)
    assert (first.first_seq, first.restarted) == (3, False)
    assert again is None


def test_rfc3550_jitter_on_known_sequence() -> None:
    # Sent every 20 ms; transit alternates 10 ms / 15 ms so |D| = 5 ms each time.
    accounting = Accounting()
    for seq, (sent, arrived) in enumerate([(0, 10), (20, 35), (40, 50), (60, 75)], start=1):
        accounting.receive(
            encode(sender_id=1, seq=seq, sent_ns=sent * MS),
            host=HOST,
            port=1,
            arrival_ns=arrived * MS,
        )
    session = only_session(accounting)
    jitter = 0.0
    for _ in range(3):
        jitter += (5.0 - jitter) / 16
    assert jitter == pytest.approx(0.880126953125)
    assert session["jitter_ms"] == pytest.approx(jitter)
    assert session["transit_ms_mean"] == pytest.approx(12.5)
    assert session["transit_ms_max"] == pytest.approx(15.0)


def test_constant_transit_has_zero_jitter() -> None:
    accounting = Accounting()
    feed(accounting, list(range(1, 50)))
    # feed() spaces arrivals 1 ms apart and sends 1 ms apart: constant transit.
    assert only_session(accounting)["jitter_ms"] == 0.0


def test_foreign_and_malformed_are_counted_and_reported_once_per_source() -> None:
    accounting = Accounting()
    events = [
        accounting.receive(b"hello from socat\n", host=HOST, port=7, arrival_ns=0),
        accounting.receive(b"again\n", host=HOST, port=7, arrival_ns=0),
        accounting.receive(
            encode(sender_id=1, seq=1, sent_ns=0)[:-3], host=HOST, port=8, arrival_ns=0
        ),
    ]
    assert isinstance(events[0], Rejected)
    assert events[0].kind is Kind.FOREIGN
    assert events[1] is None
    assert isinstance(events[2], Rejected)
    assert events[2].kind is Kind.MALFORMED
    snapshot = accounting.snapshot()
    assert (snapshot["datagrams"], snapshot["foreign"], snapshot["malformed"]) == (3, 2, 1)
    assert snapshot["foreign_sources"] == {f"{HOST}:7": 2}
    assert snapshot["sessions"] == []


def test_gap_beyond_window_is_counted_lost_without_tracking() -> None:
    accounting = Accounting(window=10)
    feed(accounting, [1, 100, 101])
    session = only_session(accounting)
    assert session["lost"] == 98
    feed(accounting, [50])  # older than anything tracked: late, loss unchanged
    session = only_session(accounting)
    assert (session["lost"], session["late"]) == (98, 1)


def test_sessions_are_bounded_and_totals_kept() -> None:
    accounting = Accounting(max_sessions=2)
    for sender_id in range(5):
        feed(accounting, [1, 3], sender_id=sender_id)
    snapshot = accounting.snapshot()
    assert len(snapshot["sessions"]) == 2
    assert (snapshot["session_count"], snapshot["lost"], snapshot["valid"]) == (5, 5, 10)


@given(st.lists(st.integers(1, 60), max_size=200))
def test_counters_always_add_up(seqs: list[int]) -> None:
    """Whatever the arrival order: lost + unique received == expected range."""
    accounting = Accounting()
    feed(accounting, seqs)
    sessions = accounting.snapshot()["sessions"]
    if not seqs:
        assert sessions == []
        return
    session = sessions[0]
    unique = session["received"] - session["duplicates"] - session["late"]
    assert unique == len(set(seqs))
    assert session["lost"] + unique == session["expected"]
    assert session["first_seq"] == min(seqs)
    assert session["highest_seq"] == max(seqs)


SNMP = """\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 100
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1000 2 30 40 25 0 1 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
"""


def test_parse_udp_snmp() -> None:
    counters = parse_udp_snmp(SNMP)
    assert counters["RcvbufErrors"] == 25
    assert counters["InErrors"] == 30
    assert "Forwarding" not in counters


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("Udp: InDatagrams NoPorts\n", id="header-only"),
        pytest.param("Udp: InDatagrams NoPorts\nUdp: 1\n", id="short-values"),
        pytest.param("Udp: InDatagrams\nUdp: many\n", id="not-a-number"),
    ],
)
def test_parse_udp_snmp_bad_input_gives_nothing(text: str) -> None:
    assert parse_udp_snmp(text) == {}


def test_kernel_delta() -> None:
    baseline = parse_udp_snmp(SNMP)
    now = dict(baseline, RcvbufErrors=40, InErrors=45)
    delta = kernel_delta(baseline, now)
    assert delta["RcvbufErrors"] == 15
    assert delta["InErrors"] == 15
    assert delta["InDatagrams"] == 0


@given(st.lists(st.binary(max_size=120), max_size=30))
def test_arbitrary_datagrams_never_crash_and_are_all_counted(datagrams: list[bytes]) -> None:
    accounting = Accounting()
    for data in datagrams:
        accounting.receive(data, host=HOST, port=9, arrival_ns=0)
    snapshot = accounting.snapshot()
    assert snapshot["datagrams"] == len(datagrams)
    assert snapshot["valid"] + snapshot["foreign"] + snapshot["malformed"] == len(datagrams)


# --- bounds: what one hostile datagram may cost (issue 20, item 6) ---------------------


class ReferenceSession:
    """The session rules with plain sets: what the bit ring must agree with."""

    def __init__(self, first: int, window: int) -> None:
        self.window = window
        self.first = self.low = first
        self.highest = first - 1
        self.arrived: set[int] = set()
        self.lost_final = self.duplicates = self.reordered = self.late = 0

    def add(self, seq: int) -> None:
        if seq > self.highest:
            new_low = max(self.first, seq - self.window + 1)
            for old in range(self.low, new_low):
                if old not in self.arrived:
                    self.lost_final += 1
                self.arrived.discard(old)
            self.low = max(self.low, new_low)
            self.highest = seq
            self.arrived.add(seq)
        elif seq >= self.low:
            if seq in self.arrived:
                self.duplicates += 1
            else:
                self.arrived.add(seq)
                self.reordered += 1
        elif seq < self.first == self.low and self.highest - seq < self.window:
            self.first = self.low = seq
            self.arrived.add(seq)
            self.reordered += 1
        else:
            self.late += 1

    @property
    def lost(self) -> int:
        return self.lost_final + (self.highest - self.low + 1) - len(self.arrived)


@given(st.lists(st.integers(1, 100), min_size=1, max_size=300), st.sampled_from([8, 16, 24, 64]))
def test_the_bit_ring_agrees_with_the_set_model(seqs: list[int], window: int) -> None:
    accounting = Accounting(window=window)
    feed(accounting, seqs)
    model = ReferenceSession(seqs[0], window)
    for seq in seqs:
        model.add(seq)
    session = only_session(accounting)
    assert (session["lost"], session["duplicates"], session["reordered"], session["late"]) == (
        model.lost,
        model.duplicates,
        model.reordered,
        model.late,
    )
    assert (session["first_seq"], session["highest_seq"]) == (model.first, model.highest)


AGGREGATES = ("valid", "lost", "missed_at_start", "duplicates", "reordered", "late")


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # sender id
            st.one_of(st.integers(1, 200), st.integers(1, 2**64 - 1)),  # seq
            st.integers(0, 2**64 - 1),  # sent_ns
        ),
        max_size=60,
    )
)
def test_no_single_datagram_moves_a_counter_by_more_than_its_bound(
    datagrams: list[tuple[int, int, int]],
) -> None:
    accounting = Accounting(window=64, max_jump=1000, max_sessions=4)
    before = {name: 0 for name in AGGREGATES}
    for sender_id, seq, sent_ns in datagrams:
        data = encode(sender_id=sender_id, seq=seq, sent_ns=sent_ns)
        accounting.receive(data, host=HOST, port=1, arrival_ns=sent_ns)
        snapshot = accounting.snapshot()
        for name in AGGREGATES:
            bound = 1000 if name in {"lost", "missed_at_start"} else 1
            assert abs(snapshot[name] - before[name]) <= bound, name
            before[name] = snapshot[name]
        assert len(accounting.sessions) <= 4
        assert all(len(session.seen) == 64 // 8 for session in accounting.sessions)


def test_a_jump_to_the_last_sequence_number_is_a_new_session_not_a_loss() -> None:
    accounting = Accounting()
    feed(accounting, [1, 2, 3])
    forged = encode(sender_id=1, seq=2**64 - 1, sent_ns=10**12, size=64)
    accounting.receive(forged, host=HOST, port=5000, arrival_ns=10**12)
    snapshot = accounting.snapshot()
    assert snapshot["lost"] == 0
    assert snapshot["missed_at_start"] == 0
    assert snapshot["implausible_starts"] == 1
    assert [(s["number"], s["plausible_start"]) for s in snapshot["sessions"]] == [
        (1, True),
        (2, False),
    ]


def test_memory_per_session_is_one_bit_per_window_slot() -> None:
    accounting = Accounting()
    for sender_id in range(300):
        feed(accounting, [1, 65537], sender_id=sender_id)
    assert len(accounting.sessions) == 256
    assert {len(session.seen) for session in accounting.sessions} == {65536 // 8}
    assert accounting.snapshot()["lost"] == 300 * 65535


def test_a_gap_of_a_whole_window_counts_each_lost_number_once() -> None:
    accounting = Accounting(window=16)
    feed(accounting, [1, 2, 3, 20, 21, 5])  # 4..19 lost; 5 is older than the window now
    session = only_session(accounting)
    assert (session["lost"], session["late"], session["reordered"]) == (16, 1, 0)
    feed(accounting, [22, 30, 25])  # 23, 24, 26..29 missing; 25 fills its gap
    session = only_session(accounting)
    assert (session["lost"], session["reordered"]) == (16 + 6, 1)


@given(
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=400),
    st.sampled_from([8, 16, 64]),
)
def test_the_in_order_fast_path_is_add_for_the_next_number(steps: list[int], window: int) -> None:
    """``add_next`` (taken for the next number, sent later) leaves a session exactly as
    ``add`` does, the window sliding included; gaps go through ``add`` in both."""
    start = {"sender_id": 1, "host": HOST, "port": 1, "number": 1, "first_seq": 1,
             "highest_seq": 0, "max_sent_ns": 0, "first_sent_ns": 0, "first_arrival_ns": 0,
             "last_arrival_ns": 0}  # fmt: skip
    fast, slow = Session(**start, window=window), Session(**start, window=window)
    seq = 0
    for step in steps:
        seq += 1 if step > 8 else step  # mostly the next number, sometimes a gap
        sent, arrival = seq * MS, seq * MS + (seq % 7) * 1000
        if seq == fast.highest_seq + 1:
            fast.add_next(seq, sent, 64, arrival)
        else:
            fast.add(seq, sent, 64, arrival)
        slow.add(seq, sent, 64, arrival)
        assert fast.snapshot(active=True) == slow.snapshot(active=True)
    assert fast.seen == slow.seen
