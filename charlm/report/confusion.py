"""A classifier's figures as tables: per class precision, recall, F1 and support, and the confusion matrix.

The confusion matrix has true classes as rows and predictions as columns;
each cell is shaded by its share of its row (white: none of the row, dark
blue: all of it), so a row's errors stand out whatever the class's size.
Without colour the counts stand alone, zeros as dots. For the terminal
(rich renderables) and the HTML report (markup); no torch.

`scores` is the JSON form of a classification's figures: accuracy,
macro_f1, and per class lists precision, recall, f1, support and the
confusion matrix (ClassificationScores.to_dict(), as checkpoints record it).
"""

from __future__ import annotations

from html import escape

from rich.style import Style
from rich.table import Table
from rich.text import Text

from charlm.report.colors import SHARE, ink_for

SHORT = 3  # column headings: the shortest unique prefix of each class name, at least this long


def short_names(classes: list[str]) -> list[str]:
    """The shortest prefixes (at least SHORT characters) that tell the classes apart."""
    names = []
    for name in classes:
        length = SHORT
        while length < len(name) and any(o != name and o[:length] == name[:length] for o in classes):
            length += 1
        names.append(name[:length])
    return names


def row_shares(confusion: list[list[int]]) -> list[list[float]]:
    """Each count as a share of its row (0 for an empty row)."""
    return [[count / total if (total := sum(row)) else 0.0 for count in row] for row in confusion]


def scored(scores: dict) -> list[bool]:
    """Whether each class counts in macro-F1: it has true examples or predictions (else its figures say nothing)."""
    confusion = scores["confusion"]
    return [sum(confusion[i]) > 0 or sum(row[i] for row in confusion) > 0 for i in range(len(confusion))]


def _figure(scores: dict, key: str, index: int, counted: bool) -> str:
    return f"{scores[key][index]:.3f}" if counted else "–"


def per_class_table(classes: list[str], scores: dict) -> Table:
    """Precision, recall, F1 and support per class; – for a class neither present nor predicted."""
    table = Table(box=None, pad_edge=False)
    for name, justify in (("class", "left"), ("precision", "right"), ("recall", "right"), ("F1", "right"),
                          ("support", "right")):
        table.add_column(name, justify=justify)
    for i, (name, counted) in enumerate(zip(classes, scored(scores))):
        table.add_row(name, *(_figure(scores, key, i, counted) for key in ("precision", "recall", "f1")),
                      f"{scores['support'][i]:,}")
    return table


def confusion_table(classes: list[str], confusion: list[list[int]], colour: bool) -> Table:
    """Rows true, columns predicted; with colour each cell's background is its share of the row."""
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("true \\ predicted", justify="left", no_wrap=True)
    for short in short_names(classes):
        table.add_column(short, justify="right", no_wrap=True)
    for name, row, shares in zip(classes, confusion, row_shares(confusion)):
        cells = []
        for count, share in zip(row, shares):
            shown = f"{count:,}" if count else "."
            if colour and count:
                background = SHARE.color(share)
                cells.append(Text(shown, Style(color=ink_for(background), bgcolor=background)))
            else:
                cells.append(Text(shown, Style(dim=colour)))
        table.add_row(name, *cells)
    return table


def legend(colour: bool) -> str:
    return ("rows: true class; columns: predicted; " +
            ("shading: the count's share of its row, white 0 to dark blue 1" if colour else "0 shown as ."))


def confusion_html(classes: list[str], scores: dict, run: str) -> str:
    """The per-class figures and the shaded confusion matrix as HTML tables (data-value holds each number)."""
    confusion = scores["confusion"]
    head = "".join(f'<th title="{escape(name)}">{escape(short)}</th>'
                   for name, short in zip(classes, short_names(classes)))
    rows = []
    for name, row, shares in zip(classes, confusion, row_shares(confusion)):
        cells = []
        for predicted, count, share in zip(classes, row, shares):
            background = SHARE.color(share)
            tip = f"true {name}, predicted {predicted}: {count:,} ({share:.0%} of the row)"
            cells.append(f'<td data-value="{count}" title="{escape(tip)}" style="background:{background};'
                         f'color:{ink_for(background)}">{f"{count:,}" if count else "·"}</td>')
        rows.append(f"<tr><th>{escape(name)}</th>{''.join(cells)}</tr>")
    per_class = "".join(
        f"<tr><td>{escape(name)}</td>"
        + "".join(f'<td data-value="{scores[key][i]!r}">{_figure(scores, key, i, counted)}</td>'
                  for key in ("precision", "recall", "f1"))
        + f'<td data-value="{scores["support"][i]}">{scores["support"][i]:,}</td></tr>'
        for i, (name, counted) in enumerate(zip(classes, scored(scores))))
    return (f"<p>Accuracy <b data-value=\"{scores['accuracy']!r}\">{scores['accuracy']:.4f}</b>, macro-F1 "
            f"<b data-value=\"{scores['macro_f1']!r}\">{scores['macro_f1']:.4f}</b> on "
            f"{sum(map(sum, confusion)):,} validation texts, at the best checkpoint.</p>"
            f'<table class="confusion" data-run="{escape(run)}"><tr><th>true \\ predicted</th>{head}</tr>'
            f"{''.join(rows)}</table><p class='muted'>{escape(legend(True))}; hover a cell for its numbers.</p>"
            f'<table class="per-class" data-run="{escape(run)}"><tr><th>class</th><th>precision</th><th>recall</th>'
            f"<th>F1</th><th>support</th></tr>{per_class}</table><p class='muted'>– : a class neither present nor "
            "predicted, left out of macro-F1.</p>")
