"""The report as one self-contained HTML page: inline CSS and SVG, no script, nothing fetched.

Sections (each an element with the id in brackets): loss curves and other
plots (curves), the runs' best figures and settings with their differences
highlighted (runs), every evaluation with its figures and preview sample
(evaluations), for language models a validation excerpt coloured by
surprisal (surprisal), each character's top predictions shown on hover by
CSS alone, for classifiers the confusion matrix (task-views), and for
seq2seq runs the attention maps of a few validation translations
(attention). Figures keep full precision in `data-value` attributes, and
each character its surprisal in `data-bits`, so the page can be checked
by a program as well as read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from charlm.report.colors import SURPRISAL, ink_for, legend_stops, visible
from charlm.report.confusion import confusion_html
from charlm.report.plots import Figure, run_color
from charlm.report.runs import Run, lower_is_better, settings_table

_LEVELS = 32  # surprisal colours are quantised to this many steps, each a CSS class


@dataclass
class TextView:
    """A text coloured by surprisal: (character, bits, top predictions) per character."""

    run: str
    source: str  # where the text came from, for people
    cells: list[tuple[str, float, list[tuple[str, float]]]]
    hardest: list[tuple[str, float, int]] = field(default_factory=list)
    unit: str = "char"
    note: str = ""  # why there is no view, when cells is empty

    @property
    def mean_bits(self) -> float:
        scored = [bits for _, bits, _ in self.cells if math.isfinite(bits)]
        return sum(scored) / len(scored) if scored else math.nan


@dataclass
class AttentionView:
    """A seq2seq run's attention maps (report Figures), or a note saying why there are none."""

    run: str
    figures: list[Figure]
    note: str = ""


def _attention_view(view: AttentionView, index: int) -> str:
    title = f"<h3>{_swatch(index)}{escape(view.run)}</h3>"
    if not view.figures:
        return f'{title}<p class="muted">{escape(view.note)}</p>'
    return title + _curves(view.figures)


def _number(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–" if value is None else escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:,.{digits}f}"


def _cell(value: object, digits: int = 4, tag: str = "td") -> str:
    attribute = f' data-value="{value!r}"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<{tag}{attribute}>{_number(value, digits)}</{tag}>"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _swatch(index: int) -> str:
    return f'<span class="swatch" style="background:{run_color(index)}"></span>'


def _css() -> str:
    levels = "".join(
        f".k{i}{{background:{(bg := SURPRISAL.color(SURPRISAL.high * i / (_LEVELS - 1)))};color:{ink_for(bg)}}}"
        for i in range(_LEVELS))
    gradient = ", ".join(legend_stops(SURPRISAL))
    return _STYLE + levels + f".bar{{background:linear-gradient(to right, {gradient})}}"


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;margin:0 auto;max-width:1100px;padding:0 20px 40px}
h1{font-size:24px;margin:24px 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}nav a{margin-right:14px}.muted{color:#666}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:10px 24px}
figure{margin:0}figcaption{font-size:12px;color:#555}svg.plot{width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e5e5e5;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}tr.diff td{background:#fff4c2}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
pre.preview{white-space:pre-wrap;margin:0;font-size:12px;text-align:left;max-width:640px}
.sv{font:13px/1.6 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all;border:1px solid #ddd;padding:10px;background:#fff}
.sv span{position:relative;cursor:default}.sv span:hover{outline:1px solid #000;z-index:5}
.sv span[data-tip]:hover::after{content:attr(data-tip);position:absolute;left:0;top:1.5em;z-index:10;background:#222;color:#fff;padding:5px 8px;border-radius:4px;white-space:pre;font-size:12px;line-height:1.35;pointer-events:none}
.legend{display:flex;align-items:center;gap:8px;font-size:12px;margin:6px 0}.bar{width:260px;height:12px;border:1px solid #ccc}
.ticks{display:flex;justify-content:space-between;width:262px;font-size:11px;color:#444}
summary{cursor:pointer;margin:4px 0}.chip{font-family:ui-monospace,monospace;padding:0 4px;border-radius:2px}
"""


def _curves(figures: list[Figure]) -> str:
    if not figures:
        return '<p class="muted">No metrics.jsonl lines to plot.</p>'
    return '<div class="plots">' + "".join(
        f'<figure id="plot-{f.key}"><h3>{escape(f.title)}</h3>{f.svg}'
        + (f"<figcaption>{escape(f.caption)}</figcaption>" if f.caption else "") + "</figure>"
        for f in figures) + "</div>"


def _runs(runs: list[Run]) -> str:
    head = ("<tr><th>run</th><th>task</th><th>model</th><th>parameters</th><th>steps</th><th>time</th>"
            "<th>best</th><th></th><th>at step</th><th>after</th><th>final train loss</th><th>tokens/s</th></tr>")
    rows = []
    for index, run in enumerate(runs):
        s, model = run.summary(), run.record.get("model", {})
        shape = f"{model.get('cell', '?')} {model.get('num_layers', '?')}x{model.get('hidden_size', '?')}"
        rows.append(f"<tr>{'<td>' + _swatch(index) + escape(run.name) + '</td>'}<td>{escape(run.task)}</td>"
                    f"<td>{escape(shape)}</td>{_cell(s['parameters'])}{_cell(s['steps'])}"
                    f"<td>{_duration(s['elapsed'])}</td>{_cell(s['best'], 4)}"
                    f"<td>{escape(s['main_metric'] or 'no evaluation yet')}</td>{_cell(s['best_step'])}"
                    f"<td>{_duration(s['best_elapsed'])}</td>{_cell(s['final_train_loss'])}"
                    f"{_cell(round(s['throughput']) if s['throughput'] else None)}</tr>")
    table = settings_table(runs)
    differing = [row for row in table if row[2]]
    names = "".join(f"<th>{_swatch(i)}{escape(run.name)}</th>" for i, run in enumerate(runs))

    def settings(rows: list, table_id: str) -> str:
        body = "".join(f"<tr{' class=diff' if differs else ''}><td>{escape(key)}</td>"
                       + "".join(f"<td>{escape(_setting(v))}</td>" for v in values) + "</tr>"
                       for key, values, differs in rows)
        return f'<table id="{table_id}"><tr><th>setting</th>{names}</tr>{body}</table>'

    if differing:
        compared = (f"<p>Settings that differ (highlighted): {escape(', '.join(key for key, _, _ in differing))}.</p>"
                    + settings(differing, "settings-differing"))
    else:
        compared = "<p>The runs' settings are identical.</p>" if len(runs) > 1 else ""
    damaged = "".join(f'<p class="muted">{escape(run.name)}: {run.damaged_lines} line(s) of metrics.jsonl could not '
                      "be read and were left out.</p>" for run in runs if run.damaged_lines)
    return (f'<table id="best-figures">{head}{"".join(rows)}</table>{damaged}<h3>Settings</h3>{compared}'
            f"<details><summary>All {len(table)} settings</summary>{settings(table, 'settings')}</details>")


def _setting(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _evaluations(runs: list[Run]) -> str:
    parts = []
    for index, run in enumerate(runs):
        metrics = run.val_metrics
        best = run.best_eval()
        previews = any(isinstance(row.get("preview"), str) for row in run.eval_rows)
        head = ("<tr><th>step</th><th>time</th>" + "".join(f"<th>{escape(m)}</th>" for m in metrics)
                + ("<th>preview</th>" if previews else "") + "</tr>")
        rows = []
        for row in run.eval_rows:
            preview = row.get("preview")
            shown = "" if not previews else (
                f'<td><pre class="preview">{escape(preview)}</pre></td>' if isinstance(preview, str) and preview else
                '<td class="muted">none</td>')
            mark = " ★" if row is best else ""
            rows.append(f"<tr>{_cell(row['step'])}<td>{_duration(row.get('elapsed_seconds'))}{mark}</td>"
                        + "".join(_cell(row.get(m)) for m in metrics) + f"{shown}</tr>")
        older = ("" if previews or not rows else
                 '<p class="muted">This run predates recorded previews: its metrics.jsonl has no samples.</p>')
        direction = (f"lower {escape(run.main_metric)} is better" if run.main_metric and lower_is_better(run.main_metric)
                     else f"higher {escape(run.main_metric or '')} is better")
        body = (f'<table class="evals" data-run="{escape(run.name)}">{head}{"".join(rows)}</table>' if rows else
                '<p class="muted">No evaluation yet.</p>')
        parts.append(f"<details{' open' if index == 0 else ''}><summary><b>{_swatch(index)}{escape(run.name)}</b>"
                     f" – {len(run.eval_rows)} evaluations; ★ best ({direction})</summary>{older}{body}</details>")
    return "".join(parts)


def _legend() -> str:
    ticks = "".join(f"<span>{SURPRISAL.tick_label(t)}</span>" for t in SURPRISAL.ticks)
    return (f'<div class="legend"><span>surprisal, bits</span><div><div class="bar"></div>'
            f'<div class="ticks">{ticks}</div></div><span class="muted">hover a character for the model\'s top 5 '
            "predictions at that point</span></div>")


def _level(bits: float) -> int:
    return min(_LEVELS - 1, max(0, round(bits / SURPRISAL.high * (_LEVELS - 1))))


def _tip(char: str, bits: float, top: list[tuple[str, float]]) -> str:
    lines = [f"{visible(char)}   {bits:.2f} bits   p = {2 ** -bits:.1%}", "top 5 predictions:"]
    lines += [f"  {visible(label):<4} {prob:6.1%}" for label, prob in top]
    return "\n".join(lines)


def _text_view(view: TextView, index: int) -> str:
    title = f"<h3>{_swatch(index)}{escape(view.run)}</h3>"
    if not view.cells:
        return f'{title}<p class="muted">{escape(view.note)}</p>'
    spans = []
    for char, bits, top in view.cells:
        shown = escape(visible(char) if char in "\n\t\r" else char)
        tail = "\n" if char == "\n" else ""
        if not math.isfinite(bits):
            spans.append(f'<span data-tip="{escape(visible(char))}: the first character; nothing predicts it">'
                         f"{shown}</span>{tail}")
            continue
        spans.append(f'<span class="k{_level(bits)}" data-bits="{bits:.4f}" data-tip="{escape(_tip(char, bits, top))}">'
                     f"{shown}</span>{tail}")
    hardest = "".join(
        f'<tr><td><span class="chip k{_level(bits)}">{escape(visible(char))}</span></td>{_cell(bits, 2)}{_cell(n)}</tr>'
        for char, bits, n in view.hardest)
    hardest_table = (f'<table class="hardest"><tr><th>character</th><th>mean bits</th><th>times</th></tr>{hardest}</table>'
                     if hardest else "")
    return (f"{title}<p>{escape(view.source)}: {len(view.cells):,} characters, mean "
            f"{view.mean_bits:.3f} bits per {escape(view.unit)} over those predicted.</p>{_legend()}"
            f'<div class="sv" data-run="{escape(view.run)}">{"".join(spans)}</div>'
            + (f"<h3>Hardest characters</h3><p class='muted'>Highest mean surprisal in the whole scored text "
               f"(characters seen at least 3 times).</p>{hardest_table}" if hardest_table else ""))


def _classifier_view(run: Run, index: int) -> str:
    """A classifier's per-class figures and confusion matrix at its best checkpoint, as the record keeps them."""
    title = f"<h3>{_swatch(index)}{escape(run.name)}: confusion matrix</h3>"
    validation, classes = run.record.get("validation"), run.record.get("classes", [])
    if not isinstance(validation, dict) or "confusion" not in validation:
        return f'{title}<p class="muted">No confusion matrix recorded (no evaluation yet, or an older run).</p>'
    return title + confusion_html(classes, validation, run.name)


def render_report(runs: list[Run], figures: list[Figure], views: list[TextView], generated: str = "",
                  attention: list[AttentionView] | None = None) -> str:
    """The whole page as one string."""
    names = ", ".join(run.name for run in runs)
    index = {run.name: i for i, run in enumerate(runs)}
    other_tasks = sorted({run.task for run in runs if run.task not in ("lm", "classify", "seq2seq")})
    classifiers = "".join(_classifier_view(run, i) for i, run in enumerate(runs) if run.task == "classify")
    sections = [
        ("curves", "Curves", _curves(figures)),
        ("runs", "Runs", _runs(runs)),
        ("evaluations", "Evaluations and samples", _evaluations(runs)),
    ]
    if views:
        sections.append(("surprisal", "Surprisal", "<p>Each character's background shows how surprised the model "
                         "was to see it: its surprisal, −log₂ p, in bits.</p>"
                         + "".join(_text_view(view, index.get(view.run, 0)) for view in views)))
    if attention:
        sections.append(("attention", "Attention", "<p>Greedy translations of validation sources: each row is a "
                         "character written (the last, &lt;end&gt;, the end symbol), each column a source character, "
                         "shaded by how much the decoder looked at it.</p>"
                         + "".join(_attention_view(view, index.get(view.run, 0)) for view in attention)))
    if other_tasks or classifiers:
        sections.append(("task-views", "Task views", classifiers + (
            f"<p class='muted'>No view for {escape(', '.join(other_tasks))} runs yet: their curves and figures are "
            "above.</p>" if other_tasks else "")))
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{content}</section>' for key, title, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>charlm report: {escape(names)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_css()}</style></head><body>'
            f"<h1>charlm report</h1><p class='muted'>{len(runs)} run{'s' if len(runs) != 1 else ''}: {escape(names)}"
            f"{' · ' + escape(generated) if generated else ''}</p><nav>{nav}</nav>{body}</body></html>\n")
