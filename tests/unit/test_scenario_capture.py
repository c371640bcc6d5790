"""``lab run --capture``: which links are captured, the tcpdump command, the pcap kept
and listed in results.json, and the helper's life cycle (against a fake Docker)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lab.cli import main
from lab.scenario import capture
from lab.scenario.capture import Capturer, CaptureTarget, capture_targets, tcpdump_argv
from lab.scenario.loader import parse_text
from lab.scenario.plan import Scenario, build_scenario
from lab.scenario.report import PcapRecord, ScenarioResult, scenario_json
from lab.scenario.runner import RunReport

SERVICES = ("server", "client", "udp-listener", "rss-poller")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 113)

STEPS = """\
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5, capture: out}
checks:
  - {kind: stdout_contains, capture: out, text: x}
"""


def scenario(extra: str = "") -> Scenario:
    text = "name: cap\ndescription: d\n" + textwrap.dedent(extra) + STEPS
    return build_scenario(parse_text(text, file="cap.yaml"), services=SERVICES)


# --- what is captured ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param("", [CaptureTarget(service="client")], id="nothing-shaped-client-traffic"),
        pytest.param(
            "links:\n  - {from: server, to: client, loss: 2%}\n",
            [CaptureTarget(service="server", peer="client")],
            id="one-link",
        ),
        pytest.param(
            "links:\n  - {from: server, to: client, loss: 2%}\n"
            "  - {from: client, to: server, delay: 5ms}\n",
            [
                CaptureTarget(service="server", peer="client"),
                CaptureTarget(service="client", peer="server"),
            ],
            id="both-directions-each-on-its-sender",
        ),
        pytest.param(
            "links:\n  - {from: client, to: udp-listener, loss: 5%}\n"
            "faults:\n  - {at: 1, shape: {from: client, to: udp-listener, loss: 10%}}\n"
            "  - {at: 2, shape: {from: server, to: client, delay: 9ms}}\n",
            [
                CaptureTarget(service="client", peer="udp-listener"),
                CaptureTarget(service="server", peer="client"),
            ],
            id="shape-faults-too-without-repeats",
        ),
        pytest.param(
            "faults:\n  - {at: 1, partition: [client, server]}\n",
            [CaptureTarget(service="client")],
            id="a-partition-is-not-a-shaped-link",
        ),
    ],
)
def test_capture_targets(extra: str, expected: list[CaptureTarget]) -> None:
    assert capture_targets(scenario(extra)) == expected


def test_target_labels_and_file_names() -> None:
    link = CaptureTarget(service="server", peer="client")
    assert (link.label, link.file_name) == ("server -> client", "server-to-client.pcap")
    whole = CaptureTarget(service="client")
    assert (whole.label, whole.file_name) == ("client (all traffic)", "client.pcap")


@pytest.mark.parametrize(
    ("peer_ip", "tail"),
    [
        pytest.param("192.168.64.3", ["host", "192.168.64.3"], id="a-link-filters-on-the-peer"),
        pytest.param(None, ["not", "net", "127.0.0.0/8"], id="no-link-all-but-loopback"),
    ],
)
def test_tcpdump_argv(peer_ip: str | None, tail: list[str]) -> None:
    argv = tcpdump_argv(peer_ip=peer_ip, path="/tmp/x.pcap", snaplen=128)

    assert argv[0] == "tcpdump"
    assert argv[argv.index("-w") + 1] == "/tmp/x.pcap"
    assert argv[argv.index("-s") + 1] == "128"
    assert argv[argv.index("-i") + 1] == "any"
    assert "-U" in argv  # packet-buffered: the file is whole when tcpdump stops
    # packets are not held back in kernel blocks, where SIGINT would lose the last second's
    assert "--immediate-mode" in argv
    assert argv[argv.index("-Z") + 1] == "root"
    assert argv[-len(tail) :] == tail


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(PCAP_HEADER, True, id="little-endian-microseconds"),
        pytest.param(struct.pack(">I", 0xA1B23C4D) + bytes(20), True, id="big-endian-nanos"),
        pytest.param(b"\x0a\x0d\x0d\x0a" + bytes(20), False, id="pcapng-is-not-pcap"),
        pytest.param(b"", False, id="empty"),
    ],
)
def test_is_pcap(head: bytes, expected: bool) -> None:
    assert capture.is_pcap(head) is expected


# --- the helper's life cycle, against the shared fake lab ---------------------------------

LISTENING = "tcpdump: listening on any, link-type LINUX_SLL2, snapshot length 256 bytes\n"


def test_capture_runs_in_the_senders_namespace_and_keeps_the_pcap(
    fake_lab: Any, tmp_path: Path
) -> None:
    helper = fake_lab.queue_helper(stderr=LISTENING, files={capture.HELPER_PATH: PCAP_HEADER})
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="large-file")

    capturer.start([CaptureTarget(service="server", peer="client")])
    records = capturer.stop()

    (started,) = fake_lab.started
    command = started["argv"]
    assert command[:3] == ["timeout", "-s", "INT"]  # forwards our SIGINT to tcpdump
    assert command[3] == f"{fake_lab.config.capture.max_seconds:g}"  # a forgotten one ends
    snaplen = fake_lab.config.capture.snaplen
    assert command[4:] == tcpdump_argv(peer_ip=fake_lab.ip("client"), snaplen=snaplen)
    assert started["service"] == "server"  # the sender's namespace
    assert started["role"] == capture.CAPTURE_ROLE
    assert set(started["caps"]) == {"NET_RAW", "NET_ADMIN"}
    # stopped cleanly, then copied out, then removed
    assert helper.calls[-4:] == [
        "signal SIGINT",
        "wait",
        f"read_file {capture.HELPER_PATH}",
        "remove",
    ]
    assert records == [
        PcapRecord(
            link="server -> client",
            file="pcap/large-file.server-to-client.pcap",
            size=len(PCAP_HEADER),
        )
    ]
    assert (tmp_path / "pcap" / "large-file.server-to-client.pcap").read_bytes() == PCAP_HEADER


def test_a_tcpdump_that_dies_at_start_is_reported_and_removed(
    fake_lab: Any, tmp_path: Path
) -> None:
    dead = fake_lab.queue_helper(
        stderr="tcpdump: any: You don't have permission\n", status="exited"
    )
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="s")

    capturer.start([CaptureTarget(service="client")])
    (record,) = capturer.stop()

    assert record.file is None
    assert record.error == (
        "not started: tcpdump for client (all traffic) exited: "
        "tcpdump: any: You don't have permission"
    )
    assert dead.removed
    assert not (tmp_path / "pcap").exists()


def test_a_tcpdump_that_never_listens_is_reported_at_its_deadline(
    fake_lab: Any, tmp_path: Path
) -> None:
    silent = fake_lab.queue_helper(stderr="tcpdump: starting\n")
    config = dataclasses.replace(
        fake_lab.config, capture=dataclasses.replace(fake_lab.config.capture, start_timeout=0.05)
    )
    fake_lab.config = config
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="s")

    capturer.start([CaptureTarget(service="client")])
    (record,) = capturer.stop()

    assert record.error == "not started: tcpdump for client (all traffic) not listening: " + (
        "tcpdump: starting"
    )
    assert silent.removed


def test_a_file_that_is_not_a_pcap_is_not_kept(fake_lab: Any, tmp_path: Path) -> None:
    helper = fake_lab.queue_helper(stderr=LISTENING, files={capture.HELPER_PATH: b""})
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="s")

    capturer.start([CaptureTarget(service="client")])
    (record,) = capturer.stop()

    assert record.error == "tcpdump wrote no pcap header"
    assert helper.removed


def test_a_pcap_that_cannot_be_copied_is_reported_and_the_helper_removed(
    fake_lab: Any, tmp_path: Path
) -> None:
    helper = fake_lab.queue_helper(stderr=LISTENING)  # no file: the copy fails
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="s")

    capturer.start([CaptureTarget(service="client")])
    (record,) = capturer.stop()

    assert record.error is not None
    assert record.error.startswith("not kept: ")
    assert helper.removed


# --- reports and CLI -----------------------------------------------------------------------


def test_results_json_lists_the_pcaps() -> None:
    result = ScenarioResult(
        name="s",
        description="d",
        file="s.yaml",
        started_at="2026-11-21T10:00:00+00:00",
        duration=1.0,
        pcaps=(
            PcapRecord(link="server -> client", file="pcap/s.server-to-client.pcap", size=24),
            PcapRecord(link="client -> server", error="not kept: gone"),
        ),
    )

    document = json.loads(json.dumps(scenario_json(result)))

    assert document["pcaps"] == [
        {
            "link": "server -> client",
            "file": "pcap/s.server-to-client.pcap",
            "bytes": 24,
            "error": None,
        },
        {"link": "client -> server", "file": None, "bytes": 0, "error": "not kept: gone"},
    ]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [pytest.param(["--capture"], True, id="capture"), pytest.param([], False, id="default")],
)
def test_lab_run_capture_flag_reaches_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool
) -> None:
    (tmp_path / "cap.yaml").write_text("name: cap\ndescription: d\n" + STEPS)
    seen: dict[str, Any] = {}

    def fake_run_files(lab: object, paths: list[Path], **options: Any) -> RunReport:
        seen.update(options)
        return RunReport(run_id="r", folder=tmp_path)

    monkeypatch.setattr("lab.scenario.runner.run_files", fake_run_files)
    monkeypatch.setattr(
        "lab.scenario.cli.make_lab", lambda args: argparse.Namespace(repo_root=tmp_path)
    )

    main(["run", "cap", "--dir", str(tmp_path), *flag])

    assert seen["capture"] is expected
