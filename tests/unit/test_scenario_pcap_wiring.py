"""``lab run`` with pcap checks, against the shared fake lab: the checked links are captured
where they are delivered, analysed and judged; results.json carries the clock origin and
the addresses; report.html is written, and a report that fails is a warning, not a lost run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pcap_writer import ACK, NFLOG, PSH, SLL2, Conversation, PcapWriter

from lab.interface import ExecResult
from lab.report import page
from lab.report.errors import ReportError
from lab.scenario import capture
from lab.scenario.loader import parse_text
from lab.scenario.plan import Scenario, build_scenario
from lab.scenario.runner import ScenarioRunner
from lab.scenario.session import run_files

SERVICES = ["server", "client", "udp-listener", "rss-poller"]
LISTENING = "tcpdump: listening on any, link-type LINUX_SLL2\n"
LISTENING_NFLOG = "tcpdump: listening on nflog:5401, link-type NFLOG\n"

PCAP_CHECKED = """\
name: pcap-checked
description: a fetch whose packets are judged
steps:
  - {name: fetch, service: client, run: [echo, fetched], timeout: 5}
checks:
  - {kind: pcap, name: losses were repaired, link: [server, client], metric: tcp.retransmissions, op: ">", value: 0}
  - {kind: pcap, link: [server, client], metric: bytes, op: ">", value: 1000}
"""


def transfer(fake_lab: Any, *, resend: bool, linktype: int = SLL2) -> bytes:
    """A server -> client transfer as tcpdump wrote it (SLL2 at the sender, NFLOG frames
    at the receiver)."""
    writer = PcapWriter(linktype=linktype, snaplen=256)
    talk = Conversation(writer, client=fake_lab.ip("client"), server=fake_lab.ip("server"))
    talk.handshake(0.0, 0.02)
    first = talk.send(0.100, "s", 1000)
    talk.send(0.101, "s", 1000)
    if resend:  # the first segment again, long after: a retransmission
        talk.segment(0.300, "s", seq=first, payload=1000, flags=ACK | PSH)
    talk.segment(0.310, "c")
    return bytes(writer)


@pytest.fixture
def lab(fake_lab: Any) -> Any:
    def commands(lab: Any, service: str, argv: list[str]) -> ExecResult:
        if argv[0] == "echo":
            return ExecResult(exit_code=0, stdout=" ".join(argv[1:]) + "\n", stderr="")
        raise AssertionError(f"unexpected command {argv}")

    fake_lab.commands = commands
    return fake_lab


def plan(text: str = PCAP_CHECKED) -> Scenario:
    document = parse_text(text, file="scenarios/pcap-checked.yaml")
    return build_scenario(document, services=SERVICES)


def queue_captures(lab: Any, *, resend: bool = True, sent: bytes | None = None) -> list[Any]:
    """The two helpers PCAP_CHECKED starts: retransmissions as the server sent them,
    bytes as the client got them."""
    at_server = transfer(lab, resend=resend) if sent is None else sent
    return [
        lab.queue_helper(stderr=LISTENING, files={capture.HELPER_PATH: at_server}),
        lab.queue_helper(
            stderr=LISTENING_NFLOG,
            files={capture.HELPER_PATH: transfer(lab, resend=False, linktype=NFLOG)},
        ),
    ]


def run(lab: Any, tmp_path: Path, *, capture_flag: bool = False) -> tuple[Any, list[str]]:
    said: list[str] = []
    runner = ScenarioRunner(lab, folder=tmp_path, progress=said.append, capture=capture_flag)
    return runner.run(plan()), said


@pytest.mark.parametrize(
    ("resend", "passed", "detail"),
    [
        pytest.param(True, True, "tcp.retransmissions = 1 (", id="a-resent-segment-passes"),
        pytest.param(
            False,
            False,
            "tcp.retransmissions = 0, expected > 0 (pcap/pcap-checked.server-to-client.pcap, 6 packets)",
            id="a-clean-transfer-fails-and-says-why",
        ),
    ],
)
def test_a_pcap_check_judges_the_link_as_the_receiver_got_it(
    lab: Any, tmp_path: Path, resend: bool, passed: bool, detail: str
) -> None:
    helpers = queue_captures(lab, resend=resend)

    result, said = run(lab, tmp_path)

    # captured without --capture: as the server sent it, and as the client got it
    at_server, at_client = lab.started
    assert (at_server["service"], at_client["service"]) == ("server", "client")
    assert {at_server["role"], at_client["role"]} == {capture.CAPTURE_ROLE}
    assert at_server["argv"][-2:] == ["host", lab.ip("client")]
    assert f"-s {lab.ip('server')} -j NFLOG" in at_client["argv"][-1]
    assert all(helper.removed for helper in helpers)
    checks = {check.name: check for check in result.checks}
    verdict = checks["losses were repaired"]
    assert verdict.passed is passed
    assert detail in verdict.detail
    assert checks["pcap server -> client: bytes > 1000"].passed
    assert result.passed is passed
    sent, delivered = result.pcaps
    assert (sent.service, sent.delivered, delivered.service, delivered.delivered) == (
        "server",
        False,
        "client",
        True,
    )
    assert (tmp_path / delivered.file).read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"
    hint = "to see its packets, run it again with capture: lab run pcap-checked --capture"
    assert any(hint in line for line in said) is not passed


def test_a_capture_that_did_not_start_fails_its_pcap_check_with_the_reason(
    lab: Any, tmp_path: Path
) -> None:
    lab.queue_helper(stderr="tcpdump: any: You don't have permission\n", status="exited")
    queue_captures(lab)[0].status = "exited"  # the delivered one dies too

    result, _ = run(lab, tmp_path)

    checks = {check.name: check for check in result.checks}
    failed = checks["losses were repaired"]
    assert not failed.passed
    assert failed.detail.startswith(
        "capture of server -> client (sent): not started: tcpdump for server -> client exited: "
    )
    assert "You don't have permission" in failed.detail


def test_a_damaged_pcap_fails_the_check_instead_of_the_run(lab: Any, tmp_path: Path) -> None:
    damaged = transfer(lab, resend=True)[:24] + b"\xff" * 10  # header, then half a record
    queue_captures(lab, sent=damaged)

    result, _ = run(lab, tmp_path)

    assert result.error is None
    failed = next(check for check in result.checks if check.name == "losses were repaired")
    assert not failed.passed
    assert "tcp.retransmissions = 0" in failed.detail


def test_the_result_records_the_clock_origin_and_the_addresses(lab: Any, tmp_path: Path) -> None:
    queue_captures(lab)
    before = time.time()

    result, _ = run(lab, tmp_path)

    assert result.clock_origin is not None
    assert before <= result.clock_origin <= time.time()
    assert result.addresses == {service: lab.ip(service) for service in SERVICES}


def test_run_files_writes_the_report_with_clock_origin_and_the_checked_capture(
    lab: Any, tmp_path: Path
) -> None:
    (tmp_path / "pcap-checked.yaml").write_text(PCAP_CHECKED)
    queue_captures(lab, resend=False)
    said: list[str] = []

    report = run_files(
        lab, [tmp_path / "pcap-checked.yaml"], results_root=tmp_path / "r", progress=said.append
    )

    assert not report.passed
    document = json.loads((report.folder / "results.json").read_text())
    (scenario,) = document["scenarios"]
    assert isinstance(scenario["clock_origin"], float)
    assert scenario["addresses"]["client"] == lab.ip("client")
    assert [pcap["point"] for pcap in scenario["pcaps"]] == ["sent", "delivered"]
    assert report.report_path == report.folder / "report.html"
    html = report.report_path.read_text()
    assert "losses were repaired" in html
    assert "tcp.retransmissions = 0, expected &gt; 0" in html
    assert "pcap-checked.server-to-client.pcap" in html
    assert "pcap-checked.server-to-client.delivered.pcap" in html
    assert str(report.report_path) in said[-1]


def test_a_report_that_cannot_be_built_is_a_warning_and_the_results_stay(
    lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pcap-checked.yaml").write_text(PCAP_CHECKED)
    queue_captures(lab)

    def broken(folder: Path, **_: Any) -> Path:
        raise ReportError(f"cannot write {folder / 'report.html'}: No space left on device")

    monkeypatch.setattr(page, "write_report", broken)
    said: list[str] = []

    report = run_files(
        lab, [tmp_path / "pcap-checked.yaml"], results_root=tmp_path / "r", progress=said.append
    )

    assert report.passed
    assert report.report_path is None
    assert json.loads((report.folder / "results.json").read_text())["passed"] is True
    warnings = [line for line in said if line.startswith("warning: report.html not written:")]
    assert warnings == [
        f"warning: report.html not written: cannot write {report.folder / 'report.html'}: "
        "No space left on device"
    ]
