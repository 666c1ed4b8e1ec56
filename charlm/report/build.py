"""A report of runs, from their directories to one HTML page.

Everything but the task views is read from the runs' JSON files; the
surprisal views load each language model's best weights and score an excerpt
of its validation split (or of a given text), the attention views translate a
few of a seq2seq run's validation sources. A run whose view cannot be made
(its data is gone, say) still gets its curves, with a note saying why.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from charlm import __version__
from charlm.errors import CharlmError
from charlm.report.html import AttentionView, TextView, render_report
from charlm.report.plots import Figure, make_figures, require_matplotlib
from charlm.report.runs import Run, read_runs

EXCERPT_CHARS = 1500  # characters shown per run: about 250 KB of page each
SCORED_TOKENS = 20_000  # tokens scored for the hardest-characters table (the excerpt is their start)
ATTENTION_EXAMPLES = 3  # validation sources (evenly spaced through them) whose attention is drawn


@dataclass(frozen=True)
class Report:
    html: str
    runs: list[Run]
    notes: list[str]  # views that could not be made, and why


def surprisal_view(run: Run, text_path: Path | None, length: int, cache_dir: Path | None) -> TextView:
    """The run's model over an excerpt: its validation split (from a line start near its beginning) or text_path.

    Scored from the text's first character, as `charlm eval --exact` scores it,
    so each character's surprisal is the one that pass gives it.
    """
    from charlm.report.source import load_model, text_ids
    from charlm.report.surprisal import surprisal_of
    from charlm.report.views import line_start

    checkpoint = load_model(run.path)
    ids, where = text_ids(checkpoint, path=text_path, max_tokens=SCORED_TOKENS, cache_dir=cache_dir)
    scored = surprisal_of(checkpoint.model, ids, checkpoint.vocab)
    characters = scored.characters()
    start = line_start([char for char, _, _ in characters]) if text_path is None else 0
    shown = characters[start:start + length]
    return TextView(run=run.name, source=f"{where}, characters {start + 1:,} to {start + len(shown):,}",
                    cells=[(char.text, bits, top) for char, bits, top in shown], hardest=scored.hardest(10),
                    unit=checkpoint.vocab.unit)


def attention_view(run: Run, index: int) -> list[Figure]:
    """Attention maps of the greedy translations of a few of the run's validation sources."""
    from charlm.report.attention import AttentionMap, attention_figure
    from charlm.report.source import load_model
    from charlm.tasks.seq2seq.decode import translate
    from charlm.tasks.seq2seq.inference import recorded_validation
    from charlm.tasks.seq2seq.task import decoded_subset
    from charlm.text.pairs import group_references

    checkpoint = load_model(run.path)
    if checkpoint.model.spec.attention == "none":
        raise CharlmError("it was trained with --attention none, so there is no attention to draw")
    references = decoded_subset(group_references(recorded_validation(checkpoint)), ATTENTION_EXAMPLES)
    translations = translate(checkpoint.model, checkpoint.vocab, [source for source, _ in references])
    plt = require_matplotlib()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "charlm", "font.size": 9}):
        return [attention_figure(plt, AttentionMap.of(t), f"attention-{index}-{i}", f"Validation example {i + 1}")
                for i, t in enumerate(translations)]


def build_report(paths: list[Path], text_path: Path | None = None, length: int = EXCERPT_CHARS,
                 cache_dir: Path | None = None) -> Report:
    require_matplotlib()  # before any work: a missing extra is a one-line error, at once
    runs = read_runs(paths)
    figures = make_figures(runs)
    views, notes, attention = [], [], []
    for index, run in enumerate(runs):
        if run.task == "seq2seq":
            try:
                attention.append(AttentionView(run.name, attention_view(run, index)))
            except CharlmError as exc:
                notes.append(f"{run.name}: no attention view: {exc}")
                attention.append(AttentionView(run.name, [], note=f"No attention view: {exc}"))
        if run.task != "lm":
            continue
        try:
            views.append(surprisal_view(run, text_path, length, cache_dir))
        except CharlmError as exc:
            notes.append(f"{run.name}: no surprisal view: {exc}")
            views.append(TextView(run=run.name, source="", cells=[], note=f"No surprisal view: {exc}"))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = render_report(runs, figures, views, generated=f"made {stamp} by charlm {__version__}", attention=attention)
    return Report(html=html, runs=runs, notes=notes)
