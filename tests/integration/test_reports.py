"""Reports on the real lab: a ``pcap`` check that holds at 2 % loss and one built to fail,
report.html in headless Chromium (no console errors, timeline and plot visible, a
screenshot kept), and ``lab watch`` in a pty counting a shaped link's packets."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from browser import open_page

from lab.api import Lab
from lab.cli import main
from lab.shaping import resolve_spec, shape, unshape
from lab.watch import WATCH_ROLE

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
REPO = HERE.parents[1]
LAB = str(Path(sys.executable).parent / "lab")  # the checkout's own CLI, as `make` runs it
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]")


def run_one(lab: Lab, name: str, results: Path) -> tuple[int, Path, dict[str, Any]]:
    """``lab run tests/integration/scenarios/NAME.yaml`` as a user types it."""
    code = main(
        ["-p", lab.project, "run", str(SCENARIOS / f"{name}.yaml"), "--results", str(results)]
    )
    (folder,) = results.iterdir()
    document = json.loads((folder / "results.json").read_text())
    (scenario,) = document["scenarios"]
    return code, folder, scenario


@pytest.fixture(scope="module")
def shaped_run(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Path, dict[str, Any]]:
    """large-file at 2 % loss each way with pcap checks, run once for this module."""
    return run_one(lab, "large-file-pcap", tmp_path_factory.mktemp("shaped"))


def test_a_pcap_check_sees_tcp_resend_what_a_2_percent_loss_dropped(
    shaped_run: tuple[int, Path, dict[str, Any]],
) -> None:
    code, folder, scenario = shaped_run
    checks = {check["name"]: check for check in scenario["checks"]}
    assert scenario["passed"], scenario["reason"]
    assert code == 0
    resent = checks["the server resent lost segments"]
    assert resent["passed"]
    match = re.match(r"tcp\.retransmissions = (\d+) \((\S+), ([\d,]+) packets\)", resent["detail"])
    assert match, resent["detail"]
    assert int(match[1]) > 0
    # the capture the check read: the link as the server sent it, kept and listed
    assert match[2] == "pcap/large-file-pcap.server-to-client.pcap"
    sent, delivered = scenario["pcaps"]
    assert (sent["service"], sent["point"], sent["file"]) == ("server", "sent", match[2])
    assert (folder / match[2]).stat().st_size == sent["bytes"] > 24
    # bytes are counted as the client got them
    crossed = checks["the whole file crossed the link"]
    assert crossed["passed"]
    assert "pcap/large-file-pcap.server-to-client.delivered.pcap" in crossed["detail"]
    assert (delivered["service"], delivered["point"]) == ("client", "delivered")
    print(f"\nlarge-file-pcap at 2 %: {resent['detail']}; {crossed['detail']}")
    # what the report needs to line packets up with steps
    assert isinstance(scenario["clock_origin"], float)
    assert set(scenario["addresses"]) >= {"server", "client"}
    html = (folder / "report.html").read_text()
    assert "the server resent lost segments" in html
    assert "large-file-pcap.server-to-client.pcap" in html
    assert "large-file-pcap.server-to-client.delivered.pcap" in html


def test_the_pcap_check_fails_on_a_clean_link_and_the_report_names_it(
    lab: Lab, tmp_path: Path
) -> None:
    code, folder, scenario = run_one(lab, "pcap-must-fail", tmp_path)

    assert code == 1
    assert not scenario["passed"]
    failed = [check for check in scenario["checks"] if not check["passed"]]
    assert [check["name"] for check in failed] == ["retransmissions on a clean link"]
    assert re.match(r"tcp\.retransmissions = \d+, expected > 10000 \(", failed[0]["detail"])
    assert "retransmissions on a clean link: tcp.retransmissions = " in scenario["reason"]
    html = (folder / "report.html").read_text()
    # failed checks first, named with their reason
    checks_table = html.split("<h3>Checks</h3>", 1)[1].split("</table>", 1)[0]
    assert checks_table.index("retransmissions on a clean link") < checks_table.index(
        "step fetch exits 0"
    )
    assert re.search(r"tcp\.retransmissions = \d+, expected &gt; 10000", checks_table)


# --------------------------------------------------------------------------- the page in a browser

VISIBLE = """(() => {{
  const node = document.querySelector({selector!r});
  if (!node) return null;
  const box = node.getBoundingClientRect();
  const style = getComputedStyle(node);
  return {{width: box.width, height: box.height, display: style.display,
           visibility: style.visibility, loaded: node.tagName !== 'IMG' ||
           (node.complete && node.naturalWidth > 0), natural: node.naturalHeight || 0}};
}})()"""


def visible(selector: str) -> str:
    return VISIBLE.format(selector=selector)


def test_a_browser_finds_no_console_error_and_sees_the_timeline_and_plot(
    shaped_run: tuple[int, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, folder, _ = shaped_run
    # The detector is not blind: a page with a script error and a missing image is caught.
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><img src="missing.png"><script>console.error("boom");'
        'setTimeout(() => { throw new Error("late"); }, 50);</script>'
    )
    control = open_page(broken, probes={})
    assert any("boom" in error for error in control.errors), control.errors
    assert any("late" in error for error in control.errors), control.errors
    assert any("missing.png" in error for error in control.errors), control.errors

    report = open_page(
        folder / "report.html",
        probes={
            "figure": visible("figure.timeline img"),
            "timeline": visible("table.timeline"),
            "timeline_rows": "document.querySelectorAll('table.timeline tbody tr').length",
            "captures": "[...document.querySelectorAll('h3')].some(h => h.textContent === 'Captures')",
            "title": "document.title",
        },
    )
    shot = folder / "report.png"
    shot.write_bytes(report.screenshot)
    print(f"\nscreenshot: {shot} ({len(report.screenshot):,} bytes); probes: {report.probes}")

    assert report.errors == [], report.errors
    figure, table = report.probes["figure"], report.probes["timeline"]
    assert figure is not None, "no timeline figure"
    assert figure["loaded"]
    assert figure["width"] > 300
    assert figure["height"] > 200
    assert figure["display"] != "none"
    assert figure["visibility"] == "visible"
    # the figure stacks the timeline and a capture's goodput plot: taller than one panel
    assert figure["natural"] > 400
    assert table is not None
    assert table["height"] > 0
    assert report.probes["timeline_rows"] >= 3  # the step, the shaping, the checks
    assert report.probes["captures"] is True
    assert report.probes["title"].startswith("socketlab run ")
    assert report.screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000


# --------------------------------------------------------------------------- lab watch in a pty

ROW = re.compile(r"│ client -> udp-listener\s*│[^│]*│[^│]*│[^│]*│\s*([\d,]+)\s*│")


@pytest.fixture
def shaped_udp(lab: Lab) -> Iterator[None]:
    shape(lab, "client", "udp-listener", resolve_spec(options={"loss": "5%"}))
    try:
        yield
    finally:
        unshape(lab, "client", "udp-listener")


def _watch_counts(output: list[str]) -> list[int]:
    """The packet count of client -> udp-listener in each refresh read so far."""
    screen = ANSI.sub("", "".join(output))
    return [int(value.replace(",", "")) for value in ROW.findall(screen)]


def _rising_enough(counts: list[int]) -> bool:
    """Three refreshes or more, rising by 1,000 packets or more (500 datagrams a second)."""
    rising = sorted(set(counts))
    return len(rising) >= 3 and rising[-1] - rising[0] >= 1000


def test_lab_watch_in_a_terminal_shows_a_shaped_links_counters_rising(
    lab: Lab, shaped_udp: None
) -> None:
    child = pexpect.spawn(
        LAB,
        ["-p", lab.project, "watch"],
        dimensions=(60, 220),
        encoding="utf-8",
        # Ctrl-C makes the terminal drop the output it has not written yet, which may cut
        # a box-drawing character in half before its "^C" echo: CI saw that fail to decode.
        codec_errors="replace",
        timeout=60,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "220"},
    )
    output: list[str] = []
    sender: threading.Thread | None = None
    try:
        child.expect("client -> udp-listener", timeout=90)  # the first full refresh
        sender = threading.Thread(
            target=lab.exec,
            args=("client", ["socketlab", "udp-send", "--count", "3000", "--rate", "500"]),
            kwargs={"timeout": 60},
            daemon=True,
        )
        sender.start()
        # Read until the refreshes show the count rising (the docker exec that starts the
        # sender, and each refresh, take longer on a loaded machine), or the deadline.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _rising_enough(_watch_counts(output)):
            try:
                output.append(child.read_nonblocking(1 << 16, timeout=1))
            except pexpect.TIMEOUT:
                continue
        child.sendintr()  # Ctrl-C
        child.expect(pexpect.EOF, timeout=60)
        output.append(child.before or "")
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()
        if sender is not None:
            sender.join(timeout=60)
    screen = ANSI.sub("", "".join(output))
    counts = _watch_counts(output)
    print(f"\nlab watch packet counts of client -> udp-listener, one per refresh: {counts}")
    assert _rising_enough(counts), f"packet counts seen: {counts}"
    assert child.exitstatus == 0, screen[-2000:]
    assert "Traceback" not in screen
    assert "watch stopped" in screen
    leftovers = lab.docker.containers.list(
        all=True,
        filters={
            "label": [f"io.socketlab.project={lab.project}", f"io.socketlab.role={WATCH_ROLE}"]
        },
    )
    assert leftovers == [], "lab watch left counter helpers behind"
