"""``results/<run-id>/report.html``: one self-contained page per run.

:func:`render_report` is pure: a parsed ``results.json``, the capture analyses and
the scenario figures in, HTML out. The page has no script and loads nothing: CSS
is inline, figures are ``data:`` PNGs, artifacts are relative links, so it opens
from the file system anywhere the run folder is copied. Every string taken from
the run (names, commands, output, check text, file names) is escaped, with control
characters shown as ``\\xNN``; a link is made only for a relative path inside the
run folder.

:func:`write_report` is the thin I/O part: it reads ``results.json``, analyses each
kept pcap, draws the figures, lists the artifacts and writes the page.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import quote

from lab.report.analysis import CaptureAnalysis, analyze_file
from lab.report.config import ReportConfig
from lab.report.errors import PcapError, ReportError
from lab.report.metrics import PCAP_METRICS, format_value
from lab.report.plots import CapturePanel, direction_name, scenario_figure
from lab.report.results import RESULTS_FILE, PcapEntry, RunEntry, ScenarioEntry, load_results
from lab.report.timeline import Timeline, Verdict, build_timeline
from lab.scenario.report import rerun_command

log = logging.getLogger("lab.report")

REPORT_FILE: Final = "report.html"
RUN_FILES: Final = (RESULTS_FILE, "junit.xml")
MAX_ARTIFACTS: Final = 500  # links listed per scenario
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

STYLE: Final = """
body { font-family: sans-serif; margin: 1.5em auto; color: #222; max-width: 1200px;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left;
         vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #1e7b1e; font-weight: bold; } .fail { color: #b02a1a; font-weight: bold; }
.neutral { color: #666; }
tr.failed td { background: #fdecea; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.4em; overflow-x: auto;
      max-height: 24em; white-space: pre-wrap; word-break: break-all; font-size: 0.8em; }
figure { margin: 0.5em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .note { color: #555; font-size: 0.85em; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
"""


def text(value: object) -> str:
    """Escape anything for HTML text or a quoted attribute; controls become ``\\xNN``."""
    flat = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    flat = _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", flat)
    return html.escape(flat, quote=True)


def href(path: str) -> str | None:
    """A relative link to ``path`` inside the run folder, or None when it is not one."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or ":" in pure.parts[0]:
        return None
    return quote(path, safe="/")


def link(path: str, label: str | None = None) -> str:
    target = href(path)
    shown = text(label if label is not None else path)
    return f'<a href="{text(target)}">{shown}</a>' if target is not None else shown


def _verdict(passed: bool) -> str:
    return '<span class="pass">PASSED</span>' if passed else '<span class="fail">FAILED</span>'


def _mark(verdict: Verdict) -> str:
    labels = {Verdict.OK: ("pass", "ok"), Verdict.FAILED: ("fail", "failed")}
    css, word = labels.get(verdict, ("neutral", "-"))
    return f'<span class="{css}">{word}</span>'


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


class _Num(str):
    """A table cell (HTML already) to align right."""

    __slots__ = ()


def _num(value: object) -> _Num:
    return _Num(text(value))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], *, css: str = "") -> str:
    """Cells are HTML already (escape them first); :class:`_Num` cells align right."""
    heading = "".join(f"<th>{text(name)}</th>" for name in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if isinstance(cell, _Num) else f"<td>{cell}</td>"
            for cell in row
        )
        + "</tr>"
        for row in rows
    )
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{heading}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True, kw_only=True)
class CaptureView:
    """A kept pcap: its record in results.json, and its analysis or why there is none."""

    entry: PcapEntry
    analysis: CaptureAnalysis | None = None
    error: str | None = None
    names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ScenarioView:
    entry: ScenarioEntry
    timeline: Timeline
    captures: tuple[CaptureView, ...] = ()
    figure: bytes | None = None
    figure_error: str | None = None
    artifacts: tuple[str, ...] = ()  # relative to the run folder
    artifacts_clipped: int = 0


# --------------------------------------------------------------------------- sections


def _summary(run: RunEntry, views: Sequence[ScenarioView]) -> str:
    rows = []
    for index, view in enumerate(views):
        entry = view.entry
        passed = sum(1 for check in entry.checks if check.passed)
        failed = [check.name for check in entry.checks if not check.passed]
        reason = entry.error or "; ".join(failed)
        rows.append(
            [
                f'<a href="#scenario-{index}">{text(entry.name)}</a>',
                _verdict(entry.passed),
                _num(f"{passed}/{len(entry.checks)}"),
                _num(f"{entry.duration:.1f} s"),
                text(entry.started_at),
                text(reason),
            ]
        )
    failed_count = sum(1 for view in views if not view.entry.passed)
    lead = (
        f"<p>{_verdict(run.passed)}: {len(views)} scenario(s), "
        f"{len(views) - failed_count} passed, {failed_count} failed"
        + (f"; project {text(run.project)}" if run.project else "")
        + ". Run files: "
        + ", ".join(link(name) for name in RUN_FILES)
        + ".</p>"
    )
    table = _table(
        ["scenario", "result", "checks passed", "duration", "started (UTC)", "failed checks"],
        rows,
        css="summary",
    )
    return lead + table


def _timeline_section(view: ScenarioView) -> str:
    timeline = view.timeline
    parts = ["<h3>Timeline</h3>"]
    if view.figure is not None:
        data = base64.b64encode(view.figure).decode("ascii")
        caption = (
            "Steps (bars, one lane per overlap), shaping and faults (dashed lines), checks (dots)"
        )
        if view.captures:
            caption += "; below, each capture on the same axis"
        if not timeline.origin_exact:
            caption += (
                ". The run recorded no clock origin: packet times are aligned to the"
                " scenario's start time, to the second"
            )
        parts.append(
            f'<figure class="timeline"><img alt="{text("timeline of " + timeline.scenario)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{text(caption)}.</figcaption></figure>'
        )
    elif view.figure_error is not None:
        parts.append(f'<p class="note">No figure: {text(view.figure_error)}</p>')
    rows = [
        [
            _num(_seconds(at)),
            text(kind),
            text(label),
            text(detail),
            _mark(verdict),
        ]
        for at, kind, label, detail, verdict in timeline.rows()
    ]
    parts.append(
        _table(["time", "kind", "what", "detail", "verdict"], rows, css="timeline")
        if rows
        else "<p>Nothing happened.</p>"
    )
    return "".join(parts)


def _checks_section(entry: ScenarioEntry) -> str:
    ordered = sorted(entry.checks, key=lambda check: check.passed)  # failed first, stable
    rows = [
        [
            _verdict(check.passed),
            text(check.name),
            text(check.kind + (" (implicit)" if check.implicit else "")),
            _num(check.line or "-"),
            f"<pre>{text(check.detail)}</pre>" if "\n" in check.detail else text(check.detail),
        ]
        for check in ordered
    ]
    body = _table(["result", "check", "kind", "line", "evidence"], rows, css="checks")
    if entry.error:
        body = f'<p class="fail">The run broke: {text(entry.error)}</p>' + body
    return "<h3>Checks</h3>" + (body if rows else "<p>No checks were evaluated.</p>")


def _capture_section(view: CaptureView) -> str:
    entry = view.entry
    where = link(entry.file) if entry.file else "(no file)"
    head = f"<h4>{text(entry.link)}: {where} ({entry.bytes:,} bytes)</h4>"
    if entry.error is not None:
        return head + f'<p class="fail">Not captured: {text(entry.error)}</p>'
    if view.analysis is None:
        return head + f'<p class="fail">Not analysed: {text(view.error or "no file")}</p>'
    analysis = view.analysis
    parts = [head]
    read = analysis.read
    notes = []
    if read.damaged:
        notes.append(f"the read stopped early: {read.damaged}")
    if read.limited:
        notes.append(f"only the first {read.records:,} packets were analysed")
    if read.undecodable:
        notes.append(f"{read.undecodable} frame(s) did not decode")
    if analysis.unbinned:
        notes.append(f"{analysis.unbinned} packet(s) fell past the last time bin")
    if notes:
        parts.append(f'<p class="note">{text("; ".join(notes))}.</p>')
    parts.append(
        _table(
            ["metric", "value", "meaning"],
            [
                [text(name), _num(format_value(name, value)), text(PCAP_METRICS[name].meaning)]
                for name, value in analysis.metrics().items()
            ],
            css="metrics",
        )
    )
    parts.append(
        _table(
            [
                "direction",
                "packets",
                "bytes",
                "goodput bytes",
                "TCP segments",
                "retransmissions",
                "UDP datagrams",
                "RTT samples",
                "RTT p50",
            ],
            [
                [
                    text(direction_name(d.label, view.names)),
                    _num(f"{d.packets:,}"),
                    _num(f"{d.bytes:,}"),
                    _num(f"{d.goodput_bytes:,}"),
                    _num(f"{d.tcp_segments:,}"),
                    _num(d.retransmissions),
                    _num(f"{d.udp_datagrams:,}"),
                    _num(d.rtt_samples),
                    _num("-" if d.rtt_p50_ms is None else f"{d.rtt_p50_ms:.2f} ms"),
                ]
                for d in analysis.directions
            ],
            css="directions",
        )
    )
    tcp = analysis.tcp
    if tcp.segments:
        rtt = "no samples"
        if tcp.rtt_source is not None and tcp.rtt_p50_ms is not None:
            rtt = (
                f"p50 {tcp.rtt_p50_ms:.2f} ms, p99 {(tcp.rtt_p99_ms or 0):.2f} ms from "
                f"{len(tcp.rtt_samples_ms)} {tcp.rtt_source} samples of "
                f"{direction_name(tcp.rtt_direction or '?', view.names)}"
            )
        facts = {
            "connections": f"{tcp.connections}"
            + (f" (+{tcp.untracked} untracked segments)" if tcp.untracked else ""),
            "segments": f"{tcp.segments:,}",
            "retransmissions": f"{tcp.retransmissions} ({tcp.fast_retransmissions} fast, "
            f"{tcp.spurious_retransmissions} spurious); out of order {tcp.out_of_order}",
            "duplicate ACKs": str(tcp.duplicate_acks),
            "zero windows": f"{tcp.zero_windows} (probes {tcp.zero_window_probes}, keep-alives {tcp.keep_alives})",
            "max segment": f"{tcp.max_segment:,} bytes"
            + (f" (MSS option {tcp.mss_option})" if tcp.mss_option else ""),
            "RTT": rtt,
        }
        parts.append(_table(["TCP", ""], [[text(k), text(v)] for k, v in facts.items()], css="tcp"))
    udp = analysis.udp
    if udp.datagrams:
        facts = {
            "datagrams": f"{udp.datagrams:,} ({udp.lab_datagrams:,} of the lab's, "
            f"{udp.foreign} foreign, {udp.malformed} malformed)",
            "lost": str(udp.lost),
            "reordered": str(udp.reordered),
            "duplicates": str(udp.duplicates),
        }
        parts.append(_table(["UDP", ""], [[text(k), text(v)] for k, v in facts.items()], css="udp"))
        if udp.sessions:
            parts.append(
                _table(
                    [
                        "session",
                        "sender id",
                        "first",
                        "highest",
                        "received",
                        "lost",
                        "reordered",
                        "duplicates",
                        "late",
                    ],
                    [
                        [
                            text(
                                f"{direction_name(f'{s.src} -> {s.dst}', view.names)} "
                                f"(ports {s.sport} -> {s.dport})"
                            ),
                            text(f"{s.sender_id:08x}"),
                            _num(s.first_seq),
                            _num(s.highest_seq),
                            _num(s.received),
                            _num(s.lost),
                            _num(s.reordered),
                            _num(s.duplicates),
                            _num(s.late),
                        ]
                        for s in udp.sessions
                    ],
                    css="sessions",
                )
            )
    return "".join(parts)


def _steps_section(entry: ScenarioEntry, output_chars: int) -> str:
    def clip(output: str) -> str:
        if len(output) <= output_chars:
            return output
        return output[:output_chars] + f"\n[... {len(output) - output_chars} more characters]"

    items = []
    for step in entry.steps:
        status = step.error or ("timed out" if step.timed_out else f"exit {step.exit_code}")
        body = [
            f"<p>command: <code>{text(' '.join(step.argv))}</code>, timeout {step.timeout:g} s, "
            f"started {step.started:.2f} s, took {step.duration:.2f} s</p>"
        ]
        for name, output in (("stdout", step.stdout), ("stderr", step.stderr)):
            if output:
                body.append(f"<p>{name}:</p><pre>{text(clip(output))}</pre>")
        items.append(
            f"<details><summary>{text(step.name)} on {text(step.service)}: {text(status)}"
            f"</summary>{''.join(body)}</details>"
        )
    return "<h3>Steps</h3>" + ("".join(items) or "<p>No step ran.</p>")


def _artifacts_section(view: ScenarioView) -> str:
    if not view.artifacts:
        return "<h3>Artifacts</h3><p>None kept.</p>"
    items = "".join(f"<li>{link(path)}</li>" for path in view.artifacts)
    more = (
        f'<p class="note">and {view.artifacts_clipped} more</p>' if view.artifacts_clipped else ""
    )
    return f"<h3>Artifacts</h3><ul>{items}</ul>{more}"


def _scenario_section(index: int, view: ScenarioView, config: ReportConfig) -> str:
    entry = view.entry
    facts = [
        f"<p>{text(entry.description)}</p>",
        f"<p>file {text(entry.file)}, started {text(entry.started_at)}, "
        f"took {entry.duration:.1f} s</p>",
    ]
    if not entry.passed and not entry.pcaps:
        facts.append(
            f'<p class="note">To see its packets, run it again with capture: '
            f"<code>{text(rerun_command(entry.name, entry.file))}</code></p>"
        )
    captures = "".join(_capture_section(capture) for capture in view.captures)
    return (
        f'<section class="scenario" id="scenario-{index}">'
        f"<h2>{text(entry.name)}: {_verdict(entry.passed)}</h2>"
        + "".join(facts)
        + _timeline_section(view)
        + _checks_section(entry)
        + (f"<h3>Captures</h3>{captures}" if captures else "")
        + _steps_section(entry, config.output_chars)
        + _artifacts_section(view)
        + "</section>"
    )


def render_report(
    run: RunEntry, views: Sequence[ScenarioView], *, config: ReportConfig | None = None
) -> str:
    """The whole page (see the module docstring)."""
    config = config or ReportConfig()
    title = f"socketlab run {run.run_id}"
    sections = "".join(_scenario_section(index, view, config) for index, view in enumerate(views))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{text(title)}</h1>\n<h2>Summary</h2>\n{_summary(run, views)}\n"
        f"{sections}\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- I/O


def scenario_folder(name: str) -> str:
    """The folder a scenario's artifacts are kept in (the runner's naming)."""
    return _SAFE_NAME.sub("_", name).strip("_") or "_"


def capture_service(link_label: str) -> str:
    """``client -> server`` and ``client (all traffic)``: captured in ``client``
    (what results.json said before it named the service of each pcap)."""
    return link_label.split(" -> ", 1)[0].split(" (", 1)[0].strip()


def _inside(folder: Path, relative: str) -> Path | None:
    if href(relative) is None:
        return None
    path = (folder / relative).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def _artifacts(folder: Path, entry: ScenarioEntry) -> tuple[tuple[str, ...], int]:
    root = folder / scenario_folder(entry.name)
    found = [str(path.relative_to(folder)) for path in sorted(root.rglob("*")) if path.is_file()]
    found += [pcap.file for pcap in entry.pcaps if pcap.file]
    return tuple(found[:MAX_ARTIFACTS]), max(0, len(found) - MAX_ARTIFACTS)


def _capture(
    folder: Path, entry: ScenarioEntry, pcap: PcapEntry, config: ReportConfig
) -> CaptureView:
    names = {ip: service for service, ip in (entry.addresses or {}).items()}
    if pcap.error is not None or pcap.file is None:
        return CaptureView(entry=pcap, error=pcap.error, names=names)
    path = _inside(folder, pcap.file)
    if path is None:
        return CaptureView(
            entry=pcap, error=f"{pcap.file!r} is not inside the run folder", names=names
        )
    local = (entry.addresses or {}).get(pcap.service or capture_service(pcap.link))
    try:
        analysis = analyze_file(path, limits=config.pcap, local=local)
    except PcapError as exc:
        return CaptureView(entry=pcap, error=str(exc), names=names)
    return CaptureView(entry=pcap, analysis=analysis, names=names)


def scenario_view(folder: Path, entry: ScenarioEntry, config: ReportConfig) -> ScenarioView:
    """Everything the page shows of one scenario, read from the run folder."""
    timeline = build_timeline(entry)
    captures = tuple(_capture(folder, entry, pcap, config) for pcap in entry.pcaps)
    panels = [
        CapturePanel(title=capture.entry.link, analysis=capture.analysis, names=capture.names)
        for capture in captures
        if capture.analysis is not None
    ]
    figure = figure_error = None
    try:
        figure = scenario_figure(timeline, panels, max_bins=config.plot_bins)
    except (ValueError, RuntimeError, OverflowError) as exc:  # matplotlib's, for odd data
        log.warning("event=report_figure_failed scenario=%s error=%s", entry.name, exc)
        figure_error = f"the figure could not be drawn: {exc}"
    artifacts, clipped = _artifacts(folder, entry)
    return ScenarioView(
        entry=entry,
        timeline=timeline,
        captures=captures,
        figure=figure,
        figure_error=figure_error,
        artifacts=artifacts,
        artifacts_clipped=clipped,
    )


def write_report(folder: Path, *, config: ReportConfig | None = None) -> Path:
    """Build ``folder/report.html`` from ``folder/results.json`` and what the run kept."""
    config = config or ReportConfig()
    run = load_results(folder)
    path = folder / REPORT_FILE
    try:
        views = [scenario_view(folder, entry, config) for entry in run.scenarios]
        path.write_text(render_report(run, views, config=config), encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
