"""One PNG per scenario: the timeline on top, each capture's goodput and UDP gaps below,
all on the same time axis (seconds since the first step started).

Drawn on ``matplotlib.figure.Figure`` directly (no pyplot state, no display), as
:mod:`lab.bench.report` does. Text from the run goes through :func:`plain`, so a
``$`` in a step name is a dollar sign, not the start of mathtext.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from lab.report.analysis import OTHER, CaptureAnalysis, TimeBin
from lab.report.timeline import MarkKind, Timeline, Verdict

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn: it costs ~0.5 s
    from matplotlib.axes import Axes

DPI: Final = 100
WIDTH_INCHES: Final = 11.0
MAX_DIRECTIONS: Final = 4  # goodput lines per capture; the rest are summed as "other"
LABEL_CHARS: Final = 48
COLOURS: Final = {Verdict.OK: "#4c9a2a", Verdict.FAILED: "#c0392b", Verdict.NEUTRAL: "#7f8c8d"}
MARK_COLOURS: Final = {MarkKind.SHAPING: "#2471a3", MarkKind.FAULT: "#8e44ad"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: str, limit: int = LABEL_CHARS) -> str:
    """Text safe to hand matplotlib: no mathtext, no control characters, bounded length."""
    flat = _CONTROL.sub(" ", text)
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat.replace("$", r"\$")


@dataclass(frozen=True, kw_only=True)
class CapturePanel:
    """One capture to plot: a title, its analysis, and names for its IP addresses."""

    title: str
    analysis: CaptureAnalysis
    names: Mapping[str, str] = field(default_factory=dict)  # IP address -> service


@dataclass(frozen=True, kw_only=True)
class PlotBin:
    """A coarse bin on the plot's axis (seconds since the timeline's 0)."""

    start: float
    width: float
    goodput: Mapping[str, int]  # direction label -> bytes
    retransmissions: int = 0
    udp_received: int = 0
    udp_gaps: int = 0
    udp_reordered: int = 0

    def mbit_per_second(self, label: str) -> float:
        return self.goodput.get(label, 0) * 8 / self.width / 1e6


def coarsen(
    bins: Sequence[TimeBin], *, bin_seconds: float, origin: float, max_bins: int
) -> list[PlotBin]:
    """Merge an analysis's bins into at most ``max_bins`` equal ones, relative to ``origin``.

    Every bin between the first and the last is present (zero when nothing happened),
    so lines drop to zero over a stall instead of bridging it."""
    if not bins:
        return []
    # Bins start at whole multiples of bin_seconds: count in those units, exactly.
    keys = [round(item.start / bin_seconds) for item in bins]
    span = keys[-1] - keys[0] + 1
    factor = max(1, math.ceil(span / max_bins))
    count = math.ceil(span / factor)
    width = bin_seconds * factor
    merged: list[dict[str, int]] = [{} for _ in range(count)]
    counters = [[0, 0, 0, 0] for _ in range(count)]
    for key, item in zip(keys, bins, strict=True):
        index = (key - keys[0]) // factor
        for label, size in item.goodput.items():
            merged[index][label] = merged[index].get(label, 0) + size
        tally = counters[index]
        tally[0] += item.retransmissions
        tally[1] += item.udp_received
        tally[2] += item.udp_gaps
        tally[3] += item.udp_reordered
    first = keys[0] * bin_seconds - origin
    return [
        PlotBin(
            start=first + index * width,
            width=width,
            goodput=merged[index],
            retransmissions=tally[0],
            udp_received=tally[1],
            udp_gaps=tally[2],
            udp_reordered=tally[3],
        )
        for index, tally in enumerate(counters)
    ]


def direction_name(label: str, names: Mapping[str, str]) -> str:
    """``172.18.0.3 -> 172.18.0.4`` as ``client -> server`` when the addresses are known."""
    if label == OTHER:
        return label
    src, _, dst = label.partition(" -> ")
    return f"{names.get(src, src)} -> {names.get(dst, dst)}"


def top_directions(analysis: CaptureAnalysis, limit: int = MAX_DIRECTIONS) -> list[str]:
    """The direction labels with the most goodput (those worth a line), most first."""
    ranked = sorted(
        (d for d in analysis.directions if d.goodput_bytes > 0),
        key=lambda d: (-d.goodput_bytes, d.label),
    )
    return [d.label for d in ranked[:limit]]


def _draw_timeline(axes: Axes, timeline: Timeline) -> None:
    for span in timeline.spans:
        width = max(span.end - span.start, 1e-3)
        axes.barh(
            span.lane,
            width,
            left=span.start,
            height=0.6,
            color=COLOURS[span.verdict],
            alpha=0.85,
            edgecolor="black",
            linewidth=0.5,
        )
        axes.text(
            span.start,
            span.lane - 0.36,
            plain(f"{span.name} ({span.summary})"),
            fontsize=8,
            va="bottom",
            ha="left",
            clip_on=True,
        )
    check_row = timeline.lanes
    for mark in timeline.marks:
        if mark.at is None:
            continue
        if mark.kind is MarkKind.CHECK:
            axes.plot(
                mark.at,
                check_row,
                marker="o" if mark.verdict is Verdict.OK else "X",
                color=COLOURS[mark.verdict],
                markersize=7,
                linestyle="none",
            )
            continue
        colour = MARK_COLOURS[mark.kind]
        axes.axvline(mark.at, color=colour, linestyle="--", linewidth=1.0, alpha=0.8)
        axes.text(
            mark.at,
            -0.55,
            " " + plain(mark.label, 36),
            rotation=90,
            fontsize=7,
            color=colour,
            va="top",
            ha="left",
            clip_on=True,
        )
    axes.set_yticks(
        [*range(timeline.lanes), check_row],
        [*(f"lane {lane + 1}" for lane in range(timeline.lanes)), "checks"],
    )
    axes.set_ylim(check_row + 0.7, -0.8)
    axes.grid(True, axis="x", alpha=0.3)
    title = f"{timeline.scenario}: steps, shaping and faults, checks"
    if not timeline.origin_exact:
        title += " (packet times aligned to the scenario start: approximate)"
    axes.set_title(plain(title, 120), fontsize=10, loc="left")


def _draw_goodput(axes: Axes, panel: CapturePanel, bins: list[PlotBin]) -> None:
    labels = top_directions(panel.analysis)
    shown = set(labels)
    xs = [item.start + item.width / 2 for item in bins]
    for label in labels:
        axes.step(
            xs,
            [item.mbit_per_second(label) for item in bins],
            where="mid",
            label=plain(direction_name(label, panel.names)),
        )
    rest = [
        sum(size for name, size in item.goodput.items() if name not in shown) * 8 / item.width / 1e6
        for item in bins
    ]
    if any(rest):
        axes.step(xs, rest, where="mid", label="other", color="grey")
    resent = [
        (x, item.retransmissions) for x, item in zip(xs, bins, strict=True) if item.retransmissions
    ]
    if resent:
        twin = axes.twinx()
        twin.bar(
            [x for x, _ in resent],
            [n for _, n in resent],
            width=bins[0].width * 0.8,
            color=COLOURS[Verdict.FAILED],
            alpha=0.35,
            label="retransmissions",
        )
        twin.set_ylabel("retransmissions", fontsize=8, color=COLOURS[Verdict.FAILED])
        twin.tick_params(labelsize=7)
    axes.set_ylabel("goodput (Mbit/s)", fontsize=8)
    axes.set_title(plain(f"{panel.title}: goodput", 120), fontsize=9, loc="left")
    axes.grid(True, alpha=0.3)
    if labels or any(rest):
        axes.legend(fontsize=7, loc="upper right")


def _draw_udp(axes: Axes, panel: CapturePanel, bins: list[PlotBin]) -> None:
    xs = [item.start for item in bins]
    width = bins[0].width if bins else 1.0
    axes.bar(
        xs,
        [b.udp_received for b in bins],
        width=width,
        align="edge",
        color="#95a5a6",
        label="received",
    )
    axes.bar(
        xs,
        [-b.udp_gaps for b in bins],
        width=width,
        align="edge",
        color=COLOURS[Verdict.FAILED],
        label="missing (gap opened)",
    )
    axes.bar(
        xs,
        [-b.udp_reordered for b in bins],
        width=width,
        align="edge",
        color="#e67e22",
        label="late (reordered)",
    )
    axes.axhline(0, color="black", linewidth=0.5)
    udp = panel.analysis.udp
    axes.set_title(
        plain(f"{panel.title}: lab datagrams (lost {udp.lost}, reordered {udp.reordered})", 120),
        fontsize=9,
        loc="left",
    )
    axes.set_ylabel("per bin", fontsize=8)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")


def scenario_figure(
    timeline: Timeline, panels: Sequence[CapturePanel], *, max_bins: int = 200
) -> bytes:
    """The scenario's PNG: timeline, then per capture goodput (and UDP gaps when it has any)."""
    origin = timeline.origin
    if origin is None:
        starts = [p.analysis.first_time for p in panels if p.analysis.first_time is not None]
        origin = min(starts, default=0.0)
    rows: list[tuple[str, CapturePanel | None, list[PlotBin]]] = [("timeline", None, [])]
    for panel in panels:
        bins = coarsen(
            panel.analysis.bins,
            bin_seconds=panel.analysis.bin_seconds,
            origin=origin,
            max_bins=max_bins,
        )
        rows.append(("goodput", panel, bins))
        if panel.analysis.udp.lab_datagrams:
            rows.append(("udp", panel, bins))
    heights = [1.0 + 0.45 * (timeline.lanes + 1)] + [
        2.2 if kind == "goodput" else 1.8 for kind, _, _ in rows[1:]
    ]
    from matplotlib.figure import Figure  # noqa: PLC0415 - only when drawing (see the imports)

    figure = Figure(figsize=(WIDTH_INCHES, sum(heights) + 0.6))
    grid = figure.add_gridspec(len(rows), 1, height_ratios=heights, hspace=0.45)
    top = figure.add_subplot(grid[0, 0])
    _draw_timeline(top, timeline)
    bottom = top
    for index, (kind, row_panel, bins) in enumerate(rows[1:], start=1):
        bottom = figure.add_subplot(grid[index, 0], sharex=top)
        if row_panel is None:
            continue
        if kind == "goodput":
            _draw_goodput(bottom, row_panel, bins)
        else:
            _draw_udp(bottom, row_panel, bins)
    low = min([timeline.start, *(b.start for _, _, bins in rows for b in bins[:1])])
    high = max([timeline.end, *(b.start + b.width for _, _, bins in rows for b in bins[-1:])])
    pad = max(0.05 * (high - low), 0.1)
    top.set_xlim(low - pad, high + pad)
    bottom.set_xlabel("seconds since the first step started")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()
