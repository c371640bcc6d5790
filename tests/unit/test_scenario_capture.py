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
from lab.scenario.capture import (
    CaptureError,
    Capturer,
    CaptureTarget,
    capture_targets,
    delivered_script,
    nflog_rules,
    pcap_targets,
    run_targets,
    tcpdump_argv,
)
from lab.scenario.loader import parse_text
from lab.scenario.plan import Scenario, build_scenario
from lab.scenario.report import PcapRecord, ScenarioResult, scenario_json
from lab.scenario.session import RunReport

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
            service="server",
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


# --- delivered captures (links pcap checks read) ----------------------------------------------

PCAP_CHECKS = """\
links:
  - {from: server, to: client, loss: 2%}
  - {from: client, to: server, loss: 2%}
"""
STEPS_WITH_PCAP = """\
steps:
  - {name: e, service: client, run: [echo, x], timeout: 5}
checks:
  - {kind: pcap, link: [server, client], metric: tcp.retransmissions, op: ">", value: 0}
  - {kind: pcap, link: [server, client], metric: bytes, op: ">", value: 0}
  - {kind: pcap, link: [client, udp-listener], metric: udp.lost, op: "==", value: 0}
"""


def pcap_scenario(extra: str = PCAP_CHECKS) -> Scenario:
    text = "name: cap\ndescription: d\n" + extra + STEPS_WITH_PCAP
    return build_scenario(parse_text(text, file="cap.yaml"), services=SERVICES)


def test_each_checked_link_is_captured_once_at_each_point_its_metrics_need() -> None:
    targets = pcap_targets(pcap_scenario())
    assert targets == [
        CaptureTarget(service="server", peer="client"),  # retransmissions, as sent
        CaptureTarget(service="client", peer="server", delivered=True),  # bytes
        CaptureTarget(service="udp-listener", peer="client", delivered=True),  # udp gaps
    ]
    assert [t.link for t in targets] == ["server -> client"] * 2 + ["client -> udp-listener"]
    assert targets[1].label == "server -> client (delivered)"
    assert targets[1].file_name == "server-to-client.delivered.pcap"


@pytest.mark.parametrize(
    ("capture_flag", "expected"),
    [
        pytest.param(
            False,
            [
                ("server", "client", False),
                ("client", "server", True),
                ("udp-listener", "client", True),
            ],
            id="without-capture-only-the-checked-links",
        ),
        pytest.param(
            True,
            [
                ("server", "client", False),
                ("client", "server", False),
                ("client", "server", True),
                ("udp-listener", "client", True),
            ],
            id="with-capture-both-points-merged",
        ),
    ],
)
def test_run_targets_merge_capture_and_pcap_checks(
    capture_flag: bool, expected: list[tuple[str, str, bool]]
) -> None:
    targets = run_targets(pcap_scenario(), capture=capture_flag)
    assert [(t.service, t.peer, t.delivered) for t in targets] == expected


def test_run_targets_without_pcap_checks_or_capture_is_nothing() -> None:
    assert run_targets(scenario(), capture=False) == []
    assert run_targets(scenario(), capture=True) == [CaptureTarget(service="client")]


def test_nflog_rules_log_after_the_raw_table_and_on_the_way_back() -> None:
    rules = nflog_rules("10.0.0.3", group=5400, snaplen=256)
    target = ("-j", "NFLOG", "--nflog-group", "5400", "--nflog-size", "256")
    target += ("--nflog-threshold", "1")
    assert rules == [
        ("PREROUTING", "-s", "10.0.0.3", *target),
        ("POSTROUTING", "-d", "10.0.0.3", *target),
    ]
    with pytest.raises(CaptureError, match="NFLOG group 0 is outside"):
        nflog_rules("10.0.0.3", group=0, snaplen=256)


def test_delivered_script_adds_captures_and_removes_its_rules() -> None:
    argv = delivered_script(peer_ip="10.0.0.3", group=5401, snaplen=128)
    assert argv[:2] == ["sh", "-c"]
    lines = argv[2].splitlines()
    add, start, *_, remove, leave = lines
    assert add.count("-t mangle -I PREROUTING 1 -s 10.0.0.3 -j NFLOG --nflog-group 5401") == 1
    assert "-t mangle -I POSTROUTING 1 -d 10.0.0.3 -j NFLOG" in add
    assert "-i nflog:5401" in start
    assert f"-s {128 + capture.NFLOG_FRAME_OVERHEAD}" in start
    assert start.endswith(" &")
    assert f"-w {capture.HELPER_PATH}" in start
    assert "-t mangle -D PREROUTING -s 10.0.0.3" in remove
    assert "-t mangle -D POSTROUTING -d 10.0.0.3" in remove
    assert leave == "exit $status"
    assert "trap 'kill -TERM $pid 2>/dev/null' INT TERM" in lines


def test_a_delivered_capture_runs_in_the_receivers_namespace_with_its_own_group(
    fake_lab: Any, tmp_path: Path
) -> None:
    for _ in range(2):
        fake_lab.queue_helper(
            stderr="tcpdump: listening on nflog:5400, link-type NFLOG\n",
            files={capture.HELPER_PATH: PCAP_HEADER},
        )
    capturer = Capturer(fake_lab, folder=tmp_path, prefix="cap")

    capturer.start([t for t in pcap_targets(pcap_scenario()) if t.delivered])
    records = capturer.stop()

    first, second = fake_lab.started
    assert (first["service"], second["service"]) == ("client", "udp-listener")
    assert first["argv"][4:] == delivered_script(
        peer_ip=fake_lab.ip("server"), group=5400, snaplen=fake_lab.config.capture.snaplen
    )
    assert "nflog:5401" in second["argv"][-1]  # a group per capture
    assert [(r.link, r.service, r.delivered, r.file) for r in records] == [
        (
            "server -> client (delivered)",
            "client",
            True,
            "pcap/cap.server-to-client.delivered.pcap",
        ),
        (
            "client -> udp-listener (delivered)",
            "udp-listener",
            True,
            "pcap/cap.client-to-udp-listener.delivered.pcap",
        ),
    ]


# --- reports and CLI -----------------------------------------------------------------------


def test_results_json_lists_the_pcaps() -> None:
    result = ScenarioResult(
        name="s",
        description="d",
        file="s.yaml",
        started_at="2026-11-21T10:00:00+00:00",
        duration=1.0,
        pcaps=(
            PcapRecord(
                link="server -> client",
                service="server",
                file="pcap/s.server-to-client.pcap",
                size=24,
            ),
            PcapRecord(
                link="client -> server (delivered)",
                service="server",
                delivered=True,
                error="not kept: gone",
            ),
        ),
    )

    document = json.loads(json.dumps(scenario_json(result)))

    assert document["pcaps"] == [
        {
            "link": "server -> client",
            "service": "server",
            "point": "sent",
            "file": "pcap/s.server-to-client.pcap",
            "bytes": 24,
            "error": None,
        },
        {
            "link": "client -> server (delivered)",
            "service": "server",
            "point": "delivered",
            "file": None,
            "bytes": 0,
            "error": "not kept: gone",
        },
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

    monkeypatch.setattr("lab.scenario.session.run_files", fake_run_files)
    monkeypatch.setattr(
        "lab.scenario.cli.make_lab", lambda args: argparse.Namespace(repo_root=tmp_path)
    )

    main(["run", "cap", "--dir", str(tmp_path), *flag])

    assert seen["capture"] is expected
