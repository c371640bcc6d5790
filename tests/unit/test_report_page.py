"""report.html: self-contained, escapes everything taken from the run, failed checks first."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pcap_writer import ACK, PSH, Conversation, PcapWriter

from lab.report.analysis import TimeBin
from lab.report.config import PcapLimits, ReportConfig
from lab.report.page import ScenarioView, capture_service, href, render_report, text, write_report
from lab.report.plots import coarsen, plain, scenario_figure
from lab.report.results import parse_results
from lab.report.timeline import build_timeline
from lab.scenario.checks import CheckResult, FaultRecord, StepRecord
from lab.scenario.plan import Fault
from lab.scenario.report import PcapRecord, ScenarioResult, rerun_command, results_json
from socketlab.errors import ConfigError
from socketlab.udp.datagram import encode

HOSTILE = "<script>alert('x')</script> \"quoted\" & \x00\x1b[31m $x$ </pre></td>"
ORIGIN = 1_800_000_000.0
VOID = {"meta", "img", "br", "hr", "input", "link"}


class Structure(HTMLParser):
    """Records tags, attributes and whether every element closes in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Structure:
    structure = Structure()
    structure.feed(page)
    structure.close()
    return structure


def hostile_result(**extra: Any) -> ScenarioResult:
    values: dict[str, Any] = {
        "name": "evil" + HOSTILE,
        "description": "described " + HOSTILE,
        "file": "scenarios/" + HOSTILE,
        "started_at": "2027-01-15T08:00:00+00:00",
        "duration": 4.0,
        "steps": (
            StepRecord(
                name="step" + HOSTILE,
                service="client" + HOSTILE,
                argv=("socketlab", HOSTILE),
                timeout=10.0,
                exit_code=1,
                stdout="out " + HOSTILE,
                stderr="err " + HOSTILE,
                started=0.0,
                duration=2.0,
            ),
        ),
        "faults": (
            FaultRecord(
                fault=Fault(at=1.0, action="kill", services=("srv" + HOSTILE,)), applied_at=1.0
            ),
        ),
        "checks": (
            CheckResult(
                name="passing " + HOSTILE, kind="json_field", passed=True, detail="ok " + HOSTILE
            ),
            CheckResult(
                name="failing " + HOSTILE,
                kind="pcap",
                passed=False,
                detail="bad\n" + HOSTILE,
                line=9,
            ),
        ),
        "links": ("client -> server: " + HOSTILE,),
        "pcaps": (
            PcapRecord(link="a -> b", file="javascript:alert(1)"),
            PcapRecord(link="a -> c", file="../../etc/passwd"),
            PcapRecord(link="x" + HOSTILE, error="not started: " + HOSTILE),
        ),
    }
    return ScenarioResult(**(values | extra))


def render_hostile() -> str:
    document = results_json("run" + HOSTILE, "proj" + HOSTILE, [hostile_result()])
    run = parse_results(document)
    views = [
        ScenarioView(
            entry=entry, timeline=build_timeline(entry), artifacts=(HOSTILE, "ok/we ird#?.txt")
        )
        for entry in run.scenarios
    ]
    return render_report(run, views)


def test_everything_from_the_run_is_escaped() -> None:
    page = render_hostile()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &quot;quoted&quot; &amp;" in page
    assert "\x00" not in page
    assert "\x1b" not in page
    assert "\\x00\\x1b[31m" in page  # shown, not sent
    structure = parse(page)
    assert structure.problems == []
    assert structure.stack == []
    joined = "".join(structure.text)
    assert "failing " + HOSTILE.replace("\x00", "\\x00").replace("\x1b", "\\x1b") in joined


def test_only_relative_links_inside_the_run_folder() -> None:
    structure = parse(render_hostile())
    links = [attrs.get("href") or "" for tag, attrs in structure.tags if tag == "a"]
    assert links
    for target in links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE), target
        assert ".." not in target.split("/")
        assert not target.startswith("/")
    assert "ok/we%20ird%23%3F.txt" in links
    assert href("javascript:alert(1)") is None
    assert href("../../etc/passwd") is None
    assert href("/etc/passwd") is None
    assert href("pcap/a b.pcap") == "pcap/a%20b.pcap"


def test_the_page_loads_nothing_and_runs_nothing() -> None:
    page = render_hostile()
    structure = parse(page)
    assert {tag for tag, _ in structure.tags}.isdisjoint({"script", "link", "iframe", "object"})
    for tag, attrs in structure.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in {"src", "href"} and value:
                assert not value.startswith(("http:", "https:", "//")), value
    assert "@import" not in page
    assert "url(" not in page


def test_failed_checks_come_first_with_their_evidence() -> None:
    page = render_hostile()
    checks = page[page.index('<table class="checks">') :]
    assert checks.index("failing ") < checks.index("passing ")
    assert "<pre>bad\n" in checks


def test_summary_and_rerun_hint() -> None:
    page = render_hostile()
    summary = page[page.index('<table class="summary">') :]
    assert 'href="#scenario-0"' in summary
    assert "FAILED" in summary
    assert "1/2" in summary
    never = results_json("r", "p", [hostile_result(pcaps=(), name="plain")])
    run = parse_results(never)
    page = render_report(
        run, [ScenarioView(entry=e, timeline=build_timeline(e)) for e in run.scenarios]
    )
    # not a shipped scenario (its file is not scenarios/plain.yaml): rerun by path
    assert f"<code>{text(rerun_command('plain', 'scenarios/' + HOSTILE))}</code>" in page
    assert " --capture</code>" in page


def test_text_escapes_quotes_controls_and_surrogates() -> None:
    assert text("a\"b'c<d>&") == "a&quot;b&#x27;c&lt;d&gt;&amp;"
    assert text("x\x07y\ttab\nline") == "x\\x07y\ttab\nline"
    assert text("bad \udcff byte") == "bad \\udcff byte"


def test_capture_service_of_a_link_label() -> None:
    assert capture_service("client -> server") == "client"
    assert capture_service("client (all traffic)") == "client"


# --------------------------------------------------------------------------- plots


def test_coarsen_merges_bins_and_fills_stalls_with_zero() -> None:
    bins = [TimeBin(start=ORIGIN + i * 0.1, goodput={"a": 100}) for i in range(10) if i != 4]
    merged = coarsen(bins, bin_seconds=0.1, origin=ORIGIN, max_bins=5)
    assert len(merged) == 5
    assert [round(b.start, 6) for b in merged] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert [b.goodput.get("a", 0) for b in merged] == [200, 200, 100, 200, 200]
    assert merged[0].mbit_per_second("a") == pytest.approx(200 * 8 / 0.2 / 1e6)
    assert coarsen([], bin_seconds=0.1, origin=0.0, max_bins=5) == []


def test_plain_keeps_matplotlib_from_reading_mathtext() -> None:
    assert plain("cost $5 and $6") == r"cost \$5 and \$6"
    assert plain("a\x00b\nc") == "a b c"
    assert len(plain("x" * 500)) == 48


def test_the_figure_is_a_png_even_with_hostile_names() -> None:
    document = results_json("r", "p", [hostile_result()])
    document["scenarios"][0]["clock_origin"] = ORIGIN
    timeline = build_timeline(parse_results(document).scenarios[0])
    png = scenario_figure(timeline, [])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


# --------------------------------------------------------------------------- write_report


def run_folder(tmp_path: Path) -> Path:
    writer = PcapWriter(snaplen=128)
    talk = Conversation(writer, client="172.18.0.3", server="172.18.0.2")
    talk.handshake(ORIGIN - 0.2, 0.01)
    first = talk.send(ORIGIN + 0.1, "s", 1448)
    talk.send(ORIGIN + 0.1001, "s", 1448)
    talk.segment(ORIGIN + 0.5, "s", seq=first, payload=1448, flags=ACK | PSH)
    talk.segment(ORIGIN + 0.51, "c")
    for seq in (1, 2, 4):
        data = encode(sender_id=1, seq=seq, sent_ns=seq)
        writer.udp(
            ORIGIN + 0.6 + seq / 100, "172.18.0.3", "172.18.0.4", sport=5, dport=37020, data=data
        )
    (tmp_path / "pcap").mkdir()
    writer.write(tmp_path / "pcap" / "s.client-to-server.pcap")
    (tmp_path / "pcap" / "broken.pcap").write_bytes(b"not a pcap at all, sorry")
    (tmp_path / "s" / "captures").mkdir(parents=True)
    (tmp_path / "s" / "captures" / "fetch.stdout").write_text("hello")
    result = hostile_result(
        name="s",
        pcaps=(
            PcapRecord(link="client -> server", file="pcap/s.client-to-server.pcap", size=1),
            PcapRecord(link="server -> client", file="pcap/broken.pcap", size=1),
            PcapRecord(link="a -> b", file="../outside.pcap", size=1),
        ),
    )
    document = results_json("run-7", "proj", [result])
    document["scenarios"][0]["clock_origin"] = ORIGIN
    document["scenarios"][0]["addresses"] = {"client": "172.18.0.3", "server": "172.18.0.2"}
    (tmp_path / "results.json").write_text(json.dumps(document))
    return tmp_path


def test_write_report_analyses_the_run_folder(tmp_path: Path) -> None:
    path = write_report(run_folder(tmp_path))
    assert path == tmp_path / "report.html"
    page = path.read_text(encoding="utf-8")
    assert parse(page).problems == []
    assert re.search(r"<td>tcp\.retransmissions</td><td class=\"num\">1</td>", page)
    assert re.search(r"<td>udp\.lost</td><td class=\"num\">1</td>", page)
    assert "server -&gt; client" in page  # directions named by service
    assert "not a pcap file" in page
    assert "&#x27;../outside.pcap&#x27; is not inside the run folder" in page
    assert 'href="s/captures/fetch.stdout"' in page
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data).startswith(b"\x89PNG")


def test_report_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="SOCKETLAB_REPORT_PLOT_BINS=1 must be at least 2"):
        ReportConfig(plot_bins=1)
    with pytest.raises(ConfigError, match=r"SOCKETLAB_REPORT_BIN_SECONDS=0\.0 must be above 0"):
        PcapLimits(bin_seconds=0.0)
    config = ReportConfig.from_env(
        {"SOCKETLAB_REPORT_MAX_PACKETS": "10", "SOCKETLAB_REPORT_PLOT_BINS": "50"}
    )
    assert (config.pcap.max_packets, config.plot_bins) == (10, 50)
    with pytest.raises(ConfigError, match="SOCKETLAB_REPORT_MAX_FLOWS='many' is not an integer"):
        ReportConfig.from_env({"SOCKETLAB_REPORT_MAX_FLOWS": "many"})


@pytest.mark.parametrize(
    ("name", "file", "command"),
    [
        pytest.param("hello", "scenarios/hello.yaml", "lab run hello --capture", id="shipped"),
        pytest.param("x", "tests/x.yaml", "lab run tests/x.yaml --capture", id="elsewhere-by-path"),
        pytest.param("x", "", "lab run x --capture", id="no-file-known"),
    ],
)
def test_rerun_command(name: str, file: str, command: str) -> None:
    assert rerun_command(name, file) == command
