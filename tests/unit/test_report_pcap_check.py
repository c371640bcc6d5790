"""The ``pcap`` check kind: schema and plan errors, which links it needs, its verdicts."""

from __future__ import annotations

import pytest

from lab.report.metrics import capture_point
from lab.scenario.checks import Observations, PcapFacts, check_pcap, evaluate
from lab.scenario.errors import ScenarioError
from lab.scenario.loader import parse_text
from lab.scenario.plan import Check, CheckKind, Scenario, build_scenario, pcap_links

FILE = "scenarios/p.yaml"
SERVICES = ("server", "client", "udp-listener")
BASE = """\
name: p
description: pcap checks
steps:
  - {name: fetch, service: client, run: ["true"], timeout: 5}
checks:
"""


def build(checks: str) -> Scenario:
    return build_scenario(parse_text(BASE + checks, file=FILE), services=SERVICES)


def problems(checks: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        build(checks)
    return caught.value.problems


def test_a_pcap_check_is_planned_with_its_link_and_metric() -> None:
    scenario = build(
        '  - {kind: pcap, link: [server, client], metric: tcp.retransmissions, op: ">", value: 0}\n'
        "  - {kind: pcap, name: fast, link: [client, server], metric: tcp.rtt_p50,"
        " op: between, value: [1, 20]}\n"
        '  - {kind: pcap, link: [server, client], metric: bytes, op: ">=", value: 400000}\n'
    )
    first = scenario.checks[1]  # after the implicit exit check of "fetch"
    assert first.kind is CheckKind.PCAP
    assert (first.link, first.metric, first.op, first.value) == (
        ("server", "client"),
        "tcp.retransmissions",
        ">",
        0,
    )
    assert first.name == "pcap server -> client: tcp.retransmissions > 0"
    assert scenario.checks[2].name == "fast"
    assert pcap_links(scenario) == (("server", "client"), ("client", "server"))


def test_a_scenario_without_pcap_checks_needs_no_capture() -> None:
    scenario = build("  - {kind: exit_code, step: fetch, equals: 0}\n")
    assert pcap_links(scenario) == ()


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        pytest.param(
            '{kind: pcap, link: [server, client], metric: tcp.bogus, op: ">", value: 0}',
            f"{FILE}:6: checks[0].metric: 'tcp.bogus' is not one of: tcp.retransmissions, "
            "tcp.max_segment, tcp.rtt_p50, tcp.rtt_p99, tcp.zero_windows, udp.lost, "
            "udp.reordered, bytes",
            id="unknown-metric",
        ),
        pytest.param(
            '{kind: pcap, link: [server, client], metric: bytes, op: "=>", value: 0}',
            f"{FILE}:6: checks[0].op: '=>' is not one of: ==, !=, <=, >=, <, >, between",
            id="bad-op",
        ),
        pytest.param(
            '{kind: pcap, link: [server, client], metric: bytes, op: "==", value: lots}',
            f"{FILE}:6: checks[0].value: 'lots' is not a number or a list",
            id="text-value",
        ),
        pytest.param(
            "{kind: pcap, link: [server, client], metric: bytes, op: between, value: [5, 1]}",
            f"{FILE}:6: checks[0].value: low 5 is above high 1",
            id="between-backwards",
        ),
        pytest.param(
            '{kind: pcap, link: [server, client], metric: bytes, op: ">", value: [1, 2]}',
            f"{FILE}:6: checks[0].value: '>' needs a number, not [1, 2]",
            id="list-for-ordering",
        ),
        pytest.param(
            '{kind: pcap, link: [server], metric: bytes, op: ">", value: 1}',
            f"{FILE}:6: checks[0].link: needs at least 2 item(s)",
            id="one-service",
        ),
        pytest.param(
            '{kind: pcap, link: [server, server], metric: bytes, op: ">", value: 1}',
            f"{FILE}:6: checks[0].link: a link needs two different services (got 'server' twice)",
            id="same-service",
        ),
        pytest.param(
            '{kind: pcap, link: [server, nowhere], metric: bytes, op: ">", value: 1}',
            f"{FILE}:6: checks[0].link[1]: no service 'nowhere' in the lab "
            "(services: server, client, udp-listener)",
            id="unknown-service",
        ),
        pytest.param(
            "{kind: pcap, link: [server, client], metric: bytes, value: 1}",
            f"{FILE}:6: checks[0]: missing required key 'op'",
            id="missing-op",
        ),
        pytest.param(
            '{kind: pcap, link: [server, client], metric: bytes, op: ">", value: 1, path: x}',
            f"{FILE}:6: checks[0].path: unknown key (known: kind, link, metric, name, op, value)",
            id="unknown-key",
        ),
    ],
)
def test_bad_pcap_checks_are_named_with_file_and_line(check: str, expected: str) -> None:
    assert expected in problems(f"  - {check}\n")


def pcap_check(metric: str = "tcp.retransmissions", op: str = ">", value: object = 0) -> Check:
    return Check(
        kind=CheckKind.PCAP,
        name="resent",
        link=("server", "client"),
        metric=metric,
        op=op,
        value=value,
    )


FACTS = PcapFacts(
    link="server -> client",
    metrics={"tcp.retransmissions": 12, "tcp.rtt_p50": 10.25, "tcp.rtt_p99": None, "bytes": 5000},
    file="pcap/large-file.server-to-client.pcap",
    packets=3068,
)


def test_a_holding_metric_passes_with_its_evidence() -> None:
    result = check_pcap(pcap_check(), FACTS)
    assert result.passed
    assert result.kind == "pcap"
    assert result.detail == (
        "tcp.retransmissions = 12 (pcap/large-file.server-to-client.pcap, 3,068 packets)"
    )


def test_a_failing_metric_says_what_was_expected() -> None:
    result = check_pcap(pcap_check(op="==", value=0), FACTS)
    assert not result.passed
    assert result.detail.startswith("tcp.retransmissions = 12, expected == 0 (pcap/")
    between = check_pcap(pcap_check("tcp.rtt_p50", "between", [20, 50]), FACTS)
    assert not between.passed
    assert between.detail.startswith("tcp.rtt_p50 = 10.25 ms, expected between 20 and 50")


def test_a_metric_without_a_value_fails() -> None:
    result = check_pcap(pcap_check("tcp.rtt_p99", "<", 100), FACTS)
    assert not result.passed
    assert result.detail.startswith("tcp.rtt_p99: no value in the capture")


def test_no_capture_or_a_broken_one_fails_and_says_so() -> None:
    missing = evaluate(pcap_check(), Observations())
    assert not missing.passed
    assert missing.detail == (
        "no capture of server -> client (sent) (a pcap check needs its link captured)"
    )
    broken = evaluate(
        pcap_check(),
        Observations(
            pcaps={"server -> client (sent)": PcapFacts(link="server -> client", error="boom")}
        ),
    )
    assert (broken.passed, broken.detail) == (False, "capture of server -> client (sent): boom")


def test_evaluate_finds_the_capture_by_link_and_its_metrics_point() -> None:
    result = evaluate(pcap_check(), Observations(pcaps={"server -> client (sent)": FACTS}))
    assert result.passed
    wrong_way = evaluate(pcap_check(), Observations(pcaps={"client -> server (sent)": FACTS}))
    assert not wrong_way.passed
    # retransmissions are read where they were sent, UDP gaps where they were delivered
    wrong_point = evaluate(
        pcap_check(), Observations(pcaps={"server -> client (delivered)": FACTS})
    )
    assert not wrong_point.passed
    lost = pcap_check("udp.lost", ">", 0)
    udp = PcapFacts(link="server -> client", metrics={"udp.lost": 3}, packets=10)
    assert evaluate(lost, Observations(pcaps={"server -> client (delivered)": udp})).passed


@pytest.mark.parametrize(
    ("metric", "point"),
    [
        pytest.param("tcp.retransmissions", "sent", id="retransmissions-as-sent"),
        pytest.param("tcp.max_segment", "sent", id="segments-as-sent"),
        pytest.param("tcp.zero_windows", "sent", id="zero-windows-as-sent"),
        pytest.param("tcp.rtt_p50", "delivered", id="rtt-both-delays"),
        pytest.param("udp.lost", "delivered", id="gaps-after-the-drop"),
        pytest.param("udp.reordered", "delivered", id="reordering-after-the-delay"),
        pytest.param("bytes", "delivered", id="bytes-delivered"),
    ],
)
def test_every_metric_has_a_capture_point(metric: str, point: str) -> None:
    assert capture_point(metric) == point
