"""Terminal views of a text: each character coloured by a value (surprisal, a unit's activation), with rich.

With colour the character's background is the value's colour on the scale
(colors.py) and a legend names the scale. Without colour (NO_COLOR, a pipe,
a file) each line of text is followed by a line of marks, one under each
character, that carry the same values in plain characters. Newlines and tabs
are shown (↵, →), since they are predicted too. These functions build
renderables and strings; the CLI prints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.cells import cell_len
from rich.style import Style
from rich.table import Table
from rich.text import Text

from charlm.report.colors import Scale, ink_for, visible


@dataclass(frozen=True)
class Cell:
    text: str  # one character
    value: float  # nan: no value (the first character, which nothing predicts)
    marked: bool = False  # inside a pattern match: underlined


def _shown(char: str) -> str:
    return visible(char) if char in "\n\t\r" or not char.isprintable() else char


def coloured(cells: list[Cell], scale: Scale) -> Text:
    """The cells as one rich Text, each character on its value's colour."""
    text = Text()
    for cell in cells:
        if math.isfinite(cell.value):
            background = scale.color(cell.value)
            style = Style(color=ink_for(background), bgcolor=background, underline=cell.marked)
        else:
            style = Style(underline=cell.marked)
        text.append(_shown(cell.text), style)
        if cell.text == "\n":
            text.append("\n")
    return text


def marked_lines(cells: list[Cell], scale: Scale) -> str:
    """Plain text: each line, then its values as marks under the characters (then ^ under pattern matches)."""
    out, line, marks, matches = [], [], [], []

    def flush() -> None:
        out.append("".join(line).rstrip())
        out.append("".join(marks).rstrip())
        if any(m.strip() for m in matches):
            out.append("".join(matches).rstrip())

    for cell in cells:
        shown = _shown(cell.text)
        pad = " " * (cell_len(shown) - 1)
        line.append(shown)
        marks.append(scale.mark(cell.value) + pad)
        matches.append(("^" if cell.marked else " ") + pad)
        if cell.text == "\n":
            flush()
            line, marks, matches = [], [], []
    if line:
        flush()
    return "\n".join(out)


def legend(scale: Scale, colour: bool) -> Text:
    """One line naming the scale: coloured chips at its ticks, or the meaning of the marks."""
    if not colour:
        return Text(scale.mark_legend)
    text = Text(f"{scale.name}: ")
    for tick in scale.ticks:
        background = scale.color(tick)
        text.append(f" {scale.tick_label(tick)} ", Style(color=ink_for(background), bgcolor=background))
    return text


def hardest_table(hardest: list[tuple[str, float, int]], unit: str) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column(unit)
    table.add_column("mean bits", justify="right")
    table.add_column("times", justify="right")
    for char, bits, count in hardest:
        table.add_row(visible(char), f"{bits:.2f}", f"{count:,}")
    return table


def surprises_table(moments: list[tuple[str, str, float, list[tuple[str, float]]]]) -> Table:
    """(context before, character, bits, top predictions) of the most surprising single moments."""
    table = Table(box=None, pad_edge=False)
    table.add_column("context", justify="right", no_wrap=True)
    table.add_column("char")
    table.add_column("bits", justify="right")
    table.add_column("the model expected")
    for context, char, bits, top in moments:
        table.add_row("".join(_shown(c) for c in context), visible(char), f"{bits:.1f}",
                      "  ".join(f"{visible(label)} {prob:.0%}" for label, prob in top[:3]))
    return table


def units_table(scores, count: int) -> Table:
    """The best units by separation: name, AUC, mean activation inside and outside the matches."""
    table = Table(box=None, pad_edge=False)
    for name, justify in (("unit", "left"), ("separation", "right"), ("AUC", "right"), ("mean inside", "right"),
                          ("mean outside", "right")):
        table.add_column(name, justify=justify)
    for score in scores[:count]:
        table.add_row(score.name, f"{score.separation:.3f}", f"{score.auc:.3f}", f"{score.mean_inside:+.3f}",
                      f"{score.mean_outside:+.3f}")
    return table
