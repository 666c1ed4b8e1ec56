"""The report's plots: matplotlib figures of metrics.jsonl, written as inline SVG.

Each run keeps one colour in every plot. The SVG is cleaned for inlining in
one HTML page: no XML header, doctype, comments or metadata (matplotlib puts
addresses there), no namespace declarations (HTML parses inline SVG without
them), and element ids prefixed per figure so two figures' clip paths never
collide. Text stays text (svg.fonttype none), drawn in the reader's own fonts.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

from charlm.errors import CharlmError
from charlm.report.runs import Run

INSTALL_HINT = "pip install 'charlm-rnn[report]'"
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]


def run_color(index: int) -> str:
    return _PALETTE[index % len(_PALETTE)]


def require_matplotlib():
    """matplotlib.pyplot on the Agg backend, or a one-line error that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise CharlmError(f"charlm report draws its plots with matplotlib, which is not installed: {INSTALL_HINT}") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    svg: str
    caption: str = ""


def clean_svg(svg: str, prefix: str) -> str:
    """matplotlib's SVG document -> an element for inlining in HTML (see the module docstring)."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    # Scale with the page: the viewBox keeps the proportions.
    svg = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\s+height="[^"]*"', r'<svg\1 class="plot"', svg, count=1)
    return svg.strip()


def _to_svg(plt, fig, prefix: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return clean_svg(buffer.getvalue(), prefix)


def _time_axis(runs: list[Run]) -> tuple[float, str]:
    longest = max((s for run in runs for s in run.series("train_loss")[1] + run.series(run.main_metric or "", "eval")[1]
                   if math.isfinite(s)), default=0.0)
    return (3600.0, "hours") if longest > 3 * 3600 else (60.0, "minutes") if longest > 180 else (1.0, "seconds")


def _unit_label(runs: list[Run]) -> str:
    units = {run.unit for run in runs if run.task == "lm"}
    return f"per {units.pop()}" if len(units) == 1 and all(run.task == "lm" for run in runs) else "per token"


def _loss_figure(plt, runs: list[Run], by_time: bool) -> Figure:
    scale, scale_name = _time_axis(runs)
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for index, run in enumerate(runs):
        color = run_color(index)
        for rows, key, style in (("train", "train_loss", dict(linewidth=1, alpha=0.55)),
                                 ("eval", "val_loss", dict(linewidth=1.8, marker="o", markersize=3.5))):
            steps, seconds, values = run.series(key, rows)
            xs = [s / scale for s in seconds] if by_time else steps
            if values:
                ax.plot(xs, values, color=color, **style)
        ax.plot([], [], color=color, linewidth=6, label=run.name)
    ax.plot([], [], color="#444", linewidth=1, alpha=0.55, label="train")
    ax.plot([], [], color="#444", linewidth=1.8, marker="o", markersize=3.5, label="validation")
    ax.set_xlabel(f"wall-clock time ({scale_name})" if by_time else "step")
    ax.set_ylabel(f"loss (nats {_unit_label(runs)})")
    if all(run.task == "lm" for run in runs):
        bits = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
        bits.set_ylabel(f"bits {_unit_label(runs)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    key = "loss-time" if by_time else "loss-step"
    title = "Loss against wall-clock time" if by_time else "Loss against step"
    caption = "Evaluations included in the time." if by_time else "Thin: training loss (mean since the last report); dots: validation."
    return Figure(key, title, _to_svg(plt, fig, key), caption)


def _line_figure(plt, runs: list[Run], key: str, title: str, ylabel: str, series, caption: str = "",
                 log: bool = False) -> Figure | None:
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    drawn = False
    for index, run in enumerate(runs):
        xs, ys = series(run)
        if ys:
            ax.plot(xs, ys, color=run_color(index), linewidth=1.4, label=run.name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if log and all(y > 0 for run in runs for y in series(run)[1]):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure(key, title, _to_svg(plt, fig, key), caption)


def _extra_metric_figures(plt, runs: list[Run]) -> list[Figure]:
    """Every other numeric val_* figure (accuracy, F1, ...), one plot each; bits/char repeats the loss."""
    names = list(dict.fromkeys(m for run in runs for m in run.val_metrics if m not in ("val_loss", "val_bits_per_char")))
    figures = []
    for name in names:
        figure = _line_figure(plt, runs, f"metric-{name}", f"Validation: {name[4:].replace('_', ' ')}", name,
                              lambda run, name=name: run.series(name, "eval")[::2])
        if figure:
            figures.append(figure)
    return figures


def make_figures(runs: list[Run]) -> list[Figure]:
    """Every plot the runs' metrics allow, in reading order; none for a run without metrics."""
    plt = require_matplotlib()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "charlm", "font.size": 9}):
        figures = [_loss_figure(plt, runs, by_time=False), _loss_figure(plt, runs, by_time=True)]
        figures.append(_line_figure(plt, runs, "lr", "Learning rate", "learning rate",
                                    lambda run: run.series("lr")[::2], log=True))
        estimated = any(run.throughput()[2] != "recorded" for run in runs if run.throughput()[1])
        figures.append(_line_figure(
            plt, runs, "throughput", "Throughput", "tokens per second", lambda run: run.throughput()[:2],
            "Estimated from the time between progress reports (evaluation pauses included) for runs that did not "
            "record it." if estimated else ""))
        figures.append(_line_figure(plt, runs, "grad-norm", "Gradient norm", "global norm before clipping",
                                    lambda run: run.series("grad_norm")[::2], log=True))
        figures.extend(_extra_metric_figures(plt, runs))
    if not any(run.train_rows or run.eval_rows for run in runs):
        return []
    return [figure for figure in figures if figure is not None]
