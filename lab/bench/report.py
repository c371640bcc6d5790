"""Sweep reports: PNG plots (matplotlib, Agg) and one self-contained HTML page.

Everything here works from a :class:`~lab.bench.records.SweepResult`, so a
report can be rebuilt from a saved ``sweep.json`` without the lab. Plots are
drawn on ``matplotlib.figure.Figure`` directly (no pyplot state, no display);
the HTML embeds them as base64 ``data:`` URLs and carries no script, so one
file is the whole report.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Final

from lab.bench.records import SweepResult
from lab.bench.throughput import MATHIS_C, mathis_bound
from socketlab.udp.compare import LOSS_BASED  # the container's tcp-vs-udp words use it too

GOODPUT_PLOT: Final = "goodput-vs-loss.png"
DELIVERY_PLOT: Final = "delivery-vs-loss.png"
LATENCY_PLOT: Final = "latency-vs-loss.png"
RESULT_FILE: Final = "sweep.json"
REPORT_FILE: Final = "report.html"
CURVE_POINTS: Final = 60
DPI: Final = 100

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn: it costs ~0.5 s
    from matplotlib.figure import Figure


def _figure() -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415 - only when drawing (see the imports)

    return Figure(figsize=(10, 5))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _delay_label(delay: float) -> str:
    return f"delay {delay * 1000:g} ms"


_STYLES: Final = ("o-", "v-.", "^--", "D:")


def _style(result: SweepResult, algorithm: str) -> str:
    return _STYLES[result.algorithms.index(algorithm) % len(_STYLES)]


def _cc_label(algorithm: str) -> str:
    return f"TCP {algorithm}" if algorithm else "TCP"


def plot_goodput(result: SweepResult) -> bytes:
    """Goodput vs loss, one colour per delay: TCP solid (one marker and line style per
    congestion control), UDP dotted, the Mathis bound dashed."""
    figure = _figure()
    axes = figure.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    positive: list[float] = []
    bounds: list[float] = []
    for index, delay in enumerate(result.delays):
        colour = colours[index % len(colours)]
        for number, algorithm in enumerate(result.algorithms):
            points = result.at_delay(delay, algorithm)
            losses = [p.loss * 100 for p in points]
            tcp = [p.tcp_bits_per_second / 1e6 for p in points]
            positive += [v for v in tcp if v > 0]
            label = f"{_cc_label(algorithm)}, {_delay_label(delay)}"
            axes.plot(losses, tcp, _style(result, algorithm), color=colour, label=label)
            if number == 0:
                # UDP ignores congestion control: one line per delay
                udp = [p.udp_bits_per_second / 1e6 for p in points]
                positive += [v for v in udp if v > 0]
                axes.plot(losses, udp, "s:", color=colour, label=f"UDP, {_delay_label(delay)}")
        points = result.at_delay(delay)
        rtts = [p.rtt for p in points if p.rtt]
        lossy = sorted({p.loss for p in points if p.loss > 0})
        if rtts and lossy:
            # A smooth curve at this delay's median measured RTT; with one lossy
            # point, start lower so the curve is a curve, not a dot.
            rtt = median(rtts)
            high = max(lossy)
            low = min(lossy) if len(lossy) > 1 else high / 4
            shares = [low + (high - low) * i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
            bound = [(mathis_bound(rtt=rtt, loss=s, mss=result.mss) or 0.0) / 1e6 for s in shares]
            at_points = [
                (mathis_bound(rtt=rtt, loss=s, mss=result.mss) or 0.0) / 1e6 for s in lossy
            ]
            bounds += at_points
            axes.plot(
                [s * 100 for s in shares],
                bound,
                "--",
                color=colour,
                alpha=0.6,
                label=f"Mathis bound, RTT {rtt * 1000:.1f} ms",
            )
            axes.plot([s * 100 for s in lossy], at_points, "x", color=colour, alpha=0.8)
    if positive and all(math.isfinite(v) for v in positive):
        axes.set_yscale("log")
        # The bound soars at small loss: keep the measurements readable.
        drawn = positive + [b for b in bounds if b > 0]
        axes.set_ylim(min(drawn) / 2, min(max(drawn), max(positive) * 10) * 1.5)
    axes.set_xlabel("loss (%)")
    axes.set_ylabel("goodput (Mbit/s)")
    axes.set_title(f"{result.scenario}: goodput vs loss ({result.link})")
    axes.grid(True, which="both", alpha=0.3)
    # Outside the axes: inside, it hides the points it describes.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def plot_latency(result: SweepResult) -> bytes | None:
    """p99 message latency vs loss: TCP (per congestion control) against UDP; None when
    the points carry no latency (a sweep recorded before it was measured)."""
    if not any(p.tcp_latency_p99_ms is not None for p in result.points):
        return None
    figure = _figure()
    axes = figure.add_subplot()
    for index, delay in enumerate(result.delays):
        colour = f"C{index % 10}"
        for number, algorithm in enumerate(result.algorithms):
            points = [
                p for p in result.at_delay(delay, algorithm) if p.tcp_latency_p99_ms is not None
            ]
            axes.plot(
                [p.loss * 100 for p in points],
                [p.tcp_latency_p99_ms or 0.0 for p in points],
                _style(result, algorithm),
                color=colour,
                label=f"{_cc_label(algorithm)} p99, {_delay_label(delay)}",
            )
            if number == 0:
                udp = [p for p in points if p.udp_latency_p99_ms is not None]
                axes.plot(
                    [p.loss * 100 for p in udp],
                    [p.udp_latency_p99_ms or 0.0 for p in udp],
                    "s:",
                    color=colour,
                    label=f"UDP p99, {_delay_label(delay)}",
                )
    axes.set_yscale("log")
    axes.set_xlabel("loss (%)")
    axes.set_ylabel("p99 message latency (ms)")
    axes.set_title(f"{result.scenario}: per-message latency vs loss")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def overlay_sentence(result: SweepResult) -> str:
    """One sentence on the congestion controls overlaid (empty with only one)."""
    shown = [a for a in result.algorithms if a]
    if len(shown) < 2:
        return ""
    loss_based = [a for a in shown if a in LOSS_BASED]
    model_based = [a for a in shown if a not in LOSS_BASED]
    if not loss_based or not model_based:
        return (
            f"{' and '.join(shown)} are overlaid: compare each with the Mathis bound, "
            "the steady state of a TCP that halves its window at every loss."
        )
    verb = ("treats", "halves") if len(loss_based) == 1 else ("treat", "halve")
    return (
        f"{', '.join(loss_based)} {verb[0]} every loss as congestion and {verb[1]} the "
        "window, so goodput falls with loss roughly as the Mathis "
        f"bound (MSS/RTT · 1.22/√p) predicts, while {', '.join(model_based)} paces at "
        "its estimate of the bottleneck's bandwidth and does not back off on random loss, "
        "so it stays far above the bound: the link is the same, only the sender's reaction "
        "to loss differs."
    )


def plot_delivery(result: SweepResult) -> bytes:
    """Share of the payload delivered vs loss: TCP (all of it) vs UDP (what got through)."""
    figure = _figure()
    axes = figure.add_subplot()
    all_losses = sorted({p.loss * 100 for p in result.points})
    axes.plot(all_losses, [100 - x for x in all_losses], "k--", alpha=0.4, label="100% - loss")
    for index, delay in enumerate(result.delays):
        colour = f"C{index % 10}"
        # the first algorithm's points: delivery does not depend on it (TCP delivers all)
        points = result.at_delay(delay, result.algorithms[0])
        losses = [p.loss * 100 for p in points]
        axes.plot(
            losses,
            [p.tcp_delivered * 100 for p in points],
            "o-",
            color=colour,
            label=f"TCP, {_delay_label(delay)}",
        )
        axes.plot(
            losses,
            [p.udp_delivered * 100 for p in points],
            "s:",
            color=colour,
            label=f"UDP, {_delay_label(delay)}",
        )
    axes.set_xlabel("loss (%)")
    axes.set_ylabel("payload delivered (%)")
    axes.set_ylim(bottom=max(0.0, min([p.udp_delivered * 100 for p in result.points] + [80]) - 5))
    axes.set_title(f"{result.scenario}: TCP vs UDP delivery")
    axes.grid(True, alpha=0.3)
    # Outside the axes: inside, it hides the points it describes.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(figure)


def sweep_plots(result: SweepResult) -> dict[str, bytes]:
    """File name -> PNG bytes for every plot of a sweep."""
    if not result.points:
        return {}
    plots = {GOODPUT_PLOT: plot_goodput(result), DELIVERY_PLOT: plot_delivery(result)}
    latency = plot_latency(result)
    if latency is not None:
        plots[LATENCY_PLOT] = latency
    return plots


def _table(rows: Sequence[Mapping[str, str]]) -> str:
    if not rows:
        return "<p>No points were measured.</p>"
    head = "".join(f"<th>{html.escape(column)}</th>" for column in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row.values()) + "</tr>"
        for row in rows
    )
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _definitions(items: Mapping[str, str]) -> str:
    return (
        "<dl>"
        + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items())
        + "</dl>"
    )


STYLE: Final = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _meaning(result: SweepResult) -> str:
    """The overlay's sentence, and what the harshest point's numbers mean."""
    parts = []
    overlay = overlay_sentence(result)
    if overlay:
        parts.append(f'<p class="overlay">{html.escape(overlay)}</p>')
    harshest = max(result.points, key=lambda p: (p.loss, p.delay), default=None)
    for algorithm in result.algorithms:
        worst = result.at_delay(harshest.delay, algorithm) if harshest else []
        if worst and worst[-1].meaning:
            point = worst[-1]
            where = f"At {point.loss * 100:g} % loss and {point.delay * 1000:g} ms"
            parts.append(f"<p>{html.escape(where)}: {html.escape(point.meaning)}</p>")
    if not parts:
        return ""
    return "<h2>What the numbers mean</h2>\n" + "\n".join(parts)


def render_html(result: SweepResult, plots: Mapping[str, bytes]) -> str:
    """The self-contained report: conditions, plots (embedded), table, versions."""
    algorithms = [a for a in result.algorithms if a]
    offers = sorted(
        {p.udp_offered_bits_per_second for p in result.points} - {None}, key=lambda o: o or 0.0
    )
    pacing = (
        ", ".join(f"{o / 1e6:g} Mbit/s" for o in offers if o is not None)
        if offers
        else f"{result.datagram_size * 8 * result.datagram_rate / 1e6:g} Mbit/s"
    )
    conditions = {
        "scenario": result.scenario,
        "link shaped": result.link,
        "engine": ", ".join(result.engines),
        "TCP congestion control": ", ".join(algorithms) or "not reported",
        "UDP offered (paced)": pacing,
        "delays (one way)": ", ".join(f"{d * 1000:g} ms" for d in result.delays),
        "losses": ", ".join(f"{p * 100:g}%" for p in sorted({p.loss for p in result.points})),
        "payload per protocol and point": f"{result.bytes_per_point:,} bytes",
        "UDP datagrams": f"{result.datagram_size} bytes at {result.datagram_rate:g}/s",
        "MSS for the Mathis bound": f"{result.mss} bytes",
        "started": result.started,
        "finished": result.finished,
    }
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in plots.items()
    )
    title = f"socketlab sweep: {result.scenario}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Conditions</h2>
{_definitions(conditions)}
<h2>Plots</h2>
{images}
<p class="note">Mathis et al. bound: goodput &le; (MSS / RTT) &middot; C / &radic;p with
C = &radic;(3/2) &asymp; {MATHIS_C:.2f} (periodic loss, no delayed ACKs), drawn at each
delay's measured RTT for reference: a model of steady state, not a ceiling. Short
transfers spend much of their time in slow start, before losses shape the window, and
can beat it; raise <code>--bytes</code> to get closer to steady state.</p>
{_meaning(result)}
<h2>Results</h2>
{_table(result.rows())}
<h2>Versions</h2>
{_definitions(dict(result.versions))}
</body>
</html>
"""


def write_sweep(result: SweepResult, out_dir: Path) -> list[Path]:
    """Write ``sweep.json``, the PNGs and ``report.html`` into ``out_dir``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    data_path = out_dir / RESULT_FILE
    data_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    written.append(data_path)
    plots = sweep_plots(result)
    for name, data in plots.items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    report = out_dir / REPORT_FILE
    report.write_text(render_html(result, plots), encoding="utf-8")
    written.append(report)
    return written
